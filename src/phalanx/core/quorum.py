"""Majority arithmetic (Raft §5.2, §5.3): vote tallies and the commit index.

Kept apart from the node logic so the math can be property-tested on its own.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping

from phalanx.core.types import Index, NodeId


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority(voter_count: int) -> int:
    """The smallest number of voters that any two such sets must share one of."""
    assert voter_count > 0
    return voter_count // 2 + 1


def committed_index(voters: Iterable[NodeId], match: Mapping[NodeId, Index]) -> Index:
    """The largest index that a majority of `voters` hold (missing voters hold 0)."""
    indices = sorted((match.get(voter, Index(0)) for voter in voters), reverse=True)
    return indices[majority(len(indices)) - 1]


def vote_result(voters: Collection[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    granted = sum(1 for voter in voters if votes.get(voter) is True)
    rejected = sum(1 for voter in voters if votes.get(voter) is False)
    needed = majority(len(voters))
    if granted >= needed:
        return VoteResult.WON
    if rejected > len(voters) - needed:
        return VoteResult.LOST
    return VoteResult.PENDING
