"""Verification algorithms: pure functions, split into the cloud's half and the edge's half.

Glossary: a chunk is n draft tokens at positions start .. start+n-1. target_probs has n+1 rows:
row i is the target's distribution at position start+i, the last row is the one after the chunk
(used for a bonus token, or kept by the cloud to verify the next chunk's first token).
For every mode but gumbel, draft token x at row i is accepted when u < target_probs[i][x] / q,
q its draft probability; at the first rejected row j the correction is a sample of
norm(max(0, target_probs[j] - draft_probs[j])). The modes differ in who samples it, from what.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from picospec.errors import InvalidInputError
from picospec.sampling import residual, sample
from picospec.verify.gumbel import gumbel_argmax
from picospec.sampling import ProbFormat
from picospec.verify.material import Candidates, SparseDist, Verdict, VerifyMode


@dataclass(frozen=True)
class VerifyConfig:
    """Verification settings that the edge and the cloud agree on in the handshake."""

    mode: VerifyMode = VerifyMode.EXACT
    topk: int = 16  # K, entries of the target distribution sent at a rejection (topk)
    n_candidates: int = 8  # m, candidates per batch sent at a rejection (exact)
    seed: int = 0  # session seed of the shared Gumbel noise (gumbel)
    sparse_format: ProbFormat = ProbFormat.F16  # how topk's target probabilities travel

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", VerifyMode(self.mode))
        object.__setattr__(self, "sparse_format", ProbFormat(self.sparse_format))
        if self.topk < 1:
            raise InvalidInputError(f"topk K must be >= 1, got {self.topk}")
        if self.n_candidates < 1:
            raise InvalidInputError(f"n_candidates must be >= 1, got {self.n_candidates}")


# ---------------------------------------------------------------------------------------------
# The accept test, shared by full, topk and exact.


def accept_count(draft_token_probs: np.ndarray, target_token_probs: np.ndarray, uniforms: np.ndarray) -> int:
    """Number of leading draft tokens with u < min(1, target/draft). All arrays have shape (n,)."""
    draft_token_probs = np.asarray(draft_token_probs, dtype=np.float64)
    if np.any(~(draft_token_probs > 0)) or np.any(draft_token_probs > 1 + 1e-6):
        raise InvalidInputError("draft token probabilities must lie in (0, 1]")
    passed = uniforms * draft_token_probs < target_token_probs  # u < t/q without dividing
    return int(passed.size if passed.all() else np.argmin(passed))


def _one_hot_token(row: np.ndarray) -> int | None:
    """The token of a single-token distribution (greedy, or a cut to one token), else None."""
    support = np.flatnonzero(row)
    return int(support[0]) if support.size == 1 else None


# ---------------------------------------------------------------------------------------------
# Cloud half.


def cloud_verify(
    config: VerifyConfig,
    tokens: np.ndarray,
    target_probs: np.ndarray,
    start: int,
    rng: np.random.Generator,
    *,
    draft_token_probs: np.ndarray | None = None,
    draft_probs: np.ndarray | None = None,
    bonus: bool = False,
) -> Verdict:
    """Verify one chunk; return how many draft tokens passed and what the edge needs next.

    tokens: (n,) draft token ids. target_probs: (n+1, V). draft_token_probs: (n,), for topk and
    exact. draft_probs: (n, V), for full. With bonus=True a fully accepted chunk also gets a token
    sampled from the last target row; without it the edge keeps drafting on its own.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    n = tokens.size
    if target_probs.shape[0] != n + 1:
        raise InvalidInputError(f"target_probs needs {n + 1} rows for {n} draft tokens, got {target_probs.shape[0]}")
    if config.mode is VerifyMode.GUMBEL:
        return _cloud_verify_gumbel(config.seed, tokens, target_probs, start, bonus)
    target_token_probs = target_probs[np.arange(n), tokens]  # (n,)
    if config.mode is VerifyMode.FULL:
        if draft_probs is None or draft_probs.shape != (n, target_probs.shape[1]):
            raise InvalidInputError("full mode needs the draft distribution of every draft token")
        draft_token_probs = draft_probs[np.arange(n), tokens]
    elif draft_token_probs is None or np.shape(draft_token_probs) != (n,):
        raise InvalidInputError(f"{config.mode.value} mode needs one draft probability per draft token")
    accepted = accept_count(draft_token_probs, target_token_probs, rng.random(n))
    if accepted == n:
        token = sample(target_probs[n], rng) if bonus else None
        return Verdict(accepted=n, rejected=False, token=token)
    row = target_probs[accepted]  # (V,)
    only = _one_hot_token(row)
    if only is not None:
        return Verdict(accepted=accepted, rejected=True, token=only)
    if config.mode is VerifyMode.FULL:
        return Verdict(accepted, True, token=sample(residual(row, draft_probs[accepted]), rng))
    if config.mode is VerifyMode.TOPK:
        return Verdict(accepted, True, sparse=top_k_entries(row, config.topk))
    return Verdict(accepted, True, candidates=draw_candidates(row, int(tokens[accepted]), config.n_candidates, rng))


