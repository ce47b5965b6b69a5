"""Would chunks longer than 16 pay on this VM? A pass over 32 tokens costs 17.2 decode steps against
10.9 for 16 (pass_costs.txt), 0.54 of a step per token against 0.68. The simulator replays session
36's base runs (slow VM, wan and cellular, T = 0) with the controller's chunk cap at 16, 24 and 32,
the welcome's cost curve extended beyond 17 tokens by pass_costs.txt (scaled by each window's decode
step; the runs themselves never passed more than 17 tokens).

    .venv/bin/python docs/benchmarks/controller/session38/long_chunks.py [--judge-16] [--seeds 2]

--judge-16 keeps the start decision (the shadow's replay and the start-up charge) at chunks of 16,
so that only the chunks cut while speculating grow: with the cap itself, the start-up charge
(a pass over max_chunk + 1) grows and code switches later. A throw-away patch of the cost-model
functions the controller calls, not in the package.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

import picospec.edge.controller as controller_module
from picospec.bench.compare import after_first_token_rate
from picospec.bench.forced import load_traces, trace_of
from picospec.bench.measure import measure_costs, window_costs
from picospec.bench.predict import run_config
from picospec.bench.results import MODELESS_VERIFY, load_records
from picospec.bench.simulator import PositionOutcomes, simulate
from picospec.costmodel import speculation_pays, start_up_s, steady_rate
from picospec.edge.config import Method
from picospec.edge.controller import ControllerConfig
from picospec.transport.netem import LinkProfile

HERE = Path(__file__).parent
RUNS = HERE.parent / "session36" / "ab_base.jsonl"
TRACES = HERE.parent / "revised" / "traces.jsonl"
STEPS = {17: 12.76, 20: 14.13, 24: 16.34, 28: 18.57, 32: 17.18, 33: 18.98, 40: 23.85}  # pass_costs.txt
VARIANTS = {
    "chunks of 16 (default)": ControllerConfig(),
    "chunks of 24": ControllerConfig(max_chunk=24, max_lookahead=48),
    "chunks of 32": ControllerConfig(max_chunk=32, max_lookahead=64),
}
JUDGED = 16


def extended(costs):
    """The window's costs with V(18..40) from pass_costs.txt, in this window's decode steps."""
    known = sorted(STEPS)
    medians = dict(costs.verify.medians)
    for m in range(18, 41):
        medians[m] = float(np.interp(m, known, [STEPS[k] for k in known])) * costs.target_s
    return replace(costs, verify=replace(costs.verify, medians=medians))


def judge_at_16() -> None:
    """Patch the controller's start decision (the shadow's replay, the start-up charge, the early
    judgement) to chunks of at most JUDGED tokens: the names controller.py imports from costmodel."""
    m = controller_module
    m.steady_rate = lambda acceptance, costs, max_len, outcomes=None: steady_rate(acceptance, costs, min(max_len, JUDGED), outcomes)
    m.start_up_s = lambda costs, max_len: start_up_s(costs, min(max_len, JUDGED))
    m.speculation_pays = lambda rate, costs, remaining, margin, max_len: speculation_pays(
        rate, costs, remaining, margin, min(max_len, JUDGED)
    )


def main(seeds: int) -> None:
    records, forced = load_records(RUNS), load_traces(TRACES)
    windows, whole = window_costs(records), measure_costs(records)
    simulated: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in records:
        trace = trace_of(forced, run)
        if run.key.method is not Method.PICOSPEC or trace is None:
            continue
        link = LinkProfile(run.key.rtt_ms, run.key.bandwidth_mbps)
        costs = extended(windows.get((run.key.profile, run.key.temperature), whole).with_link(link))
        ar = after_first_token_rate(simulate(costs, run_config(run, Method.AR, MODELESS_VERIFY)).to_record(run.key))
        for name, controller in VARIANTS.items():
            config = replace(run_config(run, Method.PICOSPEC, run.key.verify), controller=controller)
            for seed in range(run.key.repeat * seeds, (run.key.repeat + 1) * seeds):
                record = simulate(costs, config, PositionOutcomes(trace, seed)).to_record(run.key)
                simulated[(run.key.workload, run.key.profile)][name].append(after_first_token_rate(record) / ar)
    for group, by_variant in sorted(simulated.items()):
        print(" ".join(group), "; ".join(f"{name} {statistics.median(r):.3f}x" for name, r in by_variant.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge-16", action="store_true")
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    if args.judge_16:
        judge_at_16()
    main(args.seeds)
