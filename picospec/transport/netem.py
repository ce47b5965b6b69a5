"""A link emulator: a TCP proxy that adds propagation delay and a bandwidth limit in the application.

Linux tc here has no netem, so the edge-cloud link is emulated by relaying every byte through an
asyncio proxy. Each direction of each connection is its own link: a chunk of n bytes waits for the
link to be free, occupies it for n*8/bandwidth seconds (serialisation, FIFO), then arrives one-way
delay later (rtt/2, plus optional jitter). Delivery never reorders bytes within a direction.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import random
import threading
from dataclasses import dataclass
from typing import Callable

from picospec.errors import InvalidInputError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
# A sender that outpaces the link stops being read once this much serialisation is queued,
# like a bottleneck router's buffer; it bounds memory without ever letting the link go idle.
MAX_BACKLOG_S = 0.5


@dataclass(frozen=True)
class LinkProfile:
    """The emulated link: round-trip time, bandwidth per direction, and delay jitter."""

    rtt_ms: float
    bandwidth_mbps: float
    jitter_ms: float = 0.0

    def __post_init__(self) -> None:
        _check_finite("rtt_ms", self.rtt_ms, allow_zero=True)
        _check_finite("jitter_ms", self.jitter_ms, allow_zero=True)
        _check_finite("bandwidth_mbps", self.bandwidth_mbps, allow_zero=False)

    @property
    def one_way_s(self) -> float:
        """Propagation delay of one direction, in seconds."""
        return self.rtt_ms / 2000.0

    def serialisation_s(self, nbytes: int) -> float:
        """How long n bytes occupy the link, in seconds."""
        return nbytes * 8 / (self.bandwidth_mbps * 1e6)

    def describe(self) -> str:
        """One human-readable line, e.g. 'rtt 100 ms, 8 Mbit/s, jitter 0 ms'."""
        return f"rtt {self.rtt_ms:g} ms, {self.bandwidth_mbps:g} Mbit/s, jitter {self.jitter_ms:g} ms"


def _check_finite(name: str, value: float, allow_zero: bool) -> None:
    """Reject NaN, infinities, negatives and (unless allowed) zero, naming the field."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise InvalidInputError(f"{name} must be {bound}, got {value!r}")


# The link `generate` and `demo` emulate unless told otherwise (the benchmark's "wan").
WAN = LinkProfile(rtt_ms=20.0, bandwidth_mbps=100.0)


class LinkSchedule:
    """The delivery clock of one direction of one connection: all the delay arithmetic lives here."""

    def __init__(self, profile: LinkProfile, rng: random.Random) -> None:
        self.profile = profile
        self.rng = rng
        self.link_free_at = -math.inf
        self.last_due = -math.inf

    def due(self, nbytes: int, now: float) -> float:
        """When a chunk of n bytes handed to the link at `now` arrives at the far end."""
        start = max(now, self.link_free_at)
        self.link_free_at = start + self.profile.serialisation_s(nbytes)
        # Jitter is uniform in +-jitter_ms, but the delay can't go negative nor overtake earlier bytes.
        jitter_s = self.rng.uniform(-1.0, 1.0) * self.profile.jitter_ms / 1000.0
        arrival = self.link_free_at + max(0.0, self.profile.one_way_s + jitter_s)
        self.last_due = max(self.last_due, arrival)
        return self.last_due

    def backlog_s(self, now: float) -> float:
        """Serialisation still queued ahead of a chunk handed over at `now`."""
        return max(0.0, self.link_free_at - now)


async def _relay(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    schedule: LinkSchedule,
    count: Callable[[int], None],
    flowing: asyncio.Event,
) -> None:
    """Carry one direction: read chunks, deliver each at its due time, then pass on the close."""
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    async with asyncio.TaskGroup() as group:
        group.create_task(_deliver(queue, writer, count, flowing))
        await _receive(reader, schedule, queue)


