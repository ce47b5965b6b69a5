"""Exactness of each verification mode at one position: the committed token must follow target_probs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picospec.errors import InvalidInputError
from picospec.sampling import sample
from picospec.verify import (
    Verdict,
    VerifyConfig,
    VerifyMode,
    accept_count,
    cloud_verify,
    draft_token,
    draw_candidates,
    edge_correction,
    shadow_pass_chance,
    take_candidate,
    top_k_entries,
)
from picospec.sampling import round_distributions
from picospec.verify.gumbel import agreement_chance, gumbel_argmax, gumbel_noise
from stats import ALPHA, chi_square_pvalue

V = 6
TARGET = np.array([0.30, 0.25, 0.20, 0.12, 0.08, 0.05])
DRAFT = np.array([0.05, 0.40, 0.10, 0.30, 0.05, 0.10])
N = 10000


def one_position(mode: VerifyMode, target: np.ndarray, draft: np.ndarray, n: int, seed: int = 0, **cfg) -> np.ndarray:
    """Counts of the token committed at one position, over n independent rounds."""
    config = VerifyConfig(mode=mode, seed=seed, **cfg)
    edge_rng, cloud_rng = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    target_probs = np.stack([target, target])  # (2, V): the row after the chunk is unused here
    counts = np.zeros(target.size, dtype=np.int64)
    for i in range(n):
        if mode is VerifyMode.GUMBEL:
            config = VerifyConfig(mode=mode, seed=seed * n + i)  # fresh noise per round
        draft_row = round_distributions(draft)[0] if mode is VerifyMode.FULL else draft
        token = draft_token(draft_row, mode, config.seed, 0, edge_rng)
        verdict = cloud_verify(
            config, np.array([token]), target_probs, 0, cloud_rng,
            draft_token_probs=draft_row[[token]], draft_probs=draft_row[None, :],
        )  # fmt: skip
        verdict = verdict.as_sent(config.sparse_format)
        committed = token if not verdict.rejected else edge_correction(verdict, draft_row, edge_rng)
        while committed is None:  # exact mode: every candidate refused, ask for more
            committed = take_candidate(draw_candidates(target, token, config.n_candidates, cloud_rng), draft_row, edge_rng)
        counts[committed] += 1
    return counts


@pytest.mark.parametrize("mode", list(VerifyMode))
def test_every_mode_commits_exact_target_samples(mode):
    counts = one_position(mode, TARGET, DRAFT, N, topk=V)
    assert chi_square_pvalue(counts, TARGET) > ALPHA


def test_exact_mode_with_one_candidate_per_batch_still_exact():
    counts = one_position(VerifyMode.EXACT, TARGET, DRAFT, N, n_candidates=1)
    assert chi_square_pvalue(counts, TARGET) > ALPHA


def test_negative_control_correction_from_target_instead_of_residual_is_caught():
    """If the correction were drawn from the target itself, the test above would see it."""
    rng = np.random.default_rng(3)
    counts = np.zeros(V, dtype=np.int64)
    for _ in range(N):
        token = sample(DRAFT, rng)
        accepted = rng.random() < min(1.0, TARGET[token] / DRAFT[token])
        counts[token if accepted else sample(TARGET, rng)] += 1
    assert chi_square_pvalue(counts, TARGET) < ALPHA


def topk_predicted(target: np.ndarray, draft: np.ndarray, k: int) -> np.ndarray:
    """The distribution topk really produces: exact residual restricted to the top-K support."""
    accept = np.minimum(draft, target)  # P(draft x and accept)
    reject_mass = 1 - accept.sum()
    support = top_k_entries(target, k).indices
    restricted = np.zeros_like(target)
    restricted[support] = np.maximum(target[support] - draft[support], 0)
    return accept + reject_mass * restricted / restricted.sum()


def test_topk_bias_is_exactly_the_dropped_tail_effect():
    k = 2
    counts = one_position(VerifyMode.TOPK, TARGET, DRAFT, N, topk=k, sparse_format="f32")
    predicted = topk_predicted(TARGET, DRAFT, k)
    assert chi_square_pvalue(counts, predicted) > ALPHA  # behaves as the tail analysis says
    assert chi_square_pvalue(counts, TARGET) < ALPHA  # and that is measurably biased
    dropped_residual = np.maximum(TARGET - DRAFT, 0)[2:].sum()  # residual mass outside the top 2
    tv_bias = 0.5 * np.abs(predicted - TARGET).sum()
    assert 0 < tv_bias <= dropped_residual + 1e-12


def test_topk_is_exact_when_the_target_support_fits_in_k():
    target = np.array([0.5, 0.3, 0.2, 0, 0, 0])  # e.g. top_k=3 sampling
    counts = one_position(VerifyMode.TOPK, target, DRAFT, N, topk=3, sparse_format="f32")
    assert chi_square_pvalue(counts, target) > ALPHA


def test_greedy_target_sends_the_argmax_not_material():
    target = np.eye(V)[[2, 2]]  # (2, V) one-hot rows
    for mode in VerifyMode:
        verdict = cloud_verify(
            VerifyConfig(mode=mode), np.array([4]), target, 0, np.random.default_rng(0),
            draft_token_probs=np.array([0.5]), draft_probs=np.eye(V)[[4]],
        )  # fmt: skip
        assert (verdict.accepted, verdict.token, verdict.needs_edge_sampling) == (0, 2, False)


def test_accept_count_stops_at_the_first_failure():
    draft_probs = np.array([0.5, 0.5, 0.5, 0.5])
    target_probs = np.array([0.6, 0.4, 0.1, 0.9])
    assert accept_count(draft_probs, target_probs, np.array([0.99, 0.7, 0.9, 0.0])) == 2
    assert accept_count(draft_probs, target_probs, np.array([0.0, 0.0, 0.0, 0.0])) == 4
    assert accept_count(draft_probs, target_probs, np.array([0.0, 0.81, 0.0, 0.0])) == 1


def test_full_acceptance_with_and_without_bonus():
    tokens = np.array([1, 1])
    target = np.tile(TARGET, (3, 1))
    kwargs = dict(draft_token_probs=np.array([0.1, 0.1]))
    config = VerifyConfig(mode="exact")
    rng = np.random.default_rng(0)
    no_bonus = cloud_verify(config, tokens, target, 5, rng, **kwargs)
    assert (no_bonus.accepted, no_bonus.rejected, no_bonus.token) == (2, False, None)
    with_bonus = cloud_verify(config, tokens, target, 5, rng, bonus=True, **kwargs)
    assert with_bonus.accepted == 2 and with_bonus.token is not None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(draft_token_probs=np.array([0.0])), "draft token probabilities"),
        (dict(draft_token_probs=np.array([1.5])), "draft token probabilities"),
        (dict(draft_token_probs=None), "one draft probability"),
    ],
)
def test_bad_draft_probabilities_are_refused(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        cloud_verify(VerifyConfig(mode="exact"), np.array([1]), np.tile(TARGET, (2, 1)), 0, np.random.default_rng(0), **kwargs)


def test_bad_config_and_shapes_are_refused():
    with pytest.raises(InvalidInputError, match="K must be >= 1"):
        VerifyConfig(mode="topk", topk=0)
    with pytest.raises(ValueError):
        VerifyConfig(mode="nonsense")
    with pytest.raises(InvalidInputError, match="rows"):
        cloud_verify(VerifyConfig(), np.array([1, 2]), np.tile(TARGET, (2, 1)), 0, np.random.default_rng(0))


def test_candidates_never_include_the_rejected_token():
    candidates = draw_candidates(TARGET, 1, 500, np.random.default_rng(0))
    assert 1 not in candidates.tokens
    np.testing.assert_array_equal(candidates.probs, TARGET[candidates.tokens])


def test_edge_correction_passes_cloud_tokens_through():
    assert edge_correction(Verdict(accepted=1, rejected=True, token=3), None, np.random.default_rng(0)) == 3


def test_shadow_pass_chance_averages_to_the_acceptance_rate_over_the_targets_tokens():
    """Where the cloud decoded x ~ p, min(1, q(x)/p(x)) has mean sum min(p, q), the rate at which
    drafts x ~ q pass the accept test (checked by sampling); q(x) alone has mean sum p q, lower."""
    rate = np.minimum(TARGET, DRAFT).sum()
    priced = sum(p * shadow_pass_chance(q, p) for p, q in zip(TARGET, DRAFT))
    assert priced == pytest.approx(rate, abs=1e-12)
    assert sum(p * shadow_pass_chance(q, None) for p, q in zip(TARGET, DRAFT)) < rate - 0.1
    rng = np.random.default_rng(0)
    drafts = rng.choice(V, size=N, p=DRAFT)
    passed = rng.random(N) * DRAFT[drafts] < TARGET[drafts]  # the accept test, u < p(x) / q(x)
    assert passed.mean() == pytest.approx(rate, abs=4 * np.sqrt(rate * (1 - rate) / N))
    assert shadow_pass_chance(1.0, 1.0) == 1.0 and shadow_pass_chance(0.0, 1.0) == 0.0  # greedy: exact outcomes


# -- the shared Gumbel noise --------------------------------------------------------------------


def test_gumbel_noise_is_the_published_hash():
    """The noise is a wire contract (an edge in another language must reproduce it bit for bit):
    values from the first implementation, which a faster one must keep."""
    published = {
        (0, 0): (-0.6807578025137784, -0.21482217833158176, 0.54781702664023),
        (12345, 7): (0.8034860510601771, 1.8428072276204785, 2.8935673878626735),
        (2**63 + 5, 100000): (-0.1756883387582206, 2.693972390318187, 0.6930243405508816),
    }
    for (seed, position), values in published.items():
        noise = gumbel_noise(seed, position, 151936)
        assert noise[[0, 1, 151935]].tolist() == list(values)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**64 - 1),
    position=st.integers(0, 2**20),
    scale=st.floats(0.1, 30.0),
    kept=st.integers(1, 2000),
)
def test_gumbel_argmax_is_the_argmax_of_log_probs_plus_noise(seed, position, scale, kept):
    """The race computed without a vocabulary-wide log picks the very token of the definition,
    on flat and peaked distributions, with and without a cut (top-k) to few tokens."""
    rng = np.random.default_rng([seed % 2**32, position])
    logits = rng.normal(size=4096) * scale  # (V,)
    logits[np.argsort(logits)[:-kept]] = -np.inf
    probs = np.exp(logits - logits.max())  # (V,), unnormalised as llama.cpp rows may be
    with np.errstate(divide="ignore"):
        expected = int(np.argmax(np.log(probs) + gumbel_noise(seed, position, probs.size)))
    assert gumbel_argmax(probs, seed, position) == expected


def test_gumbel_argmax_refuses_a_row_without_mass():
    with pytest.raises(InvalidInputError):
        gumbel_argmax(np.zeros(8), 0, 0)


def test_gumbel_agreement_chance_is_how_often_the_shared_noise_picks_one_token_for_both():
    rng = np.random.default_rng(3)
    draft_probs, target_probs = rng.dirichlet(np.full(6, 0.5), size=(2, 3))  # (3, 6) each
    draws = 6000
    for q, p, chance in zip(draft_probs, target_probs, agreement_chance(draft_probs, target_probs)):
        agreed = sum(gumbel_argmax(q, 11, position) == gumbel_argmax(p, 11, position) for position in range(draws))
        assert abs(agreed / draws - chance) < 4 * np.sqrt(chance * (1 - chance) / draws)
        assert chance <= np.minimum(p, q).sum() + 1e-12  # below rejection sampling's rate
    same = rng.dirichlet(np.ones(6))
    assert agreement_chance(same, same)[0] == pytest.approx(1.0)
    assert agreement_chance(np.eye(6)[0], np.eye(6)[1])[0] == 0.0
