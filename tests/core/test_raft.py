"""Unit tests of the Raft rules, each citing the section of the paper (Ongaro &
Ousterhout 2014) or thesis (Ongaro 2014) it checks."""

from __future__ import annotations

import random

import pytest
from tests.core.harness import Harness

from phalanx.core import (
    AppendRequest,
    AppendResponse,
    ConfigError,
    HeartbeatRequest,
    NotLeaderError,
    ProposalDroppedError,
    Raft,
    RaftConfig,
    Role,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from phalanx.core.types import Entry, EntryKind, HardState, Index, NodeId, Term

N1, N2, N3 = NodeId(1), NodeId(2), NodeId(3)


def test_election_won_with_majority_and_noop_appended() -> None:
    # §5.2: a candidate wins with votes from a majority; §8: a leader's first entry of
    # its term is a no-op, so it learns what is committed.
    cluster = Harness(3)
    cluster.elect(1)
    leader = cluster[1]
    assert leader.term == 1
    assert leader.log.entry(1).kind is EntryKind.NOOP
    assert leader.log.committed == 1
    assert all(cluster[i].leader_id == 1 for i in (2, 3))


def test_one_vote_per_term() -> None:
    # §5.2: each server votes for at most one candidate in a given term.
    raft = Harness(3)[3]
    raft.step(VoteRequest(Term(1), N1, N3, Index(0), Term(0)))
    raft.step(VoteRequest(Term(1), N2, N3, Index(0), Term(0)))
    replies = [m for m in raft.messages if isinstance(m, VoteResponse)]
    assert [(m.to, m.granted) for m in replies] == [(1, True), (2, False)]
    assert raft.vote == 1


def test_vote_denied_to_candidate_with_less_up_to_date_log() -> None:
    # §5.4.1: a voter denies its vote if its own log is more up to date.
    raft = Raft(
        RaftConfig(node_id=N3, voters=(N1, N2, N3)),
        random.Random(0),
        hard_state=HardState(Term(2)),
        entries=[Entry(Term(1), Index(1)), Entry(Term(2), Index(2))],
    )
    raft.step(VoteRequest(Term(3), N1, N3, Index(5), Term(1)))
    raft.step(VoteRequest(Term(3), N2, N3, Index(2), Term(2)))
    replies = [(m.to, m.granted) for m in raft.messages if isinstance(m, VoteResponse)]
    assert replies == [(1, False), (2, True)]


def test_prevote_does_not_change_any_term() -> None:
    # Thesis §9.6: a pre-candidate polls at term+1 without incrementing its own term,
    # and voters answer without adopting that term.
    cluster = Harness(3)
    cluster[1].campaign()
    assert cluster[1].role is Role.PRE_CANDIDATE and cluster[1].term == 0
    requests = cluster.take(1)
    assert all(isinstance(m, VoteRequest) and m.pre_vote and m.term == 1 for m in requests)
    for message in requests:
        cluster.nodes[message.to].step(message)
    assert cluster[2].term == 0 and cluster[2].vote == 0


def test_isolated_node_does_not_inflate_terms() -> None:
    # Thesis §9.6: without a majority of pre-votes, repeated timeouts leave the term alone.
    cluster = Harness(3)
    cluster.elect(1)
    cluster.dropped.add(N3)
    for _ in range(100):
        cluster[3].tick()
        cluster.take(3)
    assert cluster[3].term == 1


def test_vote_request_ignored_within_leader_lease() -> None:
    # Thesis §4.2.3: with CheckQuorum, a follower that heard from its leader within the
    # election timeout ignores (pre)vote requests, so a returning node cannot disrupt.
    cluster = Harness(3)
    cluster.elect(1)
    cluster[2].step(VoteRequest(Term(5), N3, N2, Index(10), Term(4)))
    assert cluster[2].term == 1
    assert not cluster.take(2)


def test_leader_steps_down_without_quorum() -> None:
    # Thesis §6.2 (CheckQuorum): a leader that has not heard from a majority within an
    # election timeout steps down.
    cluster = Harness(3)
    cluster.elect(1)
    cluster.take(1)
    for _ in range(cluster[1].config.election_timeout_ticks * 2):
        cluster[1].tick()
        cluster.take(1)  # nothing reaches the followers, nothing comes back
    assert cluster[1].role is Role.FOLLOWER


def test_leader_commits_only_entries_of_its_own_term_by_counting() -> None:
    # §5.4.2 (Figure 8): an entry from an earlier term is not committed by counting
    # replicas; it commits when an entry of the current term does.
    raft = Raft(
        RaftConfig(node_id=N1, voters=(N1, N2, N3)),
        random.Random(0),
        hard_state=HardState(Term(2)),
        entries=[Entry(Term(1), Index(1)), Entry(Term(2), Index(2))],
    )
    raft.campaign()  # pre-vote at term 3
    for voter in (N2, N3):
        raft.step(VoteResponse(Term(3), voter, N1, True, True))
    for voter in (N2, N3):
        raft.step(VoteResponse(Term(3), voter, N1, True))
    assert raft.role is Role.LEADER and raft.term == 3
    raft.on_persisted(raft.log.last_index())
    raft.messages.clear()
    # Follower 2 acknowledges only index 2 (the term-2 entry): not enough.
    raft.step(AppendResponse(Term(3), N2, N1, Index(2)))
    assert raft.log.committed == 0
    # It then acknowledges the term-3 no-op: now index 3, and everything before it, commit.
    raft.step(AppendResponse(Term(3), N2, N1, Index(3)))
    assert raft.log.committed == 3


def test_leader_counts_itself_only_after_persisting() -> None:
    # Fig. 2: a server acknowledges an entry only once it is on stable storage; the
    # leader is one of the majority, so its own unsynced entry must not count.
    cluster = Harness(3)
    cluster.elect(1)
    leader = cluster[1]
    index, _ = leader.propose([b"x"])
    cluster.take(1)
    leader.step(AppendResponse(Term(1), N2, N1, index))
    assert leader.log.committed == index - 1
    leader.on_persisted(index)
    assert leader.log.committed == index


def test_follower_rejection_carries_hint_that_skips_a_term() -> None:
    # §5.3 optimisation: the follower names the first index of the conflicting term, so
    # the leader backs up a whole term per round trip.
    follower = Raft(
        RaftConfig(node_id=N2, voters=(N1, N2, N3)),
        random.Random(0),
        hard_state=HardState(Term(3)),
        entries=[Entry(Term(1), Index(1))] + [Entry(Term(3), Index(i)) for i in range(2, 9)],
    )
    follower.step(AppendRequest(Term(4), N1, N2, Index(8), Term(4), (), Index(0)))
    (reply,) = follower.messages
    assert isinstance(reply, AppendResponse) and reply.reject
    assert (reply.reject_hint, reply.hint_term) == (8, 3)
    follower.messages.clear()
    follower.step(AppendRequest(Term(4), N1, N2, Index(8), Term(2), (), Index(0)))
    (reply,) = follower.messages
    assert isinstance(reply, AppendResponse)
    assert (reply.reject_hint, reply.hint_term) == (1, 1)


def test_proposal_to_follower_names_the_leader() -> None:
    cluster = Harness(3)
    cluster.elect(2)
    with pytest.raises(NotLeaderError) as error:
        cluster[1].propose([b"x"])
    assert error.value.leader_hint == 2
    assert "try node 2" in str(error.value)


def test_uncommitted_bytes_are_bounded() -> None:
    cluster = Harness(3, max_uncommitted_bytes=1000)
    cluster.elect(1)
    cluster.dropped.update({N2, N3})
    cluster[1].propose([b"x" * 500])
    with pytest.raises(ProposalDroppedError, match="uncommitted bytes"):
        cluster[1].propose([b"x" * 500])


def test_pipeline_is_bounded_by_inflight_window_and_message_bytes() -> None:
    cluster = Harness(3, max_inflight_messages=3, max_message_bytes=100)
    cluster.elect(1)
    for _ in range(20):
        cluster[1].propose([b"y" * 60])
    sent = [m for m in cluster.take(1) if isinstance(m, AppendRequest) and m.to == 2]
    assert len(sent) == 3  # the window, then back-pressure
    assert all(len(m.entries) == 1 for m in sent)  # 84 bytes each; two would exceed 100


def test_leadership_transfer_sends_timeout_now_and_target_wins() -> None:
    # Thesis §3.10.
    cluster = Harness(3)
    cluster.elect(1)
    cluster[1].transfer_leadership(N3)
    with pytest.raises(ProposalDroppedError, match="transfer"):
        cluster[1].propose([b"x"])
    seen: list[type] = []
    cluster.deliver(keep=lambda m: seen.append(type(m)) or True)
    assert TimeoutNow in seen
    assert cluster[3].role is Role.LEADER and cluster[3].term == 2
    assert cluster[1].role is Role.FOLLOWER


def test_stale_leader_learns_newer_term_from_append_reply() -> None:
    cluster = Harness(3)
    cluster.elect(1)
    cluster[2].step(HeartbeatRequest(Term(0), N3, N2, Index(0)))
    (reply,) = cluster.take(2)
    assert isinstance(reply, AppendResponse) and reply.term == 1 and reply.to == 3


def test_messages_from_non_members_are_ignored() -> None:
    cluster = Harness(3)
    cluster.elect(1)
    cluster[1].step(AppendResponse(Term(9), NodeId(42), N1, Index(5)))
    assert cluster[1].role is Role.LEADER and cluster[1].term == 1


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"node_id": NodeId(4)}, "voters"),
        ({"election_timeout_ticks": 1}, "election_timeout_ticks"),
        ({"max_inflight_messages": 0}, "max_inflight_messages"),
        ({"voters": (N1, N1, N2)}, "voters"),
    ],
)
def test_bad_config_is_rejected_naming_the_setting(
    overrides: dict[str, object], setting: str
) -> None:
    base: dict[str, object] = {"node_id": N1, "voters": (N1, N2, N3)}
    base.update(overrides)
    with pytest.raises(ConfigError) as error:
        Raft(RaftConfig(**base), random.Random(0))  # type: ignore[arg-type]
    assert error.value.setting == setting


