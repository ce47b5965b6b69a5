"""The edge and the cloud as separate gRPC peers on loopback, with toy models: every method x mode."""

import asyncio
import dataclasses
import gc
import math
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from picospec.decoding import Drafter, generate_autoregressive
from picospec.edge.client import Cancellation, CloudError, GenerationCancelled, generate
from picospec.edge.config import EdgeConfig, Method
from picospec.edge.controller import ControllerConfig
from picospec.edge.pipeline import SpeculativeEdge
from picospec.errors import ProtocolError
from picospec.runners.toy import ToyRunner
from picospec.sampling import SamplingParams
from picospec.transport.netem import LinkEmulatorThread, LinkProfile
from picospec.verify import VerifyConfig, VerifyMode
from stats import ALPHA, sequence_distribution, sequence_pvalue
from clouds import BATCHING, cloud_thread

V = 5
TARGET_SEED = 7
PROMPT = [1, 2]


def toy_target() -> ToyRunner:
    return ToyRunner.create(V, seed=TARGET_SEED)


def toy_drafter(noise: float = 0.8) -> ToyRunner:
    return toy_target().drafter(seed=3, noise=noise)


# Room for the edges of the convergence test, which run at once, and for sessions the cloud has not
# released yet when their edge starts the next.
MAX_SESSIONS, CONCURRENT_EDGES = 8, 4


@pytest.fixture(scope="module", params=BATCHING.values(), ids=BATCHING.keys())
def cloud(request):
    with cloud_thread(toy_target, max_sessions=MAX_SESSIONS, batching=request.param) as server:
        yield server


def address(server) -> str:
    return f"127.0.0.1:{server.port}"


def reference(params: SamplingParams, verify: VerifyConfig, n: int) -> list[int]:
    rng = np.random.default_rng(0)
    return generate_autoregressive(toy_target(), PROMPT, params, verify, rng, n).token_ids


SPECULATIVE = [(Method.VANILLA, VerifyMode.FULL)] + [
    (method, mode) for method in (Method.SYNC, Method.PICOSPEC) for mode in VerifyMode
]
# A controller that switches between speculation and cloud decoding every few tokens: on the toy
# cloud cloud decoding always earns more, so it falls back after `window` tokens and probes
# speculation again after `probe_every`.
SWITCHING = ControllerConfig(window=2, judge_window=2, probe_every=2, max_probe_every=2, max_chunk=3, max_lookahead=6, follow_batch=1)


@pytest.mark.parametrize("method, mode", SPECULATIVE + [(Method.AR, VerifyMode.EXACT)], ids=str)
def test_greedy_output_equals_target_only_greedy(cloud, method, mode):
    params, verify = SamplingParams(temperature=0), VerifyConfig(mode=mode)
    config = EdgeConfig(method=method, params=params, verify=verify, max_new_tokens=30, chunk_len=3, max_lookahead=6,
                        controller=SWITCHING)  # fmt: skip
    report = generate(address(cloud), toy_drafter(), PROMPT, config)
    assert report.token_ids == reference(params, verify, 30)
    # The cloud's prompt pass is reported once (with the first verdict, or as the first token's
    # compute), so the edge can tell prefill from verification.
    assert 0 < report.cloud_prefill_s <= report.cloud_busy_s
    if method.speculative:
        assert report.rounds > 0 and report.drafted >= sum(report.accepted_lengths)
        assert report.bytes_up > 0 and report.bytes_down > 0
        busy = report.cloud_prefill_s + sum(report.verify_times) + report.cloud_decode_s
        assert report.cloud_busy_s == pytest.approx(busy, rel=1e-5)


@pytest.mark.parametrize("method", [Method.PICOSPEC, Method.SYNC, Method.AR])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gumbel_output_equals_target_only_output_with_the_same_seed(cloud, method, seed):
    params = SamplingParams(temperature=1.0)
    verify = VerifyConfig(mode="gumbel", seed=seed)
    config = EdgeConfig(method=method, params=params, verify=verify, max_new_tokens=25)
    report = generate(address(cloud), toy_drafter(noise=1.5), PROMPT, config)
    assert report.token_ids == reference(params, verify, 25)