async def _receive(
    reader: asyncio.StreamReader, schedule: LinkSchedule, queue: asyncio.Queue[tuple[float, bytes] | None]
) -> None:
    """Read chunks until EOF, stamping each with its delivery time; None marks the end."""
    loop = asyncio.get_running_loop()
    while True:
        backlog = schedule.backlog_s(loop.time())
        if backlog > MAX_BACKLOG_S:
            await asyncio.sleep(backlog - MAX_BACKLOG_S)
        data = await reader.read(CHUNK_BYTES)
        if not data:
            break
        queue.put_nowait((schedule.due(len(data), loop.time()), data))
    queue.put_nowait(None)


async def _deliver(
    queue: asyncio.Queue[tuple[float, bytes] | None],
    writer: asyncio.StreamWriter,
    count: Callable[[int], None],
    flowing: asyncio.Event,
) -> None:
    """Write each chunk once its due time comes, in order; on the end marker, half-close like TCP.
    While the link is partitioned (`flowing` clear) nothing is written."""
    loop = asyncio.get_running_loop()
    while (item := await queue.get()) is not None:
        due, data = item
        await asyncio.sleep(max(0.0, due - loop.time()))
        await flowing.wait()
        writer.write(data)
        await writer.drain()
        count(len(data))
    if writer.can_write_eof():
        writer.write_eof()


class LinkEmulator:
    """An asyncio TCP proxy from listen_host:listen_port to upstream_host:upstream_port over an emulated link.

    `bytes_up` counts bytes delivered client->upstream and `bytes_down` upstream->client, over all
    connections. When one side closes, the queued bytes are delivered and the close is passed on;
    a connection ends once both directions have closed.
    """

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        upstream_host: str,
        upstream_port: int,
        profile: LinkProfile,
        *,
        seed: int | None = None,
    ) -> None:
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.profile = profile
        self.port: int | None = None
        self.bytes_up = 0
        self.bytes_down = 0
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()  # cleared while partitioned
        self._flowing.set()

    def partition(self) -> None:
        """Stop delivering in both directions of every connection, new ones included: the sockets
        stay open and the bytes wait, as across a partitioned network, until heal()."""
        self._flowing.clear()

    def heal(self) -> None:
        """End a partition: the waiting bytes are delivered (TCP would retransmit them)."""
        self._flowing.set()

    async def reset(self) -> None:
        """Drop every open connection at once (both peers see a reset), and keep listening."""
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def start(self) -> int:
        """Start listening; returns the bound port (a free one when listen_port is 0)."""
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.listen_port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening and drop every open connection, queued bytes included."""
        if self._server is None:
            return
        self._server.close()
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        """Serve one client: connect upstream, then relay both ways until both have closed."""
        task = asyncio.current_task()
        assert task is not None  # start_server always runs this callback in a task
        self._connections.add(task)
        try:
            await self._serve(client_reader, client_writer)
        except asyncio.CancelledError:
            # Only stop() cancels a connection; ending quietly keeps asyncio's stream callback
            # (which calls task.exception()) from logging a spurious error on Python 3.11.
            pass
        finally:
            self._connections.discard(task)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        """Connect upstream; if it refuses, close the client and log why, leaving the proxy up."""
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError as exc:
            logger.warning(
                "netem: upstream %s:%d unreachable (%s); closing the client", self.upstream_host, self.upstream_port, exc
            )
            client_writer.close()
            return
        writers = (client_writer, upstream_writer)
        try:
            await self._relay_both(client_reader, client_writer, upstream_reader, upstream_writer)
        except asyncio.CancelledError:
            # stop() discards what is queued, so don't wait for buffers to flush.
            for writer in writers:
                writer.transport.abort()
            raise
        finally:
            for writer in writers:
                writer.close()

    async def _relay_both(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        """Run both directions; a reset or broken pipe on either side ends the whole connection."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(_relay(client_reader, upstream_writer, self._schedule(), self._count_up, self._flowing))
                group.create_task(_relay(upstream_reader, client_writer, self._schedule(), self._count_down, self._flowing))
        except* OSError as group_error:
            logger.info("netem: connection ended: %s", group_error.exceptions[0])

    def _schedule(self) -> LinkSchedule:
        """A fresh link for one direction of one connection, drawing jitter from the seeded generator."""
        return LinkSchedule(self.profile, self._rng)

    def _count_up(self, nbytes: int) -> None:
        self.bytes_up += nbytes

    def _count_down(self, nbytes: int) -> None:
        self.bytes_down += nbytes


