"""The cost model, the ideal bound and the simulator, on constructed cases with known answers."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from picospec.bench.bound import (
    Acceptance,
    PositionTrace,
    Policy,
    ar_rate,
    edge_rate,
    ideal_wall_s,
    pipelined_rate,
    stop_and_wait_rate,
    stop_and_wait_round_s,
)
from picospec.bench.assumed import load_profile, wire_bytes
from picospec.bench.costs import CostProfile, VerifyCost
from picospec.bench.forced import ForcedTrace
from picospec.bench.measure import evaluated_tokens, measure_costs, run_costs, window_costs
from picospec.bench.results import CellKey, RunRecord
from picospec.bench.predict import predict_cells
from picospec.bench.simulator import PositionOutcomes, SimConfig, simulate
from picospec.bench.traces import AgreementTrace, TraceSource, observed_agreement, pooled_agreement
from picospec.cli import main
from picospec.edge.config import Method
from picospec.edge.controller import ControllerConfig
from picospec.errors import InvalidInputError
from picospec.transport.netem import LinkProfile
from picospec.verify import VerifyMode

MODES = tuple(VerifyMode)
FREE_LINK = LinkProfile(rtt_ms=0.0, bandwidth_mbps=1e12)


def costs(
    draft=0.04, intercept=0.05, per_token=0.01, link=FREE_LINK, up=10.0, down=20.0, overhead=0.0, **kw
) -> CostProfile:
    """A profile with round numbers: verify(m) = intercept + per_token * m."""
    return CostProfile(
        name="constructed",
        draft_s=draft,
        verify=VerifyCost(intercept, per_token),
        target_s=kw.get("target", 0.05),
        cloud_prefill_s=kw.get("cloud_prefill", 0.0),
        edge_prefill_s=kw.get("edge_prefill", 0.0),
        link=link,
        bytes_up_per_draft_token={m: up for m in MODES},
        bytes_down_per_round={m: down for m in MODES},
        bytes_down_per_ar_token=kw.get("ar_bytes", 12.0),
        round_overhead_s=overhead,
    )


def always(agrees: bool) -> AgreementTrace:
    return AgreementTrace({}, 1.0 if agrees else 0.0)


def steady_s_per_token(
    profile: CostProfile, method: str, trace_factory, n1: int, n2: int, policy=Policy(4, 8)
) -> float:
    """Seconds per token between n1 and n2 generated tokens: start-up cancels out."""
    configs = [SimConfig(method, VerifyMode.EXACT, policy, n) for n in (n1, n2)]
    walls = [simulate(profile, config, trace_factory()).report.wall_s for config in configs]
    return (walls[1] - walls[0]) / (n2 - n1)


def key(
    method=Method.SYNC,
    verify=VerifyMode.EXACT,
    prompt="0",
    rtt=20.0,
    bandwidth=100.0,
    profile="wan",
    workload="humaneval",
) -> CellKey:
    return CellKey(workload, prompt, method, verify, profile, rtt, bandwidth, 0.0, 0)


# -- costs ---------------------------------------------------------------------------------------


def test_verify_cost_fits_a_line_and_keeps_medians():
    samples = [(m, 0.05 + 0.01 * m + noise) for m in (1, 2, 4, 5) for noise in (-0.001, 0.0, 0.001)]
    fit = VerifyCost.fit(samples)
    assert fit.intercept_s == pytest.approx(0.05) and fit.per_token_s == pytest.approx(0.01)
    assert fit(4) == pytest.approx(0.09) and fit(3) == pytest.approx(0.08)  # 3: from the line
    one_size = VerifyCost.fit([(4, 0.08), (4, 0.12), (4, 0.1)])
    assert one_size(4) == pytest.approx(0.1) and one_size(2) == pytest.approx(0.05)
    with pytest.raises(InvalidInputError):
        VerifyCost.fit([])


def test_evaluated_tokens_count_the_token_committed_by_the_round_before():
    stop_and_wait = RunRecord(key(Method.SYNC), {}, accepted_lengths=[4, 1, 4], chunk_lengths=[4, 4, 4])
    assert evaluated_tokens(stop_and_wait) == [4, 5, 5]  # a bonus or a correction before every later round
    pipelined = RunRecord(key(Method.PICOSPEC), {}, accepted_lengths=[1, 4, 2, 3], chunk_lengths=[1, 4, 4, 3])
    assert evaluated_tokens(pipelined) == [1, 4, 4, 4]  # only the rejection in round 3 leaves a token pending


VARIANTS = (
    (Method.AR, VerifyMode.EXACT),
    (Method.VANILLA, VerifyMode.FULL),
    (Method.SYNC, VerifyMode.EXACT),
    (Method.PICOSPEC, VerifyMode.EXACT),
)


def simulated_records(
    profile: CostProfile,
    links=(LinkProfile(20.0, 100.0), LinkProfile(100.0, 1.0)),
    alpha=0.7,
    n=40,
    prompts=("0", "1"),
    workloads=("humaneval",),
    variants=VARIANTS,
) -> list[RunRecord]:
    """Temperature-0 runs of edge and `variants` made by the simulator, in the results file's format."""
    settings = {"max_new_tokens": n, "chunk_len": 4, "lookahead": 8}
    records = []
    for workload in workloads:
        for prompt in prompts:
            trace = {p: ok for p, ok in enumerate(AgreementTrace({}, alpha, seed=int(prompt))(i) for i in range(3 * n))}
            edge = simulate(profile, SimConfig(Method.EDGE, max_new_tokens=n))
            records.append(
                edge.to_record(
                    key(Method.EDGE, prompt=prompt, rtt=0.0, bandwidth=0.0, profile="none", workload=workload), settings
                )
            )
            for link in links:
                name = f"{link.rtt_ms:g}/{link.bandwidth_mbps:g}"
                for method, mode in variants:
                    config = SimConfig(method, mode, Policy(4, 8), n)
                    result = simulate(profile.with_link(link), config, AgreementTrace(trace, alpha))
                    cell = key(method, mode, prompt, link.rtt_ms, link.bandwidth_mbps, name, workload)
                    records.append(result.to_record(cell, settings))
    return records


