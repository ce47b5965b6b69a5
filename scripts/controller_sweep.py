"""Controller settings replayed by the simulator on a benchmark's runs: for each variant, the median
ratio of simulated picospec to simulated `ar` (tokens/s after the first token) per workload and
temperature, beside the measured ratio. A cheap first look before measuring a change for real:
the simulator reproduces the controller's switches but not the two sides slowing each other on
one machine (docs/design.md, "The simulator runs the same decisions").

    .venv/bin/python scripts/controller_sweep.py RESULTS.jsonl RESULTS.traces.jsonl

The traces come from `picospec bench ideal RESULTS.jsonl` (written beside the results).
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from picospec.bench.forced import load_traces
from picospec.bench.measure import measure_costs, window_costs
from picospec.bench.predict import run_config
from picospec.bench.results import MODELESS_VERIFY, RunRecord, load_records
from picospec.bench.simulator import PositionOutcomes, simulate
from picospec.edge.config import Method
from picospec.edge.controller import ControllerConfig
from picospec.edge.report import EdgeReport
from picospec.transport.netem import LinkProfile

VARIANTS = {
    "default": ControllerConfig(),
    "follow 8": ControllerConfig(follow_batch=8),
    "window 8": ControllerConfig(window=8),
    "follow 8, window 8": ControllerConfig(follow_batch=8, window=8),
    "judge over 16": ControllerConfig(judge_window=16),
    "no hysteresis": ControllerConfig(margin=0.0),
    "no fallback": ControllerConfig(fallback=False),
}


def after_first(report: EdgeReport) -> float:
    """Tokens per second after the first token."""
    return (report.new_tokens - 1) / (report.wall_s - report.ttft_s)


def summary_after_first(summary: dict) -> float:
    """after_first of a recorded run's summary."""
    return (summary["new_tokens"] - 1) / (summary["wall_s"] - summary["ttft_s"])


def measured_ratio(run: RunRecord, records: list[RunRecord]) -> float | None:
    """The run's ratio to the ar run paired with it (same prompt, temperature and repeat)."""
    pair = (run.key.prompt, run.key.temperature, run.key.repeat, run.key.profile)
    ar = [r for r in records if r.key.method is Method.AR and (r.key.prompt, r.key.temperature, r.key.repeat, r.key.profile) == pair]
    return summary_after_first(run.summary) / summary_after_first(ar[0].summary) if ar else None


def main(results: str, traces: str) -> None:
    records, forced = load_records(Path(results)), load_traces(Path(traces))
    windows, whole = window_costs(records), measure_costs(records)
    simulated: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    measured: dict[tuple, list[float]] = defaultdict(list)
    for run in records:
        trace = forced.get((run.key.prompt, run.key.temperature))
        if run.key.method is not Method.PICOSPEC or trace is None:
            continue
        group = (run.key.workload, run.key.temperature, run.key.profile, run.key.verify.value)
        costs = windows.get((run.key.profile, run.key.temperature), whole).with_link(LinkProfile(run.key.rtt_ms, run.key.bandwidth_mbps))
        ar = simulate(costs, run_config(run, Method.AR, MODELESS_VERIFY)).report
        if (ratio := measured_ratio(run, records)) is not None:
            measured[group].append(ratio)
        for name, controller in VARIANTS.items():
            config = replace(run_config(run, Method.PICOSPEC, run.key.verify), controller=controller)
            report = simulate(costs, config, PositionOutcomes(trace, run.key.repeat)).report
            simulated[group][name].append(after_first(report) / after_first(ar))
    for group, variants in sorted(simulated.items()):
        shown = f"{statistics.median(measured[group]):.3f}" if measured[group] else "-"
        print(f"{' '.join(map(str, group))}: measured {shown} ({len(measured[group])} pairs); simulated:")
        for name, ratios in variants.items():
            print(f"  {name:20s} {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
