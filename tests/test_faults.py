"""Losing the cloud mid-generation: resumption (exact), --on-cloud-loss fail | local, and liveness
(a partitioned link is detected on both sides within the keepalive bound). Toy models; the cloud
runs in-process behind the link emulator, or as a real process that is SIGKILLed and restarted."""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from picospec.app import edge_config
from picospec.cli import build_parser
from picospec.cloud.config import CloudConfig
from picospec.cloud.session import AutoregressiveSession, SessionStats, SpeculativeSession
from picospec.costmodel import CostCurve, CostTracker
from picospec.edge.client import Cancellation, CloudError, GenerationCancelled, generate
from picospec.errors import InvalidInputError
from picospec.edge.config import EdgeConfig, Method, Recovery
from picospec.edge.controller import ControllerConfig
from picospec.runners.toy import ToyRunner
from picospec.sampling import SamplingParams
from picospec.transport.netem import LinkEmulatorThread, LinkProfile
from picospec.verify import VerifyConfig, VerifyMode
from picospec.wire.liveness import Liveness, liveness_from_args
from picospec.wire.messages import SessionSpec
from stats import ALPHA, sequence_distribution, sequence_pvalue
from test_edge import PROMPT, SPECULATIVE, SWITCHING, TARGET_SEED, V, reference, toy_drafter, toy_target
from toy_cloud import FAST_LIVENESS, SlowToy
from clouds import cloud_thread

HERE = Path(__file__).parent
# Reconnect at once and often: the tests break links on purpose.
RECOVERY = Recovery(retries=20, backoff_s=0.02, max_backoff_s=0.5, liveness=FAST_LIVENESS)
LINK = LinkProfile(rtt_ms=2, bandwidth_mbps=1000)
SLOW_TARGET = functools.partial(SlowToy.create, V, seed=TARGET_SEED)  # the toy target, its passes slowed by slow_passes


@contextmanager
def cloud_behind_link(target=toy_target, liveness: Liveness = FAST_LIVENESS, **limits):
    with cloud_thread(target, liveness=liveness, **limits) as cloud:
        with LinkEmulatorThread("127.0.0.1", 0, "127.0.0.1", cloud.port, LINK) as link:
            yield cloud, link


class FaultAfter:
    """A token sink that runs `fault` once, when the generation has committed `after` tokens."""

    def __init__(self, after: int, fault) -> None:
        self.after, self.fault, self.seen, self.fired = after, fault, 0, False

    def __call__(self, tokens: list[int], source: str) -> None:
        self.seen += len(tokens)
        if not self.fired and self.seen >= self.after:
            self.fired = True
            self.fault()


def config_for(method: Method, mode: VerifyMode, temperature: float, n: int, controller=None, seed=4, **fields) -> EdgeConfig:
    params, verify = SamplingParams(temperature=temperature), VerifyConfig(mode=mode, seed=seed, topk=3, n_candidates=2)
    return EdgeConfig(method=method, params=params, verify=verify, max_new_tokens=n, chunk_len=2, max_lookahead=4,
                      controller=controller, **{"recovery": RECOVERY, **fields})  # fmt: skip


# -------------------------------------------------------------------------------------------------
# Resumption is exact


CASES = [(m, mode, 0.0) for m, mode in SPECULATIVE + [(Method.AR, VerifyMode.EXACT)]] + [
    (m, VerifyMode.GUMBEL, 1.0) for m in (Method.PICOSPEC, Method.SYNC, Method.AR)
]


@pytest.mark.parametrize("controller", [None, SWITCHING], ids=["fixed", "switching"])
@pytest.mark.parametrize("method, mode, temperature", CASES, ids=str)
def test_a_generation_resumed_after_resets_equals_the_uninterrupted_one(method, mode, temperature, controller):
    """Greedy: the target's greedy tokens; gumbel at temperature 1: the tokens of cloud-only decoding
    with the same seed, though the link was reset twice mid-generation."""
    if controller is not None and method is not Method.PICOSPEC:
        pytest.skip("only the pipeline runs a controller")
    config = config_for(method, mode, temperature, 30, controller)
    # 5 ms a pass: without it the toy cloud can stream an `ar` session's remaining tokens before the
    # second reset reaches them, and the generation ends with one resume (CI, session 32).
    with cloud_behind_link(SLOW_TARGET) as (cloud, link), slow_passes(0.005):
        first = FaultAfter(5, link.reset)
        second = FaultAfter(17, link.reset)
        report = generate(f"127.0.0.1:{link.port}", toy_drafter(noise=1.5), PROMPT, config,
                          on_tokens=lambda t, s: (first(t, s), second(t, s)))  # fmt: skip
    assert report.token_ids == reference(config.params, config.verify, 30)
    assert report.resumes >= 2 and report.finish_reason == "length" and report.edge_only == 0


