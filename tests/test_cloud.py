"""The cloud server over loopback gRPC, with toy models: same results as in-process, robust to bad edges."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import queue
import signal
import socket
import threading
import time
from contextlib import contextmanager

import grpc
import numpy as np
import pytest

from picospec.cli import build_parser
from picospec.cloud import CloudConfig
from picospec.affinity import parse_cores
from picospec.cloud.calibrate import CALIBRATION_SIZES, CONTEXT_TOKENS, calibration_plan
from picospec.cloud.health import VERIFIER_SERVICE, HealthProbe, check_health
from picospec.cloud.server import STATS_LINE, _serve_command, _serve_until_signalled
from picospec.decoding import Drafter, TargetVerifier, generate_autoregressive, generate_speculative
from picospec.runners.base import VocabInfo
from picospec.runners.separate import SeparateRunners
from picospec.runners.toy import ToyRunner
from picospec.sampling import SamplingParams
from picospec.verify import Candidates, VerifyConfig, VerifyMode
from picospec.wire import codec
from picospec.wire import picospec_pb2 as pb
from picospec.wire import picospec_pb2_grpc as pb_grpc
from picospec.wire.messages import SessionSpec, chunk_message, decode_message, hello_message, parse_tokens, parse_verdict
import fuzz
from clouds import BATCHING, cloud_thread

V, TARGET_SEED = 5, 11
VOCAB = ToyRunner.create(V, seed=TARGET_SEED).vocab_info()
CALL_TIMEOUT_S = 30


class SlowRunner(ToyRunner):
    """The toy target, whose chunk passes take a while when `slow` is set, so a test can cancel mid-round."""

    slow = threading.Event()
    computing = threading.Event()

    def extend(self, tokens):
        if self.slow.is_set() and self.n_tokens > 0:  # a chunk, not the prompt
            self.computing.set()
            time.sleep(0.3)
        return super().extend(tokens)


class EosRunner(ToyRunner):
    """The toy target with an end-of-sequence token."""

    eos_id = 3

    def vocab_info(self) -> VocabInfo:
        return VocabInfo.from_token_bytes([self._letter(i).encode() for i in range(self.n_vocab)], (self.eos_id,), None)


def make_target(cls: type[ToyRunner] = SlowRunner) -> ToyRunner:
    return cls.create(V, seed=TARGET_SEED)


def make_drafter() -> ToyRunner:
    return ToyRunner.create(V, seed=TARGET_SEED).drafter(seed=5, noise=1.0)


@pytest.fixture(params=BATCHING.values(), ids=BATCHING.keys())
def batching(request) -> bool:
    """Each test that takes it runs against a batching cloud and an unbatched one."""
    return request.param


@contextmanager
def serve(factory=make_target, **limits):
    with cloud_thread(factory, **limits) as cloud:
        yield cloud


def spec_for(prompt, params, config, vocab: VocabInfo = VOCAB, **fields) -> SessionSpec:
    return SessionSpec(list(prompt), params, config, vocab_fingerprint=vocab.fingerprint, n_vocab=vocab.n_vocab, **fields)


class RemoteVerifier:
    """TargetVerifier's interface over one Generate stream, so generate_speculative can run against the cloud."""

    def __init__(self, port: int, params: SamplingParams, config: VerifyConfig, on_verdict=None) -> None:
        self.params, self.config, self.on_verdict = params, config, on_verdict
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.outbox: queue.Queue = queue.Queue()
        self.call = pb_grpc.VerifierStub(self.channel).Generate(iter(self.outbox.get, None), timeout=CALL_TIMEOUT_S)
        self.epoch, self.passes, self.verdicts = 0, 0, []
        self._correction: int | None = None

    def begin(self, prompt) -> None:
        self.outbox.put(hello_message(spec_for(prompt, self.params, self.config, bonus=True)))
        assert next(self.call).WhichOneof("kind") == "welcome"

    def verify(self, start, tokens, *, token_probs=None, draft_probs=None, bonus=False):
        self.outbox.put(chunk_message(self.config.mode, self.epoch, start, tokens, draft_probs, self._correction))
        self._correction = None
        report = parse_verdict(next(self.call).verdict, V)
        self.epoch += report.verdict.rejected
        self.passes = report.cloud_passes
        self.verdicts.append(report.verdict)
        if self.on_verdict:
            self.on_verdict()
        return report.verdict

    def more_candidates(self) -> Candidates:
        self.outbox.put(pb.EdgeMessage(more_candidates=pb.MoreCandidates(epoch=self.epoch)))
        return codec.decode_candidates(next(self.call).candidates.candidates, V)

    def receive_correction(self, token: int) -> None:
        self._correction = token

    def close(self) -> None:
        self.outbox.put(pb.EdgeMessage(close=pb.Close()))
        self.outbox.put(None)
        assert list(self.call) == []
        self.channel.close()


