"""The cost model of speculation: what a target pass costs, what a chunk earns (pure functions).

The model (cloud-bound steady state of the pipeline). A chunk of j draft tokens whose tokens pass
with probabilities a_1..a_j (each given the ones before it passed) survives to token i with
c_i = a_1 ... a_i (c_0 = 1). Verifying it commits T(j) = c_0 + ... + c_{j-1} tokens in
expectation (a rejection at token i commits i-1 drafts and the correction; a full pass commits j,
and the edge's continuation is already drafted), and occupies the cloud for

    cost(j) = max(V(j), j * d) + (1 - c_j) * (rtt + j * d)

seconds in the steady state: the pass itself, or the drafting of the next chunk if that is longer;
and after a rejection the bubble in which the verdict travels and the edge drafts the next chunk
from the correction. The pass after a rejection (or after cloud decoding) also evaluates the
correction, so that chunk's V(j) is V(j + 1) (Costs.pending). On a CPU, where V(m) grows almost
linearly up to 7 tokens and passes over 9 to 16 cost about the same (on the AVX2 VM: 9-13 decode
steps), only long chunks of confident drafts beat cloud-side decoding. The edge
ships the length that maximises T(j) / cost(j), where the a_i of drafted tokens come from the
drafter's own confidence and undrafted ones are planned as confident (picospec/edge/controller.py).
Cloud-side decoding (fallback) earns 1 / decode_s; the controller falls back when speculation
measurably earns less, and tries speculation again when the acceptance it observes while
following the cloud says it would pay, or after a probe interval.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, replace
from typing import Sequence

from picospec.errors import InvalidInputError

MAX_PASS_S = 600.0  # a pass cost beyond this is nonsense, not a slow machine
MAX_PASS_TOKENS = 4096  # nor a pass over more tokens than this (a batching cloud's, all sessions together)


@dataclass(frozen=True)
class CostCurve:
    """The cloud's compute costs: verify_s[m-1] seconds for a pass over m tokens; decode_s for one
    autoregressive step. Longer passes are extrapolated along the last measured slope."""

    verify_s: tuple[float, ...]  # (M,)
    decode_s: float

    def __post_init__(self) -> None:
        values = (*self.verify_s, self.decode_s)
        object.__setattr__(self, "verify_s", tuple(float(v) for v in self.verify_s))
        if not 1 <= len(self.verify_s) <= MAX_PASS_TOKENS:
            raise InvalidInputError(f"a cost curve gives the cost of passes over 1 to at most {MAX_PASS_TOKENS} tokens")
        if not all(math.isfinite(v) and 0 < v <= MAX_PASS_S for v in values):
            raise InvalidInputError(f"cost curve values must be finite seconds in (0, {MAX_PASS_S:g}], got {values}")

    @property
    def max_measured(self) -> int:
        return len(self.verify_s)

    def verify(self, m: float) -> float:
        """Seconds for a pass over m >= 1 tokens (interpolated between whole sizes: a batching
        cloud's passes hold other sessions' tokens, known as a mean)."""
        whole = math.floor(m)
        if whole < m:
            return self.verify(whole) + (m - whole) * (self.verify(whole + 1) - self.verify(whole))
        if m <= self.max_measured:
            return self.verify_s[int(m) - 1]
        slope = (self.verify_s[-1] - self.verify_s[0]) / max(1, self.max_measured - 1)
        return self.verify_s[-1] + max(slope, 0.0) * (m - self.max_measured)


DECODE_STEPS_KEPT = 9  # the decode step is the median of this many latest steps


class CostTracker:
    """A CostCurve refined from real passes: each observation moves its size's cost by `weight`;
    the decode step is the median of the latest steps (the curve's until one is seen). A moving
    mean let one slow step (the drafter's pass beside it on a shared machine) cut the estimated
    rate of cloud decoding by 15%, and sessions switched to speculation on chat where it lost."""

    def __init__(self, curve: CostCurve, weight: float = 0.2) -> None:
        self._verify = list(curve.verify_s)
        self._decode = curve.decode_s
        self._decode_steps: deque[float] = deque(maxlen=DECODE_STEPS_KEPT)
        self.weight = weight

    def observe_verify(self, m: int, seconds: float) -> None:
        """A pass over m tokens took `seconds`; sizes beyond the curve extend it."""
        if not (math.isfinite(seconds) and 0 < seconds <= MAX_PASS_S) or not 1 <= m <= MAX_PASS_TOKENS:
            return
        while len(self._verify) < m:
            self._verify.append(CostCurve(tuple(self._verify), self._decode).verify(len(self._verify) + 1))
        self._verify[m - 1] += self.weight * (seconds - self._verify[m - 1])

    def observe_decode(self, seconds: float) -> None:
        """One autoregressive step took `seconds`."""
        if math.isfinite(seconds) and 0 < seconds <= MAX_PASS_S:
            self._decode_steps.append(seconds)
            self._decode = statistics.median(self._decode_steps)

    @property
    def curve(self) -> CostCurve:
        return CostCurve(tuple(self._verify), self._decode)


@dataclass(frozen=True)
class Costs:
    """Everything a round's cost depends on: the cloud's curve, the drafter's step, the link's RTT,
    and the tokens other sessions bring to each pass of a batching cloud (0 when it does not batch).

    In a shared pass a session's j tokens ride with `shared` others, so its round takes
    V(j + shared): on a CPU, where a pass over 16 tokens costs little more than one over 9, the
    extra draft tokens are nearly free and longer chunks pay where they would not alone.
    """

    curve: CostCurve
    draft_s: float
    rtt_s: float
    shared: float = 0.0
    # Tokens the pass evaluates ahead of the chunk: the correction a rejection left (or the token
    # cloud decoding left), which the cloud has not evaluated yet; 0 after a chunk passed in full.
    pending: float = 0.0

    def pass_s(self, j: int) -> float:
        """Seconds of the pass that evaluates this session's j tokens."""
        return self.curve.verify(j + self.shared + self.pending)

    def after(self, pending: float) -> "Costs":
        """These costs for a chunk whose pass also evaluates `pending` tokens (a chance, in a replay)."""
        return replace(self, pending=pending)

    def chunk_cost(self, j: int, survival: float) -> float:
        """Seconds one chunk of j tokens takes up in the steady state, survival = c_j (see the module docstring)."""
        return max(self.pass_s(j), j * self.draft_s) + (1.0 - survival) * (self.rtt_s + j * self.draft_s)

    @property
    def fallback_rate(self) -> float:
        """Tokens per second of cloud-side decoding: a step each, in a pass shared with the others' tokens.

        The others' tokens never make the step cheaper: a curve refined from noisy passes can hold
        V(1 + shared) < V(1) - decode_s, and a negative rate made the edge order no tokens at all
        (sessions stalled until the cloud's idle limit, session 30)."""
        sharing = max(0.0, self.curve.verify(1 + self.shared) - self.curve.verify(1))
        return 1.0 / (self.curve.decode_s + sharing)


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


def replay_rate(
    acceptance: Sequence[float], costs: Costs, max_len: int, outcomes: Sequence[float] | None = None
) -> float:
    """Expected tokens per second of confidence-cut chunking over positions whose tokens would pass
    with these probabilities: what speculation would have earned where the cloud decoded.

    Chunks are cut by `acceptance` (the estimates the edge would have had); with `outcomes` (the
    chance each position's draft did pass: 0 or 1 under greedy decoding) they are scored by what
    happened rather than by the estimates."""
    if not acceptance:
        return 0.0
    outcomes = acceptance if outcomes is None else outcomes
    if len(outcomes) != len(acceptance):
        raise InvalidInputError(f"{len(outcomes)} outcomes for {len(acceptance)} positions")
    mean, mean_outcome = sum(acceptance) / len(acceptance), sum(outcomes) / len(outcomes)
    position, tokens, seconds = 0, 0.0, 0.0
    pending = 1.0  # the first chunk's pass also evaluates the last token the cloud decoded
    while position < len(acceptance):
        chunk_costs = costs.after(pending)
        j, _ = best_chunk_len(acceptance[position : position + max_len], mean, chunk_costs, max_len)
        survival, expected = 1.0, 0.0
        for a in list(outcomes[position : position + j]) + [mean_outcome] * max(0, position + j - len(outcomes)):
            expected += survival
            survival *= a
        tokens += expected
        seconds += chunk_costs.chunk_cost(j, survival)
        position += j
        pending = 1.0 - survival  # a rejection leaves its correction to the next chunk's pass
    return tokens / seconds


def steady_rate(
    acceptance: Sequence[float], costs: Costs, max_len: int, outcomes: Sequence[float] | None = None
) -> float:
    """replay_rate over the positions repeated until they fill several chunks: the steady state of
    text like them. Replayed once, a window of a chunk's length or two ends on a cut chunk and
    starts on a short one (a doubtful first token), which understates what runs of it would earn."""
    if not acceptance:
        return 0.0
    repeats = math.ceil(4 * max_len / len(acceptance))
    return replay_rate(list(acceptance) * repeats, costs, max_len, None if outcomes is None else list(outcomes) * repeats)


def speculation_pays(rate: float, costs: Costs, remaining: int | None, margin: float, max_len: int) -> bool:
    """Whether speculating at `rate` tokens/s once under way beats cloud decoding by `margin` over
    the `remaining` tokens of the generation, its start-up included: the first chunk of up to
    max_len drafts is drafted, shipped and verified before any of it commits, about
    t_d + rtt + V(max_len) for its first token, while the cloud would have decoded. With the length
    unknown (None) the rates alone are compared.

    The pipeline ships its first draft at once to an idle cloud, so its real start-up is nearer
    t_d + 2 rtt + V(1); charged that, sessions switched on MT-bench's chat where the replay said
    speculation paid and it did not (0.91x of ar, was 0.99x; HumanEval 1.16x, was 1.13x): the
    larger charge stands in for the replay's optimism on text the drafter half knows."""
    fallback = costs.fallback_rate
    if remaining is None:
        return rate > fallback * (1 + margin)
    if remaining < 1 or rate <= 0:
        return False
    return (start_up_s(costs, max_len) + (remaining - 1) / rate) * (1 + margin) < remaining / fallback


def start_up_s(costs: Costs, max_len: int) -> float:
    """Seconds before speculation's first chunk of up to max_len drafts commits anything: drafted,
    shipped and verified (see speculation_pays for why the whole chunk is charged)."""
    return costs.draft_s + costs.rtt_s + costs.after(1.0).pass_s(max_len)