def test_resumed_sequences_converge_on_the_target_distribution(mode="exact"):
    """Every generation is cut after its first token and resumed in a new session: the sequences
    still follow the target's distribution (the resumed session's sampler draws a fresh stream;
    with the drafter's stream instead, this test gave p = 4e-38)."""
    params, length, n = SamplingParams(temperature=1.0, top_k=3), 3, 1500
    counts: dict[tuple, int] = {}
    with cloud_behind_link(max_sessions=4) as (cloud, link):
        for seed in range(n):
            verify = VerifyConfig(mode=mode, seed=seed, topk=3, n_candidates=2)
            config = EdgeConfig(method=Method.PICOSPEC, params=params, verify=verify, max_new_tokens=length, chunk_len=1,
                                max_lookahead=2, controller=None, recovery=replace(RECOVERY, backoff_s=0))  # fmt: skip
            fault = FaultAfter(1, link.reset)
            report = generate(f"127.0.0.1:{link.port}", toy_drafter(noise=1.5), PROMPT, config, on_tokens=fault)
            counts[tuple(report.token_ids)] = counts.get(tuple(report.token_ids), 0) + 1
            resumed = report.resumes
    assert resumed >= 1
    assert sequence_pvalue(counts, sequence_distribution(toy_target(), PROMPT, params, length)) > ALPHA


class RecordingToy(ToyRunner):
    """The toy target, recording which tokens went through the prompt pass and which were extended."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.calls: list[tuple[str, list[int]]] = []
        self._prefilling = False

    def prefill(self, tokens):
        self.calls.append(("prefill", list(tokens)))
        self._prefilling = True
        try:
            return super().prefill(tokens)
        finally:
            self._prefilling = False

    def extend(self, tokens):
        if not self._prefilling:
            self.calls.append(("extend", list(tokens)))
        return super().extend(tokens)


class WallMeter:
    """A session's PassMeter over a runner of its own: wall time, no passes shared."""

    compute_clock = staticmethod(time.perf_counter)

    @staticmethod
    def shared_tokens() -> int:
        return 0


@pytest.mark.parametrize("autoregressive", [False, True])
def test_a_resumed_session_evaluates_the_committed_tokens_as_a_continuation(autoregressive):
    """Not in the prompt pass: llama.cpp's deterministic configuration is batch-invariant for
    extend, not for a prompt pass, so only this keeps a resumed run bitwise on the uninterrupted one."""
    target = toy_target()
    runner = RecordingToy(target._table, target.order)
    spec = SessionSpec(PROMPT + [3, 4, 0], SamplingParams(temperature=0), VerifyConfig(), autoregressive=autoregressive,
                       max_new_tokens=4, resumed=1, committed=3)  # fmt: skip
    session = (AutoregressiveSession(spec, runner, CloudConfig(), SessionStats(1), WallMeter()) if autoregressive
               else SpeculativeSession(spec, runner, CloudConfig(), SessionStats(1), CostTracker(CostCurve((0.1,), 0.1)),
                                       WallMeter()))  # fmt: skip
    session.next_message() if autoregressive else session.begin()
    assert runner.calls[:2] == [("prefill", PROMPT), ("extend", [3, 4, 0])]


# -------------------------------------------------------------------------------------------------
# When the cloud stays away: fail, or finish on the edge


def test_fail_ends_with_an_error_that_keeps_the_verified_tokens():
    config = config_for(Method.PICOSPEC, VerifyMode.EXACT, 0.0, 30, recovery=Recovery(on_loss="fail"))
    with cloud_behind_link() as (cloud, link):
        with pytest.raises(CloudError) as caught:
            generate(f"127.0.0.1:{link.port}", toy_drafter(), PROMPT, config, on_tokens=FaultAfter(5, link.stop))
    # A cut link reads UNAVAILABLE, or INTERNAL when a write races the reset: lost, not refused.
    assert caught.value.lost, caught.value
    kept = caught.value.report.token_ids
    assert len(kept) >= 5 and kept == reference(config.params, config.verify, 30)[: len(kept)]


def test_resume_gives_up_after_its_retries():
    config = config_for(Method.PICOSPEC, VerifyMode.EXACT, 0.0, 30, recovery=Recovery(retries=2, backoff_s=0.01))
    with cloud_behind_link() as (cloud, link):
        with pytest.raises(CloudError, match="gave up after 2 reconnection attempts") as caught:
            generate(f"127.0.0.1:{link.port}", toy_drafter(), PROMPT, config, on_tokens=FaultAfter(5, link.stop))
    assert caught.value.report.resumes == 2