@pytest.mark.parametrize("mode", list(VerifyMode))
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_switching_between_speculation_and_cloud_decoding_keeps_outputs_exact(cloud, mode, temperature):
    """Greedy: the target's greedy tokens; gumbel: the same tokens as ar with the same seed."""
    if temperature and mode is not VerifyMode.GUMBEL:
        pytest.skip("sampled modes are checked by the convergence test below")
    params, verify = SamplingParams(temperature=temperature), VerifyConfig(mode=mode, seed=4)
    config = EdgeConfig(params=params, verify=verify, max_new_tokens=40, controller=SWITCHING)
    report = generate(address(cloud), toy_drafter(noise=1.5), PROMPT, config)
    assert report.token_ids == reference(params, verify, 40)
    assert report.mode_switches >= 4 and report.decoded > 0 and report.rounds > 0
    assert report.sources[0] == "cloud"  # the first token is the prompt pass's, as for ar


def test_generations_share_one_event_loop_instead_of_leaving_one_behind_each(cloud):
    # grpc.aio keeps every loop that made a call alive: a loop per generation leaked one each.
    def loops() -> int:
        gc.collect()
        return sum(isinstance(o, asyncio.AbstractEventLoop) for o in gc.get_objects())

    config = EdgeConfig(params=SamplingParams(temperature=0), max_new_tokens=4)
    generate(address(cloud), toy_drafter(), PROMPT, config)  # the network loop exists from here on
    before = loops()
    for _ in range(10):
        generate(address(cloud), toy_drafter(), PROMPT, config)
    assert loops() == before


def test_an_edge_about_to_wait_with_nothing_in_flight_fails_at_once():
    """Nothing will arrive: a bug (session 30's negative fallback rate) that used to leave the
    session waiting until the cloud's idle limit now raises."""
    drafter = Drafter(toy_drafter(), SamplingParams(temperature=0), VerifyConfig(), np.random.default_rng(0))
    edge = SpeculativeEdge(drafter, EdgeConfig(max_new_tokens=5, controller=None), send=lambda message: None, inbox=queue.Queue())
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            edge._wait_for_verdict()
        except RuntimeError as exc:
            raised.append(exc)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    waiter.join(timeout=10)
    assert not waiter.is_alive() and "never comes" in str(raised[0])


def test_edge_method_runs_the_drafter_alone():
    params, verify = SamplingParams(temperature=0), VerifyConfig()
    report = generate(None, toy_drafter(), PROMPT, EdgeConfig(method=Method.EDGE, params=params, verify=verify, max_new_tokens=12))
    expected = generate_autoregressive(toy_drafter(), PROMPT, params, verify, np.random.default_rng(0), 12).token_ids
    assert report.token_ids == expected and report.bytes_up == 0


# The fixed pipeline, and the controller switching to cloud decoding after 2 tokens and back to
# speculation after 2 more, so one sequence holds both.
POLICIES = {
    "fixed": None,
    "switching": ControllerConfig(window=2, judge_window=2, probe_every=2, max_probe_every=2, max_chunk=2, max_lookahead=4, follow_batch=1),
}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("mode", ["exact", "full", "topk"])
def test_pipelined_sequences_converge_on_the_target_distribution(cloud, mode, policy):
    """The pipeline (no bonus, lookahead, stale chunks, edge-sampled corrections, fallback to
    cloud decoding and back) stays exact, with several edges' sessions at once (sharing passes
    when the cloud batches)."""
    params, length, n = SamplingParams(temperature=1.0, top_k=3), 5 if POLICIES[policy] else 3, 1500

    def sample(seed: int) -> tuple[int, ...]:
        verify = VerifyConfig(mode=mode, seed=seed, topk=3, n_candidates=2)
        config = EdgeConfig(method=Method.PICOSPEC, params=params, verify=verify, max_new_tokens=length, chunk_len=1,
                            max_lookahead=2, controller=POLICIES[policy])  # fmt: skip
        return tuple(generate(address(cloud), toy_drafter(noise=1.5), PROMPT, config).token_ids)

    counts: dict[tuple, int] = {}
    with ThreadPoolExecutor(CONCURRENT_EDGES) as edges:
        for tokens in edges.map(sample, range(n)):
            counts[tokens] = counts.get(tokens, 0) + 1
    if cloud.config.batching:
        assert cloud.server.scheduler.stats.most_sequences > 1  # sessions did share passes
    assert sequence_pvalue(counts, sequence_distribution(toy_target(), PROMPT, params, length)) > ALPHA


