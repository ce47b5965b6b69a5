"""Controller settings replayed by the simulator on a benchmark's runs: for each variant, the median
ratio of simulated picospec to simulated `ar` (tokens/s after the first token) per workload and
temperature, beside the measured ratio. A cheap first look before measuring a change for real:
the simulator reproduces the controller's switches but not the two sides slowing each other on
one machine (docs/design.md, "The simulator runs the same decisions").

    .venv/bin/python scripts/controller_sweep.py RESULTS.jsonl RESULTS.traces.jsonl [--variants "default,window 23"] [--seeds 5] [--per-prompt]

The traces come from `picospec bench ideal RESULTS.jsonl` (written beside the results).
"""

from __future__ import annotations

import argparse
import statistics
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
    "session 30": ControllerConfig(window=15, estimate_weight=0.0, prior_bias=1.0),
    "window 8 unweighed": ControllerConfig(estimate_weight=0.0, prior_bias=1.0),
    "no estimate weight": ControllerConfig(estimate_weight=0.0),
    "estimate weight 16": ControllerConfig(estimate_weight=16.0),
    "bias 1": ControllerConfig(prior_bias=1.0),
    "bias 0.7": ControllerConfig(prior_bias=0.7),
    "window 4": ControllerConfig(window=4),
    "window 6": ControllerConfig(window=6),
    "window 12": ControllerConfig(window=12),
    "window 15": ControllerConfig(window=15),
    "window 23": ControllerConfig(window=23),
    "follow 8": ControllerConfig(follow_batch=8),
    "judge over 16": ControllerConfig(judge_window=16),
    "no hysteresis": ControllerConfig(margin=0.0),
    "switch margin 0.2": ControllerConfig(margin=0.2),
    "opening margin 0.2": ControllerConfig(early_margin=0.2),
    "no fallback": ControllerConfig(fallback=False),
    "no confidence cut-off": ControllerConfig(confidence=False),
    "chunks of at most 8": ControllerConfig(max_chunk=8),
    "chunks of at most 24": ControllerConfig(max_chunk=24, max_lookahead=48),
    "1 chunk ahead": ControllerConfig(chunks_ahead=1),
    "3 chunks ahead": ControllerConfig(chunks_ahead=3),
    "follow 2": ControllerConfig(follow_batch=2),
}


def main(results: str, traces: str, variants: dict[str, ControllerConfig], seeds: int, per_prompt: bool) -> None:
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
        for name, controller in variants.items():
            config = replace(run_config(run, Method.PICOSPEC, run.key.verify), controller=controller)
            for seed in range(run.key.repeat * seeds, (run.key.repeat + 1) * seeds):
                ratio = after_first_token_rate(simulate(costs, config, PositionOutcomes(trace, seed)).to_record(run.key)) / ar
                simulated[group][name].append(ratio)
                if per_prompt:
                    simulated[(*group, run.key.prompt_id)][name].append(ratio)
    for group, by_variant in sorted(simulated.items()):
        row = measured.get(group) if len(group) == 4 else None
        shown = f"{row.after_first:.3f} ({row.pairs} pairs)" if row else "-"
        print(f"{' '.join(map(str, group))}: measured {shown}; simulated:")
        for name, ratios in by_variant.items():
            print(f"  {name:20s} {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("traces")
    parser.add_argument("--variants", help=f"comma-separated, from: {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--seeds", type=int, default=1, help="simulated runs per measured run (their outcomes drawn anew)")
    parser.add_argument("--per-prompt", action="store_true", help="also a row per prompt")
    args = parser.parse_args()
    names = [n.strip() for n in args.variants.split(",")] if args.variants else list(VARIANTS)
    if unknown := [n for n in names if n not in VARIANTS]:
        parser.error(f"unknown variants: {', '.join(unknown)}")
    main(args.results, args.traces, {n: VARIANTS[n] for n in names}, args.seeds, args.per_prompt)
