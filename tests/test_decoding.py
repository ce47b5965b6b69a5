"""Sequence-level exactness of speculative decoding on toy models, for every verification mode, and
on tiny Hugging Face checkpoints (the HF runner: same tests, through transformers and its KV cache)."""

import numpy as np
import pytest

import picospec.verify.algorithms as algorithms
from picospec.decoding import Drafter, TargetVerifier, generate_autoregressive, generate_speculative
from picospec.runners.toy import ToyRunner
from picospec.sampling import SamplingParams
from picospec.verify import VerifyConfig, VerifyMode
from stats import ALPHA, sequence_distribution, sequence_pvalue

V, LENGTH, PROMPT = 3, 3, [0]
TARGET = ToyRunner.create(V, seed=11)
N = 5000
N_HF = 1000  # a transformers forward pass costs about a millisecond: fewer samples, the same test


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    """(target, drafter): two tiny random Qwen2 checkpoints over one 4-token vocabulary, as HFRunners."""
    pytest.importorskip("transformers")
    from hf_models import letter_tokenizer, tiny_checkpoint

    from picospec.runners.hf import HFRunner

    tokenizer = letter_tokenizer("abc")
    root = tmp_path_factory.mktemp("hf")
    return tuple(HFRunner(tiny_checkpoint(root / name, tokenizer, seed)) for name, seed in (("target", 11), ("drafter", 5)))


def sample_sequences(mode: str, params: SamplingParams, n: int, draft_len: int = 2, seed: int = 0, pair=None, **cfg) -> dict:
    """Counts of the LENGTH-token sequences speculative decoding samples; pair = (target, drafter), default the toys."""
    target, draft_runner = pair or (TARGET, TARGET.drafter(seed=5, noise=1.0))
    config = VerifyConfig(mode=mode, topk=target.n_vocab, **cfg)
    drafter = Drafter(draft_runner, params, config, np.random.default_rng([seed, 1]))
    verifier = TargetVerifier(target, params, config, np.random.default_rng([seed, 2]))
    counts: dict[tuple, int] = {}
    for i in range(n):
        if mode == "gumbel":  # a fresh shared seed per sample: the noise must be independent
            drafter.config = verifier.config = VerifyConfig(mode=mode, seed=seed * n + i)
        tokens = tuple(generate_speculative(drafter, verifier, PROMPT, LENGTH, draft_len).token_ids)
        counts[tokens] = counts.get(tokens, 0) + 1
    return counts


CASES = [(mode, SamplingParams(temperature=1.0)) for mode in VerifyMode] + [
    ("exact", SamplingParams(temperature=0.7, top_k=2)),
    ("gumbel", SamplingParams(temperature=1.3, top_p=0.8)),
    ("topk", SamplingParams(temperature=1.0, top_k=2)),  # the target fits in K: exact
]


@pytest.mark.parametrize("mode, params", CASES, ids=lambda x: getattr(x, "value", None) or str(x))
@pytest.mark.parametrize("runners", ["toy", "hf"])
def test_sequences_converge_on_the_target_distribution(mode, params, runners, request):
    if runners == "hf" and params != SamplingParams(temperature=1.0):
        pytest.skip("the HF runner is checked once per mode; the transforms are the toy cases' concern")
    pair = request.getfixturevalue("hf_pair") if runners == "hf" else None
    n = N_HF if pair else N
    counts = sample_sequences(mode, params, n, pair=pair)
    assert sum(counts.values()) == n
    target = pair[0] if pair else TARGET
    assert sequence_pvalue(counts, sequence_distribution(target, PROMPT, params, LENGTH)) > ALPHA


def test_negative_control_a_wrong_residual_fails_the_convergence_test(monkeypatch):
    # Sampling the correction from the target itself, not from the residual, must be detected.
    monkeypatch.setattr(algorithms, "residual", lambda target_row, draft_row: target_row)
    params = SamplingParams(temperature=1.0)
    counts = sample_sequences("full", params, N)
    assert sequence_pvalue(counts, sequence_distribution(TARGET, PROMPT, params, LENGTH)) < ALPHA