def test_local_finishes_with_the_drafter_and_marks_its_tokens_edge_only():
    recovery = Recovery(on_loss="local", retries=2, backoff_s=0.01)
    config = config_for(Method.PICOSPEC, VerifyMode.EXACT, 0.0, 30, recovery=recovery)
    streamed: list[str] = []
    with cloud_behind_link() as (cloud, link):
        fault = FaultAfter(5, link.stop)
        report = generate(f"127.0.0.1:{link.port}", toy_drafter(), PROMPT, config,
                          on_tokens=lambda t, s: (streamed.extend([s] * len(t)), fault(t, s)))  # fmt: skip
    cloud_part = report.new_tokens - report.edge_only
    assert report.new_tokens == 30 and 5 <= cloud_part < 30
    assert report.sources[cloud_part:] == ["edge-only"] * report.edge_only and "edge-only" not in report.sources[:cloud_part]
    assert streamed == report.sources
    assert report.token_ids[:cloud_part] == reference(config.params, config.verify, 30)[:cloud_part]
    # The edge-only tail is the drafter's greedy continuation of the verified tokens.
    alone = generate(None, toy_drafter(), PROMPT + report.token_ids[:cloud_part],
                     EdgeConfig(method=Method.EDGE, params=config.params, max_new_tokens=report.edge_only))  # fmt: skip
    assert report.token_ids[cloud_part:] == alone.token_ids


def test_a_refusal_is_not_retried():
    config = config_for(Method.PICOSPEC, VerifyMode.EXACT, 0.0, 5)
    with cloud_behind_link(max_context=4) as (cloud, link):
        started = time.monotonic()
        with pytest.raises(CloudError, match="OUT_OF_RANGE"):
            generate(f"127.0.0.1:{link.port}", toy_drafter(), [1, 2, 3, 4], config)
        assert time.monotonic() - started < 2 and cloud.server.sessions_ended == 1


# -------------------------------------------------------------------------------------------------
# Liveness: a partition (the link stays up, nothing arrives) is detected within the keepalive bound


