"""The cloud: a gRPC (asyncio) server that verifies draft chunks for many concurrent edge sessions.

Every session is one bidirectional Generate stream (see picospec/wire/picospec.proto). Each session
leases a sequence of one multi-sequence target runner and runs its TargetVerifier on a thread of
its own; every model evaluation goes through ONE scheduler thread (picospec/cloud/scheduler.py),
which batches the sessions' pending work into shared passes (or, with batching off, runs one
session's work per pass, FIFO), while the event loop keeps reading, writing and dropping stale chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import itertools
import json
import logging
import signal
import threading
import time
from collections import deque
from typing import AsyncIterator, Callable

import grpc

from picospec.affinity import parse_cores, pin_to_cores
from picospec.cloud.calibrate import calibration_plan, measure_cost_curve
from picospec.cloud.config import CloudConfig
from picospec.cloud.health import CloudHealth
from picospec.cloud.memory import heap_bytes, release_freed_memory, resident_bytes
from picospec.cloud.pool import Lease, SequencePool
from picospec.cloud.scheduler import BatchScheduler
from picospec.cloud.session import (
    AutoregressiveSession,
    Inbox,
    EdgeLost,
    SessionRefused,
    SessionStats,
    SpeculativeSession,
    accept_hello,
    kind_of,
    session_kind,
)
from picospec.costmodel import CostTracker
from picospec.errors import InvalidInputError, ProtocolError
from picospec.models.registry import DEFAULT_TARGET
from picospec.runners.base import MultiSeqRunner, VocabInfo
from picospec.security import ServerSecurity, add_server_arguments
from picospec.wire import picospec_pb2 as pb
from picospec.wire import picospec_pb2_grpc as pb_grpc
from picospec.wire.liveness import add_liveness_arguments, liveness_from_args
from picospec.wire.messages import SessionSpec, welcome_message

logger = logging.getLogger("picospec.cloud")

# Builds the target for n sequences (one per session); called once, off the event loop.
RunnerFactory = Callable[[int], MultiSeqRunner]
STATS_LINE = "picospec cloud: stats "  # then one JSON object: what `SIGUSR1` asks for (loadtest reads it)
FINISHED_KEPT = 1000  # stats of the most recent finished sessions kept for inspection
STOP_GRACE_S = 1.0  # how long stop() lets running sessions finish before cancelling them
DRAIN_POLL_S = 0.1  # how often drain() looks whether the running sessions have ended


class CloudServer(pb_grpc.VerifierServicer):
    """The Verifier service over a target runner with a sequence per session. Create it with start_server()."""

    def __init__(self, config: CloudConfig, runner_factory: RunnerFactory) -> None:
        self.config = config
        self._runner_factory = runner_factory
        self.scheduler: BatchScheduler | None = None
        self.pool: SequencePool | None = None
        self.finished: deque[SessionStats] = deque(maxlen=FINISHED_KEPT)
        self.sessions_ended = 0
        self.vocab: VocabInfo | None = None
        self.costs: CostTracker | None = None  # measured at start, refined by every session's passes
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._health: CloudHealth | None = None
        self._session_ids = itertools.count(1)
        self.draining = False

    async def start(self) -> None:
        """Load the target (learning its vocabulary and measuring its cost curve), then listen."""
        security = self.config.security
        if warning := security.check_listen(self.config.host):  # refuses before any model is loaded
            logger.warning(warning)
        logger.info("security: %s", security.describe())
        runner = await asyncio.get_running_loop().run_in_executor(None, self._runner_factory, self.config.max_sessions)
        self.scheduler = BatchScheduler(runner, self.config.step_policy).start()
        self.pool = SequencePool(self.scheduler)
        lease = self.pool.acquire()
        try:
            self.vocab = await lease.run(lease.view.vocab_info)
            longest_pass = self.config.step_tokens if self.config.batching else 1
            sizes, context_tokens = calibration_plan(longest_pass, self.config.max_context)
            curve = await lease.run(measure_cost_curve, lease.view, sizes, context_tokens)
            self.costs = CostTracker(curve)
            logger.info("cost curve: %s", curve)
            if self.config.batching:
                # The curve as measured, one sequence a pass: what the sessions observe later is the
                # time of the shared passes they rode in, which would teach the planner nothing.
                self.scheduler.pass_cost = curve.verify
        finally:
            self.pool.release(lease)
        limits = self.config.max_message_bytes
        self._server = grpc.aio.server(
            interceptors=security.interceptors(),
            options=[("grpc.max_receive_message_length", limits), ("grpc.max_send_message_length", limits),
                     *self.config.liveness.server_options()],  # fmt: skip
        )
        pb_grpc.add_VerifierServicer_to_server(self, self._server)
        self._health = CloudHealth(self._server)
        address = f"{self.config.host}:{self.config.port}"
        credentials = security.credentials()
        try:
            if credentials is None:
                self.port = self._server.add_insecure_port(address)
            else:
                self.port = self._server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise InvalidInputError(f"cannot listen on {address}: {exc}") from None
        if self.port == 0:  # older gRPC reports a failed bind this way
            raise InvalidInputError(f"cannot listen on {address} (is the port in use?)")
        await self._server.start()
        await self._health.serving()

    async def drain(self, timeout_s: float) -> None:
        """Refuse new sessions with UNAVAILABLE (a balancer then sends them to another replica) and wait
        up to timeout_s for the running ones to end. The health service says NOT_SERVING from now on."""
        self.draining = True
        await self._health.draining()
        deadline = time.monotonic() + timeout_s
        while self.pool.in_use and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop listening, cancel sessions still running after grace_s, and finish the compute in flight."""
        if self._server is not None:
            await self._server.stop(grace_s)
        # Wait for the compute in flight: a llama.cpp call must not outlive the server that owns its runner.
        await asyncio.get_running_loop().run_in_executor(None, self._stop_compute)

    def _stop_compute(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()  # the sessions' calls in flight still need the scheduler
        if self.scheduler is not None:
            self.scheduler.close()
            logger.info("scheduler: %s", self.scheduler.stats.summary())

    # -- the RPC --------------------------------------------------------------------------------

    async def Generate(  # noqa: N802 (the name is the RPC's)
        self, request_iterator: AsyncIterator[pb.EdgeMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.CloudMessage]:
        """One session: hello, welcome, then verdicts (speculative) or a token stream (autoregressive)."""
        stats = SessionStats(next(self._session_ids))
        inbox = Inbox(request_iterator, self.config.idle_timeout_s)
        lease: Lease | None = None
        try:
            if self.draining:
                raise SessionRefused(grpc.StatusCode.UNAVAILABLE, "the cloud is shutting down; connect to another")
            spec = accept_hello(await inbox.get(), self.vocab, self.config)
            stats.kind = session_kind(spec)
            lease = self._lease()
            # Sent before the prompt is evaluated, so the edge's prompt pass overlaps the cloud's.
            yield self._welcome()
            serve = self._serve_autoregressive if spec.autoregressive else self._serve_speculative
            async for reply in serve(spec, lease, inbox, stats):
                yield reply
            stats.outcome = "completed"
        except SessionRefused as exc:
            stats.outcome = exc.code.name
            await context.abort(exc.code, exc.details)
        except (ProtocolError, InvalidInputError) as exc:
            stats.outcome = grpc.StatusCode.INVALID_ARGUMENT.name
            logger.warning("session %d refused: %s", stats.session_id, exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except EdgeLost as exc:
            stats.outcome = "lost"  # nobody is left to tell
            logger.warning("session %d: %s", stats.session_id, exc)
        except (asyncio.CancelledError, GeneratorExit):
            stats.outcome = "cancelled"
            raise
        except Exception as exc:
            stats.outcome = grpc.StatusCode.INTERNAL.name
            logger.exception("session %d failed", stats.session_id)
            await context.abort(grpc.StatusCode.INTERNAL, f"the cloud failed: {exc}")
        finally:
            inbox.close()
            if lease is not None:
                # Safe even while a cancelled session's compute still runs: the next user's work
                # queues behind it on the lease's own thread.
                self.pool.release(lease)
            self.finished.append(stats)
            self.sessions_ended += 1
            logger.info(stats.summary())

    def _lease(self) -> Lease:
        lease = self.pool.acquire()
        if lease is None:
            raise SessionRefused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the cloud is serving its maximum of {self.config.max_sessions} sessions; try again later",
            )
        return lease

    def stats(self) -> dict:
        """The scheduler's counters since the start, and the sessions open and ended (JSON-ready)."""
        return {**dataclasses.asdict(self.scheduler.stats), "sessions_open": self.pool.in_use,
                "sessions_ended": self.sessions_ended, "rss_bytes": resident_bytes(),
                "heap_bytes": heap_bytes()}  # fmt: skip

    def _welcome(self) -> pb.CloudMessage:
        config = self.config
        return welcome_message(config.model_name, config.max_context, config.max_chunk_tokens, self.costs.curve)

    async def _serve_speculative(
        self, spec: SessionSpec, lease: Lease, inbox: Inbox, stats: SessionStats
    ) -> AsyncIterator[pb.CloudMessage]:
        """Answer each current chunk with a verdict, drop stale ones, decode when asked, until close."""
        session = SpeculativeSession(spec, lease.view, self.config, stats, self.costs, lease.view)
        await lease.run(session.begin)
        while (message := await inbox.get()) is not None:
            kind = kind_of(message)
            if kind == "close":
                return
            if kind == "chunk":
                if not session.is_stale(message.chunk.epoch):
                    yield await lease.run(session.verify, message.chunk)
            elif kind == "decode":
                request = session.start_decode(message.decode)
                for _ in range(request.count):
                    yield await lease.run(session.decode_one)
            elif kind == "more_candidates":
                yield session.more_candidates(message.more_candidates)
            else:
                raise ProtocolError(f"unexpected {kind} message in a speculative session")

    async def _serve_autoregressive(
        self, spec: SessionSpec, lease: Lease, inbox: Inbox, stats: SessionStats
    ) -> AsyncIterator[pb.CloudMessage]:
        """Stream each token as soon as it is sampled, until max_new_tokens, an EOS, or close."""
        session = AutoregressiveSession(spec, lease.view, self.config, stats, lease.view)
        while not session.done:
            yield await lease.run(session.next_message)
            message = inbox.poll()  # the edge may stop the stream early; it has nothing else to say
            if message is None:
                continue
            if kind_of(message) == "close":
                return
            raise ProtocolError(f"unexpected {kind_of(message)} message in an autoregressive session")


async def start_server(config: CloudConfig, runner_factory: RunnerFactory) -> CloudServer:
    """Start a cloud on the running event loop; its `port` is the one bound (config.port 0 picks one)."""
    server = CloudServer(config, runner_factory)
    try:
        await server.start()
    except BaseException:
        await server.stop(0)
        raise
    return server


class CloudServerThread:
    """A cloud on its own event loop in a background thread, for tests and in-process demos.

    Use as a context manager; `port` and `server` are set once it listens.
    """

    def __init__(self, config: CloudConfig, runner_factory: RunnerFactory) -> None:
        self.config, self.runner_factory = config, runner_factory
        self.server: CloudServer | None = None
        self._thread = threading.Thread(target=self._run, name="picospec-cloud", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @property
    def port(self) -> int:
        return self.server.port if self.server else 0

    def start(self) -> "CloudServerThread":
        """Start serving; return once the server listens, or raise why it could not."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def stop(self) -> None:
        """Stop the server and its thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()

    def __enter__(self) -> "CloudServerThread":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start(); the thread has nobody else to tell
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self.server = await start_server(self.config, self.runner_factory)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.stop()


# -- `picospec cloud` -----------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `cloud` command to the top-level parser."""
    defaults = CloudConfig()
    parser = subparsers.add_parser("cloud", help="serve the target model: verify draft chunks for edge sessions")
    parser.add_argument("--model", default=DEFAULT_TARGET, metavar="MODEL", help="a default model name (target), a GGUF file or a Hugging Face checkpoint directory")
    parser.add_argument("--host", default=defaults.host, help="address to listen on")
    parser.add_argument("--port", type=int, default=defaults.port, help="port, 0 for any free one")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="llama.cpp threads of the target")
    parser.add_argument("--gpu-layers", type=int, default=defaults.gpu_layers, metavar="N",
                        help="target layers offloaded to a GPU (-1: all); needs llama-cpp-python built with a GPU "
                        "backend (README)")  # fmt: skip
    parser.add_argument("--max-sessions", type=int, default=defaults.max_sessions,
                        help="concurrent sessions, each with its own KV cache")  # fmt: skip
    parser.add_argument("--batching", choices=("on", "off"), default="on" if defaults.batching else "off",
                        help="on: one pass evaluates every session's pending work (one context, a sequence per "
                        "session); off: a context per session, one session's work per pass. --deterministic "
                        "turns it off")  # fmt: skip
    parser.add_argument("--step-tokens", type=int, default=defaults.step_tokens, metavar="N",
                        help="batching: most tokens per pass; longer work (a prompt) is cut into pieces")  # fmt: skip
    parser.add_argument("--gather-ms", type=float, default=defaults.gather_s * 1000, metavar="MS",
                        help="batching: how long a pass waits for the sessions of the pass before it to queue their "
                        "next work (their threads need a moment after a pass; without it passes alternate between "
                        "halves of the sessions)")  # fmt: skip
    parser.add_argument("--kv-unified", action=argparse.BooleanOptionalAction, default=defaults.kv_unified,
                        help="batching: one KV buffer for all sessions instead of a stream each (llama.cpp then "
                        "evaluates a pass in one sub-batch even when sessions bring different token counts)")  # fmt: skip
    parser.add_argument("--max-context", type=int, default=defaults.max_context,
                        help="tokens per session, prompt included")  # fmt: skip
    parser.add_argument("--max-chunk-tokens", type=int, default=defaults.max_chunk_tokens, help="draft tokens per chunk")
    parser.add_argument("--max-message-mib", type=int, default=defaults.max_message_bytes // 2**20,
                        help="largest message in MiB, either way")  # fmt: skip
    parser.add_argument("--deterministic", action="store_true",
                        help="batch-invariant llama.cpp settings: logits independent of chunking (slower)")  # fmt: skip
    parser.add_argument("--drain-timeout", type=float, default=defaults.drain_s, metavar="S",
                        help="on SIGTERM: refuse new sessions (UNAVAILABLE) and let running ones finish for up to S s")  # fmt: skip
    parser.add_argument("--device", default=defaults.device, help="where a checkpoint directory runs: cpu, cuda, ... (GGUF: cpu only)")
    parser.add_argument("--cores", type=parse_cores, default=None, metavar="LIST", help="pin to these CPUs, e.g. 1 or 0,2-3")
    add_server_arguments(parser)
    add_liveness_arguments(parser)
    parser.set_defaults(func=_serve_command)


def _serve_command(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.cores is not None:
        pin_to_cores(args.cores)
    if not release_freed_memory():
        logger.info("not glibc: the allocator keeps its own policy on freed memory")
    from picospec.models.registry import model_path
    from picospec.runners.load import load_runner  # imported here: only serving needs a model backend
    from picospec.runners.separate import SeparateRunners

    path = model_path(args.model)
    # Batching needs llama.cpp's multi-sequence context, and other sessions' tokens in a pass would
    # change the batch size the deterministic configuration's kernels must see.
    why_not = "a checkpoint directory" if path.is_dir() else "--deterministic" if args.deterministic else None
    batching = args.batching == "on" and why_not is None
    if args.batching == "on" and why_not:
        logger.info("batching off: %s", why_not)
    config = CloudConfig(
        host=args.host,
        port=args.port,
        max_sessions=args.max_sessions,
        max_context=args.max_context,
        max_chunk_tokens=args.max_chunk_tokens,
        max_message_bytes=args.max_message_mib * 2**20,
        model_name=path.name,
        threads=args.threads,
        gpu_layers=args.gpu_layers,
        batching=batching,
        step_tokens=args.step_tokens,
        gather_s=args.gather_ms / 1000,
        kv_unified=args.kv_unified,
        drain_s=args.drain_timeout,
        device=args.device,
        security=ServerSecurity.from_args(args),
        liveness=liveness_from_args(args),
    )
    if batching:  # one llama.cpp context with a sequence per session, whose decode holds a whole pass
        from picospec.runners.llama import LlamaRunner

        def factory(n_seq: int) -> LlamaRunner:
            return LlamaRunner(path, n_ctx=config.max_context, n_threads=config.threads, gpu_layers=config.gpu_layers,
                               n_seq=n_seq, n_batch=config.step_tokens, kv_unified=config.kv_unified)  # fmt: skip

    else:  # a runner per session
        single = functools.partial(
            load_runner, str(path), n_ctx=config.max_context, n_threads=config.threads,
            deterministic=args.deterministic, device=config.device, gpu_layers=config.gpu_layers,
        )  # fmt: skip
        factory = functools.partial(SeparateRunners, single, seq_capacity=config.max_context)
    return asyncio.run(_serve_until_signalled(config, factory))


async def _serve_until_signalled(config: CloudConfig, runner_factory: RunnerFactory) -> int:
    """Serve until SIGINT or SIGTERM, then drain (config.drain_s) and shut down; on SIGUSR1 print the stats line."""
    server = await start_server(config, runner_factory)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(STATS_LINE + json.dumps(server.stats()), flush=True))
    print(f"picospec cloud: serving {config.model_name} on {config.host}:{server.port}", flush=True)
    started = time.perf_counter()
    try:
        await stop.wait()
        logger.info("draining: %d sessions may run for up to %g s; new ones are refused", server.pool.in_use, config.drain_s)
        await server.drain(config.drain_s)
    finally:
        await server.stop()
    logger.info("stopped after %.1f s and %d sessions", time.perf_counter() - started, server.sessions_ended)
    return 0
