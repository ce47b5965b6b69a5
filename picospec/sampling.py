"""Sampling transforms and samplers: pure functions shared by the edge and the cloud.

The rejection test compares the drafter's and the target's distributions, so both sides must turn
logits into probabilities with this one function and the same SamplingParams.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from picospec.errors import InvalidInputError


@dataclass(frozen=True)
class SamplingParams:
    """temperature == 0 means greedy; top_k == 0 and top_p == 1 disable those cuts."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise InvalidInputError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise InvalidInputError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise InvalidInputError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class ProbFormat(str, Enum):
    """The precision a probability keeps on its way to the other side: 4, 2 or 1 byte (q8: a
    float32 scale per message, then round(p / scale) as uint8). The wire codec lays out the bytes;
    the maths uses round_probs so that both sides compute with exactly what travels."""

    F32 = "f32"
    F16 = "f16"
    Q8 = "q8"


def round_probs(probs: np.ndarray, fmt: ProbFormat) -> np.ndarray:
    """Probabilities exactly as they arrive after travelling in `fmt`. Returns float64, same shape."""
    probs = np.asarray(probs, dtype=np.float64)
    if fmt is ProbFormat.F32:
        return probs.astype(np.float32).astype(np.float64)
    if fmt is ProbFormat.F16:
        return probs.astype(np.float16).astype(np.float64)
    scale = q8_scale(probs)
    return np.rint(probs / scale).astype(np.uint8).astype(np.float64) * float(np.float32(scale))


def q8_scale(probs: np.ndarray) -> float:
    """The q8 step: the largest probability maps to 255 (1.0 for an empty or all-zero array)."""
    return float(probs.max()) / 255 if probs.size and probs.max() > 0 else 1.0


def round_distributions(draft_probs: np.ndarray) -> np.ndarray:
    """Whole distributions (n, V) as they arrive in float16, renormalised: full mode drafts from
    these, so the accept test and the residual use the very distribution a draft token came from."""
    rows = round_probs(np.atleast_2d(draft_probs), ProbFormat.F16)  # (n, V)
    return rows / rows.sum(axis=1, keepdims=True)


def logits_to_probs(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """Apply temperature, top_k and top_p; return float64 probabilities of the same shape.

    logits: (..., V). Greedy gives a one-hot row at the argmax (lowest id on ties).
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 0 or logits.shape[-1] == 0:
        raise InvalidInputError("logits must have a non-empty last (vocabulary) axis")
    if not np.all(np.isfinite(logits) | (logits == -np.inf)):
        raise InvalidInputError("logits contain NaN or +inf")
    if params.greedy:
        probs = np.zeros_like(logits)
        np.put_along_axis(probs, logits.argmax(axis=-1)[..., None], 1.0, axis=-1)
        return probs
    scaled = logits / params.temperature  # (..., V)
    if 0 < params.top_k < scaled.shape[-1]:
        kth = np.partition(scaled, -params.top_k, axis=-1)[..., -params.top_k, None]
        scaled = np.where(scaled >= kth, scaled, -np.inf)
    probs = _softmax(scaled)
    if params.top_p < 1:
        probs = _top_p(probs, scaled, params.top_p)
    return probs


def confidence(logits: np.ndarray, token: int) -> float:
    """The model's own probability of `token` before any sampling transform (softmax at temperature
    1): how sure a drafter is of a token, also under greedy decoding where its probs are one-hot."""
    logits = np.asarray(logits, dtype=np.float64)  # (V,)
    top = logits.max()
    return float(np.exp(logits[token] - top) / np.exp(logits - top).sum())


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _top_p(probs: np.ndarray, scaled: np.ndarray, top_p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose mass reaches top_p, then renormalise.

    Tokens are ranked by their scaled logits, not their probabilities: logits that differ can
    round to equal probabilities, and the most likely token must never lose that tie."""
    order = np.argsort(-scaled, axis=-1, kind="stable")  # (..., V)
    sorted_probs = np.take_along_axis(probs, order, axis=-1)
    mass_before = np.cumsum(sorted_probs, axis=-1) - sorted_probs
    keep_sorted = mass_before < top_p  # the token that crosses top_p is kept
    keep = np.empty_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    cut = np.where(keep, probs, 0.0)
    return cut / cut.sum(axis=-1, keepdims=True)


def check_distribution(probs: np.ndarray, name: str = "probs", atol: float = 1e-4) -> np.ndarray:
    """Return probs as float64, or raise InvalidInputError unless every row is a distribution."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 0 or probs.shape[-1] == 0:
        raise InvalidInputError(f"{name} must have a non-empty vocabulary axis")
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise InvalidInputError(f"{name} has negative or non-finite entries")
    sums = probs.sum(axis=-1)
    if np.any(np.abs(sums - 1) > atol):
        raise InvalidInputError(f"{name} rows must sum to 1, got sums in [{sums.min():.6g}, {sums.max():.6g}]")
    return probs


def sample(probs: np.ndarray, rng: np.random.Generator) -> int:
    """Draw one token id from a probability vector (V,); it need not be exactly normalised."""
    cdf = np.cumsum(probs)  # (V,)
    if not cdf[-1] > 0:
        raise InvalidInputError("cannot sample from a distribution with zero mass")
    index = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    # Rounding can put the draw at the very top of the cdf: take the last token with mass.
    return index if index < len(cdf) else int(np.flatnonzero(probs)[-1])


def residual(target_probs: np.ndarray, draft_probs: np.ndarray) -> np.ndarray:
    """max(0, target_probs - draft_probs), unnormalised: the correction distribution after a rejection."""
    return np.maximum(np.asarray(target_probs, np.float64) - np.asarray(draft_probs, np.float64), 0.0)