def test_costs_measured_from_runs_recover_the_costs_that_made_them():
    truth = replace(
        costs(cloud_prefill=0.3, edge_prefill=0.1, overhead=0.004),
        bytes_up_per_draft_token={VerifyMode.FULL: 5000.0, VerifyMode.EXACT: 10.0},
    )
    measured = measure_costs(simulated_records(truth))
    assert measured.draft_s == pytest.approx(0.04)
    assert measured.target_s == pytest.approx(0.05)
    assert measured.verify(1) == pytest.approx(0.06) and measured.verify(5) == pytest.approx(0.10)
    assert measured.verify.per_token_s == pytest.approx(0.01) and measured.verify.intercept_s == pytest.approx(0.05)
    assert measured.cloud_prefill("humaneval:0") == pytest.approx(0.3)
    assert measured.edge_prefill("humaneval:1") == pytest.approx(0.1)
    assert measured.bytes_up_per_draft_token[VerifyMode.FULL] == pytest.approx(5000, rel=1e-3)
    assert measured.bytes_down_per_round[VerifyMode.EXACT] == pytest.approx(20, rel=0.05)
    assert measured.round_overhead_s == pytest.approx(0.004, abs=1e-6)


def test_message_sizes_from_the_wire_format():
    up, down = wire_bytes(n_vocab=1000, chunk_len=4)
    assert up[VerifyMode.FULL] == pytest.approx(2 * 1000, rel=0.01)  # a float16 row per draft token
    # A uint32 id, plus a float32 probability.
    assert up[VerifyMode.GUMBEL] < up[VerifyMode.EXACT] == up[VerifyMode.TOPK] < 12
    assert all(b < 30 for b in down.values())


def test_profiles_load_from_toml_json_and_by_name(tmp_path):
    fields = dict(
        draft_ms=20,
        target_ms=30,
        verify_intercept_ms=30,
        verify_per_token_ms=0.5,
        cloud_prefill_ms=100,
        edge_prefill_ms=10,
        rtt_ms=40,
        bandwidth_mbps=50,
        n_vocab=32000,
    )
    toml = tmp_path / "p.toml"
    toml.write_text("\n".join(f"{k} = {v}" for k, v in fields.items()) + '\nsource = "assumed"\n')
    (tmp_path / "p.json").write_text(json.dumps(fields))
    for profile in (load_profile(str(toml)), load_profile(str(tmp_path / "p.json"))):
        assert profile.draft_s == pytest.approx(0.02) and profile.verify(2) == pytest.approx(0.031)
        assert (profile.link.rtt_ms, profile.link.bandwidth_mbps) == (40, 50)
        assert profile.bytes_up_per_draft_token[VerifyMode.FULL] == pytest.approx(64000, rel=0.01)
    for name in ("orin-a100-llama", "orin-a100-qwen3"):
        assert "assumed" in load_profile(name).source
    (tmp_path / "bad.json").write_text(json.dumps({**fields, "draft_s": 1}))
    for bad in ("no-such-profile", str(tmp_path / "bad.json")):
        with pytest.raises(InvalidInputError):
            load_profile(bad)


