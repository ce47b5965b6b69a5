"""Side-by-side speed ratios against a baseline method: each run is paired with the baseline's run
of the same prompt, profile, temperature and repeat (made minutes apart by the same cloud), and
the ratios' medians are taken per cell. Analysis returns rows; `render` makes the markdown.

Three ratios per pair: tokens/s including the time to first token, tokens/s after the first token
(the decoding the user watches), and time to first token.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

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
        RatioRow(*cell, len(ratios), *(statistics.median(column) for column in zip(*ratios)))
        for cell, ratios in sorted(cells.items())
    ]


def _pair_key(record: RunRecord) -> tuple:
    k = record.key
    return (k.workload, k.prompt_id, k.profile, k.temperature, k.repeat)


def render(rows: list[RatioRow], baseline: str = "ar") -> str:
    """A markdown table of the rows."""
    lines = [
        f"| workload | profile | T | variant | pairs | vs {baseline}, incl. TTFT | vs {baseline}, after 1st token | TTFT ratio | decoded by the cloud |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.workload} | {r.profile} | {r.temperature:g} | {r.variant} | {r.pairs} | {r.with_ttft:.2f}x | "
                     f"{r.after_first:.2f}x | {r.ttft:.2f} | {r.decoded_share:.0%} |")  # fmt: skip
    return "\n".join(lines)
