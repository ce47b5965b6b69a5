"""The ideal of the adaptive policy (a confidence cut-off with fallback to cloud decoding) on
constructed traces with known optima, the teacher-forced traces it reads, and the per-cell table."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from picospec.bench.bound import PositionTrace, ar_rate, best_cut_policy, cut_policy_s
from picospec.bench.forced import ForcedTrace, collect_traces, forced_outputs, load_traces, output_logits, position_trace, trace_of
from picospec.bench.ideal import ideal_rows, render
from picospec.cli import main
from picospec.edge.config import Method
from picospec.errors import InvalidInputError
from picospec.runners.toy import ToyRunner
from picospec.sampling import SamplingParams
from picospec.transport.netem import LinkProfile
from picospec.verify import VerifyMode
from test_bench_model import costs, simulated_records

EXACT = VerifyMode.EXACT


def trace(confidence, acceptance) -> PositionTrace:
    return PositionTrace(np.array(confidence, dtype=float), np.array(acceptance, dtype=float))


def test_drafts_that_always_fail_are_not_speculated():
    profile = costs(target=0.05)
    never = trace(np.linspace(0.2, 1.0, 11), [0.0] * 11)
    policy = best_cut_policy(profile, EXACT, never)
    assert policy.threshold == float("inf")  # cloud decoding
    assert policy.steady_s == pytest.approx(10 * 0.05) and policy.rate(11) == pytest.approx(ar_rate(profile))


def test_drafts_that_always_pass_run_at_the_pipelines_slowest_stage_after_one_restart():
    # t_d 10 ms, V(m) = 20 ms + 1 ms/token, free link, 10 positions after the first. Chunk k runs at
    # tau(k) = max(t_d, V(k)/k, (k t_d + V(k))/32) and the first position waits t_d + V(min(k, 10)):
    # k = 3 gives 0.033 + 9 x 0.010 = 0.123 s, the least (k = 2: 0.032 + 9 x 0.011; k >= 4 restarts slower).
    profile = costs(draft=0.01, intercept=0.02, per_token=0.001, target=0.05)
    always = trace([1.0] * 11, [1.0] * 11)
    policy = best_cut_policy(profile, EXACT, always)
    assert (policy.threshold, policy.chunk_len) == (1.0, 3)
    assert policy.steady_s == pytest.approx(0.123)
    assert cut_policy_s(profile, EXACT, always, 1.0, 2, 32) == pytest.approx(0.032 + 9 * 0.011)


def test_the_cut_off_keeps_the_confident_runs_and_lets_the_cloud_decode_the_doubtful_ones():
    # Runs of 20 confident drafts that pass, then 5 doubtful ones that fail; a 200 ms round trip makes
    # each restart dear, so speculating the doubtful ones (a restart after each failure) loses, and
    # so does cloud decoding throughout (20 x 50 ms against one restart and 19 x 10 ms).
    profile = costs(draft=0.01, intercept=0.02, per_token=0.001, target=0.05, link=LinkProfile(200.0, 1e12))
    block_confidence, block_acceptance = [0.99] * 20 + [0.3] * 5, [1.0] * 20 + [0.0] * 5
    mixed = trace([0.5] + block_confidence * 4, [1.0] + block_acceptance * 4)
    policy = best_cut_policy(profile, EXACT, mixed)
    assert 0.3 < policy.threshold <= 0.99
    everything = min(cut_policy_s(profile, EXACT, mixed, 0.0, k, 32) for k in range(1, 17))
    assert policy.steady_s < everything and policy.steady_s < 100 * 0.05


def test_acceptance_probabilities_give_the_expected_time():
    profile = costs(draft=0.01, intercept=0.02, per_token=0.001, target=0.05, link=LinkProfile(100.0, 1e12))
    half = trace([1.0] * 3, [0.5] * 3)
    # position 1 starts cold (restart t_d + R + V(2)); position 2 runs warm with chance 1/2
    restart_2, restart_1 = 0.01 + 0.1 + profile.verify(2), 0.01 + 0.1 + profile.verify(1)
    tau = max(0.01, profile.verify(2) / 2, (2 * 0.01 + 0.1 + profile.verify(2)) / 32)
    assert cut_policy_s(profile, EXACT, half, 0.5, 2, 32) == pytest.approx(restart_2 + 0.5 * tau + 0.5 * restart_1)


def test_position_trace_under_greedy_and_sampled_decoding():
    draft = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.4, 0.35, 0.25]]))  # (3, V)
    greedy = position_trace(draft, [0, 1, 0], SamplingParams(0.0))
    np.testing.assert_allclose(greedy.confidence, [0.7, 0.8, 0.4])
    np.testing.assert_array_equal(greedy.acceptance, [1.0, 0.0, 1.0])
    target = np.log(np.array([[0.7, 0.2, 0.1], [0.8, 0.1, 0.1], [0.25, 0.35, 0.4]]))
    sampled = position_trace(draft, [0, 1, 0], SamplingParams(1.0), target)
    np.testing.assert_allclose(sampled.acceptance, [1.0, 0.3, 0.85])  # sum of min(p, q) per row
    # Gumbel mode: the shared noise picks one token for both; below min(p, q) where the rows differ.
    assert sampled.gumbel_acceptance[0] == pytest.approx(1.0)
    assert np.all(sampled.gumbel_acceptance[1:] < sampled.acceptance[1:] - 0.01)
    assert sampled.for_mode(VerifyMode.GUMBEL).acceptance is sampled.gumbel_acceptance
    assert sampled.for_mode(EXACT) is sampled and greedy.gumbel_acceptance is None and greedy.for_mode(VerifyMode.GUMBEL) is greedy
    with pytest.raises(InvalidInputError):
        position_trace(draft, [0, 1, 0], SamplingParams(1.0))
    with pytest.raises(InvalidInputError):
        position_trace(draft, [0, 1], SamplingParams(0.0))


def test_traces_are_forced_once_and_kept(tmp_path):
    profile = costs()
    records = simulated_records(profile, links=(LinkProfile(20.0, 100.0),), n=12)
    records += [replace(r, key=replace(r.key, temperature=1.0)) for r in records]
    records = [replace(r, token_ids=[i % 4 for i in r.token_ids]) for r in records]  # the toy's 4-token vocabulary
    prompt = [1, 2, 3]
    loads = []

    def load(seed: int):
        loads.append(seed)
        return ToyRunner.create(n_vocab=4, seed=seed)

    path = tmp_path / "traces.jsonl"
    params = lambda r: SamplingParams(r.key.temperature)  # noqa: E731
    traces = collect_traces(records, path, lambda: load(1), lambda: load(2), lambda runner, p: prompt, params)
    assert sorted(traces) == [("humaneval:0", t, "ar") for t in (0.0, 1.0)] + [("humaneval:1", t, "ar") for t in (0.0, 1.0)]
    assert loads == [1, 2]
    ar = next(r for r in records if r.key.method is Method.AR and r.key.temperature == 1.0)
    expected = position_trace(output_logits(load(1), prompt, ar.token_ids), ar.token_ids, SamplingParams(1.0),
                              output_logits(load(2), prompt, ar.token_ids))  # fmt: skip
    got = traces[(ar.key.prompt, 1.0, "ar")]
    np.testing.assert_allclose(got.acceptance, expected.acceptance, atol=1e-6)
    np.testing.assert_allclose(got.confidence, expected.confidence, atol=1e-6)
    np.testing.assert_allclose(got.gumbel_acceptance, expected.gumbel_acceptance, atol=1e-6)
    loads.clear()
    again = collect_traces(records, path, lambda: load(1), lambda: load(2), lambda runner, p: prompt, params)
    assert loads == [] and sorted(again) == sorted(traces) == sorted(load_traces(path))
    # A sampled trace kept before gumbel mode had its own acceptance is forced again.
    old = [line for line in path.read_text().splitlines() if '"temperature": 1.0' not in line]
    old += [ForcedTrace(key[0], 1.0, replace(t, gumbel_acceptance=None)).to_json() for key, t in traces.items() if key[1] == 1.0]
    path.write_text("\n".join(old) + "\n")
    renewed = collect_traces(records, path, lambda: load(1), lambda: load(2), lambda runner, p: prompt, params)
    assert loads == [1, 2] and renewed[(ar.key.prompt, 1.0, "ar")].gumbel_acceptance is not None


def test_the_table_compares_each_run_with_the_ideal_at_its_cells_costs():
    profile = costs()
    records = simulated_records(profile, links=(LinkProfile(20.0, 100.0),), n=12)
    never = {(r.key.prompt, 0.0, "ar"): trace([0.9] * 12, [0.0] * 12) for r in records}
    rows = ideal_rows(records, never)
    assert [(r.workload, r.profile, r.variant, r.runs) for r in rows] == [("humaneval", "20/100", "picospec/exact", 2)]
    (row,) = rows
    assert row.threshold == float("inf") and row.ideal_vs_ar == pytest.approx(1.0) and row.speculated == 0.0
    assert row.ideal == pytest.approx(1 / 0.05, rel=0.01)  # the measured decode step
    assert row.efficiency == pytest.approx(row.measured / row.ideal, rel=0.05)
    assert "| never |" in render(rows)


def test_the_table_says_how_much_of_cloud_decodings_ideal_ar_itself_reaches():
    profile = costs()
    records = simulated_records(profile, links=(LinkProfile(20.0, 100.0),), n=12)
    never = {(r.key.prompt, 0.0, "ar"): trace([0.9] * 12, [0.0] * 12) for r in records}
    (exact,) = ideal_rows(records, never)
    assert exact.ar_efficiency == pytest.approx(1.0, rel=0.05)  # the simulated cloud has no overhead
    # ar's runs 25% slower after the first token than their decode steps say: 0.8 of its ideal.
    slow = [replace(r, summary={**r.summary, "wall_s": r.summary["ttft_s"] + 1.25 * (r.summary["wall_s"] - r.summary["ttft_s"])})
            if r.key.method is Method.AR else r for r in records]  # fmt: skip
    (row,) = ideal_rows(slow, never)
    assert row.ar_efficiency == pytest.approx(0.8 * exact.ar_efficiency, rel=0.01)
    assert "| ar / its ideal |" in render([row]) and render([row]).endswith(f"| {row.ar_efficiency:.2f} |")
    (alone,) = ideal_rows([r for r in records if r.key.method is not Method.AR], never)
    assert np.isnan(alone.ar_efficiency)


def test_the_ideal_command_reads_kept_traces_without_loading_a_model(tmp_path, capsys):
    records = simulated_records(costs(), links=(LinkProfile(20.0, 100.0),), n=12)
    results, traces = tmp_path / "bench.jsonl", tmp_path / "bench.traces.jsonl"
    results.write_text("".join(r.to_json() + "\n" for r in records))
    kept = [ForcedTrace(prompt, 0.0, trace([0.9] * 12, [0.0] * 12)) for prompt in ("humaneval:0", "humaneval:1")]
    traces.write_text("".join(t.to_json() + "\n" for t in kept))
    assert main(["bench", "ideal", str(results)]) == 0  # the traces beside the results, as named by default
    out = capsys.readouterr().out
    assert "| humaneval | 20/100 | 0 | picospec/exact | 2 |" in out and "| never |" in out
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["bench", "ideal", str(empty)]) != 0
    assert "holds no runs" in capsys.readouterr().err


def test_gumbel_runs_are_held_to_gumbel_modes_own_acceptance():
    profile = costs()
    records = simulated_records(profile, links=(LinkProfile(20.0, 100.0),), n=12)
    records += [replace(r, key=replace(r.key, verify=VerifyMode.GUMBEL)) for r in records if r.key.method is Method.PICOSPEC]
    # Every draft passes rejection sampling; the two Gumbel-argmaxes never agree.
    split = {(r.key.prompt, 0.0, "ar"): PositionTrace(np.full(12, 0.99), np.ones(12), np.zeros(12)) for r in records}
    rows = {r.variant: r for r in ideal_rows(records, split)}
    assert rows["picospec/exact"].speculated == 1.0 and rows["picospec/exact"].ideal_vs_ar > 1.0
    assert rows["picospec/gumbel"].threshold == float("inf") and rows["picospec/gumbel"].ideal_vs_ar == pytest.approx(1.0)


def test_gumbel_sessions_are_forced_along_their_own_text_when_sampling():
    records = simulated_records(costs(), links=(LinkProfile(20.0, 100.0),), n=12)
    records += [replace(r, key=replace(r.key, temperature=1.0)) for r in records]
    gumbel = [replace(r, key=replace(r.key, verify=VerifyMode.GUMBEL), token_ids=[3] * 12) for r in records if r.key.method is Method.PICOSPEC]
    outputs = forced_outputs(records + gumbel)
    sampled_gumbel = [r for r in gumbel if r.key.temperature == 1.0]
    assert outputs[(sampled_gumbel[0].key.prompt, 1.0, "gumbel")].token_ids == [3] * 12
    assert not any(text == "gumbel" for _, t, text in outputs if t == 0.0)  # greedy: one text for all
    ar_text, own_text = trace([0.9] * 12, [1.0] * 12), trace([0.9] * 12, [0.0] * 12)
    prompt = sampled_gumbel[0].key.prompt
    forced = {(prompt, 1.0, "ar"): ar_text, (prompt, 1.0, "gumbel"): own_text}
    assert trace_of(forced, sampled_gumbel[0]) is own_text
    assert trace_of(forced, sampled_gumbel[0], EXACT) is ar_text
    assert trace_of({(prompt, 1.0, "ar"): ar_text}, sampled_gumbel[0]) is ar_text  # kept before gumbel had its own