def test_a_rejection_with_a_later_chunk_in_flight_drops_the_stale_chunk_and_stays_exact(cloud):
    """Over a slow link the edge ships chunk after chunk; a far-off drafter forces rejections."""
    params, verify = SamplingParams(temperature=0), VerifyConfig(mode="exact")
    config = EdgeConfig(
        method=Method.PICOSPEC, params=params, verify=verify, max_new_tokens=30, chunk_len=2, max_lookahead=8, controller=None
    )
    stale_before = sum(s.stale_dropped for s in cloud.server.finished)
    ended_before = cloud.server.sessions_ended
    with LinkEmulatorThread("127.0.0.1", 0, "127.0.0.1", cloud.port, LinkProfile(rtt_ms=40, bandwidth_mbps=100)) as link:
        report = generate(f"127.0.0.1:{link.port}", toy_drafter(noise=2.5), PROMPT, config)
    assert report.token_ids == reference(params, verify, 30)
    assert report.discarded > 0
    # Chunks were shipped that the cloud never answered: it dropped them as stale, without a
    # forward pass (one pass per verdict, plus the prompt's).
    assert report.chunks_sent > report.rounds
    assert report.cloud_passes == report.rounds + 1
    wait_until(lambda: cloud.server.sessions_ended > ended_before)  # the cloud logs a session as it closes
    assert sum(s.stale_dropped for s in cloud.server.finished) > stale_before


def test_a_chunk_leaves_with_the_doubtful_draft_that_ended_it(cloud, monkeypatch):
    """A busy cloud's chunk ships once the controller says the drafts in it are all that pay, the
    doubtful draft that said so with them: its verdict comes with the chunk's, and where it fails
    the chunk drafted after it is dropped unverified (cut off, it would start that chunk and waste
    its pass)."""
    from picospec.decoding import DraftChunk
    from picospec.edge.controller import Controller
    from picospec.edge.pipeline import SpeculativeEdge

    def pays_until_doubt(self, confidences, looked_up=(), pending=False):
        doubtful = [i for i, c in enumerate(confidences) if c < 0.5]
        return max(1, doubtful[0]) if doubtful else len(confidences) + 1

    shipped, launch = [], SpeculativeEdge._launch
    monkeypatch.setattr(Controller, "chunk_target", pays_until_doubt)
    monkeypatch.setattr(SpeculativeEdge, "_launch", lambda self, item, message: (
        shipped.append(item.confidences) if isinstance(item, DraftChunk) else None) or launch(self, item, message))
    config = EdgeConfig(params=SamplingParams(temperature=0.0), max_new_tokens=60, controller=ControllerConfig(fallback=False))
    # Over a slow link chunks are in flight while the drafter drafts on.
    with LinkEmulatorThread("127.0.0.1", 0, "127.0.0.1", cloud.port, LinkProfile(rtt_ms=40, bandwidth_mbps=100)) as link:
        report = generate(f"127.0.0.1:{link.port}", toy_drafter(noise=0.3), PROMPT, config)
    assert report.token_ids == reference(SamplingParams(temperature=0.0), VerifyConfig(), 60)
    assert all(min(confidences[:-1], default=1.0) >= 0.5 for confidences in shipped)
    assert any(len(confidences) > 1 and confidences[-1] < 0.5 for confidences in shipped)


def test_each_pass_is_timed_as_the_pass_the_cloud_ran(cloud, monkeypatch):
    """The edge times each verdict's pass as a pass over the chunk and, where the cloud had not
    evaluated it, the correction or decoded token before it (what refines V(m)): checked against
    the passes the cloud ran."""
    from picospec.decoding import TargetVerifier
    from picospec.edge.controller import Controller

    evaluated, observed, pendings = [], [], []
    target_logits, observe = TargetVerifier._target_logits, Controller.observe_verdict

    def spy(self, tokens):
        evaluated.append(len(self._pending) + len(tokens))
        return target_logits(self, tokens)

    def record(self, confidences, *args, pending=False, **kwargs):
        observed.append(len(confidences) + pending)
        pendings.append(pending)
        return observe(self, confidences, *args, pending=pending, **kwargs)

    monkeypatch.setattr(TargetVerifier, "_target_logits", spy)
    monkeypatch.setattr(Controller, "observe_verdict", record)
    config = EdgeConfig(params=SamplingParams(temperature=0.0), max_new_tokens=60, controller=ControllerConfig(fallback=False))
    generate(address(cloud), toy_drafter(noise=0.3), PROMPT, config)
    assert observed == evaluated and True in pendings and False in pendings


