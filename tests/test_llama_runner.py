"""The llama.cpp runner and the draft/target vocabulary check, on the real default model pair where marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from picospec.errors import InvalidInputError, ModelError
from picospec.runners.base import ModelRunner, SeqEval, VocabInfo
from picospec.runners.llama import LlamaRunner

PROMPT = "Write a Python function that returns the sum of a list of numbers."
# A continuation long enough to cross several deterministic sub-batches (4 tokens each).
CONTINUATION = "def add(numbers):\n    total = 0\n    for n in numbers:"


@pytest.fixture
def draft(draft_runner: LlamaRunner) -> LlamaRunner:
    """The shared draft runner with an empty context."""
    draft_runner.rollback(0)
    return draft_runner


@pytest.fixture
def target(target_runner: LlamaRunner) -> LlamaRunner:
    """The shared target runner with an empty context."""
    target_runner.rollback(0)
    return target_runner


def rss_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


# Model files


def test_missing_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model file"):
        LlamaRunner(tmp_path / "absent.gguf")


def test_non_gguf_file_is_a_model_error(tmp_path: Path) -> None:
    fake = tmp_path / "notes.gguf"
    fake.write_text("just some text, renamed\n")
    with pytest.raises(ModelError, match="not a GGUF model file"):
        LlamaRunner(fake)


def test_truncated_gguf_is_a_model_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(12))
    with pytest.raises(ModelError, match="could not load"):
        LlamaRunner(broken)


# Compatibility check on synthetic vocabularies


def small_vocab(pieces: list[bytes], eos_ids: tuple[int, ...] = (3,), bos_id: int | None = None) -> VocabInfo:
    return VocabInfo.from_token_bytes(pieces, eos_ids, bos_id)


PIECES = [b"a", b"b", b"c", b"<|end|>"]


def test_identical_vocabularies_match() -> None:
    target = small_vocab(PIECES)
    assert target.mismatch(len(PIECES), small_vocab(list(PIECES)).fingerprint) is None


@pytest.mark.parametrize(
    "draft",
    [
        small_vocab(PIECES + [b"d"]),  # one token more
        small_vocab(PIECES, bos_id=0),  # a BOS id where the target has none
        small_vocab([b"a", b"B", b"c", b"<|end|>"]),  # one token's text changed
    ],
    ids=["size", "bos", "token text"],
)
def test_vocabulary_mismatch_is_reported(draft: VocabInfo) -> None:
    reason = small_vocab(PIECES).mismatch(draft.n_vocab, draft.fingerprint)
    assert reason is not None and "vocabularies differ" in reason and f"has {draft.n_vocab} tokens" in reason


def test_end_of_generation_ids_may_differ() -> None:
    # A GGUF's end-of-generation set (llama.cpp's) and a checkpoint's (its generation config) differ
    # for the same tokenizer; each side stops by its own, and the tokens keep their meaning.
    draft = small_vocab(PIECES, eos_ids=(2, 3))
    assert small_vocab(PIECES).mismatch(draft.n_vocab, draft.fingerprint) is None


# The real pair


@pytest.mark.real
def test_both_models_load(draft: LlamaRunner, target: LlamaRunner) -> None:
    for runner in (draft, target):
        assert isinstance(runner, ModelRunner)
        assert runner.n_vocab == 151_936
        assert runner.n_tokens == 0


@pytest.mark.real
def test_default_pair_is_compatible(draft: LlamaRunner, target: LlamaRunner) -> None:
    draft_vocab, target_vocab = draft.vocab_info(), target.vocab_info()
    assert target_vocab.mismatch(draft_vocab.n_vocab, draft_vocab.fingerprint) is None
    im_end, endoftext = target.tokenize("<|im_end|><|endoftext|>", add_special=False, parse_special=True)
    assert {im_end, endoftext} <= set(target_vocab.eos_ids)


@pytest.mark.real
def test_compat_refuses_a_changed_real_token(target: LlamaRunner) -> None:
    pieces = target.all_token_bytes()
    changed = list(pieces)
    changed[1000] = b"\xffnot a qwen token"
    vocab = target.vocab_info()
    impostor = VocabInfo.from_token_bytes(changed, vocab.eos_ids, vocab.bos_id)
    assert "vocabularies differ" in vocab.mismatch(impostor.n_vocab, impostor.fingerprint)
    assert "has 151680 tokens" in vocab.mismatch(vocab.n_vocab - 256, vocab.fingerprint)


@pytest.mark.real
def test_extend_shapes_and_context(target: LlamaRunner) -> None:
    prompt = target.chat_tokens(PROMPT)
    logits = target.extend(prompt)
    assert logits.shape == (len(prompt), target.n_vocab)
    assert logits.dtype == np.float32
    assert np.isfinite(logits).all()
    assert target.extend([]).shape == (0, target.n_vocab)
    assert target.tokens == prompt and target.n_tokens == len(prompt)


@pytest.mark.real
def test_bad_input_is_refused_without_changing_the_context(draft: LlamaRunner) -> None:
    draft.extend(draft.tokenize("hello"))
    before = draft.tokens
    with pytest.raises(InvalidInputError, match="outside the vocabulary"):
        draft.extend([1, draft.n_vocab])
    with pytest.raises(InvalidInputError, match="outside the vocabulary"):
        draft.extend([-1])
    with pytest.raises(InvalidInputError, match="cannot roll back"):
        draft.rollback(len(before) + 1)
    with pytest.raises(InvalidInputError, match="context overflow"):
        draft.extend([0] * (draft.n_ctx - len(before) + 1))
    assert draft.tokens == before


@pytest.mark.real
@pytest.mark.parametrize("which", ["draft", "target"])
def test_deterministic_logits_do_not_depend_on_chunking(which: str, request: pytest.FixtureRequest) -> None:
    runner: LlamaRunner = request.getfixturevalue(which)
    prompt = runner.chat_tokens(PROMPT)
    continuation = runner.tokenize(CONTINUATION, add_special=False)
    assert len(continuation) >= 10
    runner.extend(prompt)
    at_once = runner.extend(continuation)  # (n, V)
    runner.rollback(len(prompt))
    one_by_one = np.concatenate([runner.extend([token]) for token in continuation])  # (n, V)
    assert np.array_equal(at_once, one_by_one)


@pytest.mark.real
def test_rollback_then_extend_matches_a_fresh_evaluation(target: LlamaRunner) -> None:
    prompt = target.chat_tokens(PROMPT)
    continuation = target.tokenize(CONTINUATION, add_special=False)
    fresh = target.extend(prompt + continuation)[len(prompt) :]  # (n, V)
    target.rollback(len(prompt) + 3)
    target.extend(target.tokenize(" something else entirely", add_special=False))
    target.rollback(len(prompt))
    again = target.extend(continuation)  # (n, V)
    assert np.array_equal(again, fresh)


@pytest.mark.real
def test_prefill_returns_the_last_row_of_a_full_evaluation(draft: LlamaRunner) -> None:
    prompt = draft.chat_tokens(PROMPT)
    full = draft.extend(prompt)  # (n, V)
    draft.rollback(0)
    last = draft.prefill(prompt)  # (V,)
    assert last.shape == (draft.n_vocab,) and draft.n_tokens == len(prompt)
    # Prefill batches the whole prompt, so it matches closely, and itself bit for bit.
    assert np.abs(last - full[-1]).max() < 1.0 and last.argmax() == full[-1].argmax()
    draft.rollback(0)
    assert np.array_equal(draft.prefill(prompt), last)


@pytest.mark.real
def test_rollback_default_mode_is_close(draft_path: Path) -> None:
    runner = LlamaRunner(draft_path, n_ctx=512)
    prompt = runner.chat_tokens(PROMPT)
    continuation = runner.tokenize(CONTINUATION, add_special=False)
    fresh = runner.extend(prompt + continuation)[len(prompt) :]  # (n, V)
    runner.rollback(len(prompt) + 2)
    runner.extend(runner.tokenize(" other", add_special=False))
    runner.rollback(len(prompt))
    again = np.concatenate([runner.extend([token]) for token in continuation])  # (n, V)
    # Default mode: one long batch vs one token at a time differed here by at most 0.44 (0.5B) and 0.57
    # (1.5B) in a logit, with 0 and 1 of 16 argmaxes flipped.
    np.testing.assert_allclose(again, fresh, rtol=0, atol=1.0)
    assert (again.argmax(axis=1) == fresh.argmax(axis=1)).mean() >= 0.8


@pytest.mark.real
def test_greedy_chat_reply_is_sensible(target: LlamaRunner) -> None:
    logits = target.extend(target.chat_tokens("What is the capital of France? Answer in one word."))[-1]
    reply = []
    eos = set(target.vocab_info().eos_ids)
    for _ in range(8):
        token = int(logits.argmax())
        if token in eos:
            break
        reply.append(token)
        logits = target.extend([token])[0]
    assert "Paris" in target.detokenize(reply)


@pytest.mark.real
def test_memory_does_not_grow_with_context_times_vocabulary(draft_path: Path) -> None:
    before = rss_bytes()
    runner = LlamaRunner(draft_path, n_ctx=4096)
    runner.extend(runner.chat_tokens(PROMPT))
    grown = rss_bytes() - before
    logits_all_bytes = runner.n_ctx * runner.n_vocab * 4  # what Llama(logits_all=True) would allocate: 2.5 GB
    assert grown < draft_path.stat().st_size + 2**30 < logits_all_bytes


# Several sequences in one context (the batching cloud's target) and GPU offload


def test_gpu_layers_on_a_build_without_a_gpu_backend_is_a_clear_error(draft_path: Path, monkeypatch) -> None:
    import llama_cpp

    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)
    with pytest.raises(InvalidInputError, match="no GPU backend"):
        LlamaRunner(draft_path, gpu_layers=8)
    with pytest.raises(InvalidInputError, match="-1 \\(all\\)"):
        LlamaRunner(draft_path, gpu_layers=-2)


def test_the_deterministic_configuration_holds_one_sequence(draft_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="holds one sequence"):
        LlamaRunner(draft_path, deterministic=True, n_seq=2)


@pytest.mark.real
def test_sequences_evaluated_together_are_isolated_and_roll_back_alone(draft_path: Path) -> None:
    """A sequence's rows do not depend on what other sequences of the pass hold (only on the pass's
    shape), and match one-sequence evaluation up to the fast configuration's batch effects."""
    runner = LlamaRunner(draft_path, n_ctx=256, n_seq=3, n_batch=32)
    alone = LlamaRunner(draft_path, n_ctx=256)
    prompt = tuple(runner.tokenize(PROMPT))
    other = tuple(runner.tokenize("Tell me a story about a cat."))[: len(prompt)]
    other += (other[-1],) * (len(prompt) - len(other))
    continuation = tuple(runner.tokenize(CONTINUATION, add_special=False))[:6]

    def pass_over(second: tuple[int, ...]) -> list[np.ndarray]:
        for seq in range(3):
            runner.rollback_seq(seq, 0)
        runner.evaluate([SeqEval(0, 0, prompt, 1), SeqEval(1, 0, second, 1)])
        return runner.evaluate([SeqEval(0, len(prompt), continuation, len(continuation)),
                                SeqEval(2, 0, continuation, 2)])  # fmt: skip

    first, again = pass_over(prompt), pass_over(other)
    np.testing.assert_array_equal(first[0], again[0])  # what sequence 1 held made no difference
    assert first[1].shape == (2, runner.n_vocab)
    alone.prefill(prompt)
    reference = alone.extend(continuation)  # (6, V)
    np.testing.assert_allclose(first[0], reference, atol=1.0)
    # Rolling sequence 0 back leaves sequence 2 where it was, and sequence 0 continues as before.
    runner.rollback_seq(0, len(prompt))
    rows = runner.evaluate([SeqEval(0, len(prompt), continuation, len(continuation)), SeqEval(2, 6, continuation, 1)])
    np.testing.assert_allclose(rows[0], first[0], atol=1e-3)
    with pytest.raises(InvalidInputError, match="holds 12 tokens, not 0"):
        runner.evaluate([SeqEval(2, 0, continuation, 1)])
    with pytest.raises(InvalidInputError, match="at most once"):
        runner.evaluate([SeqEval(1, len(prompt), (1,), 1), SeqEval(1, len(prompt) + 1, (1,), 1)])
    with pytest.raises(InvalidInputError, match="exceed n_batch 32"):
        runner.evaluate([SeqEval(1, len(prompt), (1,) * 33, 1)])


@pytest.mark.real
def test_runners_of_one_file_share_its_loaded_model(draft_path: Path) -> None:
    """A cloud with a context per session loads its target once (each load of repacked weights is a private copy)."""
    first, second = LlamaRunner(draft_path, n_ctx=64), LlamaRunner(draft_path, n_ctx=64)
    assert first._model is second._model  # noqa: SLF001
    assert LlamaRunner(draft_path, n_ctx=64, deterministic=True)._model is not first._model  # noqa: SLF001
    first.prefill([1, 2, 3])
    assert second.n_tokens == 0  # contexts (and KV caches) stay their own