# -- the bound -----------------------------------------------------------------------------------


def test_acceptance_from_rounds():
    records = [RunRecord(key(Method.SYNC), {}, accepted_lengths=[4, 2, 4, 0], chunk_lengths=[4, 4, 4, 4])]
    acceptance = Acceptance.from_records(records)
    assert acceptance.alpha == pytest.approx(10 / 12)  # 10 accepted, 2 rejections
    assert acceptance.accepted_pmf == {0: 0.25, 2: 0.25, 4: 0.5}
    assert acceptance.stop_and_wait_tokens(4) == pytest.approx(0.25 * 1 + 0.25 * 3 + 0.5 * 5)
    assert Acceptance(0.5).stop_and_wait_tokens(3) == pytest.approx((1 - 0.5**4) / (1 - 0.5))
    assert Acceptance(1.0).stop_and_wait_tokens(4) == 5 and Acceptance(0.0).stop_and_wait_tokens(4) == 1


def test_ar_and_edge_rates():
    profile = costs(target=0.05, ar_bytes=1000, link=LinkProfile(50.0, 1.0))
    assert ar_rate(profile) == pytest.approx(1 / 0.05)  # 8 ms of serialisation hides under 50 ms of decoding
    assert ar_rate(profile.with_link(LinkProfile(50.0, 0.1))) == pytest.approx(1 / 0.08)  # the link is the bottleneck
    assert edge_rate(profile) == pytest.approx(25.0)


@pytest.mark.parametrize("draft, per_token", [(0.04, 0.01), (0.01, 0.03)], ids=["draft-bound", "verify-bound"])
def test_pipeline_with_perfect_acceptance_and_a_free_link_runs_at_its_slowest_stage(draft, per_token):
    profile = costs(draft=draft, intercept=0.05, per_token=per_token)
    expected = 1 / max(draft, profile.verify(4) / 4)
    assert pipelined_rate(profile, Acceptance(1.0), VerifyMode.EXACT, Policy(4, 64)) == pytest.approx(expected)


def test_pipeline_bound_without_acceptance_and_with_a_small_window():
    profile = costs(link=LinkProfile(100.0, 1e12))
    latency = 0.1 + profile.verify(4)
    exact = VerifyMode.EXACT
    assert pipelined_rate(profile, Acceptance(0.0), exact, Policy(4, 8)) == pytest.approx(1 / (0.04 + latency))
    # alpha = 1, but only 8 tokens may be unverified: 8 per (4 drafts + one chunk's round trip)
    assert pipelined_rate(profile, Acceptance(1.0), exact, Policy(4, 8)) == pytest.approx(8 / (4 * 0.04 + latency))


def test_stop_and_wait_bound():
    profile = costs(link=LinkProfile(20.0, 8.0), up=1000.0, down=100.0)
    round_s = 4 * 0.04 + 4 * 1000 * 8 / 8e6 + 0.02 + profile.verify(5) + 100 * 8 / 8e6
    assert stop_and_wait_round_s(profile, VerifyMode.EXACT, 4) == pytest.approx(round_s)
    assert stop_and_wait_rate(profile, Acceptance(1.0), VerifyMode.EXACT, 4) == pytest.approx(5 / round_s)
    assert stop_and_wait_rate(profile, Acceptance(0.0), VerifyMode.EXACT, 4) == pytest.approx(1 / round_s)


def test_ideal_wall_includes_the_start_up():
    profile = costs(cloud_prefill=0.5, edge_prefill=0.1, link=LinkProfile(40.0, 1e12))
    args = (Acceptance(1.0), Policy(4, 8), 10)
    assert ideal_wall_s(Method.AR, VerifyMode.EXACT, profile, *args) == pytest.approx(0.5 + 9 * 0.05)
    assert ideal_wall_s(Method.EDGE, VerifyMode.EXACT, profile, *args) == pytest.approx(0.1 + 9 * 0.04)
    # the first chunk reaches the cloud at 0.1 + 0.16 + 0.02; the cloud is ready at 0.5 - 0.02
    rate = stop_and_wait_rate(profile, Acceptance(1.0), VerifyMode.EXACT, 4)
    assert ideal_wall_s(Method.SYNC, VerifyMode.EXACT, profile, *args) == pytest.approx(0.1 + 0.2 + 10 / rate)


# -- the simulator -------------------------------------------------------------------------------


@pytest.mark.parametrize("draft, per_token", [(0.04, 0.01), (0.01, 0.03)], ids=["draft-bound", "verify-bound"])
def test_simulated_pipeline_with_perfect_acceptance_and_a_free_link(draft, per_token):
    profile = costs(draft=draft, per_token=per_token)
    seconds = steady_s_per_token(profile, Method.PICOSPEC, lambda: always(True), 200, 400, Policy(4, 64))
    assert seconds == pytest.approx(max(draft, profile.verify(4) / 4), rel=1e-3)


