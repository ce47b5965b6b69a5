"""The edge's network side: a gRPC stream to the cloud, driven by the process's network loop
(edge/loop.py), while the drafter runs in its own thread (SpeculativeEdge)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
import time
from dataclasses import replace
from typing import Callable, Iterator, Sequence

import grpc
import numpy as np

from picospec.decoding import Drafter, generate_autoregressive
from picospec.edge.config import CloudLoss, EdgeConfig, Method
from picospec.edge.loop import on_own_thread, run_on_network_loop
from picospec.edge.pipeline import EDGE_ONLY, CandidateReport, CloudLink, SpeculativeEdge, TokenSink
from picospec.edge.report import EdgeReport, finish_reason
from picospec.errors import PicoSpecError, ProtocolError
from picospec.runners.base import ModelRunner
from picospec.security import ChannelSecurity, is_loopback
from picospec.wire import codec
from picospec.wire import picospec_pb2_grpc as pb_grpc
from picospec.wire.liveness import Liveness
from picospec.wire.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DRAFTER_STREAM,
    SessionSpec,
    WelcomeInfo,
    hello_message,
    parse_tokens,
    parse_verdict,
    parse_welcome,
    reject_unknown_fields,
)


# Statuses that mean the cloud was lost (or is briefly unable to serve), not that it refused:
# the edge resumes after them. Refusals (bad input, credentials, vocabulary, a prompt that cannot
# fit) would only be refused again. INTERNAL is among them because grpc.aio reports a write that
# races a connection reset as INTERNAL ("Internal error from Core"); a cloud that really fails
# fails again, and the bounded retries end it.
LOST = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
})  # fmt: skip

logger = logging.getLogger("picospec.edge")


class CloudError(PicoSpecError):
    """The cloud refused or dropped the session; the message says why.

    `code` is the gRPC status (None when the stream ended without one); `report`, once the
    generation gives up, holds every token committed before.
    """

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.report: EdgeReport | None = None

    @property
    def lost(self) -> bool:
        """True when the cloud was lost rather than refusing: worth reconnecting."""
        return self.code is None or self.code in LOST


class GenerationCancelled(PicoSpecError):
    """The generation was cancelled (Cancellation.cancel) before it finished; `report` holds
    what it had verified and measured by then."""

    def __init__(self, report: EdgeReport | None = None) -> None:
        super().__init__("the generation was cancelled")
        self.report = report


class Cancellation:
    """Lets another thread stop a running generation: `generate` returns by raising
    GenerationCancelled once the drafting thread has stopped and the cloud session is closed,
    so the runner is free for the next generation and the cloud frees its session."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._hooks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Ask the generation to stop; safe from any thread, at any time, more than once."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()

    def check(self) -> None:
        """Raise GenerationCancelled if cancel() was called."""
        if self._cancelled:
            raise GenerationCancelled()

    @contextlib.contextmanager
    def hook(self, on_cancel: Callable[[], None]) -> Iterator[None]:
        """Call `on_cancel` if cancel() comes while the block runs (at once if it came before)."""
        with self._lock:
            fire_now = self._cancelled
            if not fire_now:
                self._hooks.append(on_cancel)
        if fire_now:
            on_cancel()
        try:
            yield
        finally:
            with self._lock:
                if on_cancel in self._hooks:
                    self._hooks.remove(on_cancel)


def generate(
    cloud: str | None,
    runner: ModelRunner,
    prompt: Sequence[int],
    config: EdgeConfig,
    on_tokens: TokenSink | None = None,
    cancel: Cancellation | None = None,
    security: ChannelSecurity = ChannelSecurity(),
) -> EdgeReport:
    """Run one generation with `config.method`; `cloud` is HOST:PORT (unused for the edge method),
    reached with `security` (TLS, token); config.recovery says what to do if it is lost.

    With `cancel`, another thread may stop it: then it raises GenerationCancelled.
    """
    cancel = cancel or Cancellation()
    cancel.check()
    if config.method is Method.EDGE:
        report = EdgeReport(method=config.method.value, verify=config.verify.mode.value)
        rng = np.random.default_rng(config.verify.seed)
        _decode_on_edge(runner, list(prompt), config, report, "draft", on_tokens, rng, cancel)
    elif cloud is None:
        raise PicoSpecError(f"method {config.method.value} needs a cloud address")
    else:
        generation = CloudGeneration(cloud, security, runner, list(prompt), config, on_tokens, cancel)
        report = run_on_network_loop(_run_cancellable(generation, cancel), on_interrupt=cancel.cancel)
    report.finish_reason = finish_reason(report.token_ids, frozenset(runner.vocab_info().eos_ids))
    return report


