"""The cost model of speculation: what a target pass costs, what a chunk earns (pure functions).

The model (cloud-bound steady state of the pipeline). A chunk of j draft tokens whose tokens pass
with probabilities a_1..a_j (each given the ones before it passed) survives to token i with
c_i = a_1 ... a_i (c_0 = 1). Verifying it commits T(j) = c_0 + ... + c_{j-1} tokens in
expectation (a rejection at token i commits i-1 drafts and the correction; a full pass commits j,
and the edge's continuation is already drafted), and occupies the cloud for

    cost(j) = max(V(j), j * d) + (1 - c_j) * (rtt + j * d)

seconds in the steady state: the pass itself, or the drafting of the next chunk if that is longer;
and after a rejection the bubble in which the verdict travels and the edge drafts the next chunk
from the correction. On a CPU, where V(m) grows almost linearly up to 7 tokens and a pass over 16
costs about what 8 do, only long chunks of confident drafts beat cloud-side decoding. The edge
ships the length that maximises T(j) / cost(j), where the a_i of drafted tokens come from the
drafter's own confidence and undrafted ones are planned as confident (picospec/edge/controller.py).
Cloud-side decoding (fallback) earns 1 / decode_s; the controller falls back when speculation
measurably earns less, and tries speculation again when the acceptance it observes while
following the cloud says it would pay, or after a probe interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from picospec.errors import InvalidInputError

MAX_PASS_S = 600.0  # a pass cost beyond this is nonsense, not a slow machine


@dataclass(frozen=True)
class CostCurve:
    """The cloud's compute costs: verify_s[m-1] seconds for a pass over m tokens; decode_s for one
    autoregressive step. Longer passes are extrapolated along the last measured slope."""

    verify_s: tuple[float, ...]  # (M,)
    decode_s: float

    def __post_init__(self) -> None:
        values = (*self.verify_s, self.decode_s)
        object.__setattr__(self, "verify_s", tuple(float(v) for v in self.verify_s))
        if not self.verify_s:
            raise InvalidInputError("a cost curve needs the cost of at least a 1-token pass")
        if not all(math.isfinite(v) and 0 < v <= MAX_PASS_S for v in values):
            raise InvalidInputError(f"cost curve values must be finite seconds in (0, {MAX_PASS_S:g}], got {values}")

    @property
    def max_measured(self) -> int:
        return len(self.verify_s)

    def verify(self, m: int) -> float:
        """Seconds for a pass over m >= 1 tokens."""
        if m <= self.max_measured:
            return self.verify_s[m - 1]
        slope = (self.verify_s[-1] - self.verify_s[0]) / max(1, self.max_measured - 1)
        return self.verify_s[-1] + max(slope, 0.0) * (m - self.max_measured)


class CostTracker:
    """A CostCurve refined from real passes: each observation moves its size's cost by `weight`."""

    def __init__(self, curve: CostCurve, weight: float = 0.2) -> None:
        self._verify = list(curve.verify_s)
        self._decode = curve.decode_s
        self.weight = weight

    def observe_verify(self, m: int, seconds: float) -> None:
        """A pass over m tokens took `seconds`; sizes beyond the curve extend it."""
        if not (math.isfinite(seconds) and 0 < seconds <= MAX_PASS_S) or m < 1:
            return
        while len(self._verify) < m:
            self._verify.append(CostCurve(tuple(self._verify), self._decode).verify(len(self._verify) + 1))
        self._verify[m - 1] += self.weight * (seconds - self._verify[m - 1])

    def observe_decode(self, seconds: float) -> None:
        """One autoregressive step took `seconds`."""
        if math.isfinite(seconds) and 0 < seconds <= MAX_PASS_S:
            self._decode += self.weight * (seconds - self._decode)

    @property
    def curve(self) -> CostCurve:
        return CostCurve(tuple(self._verify), self._decode)


@dataclass(frozen=True)
class Costs:
    """Everything a round's cost depends on: the cloud's curve, the drafter's step, the link's RTT."""

    curve: CostCurve
    draft_s: float
    rtt_s: float

    def chunk_cost(self, j: int, survival: float) -> float:
        """Seconds of cloud time one chunk of j tokens takes up in the steady state, survival = c_j
        (see the module docstring)."""
        return max(self.curve.verify(j), j * self.draft_s) + (1.0 - survival) * (self.rtt_s + j * self.draft_s)

    @property
    def fallback_rate(self) -> float:
        """Tokens per second of cloud-side decoding."""
        return 1.0 / self.curve.decode_s


def best_chunk_len(acceptance: Sequence[float], next_acceptance: float, costs: Costs, max_len: int) -> tuple[int, float]:
    """The chunk length with the highest expected rate, and that rate (tokens per second).

    acceptance: estimates a_1..a_k of the tokens drafted so far for this chunk; tokens not drafted
    yet are taken to pass with next_acceptance.
    """
    survival, expected, best = 1.0, 0.0, (1, -1.0)
    for j in range(1, max_len + 1):
        expected += survival  # T(j) = c_0 + ... + c_{j-1}
        survival *= acceptance[j - 1] if j <= len(acceptance) else next_acceptance
        rate = expected / costs.chunk_cost(j, survival)
        if rate > best[1] + 1e-12:
            best = (j, rate)
    return best


def replay_rate(acceptance: Sequence[float], costs: Costs, max_len: int) -> float:
    """Expected tokens per second of confidence-cut chunking over positions whose tokens would pass
    with these probabilities: what speculation would have earned where the cloud decoded."""
    if not acceptance:
        return 0.0
    mean = sum(acceptance) / len(acceptance)
    position, tokens, seconds = 0, 0.0, 0.0
    while position < len(acceptance):
        j, _ = best_chunk_len(acceptance[position : position + max_len], mean, costs, max_len)
        survival, expected = 1.0, 0.0
        for a in list(acceptance[position : position + j]) + [mean] * max(0, position + j - len(acceptance)):
            expected += survival
            survival *= a
        tokens += expected
        seconds += costs.chunk_cost(j, survival)
        position += j
    return tokens / seconds