@pytest.mark.parametrize("agrees", [True, False])
@pytest.mark.parametrize("link", [FREE_LINK, LinkProfile(60.0, 10.0)], ids=["free", "cellular"])
def test_simulated_stop_and_wait_equals_the_closed_form(agrees, link):
    profile = costs(link=link, up=1000.0, overhead=0.003)
    tokens_per_round = 5 if agrees else 1
    n1, n2 = 10 * tokens_per_round, 30 * tokens_per_round
    seconds = steady_s_per_token(profile, Method.SYNC, lambda: always(agrees), n1, n2)
    # The implementation's drafter makes k + 1 passes a round (one over the committed token).
    round_s = stop_and_wait_round_s(profile, VerifyMode.EXACT, 4, edge_passes=5) + 0.003
    assert seconds == pytest.approx(round_s / tokens_per_round)


def test_simulated_stop_and_wait_matches_the_bound_in_expectation():
    profile = costs(link=LinkProfile(20.0, 100.0))
    runs = [
        simulate(profile, SimConfig(Method.SYNC, VerifyMode.EXACT, Policy(4, 8), 400), AgreementTrace({}, 0.6, seed))
        for seed in range(20)
    ]
    rounds = sum(r.report.rounds for r in runs)
    tokens_per_round = sum(r.report.new_tokens for r in runs) / rounds
    assert tokens_per_round == pytest.approx(Acceptance(0.6).stop_and_wait_tokens(4), rel=0.03)


def test_the_pipeline_ships_at_once_when_the_cloud_would_idle():
    result = simulate(costs(), SimConfig(Method.PICOSPEC, VerifyMode.EXACT, Policy(4, 8), 20), always(True))
    assert result.report.chunk_lengths[0] == 1  # the cloud was idle: the first token went alone
    assert max(result.report.chunk_lengths) == 4 and result.report.accepted_lengths == result.report.chunk_lengths
    assert result.report.new_tokens == 20 and result.stale_dropped == 0


def test_stale_chunks_are_dropped_unverified():
    # A long RTT keeps two chunks in flight; the draft at position 6 is rejected.
    trace = AgreementTrace({6: False}, 1.0)
    config = SimConfig(Method.PICOSPEC, VerifyMode.EXACT, Policy(4, 8), 24)
    result = simulate(costs(link=LinkProfile(200.0, 1e12)), config, trace)
    report = result.report
    assert result.stale_dropped >= 1 and report.discarded >= 1
    assert len([e for e in result.events if e.kind == "verify"]) == report.rounds  # dropped chunks cost nothing
    assert sum(a + (a < c) for a, c in zip(report.accepted_lengths, report.chunk_lengths)) == 24
    assert observed_agreement(result.to_record(key(Method.PICOSPEC))) == {p: p != 6 for p in range(24)}


def test_a_generation_that_stops_early_and_the_simulated_timelines():
    result = simulate(costs(), SimConfig(Method.SYNC, VerifyMode.EXACT, Policy(4, 8), 40, stop_after=9), always(True))
    assert result.report.new_tokens == 9 and result.report.token_ids == list(range(9))
    lanes = {e.lane for e in result.events}
    assert lanes == {"edge", "uplink", "cloud", "downlink"}
    assert all(e.end >= e.start for e in result.events)
    kinds = {e["kind"] for e in result.to_record(key()).timeline}
    assert kinds == {"draft", "verdict"}  # what the real edge records


def test_simulated_ar_and_edge():
    profile = costs(cloud_prefill=0.5, edge_prefill=0.1, link=LinkProfile(40.0, 8.0), ar_bytes=100)
    ar = simulate(profile, SimConfig(Method.AR, max_new_tokens=10)).report
    serialisation = 100 * 8 / 8e6
    assert ar.ttft_s == pytest.approx(0.5 + serialisation) and ar.wall_s == pytest.approx(
        0.5 + 9 * 0.05 + serialisation
    )
    edge = simulate(profile, SimConfig(Method.EDGE, max_new_tokens=10)).report
    assert edge.ttft_s == pytest.approx(0.1) and edge.wall_s == pytest.approx(0.1 + 9 * 0.04)
    with pytest.raises(InvalidInputError):
        simulate(profile, SimConfig(Method.SYNC, max_new_tokens=10))  # no trace