DRAFTERS = [TARGET.drafter(seed=s, noise=noise) for s, noise in [(1, 0.2), (2, 1.0), (3, 3.0)]] + [
    ToyRunner.create(V, seed=99)  # an unrelated model
]


@pytest.mark.parametrize("mode", list(VerifyMode))
@pytest.mark.parametrize("drafter_index", [*range(len(DRAFTERS)), "hf"])
def test_greedy_speculative_equals_greedy_target(mode, drafter_index, request):
    target, draft_runner = request.getfixturevalue("hf_pair") if drafter_index == "hf" else (TARGET, DRAFTERS[drafter_index])
    params, config = SamplingParams(temperature=0), VerifyConfig(mode=mode)
    for prompt in ([0], [1, 2], [2, 2, 0]):
        reference = generate_autoregressive(target, prompt, params, config, np.random.default_rng(0), 12)
        drafter = Drafter(draft_runner, params, config, np.random.default_rng(1))
        verifier = TargetVerifier(target, params, config, np.random.default_rng(2))
        assert generate_speculative(drafter, verifier, prompt, 12, draft_len=3).token_ids == reference.token_ids


@pytest.mark.parametrize("params", [SamplingParams(temperature=1.0), SamplingParams(temperature=0.8, top_k=2)])
@pytest.mark.parametrize("draft_runner", DRAFTERS)
def test_gumbel_output_is_the_target_only_output_for_the_same_seed(params, draft_runner):
    for seed in range(5):
        config = VerifyConfig(mode="gumbel", seed=seed)
        reference = generate_autoregressive(TARGET, [1], params, config, np.random.default_rng(0), 16).token_ids
        drafter = Drafter(draft_runner, params, config, np.random.default_rng(seed))
        verifier = TargetVerifier(TARGET, params, config, np.random.default_rng(seed + 100))
        assert generate_speculative(drafter, verifier, [1], 16, draft_len=4).token_ids == reference


def test_gumbel_outputs_differ_across_seeds():
    params = SamplingParams(temperature=1.0)
    outputs = {
        tuple(generate_autoregressive(TARGET, [1], params, VerifyConfig(mode="gumbel", seed=s), None, 16).token_ids)
        for s in range(6)
    }
    assert len(outputs) > 1


def test_caches_end_on_the_committed_context():
    params, config = SamplingParams(temperature=1.0), VerifyConfig(mode="exact")
    draft_runner = TARGET.drafter(seed=5)
    drafter = Drafter(draft_runner, params, config, np.random.default_rng(0))
    verifier = TargetVerifier(ToyRunner.create(V, seed=11), params, config, np.random.default_rng(1))
    result = generate_speculative(drafter, verifier, [0, 1], 40, draft_len=3)
    committed = [0, 1] + result.token_ids
    assert len(result.token_ids) == 40
    assert draft_runner.tokens[: len(committed)] == committed
    assert verifier.committed >= len(committed)
    assert result.rounds == len(result.accepted_lengths) and result.target_passes == result.rounds + 1


def test_generation_stops_after_a_stop_token():
    params, config = SamplingParams(temperature=0), VerifyConfig(mode="exact")
    reference = generate_autoregressive(TARGET, [0], params, config, np.random.default_rng(0), 20).token_ids
    stop = reference[4]
    drafter = Drafter(TARGET.drafter(seed=1), params, config, np.random.default_rng(0))
    verifier = TargetVerifier(TARGET, params, config, np.random.default_rng(1))
    out = generate_speculative(drafter, verifier, [0], 20, draft_len=3, stop_ids=[stop]).token_ids
    assert out == reference[: reference.index(stop) + 1]


def absorbing_drafter(mode: str = "exact") -> Drafter:
    drafter = Drafter(TARGET.drafter(seed=5, noise=1.0), SamplingParams(temperature=1.0), VerifyConfig(mode=mode), np.random.default_rng(0))
    drafter.begin([0, 1, 2])
    return drafter


