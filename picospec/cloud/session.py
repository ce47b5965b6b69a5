"""One session of the cloud: the protocol rules its messages obey, kept apart from the gRPC plumbing.

Methods that run the target model (begin, verify, next_message) block: the server runs them on
its compute executor. The rest are cheap bookkeeping that runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError

from picospec.cloud.config import CloudConfig
from picospec.costmodel import CostTracker
from picospec.decoding import TargetVerifier
from picospec.errors import PicoSpecError, ProtocolError
from picospec.runners.base import ModelRunner, VocabInfo
from picospec.wire import picospec_pb2 as pb
from picospec.wire.messages import (
    SessionSpec,
    DecodeRequest,
    candidates_message,
    parse_chunk,
    parse_decode,
    parse_hello,
    reject_unknown_fields,
    tokens_message,
    verdict_message,
)

logger = logging.getLogger("picospec.cloud")


class PassMeter(Protocol):
    """What a session times and sizes its compute by (a SequenceView): the time of the passes that
    evaluated its work, so that a wait for a pass is not reported as compute (the edge sees it in
    its round trip, as queueing, as it did when sessions took turns on one thread); and the other
    sessions' tokens in those passes, which the edge plans its chunks with."""

    def compute_clock(self) -> float: ...

    def shared_tokens(self) -> int: ...


Result = TypeVar("Result")


def metered(meter: PassMeter, compute: Callable[[], Result]) -> tuple[Result, float, int]:
    """Run compute; its result, the seconds of the passes it took and other sessions' tokens in them."""
    seconds, shared = meter.compute_clock(), meter.shared_tokens()
    result = compute()
    return result, meter.compute_clock() - seconds, meter.shared_tokens() - shared


# Incoming messages read ahead of the session's compute. Enough for an edge's whole lookahead;
# beyond it gRPC's flow control holds the rest, which bounds memory (a message may be 64 MiB).
INBOX_SIZE = 16


class EdgeLost(PicoSpecError):
    """The edge's side of the stream broke (not a close): the session ends, recorded as lost."""


class SessionRefused(Exception):
    """Ends a session with a gRPC status other than INVALID_ARGUMENT (which ProtocolError gives)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


@dataclass
class SessionStats:
    """What one session cost and how it ended; logged as one line when it ends."""

    session_id: int
    kind: str = "unknown"  # "speculative/<mode>" or "autoregressive", once the hello is accepted
    chunks_verified: int = 0
    tokens_decoded: int = 0  # by the cloud itself: ar sessions, and speculative ones that fell back
    stale_dropped: int = 0
    candidate_batches: int = 0
    passes: int = 0  # target forward passes
    compute_s: float = 0.0
    outcome: str = "open"  # completed, cancelled, or the gRPC status that ended it
    opened_at: float = field(default_factory=time.perf_counter)

    def summary(self) -> str:
        """One log line."""
        work = (
            f"{self.tokens_decoded} tokens decoded"
            if self.kind == "autoregressive"
            else f"{self.chunks_verified} chunks verified, {self.tokens_decoded} tokens decoded, "
            f"{self.stale_dropped} stale dropped, {self.candidate_batches} candidate batches"
        )
        return (
            f"session {self.session_id} ({self.kind}) {self.outcome}: {work}, {self.passes} target passes, "
            f"compute {self.compute_s:.3f} s, open {time.perf_counter() - self.opened_at:.3f} s"
        )


class Inbox:
    """Reads a session's incoming messages into a queue as they arrive, while the session computes.

    Reading ahead is what lets a session see, right after a rejection, that chunks already waiting
    are stale, and drop them without computing.
    """

    _END = object()

    def __init__(self, requests: AsyncIterator[pb.EdgeMessage], idle_timeout_s: float) -> None:
        self._queue: asyncio.Queue = asyncio.Queue(INBOX_SIZE)
        self._idle_timeout_s = idle_timeout_s
        self._failure: PicoSpecError | None = None  # why reading stopped, when the edge did not close
        self._task = asyncio.create_task(self._read(requests))

    async def _read(self, requests: AsyncIterator[pb.EdgeMessage]) -> None:
        try:
            async for message in requests:
                await self._queue.put(message)
        except DecodeError as exc:
            self._failure = ProtocolError(f"the edge sent a malformed message ({exc})")
        except Exception as exc:  # noqa: BLE001 (any transport failure ends the session the same way)
            self._failure = EdgeLost(f"the edge's stream broke: {exc!r}")
        await self._queue.put(self._END)

    async def get(self) -> pb.EdgeMessage | None:
        """The next message, checked for unknown fields; None once the edge has closed its side."""
        try:
            item = await asyncio.wait_for(self._queue.get(), self._idle_timeout_s)
        except TimeoutError:
            raise SessionRefused(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"the edge sent nothing for {self._idle_timeout_s:g} s"
            ) from None
        return self._checked(item)

    def poll(self) -> pb.EdgeMessage | None:
        """A message that is already waiting, else None (also once the edge has closed its side)."""
        try:
            return self._checked(self._queue.get_nowait())
        except asyncio.QueueEmpty:
            return None

    def _checked(self, item: object) -> pb.EdgeMessage | None:
        if item is self._END:
            self._queue.put_nowait(item)  # every later get() sees the end too
            if self._failure is not None:
                raise self._failure
            return None
        reject_unknown_fields(item)
        return item

    def close(self) -> None:
        """Stop reading."""
        self._task.cancel()


def kind_of(message: pb.EdgeMessage) -> str:
    """Which message an EdgeMessage carries, for dispatch and error messages."""
    return message.WhichOneof("kind") or "empty"


def accept_hello(message: pb.EdgeMessage | None, vocab: VocabInfo, config: CloudConfig) -> SessionSpec:
    """Validate a session's opening message against the target's vocabulary and the cloud's limits."""
    if message is None or kind_of(message) != "hello":
        got = "nothing" if message is None else f"a {kind_of(message)} message"
        raise ProtocolError(f"a session must open with a hello, got {got}")
    hello = message.hello
    # Checked before parsing: with another vocabulary, the prompt's ids would fail for a misleading reason.
    mismatch = vocab.mismatch(hello.n_vocab, hello.vocab_fingerprint)
    if mismatch:
        raise SessionRefused(grpc.StatusCode.FAILED_PRECONDITION, mismatch)
    spec = parse_hello(hello, vocab.n_vocab)
    # Refused here, before any model work, and with both numbers: a prompt that fills the context
    # leaves no room for even one new token. Anything shorter is served; the edge learns the
    # limit from the welcome and ends the generation there with finish reason "length".
    if len(spec.prompt) >= config.max_context:
        raise SessionRefused(
            grpc.StatusCode.OUT_OF_RANGE,
            f"the prompt ({len(spec.prompt)} tokens) does not fit the context limit of {config.max_context} "
            f"tokens (prompt plus at least one new token)",
        )
    return spec


