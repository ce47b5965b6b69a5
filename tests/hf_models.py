"""Tiny randomly initialised Hugging Face checkpoints and tokenizers, built inside the tests (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a hub

import torch
import transformers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

END = "<|im_end|>"
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}" + END + "{% endfor %}"


def letter_tokenizer(letters: str) -> transformers.PreTrainedTokenizerFast:
    """One token per letter, then END (a special token): the toy runner's vocabulary, plus an end of turn."""
    tokenizer = Tokenizer(models.WordLevel({ch: i for i, ch in enumerate(letters)}, unk_token=letters[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END, chat_template=CHAT_TEMPLATE)
    fast.add_special_tokens({"eos_token": END})
    return fast


def byte_level_tokenizer(pieces: list[bytes], added: list[tuple[str, bool]]) -> transformers.PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE tokenizer whose ids 0.. are `pieces`, then the `added` tokens
    ((text, special) pairs; they must hold END, its EOS). No merges: enough to spell every token as
    the vocabulary fingerprint does."""
    alphabet = {b: ch for ch, b in _byte_decoder().items()}
    vocab = {"".join(alphabet[b] for b in piece): i for i, piece in enumerate(pieces)}
    tokenizer = Tokenizer(models.BPE(vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, chat_template=CHAT_TEMPLATE)
    fast.add_tokens([AddedToken(text, special=special, normalized=False) for text, special in added])
    fast.add_special_tokens({"eos_token": END})
    return fast


def _byte_decoder() -> dict[str, int]:
    from picospec.runners.hf import _byte_decoder as decoder

    return decoder()


def tiny_checkpoint(
    directory: Path, tokenizer: transformers.PreTrainedTokenizerFast, seed: int, n_vocab: int | None = None,
    eos_id: int | None = None, bos_id: int | None = None,
) -> Path:  # fmt: skip
    """A 2-layer Qwen2 with random weights (scaled so its distributions are far from uniform), saved with its tokenizer."""
    config = transformers.Qwen2Config(
        vocab_size=n_vocab or len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, initializer_range=0.5,
        tie_word_embeddings=False, eos_token_id=eos_id, bos_token_id=bos_id, use_sliding_window=False,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = transformers.Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = eos_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