@pytest.mark.parametrize("mode", list(VerifyMode))
def test_absorbed_tokens_get_one_hot_rows_and_the_drafters_own_confidence(mode):
    from picospec.sampling import confidence

    drafter = absorbing_drafter(mode)
    seen = []
    chunk = drafter.absorb([2, 0, 1], lambda conf, top, agrees: seen.append((conf, top, agrees)) or True)
    assert chunk.tokens.tolist() == [2, 0, 1] and chunk.start == 3 and chunk.from_lookup.all()
    np.testing.assert_array_equal(chunk.draft_probs, np.eye(V)[[2, 0, 1]])
    np.testing.assert_array_equal(chunk.token_probs, 1.0)  # what topk and exact uplink
    context = [0, 1, 2]
    for i, token in enumerate([2, 0, 1]):
        logits = drafter.runner.next_logits(context)
        assert chunk.confidences[i] == pytest.approx(confidence(logits, token))
        top = int(np.argmax(logits))
        assert seen[i] == (pytest.approx(confidence(logits, token)), pytest.approx(confidence(logits, top)), token == top)
        context.append(token)
    assert drafter.drafted_until == 6  # the drafter continues after them
    row = drafter.draft(1).draft_probs[0]
    if mode != "full":  # full mode drafts from float16-rounded rows
        np.testing.assert_allclose(row, _row(drafter, context))


def _row(drafter: Drafter, context: list[int]) -> np.ndarray:
    from picospec.sampling import logits_to_probs

    return logits_to_probs(drafter.runner.next_logits(context), drafter.params)


def test_absorbing_stops_at_the_first_token_the_controller_refuses_and_rolls_it_back():
    drafter = absorbing_drafter()
    calls = []
    chunk = drafter.absorb([2, 0, 1, 1], lambda *_: calls.append(1) or len(calls) <= 2)
    assert chunk.tokens.tolist() == [2, 0] and drafter.drafted_until == 5
    assert drafter.runner.tokens == [0, 1, 2, 2, 0]
    # The drafter drafts on from there as if it had drafted the two itself.
    np.testing.assert_allclose(drafter.draft(1).draft_probs[0], _row(drafter, [0, 1, 2, 2, 0]))


def test_a_refused_first_token_costs_no_pass_and_absorbs_nothing():
    drafter = absorbing_drafter()
    assert drafter.absorb([2, 0], lambda *_: False) is None
    assert drafter.drafted_until == 3 and drafter.runner.tokens == [0, 1, 2]


@pytest.mark.parametrize("mode", [VerifyMode.EXACT, VerifyMode.GUMBEL])
def test_following_the_cloud_prices_each_token_by_its_target_probability(mode):
    """The cloud's decode_scored gives each token's target probability p(x); the drafter following
    those tokens scores min(1, q(x)/p(x)) (gumbel: q(x), whose accept test is not rejection sampling)."""
    params, config = SamplingParams(temperature=1.0), VerifyConfig(mode=mode, seed=4)
    verifier = TargetVerifier(TARGET, params, config, np.random.default_rng(0))
    verifier.begin(PROMPT)
    decoded = [verifier.decode_scored() for _ in range(8)]
    context = list(PROMPT)
    for token, p in decoded:
        assert p == pytest.approx(_target_row(context, params)[token])
        context.append(token)
    drafter = Drafter(TARGET.drafter(seed=5, noise=1.0), params, config, np.random.default_rng(1))
    drafter.begin(PROMPT)
    shadow = drafter.follow([t for t, _ in decoded], [p for _, p in decoded])
    context = list(PROMPT)
    for (token, p), (_, passed) in zip(decoded, shadow):
        q = _row(drafter, context)[token]
        assert passed == pytest.approx(q if mode is VerifyMode.GUMBEL else min(1.0, q / p))
        context.append(token)
    assert any(passed not in (0.0, 1.0) for _, passed in shadow)
    assert drafter.committed == len(PROMPT) + len(decoded)


def _target_row(context: list[int], params: SamplingParams) -> np.ndarray:
    from picospec.sampling import logits_to_probs

    return logits_to_probs(TARGET.next_logits(context), params)