def test_traces_from_runs():
    sync = RunRecord(key(Method.SYNC), {}, accepted_lengths=[4, 1], chunk_lengths=[4, 4])
    assert observed_agreement(sync) == {0: True, 1: True, 2: True, 3: True, 5: True, 6: False}  # 4: the bonus
    picospec = RunRecord(key(Method.PICOSPEC), {}, accepted_lengths=[1, 2, 0], chunk_lengths=[1, 4, 2])
    assert observed_agreement(picospec) == {0: True, 1: True, 2: True, 3: False, 4: False}
    assert pooled_agreement([sync, picospec]) == {0: True, 1: True, 2: True, 3: True, 4: False, 5: True, 6: False}
    trace = AgreementTrace({0: False}, 0.5, seed=3)
    assert [trace(p) for p in range(50)] == [trace(p) for p in range(50)] and not trace(0)


def test_sampled_runs_keep_their_own_rejections():
    """At temperature 0 a prompt's runs share one trace (their majority); above it each run sampled
    its own text, so a rejection belongs to its run alone and is neither voted away nor lent."""

    def group(temperature: float) -> list[RunRecord]:
        ar = RunRecord(replace(key(Method.AR), temperature=temperature), {"new_tokens": 20})
        sync = [
            RunRecord(replace(key(Method.SYNC), temperature=temperature, repeat=i), {"new_tokens": 15},
                      accepted_lengths=accepted, chunk_lengths=[4, 4, 4])  # fmt: skip
            for i, accepted in enumerate(([1, 4, 4], [4, 1, 4], [4, 4, 1]))
        ]
        return [ar, *sync]

    greedy, sampled = TraceSource(group(0.0), None, 0), TraceSource(group(1.0), None, 0)
    (stand_in,) = greedy.representatives()
    assert stand_in.key.method == Method.AR and greedy.trace(stand_in).accepted(0, 4) == 4  # 2 of 3 runs agreed at 1
    assert [r.key.repeat for r in sampled.representatives()] == [0, 1, 2]
    assert [sampled.trace(r).accepted(0, 4) for r in sampled.representatives()] == [1, 4, 4]
    topk = replace(sampled.representatives()[0], key=replace(key(Method.PICOSPEC, VerifyMode.TOPK), temperature=1.0))
    # Modes accept differently.
    assert TraceSource([*group(1.0), topk], None, 0).representatives(VerifyMode.TOPK) == [topk]


def test_predictions_of_simulated_runs_have_no_error():
    records = simulated_records(costs(cloud_prefill=0.3, edge_prefill=0.1))
    predictions = predict_cells(records)
    assert {p.method for p in predictions} == {Method.AR, Method.EDGE, Method.VANILLA, Method.SYNC, Method.PICOSPEC}
    assert all(p.measured is not None and abs(p.error) < 0.02 for p in predictions)
    assert all(abs(p.replay_error) < 0.02 for p in predictions)
    custom = predict_cells(records, link=LinkProfile(300.0, 10.0), methods=[Method.SYNC, Method.PICOSPEC])
    assert [(p.profile, p.method, p.measured) for p in custom] == [
        ("300/10", Method.SYNC, None),
        ("300/10", Method.PICOSPEC, None),
    ]
    slow = {p.method: p.predicted for p in custom}
    assert slow[Method.PICOSPEC] > slow[Method.SYNC]


def test_window_costs_follow_a_machine_that_slowed_down_between_network_profiles():
    """The second network's runs were made after the machine's compute got 30% slower: one cost
    profile per network profile predicts both; the whole file's costs are a blend of the two."""
    fast = costs(cloud_prefill=0.3, edge_prefill=0.1)
    slow = costs(draft=0.052, intercept=0.065, per_token=0.013, target=0.065, cloud_prefill=0.39, edge_prefill=0.1)
    records = simulated_records(fast, links=(LinkProfile(20.0, 100.0),)) + [
        r for r in simulated_records(slow, links=(LinkProfile(100.0, 1.0),)) if r.key.profile != "none"
    ]
    windows = {profile: costs for (profile, _), costs in window_costs(records).items()}
    assert set(windows) == {"20/100", "100/1"} and windows["100/1"].link == LinkProfile(100.0, 1.0)
    assert windows["20/100"].target_s == pytest.approx(0.05) and windows["100/1"].target_s == pytest.approx(0.065)
    assert windows["20/100"].verify(5) == pytest.approx(0.10) and windows["100/1"].verify(5) == pytest.approx(0.13)
    assert windows["100/1"].draft(Method.PICOSPEC) == pytest.approx(0.052)
    assert windows["100/1"].draft(Method.EDGE) == pytest.approx(0.04)  # edge-only runs: made on the fast machine
    assert 0.05 < measure_costs(records).target_s < 0.065
    predictions = predict_cells(records)
    assert all(abs(p.error) < 0.02 and abs(p.replay_error) < 0.02 for p in predictions)


