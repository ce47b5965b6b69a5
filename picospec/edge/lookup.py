"""Prompt lookup: draft tokens copied from earlier in the context (pure: no models, no I/O).

Where an answer repeats its input (editing code, adding type hints or docstrings, quoting), the
tokens after the last few tokens of the context often already occur after an earlier occurrence of
those same tokens. A proposal costs no drafter step: the edge evaluates the proposed tokens in one
batch (for their confidences and to continue after them) and ships them with a one-hot
draft_probs row each, which keeps every verify mode exact. The controller decides whether they pay.

The index maps every n-gram of the committed context (n from min_n to max_n) to the positions it
ends at, appended to as tokens are committed: a query costs O(max_n + budget), not a rescan.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Sequence

from picospec.errors import InvalidInputError


@dataclass(frozen=True)
class LookupConfig:
    """How long a match must be (min_n) and the longest one tried first (max_n)."""

    min_n: int = 2
    max_n: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.min_n <= self.max_n:
            raise InvalidInputError(f"lookup: 1 <= min_n <= max_n, got {self.min_n}, {self.max_n}")


@dataclass
class PromptLookup:
    """An n-gram index over the committed context (prompt + committed tokens), append-only.

    Drafted but unverified tokens are not indexed (a rejection would have to remove them); a query
    passes them as `drafted`, so proposals continue after the drafts already made.
    """

    config: LookupConfig = field(default_factory=LookupConfig)
    context: list[int] = field(default_factory=list)
    # Where the last proposal's tokens end in the context: a copy goes on from there, so a match
    # ending there wins over a more recent one (code repeats short phrases, "for start, end in").
    source_end: int | None = field(default=None, init=False)
    # n -> (n-gram -> end positions, exclusive, increasing)
    _ends: dict[int, dict[tuple[int, ...], list[int]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        tokens, self.context = list(self.context), []
        self._ends = {n: {} for n in range(self.config.min_n, self.config.max_n + 1)}
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        """Append committed tokens, indexing the n-grams that end at each."""
        for token in tokens:
            self.context.append(int(token))
            end = len(self.context)
            for n, index in self._ends.items():
                if end >= n:
                    index.setdefault(tuple(self.context[end - n : end]), []).append(end)

    def propose(self, drafted: Sequence[int], budget: int) -> list[int]:
        """Up to `budget` tokens that followed the most recent earlier occurrence of the longest
        suffix (max_n down to min_n tokens) of context + drafted, or the occurrence that continues
        the last proposal's source where there is one; [] when none occurs."""
        if budget < 1:
            return []
        sequence_len = len(self.context) + len(drafted)
        for n in range(min(self.config.max_n, sequence_len), self.config.min_n - 1, -1):
            key = tuple(self._tail(drafted, n))
            ends = self._ends[n].get(key, [])
            # The suffix itself is indexed when nothing is drafted: it has nothing after it.
            end = next((e for e in reversed(ends) if e < sequence_len), None)
            if end is not None:
                if self.source_end is not None and self.source_end < sequence_len and self._ends_at(ends, self.source_end):
                    end = self.source_end
                proposal = self._slice(drafted, end, min(end + budget, sequence_len))
                self.source_end = end + len(proposal)
                return proposal
        return []

    @staticmethod
    def _ends_at(ends: list[int], position: int) -> bool:
        i = bisect.bisect_left(ends, position)
        return i < len(ends) and ends[i] == position

    def _tail(self, drafted: Sequence[int], n: int) -> list[int]:
        """The last n tokens of context + drafted."""
        from_drafted = [int(t) for t in drafted[max(0, len(drafted) - n) :]]
        from_context = n - len(from_drafted)
        return (self.context[len(self.context) - from_context :] if from_context else []) + from_drafted

    def _slice(self, drafted: Sequence[int], start: int, stop: int) -> list[int]:
        """context + drafted, positions start..stop-1."""
        head = self.context[start:stop]
        return head + [int(t) for t in drafted[max(0, start - len(self.context)) : max(0, stop - len(self.context))]]
