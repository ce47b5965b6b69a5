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
