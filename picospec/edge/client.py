"""The edge's network side: a gRPC stream to the cloud, driven by an asyncio event loop, while
the drafter runs in its own thread (SpeculativeEdge)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
import time
from typing import Callable, Iterator, Sequence

import grpc
import numpy as np

from picospec.decoding import Drafter, generate_autoregressive
from picospec.edge.config import EdgeConfig, Method
from picospec.edge.pipeline import CandidateReport, CloudLink, SpeculativeEdge, TokenSink
from picospec.edge.report import EdgeReport
from picospec.errors import PicoSpecError, ProtocolError
from picospec.runners.base import ModelRunner
from picospec.wire import codec
from picospec.wire import picospec_pb2_grpc as pb_grpc
from picospec.wire.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    SessionSpec,
    WelcomeInfo,
    hello_message,
    parse_tokens,
    parse_verdict,
    parse_welcome,
    reject_unknown_fields,
)


class CloudError(PicoSpecError):
    """The cloud refused or dropped the session; the message says why."""


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
) -> EdgeReport:
    """Run one generation with `config.method`; `cloud` is HOST:PORT (unused for the edge method).

    With `cancel`, another thread may stop it: then it raises GenerationCancelled.
    """
    cancel = cancel or Cancellation()
    cancel.check()
    if config.method is Method.EDGE:
        return _generate_on_edge(runner, prompt, config, on_tokens, cancel)
    if cloud is None:
        raise PicoSpecError(f"method {config.method.value} needs a cloud address")
    return asyncio.run(_generate_with_cloud(cloud, runner, list(prompt), config, on_tokens, cancel))


def _generate_on_edge(runner: ModelRunner, prompt: Sequence[int], config: EdgeConfig, on_tokens, cancel) -> EdgeReport:
    start = time.perf_counter()
    report = EdgeReport(method=config.method.value, verify=config.verify.mode.value)
    stop_ids = runner.vocab_info().eos_ids

    def sink(token: int) -> None:
        cancel.check()  # between two decode steps: the runner is consistent
        if report.ttft_s is None:
            report.ttft_s = time.perf_counter() - start
        report.token_ids.append(token)
        report.sources.append("draft")
        if on_tokens:
            on_tokens([token], "draft")

    rng = np.random.default_rng(config.verify.seed)
    try:
        generate_autoregressive(runner, prompt, config.params, config.verify, rng, config.max_new_tokens, stop_ids, sink)
    except GenerationCancelled:
        raise GenerationCancelled(report) from None
    finally:
        report.wall_s = report.edge_busy_s = time.perf_counter() - start
    return report


def _session_spec(runner: ModelRunner, prompt: list[int], config: EdgeConfig) -> SessionSpec:
    vocab = runner.vocab_info()
    return SessionSpec(
        prompt=prompt,
        params=config.params,
        config=config.verify,
        autoregressive=config.method is Method.AR,
        max_new_tokens=config.max_new_tokens,
        bonus=config.bonus,
        vocab_fingerprint=vocab.fingerprint,
        n_vocab=vocab.n_vocab,
    )


async def _generate_with_cloud(
    cloud: str, runner, prompt: list[int], config: EdgeConfig, on_tokens, cancel: Cancellation
) -> EdgeReport:
    # Cancellation cancels this task wherever it waits; _open_session then cancels the call,
    # which ends the session on the cloud.
    task, loop = asyncio.current_task(), asyncio.get_running_loop()
    report = EdgeReport(method=config.method.value, verify=config.verify.mode.value)
    start = time.perf_counter()
    with cancel.hook(functools.partial(_cancel_soon, loop, task)):
        try:
            return await _open_session(cloud, runner, prompt, config, on_tokens, report)
        except asyncio.CancelledError:
            report.wall_s = time.perf_counter() - start
            raise GenerationCancelled(report) from None


def _cancel_soon(loop: asyncio.AbstractEventLoop, task: asyncio.Task) -> None:
    # A cancel racing the generation's end may find the loop closed: nothing is left to stop then.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(task.cancel)


async def _open_session(
    cloud: str, runner, prompt: list[int], config: EdgeConfig, on_tokens, report: EdgeReport
) -> EdgeReport:
    """One gRPC session; `report` fills in as it runs (and is returned once it finishes)."""
    limit = DEFAULT_MAX_MESSAGE_BYTES
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    async with grpc.aio.insecure_channel(cloud, options=options) as channel:
        outbox: asyncio.Queue = asyncio.Queue()
        call = pb_grpc.VerifierStub(channel).Generate(_requests(outbox))
        outbox.put_nowait(hello_message(_session_spec(runner, prompt, config)))
        sent_at = time.perf_counter()
        try:
            welcome = await _expect_welcome(call)
            # The cloud answers the hello before its prompt pass: the wait is a round trip plus the
            # cloud's session set-up, a prior that the first measured round trip replaces.
            link = CloudLink(welcome.costs, welcome.max_chunk_tokens, rtt_s=time.perf_counter() - sent_at)
            if config.method is Method.AR:
                return await _receive_autoregressive(call, runner, on_tokens, report)
            return await _run_speculative(call, outbox, runner, prompt, config, on_tokens, link, report)
        except grpc.aio.AioRpcError as exc:
            raise CloudError(f"cloud at {cloud}: {exc.code().name}: {exc.details()}") from None
        except asyncio.CancelledError:
            call.cancel()  # before the half-close below, so the cloud sees a cancelled session, not a finished one
            raise
        finally:
            outbox.put_nowait(None)
            call.cancel()


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


async def _receive_autoregressive(call, runner: ModelRunner, on_tokens, report: EdgeReport) -> EdgeReport:
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
    report.wall_s = time.perf_counter() - start
    return report


async def _run_speculative(
    call, outbox: asyncio.Queue, runner, prompt, config: EdgeConfig, on_tokens, link: CloudLink, report: EdgeReport
) -> EdgeReport:
    loop = asyncio.get_running_loop()
    inbox: queue.Queue = queue.Queue()
    drafter = Drafter(runner, config.params, config.verify, np.random.default_rng([config.verify.seed, 1]))
    edge = SpeculativeEdge(
        drafter,
        config,
        send=lambda message: loop.call_soon_threadsafe(outbox.put_nowait, message),
        inbox=inbox,
        on_tokens=on_tokens,
        stop_ids=runner.vocab_info().eos_ids,
        cloud=link,
        report=report,
    )
    reader = asyncio.create_task(_read_cloud(call, inbox, runner.n_vocab, edge.report))
    drafting = loop.run_in_executor(None, edge.run, prompt)
    try:
        # Shielded so that a cancelled generation can still wait for its drafting thread: the
        # runner must be idle before anyone else uses it.
        return await asyncio.shield(drafting)
    except asyncio.CancelledError:
        inbox.put(GenerationCancelled())  # the drafting thread raises it at its next look at the inbox
        await asyncio.gather(drafting, return_exceptions=True)
        raise
    finally:
        reader.cancel()


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
        inbox.put(CloudError(f"cloud: {exc.code().name}: {exc.details()}"))
    except Exception as exc:  # whatever stops the reader must also stop the drafting thread
        inbox.put(exc)
