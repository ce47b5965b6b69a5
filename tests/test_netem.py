"""The link emulator: delay and bandwidth arithmetic, timing through a real loopback proxy, closing, CLI wiring."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import socketserver
import threading
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest

from picospec.cli import build_parser, main
from picospec.errors import InvalidInputError
from picospec.transport import netem
from picospec.transport.netem import LinkEmulator, LinkEmulatorThread, LinkProfile, LinkSchedule

LOOPBACK = "127.0.0.1"
FAST = 10_000.0  # Mbit/s: serialisation negligible next to the delays measured


# --- profile and schedule (pure arithmetic) ---


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"rtt_ms": 10, "bandwidth_mbps": 0}, "bandwidth_mbps"),
        ({"rtt_ms": 10, "bandwidth_mbps": -8}, "bandwidth_mbps"),
        ({"rtt_ms": 10, "bandwidth_mbps": math.inf}, "bandwidth_mbps"),
        ({"rtt_ms": -1, "bandwidth_mbps": 8}, "rtt_ms"),
        ({"rtt_ms": math.nan, "bandwidth_mbps": 8}, "rtt_ms"),
        ({"rtt_ms": 10, "bandwidth_mbps": 8, "jitter_ms": -0.5}, "jitter_ms"),
    ],
)
def test_invalid_profiles_raise(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidInputError, match=field):
        LinkProfile(**kwargs)


def test_zero_delays_are_valid() -> None:
    assert LinkProfile(rtt_ms=0, bandwidth_mbps=1).one_way_s == 0.0


def test_schedule_serialises_fifo_then_adds_one_way_delay() -> None:
    schedule = LinkSchedule(LinkProfile(rtt_ms=100, bandwidth_mbps=8), random.Random(0))
    # 1000 bytes at 8 Mbit/s occupy the link 1 ms; one-way delay is 50 ms.
    assert schedule.due(1000, now=0.0) == pytest.approx(0.051)
    assert schedule.due(1000, now=0.0) == pytest.approx(0.052)  # waited for the first chunk
    assert schedule.backlog_s(now=0.0) == pytest.approx(0.002)
    assert schedule.due(1000, now=5.0) == pytest.approx(5.051)  # link idle again
    assert schedule.backlog_s(now=6.0) == 0.0


def test_schedule_jitter_stays_in_bounds_and_never_reorders() -> None:
    profile = LinkProfile(rtt_ms=20, bandwidth_mbps=FAST, jitter_ms=30)
    schedule = LinkSchedule(profile, random.Random(1))
    sent = [i * 0.001 for i in range(2000)]
    dues = [schedule.due(100, now=now) for now in sent]
    assert dues == sorted(dues)
    delays = [due - now for now, due in zip(sent, dues)]
    assert all(0 <= delay <= 0.010 + 0.030 + 0.001 for delay in delays)
    assert max(delays) - min(delays) > 0.030  # the jitter really varies the delay


def test_a_flooding_sender_is_read_only_as_fast_as_the_link_drains() -> None:
    # 1 MB at 8 Mbit/s is 1 s of serialisation; the proxy should take in only about MAX_BACKLOG_S ahead.
    async def scenario() -> tuple[float, int]:
        reader = asyncio.StreamReader()
        reader.feed_data(bytes(1_000_000))
        reader.feed_eof()
        queue: asyncio.Queue = asyncio.Queue()
        schedule = LinkSchedule(LinkProfile(rtt_ms=0, bandwidth_mbps=8), random.Random(0))
        receiving = asyncio.create_task(netem._receive(reader, schedule, queue))
        await asyncio.sleep(0.1)
        backlog = schedule.backlog_s(asyncio.get_running_loop().time())
        await receiving
        chunks = [queue.get_nowait() for _ in range(queue.qsize())]
        return backlog, sum(len(chunk[1]) for chunk in chunks[:-1])

    backlog, total = asyncio.run(scenario())
    chunk_s = netem.CHUNK_BYTES * 8 / 8e6
    assert netem.MAX_BACKLOG_S - 0.01 <= backlog <= netem.MAX_BACKLOG_S + chunk_s + 0.01
    assert total == 1_000_000


# --- through a real loopback proxy ---


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until EOF, then close."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@asynccontextmanager
async def _proxied(handler, profile: LinkProfile, **kwargs) -> AsyncIterator[LinkEmulator]:
    """An upstream server running `handler`, and a LinkEmulator in front of it."""
    upstream = await asyncio.start_server(handler, LOOPBACK, 0)
    emulator = LinkEmulator(LOOPBACK, 0, LOOPBACK, upstream.sockets[0].getsockname()[1], profile, **kwargs)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()
        upstream.close()
        await upstream.wait_closed()


def test_round_trip_takes_the_rtt() -> None:
    async def scenario() -> list[float]:
        async with _proxied(_echo, LinkProfile(rtt_ms=100, bandwidth_mbps=FAST)) as emulator:
            reader, writer = await asyncio.open_connection(LOOPBACK, emulator.port)
            times = []
            for _ in range(3):
                start = time.perf_counter()
                writer.write(b"ping")
                assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
                times.append(time.perf_counter() - start)
            writer.close()
            return times

    for elapsed in asyncio.run(scenario()):
        assert 0.099 <= elapsed < 0.200  # slack for a loaded CI machine; two rtts would be 0.2


@pytest.mark.parametrize("direction", ["up", "down"])
def test_bandwidth_is_serialisation_delay(direction: str) -> None:
    size, rtt_ms, mbps = 200_000, 20, 8.0
    expected = size * 8 / (mbps * 1e6) + rtt_ms / 1000  # 0.2 s on the wire + one rtt

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(size)
        writer.write(b"k")
        await writer.drain()
        writer.close()

    async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1)
        writer.write(bytes(size))
        await writer.drain()
        writer.close()

    async def scenario() -> float:
        handler = sink if direction == "up" else source
        async with _proxied(handler, LinkProfile(rtt_ms=rtt_ms, bandwidth_mbps=mbps)) as emulator:
            reader, writer = await asyncio.open_connection(LOOPBACK, emulator.port)
            start = time.perf_counter()
            if direction == "up":
                writer.write(bytes(size))
                await asyncio.wait_for(reader.readexactly(1), 5)
            else:
                writer.write(b"g")
                await asyncio.wait_for(reader.readexactly(size), 5)
            elapsed = time.perf_counter() - start
            writer.close()
            return elapsed

    elapsed = asyncio.run(scenario())
    assert expected - 0.005 <= elapsed < expected + 0.1


def test_large_payload_keeps_order_and_counts_exact_bytes_with_jitter() -> None:
    payload = random.Random(7).randbytes(3_000_000)
    profile = LinkProfile(rtt_ms=10, bandwidth_mbps=4000, jitter_ms=5)

    async def scenario() -> tuple[bytes, int, int]:
        async with _proxied(_echo, profile, seed=3) as emulator:
            reader, writer = await asyncio.open_connection(LOOPBACK, emulator.port)
            writer.write(payload)
            writer.write_eof()  # the echo server sees EOF only after every byte, then closes
            echoed = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return echoed, emulator.bytes_up, emulator.bytes_down

    echoed, bytes_up, bytes_down = asyncio.run(scenario())
    assert echoed == payload
    assert bytes_up == bytes_down == len(payload)


def test_unreachable_upstream_closes_client_and_proxy_keeps_serving(caplog: pytest.LogCaptureFixture) -> None:
    # A bound socket that is not listening yet refuses connections; listening later makes it healthy.
    upstream_sock = socket.socket()
    upstream_sock.bind((LOOPBACK, 0))
    upstream_port = upstream_sock.getsockname()[1]

    async def scenario() -> tuple[bytes, bytes]:
        emulator = LinkEmulator(LOOPBACK, 0, LOOPBACK, upstream_port, LinkProfile(rtt_ms=2, bandwidth_mbps=FAST))
        port = await emulator.start()
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        refused = await asyncio.wait_for(reader.read(), 5)  # EOF, not an error
        writer.close()

        upstream_sock.listen()
        upstream = await asyncio.start_server(_echo, sock=upstream_sock)
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(b"hello")
        writer.write_eof()
        healthy = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await emulator.stop()
        upstream.close()
        await upstream.wait_closed()
        return refused, healthy

    with caplog.at_level(logging.WARNING, logger=netem.__name__):
        refused, healthy = asyncio.run(scenario())
    assert refused == b""
    assert healthy == b"hello"
    assert "unreachable" in caplog.text


def test_stop_drops_open_connections_quietly(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> bytes:
        async with _proxied(_echo, LinkProfile(rtt_ms=10_000, bandwidth_mbps=FAST)) as emulator:
            reader, writer = await asyncio.open_connection(LOOPBACK, emulator.port)
            writer.write(b"never delivered")
            await asyncio.sleep(0.05)
            await emulator.stop()
            received = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return received

    with caplog.at_level(logging.ERROR):
        assert asyncio.run(scenario()) == b""
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


def test_thread_helper_serves_blocking_callers() -> None:
    with socketserver.ThreadingTCPServer((LOOPBACK, 0), _EchoHandler) as upstream:
        threading.Thread(target=upstream.serve_forever, args=(0.05,), daemon=True).start()
        link = LinkEmulatorThread(LOOPBACK, 0, LOOPBACK, upstream.server_address[1], LinkProfile(40, FAST))
        with link:
            assert link.port
            with socket.create_connection((LOOPBACK, link.port), timeout=5) as client:
                start = time.perf_counter()
                client.sendall(b"abc")
                assert client.recv(3) == b"abc"
                elapsed = time.perf_counter() - start
        link.stop()  # a second stop is harmless
        upstream.shutdown()
    assert 0.039 <= elapsed < 0.079
    assert link.bytes_up == link.bytes_down == 3


def test_thread_helper_reports_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        link = LinkEmulatorThread(LOOPBACK, taken.getsockname()[1], LOOPBACK, 1, LinkProfile(1, 1))
        with pytest.raises(OSError):
            link.start()


# --- CLI wiring ---


def test_cli_parses_netem_arguments() -> None:
    args = build_parser().parse_args(
        ["netem", "--listen", "127.0.0.1:0", "--upstream", "cloud.example:50051",
         "--rtt-ms", "100", "--bandwidth-mbps", "8"]
    )
    assert args.func is netem._run
    assert args.listen == ("127.0.0.1", 0)
    assert args.upstream == ("cloud.example", 50051)
    assert (args.rtt_ms, args.bandwidth_mbps, args.jitter_ms, args.seed) == (100.0, 8.0, 0.0, None)


def test_cli_accepts_jitter_seed_and_ipv6() -> None:
    args = build_parser().parse_args(
        ["netem", "--listen", "[::1]:7000", "--upstream", "h:1", "--rtt-ms", "0", "--bandwidth-mbps", "1",
         "--jitter-ms", "5", "--seed", "42"]
    )
    assert args.listen == ("::1", 7000)
    assert (args.jitter_ms, args.seed) == (5.0, 42)


@pytest.mark.parametrize("address", ["nohost", ":80", "host:", "host:http", "host:70000"])
def test_cli_rejects_bad_addresses(address: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["netem", "--listen", address, "--upstream", "h:1", "--rtt-ms", "1", "--bandwidth-mbps", "1"]
        )


def test_cli_reports_an_invalid_profile(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["netem", "--listen", "127.0.0.1:0", "--upstream", "h:1", "--rtt-ms", "1", "--bandwidth-mbps", "0"])
    assert code == 2
    assert "bandwidth_mbps must be positive" in capsys.readouterr().err


def test_a_partition_holds_every_byte_until_it_heals_and_a_reset_drops_connections() -> None:
    async def scenario() -> None:
        async with _proxied(_echo, LinkProfile(rtt_ms=0, bandwidth_mbps=FAST)) as emulator:
            reader, writer = await asyncio.open_connection(LOOPBACK, emulator.port)
            emulator.partition()
            writer.write(b"held")
            with pytest.raises(TimeoutError):  # nothing crosses, though both sockets stay open
                await asyncio.wait_for(reader.readexactly(4), 0.3)
            emulator.heal()
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
            await emulator.reset()
            try:
                dropped = await asyncio.wait_for(reader.read(1), 5) == b""
            except ConnectionResetError:
                dropped = True
            assert dropped
            again_reader, again_writer = await asyncio.open_connection(LOOPBACK, emulator.port)  # still listening
            again_writer.write(b"new!")
            assert await asyncio.wait_for(again_reader.readexactly(4), 5) == b"new!"
            for w in (writer, again_writer):
                w.close()

    asyncio.run(scenario())
