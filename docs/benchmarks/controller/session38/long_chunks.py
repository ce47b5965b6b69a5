"""Would chunks longer than 16 pay on this VM? A pass over 32 tokens costs 17.2 decode steps against
10.9 for 16 (pass_costs.txt), 0.54 of a step per token against 0.68. The simulator replays session
36's base runs (slow VM, wan and cellular, T = 0) with the controller's chunk cap at 16, 24 and 32,
the welcome's cost curve extended beyond 17 tokens by pass_costs.txt (scaled by each window's decode
step; the runs themselves never passed more than 17 tokens): scripts/controller_sweep.py's replay,
its costs extended.

    .venv/bin/python docs/benchmarks/controller/session38/long_chunks.py [--judge-16] [--seeds 2]

--judge-16 keeps the start decision (the shadow's replay and the start-up charge) at chunks of 16,
so that only the chunks cut while speculating grow: with the cap itself, the start-up charge
(a pass over max_chunk + 1) grows and code switches later. A throw-away patch of the cost-model
functions the controller calls, not in the package.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

import picospec.edge.controller as controller_module
from picospec.bench.measure import measure_costs, window_costs
from picospec.costmodel import speculation_pays, start_up_s, steady_rate
from picospec.edge.controller import ControllerConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "scripts"))
import controller_sweep  # noqa: E402  (scripts/ is not a package)

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
    """controller_sweep's replay, its measured costs extended beyond 17 tokens."""
    controller_sweep.window_costs = lambda records: {k: extended(c) for k, c in window_costs(records).items()}
    controller_sweep.measure_costs = lambda records: extended(measure_costs(records))
    controller_sweep.main(str(RUNS), str(TRACES), VARIANTS, seeds, per_prompt=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge-16", action="store_true")
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    if args.judge_16:
        judge_at_16()
    main(args.seeds)