def session_kind(spec: SessionSpec) -> str:
    """How a session is named in logs and stats."""
    return "autoregressive" if spec.autoregressive else f"speculative/{spec.verify.mode.value}"


class SpeculativeSession:
    """The cloud's half of a speculative session: a TargetVerifier behind the protocol's epoch rules.

    Besides verifying chunks it decodes tokens itself when the edge asks (the first token from the
    prompt pass, and fallback to cloud-side decoding), as target-only decoding would.
    """

    def __init__(
        self,
        spec: SessionSpec,
        runner: ModelRunner,
        config: CloudConfig,
        stats: SessionStats,
        costs: CostTracker,
        meter: PassMeter,
    ) -> None:
        self.spec, self.config, self.stats, self.costs, self._meter = spec, config, stats, costs, meter
        self.verifier = TargetVerifier(runner, spec.params, spec.verify, spec.sampler_rng())
        self._unreported_prefill_s = 0.0  # told to the edge with the first reply

    def begin(self) -> None:
        """Evaluate the prompt (compute)."""
        begin = lambda: self.verifier.begin(self.spec.original_prompt, self.spec.committed_tokens)  # noqa: E731
        _, self._unreported_prefill_s, _ = metered(self._meter, begin)
        self._account(self._unreported_prefill_s)

    def is_stale(self, epoch: int) -> bool:
        """True for a chunk drafted before the last rejection: it is dropped unverified."""
        if epoch > self.verifier.epoch:
            raise ProtocolError(f"chunk from epoch {epoch}, but the session is at epoch {self.verifier.epoch}")
        stale = epoch < self.verifier.epoch
        self.stats.stale_dropped += stale
        return stale

    def verify(self, chunk: pb.DraftChunk) -> pb.CloudMessage:
        """Verify a current chunk, after committing the correction it carries; return the verdict (compute)."""
        request = parse_chunk(chunk, self.spec.verify.mode, self.verifier.runner.n_vocab, self.config.max_chunk_tokens)
        self._take_correction(request.correction)
        self._check_room(request.tokens.size, "a chunk of")
        pass_size = request.tokens.size + (self.verifier.committed - self.verifier.runner.n_tokens)
        verdict, verify_s, shared = metered(self._meter, lambda: self.verifier.verify(
            request.start, request.tokens,
            token_probs=request.token_probs, draft_probs=request.draft_probs, bonus=self.spec.bonus,
        ))  # fmt: skip
        self._account(verify_s)
        self.costs.observe_verify(pass_size + shared, verify_s)
        self.stats.chunks_verified += 1
        fmt = self.spec.verify.sparse_format
        return verdict_message(
            request.epoch, request.start, verdict, fmt, verify_s, self.verifier.passes, self._take_prefill_s(), shared
        )

    def start_decode(self, message: pb.Decode) -> DecodeRequest:
        """Check a Decode request and commit the correction it carries; the tokens follow one by one."""
        request = parse_decode(message, self.verifier.runner.n_vocab, self.config.max_chunk_tokens)
        if request.epoch != self.verifier.epoch:
            raise ProtocolError(f"decode request from epoch {request.epoch}, but the session is at epoch {self.verifier.epoch}")
        self._take_correction(request.correction)
        if request.start != self.verifier.committed:
            raise ProtocolError(f"decode request starts at {request.start}, the verified context ends at {self.verifier.committed}")
        self._check_room(request.count, "decoding")
        return request

    def decode_one(self) -> pb.CloudMessage:
        """Decode and commit one token, as a Tokens message to stream (compute)."""
        start = self.verifier.committed
        (token, prob), compute_s, shared = metered(self._meter, self.verifier.decode_scored)
        self._account(compute_s)
        if shared:  # a step in a shared pass costs what a pass that big does
            self.costs.observe_verify(1 + shared, compute_s)
        else:
            self.costs.observe_decode(compute_s)
        self.stats.tokens_decoded += 1
        # Greedy decoding's probabilities are all 1: they would tell the edge nothing.
        probs = [prob] if self.spec.params.temperature > 0 else []
        return tokens_message(start, [token], compute_s, self.verifier.passes, self._take_prefill_s(), shared, probs)

    def more_candidates(self, request: pb.MoreCandidates) -> pb.CloudMessage:
        """Another batch of exact-mode candidates for the rejection that started the current epoch."""
        if request.epoch != self.verifier.epoch:
            raise ProtocolError(
                f"more candidates asked for epoch {request.epoch}, but the awaited correction is epoch "
                f"{self.verifier.epoch}'s"
            )
        self.stats.candidate_batches += 1
        return candidates_message(self.verifier.epoch, self.verifier.more_candidates())

    def _take_correction(self, correction: int | None) -> None:
        if correction is not None:
            self.verifier.receive_correction(correction)

    def _check_room(self, n: int, what: str) -> None:
        if self.verifier.committed + n > self.config.max_context:
            raise ProtocolError(
                f"{what} {n} tokens after {self.verifier.committed} verified ones "
                f"exceeds the context limit of {self.config.max_context} tokens"
            )

    def _take_prefill_s(self) -> float:
        prefill_s, self._unreported_prefill_s = self._unreported_prefill_s, 0.0
        return prefill_s

    def _account(self, seconds: float) -> None:
        self.stats.compute_s += seconds
        self.stats.passes = self.verifier.passes


