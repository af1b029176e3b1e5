"""The Ready/advance contract (rawnode.py): what the caller is handed, and when."""

from __future__ import annotations

import random

import pytest

from phalanx.core import AppendRequest, RaftConfig, RawNode, Role
from phalanx.core.types import EntryKind, NodeId

N1 = NodeId(1)


def single_node() -> RawNode:
    return RawNode(RaftConfig(node_id=N1, voters=(N1,)), random.Random(1))


def test_single_node_commits_only_after_advance_persists() -> None:
    node = single_node()
    node.campaign()
    ready = node.ready()
    assert ready.soft_state is not None and ready.soft_state.role is Role.LEADER
    assert ready.hard_state is not None and ready.hard_state.term == 1
    assert [e.kind for e in ready.entries] == [EntryKind.NOOP]
    assert not ready.committed_entries  # not durable yet, so not committed
    node.advance(ready)
    ready = node.ready()
    assert [e.index for e in ready.committed_entries] == [1]
    node.advance(ready)
    first, last = node.propose([b"a", b"b"])
    ready = node.ready()
    assert [e.data for e in ready.entries] == [b"a", b"b"]
    node.advance(ready)
    ready = node.ready()
    assert [e.data for e in ready.committed_entries] == [b"a", b"b"]
    assert (first, last) == (2, 3)
    node.advance(ready)
    assert not node.has_ready()


def test_ready_must_be_advanced_before_the_next() -> None:
    node = single_node()
    node.campaign()
    node.ready()
    with pytest.raises(AssertionError, match="advance"):
        node.ready()


def test_restart_restores_term_vote_and_log_and_reapplies_committed() -> None:
    ids = (NodeId(1), NodeId(2), NodeId(3))
    node = RawNode(RaftConfig(node_id=N1, voters=ids), random.Random(1))
    node.campaign()
    node.advance(node.ready())
    # Simulate a full round of pre-votes and votes.
    from phalanx.core import VoteResponse

    term = node.raft.term + 1
    for voter in ids[1:]:
        node.step(VoteResponse(term, voter, N1, True, True))
    for voter in ids[1:]:
        node.step(VoteResponse(term, voter, N1, True))
    assert node.raft.role is Role.LEADER
    ready = node.ready()
    assert ready.hard_state is not None
    assert any(isinstance(m, AppendRequest) for m in ready.messages)
    restarted = RawNode(
        RaftConfig(node_id=N1, voters=ids),
        random.Random(2),
        hard_state=ready.hard_state,
        entries=list(ready.entries),
    )
    assert restarted.raft.term == term and restarted.raft.vote == N1
    assert restarted.raft.role is Role.FOLLOWER
    assert restarted.raft.log.last_index() == 1


def test_only_a_new_commit_index_needs_no_sync() -> None:
    # etcd-io/raft's MustSync: entries, a snapshot, or a new term or vote must be
    # durable before messages leave; a commit index alone is a hint.
    node = single_node()
    node.campaign()
    ready = node.ready()
    assert ready.must_sync() and ready.vote_changed  # a new term and a self-vote
    node.advance(ready)
    ready = node.ready()  # the no-op entry commits: only `commit` changed
    assert ready.hard_state is not None and ready.hard_state.commit == 1
    assert not ready.vote_changed and not ready.entries
    assert not ready.must_sync()
    node.advance(ready)
    node.propose([b"a"])
    ready = node.ready()
    assert ready.must_sync() and not ready.vote_changed
