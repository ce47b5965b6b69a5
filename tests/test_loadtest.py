"""The load test: its figures from known samples, replayed drafts, and a short run against toy clouds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from picospec.bench.loadtest import LoadtestConfig, SessionSample, run_load, summarize
from picospec.cli import build_parser
from picospec.decoding import generate_autoregressive
from picospec.edge.client import generate
from picospec.edge.config import EdgeConfig, Method
from picospec.errors import InvalidInputError, PicoSpecError
from picospec.runners.replay import ReplayRunner, record_drafts
from picospec.runners.toy import ToyRunner
from picospec.sampling import SamplingParams
from picospec.verify import VerifyConfig
from clouds import BATCHING, cloud_thread

V, SEED = 7, 5
PROMPTS = [[1, 2], [3], [4, 0, 6]]
GREEDY = EdgeConfig(params=SamplingParams(temperature=0), verify=VerifyConfig(mode="exact"), max_new_tokens=20)


def target() -> ToyRunner:
    return ToyRunner.create(V, seed=SEED)


def drafter() -> ToyRunner:
    return target().drafter(seed=2, noise=0.6)


def greedy_continuation(prompt: list[int], n: int) -> list[int]:
    return generate_autoregressive(target(), prompt, GREEDY.params, GREEDY.verify, np.random.default_rng(0), n).token_ids


def test_figures_from_known_samples():
    one = SessionSample(started=0.0, arrivals=[(1.0, 1), (2.0, 2), (2.5, 1)], ttft_s=1.0, wall_s=2.5)
    two = SessionSample(started=0.0, arrivals=[(3.0, 1), (5.0, 1)], ttft_s=3.0, wall_s=6.0)
    failed = SessionSample(started=4.0, arrivals=[(4.5, 1)], error="CloudError: gone")
    warmup = SessionSample(started=-2.0, arrivals=[(-1.0, 1), (0.5, 3)], ttft_s=1.0, wall_s=2.6)  # before the window
    one.decoded, one.chunk_tokens, one.chunks, one.accepted = 1, 4, 2, 3
    two.chunk_tokens, two.chunks, two.accepted = 2, 1, 1
    stats = (
        {"passes": 10, "tokens": 40, "busy_s": 1.0, "most_sequences": 1, "longest_wait_s": 0.1, "rss_bytes": 100 * 2**20},
        {"passes": 12, "tokens": 50, "busy_s": 2.0, "most_sequences": 2, "longest_wait_s": 0.2, "rss_bytes": 104 * 2**20},
        {"passes": 14, "tokens": 60, "busy_s": 3.0, "most_sequences": 2, "longest_wait_s": 0.3, "rss_bytes": 102 * 2**20,
         "heap_bytes": {"in_use": 3 * 2**20, "free_held": 2**19}},
    )
    result = summarize([one, two, failed, warmup], (0.0, 4.0), stats)
    # 4 + 1 tokens of sessions in the window arrived by t=4 (not 5.0; 4.5 is in), and 3 of the warm-up's.
    assert result["aggregate_tokens_per_s"] == pytest.approx(8 / 4)
    assert (result["sessions"], result["errors"], result["first_errors"]) == (3, 1, ["CloudError: gone"])
    # Gaps after the first token: 0.5, 0.5 (two tokens after 1 s), 0.5, then 2.0.
    assert result["time_per_token_s"]["p50"] == pytest.approx(0.5)
    assert result["session_tokens_per_s"]["p50"] == pytest.approx((4 / 2.5 + 2 / 6) / 2)
    assert result["ttft_s"]["p50"] == pytest.approx(2.0)
    assert result["cloud"] == {"busy_fraction": 0.5, "passes": 4, "tokens_per_pass": 5.0,
                               "most_sequences_per_pass": 2, "longest_wait_s": 0.3,
                               "rss_mib": {"start": 100.0, "max": 104.0, "end": 102.0, "samples": [100.0, 104.0, 102.0]},
                               "rss_growth": pytest.approx(0.04),
                               "heap_mib": {"in_use": [3.0], "free_held": [0.5]}}  # fmt: skip
    # The warm-up's sample ended before the window and does not count; `one` and `two` did.
    assert result["edges"] == {"cloud_decoded_share": pytest.approx(1 / 6), "draft_tokens_sent": 6, "mean_chunk": 2.0,
                               "draft_acceptance": pytest.approx(4 / 6)}  # fmt: skip
    empty = summarize([], (0.0, 1.0), None)
    assert empty["aggregate_tokens_per_s"] == 0 and empty["time_per_token_s"]["p50"] is None and "cloud" not in empty


def test_replayed_drafts_give_the_target_greedy_output_and_mostly_pass():
    prompt = PROMPTS[0]
    continuation = greedy_continuation(prompt, 20)
    recording = record_drafts(drafter(), prompt, continuation)
    assert recording.top_ids.shape == (21, V) and recording.step_s >= 0
    replay = ReplayRunner(recording, target().vocab_info())
    # On the path, the replay answers as the drafter does; off it, with a flat row.
    np.testing.assert_array_equal(replay.prefill(prompt), drafter().prefill(prompt))
    assert not replay.extend([(continuation[0] + 1) % V])[0].any()
    replay.rollback(len(prompt))
    np.testing.assert_array_equal(replay.extend(continuation[:3]), drafter().extend(prompt + continuation[:3])[-3:])
    with cloud_thread(target) as cloud:
        fixed = dataclasses.replace(GREEDY, controller=None)  # the toy cloud decodes faster than any edge speculates
        report = generate(f"127.0.0.1:{cloud.port}", ReplayRunner(recording, target().vocab_info()), prompt, fixed)
    assert report.token_ids == continuation
    # Greedy: a replayed draft passes wherever the drafter agrees with the target, however chunks were cut.
    assert sum(report.accepted_lengths) >= len(continuation) // 2


@pytest.mark.parametrize("batching", BATCHING.values(), ids=BATCHING.keys())
def test_a_short_load_runs_without_errors_and_reports_the_cloud(batching):
    recordings = [record_drafts(drafter(), p, greedy_continuation(p, 20)) for p in PROMPTS]
    vocab = target().vocab_info()
    config = LoadtestConfig(edges=3, duration_s=1.0, warmup_s=0.2, n_prompts=len(PROMPTS))
    with cloud_thread(target, batching=batching) as cloud:
        result = run_load(f"127.0.0.1:{cloud.port}", lambda edge, prompt: ReplayRunner(recordings[prompt], vocab),
                          PROMPTS, GREEDY, config, cloud.server.stats)  # fmt: skip
    assert result["errors"] == 0 and result["sessions"] >= 3
    assert result["aggregate_tokens_per_s"] > 0 and result["time_per_token_s"]["p99"] is not None
    assert 0 < result["cloud"]["busy_fraction"] <= 1 and result["cloud"]["passes"] > 0
    assert result["cloud"]["rss_mib"]["start"] > 0 and result["cloud"]["rss_growth"] >= 0
    heap = result["cloud"]["heap_mib"]  # this machine's C library is glibc: the heap is read at each sample
    assert len(heap["in_use"]) == len(result["cloud"]["rss_mib"]["samples"]) and min(heap["in_use"]) > 0
    if not batching:
        assert result["cloud"]["most_sequences_per_pass"] == 1


def test_a_cloud_that_gives_no_counters_costs_the_cloud_figures_not_the_load_test():
    recordings = [record_drafts(drafter(), p, greedy_continuation(p, 20)) for p in PROMPTS]
    vocab = target().vocab_info()

    def silent() -> dict:
        raise PicoSpecError("the cloud process gave no stats within 30 s")

    config = LoadtestConfig(edges=2, duration_s=0.5, warmup_s=0.1, n_prompts=len(PROMPTS))
    with cloud_thread(target) as cloud:
        result = run_load(f"127.0.0.1:{cloud.port}", lambda edge, prompt: ReplayRunner(recordings[prompt], vocab),
                          PROMPTS, GREEDY, config, silent)  # fmt: skip
    assert result["errors"] == 0 and result["aggregate_tokens_per_s"] > 0 and "cloud" not in result


def test_loadtest_command_options():
    args = build_parser().parse_args(["loadtest", "--edges", "8", "--duration", "30", "--json", "--cloud", "h:1"])
    assert (args.edges, args.duration, args.edge_mode, args.json, args.cloud) == (8, 30.0, "replay", True, "h:1")
    defaults = build_parser().parse_args(["loadtest"])
    assert (defaults.edges, defaults.duration) == (LoadtestConfig.edges, LoadtestConfig.duration_s)
    assert Method(defaults.method) is Method.PICOSPEC
    with pytest.raises(InvalidInputError):
        LoadtestConfig(edge_mode="simulated")
    assert build_parser().parse_args(["loadtest", "--clouds", "batched"]).clouds == "batched"
    with pytest.raises(InvalidInputError):
        LoadtestConfig(clouds="both-and-more")