def test_runs_at_another_temperature_form_their_own_window():
    fast = costs(cloud_prefill=0.3, edge_prefill=0.1)
    slow = costs(draft=0.052, intercept=0.065, per_token=0.013, target=0.065, cloud_prefill=0.39, edge_prefill=0.1)
    links = (LinkProfile(20.0, 100.0),)
    later = [replace(r, key=replace(r.key, temperature=1.0)) for r in simulated_records(slow, links=links)]
    windows = window_costs(simulated_records(fast, links=links) + later)
    assert set(windows) == {("20/100", 0.0), ("20/100", 1.0)}
    assert windows["20/100", 0.0].target_s == pytest.approx(0.05)
    assert windows["20/100", 1.0].target_s == pytest.approx(0.065)
    assert windows["20/100", 1.0].draft(Method.EDGE) == pytest.approx(0.052)  # its own edge-only runs


def test_run_costs_put_a_runs_own_compute_costs_over_the_base_profile():
    truth = costs(cloud_prefill=0.3, edge_prefill=0.1)
    base = costs(draft=0.08, intercept=0.1, per_token=0.02, target=0.1, cloud_prefill=0.6, edge_prefill=0.2,
                 link=LinkProfile(50.0, 10.0), overhead=0.01)  # fmt: skip
    records = {r.key.method: r for r in simulated_records(truth, prompts=("0",), links=(LinkProfile(20.0, 100.0),))}
    sync = run_costs(records[Method.SYNC], base)
    assert sync.draft(Method.SYNC) == pytest.approx(0.04) and sync.draft(Method.PICOSPEC) == pytest.approx(0.08)
    assert sync.verify(5) == pytest.approx(0.10) and sync.verify(8) == pytest.approx(0.26)  # 8: never verified
    assert sync.cloud_prefill("humaneval:0") == pytest.approx(0.3) and sync.edge_prefill("humaneval:0") == pytest.approx(0.1)
    assert sync.target_s == pytest.approx(0.1)  # a sync run measures no decode step
    assert (sync.link, sync.round_overhead_s) == (base.link, base.round_overhead_s)
    ar = run_costs(records[Method.AR], base)
    assert ar.target_s == pytest.approx(0.05) and ar.cloud_prefill("humaneval:0") == pytest.approx(0.3)
    assert ar.verify(5) == pytest.approx(0.2) and ar.draft(Method.AR) == pytest.approx(0.08)
    edge = run_costs(records[Method.EDGE], base)
    assert edge.draft(Method.EDGE) == pytest.approx(0.04) and edge.edge_prefill("humaneval:0") == pytest.approx(0.1)


def test_methods_whose_message_sizes_were_never_measured_are_not_predicted():
    records = [r for r in simulated_records(costs(), prompts=("0",)) if r.key.method != Method.VANILLA]
    assert {p.method for p in predict_cells(records)} == {Method.AR, Method.EDGE, Method.SYNC, Method.PICOSPEC}


def test_simulate_command(tmp_path, capsys):
    results = tmp_path / "bench.jsonl"
    results.write_text("".join(r.to_json() + "\n" for r in simulated_records(costs(), prompts=("0",))))
    assert main(["simulate", str(results)]) == 0
    out = capsys.readouterr().out
    assert all(method in out for method in ("ar", "edge", "vanilla", "sync", "picospec")) and "%" in out
    assert (
        main(["simulate", str(results), "--profile", "orin-a100-qwen3", "--methods", "ar,picospec", "--alpha", "0.8"])
        == 0
    )
    out = capsys.readouterr().out
    assert Method.PICOSPEC in out and Method.VANILLA not in out and "50/100" in out


# -- the simulator running the controller --------------------------------------------------------

ADAPTIVE = {"max_new_tokens": 128, "chunk_len": 4, "lookahead": 8, "policy": "adaptive", "fallback": True, "confidence": True}


def forced_trace(n: int, confidence: float, acceptance: float) -> PositionTrace:
    return PositionTrace(np.full(n, confidence), np.full(n, acceptance))


def controlled(n: int = 128, **kw) -> SimConfig:
    return SimConfig(Method.PICOSPEC, VerifyMode.EXACT, Policy(4, 8), n, controller=ControllerConfig(), **kw)


def cpu_like() -> CostProfile:
    """A cloud like this project's CPU: verify(m) ~ 1 + 0.4 m decode steps, a drafter step half a
    decode step, 20 ms of RTT."""
    return costs(
        draft=0.025, intercept=0.03, per_token=0.02, target=0.05, link=LinkProfile(20.0, 100.0), cloud_prefill=0.3, edge_prefill=0.2
    )


