"""A ModelRunner over a Hugging Face checkpoint directory (transformers + PyTorch), on the CPU or a GPU.

The context's KV cache is a transformers DynamicCache, rolled back by cropping it. Token texts
are reported as the raw bytes each token stands for (byte-level BPE and SentencePiece pieces
decoded to bytes, control tokens as their text), as llama.cpp reports them, so a GGUF drafter and
an HF target with the same tokenizer have the same vocabulary fingerprint.

Install with the `hf` extra (torch, transformers). Nothing is downloaded: the directory must
hold the config, the weights and the tokenizer.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from picospec.errors import InvalidInputError, ModelError
from picospec.runners.base import TokenList, VocabInfo, check_rollback, check_token_ids

try:
    import torch
    import transformers
    from transformers.cache_utils import DynamicLayer
except ImportError as exc:  # the optional extra is not installed
    raise ModelError("Hugging Face checkpoints need the `hf` extra: pip install 'picospec[hf]'") from exc

# Special tokens that end a turn, as llama.cpp also treats them: a checkpoint's generation config
# often names only some (Qwen2.5 names <|im_end|> and <|endoftext|>).
END_OF_TURN_TEXTS = frozenset({"<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "<|end_of_text|>"})
BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece byte fallback
SPM_SPACE = "\u2581"


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character that stands for each byte, inverted."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


@functools.lru_cache(maxsize=4)
def _load(path: Path, device: str, dtype: str) -> tuple:
    """(tokenizer, model), loaded once per process: runners over the same checkpoint (the cloud's
    sessions) share the weights, each with its own KV cache."""
    transformers.utils.logging.disable_progress_bar()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), local_files_only=True)
    except (OSError, ValueError, RuntimeError, AttributeError) as exc:
        raise ModelError(f"transformers could not load {path}: {exc}") from exc
    return tokenizer, model.to(device).eval()


class HFRunner(TokenList):
    """A causal LM checkpoint whose context (and KV cache) the caller extends and rolls back."""

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        device: str = "cpu",
        n_ctx: int | None = None,
        n_threads: int = 1,
        dtype: str = "float32",
    ) -> None:
        """Load the model (in `dtype`; float32 keeps logits close to a fresh evaluation) and its tokenizer.

        n_ctx caps the context below the model's own limit (max_position_embeddings). n_threads
        sets PyTorch's intra-op threads for the whole process (PyTorch has no per-model setting).
        """
        path = Path(model_dir).expanduser()
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a Hugging Face checkpoint directory (no config.json)")
        if n_threads < 1:
            raise InvalidInputError(f"n_threads must be positive, got {n_threads}")
        torch.set_num_threads(n_threads)
        self.tokenizer, self.model = _load(path.resolve(), device, dtype)
        self.model_path, self.device = path, torch.device(device)
        self._n_vocab = int(self.model.get_output_embeddings().weight.shape[0])
        limit = int(getattr(self.model.config, "max_position_embeddings", 1 << 30))
        self.n_ctx = min(limit, n_ctx) if n_ctx else limit
        self._tokens: list[int] = []
        self._cache = self._new_cache()
        if not all(type(layer) is DynamicLayer for layer in self._cache.layers):
            # A sliding-window or recurrent layer forgets states that a rollback would need.
            raise ModelError(f"{path}: rollback needs a full KV cache in every layer (no sliding windows)")

    def _new_cache(self) -> "transformers.DynamicCache":
        return transformers.DynamicCache(config=self.model.config)

    # State

    @property
    def n_vocab(self) -> int:
        """The width of every logits row (the output layer's, which may exceed the tokenizer's size)."""
        return self._n_vocab

    # Evaluation

    def extend(self, tokens: Sequence[int]) -> np.ndarray:
        """Evaluate `tokens` after the context; return their logits rows, shape (len(tokens), n_vocab) float32."""
        ids = self._checked_new(tokens)
        if not ids:
            return np.empty((0, self._n_vocab), dtype=np.float32)
        return self._forward(ids, keep=0)

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        """Evaluate `tokens` after the context; return only the last logits row, shape (n_vocab,)."""
        ids = self._checked_new(tokens)
        if not ids:
            raise InvalidInputError("prefill needs at least one token")
        return self._forward(ids, keep=1)[-1]

    def _checked_new(self, tokens: Sequence[int]) -> list[int]:
        ids = check_token_ids(tokens, self._n_vocab).tolist()
        if self.n_tokens + len(ids) > self.n_ctx:
            raise InvalidInputError(f"context overflow: {self.n_tokens} tokens held + {len(ids)} new > n_ctx {self.n_ctx}")
        return ids

    @torch.inference_mode()
    def _forward(self, ids: list[int], keep: int) -> np.ndarray:
        """One forward pass over `ids` after the cached context; keep=0 returns every row, keep=1 the last."""
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)  # (1, n)
        positions = torch.arange(self.n_tokens, self.n_tokens + len(ids), device=self.device)[None]  # (1, n)
        out = self.model(input_ids=input_ids, position_ids=positions, cache=self._cache, use_cache=True, logits_to_keep=keep)
        self._tokens.extend(ids)
        return out.logits[0].float().cpu().numpy()  # (n or 1, V)

    def rollback(self, n: int) -> None:
        """Truncate the context and its KV cache to the first n tokens."""
        check_rollback(n, self.n_tokens)
        if n == 0:
            self._cache = self._new_cache()
        elif n < self.n_tokens:
            self._cache.crop(n - self.n_tokens)  # a negative count: remove that many from the end
        del self._tokens[n:]

    # Vocabulary

    def token_bytes(self, token: int, special: bool = True) -> bytes:
        """The bytes of one token; control tokens render as their text when special, else as b""."""
        if token >= len(self.tokenizer):
            return b""  # a padding row of the output layer: no text (llama.cpp reports these empty too)
        added = self.tokenizer.added_tokens_decoder.get(token)
        if added is not None:
            return added.content.encode() if special or not added.special else b""
        piece = self.tokenizer.convert_ids_to_tokens(token)
        if self._byte_level:
            alphabet = _byte_decoder()
            return bytes(alphabet[ch] for ch in piece)
        if match := BYTE_PIECE.fullmatch(piece):
            return bytes([int(match.group(1), 16)])
        return piece.replace(SPM_SPACE, " ").encode()

    @functools.cached_property
    def _byte_level(self) -> bool:
        """Whether the tokenizer is GPT-2-style byte-level BPE (every piece spelled in its byte alphabet)."""
        return "ByteLevel" in repr(self.tokenizer.backend_tokenizer.decoder)

    def eos_ids(self) -> tuple[int, ...]:
        """End-of-generation ids: the checkpoint's EOS ids and the end-of-turn special tokens it has."""
        declared = getattr(self.model.generation_config, "eos_token_id", None)
        ids = set(declared if isinstance(declared, list) else [] if declared is None else [declared])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        ids |= {i for i, tok in self.tokenizer.added_tokens_decoder.items() if tok.content in END_OF_TURN_TEXTS}
        return tuple(sorted(i for i in ids if i < self._n_vocab))

    def bos_id(self) -> int | None:
        """The beginning-of-sequence id (the model config's, as GGUF conversion records it), or None."""
        bos = getattr(self.model.config, "bos_token_id", None)
        return bos if bos is not None else self.tokenizer.bos_token_id

    @functools.cached_property
    def _vocab_info(self) -> VocabInfo:
        return VocabInfo.from_token_bytes([self.token_bytes(t) for t in range(self._n_vocab)], self.eos_ids(), self.bos_id())

    def vocab_info(self) -> VocabInfo:
        """Vocabulary size, special ids and a fingerprint of every token's bytes (computed once)."""
        return self._vocab_info

    def all_token_bytes(self) -> list[bytes]:
        """Every token's bytes in id order, control tokens as their text."""
        return [self.token_bytes(t) for t in range(self._n_vocab)]

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        """Token ids of `text`; add_special adds what the tokenizer adds (BOS, ...)."""
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of `tokens`, control tokens left out; broken UTF-8 becomes U+FFFD."""
        ids = check_token_ids(tokens, self._n_vocab).tolist()
        return b"".join(self.token_bytes(t, special=False) for t in ids).decode("utf-8", errors="replace")

    def chat_tokens(self, user_message: str) -> list[int]:
        """Token ids of a one-turn chat prompt in the tokenizer's chat template."""
        return self.chat_messages_tokens([{"role": "user", "content": user_message}])

    def chat_messages_tokens(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Token ids of a conversation in the tokenizer's chat template, ready for the assistant's reply."""
        if not self.tokenizer.chat_template:
            raise ModelError(f"{self.model_path} has no chat template (tokenizer_config.json chat_template)")
        text = self.tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False, add_generation_prompt=True)
        return self.tokenize(text, add_special=False)
