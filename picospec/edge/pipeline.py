"""The edge's drafting loop: one thread that drafts, ships chunks and applies verdicts.

It holds no network code: it sends protocol messages through a callable and receives parsed
verdicts and candidate batches from a queue, so the same loop runs over gRPC and in tests.
Stop-and-wait methods (vanilla, sync) ship a full chunk and wait for its verdict; the pipeline
(picospec) keeps drafting up to a bounded lookahead. With a controller (the default) the
pipeline's first token comes from the cloud's prompt pass, each chunk is as long as the cost model
says pays, and when speculation does not pay the cloud decodes while the edge follows; without
one it ships fixed chunks, early whenever the cloud would otherwise sit idle.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Sequence, TypeAlias

from picospec.costmodel import CostCurve
from picospec.decoding import DraftChunk, Drafter, resolve_correction
from picospec.edge.config import EdgeConfig
from picospec.edge.controller import Controller
from picospec.edge.lookup import PromptLookup
from picospec.edge.policy import ControlledLoop
from picospec.edge.report import EdgeReport, TimelineEvent
from picospec.errors import ProtocolError
from picospec.verify import Candidates
from picospec.wire import picospec_pb2 as pb
from picospec.wire.messages import TokensReport, VerdictReport, chunk_message, decode_message


@dataclass(frozen=True)
class CandidateReport:
    """More exact-mode candidates, as the edge received them."""

    epoch: int
    candidates: Candidates




@dataclass
class DecodeOrder:
    """Tokens the edge asked the cloud to decode itself, and how many have arrived."""

    start: int
    count: int
    received: int = 0

    def __len__(self) -> int:
        return self.count - self.received


@dataclass(frozen=True)
class CloudLink:
    """What the edge knows of its cloud when the session opens: costs, limits, the link's RTT."""

    costs: CostCurve
    max_chunk_tokens: int
    rtt_s: float


Inbox: TypeAlias = "queue.Queue[VerdictReport | TokensReport | CandidateReport | BaseException]"
TokenSink = Callable[[list[int], str], None]  # (token ids, source: draft | cloud | edge | edge-only)
# The source of tokens the drafter decoded alone after the cloud was lost (--on-cloud-loss local):
# samples of the drafter, not of the target.
EDGE_ONLY = "edge-only"


