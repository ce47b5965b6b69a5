"""A MultiSeqRunner made of one ModelRunner per sequence: every sequence is evaluated in its own pass.

It is the multi-sequence form of any single-context runner: the toy runner's (whose logits are then
the same alone or batched, by construction, so a scheduler can be tested exactly), and the cloud's
unbatched path (one llama.cpp context per session, as before batching existed).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from picospec.errors import InvalidInputError, ProtocolError
from picospec.runners.base import ModelRunner, SeqEval, VocabInfo


class SeparateRunners:
    """n_seq runners from `factory`: sequence 0's now (it also answers for the vocabulary), each
    other one when its sequence is first evaluated or rolled back."""

    def __init__(self, factory: Callable[[], ModelRunner], n_seq: int, seq_capacity: int) -> None:
        if n_seq < 1 or seq_capacity < 1:
            raise InvalidInputError(f"n_seq and seq_capacity must be positive, got {n_seq}, {seq_capacity}")
        self._factory, self._seq_capacity = factory, seq_capacity
        # Created here, not on first use: vocabulary questions come from any thread, and two threads
        # must never both create the runner of one sequence.
        self._runners: list[ModelRunner | None] = [factory()] + [None] * (n_seq - 1)

    def runner(self, seq: int) -> ModelRunner:
        """The runner that holds sequence `seq` (created now if it does not exist yet)."""
        if not 0 <= seq < len(self._runners):
            raise InvalidInputError(f"sequence {seq} is outside [0, {len(self._runners)})")
        if self._runners[seq] is None:
            self._runners[seq] = self._factory()
        return self._runners[seq]

    @property
    def n_vocab(self) -> int:
        return self.runner(0).n_vocab

    @property
    def n_seq(self) -> int:
        return len(self._runners)

    @property
    def seq_capacity(self) -> int:
        return self._seq_capacity

    def vocab_info(self) -> VocabInfo:
        return self.runner(0).vocab_info()

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self.runner(0).tokenize(text, add_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.runner(0).detokenize(tokens)

    def chat_tokens(self, user_message: str) -> list[int]:
        return self.runner(0).chat_tokens(user_message)

    def chat_messages_tokens(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        return self.runner(0).chat_messages_tokens(messages)

    def evaluate(self, evals: Sequence[SeqEval]) -> list[np.ndarray]:
        """One pass per SeqEval, in order: through extend when it wants more than its last row (as a
        chunk does), else through prefill (as a prompt does), so llama.cpp computes one output row."""
        results = []
        for item in evals:
            runner = self.runner(item.seq)
            if item.start != runner.n_tokens:
                raise ProtocolError(f"sequence {item.seq} holds {runner.n_tokens} tokens, not {item.start}")
            if item.n_rows > 1 or item.n_rows == len(item.tokens):
                rows = runner.extend(item.tokens)  # (n, V)
                results.append(rows[rows.shape[0] - item.n_rows :])
            else:
                last = runner.prefill(item.tokens)  # (V,)
                results.append(last[None, :] if item.n_rows else np.empty((0, runner.n_vocab), np.float32))
        return results

    def rollback_seq(self, seq: int, n: int) -> None:
        self.runner(seq).rollback(n)