def test_leader_notices_a_follower_that_lost_its_log_while_idle() -> None:
    # A wiped follower answers heartbeats with its (empty) last index; the leader must
    # resend the log even though nothing new is being proposed.
    cluster = Harness(3)
    cluster.elect(1)
    cluster[1].propose([b"a", b"b"])
    cluster.deliver()
    assert cluster[1].progress[N2].match == 3
    wiped = Raft(RaftConfig(node_id=N2, voters=(N1, N2, N3)), random.Random(5))
    cluster.nodes[N2] = wiped
    for _ in range(cluster[1].config.heartbeat_interval_ticks):
        cluster[1].tick()
    cluster.deliver()
    assert wiped.log.last_index() == 3 and wiped.log.committed == 3
    assert cluster[1].progress[N2].match == 3


@pytest.mark.parametrize("broadcast", [False, True])
def test_new_commit_index_is_broadcast_only_when_asked(broadcast: bool) -> None:
    # A commit index is a hint to followers (§5.3: they learn it from later
    # AppendEntries). Without `broadcast_commit` it waits for the next append or
    # heartbeat instead of costing an empty AppendEntries (and its reply) per follower.
    cluster = Harness(3, broadcast_commit=broadcast)
    cluster.elect(1)
    leader = cluster[1]
    index, _ = leader.propose([b"x"])
    leader.on_persisted(index)
    cluster.take(1)
    leader.step(AppendResponse(leader.term, N2, N1, index))
    assert leader.log.committed == index
    commit_only = [m for m in cluster.take(1) if isinstance(m, AppendRequest) and not m.entries]
    assert len(commit_only) == (2 if broadcast else 0)
    # Either way the followers learn it: from the next heartbeat.
    for _ in range(leader.config.heartbeat_interval_ticks):
        leader.tick()
    cluster.deliver()
    assert cluster[2].log.committed == index
    assert cluster[3].log.committed == index
