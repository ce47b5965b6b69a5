"""Side-by-side speed ratios against a baseline method: each run is paired with the baseline's run
of the same prompt, profile, temperature and repeat (made minutes apart by the same cloud), and
the ratios' medians are taken per cell. Analysis returns rows; `render` makes the markdown.

Three ratios per pair: tokens/s including the time to first token, tokens/s after the first token
(the decoding the user watches), and time to first token. Beside the median after the first token,
a bootstrap interval of it: on these machines one pair's ratio varies by 10% and more where both
runs did the same work, and a cell of 8 pairs resolves differences of a few percent only if its
interval says so.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

from picospec.bench.results import RunRecord


@dataclass(frozen=True)
class RatioRow:
    """The median ratios of one cell (workload, profile, temperature, method/verify) to the baseline."""

    workload: str
    profile: str
    temperature: float
    variant: str  # method/verify
    pairs: int
    with_ttft: float
    after_first: float
    ttft: float
    decoded_share: float  # tokens the cloud decoded itself (fallback and first token), of all
    after_first_interval: tuple[float, float]  # 90% bootstrap interval of after_first


INTERVAL = (5.0, 95.0)  # percentiles of the bootstrap interval
RESAMPLES = 2000


def median_interval(ratios: list[float], seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval (INTERVAL) of the median of `ratios`, resampled with a fixed
    seed so that a table is the same each time it is made."""
    values = np.asarray(ratios, dtype=float)  # (n,)
    picks = np.random.default_rng(seed).integers(0, values.size, size=(RESAMPLES, values.size))  # (R, n)
    low, high = np.percentile(np.median(values[picks], axis=1), INTERVAL)
    return float(low), float(high)


def after_first_token_rate(record: RunRecord) -> float:
    """Tokens per second after the first token."""
    summary = record.summary
    decoding_s = summary["wall_s"] - (summary["ttft_s"] or 0.0)
    return (summary["new_tokens"] - 1) / decoding_s if decoding_s > 0 and summary["new_tokens"] > 1 else 0.0


def compare(records: list[RunRecord], baseline: str = "ar") -> list[RatioRow]:
    """Median ratios of every non-baseline variant to the baseline, per cell."""
    base = {_pair_key(r): r for r in records if r.key.method == baseline}
    cells: dict[tuple, list[tuple[float, float, float, float]]] = {}
    for record in records:
        other = base.get(_pair_key(record))
        if record.key.method == baseline or other is None:
            continue
        s, b = record.summary, other.summary
        variant = f"{record.key.method.value}/{record.key.verify.value}"
        cell = (record.key.workload, record.key.profile, record.key.temperature, variant)
        cells.setdefault(cell, []).append((
            s["tokens_per_s"] / b["tokens_per_s"],
            after_first_token_rate(record) / after_first_token_rate(other),
            s["ttft_s"] / b["ttft_s"],
            s.get("decoded", 0) / max(1, s["new_tokens"]),
        ))  # fmt: skip
    return [
        RatioRow(
            *cell, len(ratios), *(statistics.median(column) for column in zip(*ratios)),
            median_interval([after_first for _, after_first, _, _ in ratios]),
        )
        for cell, ratios in sorted(cells.items())
    ]  # fmt: skip


def _pair_key(record: RunRecord) -> tuple:
    k = record.key
    return (k.workload, k.prompt_id, k.profile, k.temperature, k.repeat)


def render(rows: list[RatioRow], baseline: str = "ar") -> str:
    """A markdown table of the rows."""
    lines = [
        f"| workload | profile | T | variant | pairs | vs {baseline}, incl. TTFT | vs {baseline}, after 1st token | "
        "90% interval | TTFT ratio | decoded by the cloud |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = r.after_first_interval
        lines.append(f"| {r.workload} | {r.profile} | {r.temperature:g} | {r.variant} | {r.pairs} | {r.with_ttft:.2f}x | "
                     f"{r.after_first:.2f}x | {low:.2f}-{high:.2f} | {r.ttft:.2f} | {r.decoded_share:.0%} |")  # fmt: skip
    return "\n".join(lines)
