"""Hostile frames for the cloud: raw garbage, mutated valid messages, and well-formed protobufs
with hostile values; and a run that throws them at a cloud while healthy sessions run beside it.

Shared by tests/test_fuzz.py (a few hundred frames in `make test`) and `make soak` (10,000)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import grpc
import numpy as np

from picospec.wire import picospec_pb2 as pb

# What a hostile frame may end its stream with: a refusal that names the problem, or OK when the
# frame happened to be valid. Never INTERNAL or UNKNOWN (the cloud failing), nor a hang.
CLEAR_STATUSES = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED,
}  # fmt: skip
HOSTILE_U32 = (0, 1, 2, 3, 4, 5, 63, 64, 65, 2**16, 2**31 - 1, 2**32 - 1)
HOSTILE_FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, 1e-45, 1e38, float("nan"), float("inf"), float("-inf"))


def _u32(rng: np.random.Generator) -> int:
    return int(rng.choice(HOSTILE_U32)) if rng.random() < 0.7 else int(rng.integers(0, 2**32))


def _float(rng: np.random.Generator) -> float:
    return float(rng.choice(HOSTILE_FLOATS)) if rng.random() < 0.7 else float(rng.standard_normal() * 10)


def _blob(rng: np.random.Generator, max_len: int = 64) -> bytes:
    """Random bytes, or little-endian uint32 ids near the vocabulary's edge, or float32 probabilities."""
    n = int(rng.integers(0, max_len))
    kind = rng.integers(0, 3)
    if kind == 0:
        return rng.bytes(n)
    if kind == 1:
        return rng.choice(np.array([0, 1, 4, 5, 6, 2**31, 2**32 - 1], dtype=np.uint32), n // 4 + 1).astype("<u4").tobytes()
    return np.array([_float(rng) for _ in range(n // 4 + 1)], dtype="<f4").tobytes()


def hostile_hello(rng: np.random.Generator, valid: pb.Hello) -> pb.Hello:
    """The valid hello with some fields replaced by hostile values."""
    hello = pb.Hello()
    hello.CopyFrom(valid)
    for _ in range(int(rng.integers(1, 4))):
        which = rng.integers(0, 12)
        if which == 0:
            hello.protocol_version = _u32(rng)
        elif which == 1:
            hello.n_vocab = _u32(rng)
        elif which == 2:
            hello.sampling.temperature = _float(rng)
        elif which == 3:
            hello.sampling.top_k = _u32(rng)
        elif which == 4:
            hello.sampling.top_p = _float(rng)
        elif which == 5:
            hello.verify.mode = str(rng.choice(["full", "topk", "exact", "gumbel", "", "EXACT", "x" * 100, "\x00"]))
        elif which == 6:
            hello.verify.topk, hello.verify.n_candidates = _u32(rng), _u32(rng)
        elif which == 7:
            hello.verify.sparse_format = str(rng.choice(["f32", "f16", "q8", "", "f64"]))
        elif which == 8:
            hello.prompt_tokens = _blob(rng, 300)
        elif which == 9:
            hello.method = int(rng.integers(0, 5))  # proto3 enums keep unknown values
        elif which == 10:
            hello.max_new_tokens, hello.resumed = _u32(rng), _u32(rng)
        else:
            hello.vocab_fingerprint = rng.bytes(int(rng.integers(0, 80))).hex()
    return hello


def hostile_body(rng: np.random.Generator) -> pb.EdgeMessage:
    """A chunk, decode, more-candidates, close or empty message with hostile values."""
    which = rng.integers(0, 5)
    if which == 0:
        chunk = pb.DraftChunk(epoch=_u32(rng), start=_u32(rng), tokens=_blob(rng), token_probs=_blob(rng), draft_probs=_blob(rng))
        if rng.random() < 0.3:
            chunk.correction = _u32(rng)
        return pb.EdgeMessage(chunk=chunk)
    if which == 1:
        decode = pb.Decode(epoch=_u32(rng), start=_u32(rng), count=_u32(rng))
        if rng.random() < 0.3:
            decode.correction = _u32(rng)
        return pb.EdgeMessage(decode=decode)
    if which == 2:
        return pb.EdgeMessage(more_candidates=pb.MoreCandidates(epoch=_u32(rng)))
    if which == 3:
        return pb.EdgeMessage(close=pb.Close())
    return pb.EdgeMessage()


def mutate(rng: np.random.Generator, data: bytes) -> bytes:
    """Flip, insert, delete or truncate a few bytes."""
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        op = rng.integers(0, 4)
        at = int(rng.integers(0, len(buf) + 1))
        if op == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << int(rng.integers(0, 8))
        elif op == 1:
            buf[at:at] = rng.bytes(int(rng.integers(1, 8)))
        elif op == 2:
            del buf[at : at + int(rng.integers(1, 8))]
        else:
            del buf[at:]
    return bytes(buf)


def hostile_streams(rng: np.random.Generator, valid_hello: pb.EdgeMessage, valid_chunk: pb.EdgeMessage) -> Iterator[tuple[str, list[bytes]]]:
    """Endless (kind, frames) streams, each with exactly one hostile frame (after a valid hello or not)."""
    hello_bytes, chunk_bytes = valid_hello.SerializeToString(), valid_chunk.SerializeToString()
    kinds: dict[str, Callable[[], list[bytes]]] = {
        "garbage": lambda: [rng.bytes(int(rng.integers(0, 300)))],
        "garbage after a hello": lambda: [hello_bytes, rng.bytes(int(rng.integers(1, 300)))],
        "mutated hello": lambda: [mutate(rng, hello_bytes)],
        "mutated chunk": lambda: [hello_bytes, mutate(rng, chunk_bytes)],
        "hostile hello": lambda: [pb.EdgeMessage(hello=hostile_hello(rng, valid_hello.hello)).SerializeToString()],
        "hostile message": lambda: [hello_bytes, hostile_body(rng).SerializeToString()],
        "hostile message after a chunk": lambda: [hello_bytes, chunk_bytes, hostile_body(rng).SerializeToString()],
    }
    names = list(kinds)
    while True:
        name = names[int(rng.integers(0, len(names)))]
        yield name, kinds[name]()


@dataclass
class FuzzResult:
    """What a fuzz run saw."""

    frames: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    unclear: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, status, details)
    healthy_sessions: int = 0
    healthy_failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


def status_of(channel: grpc.Channel, frames: list[bytes], timeout_s: float) -> tuple[grpc.StatusCode, str]:
    """Send raw frames on one stream, read it to its end, return its status."""
    generate = channel.stream_stream("/picospec.v1.Verifier/Generate")  # bytes in, bytes out
    try:
        list(generate(iter(frames), timeout=timeout_s))
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def run_fuzz(
    port: int, n_frames: int, seed: int, valid_hello: pb.EdgeMessage, valid_chunk: pb.EdgeMessage,
    healthy: Callable[[], str | None], timeout_s: float = 30.0,
) -> FuzzResult:  # fmt: skip
    """Throw n_frames hostile frames at the cloud on `port` while `healthy()` runs in a loop beside
    them (it returns None when its session finished exactly, else what went wrong)."""
    result, done = FuzzResult(), threading.Event()

    def keep_healthy() -> None:
        while not done.is_set():
            problem = healthy()
            result.healthy_sessions += 1
            if problem:
                result.healthy_failures.append(problem)

    worker = threading.Thread(target=keep_healthy)
    started = time.monotonic()
    worker.start()
    try:
        rng = np.random.default_rng(seed)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            for kind, frames in hostile_streams(rng, valid_hello, valid_chunk):
                if result.frames >= n_frames:
                    break
                code, details = status_of(channel, frames, timeout_s)
                result.frames += 1
                result.statuses[code.name] = result.statuses.get(code.name, 0) + 1
                if code not in CLEAR_STATUSES or (code is not grpc.StatusCode.OK and not details):
                    result.unclear.append((kind, code.name, details))
    finally:
        done.set()
        worker.join()
    result.seconds = time.monotonic() - started
    return result
