"""Per-cell statistics of benchmark runs: what the CSV, the JSON summary and the report show.

A cell is a CellKey without prompt and repeat. Each metric is computed per run, then summarised
over the cell's runs as median, min and max (few runs per cell: the extremes say more than
quartiles would). A metric that does not apply to a method (acceptance for ar, say) is None.
"""

from __future__ import annotations

import csv
import json
import statistics
from enum import Enum
from pathlib import Path

from picospec.bench.results import CellKey, RunRecord
from picospec.edge.config import Method
from picospec.verify import VerifyMode

CELL_FIELDS = ("workload", "method", "verify", "profile", "rtt_ms", "bandwidth_mbps", "temperature")
METRICS = (
    "tokens_per_s",
    "ttft_s",
    "new_tokens",
    "mean_accepted",  # accepted draft tokens per round
    "acceptance_rate",  # accepted / drafted tokens (drafts thrown away after rejections count)
    "bytes_up_per_token",
    "bytes_down_per_token",
    "cloud_passes_per_token",
    "edge_busy_fraction",  # edge busy seconds / wall seconds
    "cloud_busy_fraction",
    "discarded_per_token",  # drafted tokens thrown away per output token
    "topk_tail_mass_mean",  # topk: mean target mass outside the K entries sent, per rejection
)
METHOD_ORDER = list(Method)
VERIFY_ORDER = list(VerifyMode)


def run_metrics(record: RunRecord) -> dict[str, float | None]:
    """The per-run value of every metric in METRICS."""
    s = record.summary
    tokens, wall = max(1, s["new_tokens"]), s["wall_s"]
    return {
        "tokens_per_s": s["tokens_per_s"],
        "ttft_s": s["ttft_s"],
        "new_tokens": s["new_tokens"],
        "mean_accepted": s["mean_accepted"] if record.accepted_lengths else None,
        "acceptance_rate": sum(record.accepted_lengths) / s["drafted"] if s["drafted"] else None,
        "bytes_up_per_token": s["bytes_up"] / tokens,
        "bytes_down_per_token": s["bytes_down"] / tokens,
        "cloud_passes_per_token": s["cloud_passes"] / tokens,
        "edge_busy_fraction": s["edge_busy_s"] / wall if wall > 0 else None,
        "cloud_busy_fraction": s["cloud_busy_s"] / wall if wall > 0 else None,
        "discarded_per_token": s["discarded"] / tokens,
        "topk_tail_mass_mean": statistics.fmean(record.topk_tail_mass) if record.topk_tail_mass else None,
    }


def _spread(values: list[float | None]) -> dict[str, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(present), "min": min(present), "max": max(present)}


def repeat_spread(runs: list[RunRecord]) -> float | None:
    """Run-to-run noise of a cell: per prompt, (max - min) / median of its repeats' tokens/s;
    the median over the prompts run more than once (None if none was). Unlike the cell's min and
    max, which span prompts of different lengths, this is what repeating the same run varies by."""
    by_prompt: dict[str, list[float]] = {}
    for run in runs:
        by_prompt.setdefault(run.key.prompt_id, []).append(run.summary["tokens_per_s"])
    spreads = [(max(v) - min(v)) / statistics.median(v) for v in by_prompt.values() if len(v) > 1]
    return statistics.median(spreads) if spreads else None


def _cell_order(key: CellKey) -> tuple:
    """Workload, temperature, slower links last, then methods in Method's order."""
    return (key.workload, key.temperature, key.rtt_ms, -key.bandwidth_mbps, key.profile,
            METHOD_ORDER.index(key.method), VERIFY_ORDER.index(key.verify))  # fmt: skip


def aggregate(records: list[RunRecord]) -> list[dict]:
    """One row per cell: the cell's fields, runs and prompts counted, `<metric>_median|_min|_max`
    for each metric, tokens_per_s_repeat_spread (see repeat_spread), and speedup_vs_ar (median
    tokens/s over ar's in the same workload, profile and temperature; None where there is no ar
    cell)."""
    cells: dict[tuple, list[RunRecord]] = {}
    for record in records:
        cells.setdefault(record.key.cell(), []).append(record)
    rows = []
    for runs in sorted(cells.values(), key=lambda runs: _cell_order(runs[0].key)):
        row = {name: getattr(runs[0].key, name) for name in CELL_FIELDS}
        row.update(runs=len(runs), prompts=len({r.key.prompt_id for r in runs}))
        per_run = [run_metrics(r) for r in runs]
        for metric in METRICS:
            for stat, value in _spread([m[metric] for m in per_run]).items():
                row[f"{metric}_{stat}"] = value
        row["tokens_per_s_repeat_spread"] = repeat_spread(runs)
        rows.append(row)
    _add_speedups(rows)
    return rows


def _add_speedups(rows: list[dict]) -> None:
    def context(row: dict) -> tuple:
        return row["workload"], row["profile"], row["temperature"]

    ar_speed = {context(r): r["tokens_per_s_median"] for r in rows if r["method"] is Method.AR}
    for row in rows:
        baseline = ar_speed.get(context(row))
        row["speedup_vs_ar"] = row["tokens_per_s_median"] / baseline if baseline else None


def write_aggregates(rows: list[dict], csv_path: Path, json_path: Path) -> None:
    """The rows as CSV (floats to 6 significant digits, None as empty) and as JSON."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(CELL_FIELDS))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
    json_path.write_text(json.dumps(rows, indent=1) + "\n")


def _csv_value(value: object) -> object:
    """Floats to 6 significant digits, None as empty, enums as their values."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, Enum):
        return value.value
    return "" if value is None else value
