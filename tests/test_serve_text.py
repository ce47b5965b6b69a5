"""From tokens to the text a client sees: incremental detokenization and stop sequences (pure)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from picospec.serve.text import IncrementalDetokenizer, TextAssembler, held_back

# A byte-level vocabulary in which "é" (two bytes) and "€" (three) are split over tokens.
PIECES = [b"a", b"b", b" ", b"\xc3", b"\xa9", b"\xe2\x82", b"\xac", b"STOP", b"S", b"TO", b"P"]


def detokenize(tokens) -> str:
    return b"".join(PIECES[t] for t in tokens).decode("utf-8", errors="replace")


tokens_strategy = st.lists(st.integers(0, len(PIECES) - 1), max_size=30)
feeds_strategy = st.lists(st.integers(1, 4), min_size=30, max_size=30)


def feed_in_pieces(assembler, tokens, sizes) -> str:
    out, i = "", 0
    for size in sizes:
        if i >= len(tokens):
            break
        out += assembler.feed(tokens[i : i + size])
        i += size
    return out + assembler.finish()


def test_a_character_split_over_tokens_is_held_until_complete():
    detokenizer = IncrementalDetokenizer(detokenize)
    assert detokenizer.feed([0]) == "a"
    assert detokenizer.feed([3]) == ""  # "\xc3" alone is half of "é"
    assert detokenizer.feed([4]) == "é"
    assert detokenizer.feed([5]) == "" and detokenizer.feed([6, 1]) == "€b"


@given(tokens_strategy, feeds_strategy)
def test_the_streamed_text_is_the_text_of_all_tokens_however_they_arrive(tokens, sizes):
    assert feed_in_pieces(TextAssembler(detokenize), tokens, sizes) == detokenize(tokens)


@given(tokens_strategy, feeds_strategy)
def test_the_text_ends_before_the_first_stop_sequence_however_the_tokens_arrive(tokens, sizes):
    full = detokenize(tokens)
    stops = ["STOP", "é "]
    assembler = TextAssembler(detokenize, stops)
    found = [i for i in (full.find(s) for s in stops) if i >= 0]
    expected = full[: min(found)] if found else full
    assert feed_in_pieces(assembler, tokens, sizes) == expected
    assert assembler.stopped == bool(found)


def test_text_that_may_begin_a_stop_sequence_waits():
    assembler = TextAssembler(detokenize, ["STOP"])
    assert assembler.feed([0, 8]) == "a"  # "S" may begin "STOP"
    assert assembler.feed([9]) == ""  # "STO" still may
    assert assembler.feed([0]) == "STOa"  # "STOa" cannot: it is shown
    assert assembler.feed([8, 9, 10, 1]) == "" and assembler.stopped  # "STOP" was split over three tokens
    assert assembler.feed([0]) == "" and assembler.finish() == ""


@pytest.mark.parametrize("text, stops, n", [("abc", ["cd"], 1), ("abc", ["bcd", "x"], 2), ("abc", ["zz"], 0), ("", ["a"], 0)])
def test_held_back(text, stops, n):
    assert held_back(text, stops) == n