def wait_until(condition, timeout_s: float = 10.0) -> None:
    """Poll `condition` until it holds; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the cloud"
        time.sleep(0.01)


def test_a_cloud_that_reports_a_nonsensical_cost_curve_is_refused_with_a_clear_error():
    class BrokenCosts:  # what a buggy or hostile cloud might measure
        curve = SimpleNamespace(verify_s=(math.nan, -1.0), decode_s=0.0)

    with cloud_thread(toy_target) as server:
        server.server.costs = BrokenCosts()
        started = time.monotonic()
        with pytest.raises(ProtocolError, match="unusable cost curve"):
            generate(address(server), toy_drafter(), PROMPT, EdgeConfig(max_new_tokens=5))
        assert time.monotonic() - started < 10


# -------------------------------------------------------------------------------------------------
# Limits: the context limit the cloud states in its welcome ends a generation cleanly


SMALL_CONTEXT = 12


@pytest.fixture(scope="module")
def small_cloud():
    with cloud_thread(toy_target, max_context=SMALL_CONTEXT) as server:
        yield server


@pytest.mark.parametrize("controller", [None, SWITCHING], ids=["fixed", "switching"])
@pytest.mark.parametrize("method, mode", SPECULATIVE + [(Method.AR, VerifyMode.EXACT)], ids=str)
def test_a_generation_reaching_the_context_limit_ends_there_with_every_verified_token(small_cloud, method, mode, controller):
    """Asking for far more tokens than fit ends at the limit with finish reason "length", not an error."""
    if controller is not None and method is not Method.PICOSPEC:
        pytest.skip("only the pipeline runs a controller")
    params, verify = SamplingParams(temperature=0), VerifyConfig(mode=mode)
    config = EdgeConfig(method=method, params=params, verify=verify, max_new_tokens=500, chunk_len=3, max_lookahead=6,
                        controller=controller)  # fmt: skip
    report = generate(address(small_cloud), toy_drafter(noise=1.5), PROMPT, config)
    assert report.token_ids == reference(params, verify, SMALL_CONTEXT - len(PROMPT))
    assert report.finish_reason == "length"


def test_max_tokens_below_the_context_limit_ends_with_length_too(small_cloud):
    report = generate(address(small_cloud), toy_drafter(), PROMPT, EdgeConfig(max_new_tokens=4))
    assert len(report.token_ids) == 4 and report.finish_reason == "length"


@pytest.mark.parametrize("method", [Method.PICOSPEC, Method.AR])
def test_a_prompt_that_cannot_fit_is_refused_at_the_hello_with_both_numbers(small_cloud, method):
    prompt = [1] * SMALL_CONTEXT
    with pytest.raises(CloudError, match=r"OUT_OF_RANGE: the prompt \(12 tokens\) does not fit the context limit of 12"):
        generate(address(small_cloud), toy_drafter(), prompt, EdgeConfig(method=method, max_new_tokens=5))


def test_a_generation_ending_with_a_stop_token_reports_stop():
    class EosDrafter(ToyRunner):
        def vocab_info(self):
            info = super().vocab_info()
            return type(info).from_token_bytes([chr(97 + i).encode() for i in range(V)], (0,), None)

    drafter = toy_drafter()
    runner = EosDrafter(drafter._table, drafter.order)
    config = EdgeConfig(method=Method.EDGE, params=SamplingParams(temperature=1.0), max_new_tokens=200)
    report = generate(None, runner, PROMPT, config)
    assert report.token_ids[-1] == 0 and len(report.token_ids) < 200 and report.finish_reason == "stop"


@pytest.mark.parametrize("method", [Method.PICOSPEC, Method.SYNC, Method.AR, Method.EDGE])
def test_a_cancelled_generation_stops_keeps_its_partial_report_and_frees_the_cloud_session(cloud, method):
    cancel = Cancellation()
    seen: list[int] = []

    def on_tokens(tokens, source):
        seen.extend(tokens)
        if len(seen) >= 3:
            cancel.cancel()  # from the thread that delivers tokens, as a server's client would

    ended_before = cloud.server.sessions_ended
    config = EdgeConfig(method=method, params=SamplingParams(temperature=0), max_new_tokens=200)
    with pytest.raises(GenerationCancelled) as caught:
        generate(address(cloud), toy_drafter(), PROMPT, config, on_tokens, cancel)
    report = caught.value.report
    assert 3 <= report.new_tokens < 200 and report.token_ids == seen[: report.new_tokens]
    if method is not Method.EDGE:
        # The session ended early and gave its runner back (waited for together: an earlier
        # test's session ending meanwhile also moves the count).
        wait_until(lambda: cloud.server.sessions_ended > ended_before and cloud.server.pool.in_use == 0)
    # The runner is free again: the next generation runs to its end.
    again = generate(address(cloud), toy_drafter(), PROMPT, dataclasses.replace(config, max_new_tokens=10))
    assert again.new_tokens == 10


def test_a_generation_cancelled_before_it_starts_does_not_open_a_session(cloud):
    cancel = Cancellation()
    cancel.cancel()
    ended_before = cloud.server.sessions_ended
    with pytest.raises(GenerationCancelled):
        generate(address(cloud), toy_drafter(), PROMPT, EdgeConfig(max_new_tokens=5), cancel=cancel)
    assert cloud.server.sessions_ended == ended_before


class SlowToyTarget(ToyRunner):
    """The toy target taking 20 ms per pass, like a cloud's decode step."""

    def extend(self, tokens):
        time.sleep(0.02)
        return super().extend(tokens)


