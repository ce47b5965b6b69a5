"""What the cloud sends the edge so the edge can sample a correction (the verdict's payload)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

import numpy as np

from picospec.sampling import ProbFormat, round_probs

# Candidate probabilities keep float32: exact mode's accept test divides by them.
CANDIDATE_FORMAT = ProbFormat.F32


class VerifyMode(str, Enum):
    """How a rejected position's correction is produced (see design.md, "Verification algorithms")."""

    FULL = "full"  # uplink whole draft distributions; the cloud samples the residual
    TOPK = "topk"  # uplink token + its draft prob; downlink the target's top-K at the rejection
    EXACT = "exact"  # uplink token + its draft prob; downlink i.i.d. target candidates
    GUMBEL = "gumbel"  # shared Gumbel noise; nothing but tokens travels

    @property
    def sends_draft_probs(self) -> bool:
        """Whether each draft token travels with its whole draft distribution."""
        return self is VerifyMode.FULL

    @property
    def sends_token_probs(self) -> bool:
        """Whether each draft token travels with its own draft probability (one scalar)."""
        return self in (VerifyMode.TOPK, VerifyMode.EXACT)


@dataclass(frozen=True)
class SparseDist:
    """The target's top-K entries at the rejected position (topk mode)."""

    indices: np.ndarray  # (K,) int64, token ids, most likely first
    probs: np.ndarray  # (K,) float64, target probabilities (not renormalised)

    @property
    def tail_mass(self) -> float:
        """Target probability mass outside the K entries: what topk drops."""
        return max(0.0, 1.0 - float(self.probs.sum()))


@dataclass(frozen=True)
class Candidates:
    """Tokens drawn i.i.d. from the target at the rejected position, with their target probs (exact mode)."""

    tokens: np.ndarray  # (m,) int64
    probs: np.ndarray  # (m,) float64, target_probs[token]

    def as_sent(self) -> "Candidates":
        """These candidates with their probabilities as the edge receives them."""
        return Candidates(self.tokens, round_probs(self.probs, CANDIDATE_FORMAT))


@dataclass(frozen=True)
class Verdict:
    """The cloud's answer to one chunk of draft tokens.

    accepted: how many leading draft tokens passed. Then exactly one of:
      token: a token the cloud decided (correction or bonus), or none after a fully accepted chunk
             verified without a bonus (the pipelined edge continues with its own drafts);
      sparse / candidates: material from which the edge samples the correction itself.
    """

    accepted: int
    rejected: bool
    token: int | None = None
    sparse: SparseDist | None = None
    candidates: Candidates | None = None

    @property
    def needs_edge_sampling(self) -> bool:
        return self.sparse is not None or self.candidates is not None

    def as_sent(self, sparse_format: ProbFormat) -> "Verdict":
        """This verdict with its material's probabilities as the edge receives them."""
        if self.sparse is not None:
            return replace(self, sparse=SparseDist(self.sparse.indices, round_probs(self.sparse.probs, sparse_format)))
        if self.candidates is not None:
            return replace(self, candidates=self.candidates.as_sent())
        return self
