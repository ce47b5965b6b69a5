"""Shared Gumbel noise: both sides derive g[position][token] from (session seed, absolute position).

The noise comes from a counter-based hash (splitmix64 of seed, position, token id), so any
implementation, in any language, that follows this file reproduces it bit for bit.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

from picospec.errors import InvalidInputError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_SHIFTS = (np.uint64(30), np.uint64(27), np.uint64(31))
_MANTISSA = 2.0**53
# Rounding room for gumbel_argmax's candidate filter: far wider than float64's relative error on
# the few operations it takes, so no token that could win is ever filtered out.
_FILTER_SLACK = 1.0 + 1e-9


def _splitmix64(z: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic), in place on z."""
    scratch = np.empty_like(z) if scratch is None else scratch
    with np.errstate(over="ignore"):
        z += _GOLDEN
        for shift, mix in zip(_SHIFTS, (_MIX1, _MIX2, None)):
            np.right_shift(z, shift, out=scratch)
            z ^= scratch
            if mix is not None:
                z *= mix
    return z


@lru_cache(maxsize=4)
def _token_keys(n_vocab: int) -> np.ndarray:
    """token id * golden ratio, shape (n_vocab,): the per-token half of every position's hash."""
    with np.errstate(over="ignore"):
        keys = np.arange(n_vocab, dtype=np.uint64) * _GOLDEN
    keys.flags.writeable = False
    return keys


# Two vocabulary-sized buffers per thread, reused from call to call: a fresh 1.2 MB array is
# mapped, faulted in and unmapped by the allocator each time, which tripled the cost of a draw
# inside the cloud (3.4 ms a token, against 0.5 ms in a loop that reuses freed memory).
_workspace = threading.local()


def _buffers(n_vocab: int) -> tuple[np.ndarray, np.ndarray]:
    buffers = getattr(_workspace, "buffers", None)
    if buffers is None or buffers[0].size != n_vocab:
        buffers = _workspace.buffers = (np.empty(n_vocab, np.uint64), np.empty(n_vocab, np.uint64))
    return buffers


def _mantissas(seed: int, position: int, n_vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """The 53 random bits m of every token at a position, shape (n_vocab,), uint64 in [0, 2**53):
    the token's uniform is u = (m + 0.5) / 2**53, in (0, 1). Returned in this thread's workspace,
    with its other buffer (scratch), both valid until the next call."""
    bits, scratch = _buffers(n_vocab)
    seed_key = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    key = _splitmix64(seed_key ^ np.uint64(position))
    np.bitwise_xor(_token_keys(n_vocab), key, out=bits)
    _splitmix64(bits, scratch)
    bits >>= np.uint64(11)
    return bits, scratch


def _exponentials(mantissas: np.ndarray) -> np.ndarray:
    """-log(u), the standard exponential each token's uniform gives, same shape, float64."""
    return -np.log((mantissas.astype(np.float64) + 0.5) / _MANTISSA)


def gumbel_noise(seed: int, position: int, n_vocab: int) -> np.ndarray:
    """Standard Gumbel noise for one position, shape (n_vocab,), float64: -log(-log(u))."""
    return -np.log(_exponentials(_mantissas(seed, position, n_vocab)[0]))


def gumbel_argmax(probs: np.ndarray, seed: int, position: int) -> int:
    """argmax(log probs + gumbel_noise(seed, position)): an exact sample from probs (V,), the same
    token on every side that shares the seed.

    Computed as the exponential race it equals, argmin(-log u / probs), and without a logarithm
    over the whole vocabulary (float64 logs dominate the cost on a CPU without AVX-512): the most
    likely token's time bounds the winner's, and a token can beat a time t only if 1 - u < t * p
    (as -log u >= 1 - u), a test that passes for a few tokens; only those are timed exactly.
    """
    mantissas, scratch = _mantissas(seed, int(position), probs.size)  # (V,) each
    top = int(np.argmax(probs))
    if not probs[top] > 0:
        raise InvalidInputError("cannot sample from a distribution with zero mass")
    bound = float(_exponentials(mantissas[top]) / probs[top])
    # 1 - u < t p  <=>  (2**53 - m - 0.5) / (t 2**53) < p, the left side loosened by the slack.
    gap = scratch.view(np.float64)  # (V,), in place: no vocabulary-sized allocation
    np.copyto(gap, mantissas, casting="unsafe")
    np.subtract(_MANTISSA, gap, out=gap)  # exact: integers below 2**53
    gap -= 0.5
    gap *= 1.0 / (bound * _MANTISSA * _FILTER_SLACK)
    candidates = np.flatnonzero(gap < probs)  # ascending ids, top among them
    with np.errstate(divide="ignore"):
        times = _exponentials(mantissas[candidates]) / probs[candidates]
    return int(candidates[np.argmin(times)])  # the lowest id on an exact tie, as argmax


def agreement_chance(draft_probs: np.ndarray, target_probs: np.ndarray, candidates: int = 32) -> np.ndarray:
    """The chance, over the shared noise, that the Gumbel-argmaxes of draft_probs and target_probs
    are the same token: gumbel mode's acceptance rate, at most sum_x min(p, q) (rejection
    sampling's) and below it wherever the rows differ.

    Both race with the same exponential times E_y: x wins both races iff E_y > E_x max(p_y / p_x,
    q_y / q_x) for every other y, so P(x wins both) = 1 / sum_y max(p_y / p_x, q_y / q_x) <= min(p_x,
    q_x). Summed over the `candidates` tokens of largest min(p_x, q_x); the rest add at most their
    min(p, q) mass.

    draft_probs, target_probs: (n, V) rows; returns (n,).
    """
    draft_probs = np.atleast_2d(np.asarray(draft_probs, dtype=np.float64))  # (n, V)
    target_probs = np.atleast_2d(np.asarray(target_probs, dtype=np.float64))  # (n, V)
    if draft_probs.shape != target_probs.shape:
        raise InvalidInputError(f"draft rows {draft_probs.shape} and target rows {target_probs.shape} differ")
    both = np.minimum(draft_probs, target_probs)  # (n, V)
    k = min(candidates, both.shape[1])
    chance = np.zeros(both.shape[0])  # (n,)
    for i, (q, p, shared) in enumerate(zip(draft_probs, target_probs, both)):
        xs = np.argpartition(shared, -k)[-k:]  # (k,)
        xs = xs[shared[xs] > 0]
        ratios = np.maximum(p[None, :] / p[xs, None], q[None, :] / q[xs, None])  # (k, V)
        chance[i] = float((1.0 / ratios.sum(axis=1)).sum())
    return chance