WARMUP_TOKENS = 8  # a warm-up generation's length


def warm_up(cloud: str | None, runner: ModelRunner, prompt: Sequence[int], config: EdgeConfig,
            security: ChannelSecurity = ChannelSecurity()) -> None:  # fmt: skip
    """A short unrecorded generation before timed ones (stop-and-wait, or the drafter alone without
    a cloud): it touches both models' pages, and a cloud's first session is slower than the ones
    after it (the demo's prompt pass 0.96-1.02 s against 0.69-0.82 s for most later ones, whichever
    method came first), a cost that would otherwise fall on the first timed run."""
    method = Method.EDGE if cloud is None else Method.SYNC
    generate(cloud, runner, prompt, replace(config, method=method, max_new_tokens=WARMUP_TOKENS), security=security)


async def _run_cancellable(generation: "CloudGeneration", cancel: Cancellation) -> EdgeReport:
    """Run the generation; Cancellation cancels this task wherever it waits (a session, a backoff),
    and the session then cancels its call, which ends it on the cloud."""
    task, loop = asyncio.current_task(), asyncio.get_running_loop()
    start = time.perf_counter()
    # A cancel after the task has ended cancels nothing: the network loop outlives every generation.
    with cancel.hook(functools.partial(loop.call_soon_threadsafe, task.cancel)):
        try:
            return await generation.run()
        except asyncio.CancelledError:
            generation.report.wall_s = time.perf_counter() - start
            raise GenerationCancelled(generation.report) from None


def _decode_on_edge(
    runner: ModelRunner, prompt: list[int], config: EdgeConfig, report: EdgeReport, source: str, on_tokens, rng,
    cancel: Cancellation,
) -> None:  # fmt: skip
    """The drafter alone continues the report's tokens up to max_new_tokens or a stop token, each
    marked `source` (draft for the edge method, edge-only after the cloud was lost)."""
    start = time.perf_counter()

    def sink(token: int) -> None:
        cancel.check()  # between two decode steps: the runner is consistent
        if report.ttft_s is None:
            report.ttft_s = time.perf_counter() - start
        report.token_ids.append(token)
        report.sources.append(source)
        if on_tokens:
            on_tokens([token], source)

    remaining = config.max_new_tokens - report.new_tokens
    stop_ids = runner.vocab_info().eos_ids
    try:
        generate_autoregressive(runner, prompt + report.token_ids, config.params, config.verify, rng, remaining, stop_ids, sink)
    except GenerationCancelled:
        raise GenerationCancelled(report) from None
    finally:
        report.edge_busy_s += time.perf_counter() - start
        report.wall_s = report.edge_busy_s


def open_channel(cloud: str, security: ChannelSecurity, liveness: Liveness) -> grpc.aio.Channel:
    """A channel to the cloud at HOST:PORT: TLS when `security` says so, keepalive per `liveness`."""
    limit = DEFAULT_MAX_MESSAGE_BYTES
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit),
               *liveness.channel_options()]  # fmt: skip
    credentials = security.credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(cloud, options=options)
    return grpc.aio.secure_channel(cloud, credentials, options=options)