def test_the_simulated_controller_speculates_where_the_drafter_agrees():
    profile = cpu_like()
    ar = simulate(profile, SimConfig(Method.AR, max_new_tokens=128)).report
    report = simulate(profile, controlled(128), PositionOutcomes(forced_trace(128, 0.99, 1.0))).report
    # It left cloud decoding once the drafter had followed a window of the cloud's tokens (8 after
    # 9: the prompt pass's token is not judged), 16 with the follow batches ordered ahead.
    assert report.mode_switches == 1 and report.decoded == 16
    assert report.accepted_lengths == report.chunk_lengths  # every draft passed
    assert report.decoded + sum(report.accepted_lengths) == report.new_tokens == 128
    assert report.tokens_per_s > 1.2 * ar.tokens_per_s
    assert report.ttft_s == pytest.approx(ar.ttft_s)  # the first token is the cloud's prompt pass's, as for ar
    kinds = {e.kind for e in report.timeline}
    assert {"prompt", "decoded", "draft", "verdict"} <= kinds  # what measure.py reads, as the real edge records it


def test_the_simulated_controller_lets_the_cloud_decode_where_drafts_would_fail():
    profile = cpu_like()
    ar = simulate(profile, SimConfig(Method.AR, max_new_tokens=128)).report
    report = simulate(profile, controlled(), PositionOutcomes(forced_trace(128, 0.3, 0.0))).report
    assert report.mode_switches == 0 and report.decoded == 128 and report.drafted == 0
    assert report.wall_s == pytest.approx(ar.wall_s, rel=0.01)  # ordered ahead, the cloud never waits


def decoded_after_speculation(report) -> int:
    """Tokens the cloud decoded after the last verdict on a chunk."""
    last_verdict = max(e.start for e in report.timeline if e.kind == "verdict")
    return sum(e.kind == "decoded" and e.start > last_verdict for e in report.timeline)


def test_the_simulated_controller_ends_speculation_soon_where_a_known_run_gives_way_to_failing_drafts():
    """A 41-token answer (MT-bench 134 on the default pair): the drafter passes its first 20
    positions, then confident drafts pass a third of the time. Speculation starts after a window
    and, judged by its window alone, ran to the end of the answer at 0.70x of ar (26 positions
    decoded of 41, 20 before it started); behind cloud decoding by more than its start-up, with
    the cloud's verdicts saying it loses, it ends within a few verdicts and the cloud decodes
    most of the failing positions."""
    profile = cpu_like()
    trace = PositionTrace(np.full(41, 0.99), np.r_[np.ones(20), np.full(21, 0.35)])
    ar = simulate(profile, SimConfig(Method.AR, max_new_tokens=41)).report
    reports = [simulate(profile, controlled(41), PositionOutcomes(trace, seed=s)).report for s in range(20)]
    assert all(r.mode_switches == 2 for r in reports)  # speculation was tried, and ended
    assert np.mean([decoded_after_speculation(r) for r in reports]) > 10  # of 21; 6 judged by the window alone
    assert np.mean([r.tokens_per_s for r in reports]) > 0.78 * ar.tokens_per_s


def test_the_drafter_waits_while_two_chunks_await_verdicts():
    """One chunk verified and one queued keep the cloud as busy as any number more: a third is
    drafted on the chance both pass, mostly thrown away where drafts fail (and on one machine, it
    slows the cloud's pass beside it, which the simulator does not charge)."""

    def run(chunks_ahead: int) -> tuple[float, float]:
        config = replace(controlled(), controller=ControllerConfig(fallback=False, chunks_ahead=chunks_ahead))
        reports = [simulate(cpu_like(), config, PositionOutcomes(forced_trace(128, 0.99, 0.8), seed=s)).report for s in range(10)]
        return float(np.mean([r.discarded for r in reports])), float(np.mean([r.tokens_per_s for r in reports]))

    (discarded, rate), (discarded_deep, rate_deep) = run(2), run(8)
    assert discarded < 0.7 * discarded_deep
    assert rate >= 0.98 * rate_deep


def test_sampled_outcomes_are_drawn_once_per_position_from_the_trace():
    outcomes = PositionOutcomes(PositionTrace(np.array([0.9, 0.5]), np.array([1.0, 0.25])), seed=3)
    draws = [outcomes.passes(1) for _ in range(5)]
    assert len(set(draws)) == 1 and outcomes.passes(0) and outcomes.accepted(0, 1) == 1
    assert outcomes.confidence(7) == pytest.approx(0.7) and outcomes.chance(7) == pytest.approx(0.625)  # past the end: means
    passed = sum(PositionOutcomes(PositionTrace(np.ones(1), np.full(1, 0.25)), seed=s).passes(0) for s in range(2000))
    assert 400 < passed < 600


