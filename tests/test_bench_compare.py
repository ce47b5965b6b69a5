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