class CloudGeneration:
    """One generation with a cloud, over as many sessions as losing the cloud takes.

    Every session but the first resumes: its prompt is the original prompt plus every token
    committed so far, so the positions (and the Gumbel noise keyed by them) are those of an
    uninterrupted run, and its hello's `resumed` count moves the cloud's sampler to a fresh stream.
    The drafter (and its random stream) lives across sessions for the same reason.
    """

    def __init__(
        self, cloud: str, security: ChannelSecurity, runner: ModelRunner, prompt: list[int], config: EdgeConfig, on_tokens,
        cancel: Cancellation | None = None,
    ) -> None:  # fmt: skip
        self.cloud, self.security, self.runner, self.prompt, self.config = cloud, security, runner, prompt, config
        self.on_tokens, self.cancel = on_tokens, cancel or Cancellation()
        self.report = EdgeReport(method=config.method.value, verify=config.verify.mode.value)
        self.stop_ids = frozenset(runner.vocab_info().eos_ids)
        self.drafter = Drafter(runner, config.params, config.verify, np.random.default_rng([config.verify.seed, DRAFTER_STREAM]))
        host = cloud.rpartition(":")[0] or cloud
        if security.token and not security.tls and not is_loopback(host):
            logger.warning("sending the token to %s without TLS: anyone on the path can read it (add --tls-ca or --tls)", cloud)

    async def run(self) -> EdgeReport:
        """Generate; on losing the cloud, reconnect with backoff and resume (or fail, or finish locally)."""
        recovery, started, attempt = self.config.recovery, time.perf_counter(), 0
        while True:
            committed = self.report.new_tokens
            try:
                await self._session()
                break
            except CloudError as exc:
                if self._complete():  # lost after the last token: nothing is missing
                    break
                exc.report = self.report
                if not exc.lost or recovery.on_loss is CloudLoss.FAIL:
                    raise
                attempt = 1 if self.report.new_tokens > committed else attempt + 1
                if attempt > recovery.retries:
                    if recovery.on_loss is not CloudLoss.LOCAL:
                        gave_up = CloudError(f"{exc} (gave up after {recovery.retries} reconnection attempts)", exc.code)
                        gave_up.report = self.report
                        raise gave_up from None
                    await on_own_thread(self._finish_locally, exc)
                    break
                delay = recovery.backoff(attempt)
                logger.warning("cloud lost after %d tokens (%s); reconnecting in %.2f s (attempt %d of %d)",
                               self.report.new_tokens, exc, delay, attempt, recovery.retries)  # fmt: skip
                await asyncio.sleep(delay)
                self.report.resumes += 1
        self.report.wall_s = time.perf_counter() - started
        return self.report

    def _complete(self) -> bool:
        tokens = self.report.token_ids
        return len(tokens) >= self.config.max_new_tokens or bool(tokens and tokens[-1] in self.stop_ids)

    def _finish_locally(self, loss: CloudError) -> None:
        """--on-cloud-loss local: the drafter finishes alone; its tokens are counted and marked edge-only."""
        logger.warning("cloud lost for good (%s); finishing with the drafter alone: those tokens are edge-only", loss)
        before = self.report.new_tokens
        _decode_on_edge(self.runner, self.prompt, self.config, self.report, EDGE_ONLY, self.on_tokens, self.drafter.rng, self.cancel)
        self.report.edge_only += self.report.new_tokens - before

    async def _session(self) -> None:
        """One session: hello (resuming after the committed tokens), welcome, then the method's exchange."""
        liveness = self.config.recovery.liveness
        async with open_channel(self.cloud, self.security, liveness) as channel:
            outbox: asyncio.Queue = asyncio.Queue()
            call = pb_grpc.VerifierStub(channel).Generate(_requests(outbox), metadata=self.security.metadata())
            outbox.put_nowait(hello_message(self._session_spec()))
            sent_at = time.perf_counter()
            try:
                welcome = await asyncio.wait_for(_expect_welcome(call), liveness.welcome_timeout_s)
                # The cloud answers the hello before its prompt pass: the wait is a round trip plus the
                # cloud's session set-up, a prior that the first measured round trip replaces.
                link = CloudLink(welcome.costs, welcome.max_chunk_tokens, rtt_s=time.perf_counter() - sent_at)
                self.config = within_context(self.config, len(self.prompt), welcome.max_context)
                if self.config.method is Method.AR:
                    await _receive_autoregressive(call, self.runner, self.report, self.on_tokens)
                else:
                    await self._run_speculative(call, outbox, link)
            except grpc.aio.AioRpcError as exc:
                raise CloudError(f"cloud at {self.cloud}: {exc.code().name}: {exc.details()}", exc.code()) from None
            except TimeoutError:
                raise CloudError(
                    f"cloud at {self.cloud}: no welcome within {liveness.welcome_timeout_s:g} s",
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ) from None
            except asyncio.CancelledError:
                call.cancel()  # before the half-close below, so the cloud sees a cancelled session, not a finished one
                raise
            finally:
                outbox.put_nowait(None)
                call.cancel()

    def _session_spec(self) -> SessionSpec:
        vocab = self.runner.vocab_info()
        return SessionSpec(
            prompt=self.prompt + self.report.token_ids,
            params=self.config.params,
            verify=self.config.verify,
            autoregressive=self.config.method is Method.AR,
            max_new_tokens=self.config.max_new_tokens - self.report.new_tokens,
            bonus=self.config.bonus,
            vocab_fingerprint=vocab.fingerprint,
            n_vocab=vocab.n_vocab,
            resumed=self.report.resumes,
            committed=self.report.new_tokens,
        )

    async def _run_speculative(self, call, outbox: asyncio.Queue, link: CloudLink) -> None:
        loop = asyncio.get_running_loop()
        inbox: queue.Queue = queue.Queue()
        edge = SpeculativeEdge(
            self.drafter,
            self.config,
            send=lambda message: loop.call_soon_threadsafe(outbox.put_nowait, message),
            inbox=inbox,
            on_tokens=self.on_tokens,
            stop_ids=self.stop_ids,
            cloud=link,
            report=self.report,
        )
        reader = asyncio.create_task(_read_cloud(call, inbox, self.runner.n_vocab, self.report))
        try:
            # A cancelled generation still waits for its drafting thread, which raises the
            # GenerationCancelled put in its inbox at its next look: the runner must be idle before
            # anyone else uses it (the next session's, or the caller's).
            await on_own_thread(edge.run, self.prompt, on_cancel=lambda: inbox.put(GenerationCancelled()))
        finally:
            reader.cancel()


