"""Does the cost model overcharge a rejection? costmodel.Costs.chunk_cost charges it rtt + j drafter
steps (the edge drafting a whole chunk from the correction while the cloud idles). The real
pipeline ships the first draft to the idle cloud at once and grows its chunks while each pass runs
(1, then what the drafter drafts during V(2), ...), so its restart costs rtt + one drafter step
plus the ramp's short passes beyond the steady state's price for the same tokens. This prints both
at session 38's pass costs (pass_costs.txt; drafter step 0.45 of a decode step, rtt 20 ms), and
the chunk each picks for tokens that pass with a uniform chance. Pure arithmetic, no models.

    .venv/bin/python docs/benchmarks/controller/session38/restart_ramp.py
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from picospec.costmodel import CostCurve, Costs, best_chunk_len

STEP_S = 0.0487
STEPS = {1: 0.90, 2: 2.07, 4: 3.69, 8: 9.08, 12: 11.03, 16: 10.85, 17: 12.76}  # pass_costs.txt (V(1): the calibration's)


def ramp_restart_s(costs: Costs, j: int) -> float:
    """rtt + a drafter step + the ramp's passes until j tokens are committed, less the steady price of those tokens."""
    d = costs.draft_s
    steady_per_token = max(costs.curve.verify(j), j * d) / j
    seconds, m, pending, committed = costs.rtt_s + d, 1, 1, 0
    while committed < j:
        p = costs.curve.verify(m + pending)
        seconds, committed, pending = seconds + p, committed + m, 0
        m = min(j, max(1, math.floor(p / d)))
    return max(0.0, seconds - committed * steady_per_token)


@dataclass(frozen=True)
class RampCosts(Costs):
    """Costs whose rejection is priced by ramp_restart_s."""

    def chunk_cost(self, j: int, survival: float) -> float:
        return max(self.pass_s(j), j * self.draft_s) + (1.0 - survival) * ramp_restart_s(self, j)


def main() -> None:
    known = sorted(STEPS)
    curve = CostCurve(tuple(float(np.interp(m, known, [STEPS[k] for k in known])) * STEP_S for m in range(1, 18)), STEP_S)
    model = Costs(curve, 0.45 * STEP_S, 0.020)
    ramp = RampCosts(curve, 0.45 * STEP_S, 0.020)
    print("a rejection's cost, in decode steps: chunk j, the model's rtt + j d, the ramp's")
    for j in (1, 2, 4, 8, 12, 16):
        print(f"  j = {j:2d}: {(model.rtt_s + j * model.draft_s) / STEP_S:5.2f}  {ramp_restart_s(ramp, j) / STEP_S:5.2f}")
    print("best chunk and its rate (tokens per decode step) for a uniform chance a draft passes")
    for a in (0.9, 0.95, 0.97, 0.99):
        (jm, rm), (jr, rr) = (best_chunk_len([a] * 16, a, costs, 16) for costs in (model, ramp))
        print(f"  a = {a}: model j = {jm} ({rm * STEP_S:.2f}), ramp j = {jr} ({rr * STEP_S:.2f})")


if __name__ == "__main__":
    main()