class RecordingVerifier(TargetVerifier):
    """The in-process reference, recording its verdicts as the edge would receive them."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.verdicts = []

    def verify(self, *args, **kwargs):
        verdict = super().verify(*args, **kwargs)
        self.verdicts.append(verdict.as_sent(self.config.sparse_format))
        return verdict


def verdict_key(verdict) -> tuple:
    material = verdict.sparse or verdict.candidates
    arrays = () if material is None else tuple(tuple(np.asarray(a).tolist()) for a in vars(material).values())
    return verdict.accepted, verdict.rejected, verdict.token, arrays


def run_speculative(verifier, params, config, max_new_tokens=24):
    drafter = Drafter(make_drafter(), params, config, np.random.default_rng(1))
    return generate_speculative(drafter, verifier, [0, 1], max_new_tokens, draft_len=3)


# -------------------------------------------------------------------------------------------------
# Same results as in-process


@pytest.mark.parametrize("mode", list(VerifyMode))
def test_speculative_session_gives_the_verdicts_of_an_in_process_verifier(mode, batching):
    params, config = SamplingParams(temperature=1.0), VerifyConfig(mode=mode, topk=3, n_candidates=2, seed=7)
    local = RecordingVerifier(make_target(ToyRunner), params, config, np.random.default_rng(config.seed))
    expected = run_speculative(local, params, config)
    with serve(batching=batching) as cloud:
        remote = RemoteVerifier(cloud.port, params, config)
        result = run_speculative(remote, params, config)
        remote.close()
    assert [verdict_key(v) for v in remote.verdicts] == [verdict_key(v) for v in local.verdicts]
    assert result.token_ids == expected.token_ids and result.target_passes == expected.target_passes
    assert any(v.rejected for v in local.verdicts) and any(not v.rejected for v in local.verdicts)


def read_tokens(port: int, spec: SessionSpec) -> list[int]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        replies = list(pb_grpc.VerifierStub(channel).Generate(iter([hello_message(spec)]), timeout=CALL_TIMEOUT_S))
    assert replies[0].WhichOneof("kind") == "welcome"
    assert all(len(reply.tokens.tokens) == 4 for reply in replies[1:])  # one message per token, as it exists
    return [int(reply.tokens.tokens[0]) for reply in replies[1:]]


@pytest.mark.parametrize("mode", [VerifyMode.GUMBEL, VerifyMode.EXACT])
def test_autoregressive_session_streams_the_tokens_of_generate_autoregressive(mode, batching):
    params, config = SamplingParams(temperature=1.0), VerifyConfig(mode=mode, seed=3)
    expected = generate_autoregressive(make_target(), [2], params, config, np.random.default_rng(3), 20).token_ids
    with serve(batching=batching) as cloud:
        assert read_tokens(cloud.port, spec_for([2], params, config, autoregressive=True, max_new_tokens=20)) == expected


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_decoded_tokens_carry_their_target_probabilities_when_sampling(temperature, batching):
    """What the edge prices its drafter's shadow with at temperature > 0 (under greedy all are 1: not sent)."""
    params, config = SamplingParams(temperature=temperature), VerifyConfig(mode="exact", seed=3)
    local = TargetVerifier(make_target(ToyRunner), params, config, np.random.default_rng(3))
    local.begin([2])
    expected = [local.decode_scored() for _ in range(6)]
    messages = [hello_message(spec_for([2], params, config)), decode_message(0, 1, 6, None), pb.EdgeMessage(close=pb.Close())]
    with serve(batching=batching) as cloud, grpc.insecure_channel(f"127.0.0.1:{cloud.port}") as channel:
        replies = list(pb_grpc.VerifierStub(channel).Generate(iter(messages), timeout=CALL_TIMEOUT_S))
    reports = [parse_tokens(reply.tokens, V) for reply in replies[1:]]
    assert [t for r in reports for t in r.tokens] == [token for token, _ in expected]
    probs = [p for r in reports for p in r.token_probs]
    assert probs == (pytest.approx([p for _, p in expected], rel=1e-6) if temperature else [])
    if temperature:
        assert min(probs) < 1.0  # sampled, not one-hot: a check that could tell the two apart