def within_context(config: EdgeConfig, prompt_tokens: int, max_context: int) -> EdgeConfig:
    """`config` with max_new_tokens cut to what the cloud's context holds after the prompt, so the
    edge never drafts (nor asks the cloud to decode) past the limit and ends there with "length"."""
    room = max_context - prompt_tokens
    if room < 1:  # the cloud refuses such a hello itself; this guards against one that does not
        raise ProtocolError(f"the cloud's context limit of {max_context} tokens leaves no room after a {prompt_tokens}-token prompt")
    return config if room >= config.max_new_tokens else replace(config, max_new_tokens=room)


async def _requests(outbox: asyncio.Queue):
    while (message := await outbox.get()) is not None:
        yield message


async def _responses(call):
    """The cloud's messages after the welcome (grpc.aio forbids mixing read() and async for)."""
    while (message := await call.read()) is not grpc.aio.EOF:
        yield message


async def _expect_welcome(call) -> WelcomeInfo:
    message = await call.read()
    if message is grpc.aio.EOF or message.WhichOneof("kind") != "welcome":
        raise ProtocolError("the cloud did not answer the hello with a welcome")
    reject_unknown_fields(message)
    return parse_welcome(message.welcome)


async def _receive_autoregressive(call, runner: ModelRunner, report: EdgeReport, on_tokens) -> None:
    """Append the tokens the cloud streams to the report, until the stream ends."""
    start = time.perf_counter()
    async for message in _responses(call):
        reject_unknown_fields(message)
        report.bytes_down += message.ByteSize()
        if message.WhichOneof("kind") != "tokens":
            raise ProtocolError("an autoregressive session streams only tokens")
        tokens = parse_tokens(message.tokens, runner.n_vocab)
        report.cloud_busy_s += tokens.compute_s
        report.verify_times.append(tokens.compute_s)
        if report.cloud_prefill_s is None:  # the first token's pass is the prompt's
            report.cloud_prefill_s = tokens.compute_s
        for token in tokens.tokens:
            if report.ttft_s is None:
                report.ttft_s = time.perf_counter() - start
            report.token_ids.append(token)
            report.sources.append("cloud")
            report.cloud_passes += 1
            if on_tokens:
                on_tokens([token], "cloud")


async def _read_cloud(call, inbox: queue.Queue, n_vocab: int, report: EdgeReport) -> None:
    """Parse every cloud message into the drafting thread's inbox; errors go there too."""
    try:
        async for message in _responses(call):
            reject_unknown_fields(message)
            report.bytes_down += message.ByteSize()
            kind = message.WhichOneof("kind")
            if kind == "verdict":
                inbox.put(parse_verdict(message.verdict, n_vocab))
            elif kind == "tokens":
                inbox.put(parse_tokens(message.tokens, n_vocab))
            elif kind == "candidates":
                batch = message.candidates
                inbox.put(CandidateReport(batch.epoch, codec.decode_candidates(batch.candidates, n_vocab)))
            else:
                raise ProtocolError(f"unexpected {kind} message during a speculative session")
        inbox.put(CloudError("the cloud ended the session before the generation finished"))
    except grpc.aio.AioRpcError as exc:
        inbox.put(CloudError(f"cloud: {exc.code().name}: {exc.details()}", exc.code()))
    except Exception as exc:  # whatever stops the reader must also stop the drafting thread
        inbox.put(exc)
