"""Speed ratios against ar, paired run by run."""

import pytest

from picospec.bench.compare import compare, render
from picospec.bench.results import CellKey, RunRecord


def record(method: str, prompt: str, wall_s: float, ttft_s: float, decoded: int = 0, n: int = 101) -> RunRecord:
    key = CellKey("humaneval", prompt, method, "exact", "wan", 20.0, 100.0, 0.0, 0)
    summary = {"tokens_per_s": n / wall_s, "wall_s": wall_s, "ttft_s": ttft_s, "new_tokens": n, "decoded": decoded}
    return RunRecord(key, summary)


def test_ratios_pair_runs_of_the_same_prompt_and_take_medians():
    records = [
        record("ar", "a", wall_s=11.0, ttft_s=1.0),  # 10 tokens/s after the first token
        record("picospec", "a", wall_s=6.0, ttft_s=1.0, decoded=50),  # 20 tokens/s after it
        record("ar", "b", wall_s=21.0, ttft_s=1.0),  # 5 tokens/s
        record("picospec", "b", wall_s=11.0, ttft_s=1.0),  # 10 tokens/s
        record("picospec", "unpaired", wall_s=1.0, ttft_s=0.5),  # no ar run of this prompt: left out
    ]
    [row] = compare(records)
    assert row.variant == "picospec/exact" and row.pairs == 2
    assert row.after_first == pytest.approx(2.0) and row.ttft == pytest.approx(1.0)
    assert row.with_ttft == pytest.approx((11 / 6 + 21 / 11) / 2)
    assert row.decoded_share == pytest.approx(0.5 * 50 / 101)
    assert "| humaneval | wan | 0 | picospec/exact | 2 |" in render([row])


def test_the_interval_holds_the_median_and_widens_with_the_spread():
    def row(walls: list[float]):
        records = []
        for i, wall_s in enumerate(walls):  # ar at 10 tokens/s after the first token throughout
            records += [record("ar", str(i), wall_s=11.0, ttft_s=1.0), record("picospec", str(i), wall_s=wall_s, ttft_s=1.0)]
        [r] = compare(records)
        return r

    tight = row([10.0 / 1.1 + 1.0] * 8)  # every pair 1.1x: no doubt
    assert tight.after_first_interval == pytest.approx((1.1, 1.1))
    spread = row([10.0 / ratio + 1.0 for ratio in (0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.3)])
    low, high = spread.after_first_interval
    assert 0.8 <= low < spread.after_first < high <= 1.3
    assert spread.after_first_interval == row([10.0 / ratio + 1.0 for ratio in (0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.3)]).after_first_interval  # seeded
    assert f"| {low:.2f}-{high:.2f} |" in render([spread])


def test_comparing_a_missing_or_empty_results_file_is_an_error(tmp_path, capsys):
    from picospec.cli import main

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["bench", "compare", str(tmp_path / "absent.jsonl")]) == 2
    assert "no such results file" in capsys.readouterr().err
    assert main(["bench", "compare", str(empty)]) == 2
    assert "holds no runs" in capsys.readouterr().err
