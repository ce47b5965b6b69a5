"""Goodness-of-fit helpers for the distribution-convergence tests."""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
from scipy import stats

from picospec.runners.base import ModelRunner
from picospec.runners.toy import ToyRunner
from picospec.sampling import SamplingParams, logits_to_probs

# A correct sampler fails a test at this level once in 10,000 runs; the negative controls show
# that the sample sizes used still catch a wrong residual or a missing normalisation.
ALPHA = 1e-4


def chi_square_pvalue(counts: np.ndarray, expected_probs: np.ndarray, min_expected: float = 5.0) -> float:
    """p-value of observed counts against expected probabilities; small cells are pooled."""
    counts = np.asarray(counts, dtype=np.float64).ravel()
    expected = np.asarray(expected_probs, dtype=np.float64).ravel() * counts.sum()
    if np.any((expected == 0) & (counts > 0)):
        return 0.0  # a sample where the distribution has no mass at all
    big = expected >= min_expected
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    keep = exp > 0
    return float(stats.chisquare(obs[keep], exp[keep]).pvalue)


def sequence_distribution(target: ModelRunner, prompt: Sequence[int], params: SamplingParams, length: int) -> dict[tuple, float]:
    """The target's exact probability of every continuation of `prompt` with `length` tokens (a small vocabulary)."""
    out = {}
    for seq in itertools.product(range(target.n_vocab), repeat=length):
        prob, context = 1.0, list(prompt)
        for token in seq:
            prob *= logits_to_probs(next_logits(target, context), params)[token]
            context.append(token)
        out[seq] = prob
    return out


def next_logits(target: ModelRunner, context: Sequence[int]) -> np.ndarray:
    """Logits (V,) for the token after `context`: the toy's table, or a fresh evaluation by any runner."""
    if isinstance(target, ToyRunner):
        return target.next_logits(context)
    target.rollback(0)
    logits = target.extend(context)[-1]
    target.rollback(0)
    return logits


def sequence_pvalue(counts: dict[tuple, int], expected: dict[tuple, float]) -> float:
    """chi_square_pvalue over sequences."""
    keys = list(expected)
    return chi_square_pvalue(np.array([counts.get(k, 0) for k in keys]), np.array([expected[k] for k in keys]))
