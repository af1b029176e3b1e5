"""Majority math (Raft §5.2 elections, §5.3/§5.4 commitment), as properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from phalanx.core.quorum import VoteResult, committed_index, majority, vote_result
from phalanx.core.types import Index, NodeId

voter_sets = st.integers(min_value=1, max_value=9).map(
    lambda n: tuple(NodeId(i) for i in range(1, n + 1))
)


@given(st.integers(min_value=1, max_value=100))
def test_any_two_majorities_intersect(n: int) -> None:
    assert 2 * majority(n) > n
    assert 2 * (majority(n) - 1) <= n  # and it is the smallest such size


@given(voter_sets, st.data())
def test_committed_index_is_held_by_a_majority_and_is_the_largest_such(
    voters: tuple[NodeId, ...], data: st.DataObject
) -> None:
    match = {v: Index(data.draw(st.integers(0, 50))) for v in voters}
    index = committed_index(voters, match)
    holders = sum(1 for v in voters if match[v] >= index)
    assert holders >= majority(len(voters))
    assert sum(1 for v in voters if match[v] >= index + 1) < majority(len(voters))


def test_missing_voters_count_as_holding_nothing() -> None:
    voters = (NodeId(1), NodeId(2), NodeId(3))
    assert committed_index(voters, {NodeId(1): Index(7)}) == 0
    assert committed_index(voters, {NodeId(1): Index(7), NodeId(2): Index(5)}) == 5


@given(voter_sets, st.data())
def test_vote_result_is_decided_exactly_when_a_side_has_a_majority(
    voters: tuple[NodeId, ...], data: st.DataObject
) -> None:
    votes = {v: data.draw(st.booleans()) for v in voters if data.draw(st.booleans())}
    granted = sum(votes.values())
    rejected = len(votes) - granted
    result = vote_result(voters, votes)
    if granted >= majority(len(voters)):
        assert result is VoteResult.WON
    elif rejected > len(voters) - majority(len(voters)):
        assert result is VoteResult.LOST
    else:
        assert result is VoteResult.PENDING
    # Both outcomes are never possible at once: a win needs a majority of grants.
    assert not (granted >= majority(len(voters)) and rejected >= majority(len(voters)))