def test_the_controller_runs_only_picospecs_pipeline_and_needs_confidences():
    with pytest.raises(InvalidInputError):
        SimConfig(Method.SYNC, VerifyMode.EXACT, Policy(4, 8), 16, controller=ControllerConfig())
    with pytest.raises(InvalidInputError):
        simulate(cpu_like(), controlled(16), always(True))


def controlled_records(profile: CostProfile, prompts=("0", "1", "2")) -> tuple[list[RunRecord], dict]:
    """ar runs and runs made with the controller by the simulator, and their forced traces: one
    prompt the drafter knows, one it does not, one between."""
    records, forced = [], {}
    for prompt, (confidence, acceptance) in zip(prompts, ((0.99, 1.0), (0.3, 0.0), (0.95, 0.9))):
        forced[(f"humaneval:{prompt}", 0.0, "ar")] = trace = forced_trace(128, confidence, acceptance)
        for method in (Method.AR, Method.PICOSPEC):
            config = controlled() if method is Method.PICOSPEC else SimConfig(method, max_new_tokens=128)
            result = simulate(profile, config, PositionOutcomes(trace) if method is Method.PICOSPEC else None)
            records.append(result.to_record(key(method, prompt=prompt), ADAPTIVE))
    return records, forced


def test_predictions_of_simulated_controller_runs_have_no_error():
    records, forced = controlled_records(cpu_like())
    predictions = {p.method: p for p in predict_cells(records, forced=forced) if p.measured is not None}
    assert set(predictions) == {Method.AR, Method.PICOSPEC}
    assert all(abs(p.error) < 0.02 and abs(p.replay_error) < 0.02 for p in predictions.values())
    without = predict_cells(records)  # no forced traces: the controller's runs cannot be replayed
    assert {p.method for p in without if p.measured is not None} == {Method.AR}
    assert Method.PICOSPEC not in {p.method for p in without}


def test_costs_measured_from_controller_runs():
    truth = cpu_like()
    records, _ = controlled_records(truth)
    measured = measure_costs(records)
    assert measured.edge_prefill("humaneval:0") == pytest.approx(0.2)  # the "prompt" event, not the first draft
    assert measured.verify(5) == pytest.approx(truth.verify(5)) and measured.verify(2) == pytest.approx(truth.verify(2))


def test_evaluated_tokens_count_the_token_the_cloud_decoded_before_a_chunk():
    timeline = [{"kind": kind, "start": t, "end": t} for t, kind in enumerate(("decoded", "verdict", "verdict", "decoded", "decoded", "verdict", "verdict"))]
    record = RunRecord(key(Method.PICOSPEC), {}, accepted_lengths=[3, 1, 4, 2], chunk_lengths=[3, 4, 4, 2], timeline=timeline)
    assert evaluated_tokens(record) == [4, 4, 5, 2]  # decoded before rounds 1 and 3, a rejection before round 2


def test_simulate_command_replays_the_controllers_runs_with_traces(tmp_path, capsys):
    records, forced = controlled_records(cpu_like())
    results, traces = tmp_path / "bench.jsonl", tmp_path / "bench.traces.jsonl"
    results.write_text("".join(r.to_json() + "\n" for r in records))
    traces.write_text("".join(ForcedTrace(prompt, t, trace, text).to_json() + "\n" for (prompt, t, text), trace in forced.items()))
    assert main(["simulate", str(results), "--methods", "ar,picospec"]) == 0
    assert "picospec" not in capsys.readouterr().out  # no traces: the controller's runs are left out
    assert main(["simulate", str(results), "--methods", "ar,picospec", "--traces", str(traces)]) == 0
    assert "picospec/exact" in capsys.readouterr().out


def test_the_streaming_overhead_of_cloud_decoding_is_measured_and_simulated():
    truth = replace(cpu_like(), decode_overhead_s=0.006)
    records, forced = controlled_records(truth)
    measured = measure_costs(records)
    assert measured.decode_overhead_s == pytest.approx(0.006) and measured.target_s == pytest.approx(0.05)
    ar = simulate(truth, SimConfig(Method.AR, max_new_tokens=20)).report
    assert (ar.wall_s - ar.ttft_s) / 19 == pytest.approx(0.056)  # each streamed step: compute and overhead
    predictions = [p for p in predict_cells(records, forced=forced) if p.measured is not None]
    assert all(abs(p.error) < 0.02 for p in predictions)