class LossLog(logging.Handler):
    """Records when the edge logs that it lost the cloud."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "cloud lost" in record.getMessage():
            self.times.append(time.monotonic())


@contextmanager
def loss_log():
    handler, logger = LossLog(), logging.getLogger("picospec.edge")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@contextmanager
def slow_passes(seconds: float):
    SlowToy.delay_s = seconds
    try:
        yield
    finally:
        SlowToy.delay_s = 0.0


def partition_mid_generation(method: Method, liveness: Liveness, partition_s: float, n_tokens: int = 40):
    """Partition the link after 8 tokens for partition_s, then heal it. Returns the edge's and the
    cloud's detection times (the cloud's: until it freed the session), the report and its config."""
    recovery = replace(RECOVERY, liveness=liveness)
    config = config_for(method, VerifyMode.GUMBEL, 1.0, n_tokens, ControllerConfig() if method.pipelined else None, recovery=recovery)
    times: dict[str, float] = {}
    # A pass takes 20 ms, so the session is still running when the partition starts.
    with cloud_behind_link(SLOW_TARGET, liveness) as (cloud, link), loss_log() as losses, slow_passes(0.02):

        def partition() -> None:
            times["partition"] = time.monotonic()
            link.partition()

            def watch() -> None:  # the cloud frees the vanished edge's session (and its runner)
                while cloud.server.pool.in_use and time.monotonic() - times["partition"] < 3 * liveness.bound_s:
                    time.sleep(0.01)
                times["cloud freed"] = time.monotonic()
                time.sleep(max(0.0, times["partition"] + partition_s - time.monotonic()))
                link.heal()

            threading.Thread(target=watch, daemon=True).start()

        report = generate(f"127.0.0.1:{link.port}", toy_drafter(noise=1.5), PROMPT, config, on_tokens=FaultAfter(8, partition))
    edge_detect = losses.times[0] - times["partition"]
    cloud_detect = times["cloud freed"] - times["partition"]
    print(f"{partition_s:g} s partition detected: edge {edge_detect:.2f} s, cloud {cloud_detect:.2f} s (bound {liveness.bound_s:g} s)")
    return edge_detect, cloud_detect, report, config


@pytest.mark.parametrize("method", [Method.PICOSPEC, Method.AR])
def test_a_partition_is_detected_on_both_sides_within_the_bound_and_survived(method):
    edge_detect, cloud_detect, report, config = partition_mid_generation(method, FAST_LIVENESS, partition_s=3.0)
    # The last bytes before the partition may still be in flight, hence a little slack for scheduling.
    assert edge_detect < FAST_LIVENESS.bound_s + 1.0 and cloud_detect < FAST_LIVENESS.bound_s + 1.0
    assert report.token_ids == reference(config.params, config.verify, 40) and report.resumes >= 1


# -------------------------------------------------------------------------------------------------
# A real cloud process, SIGKILLed mid-generation and restarted on the same port


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ToyCloudProcess:
    """tests/toy_cloud.py in a subprocess on a fixed port."""

    def __init__(self, port: int, delay_ms: float) -> None:
        self.port, self.delay_ms = port, delay_ms
        self.process: subprocess.Popen | None = None

    def start(self) -> "ToyCloudProcess":
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "toy_cloud.py"), str(self.port), "--delay-ms", str(self.delay_ms)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )  # fmt: skip
        line = self.process.stdout.readline()
        assert "serving" in line, line
        return self

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.kill()


def test_a_cloud_killed_mid_generation_and_restarted_loses_no_generation_of_8_edges():
    """8 concurrent edges (gumbel, temperature 1, different seeds); the cloud process is SIGKILLed
    mid-generation and restarted: every generation completes with the tokens of an uninterrupted run."""
    port, n_edges, n_tokens = free_port(), 8, 40
    cloud = ToyCloudProcess(port, delay_ms=5).start()
    results: dict[int, object] = {}
    killed = threading.Event()

    def edge(seed: int) -> None:
        # Patient enough (about 40 s) for a restart on a loaded 2-core machine.
        patient = replace(RECOVERY, retries=50, max_backoff_s=1.0)
        config = config_for(Method.PICOSPEC, VerifyMode.GUMBEL, 1.0, n_tokens, ControllerConfig(), seed=seed, recovery=patient)
        try:
            results[seed] = generate(f"127.0.0.1:{port}", toy_drafter(noise=1.5), PROMPT, config,
                                     on_tokens=FaultAfter(10, lambda: killed.wait(30)))  # fmt: skip
        except BaseException as exc:
            results[seed] = exc

    threads = [threading.Thread(target=edge, args=(seed,)) for seed in range(n_edges)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        cloud.kill()  # while every edge is mid-generation (each waits at its 10th token for the kill)
        killed.set()
        time.sleep(0.5)
        cloud = ToyCloudProcess(port, delay_ms=5).start()
        for thread in threads:
            thread.join(60)
    finally:
        cloud.stop()
    lost = [seed for seed, r in results.items() if isinstance(r, BaseException)]
    assert not lost, {seed: results[seed] for seed in lost}
    for seed, report in sorted(results.items()):
        config = config_for(Method.PICOSPEC, VerifyMode.GUMBEL, 1.0, n_tokens, seed=seed)
        assert report.token_ids == reference(config.params, config.verify, n_tokens), seed
    assert sum(r.resumes > 0 for r in results.values()) == n_edges


def test_cloud_and_generate_take_the_keepalive_flags():
    cloud = build_parser().parse_args(["cloud", "--keepalive-s", "2", "--keepalive-timeout-s", "3"])
    assert liveness_from_args(cloud).bound_s == 5
    args = build_parser().parse_args(["generate", "--keepalive-s", "1.5", "--on-cloud-loss", "local", "--retries", "3"])
    recovery = edge_config(args, Method.PICOSPEC).recovery
    assert (recovery.on_loss.value, recovery.retries, recovery.liveness.keepalive_s) == ("local", 3, 1.5)
    with pytest.raises(InvalidInputError, match="keepalive_s must be positive"):
        Liveness(keepalive_s=0)


def test_a_generation_waiting_to_reconnect_can_be_cancelled_and_keeps_its_tokens():
    config = config_for(Method.PICOSPEC, VerifyMode.EXACT, 0.0, 30, recovery=Recovery(retries=50, backoff_s=0.5))
    cancel = Cancellation()
    with cloud_behind_link() as (cloud, link):

        def lose_the_cloud_then_cancel() -> None:
            link.stop()
            threading.Timer(1.0, cancel.cancel).start()

        started = time.monotonic()
        with pytest.raises(GenerationCancelled) as caught:
            generate(f"127.0.0.1:{link.port}", toy_drafter(), PROMPT, config,
                     on_tokens=FaultAfter(5, lose_the_cloud_then_cancel), cancel=cancel)  # fmt: skip
    assert time.monotonic() - started < 5  # not after the 50 retries
    kept = caught.value.report.token_ids
    assert len(kept) >= 5 and kept == reference(config.params, config.verify, 30)[: len(kept)]
