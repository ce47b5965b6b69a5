import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from picospec.errors import InvalidInputError
from picospec.sampling import SamplingParams, check_distribution, logits_to_probs, residual, sample
from stats import ALPHA, chi_square_pvalue

LOGITS = np.array([[2.0, 1.0, 0.5, -1.0, 3.0]])


def test_greedy_is_one_hot_at_argmax():
    probs = logits_to_probs(LOGITS, SamplingParams(temperature=0))
    assert probs.tolist() == [[0, 0, 0, 0, 1]]


def test_temperature_matches_softmax():
    probs = logits_to_probs(LOGITS, SamplingParams(temperature=0.5))
    expected = np.exp(LOGITS / 0.5) / np.exp(LOGITS / 0.5).sum()
    np.testing.assert_allclose(probs, expected, rtol=1e-12)


def test_top_k_keeps_the_k_most_likely():
    probs = logits_to_probs(LOGITS, SamplingParams(temperature=1, top_k=2))
    assert np.flatnonzero(probs[0]).tolist() == [0, 4]
    np.testing.assert_allclose(probs[0, [0, 4]], np.exp([2, 3]) / np.exp([2, 3]).sum())


def test_top_p_keeps_the_smallest_set_reaching_p():
    full = logits_to_probs(LOGITS, SamplingParams(temperature=1))[0]
    order = np.argsort(-full)
    p = full[order[0]] + 0.5 * full[order[1]]  # needs the two most likely tokens
    probs = logits_to_probs(LOGITS, SamplingParams(temperature=1, top_p=p))[0]
    assert set(np.flatnonzero(probs)) == set(order[:2])
    assert probs.sum() == pytest.approx(1)


@settings(max_examples=60, deadline=None)
@example(  # logits that differ but give equal probabilities: the argmax must still lead
    logits=np.array([[0.0, 0.0, 1.8e-205, 0.0, 0.0, 0.0, 0.0]] * 3), temperature=0.3, top_k=0, top_p=0.25
)
@given(
    logits=arrays(np.float64, (3, 7), elements=st.floats(-30, 30)),
    temperature=st.sampled_from([0.0, 0.3, 1.0, 2.5]),
    top_k=st.integers(0, 8),
    top_p=st.floats(0.05, 1.0),
)
def test_every_transform_gives_distributions(logits, temperature, top_k, top_p):
    probs = logits_to_probs(logits, SamplingParams(temperature, top_k, top_p))
    check_distribution(probs)
    assert probs.shape == logits.shape
    # the most likely token always survives every cut
    assert np.all(probs[np.arange(3), logits.argmax(axis=1)] > 0)


@pytest.mark.parametrize(
    "kwargs", [{"temperature": -1}, {"temperature": float("nan")}, {"top_k": -2}, {"top_p": 0}, {"top_p": 1.5}]
)
def test_bad_params_are_refused(kwargs):
    with pytest.raises(InvalidInputError):
        SamplingParams(**kwargs)


def test_bad_logits_and_distributions_are_refused():
    with pytest.raises(InvalidInputError):
        logits_to_probs(np.array([1.0, np.nan]), SamplingParams(1))
    with pytest.raises(InvalidInputError):
        logits_to_probs(np.zeros((2, 0)), SamplingParams(1))
    with pytest.raises(InvalidInputError, match="sum to 1"):
        check_distribution(np.array([0.5, 0.6]))
    with pytest.raises(InvalidInputError, match="negative"):
        check_distribution(np.array([1.5, -0.5]))
    with pytest.raises(InvalidInputError, match="zero mass"):
        sample(np.zeros(3), np.random.default_rng(0))


def test_sample_converges_on_the_distribution():
    probs = np.array([0.1, 0.0, 0.25, 0.6, 0.05])
    rng = np.random.default_rng(0)
    counts = np.bincount([sample(probs, rng) for _ in range(20000)], minlength=5)
    assert counts[1] == 0
    assert chi_square_pvalue(counts, probs) > ALPHA


def test_residual_is_the_positive_part():
    assert residual(np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.5, 0.3])).tolist() == pytest.approx([0.3, 0, 0])
