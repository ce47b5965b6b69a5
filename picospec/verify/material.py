"""What the cloud sends the edge so the edge can sample a correction (the verdict's payload)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


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


class ProbFormat(str, Enum):
    """How probabilities travel: 4, 2 or 1 byte each (q8 adds one float32 scale per message)."""

    F32 = "f32"
    F16 = "f16"
    Q8 = "q8"


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
