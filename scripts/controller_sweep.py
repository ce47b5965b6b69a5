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

from picospec.bench.compare import after_first_token_rate, compare
from picospec.bench.forced import load_traces, trace_of
from picospec.bench.measure import measure_costs, window_costs
from picospec.bench.predict import run_config
from picospec.bench.results import MODELESS_VERIFY, load_records
from picospec.bench.simulator import PositionOutcomes, simulate
from picospec.edge.config import Method
from picospec.edge.controller import ControllerConfig
from picospec.transport.netem import LinkProfile

VARIANTS = {
    "default": ControllerConfig(),
    "follow 8": ControllerConfig(follow_batch=8),
    "window 8": ControllerConfig(window=8),
    "follow 8, window 8": ControllerConfig(follow_batch=8, window=8),
    "judge over 16": ControllerConfig(judge_window=16),
    "no hysteresis": ControllerConfig(margin=0.0),
    "no fallback": ControllerConfig(fallback=False),
    "no confidence cut-off": ControllerConfig(confidence=False),
    "chunks of at most 8": ControllerConfig(max_chunk=8),
    "chunks of at most 24": ControllerConfig(max_chunk=24, max_lookahead=48),
    "1 chunk ahead": ControllerConfig(chunks_ahead=1),
    "3 chunks ahead": ControllerConfig(chunks_ahead=3),
    "follow 2": ControllerConfig(follow_batch=2),
}


def main(results: str, traces: str) -> None:
    records, forced = load_records(Path(results)), load_traces(Path(traces))
    windows, whole = window_costs(records), measure_costs(records)
    measured = {(r.workload, r.temperature, r.profile, r.variant): r for r in compare(records)}
    simulated: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in records:
        trace = trace_of(forced, run)
        if run.key.method is not Method.PICOSPEC or trace is None:
            continue
        group = (run.key.workload, run.key.temperature, run.key.profile, f"picospec/{run.key.verify.value}")
        costs = windows.get((run.key.profile, run.key.temperature), whole).with_link(LinkProfile(run.key.rtt_ms, run.key.bandwidth_mbps))
        ar = after_first_token_rate(simulate(costs, run_config(run, Method.AR, MODELESS_VERIFY)).to_record(run.key))
        for name, controller in VARIANTS.items():
            config = replace(run_config(run, Method.PICOSPEC, run.key.verify), controller=controller)
            result = simulate(costs, config, PositionOutcomes(trace, run.key.repeat))
            simulated[group][name].append(after_first_token_rate(result.to_record(run.key)) / ar)
    for group, variants in sorted(simulated.items()):
        row = measured.get(group)
        shown = f"{row.after_first:.3f} ({row.pairs} pairs)" if row else "-"
        print(f"{' '.join(map(str, group))}: measured {shown}; simulated:")
        for name, ratios in variants.items():
            print(f"  {name:20s} {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