def test_autoregressive_session_ends_after_an_eos():
    params, config = SamplingParams(temperature=1.0), VerifyConfig(mode="gumbel", seed=1)
    target = make_target(EosRunner)
    expected = generate_autoregressive(target, [0], params, config, None, 40, stop_ids=[EosRunner.eos_id]).token_ids
    assert expected[-1] == EosRunner.eos_id and len(expected) < 40
    with serve(functools.partial(make_target, EosRunner)) as cloud:
        spec = spec_for([0], params, config, target.vocab_info(), autoregressive=True, max_new_tokens=40)
        assert read_tokens(cloud.port, spec) == expected


def test_chunks_queued_behind_a_rejection_are_dropped_unverified(batching):
    params, config = SamplingParams(temperature=0), VerifyConfig(mode="exact")
    target = make_target(ToyRunner)
    best = int(np.argmax(target.next_logits([0])))
    wrong = (best + 1) % V
    after_best = int(np.argmax(target.next_logits([0, best])))
    ones = np.ones((4, V))  # token_probs travel, rows don't: only each draft token's probability, 1 (greedy)

    def chunk(epoch, start, tokens):
        return chunk_message(config.mode, epoch, start, np.array(tokens), ones, None)

    messages = [
        hello_message(spec_for([0], params, config)),
        chunk(0, 1, [wrong, 0]),  # rejected at once: the cloud decides the correction (greedy)
        chunk(0, 3, [1]),  # drafted on the rejected guess, sent before the verdict came back
        chunk(1, 2, [after_best]),
        pb.EdgeMessage(close=pb.Close()),
    ]
    with serve(batching=batching) as cloud:
        with grpc.insecure_channel(f"127.0.0.1:{cloud.port}") as channel:
            replies = list(pb_grpc.VerifierStub(channel).Generate(iter(messages), timeout=CALL_TIMEOUT_S))
        stats = wait_for(lambda: cloud.server.finished and cloud.server.finished[-1])
    assert [reply.WhichOneof("kind") for reply in replies] == ["welcome", "verdict", "verdict"]
    first, second = replies[1].verdict, replies[2].verdict
    assert (first.epoch, first.start, first.accepted, first.rejected, first.token) == (0, 1, 0, True, best)
    assert (second.epoch, second.start, second.accepted, second.rejected) == (1, 2, 1, False)
    assert second.cloud_passes == 3  # prompt, first chunk, third chunk: the stale one cost nothing
    assert (stats.chunks_verified, stats.stale_dropped, stats.outcome) == (2, 1, "completed")


# -------------------------------------------------------------------------------------------------
# Bad edges, each beside a healthy session that must finish correctly


PARAMS, CONFIG = SamplingParams(temperature=1.0), VerifyConfig(mode="exact", n_candidates=2, seed=5)


@functools.cache
def healthy_reference() -> list[int]:
    verifier = TargetVerifier(make_target(ToyRunner), PARAMS, CONFIG, np.random.default_rng(CONFIG.seed))
    return run_speculative(verifier, PARAMS, CONFIG).token_ids


