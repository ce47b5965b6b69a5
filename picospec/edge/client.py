"""The edge's network side: a gRPC stream to the cloud, driven by an asyncio event loop, while
the drafter runs in its own thread (SpeculativeEdge)."""

from __future__ import annotations

import asyncio
import queue
import time
from dataclasses import replace
from typing import Sequence

import grpc
import numpy as np

from picospec.decoding import Drafter, generate_autoregressive
from picospec.edge.config import EdgeConfig, Method
from picospec.edge.pipeline import CandidateReport, CloudLink, SpeculativeEdge, TokenSink
from picospec.edge.report import EdgeReport, finish_reason
from picospec.errors import PicoSpecError, ProtocolError
from picospec.runners.base import ModelRunner
from picospec.security import ChannelSecurity
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


def generate(
    cloud: str | None,
    runner: ModelRunner,
    prompt: Sequence[int],
    config: EdgeConfig,
    on_tokens: TokenSink | None = None,
    security: ChannelSecurity = ChannelSecurity(),
) -> EdgeReport:
    """Run one generation with `config.method`; `cloud` is HOST:PORT (unused for the edge method),
    reached with `security` (TLS, token)."""
    if config.method is Method.EDGE:
        report = _generate_on_edge(runner, prompt, config, on_tokens)
    elif cloud is None:
        raise PicoSpecError(f"method {config.method.value} needs a cloud address")
    else:
        report = asyncio.run(_generate_with_cloud(cloud, security, runner, list(prompt), config, on_tokens))
    report.finish_reason = finish_reason(report.token_ids, frozenset(runner.vocab_info().eos_ids))
    return report


def _generate_on_edge(runner: ModelRunner, prompt: Sequence[int], config: EdgeConfig, on_tokens) -> EdgeReport:
    start = time.perf_counter()
    report = EdgeReport(method=config.method.value, verify=config.verify.mode.value)
    stop_ids = runner.vocab_info().eos_ids

    def sink(token: int) -> None:
        if report.ttft_s is None:
            report.ttft_s = time.perf_counter() - start
        report.token_ids.append(token)
        report.sources.append("draft")
        if on_tokens:
            on_tokens([token], "draft")

    rng = np.random.default_rng(config.verify.seed)
    generate_autoregressive(runner, prompt, config.params, config.verify, rng, config.max_new_tokens, stop_ids, sink)
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


def open_channel(cloud: str, security: ChannelSecurity) -> grpc.aio.Channel:
    """A channel to the cloud at HOST:PORT: TLS when `security` says so, plaintext otherwise."""
    limit = DEFAULT_MAX_MESSAGE_BYTES
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    credentials = security.credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(cloud, options=options)
    return grpc.aio.secure_channel(cloud, credentials, options=options)


async def _generate_with_cloud(
    cloud: str, security: ChannelSecurity, runner, prompt: list[int], config: EdgeConfig, on_tokens
) -> EdgeReport:
    async with open_channel(cloud, security) as channel:
        outbox: asyncio.Queue = asyncio.Queue()
        call = pb_grpc.VerifierStub(channel).Generate(_requests(outbox), metadata=security.metadata())
        outbox.put_nowait(hello_message(_session_spec(runner, prompt, config)))
        sent_at = time.perf_counter()
        try:
            welcome = await _expect_welcome(call)
            # The cloud answers the hello before its prompt pass: the wait is a round trip plus the
            # cloud's session set-up, a prior that the first measured round trip replaces.
            link = CloudLink(welcome.costs, welcome.max_chunk_tokens, rtt_s=time.perf_counter() - sent_at)
            config = within_context(config, len(prompt), welcome.max_context)
            if config.method is Method.AR:
                return await _receive_autoregressive(call, runner, config, on_tokens)
            return await _run_speculative(call, outbox, runner, prompt, config, on_tokens, link)
        except grpc.aio.AioRpcError as exc:
            raise CloudError(f"cloud at {cloud}: {exc.code().name}: {exc.details()}") from None
        finally:
            outbox.put_nowait(None)
            call.cancel()


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


async def _receive_autoregressive(call, runner: ModelRunner, config: EdgeConfig, on_tokens) -> EdgeReport:
    report = EdgeReport(method=config.method.value, verify=config.verify.mode.value)
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
    call, outbox: asyncio.Queue, runner, prompt, config: EdgeConfig, on_tokens, link: CloudLink
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
    )
    reader = asyncio.create_task(_read_cloud(call, inbox, runner.n_vocab, edge.report))
    try:
        return await loop.run_in_executor(None, edge.run, prompt)
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
