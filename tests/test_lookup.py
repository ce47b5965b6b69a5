"""Prompt lookup against a brute-force rescan of the context, and on constructed cases."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picospec.edge.lookup import LookupConfig, PromptLookup
from picospec.errors import InvalidInputError


def rescan(sequence: list[int], n_drafted: int, budget: int, config: LookupConfig) -> list[int]:
    """The specification: the longest suffix first, its most recent earlier occurrence ending in
    the committed part, what followed it (up to the end of the sequence)."""
    committed = len(sequence) - n_drafted
    for n in range(min(config.max_n, len(sequence)), config.min_n - 1, -1):
        key = sequence[len(sequence) - n :]
        for end in range(min(committed, len(sequence) - 1), n - 1, -1):
            if sequence[end - n : end] == key:
                return sequence[end : end + budget]
    return []


def test_a_repeated_line_is_proposed_after_its_first_tokens():
    lookup = PromptLookup(context=[5, 1, 2, 3, 4, 9, 8, 7, 5, 1, 2])
    assert lookup.propose([], budget=16) == [3, 4, 9, 8, 7, 5, 1, 2]
    assert lookup.propose([], budget=3) == [3, 4, 9]
    assert lookup.propose([3, 4], budget=2) == [9, 8]  # continues after the drafts


def test_the_longest_suffix_wins_over_a_more_recent_shorter_one():
    # "1 2" last occurs before 7, but "0 1 2" occurs before 6: the longer match is more specific.
    lookup = PromptLookup(LookupConfig(min_n=2, max_n=3), context=[0, 1, 2, 6, 1, 2, 7, 0, 1, 2])
    assert lookup.propose([], budget=1) == [6]
    assert PromptLookup(LookupConfig(min_n=2, max_n=2), context=[0, 1, 2, 6, 1, 2, 7, 0, 1, 2]).propose([], 1) == [7]


def test_nothing_is_proposed_without_an_earlier_occurrence_or_budget():
    assert PromptLookup(context=[1, 2, 3, 4]).propose([], budget=8) == []
    assert PromptLookup(context=[1, 2, 1, 2]).propose([], budget=0) == []
    assert PromptLookup(context=[1]).propose([], budget=4) == []


def test_the_index_grows_with_committed_tokens():
    lookup = PromptLookup(context=[1, 2, 3])
    assert lookup.propose([], 4) == []
    lookup.extend([4, 1, 2])
    assert lookup.propose([], 4) == [3, 4, 1, 2]


def test_a_copy_goes_on_from_where_the_last_proposal_came_from():
    # "7 8" occurs twice; the copy that proposed "7 8" from the first occurrence goes on with 1,
    # not with what follows the more recent occurrence.
    context = [5, 6, 7, 8, 1, 2, 9, 7, 8, 3, 4, 0, 5, 6]
    lookup = PromptLookup(LookupConfig(min_n=2, max_n=2), context=context)
    assert lookup.propose([], budget=2) == [7, 8] and lookup.source_end == 4
    assert lookup.propose([7, 8], budget=2) == [1, 2]
    assert PromptLookup(LookupConfig(min_n=2, max_n=2), context=context + [7, 8]).propose([], 2) == [3, 4]


def test_the_configuration_is_checked():
    with pytest.raises(InvalidInputError):
        LookupConfig(min_n=3, max_n=2)
    with pytest.raises(InvalidInputError):
        LookupConfig(min_n=0)


@settings(max_examples=300, deadline=None)
@given(
    sequence=st.lists(st.integers(0, 3), min_size=0, max_size=40),
    n_drafted=st.integers(0, 6),
    budget=st.integers(0, 10),
    min_n=st.integers(1, 3),
    extra=st.integers(0, 2),
    split=st.integers(0, 40),
)
def test_proposals_equal_a_rescan_of_the_context(sequence, n_drafted, budget, min_n, extra, split):
    """Indexed incrementally (in two appends) and queried with drafts, as the edge does."""
    n_drafted = min(n_drafted, len(sequence))
    committed, drafted = sequence[: len(sequence) - n_drafted], sequence[len(sequence) - n_drafted :]
    config = LookupConfig(min_n=min_n, max_n=min_n + extra)
    lookup = PromptLookup(config, context=committed[:split])
    lookup.extend(committed[split:])
    assert lookup.propose(drafted, budget) == rescan(sequence, n_drafted, budget, config)
