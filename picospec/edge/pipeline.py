"""The edge's drafting loop: one thread that drafts, ships chunks and applies verdicts.

It holds no network code: it sends protocol messages through a callable and receives parsed
verdicts and candidate batches from a queue, so the same loop runs over gRPC and in tests.
Stop-and-wait methods (vanilla, sync) ship a full chunk and wait for its verdict; the pipeline
(picospec) keeps drafting up to a bounded lookahead, and ships early whenever the cloud would
otherwise sit idle (latency-aware truncation).
"""

from __future__ import annotations

import queue
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence, TypeAlias

from picospec.decoding import DraftChunk, Drafter, resolve_correction
from picospec.edge.config import EdgeConfig
from picospec.edge.policy import EdgeLoop
from picospec.edge.report import EdgeReport, TimelineEvent
from picospec.errors import ProtocolError
from picospec.verify import Candidates
from picospec.wire import picospec_pb2 as pb
from picospec.wire.messages import VerdictReport, chunk_message


@dataclass(frozen=True)
class CandidateReport:
    """More exact-mode candidates, as the edge received them."""

    epoch: int
    candidates: Candidates


Inbox: TypeAlias = "queue.Queue[VerdictReport | CandidateReport | BaseException]"
TokenSink = Callable[[list[int], str], None]  # (token ids, source: draft | cloud | edge)


class SpeculativeEdge(EdgeLoop):
    """Runs one speculative generation on the edge; `run` blocks the calling (drafting) thread."""

    def __init__(
        self,
        drafter: Drafter,
        config: EdgeConfig,
        send: Callable[[pb.EdgeMessage], None],
        inbox: Inbox,
        on_tokens: TokenSink | None = None,
        stop_ids: Sequence[int] = (),
    ) -> None:
        self.drafter, self.config, self._send, self.inbox = drafter, config, send, inbox
        self._on_tokens = on_tokens or (lambda tokens, source: None)
        self.stop_ids = set(stop_ids)
        self.policy = config.policy
        self.report = EdgeReport(method=config.method.value, verify=config.verify.mode.value)
        self._building: list[DraftChunk] = []  # drafted, not yet shipped
        self._in_flight: deque[DraftChunk] = deque()  # shipped, awaiting verdicts, in order
        self._correction_to_send: int | None = None
        self._stopped = False
        self._t0 = time.perf_counter()

    # -- the loop ---------------------------------------------------------------------------

    def run(self, prompt: Sequence[int]) -> EdgeReport:
        """Generate after `prompt`; return the report once max_new_tokens or a stop token is committed."""
        self._t0 = time.perf_counter()
        self.drafter.begin(prompt)
        self.run_loop()
        self.send(pb.EdgeMessage(close=pb.Close()))
        self.report.wall_s = self._now()
        return self.report

    def _done(self) -> bool:
        return self._stopped or self.report.new_tokens >= self.config.max_new_tokens

    def _counts(self) -> tuple[int, int, int]:
        return self.report.new_tokens, sum(map(len, self._building)), sum(map(len, self._in_flight))

    # -- drafting and shipping ---------------------------------------------------------------

    def _draft_one(self) -> None:
        start = self._now()
        self._building.append(self.drafter.draft(1))
        self._event("draft", start)
        self.report.drafted += 1

    def _ship(self) -> None:
        chunk = DraftChunk.concat(self._building)
        self._building = []
        message = chunk_message(
            self.config.verify.mode, chunk.epoch, chunk.start, chunk.tokens, chunk.draft_probs, self._correction_to_send
        )
        self._correction_to_send = None
        self._in_flight.append(chunk)
        self.report.chunks_sent += 1
        self.send(message)

    def send(self, message: pb.EdgeMessage) -> None:
        """Send one message, counting its bytes as uplink."""
        self.report.bytes_up += message.ByteSize()
        self._send(message)

    # -- verdicts ------------------------------------------------------------------------------

    def _apply_arrived(self) -> None:
        self._apply_inbox(block=False)

    def _wait_for_verdict(self) -> None:
        self._apply_inbox(block=True)

    def _apply_inbox(self, block: bool) -> None:
        try:
            item = self.inbox.get(block=block)
            while True:
                self._apply(item)
                item = self.inbox.get_nowait()
        except queue.Empty:
            return

    def _apply(self, item: VerdictReport | CandidateReport | BaseException) -> None:
        if isinstance(item, BaseException):
            raise item
        if not isinstance(item, VerdictReport):
            raise ProtocolError("candidates arrived, but none were asked for")
        if not self._in_flight:
            raise ProtocolError("a verdict arrived for no chunk in flight")
        chunk = self._in_flight.popleft()
        verdict = item.verdict
        if (item.epoch, item.start) != (chunk.epoch, chunk.start) or not 0 <= verdict.accepted <= len(chunk):
            raise ProtocolError(f"verdict for epoch {item.epoch} at {item.start} does not match the chunk in flight")
        self.report.cloud_passes = item.cloud_passes
        self.report.cloud_busy_s += item.verify_s + item.prefill_s
        if item.prefill_s:
            self.report.cloud_prefill_s = item.prefill_s
        self._event("verdict", self._now())
        token = None
        if verdict.rejected or verdict.token is not None:
            token = resolve_correction(verdict, chunk, self.drafter.rng, lambda: self._fetch_candidates(chunk.epoch + 1))
        self._emit([int(t) for t in chunk.tokens[: verdict.accepted]], "draft")
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

    def _emit(self, tokens: list[int], source: str) -> None:
        room = self.config.max_new_tokens - self.report.new_tokens
        for token in tokens[: max(0, room)]:
            if self._stopped:
                return
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