class SpeculativeEdge(ControlledLoop):
    """Runs one speculative generation on the edge; `run` blocks the calling (drafting) thread."""

    def __init__(
        self,
        drafter: Drafter,
        config: EdgeConfig,
        send: Callable[[pb.EdgeMessage], None],
        inbox: Inbox,
        on_tokens: TokenSink | None = None,
        stop_ids: Sequence[int] = (),
        cloud: CloudLink | None = None,
        report: EdgeReport | None = None,
    ) -> None:
        """`report` (default: a new one) fills in as the generation runs, so a caller that stops
        it early still has what it measured."""
        self.drafter, self.config, self._send, self.inbox = drafter, config, send, inbox
        self._on_tokens = on_tokens or (lambda tokens, source: None)
        self.stop_ids = set(stop_ids)
        self.policy = config.policy
        # A resumed session continues the report of the generation: its tokens are the context
        # after the prompt, and the counts add up over sessions.
        self.report = report if report is not None else EdgeReport(method=config.method.value, verify=config.verify.mode.value)
        self._passes_before = self.report.cloud_passes
        self._building: list[DraftChunk] = []  # drafted, not yet shipped
        self._in_flight: deque[DraftChunk | DecodeOrder] = deque()  # shipped, awaiting answers, in order
        self._shipped_at: deque[float] = deque()  # when each in-flight item was shipped
        self._correction_to_send: int | None = None
        # The last tokens committed were a chunk's that passed in full (no correction after them):
        # the cloud keeps their logits, and the next chunk's pass evaluates its own tokens alone.
        self._after_full_chunk = False
        self._stopped = False
        self._t0 = time.perf_counter()
        self._prompt: list[int] = []
        self._resumed_after: list[int] = []
        self._begun = False  # the drafter has evaluated the prompt
        self._prompt_pass: Future[None] | None = None  # the drafter's prompt pass on its own thread, once started
        self._unfollowed: list[int] = []  # decoded by the cloud, not yet evaluated by the drafter
        self._unfollowed_probs: list[float | None] = []  # their target probabilities (None: not sent)
        self.lookup: PromptLookup | None = None  # over the committed context, from run()
        self.controller: Controller | None = None
        if config.adaptive is not None:
            if cloud is None:
                raise ProtocolError("the controller needs the cloud's costs and limits from its welcome")
            self.controller = Controller.for_cloud(config.adaptive, cloud.costs, cloud.rtt_s)
            self.max_chunk = min(config.adaptive.max_chunk, cloud.max_chunk_tokens)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, prompt: Sequence[int]) -> EdgeReport:
        """Generate after `prompt` and the report's tokens; return the report once max_new_tokens
        or a stop token is committed."""
        self._t0 = time.perf_counter()
        self._prompt = list(prompt)
        self._resumed_after = list(self.report.token_ids)  # what earlier sessions committed
        if self.config.lookup is not None and self.config.method.speculative:
            self.lookup = PromptLookup(self.config.lookup, context=self._prompt + self._resumed_after)
        if self.controller is None:
            self._catch_up()
        else:
            self._order_decode(1)  # the first token comes from the cloud's prompt pass, as for ar
            if self._drafter_needed():
                self._start_prompt_pass()
        try:
            self.run_loop()
            self.send(pb.EdgeMessage(close=pb.Close()))
            self.report.wall_s = self._now()
        finally:  # the drafter is the next generation's (or resumed session's) only once this pass is over
            if self._prompt_pass is not None:
                self._prompt_pass.exception()
        if self.controller is not None:
            self.report.mode_switches += self.controller.switches
        return self.report

    def _done(self) -> bool:
        return self._stopped or self.report.new_tokens >= self.config.max_new_tokens

    def _counts(self) -> tuple[int, int, int]:
        return self.report.new_tokens, sum(map(len, self._building)), sum(map(len, self._in_flight))

    # -- what the controller's decisions (edge/policy.py's ControlledLoop) ask of this edge ---------

    def _decoding(self) -> bool:
        return any(isinstance(item, DecodeOrder) for item in self._in_flight)

    def _chunks_in_flight(self) -> int:
        return sum(isinstance(item, DraftChunk) for item in self._in_flight)

    def _builds_on_full_chunk(self) -> bool:
        if self._in_flight:
            return isinstance(self._in_flight[-1], DraftChunk)
        return self._after_full_chunk

    def _building_confidences(self) -> tuple[list[float], list[bool]]:
        return [c for chunk in self._building for c in chunk.confidences], [x for chunk in self._building for x in chunk.from_lookup]

    # -- drafting and shipping ---------------------------------------------------------------

    def _catch_up(self) -> None:
        """Bring the drafter to the verified context: the prompt, then the tokens the cloud decoded."""
        if not self._begun:
            if self._prompt_pass is None:
                self._begin_drafter(self._prompt + self._resumed_after)
            else:
                self._prompt_pass.result()  # raises what the pass raised
            self._begun = True
        if self._unfollowed:
            # The session's first token always comes from the cloud's prompt pass: the drafter never
            # drafts there, so its shadow says nothing of what speculation would earn (and it is
            # the least like the rest: forced along the target's output, the pair parted there on
            # 2 of 4 HumanEval prompts at T = 0, against 0.8% of the next 31 positions).
            first = self.drafter.committed == len(self._prompt) + len(self._resumed_after)
            shadow = self.drafter.follow(self._unfollowed, self._unfollowed_probs)
            self._unfollowed, self._unfollowed_probs = [], []
            for confidence, passed in shadow[first:]:
                self.controller.observe_decoded(confidence, passed)

    def _draft_one(self) -> None:
        """Draft what prompt lookup proposes here, else one token of the drafter's own."""
        self._catch_up()
        start = self._now()
        chunk = self._look_up()
        if chunk is None:
            chunk = self.drafter.draft(1)
        self._building.append(chunk)
        self._event("draft", start)
        self.report.drafted += len(chunk)
        self.report.looked_up += int(chunk.from_lookup.sum())
        if self.controller is not None and chunk.looked_up is None:
            self.controller.observe_draft_step(self.report.timeline[-1].end - start)

    def _look_up(self) -> DraftChunk | None:
        """The tokens prompt lookup proposes after everything drafted, as many as may be drafted
        now, those the controller keeps (all, without one); None when it has none."""
        if self.lookup is None:
            return None
        proposal = self.lookup.propose(self._drafts_outstanding(), self._draft_room())
        if not proposal:
            return None
        # Without a controller, or speculating on lookup's tokens alone, the alternative is not the
        # drafter's own token: keep them all (the controller's chunk length still weighs them).
        judged = self.controller is not None and not self.controller.lookup_only
        keep = self.controller.keeps_lookup if judged else (lambda *_: True)
        return self.drafter.absorb(proposal, keep)

    def _draft_room(self) -> int:
        """How many tokens may be drafted now (at least one whenever _can_draft)."""
        produced, building, in_flight = self._counts()
        if self.controller is not None:
            chunk, lookahead = self.max_chunk, self.controller.config.max_lookahead
        else:
            chunk = self.policy.chunk_len
            lookahead = self.policy.max_lookahead if self.policy.pipelined else self.policy.chunk_len
        unverified = building + in_flight
        return min(chunk - building, lookahead - unverified, self.config.max_new_tokens - produced - unverified)

    def _lookup_run(self) -> int:
        """How many tokens prompt lookup proposes after the context and the drafts outstanding (at
        most a chunk's worth)."""
        if self.lookup is None:
            return 0
        return len(self.lookup.propose(self._drafts_outstanding(), self.max_chunk))

    def _drafts_outstanding(self) -> list[int]:
        """Drafted tokens not yet verified, in order (shipped, then being built)."""
        return [int(t) for item in (*self._in_flight, *self._building) if isinstance(item, DraftChunk) for t in item.tokens]

    def _ship(self) -> None:
        if not self._building:
            self._order_decode(self._decode_room())
            return
        chunk = DraftChunk.concat(self._building)
        self._building = []
        if self.controller is not None:
            self.controller.mark(self._now(), self.drafter.committed)
        message = chunk_message(
            self.config.verify.mode, chunk.epoch, chunk.start, chunk.tokens, chunk.draft_probs, self._correction_to_send
        )
        self._correction_to_send = None
        self._launch(chunk, message)
        self.report.chunks_sent += 1

    def _order_decode(self, count: int) -> None:
        """Ask the cloud to decode `count` tokens after everything committed or already ordered."""
        start = len(self._prompt) + self.report.new_tokens + sum(map(len, self._in_flight))
        # Until the drafter begins this session, no rejection has happened in it: epoch 0 (the
        # drafter may still hold an earlier session's epoch when this one resumes a generation).
        epoch = self.drafter.epoch if self._begun else 0
        message = decode_message(epoch, start, count, self._correction_to_send)
        self._correction_to_send = None
        self._launch(DecodeOrder(start, count), message)

    def _launch(self, item: DraftChunk | DecodeOrder, message: pb.EdgeMessage) -> None:
        self._in_flight.append(item)
        self._shipped_at.append(self._now())
        self.send(message)

    def send(self, message: pb.EdgeMessage) -> None:
        """Send one message, counting its bytes as uplink."""
        self.report.bytes_up += message.ByteSize()
        self._send(message)

    # -- verdicts ------------------------------------------------------------------------------

    def _apply_arrived(self) -> None:
        self._apply_inbox(block=False)

    def _start_prompt_pass(self) -> None:
        """Let the drafter evaluate the prompt on a thread of its own, beside the cloud's prompt
        pass, so that the drafter is ready when the first token arrives and this loop keeps ordering
        tokens meanwhile (evaluated in the loop, a long prompt's pass outlasted the orders queued
        before it and left the cloud idle: 0.7 s in a 41-token run; started at the first token, it
        held speculation back 0.7-1.7 s on HumanEval)."""
        self._prompt_pass = Future()
        context = self._prompt + self._resumed_after

        def prompt_pass() -> None:
            try:
                self._prompt_pass.set_result(self._begin_drafter(context))
            except BaseException as exc:  # noqa: BLE001 (handed to the loop, which raises it)
                self._prompt_pass.set_exception(exc)

        threading.Thread(target=prompt_pass, name="drafter-prompt-pass", daemon=True).start()

    def _begin_drafter(self, context: list[int]) -> None:
        """The drafter's prompt pass, kept on the timeline as a "prompt" event (the benchmark's
        measure of the edge's prefill)."""
        start = self._now()
        self.drafter.begin(context)
        self.report.timeline.append(TimelineEvent("prompt", start, self._now()))

    def _prompt_passing(self) -> bool:
        """Whether the drafter's prompt pass is still running on its thread."""
        return self._prompt_pass is not None and not self._prompt_pass.done()

    def _wait_for_verdict(self) -> None:
        if self._prompt_passing() and self._in_flight:
            self._apply_inbox(block=True)  # tokens keep arriving; the drafter follows them once its pass is done
            return
        if self.controller is not None and self._should_follow(len(self._unfollowed)):
            self._catch_up()  # the edge would idle now
            self._apply_inbox(block=False)
            return
        if not self._in_flight and self.inbox.empty():
            # A bug, not the cloud's doing: fail loudly rather than leave the session to the cloud's idle limit.
            raise RuntimeError(f"the edge would wait for a message that never comes: nothing in flight, {self._counts()}")
        self._apply_inbox(block=True)

    def _apply_inbox(self, block: bool) -> None:
        try:
            item = self.inbox.get(block=block)
            while True:
                self._apply(item)
                item = self.inbox.get_nowait()
        except queue.Empty:
            pass
        if self.controller is not None and not self._done():
            self._decide()

    def _apply(self, item: VerdictReport | TokensReport | CandidateReport | BaseException) -> None:
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, TokensReport):
            self._apply_tokens(item)
            return
        if not isinstance(item, VerdictReport):
            raise ProtocolError("candidates arrived, but none were asked for")
        chunk = self._in_flight[0] if self._in_flight else None
        verdict = item.verdict
        if not isinstance(chunk, DraftChunk) or (item.epoch, item.start) != (chunk.epoch, chunk.start) or not 0 <= verdict.accepted <= len(chunk):
            raise ProtocolError(f"verdict for epoch {item.epoch} at {item.start} does not match the chunk in flight")
        self._in_flight.popleft()
        shipped_at = self._shipped_at.popleft()
        self._cloud_reported(item.cloud_passes, item.verify_s, item.prefill_s)
        self._event("verdict", self._now())
        # The accepted drafts are verified: commit them before fetching more candidates can fail,
        # so a generation that loses its cloud then resumes after them.
        self._emit([int(t) for t in chunk.tokens[: verdict.accepted]], "draft")
        self.report.lookup_accepted += int(chunk.from_lookup[: verdict.accepted].sum())
        token = None
        if verdict.rejected or verdict.token is not None:
            token = resolve_correction(verdict, chunk, self.drafter.rng, lambda: self._fetch_candidates(chunk.epoch + 1))
        if token is not None:
            self._emit([token], "edge" if verdict.needs_edge_sampling else "cloud")
        self.report.accepted_lengths.append(verdict.accepted)
        self.report.chunk_lengths.append(len(chunk))
        self.report.verify_times.append(item.verify_s)
        if verdict.sparse is not None:
            self.report.topk_tail_mass.append(verdict.sparse.tail_mass)
        if self.drafter.commit(chunk, verdict.accepted, token):
            self._discard(len(chunk) - verdict.accepted)
            self._correction_to_send = token if verdict.needs_edge_sampling else None
        pending = not self._after_full_chunk  # what the chunk's pass evaluated before it
        self._after_full_chunk = token is None
        if self.controller is not None:
            self.controller.observe_rtt(self._now() - shipped_at - item.verify_s - item.prefill_s)
            self.controller.observe_verdict(
                chunk.confidences, verdict.accepted, item.verify_s, self._now(), self.drafter.committed, item.shared_tokens,
                looked_up=chunk.from_lookup, pending=pending,
            )  # fmt: skip

    def _apply_tokens(self, item: TokensReport) -> None:
        """Commit tokens the cloud decoded itself; the drafter follows them."""
        order = self._in_flight[0] if self._in_flight else None
        if not isinstance(order, DecodeOrder) or item.start != order.start + order.received or len(item.tokens) > len(order):
            raise ProtocolError(f"decoded tokens at {item.start} do not match the decode order in flight")
        self._cloud_reported(item.cloud_passes, item.compute_s, item.prefill_s)
        self.report.cloud_decode_s += item.compute_s
        # A step taken while the drafter's prompt pass runs is slowed by it where both share a
        # machine (our benchmark): it would make cloud decoding look slow and speculation pay.
        if not item.prefill_s and not self._prompt_passing():
            self.controller.observe_decode_step(item.compute_s / len(item.tokens), item.shared_tokens // len(item.tokens))
        self._emit(item.tokens, "cloud", shadow=True)
        self._after_full_chunk = False
        self._event("decoded", self._now())  # where cloud decoding falls between rounds (measure.evaluated_tokens)
        self._unfollowed += item.tokens
        self._unfollowed_probs += item.token_probs or [None] * len(item.tokens)
        order.received += len(item.tokens)
        self.report.decoded += len(item.tokens)
        if len(order) == 0:
            self._in_flight.popleft()
            self._shipped_at.popleft()

    def _cloud_reported(self, passes: int, compute_s: float, prefill_s: float) -> None:
        self.report.cloud_passes = self._passes_before + passes
        self.report.cloud_busy_s += compute_s + prefill_s
        if prefill_s:
            self.report.cloud_prefill_s = prefill_s

    def _fetch_candidates(self, epoch: int) -> Candidates:
        """Ask the cloud for another exact-mode batch for the rejection that started `epoch`; wait for it."""
        self.send(pb.EdgeMessage(more_candidates=pb.MoreCandidates(epoch=epoch)))
        batch = self.inbox.get()
        if isinstance(batch, BaseException):
            raise batch
        if not isinstance(batch, CandidateReport) or batch.epoch != epoch:
            raise ProtocolError("expected more candidates for the current rejection")
        return batch.candidates

    def _discard(self, rejected_tail: int) -> None:
        """Throw away what was drafted on the rejected guess; the cloud drops its stale chunks."""
        _, building, in_flight = self._counts()
        self.report.discarded += rejected_tail + building + in_flight
        self._building.clear()
        self._in_flight.clear()
        self._shipped_at.clear()

    def _emit(self, tokens: list[int], source: str, shadow: bool = False) -> None:
        """Commit tokens; with shadow (the cloud decoded them), tell the controller whether prompt
        lookup would have proposed each."""
        room = self.config.max_new_tokens - self.report.new_tokens
        for token in tokens[: max(0, room)]:
            if self._stopped:
                return
            if self.lookup is not None:
                proposal = self.lookup.propose([], 1) if shadow and self.controller is not None else []
                if proposal:
                    self.controller.observe_lookup_shadow(proposal[0] == token)
                self.lookup.extend([token])
            if self.report.ttft_s is None:
                self.report.ttft_s = self._now()
            self.report.token_ids.append(token)
            self.report.sources.append(source)
            self._on_tokens([token], source)
            self._stopped = token in self.stop_ids

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    def _event(self, kind: str, start: float) -> None:
        self.report.timeline.append(TimelineEvent(kind, start, self._now()))
        if kind == "draft":
            self.report.edge_busy_s += self.report.timeline[-1].end - start