@contextmanager
def healthy_session(port: int):
    """A speculative session that has verified one chunk before the block, and must finish correctly after it."""
    first_verdict, resume, outcome = threading.Event(), threading.Event(), {}

    def pause_once() -> None:
        if not first_verdict.is_set():
            first_verdict.set()
            resume.wait(CALL_TIMEOUT_S)

    def run() -> None:
        try:
            remote = RemoteVerifier(port, PARAMS, CONFIG, on_verdict=pause_once)
            outcome["tokens"] = run_speculative(remote, PARAMS, CONFIG).token_ids
            remote.close()
        except BaseException as exc:
            outcome["error"] = exc
            first_verdict.set()

    thread = threading.Thread(target=run)
    thread.start()
    assert first_verdict.wait(CALL_TIMEOUT_S)
    try:
        yield
    finally:
        resume.set()
        thread.join(CALL_TIMEOUT_S)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["tokens"] == healthy_reference()


def status_of(port: int, messages: list) -> tuple[grpc.StatusCode, str]:
    """Send raw messages (protobufs or bytes) on one stream; read it to the end; return its status."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        raw = [m if isinstance(m, bytes) else m.SerializeToString() for m in messages]
        return fuzz.status_of(channel, raw, CALL_TIMEOUT_S)


def hello(prompt=(0, 1), vocab=VOCAB, **fields):
    return hello_message(spec_for(prompt, PARAMS, CONFIG, vocab, **fields))


def chunk(epoch=0, start=2, tokens=(1, 2), correction=None):
    rows = np.full((len(tokens), max(V, *tokens) + 1), 0.2)  # wide enough for an out-of-range id
    return chunk_message(CONFIG.mode, epoch, start, np.array(tokens), rows, correction)


def send_garbage(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n" + np.random.default_rng(0).bytes(4096))
        sock.settimeout(1)
        try:
            sock.recv(1024)
        except OSError:
            pass


def cancel_mid_round(port: int) -> None:
    SlowRunner.computing.clear()
    SlowRunner.slow.set()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            outbox: queue.Queue = queue.Queue()
            call = pb_grpc.VerifierStub(channel).Generate(iter(outbox.get, None), timeout=CALL_TIMEOUT_S)
            outbox.put(hello())
            outbox.put(chunk())
            assert SlowRunner.computing.wait(CALL_TIMEOUT_S)
            call.cancel()
            outbox.put(None)
    finally:
        SlowRunner.slow.clear()


def too_many_sessions(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        outbox: queue.Queue = queue.Queue()
        outbox.put(hello())
        holder = pb_grpc.VerifierStub(channel).Generate(iter(outbox.get, None), timeout=CALL_TIMEOUT_S)
        assert next(holder).WhichOneof("kind") == "welcome"  # the second of max_sessions=2
        code, details = status_of(port, [hello()])
        outbox.put(pb.EdgeMessage(close=pb.Close()))
        outbox.put(None)
        assert list(holder) == []
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "maximum of 2 sessions" in details


def expect(code: grpc.StatusCode, *messages, says: str = ""):
    def check(port: int) -> None:
        got, details = status_of(port, list(messages))
        assert got is code, (got, details)
        assert says in details, details

    return check


INVALID = grpc.StatusCode.INVALID_ARGUMENT
OTHER_VOCAB_INFO = VocabInfo.from_token_bytes([b"b", b"a", b"c", b"d", b"e"], (), None)  # two tokens swapped
UNKNOWN_FIELD = b"\xf8\x07\x01"  # field 127, varint 1: a field a newer edge might send
MALFORMED = b"\xff\xff\xff\xff"  # not a protobuf message at all

BAD_EDGES = {
    "garbage bytes": send_garbage,
    "chunk before hello": expect(INVALID, chunk(), says="must open with a hello"),
    "token out of range": expect(INVALID, hello(), chunk(tokens=(1, V)), says="outside the vocabulary"),
    "epoch from the future": expect(INVALID, hello(), chunk(epoch=1), says="epoch 1"),
    "start that does not continue": expect(INVALID, hello(), chunk(start=5), says="starts at position 5"),
    "correction nobody awaits": expect(INVALID, hello(), chunk(correction=1), says="no rejection is awaiting"),
    "unknown field": expect(INVALID, hello().SerializeToString() + UNKNOWN_FIELD, says="unknown to protocol version"),
    "unknown nested field": expect(
        INVALID, hello(), pb.EdgeMessage(chunk=pb.DraftChunk.FromString(chunk().chunk.SerializeToString() + UNKNOWN_FIELD)),
        says="DraftChunk carries fields unknown",
    ),  # fmt: skip
    "second hello": expect(INVALID, hello(), hello(), says="unexpected hello"),
    "malformed frame mid-session": expect(INVALID, hello(), MALFORMED, says="malformed message"),
    "wrong vocabulary": expect(grpc.StatusCode.FAILED_PRECONDITION, hello(vocab=OTHER_VOCAB_INFO), says="vocabularies differ"),
    "prompt past the context": expect(
        grpc.StatusCode.OUT_OF_RANGE, hello(prompt=[0] * 64), says="prompt (64 tokens) does not fit the context limit of 64"
    ),
    "chunk past the context": expect(INVALID, hello(prompt=[0] * 60), chunk(start=60, tokens=(1,) * 5), says="context limit"),
    "message over the size limit": expect(grpc.StatusCode.RESOURCE_EXHAUSTED, hello(prompt=[0] * 2000)),
    "cancel mid-round": cancel_mid_round,
    "too many sessions": too_many_sessions,
}


def wait_for(condition, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    return value


@pytest.mark.parametrize("bad_edge", BAD_EDGES.values(), ids=BAD_EDGES.keys())
def test_a_bad_edge_neither_disturbs_other_sessions_nor_keeps_a_runner(bad_edge, batching):
    with serve(max_sessions=2, max_context=64, max_message_bytes=4096, batching=batching) as cloud:
        with healthy_session(cloud.port):
            bad_edge(cloud.port)
            wait_for(lambda: cloud.server.pool.in_use == 1)  # only the healthy session holds one
        wait_for(lambda: cloud.server.pool.in_use == 0)
        assert cloud.server.pool.created <= 2


def test_a_cancelled_session_frees_the_only_runner_for_the_next(batching):
    with serve(max_sessions=1, batching=batching) as cloud:
        cancel_mid_round(cloud.port)
        wait_for(lambda: cloud.server.pool.in_use == 0)
        cancelled = cloud.server.finished[-1]
        assert (cancelled.outcome, cancelled.chunks_verified) == ("cancelled", 0)
        remote = RemoteVerifier(cloud.port, PARAMS, CONFIG)
        assert run_speculative(remote, PARAMS, CONFIG).token_ids == healthy_reference()
        remote.close()


def test_a_malformed_frame_is_recorded_as_refused_not_completed():
    with serve() as cloud:
        expect(INVALID, hello(), MALFORMED, says="malformed message")(cloud.port)
        stats = wait_for(lambda: cloud.server.finished and cloud.server.finished[-1])
    assert stats.outcome == "INVALID_ARGUMENT"


def test_a_silent_edge_is_ended_after_the_idle_timeout():
    with serve(idle_timeout_s=0.2) as cloud:
        with grpc.insecure_channel(f"127.0.0.1:{cloud.port}") as channel:
            outbox: queue.Queue = queue.Queue()
            call = pb_grpc.VerifierStub(channel).Generate(iter(outbox.get, None), timeout=CALL_TIMEOUT_S)
            outbox.put(hello())
            with pytest.raises(grpc.RpcError) as caught:
                list(call)
            outbox.put(None)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


# -------------------------------------------------------------------------------------------------
# The command line


def test_cloud_command_parses_its_options():
    args = build_parser().parse_args(
        ["cloud", "--model", "m.gguf", "--port", "0", "--threads", "2", "--max-sessions", "3",
         "--max-context", "2048", "--deterministic", "--cores", "0,2-3", "--gpu-layers", "-1", "--batching", "off",
         "--step-tokens", "16", "--no-kv-unified"]
    )  # fmt: skip
    assert args.func is _serve_command
    assert (args.model, args.port, args.threads, args.max_sessions, args.max_context) == ("m.gguf", 0, 2, 3, 2048)
    assert args.deterministic and args.cores == {0, 2, 3}
    assert (args.gpu_layers, args.batching, args.step_tokens, args.kv_unified) == (-1, "off", 16, False)
    defaults = build_parser().parse_args(["cloud"])
    assert (defaults.model, defaults.host, defaults.port, defaults.cores) == ("target", "127.0.0.1", 50051, None)
    assert (defaults.gpu_layers, defaults.batching, defaults.step_tokens) == (0, "off", CloudConfig.step_tokens)
    assert defaults.kv_unified is CloudConfig.kv_unified is True
    assert parse_cores("1") == {1}


@pytest.mark.parametrize("text", ["", "a", "1-", "-1", "2,x", "3-1"])
def test_cloud_command_refuses_a_bad_core_list(text, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["cloud", "--cores", text])
    assert "not a CPU list" in capsys.readouterr().err


def test_cloud_serves_until_sigterm_and_says_where(capsys):
    async def main() -> int:
        factory = functools.partial(SeparateRunners, make_target, seq_capacity=CloudConfig.max_context)
        serving = asyncio.create_task(_serve_until_signalled(CloudConfig(port=0, model_name="toy"), factory))
        lines = ""
        while "serving" not in lines:  # printed once the signal handlers are in place
            assert not serving.done(), serving
            await asyncio.sleep(0.01)
            lines += capsys.readouterr().out
        assert lines.startswith("picospec cloud: serving toy on 127.0.0.1:")
        os.kill(os.getpid(), signal.SIGUSR1)
        while STATS_LINE not in lines:
            await asyncio.sleep(0.01)
            lines += capsys.readouterr().out
        stats = json.loads(lines.split(STATS_LINE)[1])
        assert stats["passes"] > 0 and stats["busy_s"] > 0 and stats["sessions_open"] == 0  # calibration's passes
        os.kill(os.getpid(), signal.SIGTERM)
        return await asyncio.wait_for(serving, CALL_TIMEOUT_S)

    assert asyncio.run(main()) == 0


def test_on_sigterm_the_cloud_refuses_new_sessions_says_not_serving_and_lets_running_ones_finish(capsys):
    def drain_beside_a_running_session(port: int) -> tuple[grpc.StatusCode, list[str]]:
        address = f"127.0.0.1:{port}"
        with healthy_session(port):  # paused after its first verdict; on leaving, it must finish exactly
            before = [check_health(address), check_health(address, probe=HealthProbe(service=VERIFIER_SERVICE))]
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + CALL_TIMEOUT_S
            while (code := status_of(port, [hello()])[0]) is grpc.StatusCode.OK:  # until the signal is handled
                assert time.monotonic() < deadline
            # Still draining (the session waits): the health service already says so.
            during = [check_health(address), check_health(address, probe=HealthProbe(service=VERIFIER_SERVICE))]
            return code, before + during

    async def main() -> tuple[tuple[grpc.StatusCode, list[str]], int]:
        factory = functools.partial(SeparateRunners, make_target, seq_capacity=CloudConfig.max_context)
        config = CloudConfig(port=0, model_name="toy", drain_s=CALL_TIMEOUT_S)
        serving = asyncio.create_task(_serve_until_signalled(config, factory))
        lines = ""
        while "serving" not in lines:
            assert not serving.done(), serving
            await asyncio.sleep(0.01)
            lines += capsys.readouterr().out
        port = int(lines.strip().rsplit(":", 1)[1])
        code = await asyncio.to_thread(drain_beside_a_running_session, port)
        return code, await asyncio.wait_for(serving, CALL_TIMEOUT_S)

    serving, not_serving = ["SERVING"] * 2, ["NOT_SERVING"] * 2
    assert asyncio.run(main()) == ((grpc.StatusCode.UNAVAILABLE, serving + not_serving), 0)


def test_a_cloud_with_a_short_context_calibrates_what_fits_and_serves(batching):
    """Calibration measures only the passes that fit beside its context (it once needed 48 tokens)."""
    assert calibration_plan(32, 4096) == (CALIBRATION_SIZES + (24, 32), CONTEXT_TOKENS)
    assert calibration_plan(32, 20) == (tuple(range(1, 11)), 10)
    with serve(max_context=20, batching=batching) as cloud:
        assert cloud.server.costs.curve.max_measured == 10
        remote = RemoteVerifier(cloud.port, PARAMS, CONFIG)
        assert run_speculative(remote, PARAMS, CONFIG, max_new_tokens=6).token_ids == healthy_reference()[:6]
        remote.close()
