"""Measured against the ideal of the adaptive policy: per cell, picospec's tokens/s after the first
token beside what the best confidence cut-off with fallback to cloud decoding would reach on the
same prompts (bound.best_cut_policy on the teacher-forced traces of forced.py), with the costs the
benchmark measured in that cell's window (measure.window_costs). Beside it, how much of cloud
decoding's ideal `ar`'s own runs reach there: the bound's costs are the model's passes alone.
`render` makes the markdown.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

from picospec.bench.bound import PositionTrace, ar_rate, best_cut_policy
from picospec.bench.compare import after_first_token_rate
from picospec.bench.costs import CostProfile
from picospec.bench.forced import TraceKey, trace_of
from picospec.bench.measure import measure_costs, window_costs
from picospec.bench.results import RunRecord
from picospec.edge.config import Method
from picospec.errors import InvalidInputError
from picospec.transport.netem import LinkProfile


@dataclass(frozen=True)
class IdealRow:
    """One cell's medians over its picospec runs (tokens/s after the first token)."""

    workload: str
    profile: str
    temperature: float
    variant: str  # method/verify
    runs: int
    measured: float
    ideal: float
    efficiency: float  # measured / ideal, per run
    ideal_vs_ar: float  # the ideal policy over cloud decoding at the same costs
    threshold: float  # the best cut-off (inf: cloud decoding throughout)
    chunk_len: float
    speculated: float  # share of positions at or above the cut-off
    # ar's own runs in the cell over cloud decoding's ideal at the same costs (NaN: none): the
    # share of the ideal that the cloud alone reaches; the ideal leaves out the per-token work
    # outside the model's pass (sampling, streaming) that both methods pay.
    ar_efficiency: float = float("nan")


def ideal_rows(
    records: Sequence[RunRecord], traces: Mapping[TraceKey, PositionTrace], max_chunk: int = 16, lookahead: int = 32
) -> list[IdealRow]:
    """A row per cell of picospec runs whose (prompt, temperature) has a trace."""
    costs = _window_costs(records)
    ar_efficiency = _ar_efficiency(records, costs)
    cells: dict[tuple, list[tuple[float, ...]]] = {}
    for r in records:
        trace = trace_of(traces, r)
        if r.key.method is not Method.PICOSPEC or trace is None or len(trace.confidence) < 2:
            continue
        sized = costs[r.key.profile, r.key.temperature]
        policy = best_cut_policy(sized, r.key.verify, trace, max_chunk, lookahead)
        ideal = policy.rate(len(trace.confidence))
        measured = after_first_token_rate(r)
        cell = (r.key.workload, r.key.profile, r.key.temperature, f"{r.key.method.value}/{r.key.verify.value}")
        cells.setdefault(cell, []).append((
            measured, ideal, measured / ideal, ideal * (1 / ar_rate(sized)), policy.threshold, policy.chunk_len,
            float((trace.confidence[1:] >= policy.threshold).mean()),
        ))  # fmt: skip
    return [
        IdealRow(*cell, len(values), *(statistics.median(column) for column in zip(*values)),
                 ar_efficiency=ar_efficiency.get(cell[:3], float("nan")))
        for cell, values in sorted(cells.items())
    ]  # fmt: skip


def _ar_efficiency(records: Sequence[RunRecord], costs: Mapping[tuple[str, float], CostProfile]) -> dict[tuple, float]:
    """Per (workload, profile, temperature): the median of ar's tokens/s after the first token over
    cloud decoding's ideal rate (bound.ar_rate) at the cell's costs."""
    ratios: dict[tuple, list[float]] = {}
    for r in records:
        if r.key.method is Method.AR and (r.key.profile, r.key.temperature) in costs:
            ideal = ar_rate(costs[r.key.profile, r.key.temperature])
            ratios.setdefault((r.key.workload, r.key.profile, r.key.temperature), []).append(after_first_token_rate(r) / ideal)
    return {cell: statistics.median(values) for cell, values in ratios.items()}


def _window_costs(records: Sequence[RunRecord]) -> dict[tuple[str, float], CostProfile]:
    """Each window's measured costs; a window without drafting of its own (the controller let the
    cloud decode everything) borrows the drafting and verification costs of all the runs."""
    try:
        overall = measure_costs(records)
    except InvalidInputError:
        raise InvalidInputError("the results hold no speculative runs that drafted: nothing to measure costs from") from None
    windows = {}
    for r in records:
        key = (r.key.profile, r.key.temperature)
        if key in windows or r.key.bandwidth_mbps <= 0:
            continue
        link = LinkProfile(r.key.rtt_ms, r.key.bandwidth_mbps)
        try:
            windows[key] = window_costs([x for x in records if (x.key.profile, x.key.temperature) == key])[key]
        except InvalidInputError:
            windows[key] = replace(overall, link=link)
    return windows


def render(rows: Sequence[IdealRow]) -> str:
    """A markdown table of the rows."""
    lines = [
        "| workload | profile | T | variant | runs | measured tok/s | ideal tok/s | measured / ideal | ideal / cloud decoding | "
        "cut-off | chunk | speculated | ar / its ideal |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cut = "never" if r.threshold == float("inf") else f"{r.threshold:.2f}"
        lines.append(f"| {r.workload} | {r.profile} | {r.temperature:g} | {r.variant} | {r.runs} | {r.measured:.2f} | "
                     f"{r.ideal:.2f} | {r.efficiency:.2f} | {r.ideal_vs_ar:.2f}x | {cut} | {r.chunk_len:g} | "
                     f"{r.speculated:.0%} | {r.ar_efficiency:.2f} |")  # fmt: skip
    return "\n".join(lines)
