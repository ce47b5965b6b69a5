"""Shared Gumbel noise: both sides derive g[position][token] from (session seed, absolute position).

The noise comes from a counter-based hash (splitmix64 of seed, position, token id), so any
implementation, in any language, that follows this file reproduces it bit for bit.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def gumbel_noise(seed: int, position: int, n_vocab: int) -> np.ndarray:
    """Standard Gumbel noise for one position, shape (n_vocab,), float64."""
    seed_key = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    key = _splitmix64(seed_key ^ np.uint64(position))
    bits = _splitmix64(key ^ (np.arange(n_vocab, dtype=np.uint64) * _GOLDEN))  # (V,)
    uniform = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # in (0, 1)
    return -np.log(-np.log(uniform))


def gumbel_argmax(probs: np.ndarray, noise: np.ndarray) -> int:
    """argmax(log probs + noise): an exact sample from probs when noise is fresh Gumbel noise."""
    with np.errstate(divide="ignore"):
        return int(np.argmax(np.log(probs) + noise))
