"""The interface that the edge (drafter) and the cloud (target) both run their model through."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from picospec.errors import InvalidInputError


@dataclass(frozen=True)
class VocabInfo:
    """A model's vocabulary: what two models must share for one to draft for the other (the
    fingerprint), and where its generations end (eos_ids).

    The fingerprint covers what a token id means, every token's bytes and the BOS id, so it is
    the same for the same tokenizer whatever the backend. The end-of-generation ids are left out:
    they are each runner's stopping rule, and backends derive them differently (llama.cpp adds FIM
    and other text-matched markers to a checkpoint's declared EOS ids). A drafter whose set
    differs still drafts exactly; the edge stops at its own set's tokens.
    """

    n_vocab: int
    eos_ids: tuple[int, ...]
    bos_id: int | None
    fingerprint: str  # hex digest over every token's bytes and the BOS id

    @staticmethod
    def from_token_bytes(token_bytes: Sequence[bytes], eos_ids: Sequence[int], bos_id: int | None) -> "VocabInfo":
        """Build the fingerprint from each token's text, in id order, and the BOS id."""
        digest = hashlib.sha256()
        for piece in token_bytes:
            digest.update(len(piece).to_bytes(4, "little"))
            digest.update(piece)
        digest.update(repr(bos_id).encode())
        return VocabInfo(len(token_bytes), tuple(eos_ids), bos_id, digest.hexdigest())

    def mismatch(self, n_vocab: int, fingerprint: str) -> str | None:
        """Why a drafter with this vocabulary size and fingerprint cannot draft for this model (the
        target), or None when it can: the same tokens under the same ids and the same BOS id."""
        if fingerprint == self.fingerprint and n_vocab == self.n_vocab:
            return None
        return (
            f"the vocabularies differ: the edge's drafter has {n_vocab} tokens (fingerprint "
            f"{fingerprint[:16] or 'missing'}), the target {self.n_vocab} (fingerprint "
            f"{self.fingerprint[:16]}); the drafter cannot draft for this target"
        )


@runtime_checkable
class ModelRunner(Protocol):
    """A causal LM with an explicit, rollback-able context (KV cache)."""

    @property
    def n_vocab(self) -> int: ...

    @property
    def n_tokens(self) -> int:
        """How many tokens the context (and KV cache) holds now."""
        ...

    @property
    def tokens(self) -> list[int]:
        """The token ids in the context now."""
        ...

    def vocab_info(self) -> VocabInfo: ...

    def tokenize(self, text: str, add_special: bool = True) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def chat_tokens(self, user_message: str) -> list[int]:
        """Token ids of a one-turn chat prompt, ready for the assistant's reply."""
        ...

    def chat_messages_tokens(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Token ids of a conversation ({"role": ..., "content": ...} dicts), ready for the assistant's reply."""
        ...

    def extend(self, tokens: Sequence[int]) -> np.ndarray:
        """Evaluate `tokens` after the context; return logits rows, shape (len(tokens), n_vocab)."""
        ...

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        """Evaluate `tokens` (a prompt) after the context; return the last logits row only, shape (n_vocab,)."""
        ...

    def rollback(self, n: int) -> None:
        """Truncate the context and its KV cache to the first n tokens."""
        ...


@dataclass(frozen=True)
class SeqEval:
    """One sequence's share of a multi-sequence evaluation: `tokens` at positions start.. of sequence
    `seq` (start must be the sequence's length), with logits rows wanted for the last n_rows of them."""

    seq: int
    start: int
    tokens: tuple[int, ...]
    n_rows: int

    def __post_init__(self) -> None:
        if not 0 <= self.n_rows <= len(self.tokens):
            raise InvalidInputError(f"n_rows must be in [0, {len(self.tokens)}], got {self.n_rows}")


@runtime_checkable
class MultiSeqRunner(Protocol):
    """A causal LM holding n_seq independent contexts (sequences, each with its own KV range) that
    one call evaluates together: what lets a cloud verify many sessions' chunks in one pass.

    A sequence's logits must depend only on its own tokens, never on which other sequences share
    the call (up to the floating-point effects of batch size that llama.cpp's fast configuration has).
    """

    @property
    def n_vocab(self) -> int: ...

    @property
    def n_seq(self) -> int:
        """How many sequences it holds (ids 0 .. n_seq-1)."""
        ...

    @property
    def seq_capacity(self) -> int:
        """How many tokens one sequence may hold."""
        ...

    def vocab_info(self) -> VocabInfo: ...

    def tokenize(self, text: str, add_special: bool = True) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def chat_tokens(self, user_message: str) -> list[int]: ...

    def chat_messages_tokens(self, messages: Sequence[Mapping[str, str]]) -> list[int]: ...

    def evaluate(self, evals: Sequence[SeqEval]) -> list[np.ndarray]:
        """Evaluate every SeqEval (at most one per sequence) in one pass; return, per SeqEval, its
        logits rows, shape (n_rows, n_vocab): row i follows tokens[len(tokens) - n_rows + i]."""
        ...

    def rollback_seq(self, seq: int, n: int) -> None:
        """Truncate sequence `seq` and its KV range to its first n tokens."""
        ...


class TokenList:
    """n_tokens and tokens for a runner that keeps its context as the list `_tokens`."""

    _tokens: list[int]

    @property
    def n_tokens(self) -> int:
        """How many tokens the context holds now."""
        return len(self._tokens)

    @property
    def tokens(self) -> list[int]:
        """The token ids in the context now (a copy)."""
        return list(self._tokens)


def check_token_ids(tokens: Sequence[int], n_vocab: int) -> np.ndarray:
    """Return `tokens` as an int64 array, or raise InvalidInputError if any id is outside the vocabulary."""
    ids = np.asarray(tokens, dtype=np.int64).reshape(-1)  # (n,)
    if ids.size and (ids.min() < 0 or ids.max() >= n_vocab):
        bad = int(ids[(ids < 0) | (ids >= n_vocab)][0])
        raise InvalidInputError(f"token id {bad} is outside the vocabulary [0, {n_vocab})")
    return ids


def check_rollback(n: int, n_tokens: int) -> None:
    """Raise InvalidInputError unless 0 <= n <= n_tokens."""
    if not 0 <= n <= n_tokens:
        raise InvalidInputError(f"cannot roll back to {n} tokens: the context holds {n_tokens}")
