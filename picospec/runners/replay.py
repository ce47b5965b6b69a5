"""A drafter that replays recorded drafts, so that a load test can run many edges on one core.

A recording holds, for one prompt, the real drafter's logits at every position of the target's
greedy continuation (teacher-forced, in one pass), kept as each row's top entries. Replaying, the
runner answers a context on that path with the recorded row and any other context (after a draft
the target would not have chosen) with a flat row, which the edge's controller does not trust;
it sleeps the drafter's measured pass time instead of computing, so an edge keeps the drafter's
timing without its CPU. The output stays exact whatever drafts (the cloud verifies every token),
and at temperature 0 it is the target's greedy continuation, as with the live drafter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from picospec.errors import InvalidInputError
from picospec.runners.base import ModelRunner, TokenList, VocabInfo, check_rollback, check_token_ids

KEPT_ENTRIES = 64  # top logits kept per row; the rest are set far below them (negligible mass)
TAIL_GAP = 30.0  # how far below the smallest kept logit the rest are set


@dataclass(frozen=True)
class DraftRecording:
    """The drafter's view of one prompt's greedy continuation, and what its passes cost."""

    path: tuple[int, ...]  # prompt + the target's greedy continuation
    prompt_len: int
    top_ids: np.ndarray  # (len(path) - prompt_len + 1, K) int64: row i follows path[: prompt_len + i]
    top_logits: np.ndarray  # (len(path) - prompt_len + 1, K) float32
    step_s: float  # the drafter's pass over 1 token
    token_s: float  # what each further token of a pass adds

    def pass_s(self, n: int) -> float:
        """Seconds a drafter pass over n tokens took, linear between the measured sizes."""
        return self.step_s + max(0, n - 1) * self.token_s


def record_drafts(drafter: ModelRunner, prompt: Sequence[int], continuation: Sequence[int]) -> DraftRecording:
    """Run the real drafter once over prompt + continuation and keep its rows from the prompt's last on."""
    if not prompt:
        raise InvalidInputError("a recording needs a prompt")
    path = [*prompt, *continuation]
    drafter.rollback(0)
    if len(prompt) > 1:
        drafter.prefill(prompt[:-1])  # rows are needed from the prompt's last token on only
    rows = drafter.extend(path[len(prompt) - 1 :])  # (n_cont + 1, V)
    kept = min(KEPT_ENTRIES, rows.shape[1])
    top_ids = np.argpartition(rows, -kept, axis=1)[:, -kept:]  # (n, K)
    top_logits = np.take_along_axis(rows, top_ids, axis=1)  # (n, K)
    step_s, sixteen_s = _timed_pass(drafter, path, 1), _timed_pass(drafter, path, 16)
    drafter.rollback(0)
    return DraftRecording(tuple(path), len(prompt), top_ids, top_logits, step_s, max(0.0, (sixteen_s - step_s) / 15))


def _timed_pass(drafter: ModelRunner, path: list[int], n: int) -> float:
    """The fastest of three passes over n tokens after the path's first token."""
    probe = (path[1:] + path[:1] * n)[:n]
    drafter.rollback(0)
    drafter.prefill(path[:1])
    best = float("inf")
    for _ in range(3):
        drafter.rollback(1)
        started = time.perf_counter()
        drafter.extend(probe)
        best = min(best, time.perf_counter() - started)
    return best


class ReplayRunner(TokenList):
    """The edge's drafter (the ModelRunner methods the edge calls) replaying one DraftRecording."""

    def __init__(self, recording: DraftRecording, vocab: VocabInfo) -> None:
        self.recording, self._vocab = recording, vocab
        self._tokens: list[int] = []
        self._on_path = 0  # how many leading tokens follow the recorded path

    @property
    def n_vocab(self) -> int:
        return self._vocab.n_vocab

    def vocab_info(self) -> VocabInfo:
        return self._vocab

    def extend(self, tokens: Sequence[int]) -> np.ndarray:
        """The recorded rows after each token (flat ones off the path), after the drafter's pass time."""
        ids = check_token_ids(tokens, self.n_vocab).tolist()
        time.sleep(self.recording.pass_s(len(ids)))
        rows = np.empty((len(ids), self.n_vocab), dtype=np.float32)  # (n, V)
        for i, token in enumerate(ids):
            path = self.recording.path
            if self._on_path == len(self._tokens) < len(path) and path[len(self._tokens)] == token:
                self._on_path += 1
            self._tokens.append(token)
            rows[i] = self._row()
        return rows

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        return self.extend(tokens)[-1]

    def rollback(self, n: int) -> None:
        check_rollback(n, self.n_tokens)
        del self._tokens[n:]
        self._on_path = min(self._on_path, n)

    def _row(self) -> np.ndarray:
        index = len(self._tokens) - self.recording.prompt_len
        if self._on_path < len(self._tokens) or index < 0:
            return np.zeros(self.n_vocab, dtype=np.float32)  # a drafter that knows nothing here
        top_logits = self.recording.top_logits[index]
        row = np.full(self.n_vocab, top_logits.min() - TAIL_GAP, dtype=np.float32)  # (V,)
        row[self.recording.top_ids[index]] = top_logits
        return row
