"""From verified tokens to the text a client sees: incremental detokenization and stop sequences.

Pure (no I/O): the same TextAssembler turns tokens into text for streamed and non-streamed
responses, so both carry the same text for the same tokens.
"""

from __future__ import annotations

from typing import Callable, Sequence

Detokenize = Callable[[Sequence[int]], str]
REPLACEMENT = "\ufffd"  # what a detokenizer writes for an incomplete UTF-8 sequence


class IncrementalDetokenizer:
    """Text of a growing token list, one delta at a time.

    Each delta is decoded together with the tokens just before it (the window from
    `_prefix` on), because a token's text can depend on its neighbours (a multi-byte character
    split over tokens, a tokenizer that drops a leading space at the start of a decode). A delta
    that ends in an incomplete character is held back until the next token completes it.
    """

    def __init__(self, detokenize: Detokenize) -> None:
        self._detokenize = detokenize
        self._tokens: list[int] = []
        self._prefix = 0  # window start
        self._read = 0  # tokens whose text has been returned

    def feed(self, tokens: Sequence[int]) -> str:
        """Append tokens; return the text they complete (maybe "")."""
        self._tokens.extend(tokens)
        seen = self._detokenize(self._tokens[self._prefix : self._read])
        text = self._detokenize(self._tokens[self._prefix :])
        if len(text) <= len(seen) or text.endswith(REPLACEMENT):
            return ""
        self._prefix, self._read = self._read, len(self._tokens)
        return text[len(seen) :]

    def flush(self) -> str:
        """The text held back (an incomplete character at the end stays a replacement character)."""
        seen = self._detokenize(self._tokens[self._prefix : self._read])
        text = self._detokenize(self._tokens[self._prefix :])
        self._prefix = self._read = len(self._tokens)
        return text[len(seen) :]


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of `text` could begin a stop sequence (and so must wait)."""
    for start in range(max(0, len(text) - max(map(len, stops), default=0) + 1), len(text)):
        tail = text[start:]
        if any(stop.startswith(tail) for stop in stops):
            return len(text) - start
    return 0


class TextAssembler:
    """Detokenizes a generation and applies stop sequences.

    `feed` returns the text safe to show now: never text that a stop sequence might still
    claim. Once a stop sequence appears, the text before it is the last returned and `stopped`
    is set; the stop sequence itself is not returned (as OpenAI's API trims it).
    """

    def __init__(self, detokenize: Detokenize, stops: Sequence[str] = ()) -> None:
        self._detokenizer = IncrementalDetokenizer(detokenize)
        self._stops = tuple(stops)
        self._pending = ""  # decoded, not yet returned: it may be the start of a stop sequence
        self.stopped = False

    def feed(self, tokens: Sequence[int]) -> str:
        """Take more tokens; return the text that may be shown now."""
        if self.stopped:
            return ""
        return self._release(self._pending + self._detokenizer.feed(tokens), final=False)

    def finish(self) -> str:
        """The generation ended: return the rest of the text (up to a stop sequence in it)."""
        if self.stopped:
            return ""
        return self._release(self._pending + self._detokenizer.flush(), final=True)

    def _release(self, text: str, final: bool) -> str:
        hits = [i for i in (text.find(stop) for stop in self._stops) if i >= 0]
        if hits:
            self.stopped, self._pending = True, ""
            return text[: min(hits)]
        keep = 0 if final else held_back(text, self._stops)
        self._pending = text[len(text) - keep :]
        return text[: len(text) - keep]
