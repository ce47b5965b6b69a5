"""The Hugging Face runner on tiny checkpoints built here: the ModelRunner contract, KV-cache
rollback, the vocabulary fingerprint across backends, and the factory that picks a backend.
(Exactness of speculative decoding through it: test_decoding.py's hf cases.)"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

from hf_models import byte_level_tokenizer, letter_tokenizer, tiny_checkpoint  # noqa: E402

from picospec.errors import InvalidInputError, ModelError  # noqa: E402
from picospec.runners.base import ModelRunner  # noqa: E402
from picospec.runners.hf import HFRunner  # noqa: E402
from picospec.runners.load import load_runner  # noqa: E402

LETTERS = "abcdefgh"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tokenizer = letter_tokenizer(LETTERS)
    return tiny_checkpoint(tmp_path_factory.mktemp("hf") / "model", tokenizer, seed=0, eos_id=tokenizer.eos_token_id)


@pytest.fixture
def runner(checkpoint) -> HFRunner:
    return HFRunner(checkpoint)


def test_the_runner_keeps_the_contract(runner):
    assert isinstance(runner, ModelRunner)
    assert runner.n_vocab == len(LETTERS) + 1 and runner.n_tokens == 0
    prompt = runner.tokenize("abc")
    assert prompt == [0, 1, 2] and runner.detokenize(prompt + [len(LETTERS)]) == "abc"  # the end token has no text
    logits = runner.extend(prompt)
    assert logits.shape == (3, runner.n_vocab) and logits.dtype == np.float32 and np.isfinite(logits).all()
    assert runner.extend([]).shape == (0, runner.n_vocab) and runner.tokens == prompt
    assert runner.vocab_info().eos_ids == (len(LETTERS),)


def test_a_conversation_goes_through_the_chat_template(runner):
    end = len(LETTERS)
    conversation = [{"role": "system", "content": "ab"}, {"role": "user", "content": "c"}]
    assert runner.chat_messages_tokens(conversation) == [0, 1, end, 2, end]
    assert runner.chat_tokens("c") == [2, end]


def test_bad_input_is_refused_without_changing_the_context(runner):
    runner.extend([0, 1])
    with pytest.raises(InvalidInputError, match="outside the vocabulary"):
        runner.extend([0, runner.n_vocab])
    with pytest.raises(InvalidInputError, match="cannot roll back"):
        runner.rollback(3)
    with pytest.raises(InvalidInputError, match="context overflow"):
        runner.extend([0] * runner.n_ctx)
    assert runner.tokens == [0, 1]


def test_rollback_then_extend_equals_a_fresh_evaluation(runner):
    prompt, continuation = [0, 1, 2, 3], [4, 5, 6, 7, 1, 2]
    runner.extend(prompt)
    fresh = runner.extend(continuation)  # (n, V)
    runner.rollback(len(prompt) + 2)
    runner.extend([7, 7, 7])  # a rejected guess
    runner.rollback(len(prompt))
    assert np.array_equal(runner.extend(continuation), fresh)  # the same passes over the same cache: bit for bit
    runner.rollback(0)
    whole = runner.extend(prompt + continuation)[len(prompt) :]
    runner.rollback(len(prompt))
    one_by_one = np.concatenate([runner.extend([t]) for t in continuation])
    # Other batchings change float rounding only.
    np.testing.assert_allclose(whole, fresh, atol=1e-4)
    np.testing.assert_allclose(one_by_one, fresh, atol=1e-4)


def test_prefill_returns_the_last_row(runner):
    full = runner.extend([3, 1, 4, 1, 5])[-1]
    runner.rollback(0)
    last = runner.prefill([3, 1, 4, 1, 5])
    assert last.shape == (runner.n_vocab,) and runner.n_tokens == 5
    np.testing.assert_allclose(last, full, atol=1e-5)


def test_checkpoints_with_the_same_tokenizer_are_compatible_and_others_are_not(tmp_path, checkpoint):
    same = HFRunner(tiny_checkpoint(tmp_path / "same", letter_tokenizer(LETTERS), seed=1)).vocab_info()  # other weights
    assert HFRunner(checkpoint).vocab_info().mismatch(same.n_vocab, same.fingerprint) is None
    other = HFRunner(tiny_checkpoint(tmp_path / "other", letter_tokenizer("abcdefgz"), seed=1)).vocab_info()
    assert other.n_vocab == same.n_vocab and "vocabularies differ" in same.mismatch(other.n_vocab, other.fingerprint)


def test_byte_level_tokens_are_reported_as_their_bytes(tmp_path):
    pieces = [bytes([b]) for b in range(256)] + ["é".encode(), b" hello"]
    tokenizer = byte_level_tokenizer(pieces, [("<|im_end|>", True), ("<|endoftext|>", True)])
    runner = HFRunner(tiny_checkpoint(tmp_path / "bytes", tokenizer, seed=0, n_vocab=300))
    assert [runner.token_bytes(t) for t in (0xC3, 256, 257, 258)] == [b"\xc3", "é".encode(), b" hello", b"<|im_end|>"]
    assert runner.token_bytes(258, special=False) == b"" and runner.token_bytes(299) == b""  # padding rows: no text
    assert runner.detokenize([0xC3, 0xA9, 257]) == "é hello"
    assert runner.vocab_info().eos_ids == (258, 259)  # the end-of-turn special tokens, though the config names none


def test_the_factory_picks_the_backend_by_path(checkpoint, tmp_path):
    assert isinstance(load_runner(str(checkpoint)), HFRunner)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_runner(str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="no model file or checkpoint directory"):
        load_runner(str(tmp_path / "absent"))
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(InvalidInputError, match="--device cuda: GGUF models run on llama.cpp"):
        load_runner(str(tmp_path / "model.gguf"), device="cuda")


@pytest.mark.real
def test_a_gguf_drafter_and_a_checkpoint_with_its_tokenizer_share_the_fingerprint_and_decode_exactly(tmp_path):
    """The default GGUF drafter drafts for a tiny random checkpoint whose tokenizer spells the GGUF's
    vocabulary: the vocabulary check passes, and greedy speculative output is the checkpoint's own."""
    import llama_cpp

    from picospec.decoding import Drafter, TargetVerifier, generate_autoregressive, generate_speculative
    from picospec.sampling import SamplingParams
    from picospec.verify import VerifyConfig

    gguf = load_runner("draft-q4_0")
    vocab = gguf._model.vocab
    attrs = [llama_cpp.llama_vocab_get_attr(vocab, t) for t in range(gguf.n_vocab)]
    # Qwen: text tokens, then control tokens, then unused padding rows (llama.cpp also marks a few
    # text tokens that end generations, such as "</s>", as control: they stay text here).
    n_text = max(t for t, attr in enumerate(attrs) if attr & llama_cpp.LLAMA_TOKEN_ATTR_NORMAL) + 1
    n_added = next(t for t in range(n_text, gguf.n_vocab) if attrs[t] & llama_cpp.LLAMA_TOKEN_ATTR_UNUSED) - n_text
    added = [(gguf.token_bytes(t).decode(), bool(attrs[t] & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL)) for t in range(n_text, n_text + n_added)]
    tokenizer = byte_level_tokenizer([gguf.token_bytes(t) for t in range(n_text)], added)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == gguf.tokenize("<|im_end|>", add_special=False, parse_special=True)[0]
    target = HFRunner(tiny_checkpoint(tmp_path / "qwen-like", tokenizer, seed=0, n_vocab=gguf.n_vocab, bos_id=gguf.bos_id()))
    assert gguf.all_token_bytes() == target.all_token_bytes()
    assert target.vocab_info().mismatch(gguf.n_vocab, gguf.vocab_info().fingerprint) is None
    params, config = SamplingParams(temperature=0), VerifyConfig(mode="exact")
    prompt = gguf.chat_tokens("Write a haiku.")
    reference = generate_autoregressive(target, prompt, params, config, np.random.default_rng(0), 10).token_ids
    drafter = Drafter(gguf, params, config, np.random.default_rng(1))
    verifier = TargetVerifier(target, params, config, np.random.default_rng(2))
    assert generate_speculative(drafter, verifier, prompt, 10, draft_len=3).token_ids == reference