class AutoregressiveSession:
    """The `ar` baseline: the target alone samples max_new_tokens (fewer where the context limit
    comes first), ending early after an EOS. It
    decodes through the same TargetVerifier.decode that a speculative session falls back to."""

    def __init__(
        self, spec: SessionSpec, runner: ModelRunner, config: CloudConfig, stats: SessionStats, meter: PassMeter
    ) -> None:
        self.spec, self.stats, self._meter = spec, stats, meter
        self.verifier = TargetVerifier(runner, spec.params, spec.verify, spec.sampler_rng())
        self._eos_ids = frozenset(runner.vocab_info().eos_ids)
        # The stream stops at the context limit as at max_new_tokens: the edge reports "length".
        self._remaining = min(spec.max_new_tokens, config.max_context - len(spec.prompt))

    @property
    def done(self) -> bool:
        return self._remaining == 0

    def next_message(self) -> pb.CloudMessage:
        """Sample the next token, as a Tokens message to stream (compute); the first one's compute
        is the prompt pass."""
        (start, token), compute_s, shared = metered(self._meter, self._next_token)
        self._remaining = 0 if token in self._eos_ids else self._remaining - 1
        self.stats.tokens_decoded += 1
        self.stats.passes = self.verifier.passes
        self.stats.compute_s += compute_s
        return tokens_message(start, [token], compute_s, self.verifier.passes, shared_tokens=shared)

    def _next_token(self) -> tuple[int, int]:
        """The position and the token of the next step, after the prompt pass if it is the first."""
        if self.verifier.passes == 0:
            self.verifier.begin(self.spec.original_prompt, self.spec.committed_tokens)
        return self.verifier.committed, self.verifier.decode()
