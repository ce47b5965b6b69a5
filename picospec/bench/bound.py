"""The ideal throughput of each method: closed forms from a CostProfile and an acceptance model.

Notation (seconds): t_d drafter step, t_t target decode step, V(m) a verification pass over m
evaluated tokens, R round-trip time, S_up(n) serialisation of a chunk of n draft tokens, S_dn of a
verdict, S_ar of one streamed ar token, P_c / P_e the cloud's / edge's prompt pass; k chunk
length, L lookahead, alpha the per-token acceptance rate (each draft token is accepted with
probability alpha given that the ones before it were).

"Ideal" means the protocol with nothing wasted: no protocol overhead beyond the link model, and
in stop-and-wait k drafter passes per round (the pass over the committed correction or bonus
yields the first draft). The implementation does one more per round; the simulator models that,
the bound does not. Efficiency = measured / ideal.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Iterable

import numpy as np

from picospec.bench.costs import SPECULATIVE, STOP_AND_WAIT, CostProfile
from picospec.bench.results import RunRecord
from picospec.edge.config import Method
from picospec.verify import VerifyMode


@dataclass(frozen=True)
class Policy:
    """The chunking policy of the edge (picospec/edge/config.py's EdgeConfig fields)."""

    chunk_len: int = 4
    max_lookahead: int = 8


@dataclass(frozen=True)
class Acceptance:
    """Per-token acceptance rate alpha, and optionally the measured distribution of accepted
    lengths of stop-and-wait rounds over full chunks of `pmf_chunk_len` draft tokens."""

    alpha: float
    accepted_pmf: dict[int, float] | None = None
    pmf_chunk_len: int | None = None

    def stop_and_wait_tokens(self, k: int) -> float:
        """E[tokens committed per stop-and-wait round] = E[A] + 1 (a correction or a bonus always
        follows the A accepted drafts). For i.i.d. acceptance:
        E[A] + 1 = sum_{i=0..k} alpha^i = (1 - alpha^(k+1)) / (1 - alpha)."""
        if self.accepted_pmf is not None and self.pmf_chunk_len == k:
            return sum(p * (a + 1) for a, p in self.accepted_pmf.items())
        return sum(self.alpha**i for i in range(k + 1))

    @staticmethod
    def from_records(records: Iterable[RunRecord]) -> "Acceptance":
        """alpha = accepted / (accepted + rejections) over all speculative rounds (the maximum-
        likelihood rate of geometric runs cut by chunk ends); the pmf from stop-and-wait rounds
        over chunks of the most common length."""
        records = [r for r in records if r.key.method in SPECULATIVE]
        accepted = sum(sum(r.accepted_lengths) for r in records)
        rejections = sum(a < c for r in records for a, c in zip(r.accepted_lengths, r.chunk_lengths))
        alpha = accepted / (accepted + rejections) if accepted + rejections else 0.0
        rounds = [
            (a, c)
            for r in records
            if r.key.method in STOP_AND_WAIT
            for a, c in zip(r.accepted_lengths, r.chunk_lengths)
        ]
        if not rounds:
            return Acceptance(alpha)
        k = Counter(c for _, c in rounds).most_common(1)[0][0]
        counts = Counter(a for a, c in rounds if c == k)
        total = sum(counts.values())
        return Acceptance(alpha, {a: n / total for a, n in sorted(counts.items())}, k)


def ar_rate(costs: CostProfile) -> float:
    """Cloud-only decoding streamed to the edge: 1 / max(t_t, S_ar) tokens/s. After the first
    token, RTT only delays the stream; serialisation overlaps the next decode step."""
    return 1.0 / max(costs.target_s, costs.link.serialisation_s(costs.bytes_down_per_ar_token))


def edge_rate(costs: CostProfile) -> float:
    """Edge-only decoding with the drafter: 1 / t_d."""
    return 1.0 / costs.draft_s


def stop_and_wait_round_s(costs: CostProfile, mode: VerifyMode, k: int, edge_passes: int | None = None) -> float:
    """One stop-and-wait round: edge_passes t_d + S_up(k) + R + V(k + 1) + S_dn.

    Ideally edge_passes = k: the pass over the committed correction or bonus yields the first
    draft. The implementation makes k + 1 (a pass over the committed token, then k drafts, each
    with its own pass). V(k + 1): the cloud evaluates the committed token with the k drafts."""
    passes = k if edge_passes is None else edge_passes
    return (
        passes * costs.draft_s
        + costs.uplink_s(mode, k)
        + costs.link.rtt_ms / 1000
        + costs.verify(k + 1)
        + costs.downlink_s(mode)
    )


def stop_and_wait_rate(costs: CostProfile, acceptance: Acceptance, mode: VerifyMode, k: int) -> float:
    """Stop-and-wait (vanilla, sync): every round drafts, ships, waits, and commits E[A] + 1:

    rate = (E[A] + 1) / (k t_d + S_up(k) + R + V(k + 1) + S_dn)"""
    return acceptance.stop_and_wait_tokens(k) / stop_and_wait_round_s(costs, mode, k)


def pipelined_rate(costs: CostProfile, acceptance: Acceptance, mode: VerifyMode, policy: Policy) -> float:
    """The pipeline (picospec): a steady stream of k-token chunks, broken by each rejection.

    A chunk's verdict returns Lambda = S_up(k) + R + V(k) + S_dn after the chunk is shipped (V(k):
    after a fully accepted chunk the cloud kept the row that verifies the next chunk's first
    token). Between rejections one token passes every tau seconds, the slowest stage:

        tau = max(t_d, V(k)/k, S_up(k)/k, S_dn/k, (k t_d + Lambda)/L)

    (drafting; verifying; each direction of the link; and the lookahead: the draft of token
    i + L cannot start before the verdict on token i's chunk is back, k t_d + Lambda after that
    chunk's first draft began, and L tokens are drafted in that time).

    A rejection wastes what was drafted after the rejected token. Ideally that token is shipped
    as soon as it is drafted, its verdict is acted upon at once, and the drafter's pass over the
    correction yields the next draft: a cycle of A accepted drafts and one rejection (A geometric,
    E[A] = alpha / (1 - alpha); no bonus, so chunk ends do not cut the run) commits A + 1 tokens
    in t_d + A tau + Lambda. Per token:

        1 / rate = alpha tau + (1 - alpha)(t_d + Lambda)

    alpha = 1 gives 1/tau; alpha = 0 gives t_d + Lambda (no gain over stop-and-wait with k = 1).
    The implementation waits longer after a rejected draft (it ships when the chunk is full or
    the cloud idles, applies a verdict after the draft in progress, and ships after a draft's
    pass rather than its sample); the simulator models those, the bound does not."""
    k, lookahead = policy.chunk_len, policy.max_lookahead
    t_d, verify_s = costs.draft_s, costs.verify(k)
    up, down = costs.uplink_s(mode, k), costs.downlink_s(mode)
    latency = up + costs.link.rtt_ms / 1000 + verify_s + down
    tau = max(t_d, verify_s / k, up / k, down / k, (k * t_d + latency) / lookahead)
    alpha = acceptance.alpha
    return 1.0 / (alpha * tau + (1 - alpha) * (t_d + latency))


def steady_rate(method: Method, mode: VerifyMode, costs: CostProfile, acceptance: Acceptance, policy: Policy) -> float:
    """The ideal tokens/s of `method` once generation is under way (t_d: costs.draft_s)."""
    if method is Method.AR:
        return ar_rate(costs)
    if method is Method.EDGE:
        return edge_rate(costs)
    if method is Method.PICOSPEC:
        return pipelined_rate(costs, acceptance, mode, policy)
    return stop_and_wait_rate(costs, acceptance, mode, policy.chunk_len)


def ideal_wall_s(
    method: Method,
    mode: VerifyMode,
    costs: CostProfile,
    acceptance: Acceptance,
    policy: Policy,
    n_tokens: int,
    prompt: str | None = None,
) -> float:
    """The ideal time to generate n tokens, start-up included, on the edge's clock (which starts
    when the cloud's welcome arrives, as EdgeReport.wall_s does; the cloud began its prompt
    pass R/2 earlier, right after sending the welcome):

    - ar:          P_c + S_ar + (n - 1) / ar_rate   (the prompt pass yields token 1)
    - edge:        P_e + (n - 1) t_d                (likewise)
    - speculative: P_e + max(0, P_c - R - P_e - k t_d - S_up(k)) + n / rate
                   (the first chunk waits if the cloud's prompt pass outlasts the edge's and
                   the first chunk's drafting and trip)
    """
    costs = replace(costs, draft_s=costs.draft(method))  # t_d as this method's edge measured it
    rate = steady_rate(method, mode, costs, acceptance, policy)
    if method is Method.AR:
        first = costs.cloud_prefill(prompt) + costs.link.serialisation_s(costs.bytes_down_per_ar_token)
        return first + (n_tokens - 1) / rate
    edge_prefill = costs.edge_prefill(prompt)
    if method is Method.EDGE:
        return edge_prefill + (n_tokens - 1) / rate
    k = policy.chunk_len
    first_chunk_at_cloud = edge_prefill + k * costs.draft_s + costs.uplink_s(mode, k) + costs.link.rtt_ms / 2000
    cloud_ready = costs.cloud_prefill(prompt) - costs.link.rtt_ms / 2000
    return edge_prefill + max(0.0, cloud_ready - first_chunk_at_cloud) + n_tokens / rate


def ideal_tokens_per_s(
    method: Method,
    mode: VerifyMode,
    costs: CostProfile,
    acceptance: Acceptance,
    policy: Policy,
    n_tokens: int,
    prompt: str | None = None,
) -> float:
    """n / ideal_wall_s: the same definition as EdgeReport.tokens_per_s."""
    return n_tokens / ideal_wall_s(method, mode, costs, acceptance, policy, n_tokens, prompt)


# -- the adaptive policy: a confidence cut-off with fallback to cloud decoding --------------------


@dataclass(frozen=True)
class PositionTrace:
    """How the drafter fares at each position of a target's own output, teacher-forced (forced.py).

    confidence: (n,) the drafter's probability of the token it would draft there (its argmax);
    acceptance: (n,) the chance that a draft there passes verification (0 or 1 under greedy);
    gumbel_acceptance: (n,) the same in gumbel mode where it differs (when sampling: the chance the
    two Gumbel-argmaxes agree, at most rejection sampling's), None where it does not or is not known.
    """

    confidence: np.ndarray
    acceptance: np.ndarray
    gumbel_acceptance: np.ndarray | None = None

    def for_mode(self, mode: VerifyMode) -> "PositionTrace":
        """The trace as a session verified in `mode` meets it."""
        if mode is VerifyMode.GUMBEL and self.gumbel_acceptance is not None:
            return PositionTrace(self.confidence, self.gumbel_acceptance)
        return self


@dataclass(frozen=True)
class CutPolicy:
    """The best confidence cut-off for a trace: speculate at positions whose confidence is at least
    `threshold` in chunks of at most `chunk_len`, let the cloud decode the rest (threshold inf: all
    of them, cloud decoding). steady_s: the ideal seconds of positions 1.. (the first comes from the
    cloud's prompt pass)."""

    threshold: float
    chunk_len: int
    steady_s: float

    def rate(self, n_tokens: int) -> float:
        """Ideal tokens/s after the first token."""
        return (n_tokens - 1) / self.steady_s if self.steady_s > 0 else float("inf")


def cut_policy_s(
    costs: CostProfile, mode: VerifyMode, trace: PositionTrace, threshold: float, k: int, lookahead: int
) -> float:
    """Ideal seconds of positions 1.. when positions with confidence >= threshold are speculated in
    chunks of at most k and the cloud decodes the others (at 1 / ar_rate each).

    A speculated position costs tau (pipelined_rate's slowest stage at chunk k) when the pipeline
    runs warm into it, i.e. the position before it was speculated and accepted; otherwise it waits
    for a restart, t_d + S_up(j) + R + V(j) + S_dn, with j = min(k, the speculated run left from
    it): the drafter drafts from the token just committed and the chunk makes a round trip. With
    acceptance probabilities this is the expected time (linear in the chance of running warm). No
    time is charged for switching between the modes beyond that restart.
    """
    speculated = trace.confidence[1:] >= threshold  # (n-1,)
    return _Stages(costs, mode, k, lookahead).seconds(speculated, _runs_left(speculated), trace.acceptance[1:])


def best_cut_policy(
    costs: CostProfile, mode: VerifyMode, trace: PositionTrace, max_chunk: int = 16, lookahead: int = 32
) -> CutPolicy:
    """The cut-off and chunk length with the least ideal time over the trace (the controller's
    ControllerConfig.max_chunk and max_lookahead by default); never slower than cloud decoding,
    which is threshold inf."""
    best = CutPolicy(float("inf"), 1, (len(trace.confidence) - 1) / ar_rate(costs))
    stages = [_Stages(costs, mode, k, max(k, lookahead)) for k in range(1, max_chunk + 1)]
    for threshold in np.unique(trace.confidence[1:]):
        speculated = trace.confidence[1:] >= threshold  # (n-1,)
        runs_left = _runs_left(speculated)
        for stage in stages:
            seconds = stage.seconds(speculated, runs_left, trace.acceptance[1:])
            if seconds < best.steady_s:
                best = CutPolicy(float(threshold), stage.k, seconds)
    return best


class _Stages:
    """cut_policy_s's per-position costs at chunk k: tau, and the restart after j-token runs."""

    def __init__(self, costs: CostProfile, mode: VerifyMode, k: int, lookahead: int) -> None:
        t_d, rtt, down = costs.draft_s, costs.link.rtt_ms / 1000, costs.downlink_s(mode)
        latency = [costs.uplink_s(mode, j) + rtt + costs.verify(j) + down if j else 0.0 for j in range(k + 1)]
        self.k = k
        self.tau = max(t_d, costs.verify(k) / k, costs.uplink_s(mode, k) / k, down / k, (k * t_d + latency[k]) / lookahead)
        self.restart = np.array([t_d + s if j else 0.0 for j, s in enumerate(latency)])  # (k+1,) by run length
        self.cloud_s = 1.0 / ar_rate(costs)

    def seconds(self, speculated: np.ndarray, runs_left: np.ndarray, acceptance: np.ndarray) -> float:
        warm = np.concatenate([[0.0], (speculated * acceptance)[:-1]])  # chance of running warm into each position
        restart = self.restart[np.minimum(runs_left, self.k)]
        return float(np.where(speculated, warm * self.tau + (1 - warm) * restart, self.cloud_s).sum())


def _runs_left(flags: np.ndarray) -> np.ndarray:
    """For each position, how many consecutive True flags start there (0 where False)."""
    left, run = np.zeros(len(flags), dtype=np.int64), 0
    for i in range(len(flags) - 1, -1, -1):
        run = run + 1 if flags[i] else 0
        left[i] = run
    return left