class LinkEmulatorThread:
    """A LinkEmulator on its own event loop in a background thread, for callers that are not async.

    Use as a context manager (`with LinkEmulatorThread(...) as link: connect to link.port`), or call
    start() and stop().
    """

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        upstream_host: str,
        upstream_port: int,
        profile: LinkProfile,
        *,
        seed: int | None = None,
    ) -> None:
        self.emulator = LinkEmulator(listen_host, listen_port, upstream_host, upstream_port, profile, seed=seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int | None:
        """The bound port, once started."""
        return self.emulator.port

    @property
    def bytes_up(self) -> int:
        """Bytes delivered client->upstream."""
        return self.emulator.bytes_up

    @property
    def bytes_down(self) -> int:
        """Bytes delivered upstream->client."""
        return self.emulator.bytes_down

    def start(self) -> int:
        """Start the loop thread and the proxy; returns the bound port, or raises why it could not bind."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="picospec-netem", daemon=True)
        self._thread.start()
        try:
            return asyncio.run_coroutine_threadsafe(self.emulator.start(), self._loop).result()
        except BaseException:
            self.stop()
            raise

    def partition(self) -> None:
        """LinkEmulator.partition, from any thread."""
        self._loop.call_soon_threadsafe(self.emulator.partition)

    def heal(self) -> None:
        """LinkEmulator.heal, from any thread."""
        self._loop.call_soon_threadsafe(self.emulator.heal)

    def reset(self) -> None:
        """LinkEmulator.reset, from any thread; returns once the connections are gone."""
        asyncio.run_coroutine_threadsafe(self.emulator.reset(), self._loop).result()

    def stop(self) -> None:
        """Stop the proxy and the loop thread; safe to call twice."""
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.emulator.stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> "LinkEmulatorThread":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' (or '[v6]:PORT') to (host, port), for argparse."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `netem` subcommand."""
    parser = subparsers.add_parser(
        "netem",
        help="relay TCP through an emulated link (delay, bandwidth, jitter)",
        description="Relay TCP from --listen to --upstream, adding rtt/2 delay and a bandwidth limit per direction.",
    )
    parser.add_argument("--listen", type=parse_address, required=True, metavar="HOST:PORT", help="where edges connect")
    parser.add_argument("--upstream", type=parse_address, required=True, metavar="HOST:PORT", help="the cloud it relays to")
    parser.add_argument("--rtt-ms", type=float, required=True, help="round-trip propagation delay")
    parser.add_argument("--bandwidth-mbps", type=float, required=True, help="bandwidth of each direction")
    parser.add_argument("--jitter-ms", type=float, default=LinkProfile.jitter_ms, help="one-way delay jitter, uniform in +-this")
    parser.add_argument("--seed", type=int, default=None, help="seed of the jitter generator")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    """Run the proxy until Ctrl-C (cli.main turns the KeyboardInterrupt into exit 130)."""
    profile = LinkProfile(args.rtt_ms, args.bandwidth_mbps, args.jitter_ms)
    emulator = LinkEmulator(*args.listen, *args.upstream, profile, seed=args.seed)
    asyncio.run(_serve_forever(emulator))
    return 0


async def _serve_forever(emulator: LinkEmulator) -> None:
    """Start, announce, and serve until cancelled."""
    port = await emulator.start()
    print(
        f"picospec netem: relaying {emulator.listen_host}:{port} -> "
        f"{emulator.upstream_host}:{emulator.upstream_port} over {emulator.profile.describe()}",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.stop()