def _cloud_verify_gumbel(seed: int, tokens: np.ndarray, target_probs: np.ndarray, start: int, bonus: bool) -> Verdict:
    """Accept while the target's Gumbel-argmax agrees with the draft; the first disagreement is output."""
    for i, token in enumerate(tokens):
        choice = gumbel_argmax(target_probs[i], seed, start + i)
        if choice != token:
            return Verdict(accepted=i, rejected=True, token=choice)
    n = tokens.size
    token = gumbel_argmax(target_probs[n], seed, start + n) if bonus else None
    return Verdict(accepted=n, rejected=False, token=token)


def top_k_entries(row: np.ndarray, k: int) -> SparseDist:
    """The K most likely tokens of a distribution (V,), most likely first."""
    k = min(k, row.size)
    indices = np.argpartition(-row, k - 1)[:k]
    indices = indices[np.argsort(-row[indices], kind="stable")]
    return SparseDist(indices=indices.astype(np.int64), probs=row[indices].astype(np.float64))


def draw_candidates(row: np.ndarray, rejected_token: int, m: int, rng: np.random.Generator) -> Candidates:
    """m i.i.d. draws from the target row (V,) with the rejected draft token left out.

    A rejected token x had target_probs[x] < draft_probs[x], so the edge would refuse it anyway:
    leaving it out of the proposal keeps the accepted candidate an exact residual sample.
    """
    proposal = row.astype(np.float64, copy=True)
    proposal[rejected_token] = 0.0
    cdf = np.cumsum(proposal)  # (V,)
    if not cdf[-1] > 0:
        raise InvalidInputError("the target row has no mass outside the rejected token")
    tokens = np.minimum(np.searchsorted(cdf, rng.random(m) * cdf[-1], side="right"), row.size - 1)
    return Candidates(tokens=tokens.astype(np.int64), probs=row[tokens].astype(np.float64))


# ---------------------------------------------------------------------------------------------
# Edge half.


def edge_correction(verdict: Verdict, draft_row: np.ndarray | None, rng: np.random.Generator) -> int | None:
    """The committed token after a verdict, sampled on the edge when the cloud sent material.

    draft_row: (V,) the draft distribution at the rejected position (needed for sparse or
    candidate material). Returns None when exact mode's candidates were all refused: ask the
    cloud for more.
    """
    if verdict.sparse is not None:
        return sample_sparse_residual(verdict.sparse, draft_row, rng)
    if verdict.candidates is not None:
        return take_candidate(verdict.candidates, draft_row, rng)
    return verdict.token


def sample_sparse_residual(sparse: SparseDist, draft_row: np.ndarray, rng: np.random.Generator) -> int:
    """Sample the residual over the top-K support (topk: exact iff the target's support fits in K)."""
    weights = np.maximum(sparse.probs - draft_row[sparse.indices], 0.0)  # (K,)
    if not weights.sum() > 0:
        # All residual mass lies in the dropped tail: the best the edge can do is the target's mode.
        return int(sparse.indices[0])
    return int(sparse.indices[sample(weights, rng)])


def take_candidate(candidates: Candidates, draft_row: np.ndarray, rng: np.random.Generator) -> int | None:
    """The first candidate c with u < 1 - draft_probs[c] / target_probs[c], or None if none passes."""
    draft_of = draft_row[candidates.tokens]  # (m,)
    passed = rng.random(candidates.tokens.size) * candidates.probs < candidates.probs - draft_of
    return int(candidates.tokens[np.argmax(passed)]) if passed.any() else None


def shadow_pass_chance(draft_token_prob: float, target_token_prob: float | None) -> float:
    """The chance that a draft would have passed where the target sampled token x itself
    (x ~ target_probs), estimated from x alone: min(1, q(x) / p(x)), whose mean over x ~ p is
    sum_x min(p, q), the accept test's acceptance rate. Without p(x), q(x): exact under greedy
    (0 or 1), in gumbel mode the chance that the shared noise makes x the draft, and below the
    acceptance rate when sampling (its mean is sum_x p q)."""
    if target_token_prob is None:
        return draft_token_prob
    return min(1.0, draft_token_prob / target_token_prob)


def draft_token(draft_row: np.ndarray, mode: VerifyMode, seed: int, position: int, rng: np.random.Generator) -> int:
    """The edge's draft token at a position: a Gumbel-argmax in gumbel mode, else a plain sample."""
    if mode is VerifyMode.GUMBEL:
        return gumbel_argmax(draft_row, seed, position)
    return sample(draft_row, rng)