def test_checkpoints_draft_and_verify_across_the_network(tmp_path, checkpoint):
    """A checkpoint as the cloud's target and another as the edge's drafter, over gRPC: greedy
    output is the target's greedy output, for the pipeline and for cloud-only decoding."""
    from clouds import cloud_thread
    from picospec.decoding import generate_autoregressive
    from picospec.edge.client import generate
    from picospec.edge.config import EdgeConfig, Method
    from picospec.sampling import SamplingParams
    from picospec.verify import VerifyConfig

    drafter = load_runner(str(tiny_checkpoint(tmp_path / "drafter", letter_tokenizer(LETTERS), seed=3)))
    params, verify, prompt = SamplingParams(temperature=0), VerifyConfig(mode="exact"), [0, 1, 2]
    reference = generate_autoregressive(HFRunner(checkpoint), prompt, params, verify, np.random.default_rng(0), 20).token_ids
    with cloud_thread(lambda: load_runner(str(checkpoint)), max_sessions=2) as cloud:
        for method in (Method.PICOSPEC, Method.AR):
            config = EdgeConfig(method=method, params=params, verify=verify, max_new_tokens=20)
            report = generate(f"127.0.0.1:{cloud.port}", drafter, prompt, config)
            stop = next((i + 1 for i, t in enumerate(reference) if t in drafter.vocab_info().eos_ids), len(reference))
            assert report.token_ids == reference[:stop]
