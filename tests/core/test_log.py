"""The in-memory log: §5.3's consistency check and truncation, and fast backtracking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phalanx.core.log import RaftLog
from phalanx.core.types import Entry, Index, Term


def make_log(terms: list[int], committed: int = 0) -> RaftLog:
    entries = [Entry(Term(t), Index(i + 1)) for i, t in enumerate(terms)]
    return RaftLog(entries, committed=Index(committed))


def terms_of(log: RaftLog) -> list[int]:
    return [e.term for e in log.entries]


nondecreasing_terms = st.lists(st.integers(1, 5), max_size=30).map(sorted)


def test_append_request_with_unknown_prev_is_rejected() -> None:
    # §5.3 receiver rule 2: reply false if the log has no entry at prevLogIndex whose
    # term matches prevLogTerm.
    log = make_log([1, 1, 2])
    assert log.maybe_append(3, 1, 0, [Entry(Term(2), Index(4))]) is None
    assert log.maybe_append(5, 2, 0, []) is None
    assert terms_of(log) == [1, 1, 2]


def test_conflicting_suffix_is_replaced_and_stable_cursor_pulled_back() -> None:
    # §5.3 receiver rule 3: delete the existing entry and all that follow it.
    log = make_log([1, 1, 2, 2])
    assert log.stable == 4
    last = log.maybe_append(2, 1, 0, [Entry(Term(3), Index(3))])
    assert last == 3
    assert terms_of(log) == [1, 1, 3]
    assert log.stable == 2
    assert [e.index for e in log.unstable_entries()] == [3]


def test_matching_entries_are_not_truncated_by_a_stale_shorter_append() -> None:
    # A delayed AppendEntries carrying a prefix must not cut entries that came later.
    log = make_log([1, 1, 1, 1])
    assert log.maybe_append(1, 1, 0, [Entry(Term(1), Index(2))]) == 2
    assert terms_of(log) == [1, 1, 1, 1]


def test_commit_follows_leader_commit_but_not_beyond_last_new_entry() -> None:
    # §5.3 receiver rule 5: commitIndex = min(leaderCommit, index of last new entry).
    log = make_log([1, 1, 1, 1, 1])
    log.maybe_append(1, 1, 10, [Entry(Term(1), Index(2))])
    assert log.committed == 2


def test_truncating_a_committed_entry_is_an_assertion() -> None:
    log = make_log([1, 1, 1], committed=2)
    with pytest.raises(AssertionError, match="undo committed"):
        log.append([Entry(Term(2), Index(2))])


@pytest.mark.parametrize(
    ("terms", "index", "term", "expected"),
    [
        ([1, 1, 2, 2, 3], 5, 2, (4, 2)),  # skip the whole term-3 run
        ([1, 1, 2, 2, 3], 5, 3, (5, 3)),
        ([1, 1, 2, 2, 3], 5, 1, (2, 1)),
        ([2, 2, 2], 3, 1, (0, 0)),
        ([1, 1], 10, 1, (2, 1)),  # index beyond the log is clamped
    ],
)
def test_find_conflict_by_term(
    terms: list[int], index: int, term: int, expected: tuple[int, int]
) -> None:
    assert make_log(terms).find_conflict_by_term(index, term) == expected


@given(nondecreasing_terms, st.integers(0, 35), st.integers(0, 6))
def test_find_conflict_by_term_returns_largest_index_with_term_at_most(
    terms: list[int], index: int, term: int
) -> None:
    log = make_log(terms)
    found, found_term = log.find_conflict_by_term(index, term)
    assert found <= min(index, log.last_index())
    assert log.term(found) == found_term
    assert found == 0 or found_term <= term
    for later in range(found + 1, min(index, log.last_index()) + 1):
        later_term = log.term(later)
        assert later_term is not None and later_term > term


@given(nondecreasing_terms, nondecreasing_terms)
def test_up_to_date_is_a_total_preorder_by_last_term_then_index(
    ours: list[int], theirs: list[int]
) -> None:
    # §5.4.1: compare the terms of the last entries; if equal, the longer log wins.
    a, b = make_log(ours), make_log(theirs)
    a_newer_or_equal = a.is_up_to_date(b.last_index(), b.last_term())
    b_newer_or_equal = b.is_up_to_date(a.last_index(), a.last_term())
    assert a_newer_or_equal or b_newer_or_equal
    key_a = (a.last_term(), a.last_index())
    key_b = (b.last_term(), b.last_index())
    assert a_newer_or_equal == (key_b >= key_a)


@given(nondecreasing_terms, st.integers(1, 400))
def test_slice_respects_byte_limit_but_always_returns_one_entry(
    terms: list[int], max_bytes: int
) -> None:
    log = make_log(terms)
    if not terms:
        return
    chunk = log.slice(1, log.last_index() + 1, max_bytes)
    assert chunk and chunk[0].index == 1
    assert len(chunk) == 1 or sum(len(e.data) + 24 for e in chunk) <= max_bytes


@given(nondecreasing_terms, st.integers(0, 30), nondecreasing_terms)
def test_append_then_entries_are_contiguous(
    base: list[int], cut: int, suffix_terms: list[int]
) -> None:
    log = make_log(base)
    first = min(cut, log.last_index()) + 1
    suffix = [Entry(Term(10 + t), Index(first + i)) for i, t in enumerate(suffix_terms)]
    log.append(suffix)
    assert [e.index for e in log.entries] == list(range(1, log.last_index() + 1))
    assert log.stable <= log.last_index()