def test_the_cloud_keeps_decoding_while_the_drafter_evaluates_a_long_prompt():
    """The drafter's prompt pass (1.5 s here) runs beside the loop that orders the cloud's tokens:
    evaluated in the loop it outlasted the orders queued before it, and the cloud sat idle."""
    drafter = toy_drafter()
    prefill = drafter.prefill
    drafter.prefill = lambda tokens: (time.sleep(1.5), prefill(tokens))[1]
    arrivals = []
    config = EdgeConfig(params=SamplingParams(temperature=0.0), max_new_tokens=60)
    with cloud_thread(lambda: SlowToyTarget.create(V, seed=TARGET_SEED)) as server:
        report = generate(address(server), drafter, PROMPT, config, on_tokens=lambda tokens, _: arrivals.append(time.perf_counter()))
    assert report.token_ids == reference(SamplingParams(temperature=0.0), VerifyConfig(), 60)
    assert report.sources[:20] == ["cloud"] * 20  # decoded by the cloud while the drafter was busy
    assert max(np.diff(arrivals)) < 0.6


class SlowPromptToyTarget(ToyRunner):
    """The toy target taking 0.5 s over the prompt, like a cloud's prompt pass."""

    def prefill(self, tokens):
        time.sleep(0.5)
        return super().prefill(tokens)


def test_the_drafter_evaluates_the_prompt_beside_the_clouds_prompt_pass():
    """The drafter's prompt pass starts with the session, not when the first token arrives: it is
    over before the cloud's (0.3 s against 0.5 s here), so the drafter is ready for the first token."""
    drafter = toy_drafter()
    prefill = drafter.prefill
    drafter.prefill = lambda tokens: (time.sleep(0.3), prefill(tokens))[1]
    config = EdgeConfig(params=SamplingParams(temperature=0.0), max_new_tokens=40)
    with cloud_thread(lambda: SlowPromptToyTarget.create(V, seed=TARGET_SEED)) as server:
        report = generate(address(server), drafter, PROMPT, config)
    assert report.token_ids == reference(SamplingParams(temperature=0.0), VerifyConfig(), 40)
    (prompt,) = [e for e in report.timeline if e.kind == "prompt"]
    assert prompt.start < 0.1 and prompt.end < report.ttft_s


def test_the_shadow_skips_the_token_of_the_clouds_prompt_pass(cloud, monkeypatch):
    """The drafter never drafts the first token (it comes from the cloud's prompt pass), so what it
    would have drafted there does not enter the controller's judgement; every later token does."""
    from picospec.decoding import Drafter
    from picospec.edge.controller import Controller

    followed, observed = [], []
    follow, observe = Drafter.follow, Controller.observe_decoded
    monkeypatch.setattr(Drafter, "follow", lambda self, tokens, probs=(): followed.extend(tokens) or follow(self, tokens, probs))
    monkeypatch.setattr(Controller, "observe_decoded", lambda self, c, p: observed.append(p) or observe(self, c, p))
    never = ControllerConfig(margin=100.0, early_margin=100.0, probe_every=10_000, max_probe_every=10_000, follow_batch=4)
    config = EdgeConfig(params=SamplingParams(temperature=0.0), max_new_tokens=30, controller=never)
    report = generate(address(cloud), toy_drafter(), PROMPT, config)
    assert report.decoded == 30 and len(followed) >= never.follow_batch
    assert followed == report.token_ids[: len(followed)] and len(observed) == len(followed) - 1


@pytest.mark.parametrize("cloud_address", [None, "localhost:1"], ids=["edge", "cloud"])
def test_a_warm_up_is_a_short_stop_and_wait_generation_whatever_the_method(monkeypatch, cloud_address):
    import picospec.edge.client as client

    seen = []
    monkeypatch.setattr(client, "generate", lambda cloud, runner, prompt, config, **kw: seen.append((cloud, config)))
    client.warm_up(cloud_address, toy_drafter(), PROMPT, EdgeConfig(method=Method.PICOSPEC, max_new_tokens=128))
    ((cloud, config),) = seen
    assert cloud == cloud_address and config.max_new_tokens == client.WARMUP_TOKENS
    assert config.method is (Method.EDGE if cloud_address is None else Method.SYNC)
