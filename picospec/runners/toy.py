"""A deterministic toy language model with the ModelRunner interface, for fast exact tests.

Its next-token logits depend only on the last `order` tokens, through a table drawn from a
seeded generator; a toy drafter is the same table plus seeded noise, so how far it disagrees
with its target is a parameter. It never stands in for the real pair outside unit tests.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from picospec.errors import InvalidInputError
from picospec.runners.base import TokenList, VocabInfo, check_rollback, check_token_ids


class ToyRunner(TokenList):
    """A seeded n-gram model over a tiny vocabulary; token i prints as the i-th lowercase letter."""

    def __init__(self, logit_table: np.ndarray, order: int = 2) -> None:
        self.order = order
        self._table = logit_table  # (V+1,)*order + (V,): index V stands for "before the start"
        self._tokens: list[int] = []

    @classmethod
    def create(cls, n_vocab: int = 4, seed: int = 0, order: int = 2, scale: float = 1.5) -> "ToyRunner":
        """A toy target: logits are scale * standard normal draws."""
        if not 2 <= n_vocab <= 26:
            raise InvalidInputError("a toy vocabulary has 2 to 26 tokens")
        rng = np.random.default_rng(seed)
        return cls(scale * rng.standard_normal((n_vocab + 1,) * order + (n_vocab,)), order)

    def drafter(self, seed: int, noise: float = 0.7) -> "ToyRunner":
        """A toy drafter for this target: the same logits plus noise * standard normal draws."""
        rng = np.random.default_rng(seed)
        return ToyRunner(self._table + noise * rng.standard_normal(self._table.shape), self.order)

    def next_logits(self, context: Sequence[int]) -> np.ndarray:
        """Logits (V,) for the token after `context`, without touching the runner's state."""
        tail = [self.n_vocab] * self.order + list(context)
        return self._table[tuple(tail[-self.order :])].astype(np.float32)

    @property
    def n_vocab(self) -> int:
        return self._table.shape[-1]

    def vocab_info(self) -> VocabInfo:
        return VocabInfo.from_token_bytes([self._letter(i).encode() for i in range(self.n_vocab)], (), None)

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        ids = [ord(ch) - ord("a") for ch in text]
        return check_token_ids(ids, self.n_vocab).tolist()

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(self._letter(t) for t in check_token_ids(tokens, self.n_vocab))

    def chat_tokens(self, user_message: str) -> list[int]:
        return self.tokenize(user_message)

    def chat_messages_tokens(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """The toy has no template: the contents, concatenated."""
        return self.tokenize("".join(message["content"] for message in messages))

    def extend(self, tokens: Sequence[int]) -> np.ndarray:
        ids = check_token_ids(tokens, self.n_vocab).tolist()
        rows = []
        for token in ids:
            self._tokens.append(token)
            rows.append(self.next_logits(self._tokens))
        return np.array(rows, dtype=np.float32).reshape(len(ids), self.n_vocab)  # (n, V)

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        return self.extend(tokens)[-1]

    def rollback(self, n: int) -> None:
        check_rollback(n, len(self._tokens))
        del self._tokens[n:]

    @staticmethod
    def _letter(token: int) -> str:
        return chr(ord("a") + int(token))
