"""Goodness-of-fit helpers for the distribution-convergence tests."""

from __future__ import annotations

import numpy as np
from scipy import stats

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
