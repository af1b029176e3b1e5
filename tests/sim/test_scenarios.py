"""Named failure scenarios for the Raft core, run in the deterministic simulator.

One test per scenario of issue 2, most of them after the MIT 6.824 Raft lab tests
(TestInitialElection2A ... TestUnreliableChurn2C), each asserting what its scenario is
about. The invariant checkers (Election Safety, Leader Append-Only, Log Matching,
Leader Completeness, State Machine Safety, commit monotonicity) run after every
simulated event, so every scenario is also a safety check. Time is simulated: one
tick is `TICK` units, the election timeout is 10 ticks, and 10 ticks stand for one
second of real time.
"""

from __future__ import annotations

import random

import pytest

from phalanx.core.raft import Role
from phalanx.core.types import Entry, EntryKind, NodeId
from phalanx.sim.cluster import TICK, NetworkFaults, SimCluster

from .helpers import (
    RejectCountingCluster,
    applied_data,
    assert_all_applied_same,
    commands,
    commit_one,
    converge,
    count_applied,
    log_entries,
    run_paper_figure_8,
    run_until,
    stable_leader,
    terms,
    wait_for_stable_leader,
)

SEEDS = [1, 2, 3, 4, 5]
#: The randomised schedules (Figure 8, unreliable networks, churn) are cheap in
#: simulated time and each seed explores a different history: run more of them.
MANY_SEEDS = list(range(1, 11))
ELECTION_TIMEOUT_TICKS = 10
#: A new leader must be in place within this many ticks of losing the old one: the
#: old one's CheckQuorum lease (one timeout), a randomised timeout (< 2 timeouts), a
#: PreVote and a vote round, and room for one split vote.
ELECTION_TICKS_MAX = 6 * ELECTION_TIMEOUT_TICKS


# -- elections -----------------------------------------------------------------------------


@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize("seed", SEEDS)
def test_initial_election(seed: int, nodes: int) -> None:
    cluster = SimCluster(nodes, seed)
    leader = wait_for_stable_leader(cluster, max_ticks=ELECTION_TICKS_MAX)
    assert cluster.leaders() == [leader]
    term = cluster.raw(leader).raft.term
    assert set(terms(cluster).values()) == {term}
    votes_before = cluster.messages_by_type["VoteRequest"]

    # With no faults the leader keeps its heartbeats flowing, so nobody campaigns.
    for _ in range(100):
        cluster.run_ticks(1)
        assert cluster.leaders() == [leader]
        assert stable_leader(cluster, cluster.ids) == leader
        assert set(terms(cluster).values()) == {term}
    assert cluster.messages_by_type["VoteRequest"] == votes_before


@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize("seed", SEEDS)
def test_reelection_after_leader_cut_off_and_no_disruption_on_return(seed: int, nodes: int) -> None:
    cluster = SimCluster(nodes, seed)
    old_leader = wait_for_stable_leader(cluster)
    old_term = cluster.raw(old_leader).raft.term
    commit_one(cluster, b"before", nodes)

    cluster.disconnect(old_leader)
    others = [n for n in cluster.ids if n != old_leader]
    new_leader = wait_for_stable_leader(cluster, others, max_ticks=ELECTION_TICKS_MAX)
    new_term = cluster.raw(new_leader).raft.term
    assert new_term > old_term
    # CheckQuorum: the cut-off leader gives up within an election timeout or two.
    run_until(
        cluster,
        lambda: cluster.raw(old_leader).raft.role is not Role.LEADER,
        2 * ELECTION_TIMEOUT_TICKS,
        "cut-off leader steps down",
    )
    index = commit_one(cluster, b"while-cut-off", nodes - 1)

    # Alone, the old leader keeps polling (PreVote) but never raises its own term. (The
    # others have a leader and stay quiet, so every VoteRequest now is its poll.)
    polls_before = cluster.messages_by_type["VoteRequest"]
    for _ in range(5 * ELECTION_TIMEOUT_TICKS):
        cluster.run_ticks(1)
        assert cluster.raw(old_leader).raft.term == old_term
        assert cluster.raw(old_leader).raft.role is not Role.CANDIDATE
    assert cluster.messages_by_type["VoteRequest"] > polls_before

    cluster.connect(old_leader)
    for _ in range(5 * ELECTION_TIMEOUT_TICKS):
        cluster.run_ticks(1)
        assert cluster.leader() == new_leader
        assert cluster.raw(new_leader).raft.term == new_term
    assert set(terms(cluster).values()) == {new_term}
    assert stable_leader(cluster, cluster.ids) == new_leader
    # The returning node caught up with what was committed without it.
    assert applied_data(cluster, old_leader, index) == b"while-cut-off"


@pytest.mark.parametrize("seed", SEEDS)
def test_many_elections_seven_nodes_three_cut_off(seed: int) -> None:
    nodes = 7
    cluster = SimCluster(nodes, seed)
    rng = random.Random(seed)
    wait_for_stable_leader(cluster)
    leaders_seen = set()
    for round_number in range(10):
        cut = rng.sample(cluster.ids, 3)
        leader = cluster.leader()
        if round_number % 2 == 0 and leader is not None and leader not in cut:
            cut[0] = leader  # every other round, make sure the leader is among them
        for node in cut:
            cluster.disconnect(node)
        connected = [n for n in cluster.ids if n not in cut]
        # Four of seven is a majority: it must have (or elect) a leader. It needs three
        # votes from the other three, so split votes are likelier than with all seven:
        # allow several rounds of them.
        leader = wait_for_stable_leader(cluster, connected, max_ticks=2 * ELECTION_TICKS_MAX)
        assert leader in connected
        for node in cut:
            cluster.connect(node)
        leader = wait_for_stable_leader(cluster, max_ticks=2 * ELECTION_TICKS_MAX)
        cluster.run_ticks(ELECTION_TIMEOUT_TICKS // 2)  # as 6.824 sleeps before checking
        assert stable_leader(cluster, cluster.ids) == leader
        leaders_seen.add((cluster.raw(leader).raft.term, leader))
    # Leaders were cut off: leadership moved several times.
    assert len(leaders_seen) >= 5


# -- replication ---------------------------------------------------------------------------


@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize("seed", SEEDS)
def test_basic_agreement(seed: int, nodes: int) -> None:
    cluster = SimCluster(nodes, seed)
    leader = wait_for_stable_leader(cluster)
    # Only the new leader's no-op is in the log: nothing was proposed yet.
    assert all(commands(cluster.nodes[n].applied) == [] for n in cluster.ids)
    expected_index = cluster.raw(leader).raft.log.last_index() + 1
    for i in range(10):
        data = f"cmd-{i}".encode()
        index = commit_one(cluster, data, nodes, retry=False)
        assert index == expected_index
        for node in cluster.ids:
            assert applied_data(cluster, node, index) == data
        expected_index += 1
    assert cluster.leaders() == [leader]
    assert_all_applied_same(cluster)


@pytest.mark.parametrize("how", ["crash", "disconnect"])
@pytest.mark.parametrize("seed", SEEDS)
def test_follower_failure(seed: int, how: str) -> None:
    cluster = SimCluster(3, seed)
    leader = wait_for_stable_leader(cluster)
    commit_one(cluster, b"101", 3)
    first, second = (n for n in cluster.ids if n != leader)

    fail = cluster.crash if how == "crash" else cluster.disconnect
    fail(first)
    # One follower down: the leader and the other follower are still a majority.
    index = commit_one(cluster, b"102", 2, retry=False)
    assert cluster.leader() == leader
    assert count_applied(cluster, index, b"102") == 2
    if how == "disconnect":
        assert cluster.raw(first).raft.log.last_index() < index

    fail(second)
    # Both followers down: the leader accepts a proposal but can never commit it.
    proposal = cluster.propose(b"104", leader)
    assert proposal is not None
    commit_before = {n: cluster.raw(n).raft.log.committed for n in cluster.alive()}
    assert commit_before[leader] < proposal.index
    cluster.run_ticks(5 * ELECTION_TIMEOUT_TICKS)
    for node in cluster.alive():
        assert cluster.raw(node).raft.log.committed == commit_before[node]
        assert b"104" not in commands(cluster.nodes[node].applied)
    assert proposal.index not in cluster.acknowledged
    # CheckQuorum: a leader that cannot reach a majority steps down.
    assert cluster.raw(leader).raft.role is not Role.LEADER


@pytest.mark.parametrize("how", ["crash", "disconnect"])
@pytest.mark.parametrize("seed", SEEDS)
def test_leader_failure(seed: int, how: str) -> None:
    cluster = SimCluster(3, seed)
    old_leader = wait_for_stable_leader(cluster)
    commit_one(cluster, b"101", 3)
    old_term = cluster.raw(old_leader).raft.term

    # The leader is cut off, takes a proposal it can no longer replicate, then fails.
    cluster.disconnect(old_leader)
    doomed = cluster.propose(b"doomed", old_leader)
    assert doomed is not None
    if how == "crash":
        cluster.crash(old_leader)
    others = [n for n in cluster.ids if n != old_leader]
    new_leader = wait_for_stable_leader(cluster, others, max_ticks=ELECTION_TICKS_MAX)
    assert cluster.raw(new_leader).raft.term > old_term
    # Commits continue without the old leader.
    commit_one(cluster, b"102", 2, retry=False)

    if how == "crash":
        cluster.restart(old_leader)
    cluster.connect(old_leader)
    commit_one(cluster, b"103", 3, retry=False)
    converge(cluster)
    # The old leader's uncommitted entry was never committed and is gone everywhere.
    assert doomed.index not in cluster.acknowledged
    for node in cluster.ids:
        assert b"doomed" not in commands(log_entries(cluster, node))
        assert commands(cluster.nodes[node].applied) == [b"101", b"102", b"103"]


@pytest.mark.parametrize("seed", SEEDS)
def test_fail_agree_reconnected_follower_catches_up(seed: int) -> None:
    cluster = SimCluster(3, seed)
    leader = wait_for_stable_leader(cluster)
    commit_one(cluster, b"101", 3)
    follower = next(n for n in cluster.ids if n != leader)
    cluster.disconnect(follower)
    missed = [commit_one(cluster, f"{i}".encode(), 2, retry=False) for i in range(102, 106)]
    assert cluster.raw(follower).raft.log.last_index() < missed[0]

    cluster.connect(follower)
    last = commit_one(cluster, b"106", 3, retry=False)
    for i, index in enumerate(missed, start=102):
        assert applied_data(cluster, follower, index) == f"{i}".encode()
    assert applied_data(cluster, follower, last) == b"106"
    assert_all_applied_same(cluster)
    assert log_entries(cluster, follower) == log_entries(cluster, leader)


@pytest.mark.parametrize("seed", SEEDS)
def test_fail_no_agree_without_a_majority(seed: int) -> None:
    cluster = SimCluster(5, seed)
    leader = wait_for_stable_leader(cluster)
    commit_one(cluster, b"10", 5)
    cut = [n for n in cluster.ids if n != leader][:3]
    for node in cut:
        cluster.disconnect(node)

    proposal = cluster.propose(b"20", leader)
    assert proposal is not None
    assert proposal.index == cluster.raw(leader).raft.log.committed + 1
    cluster.run_ticks(3 * ELECTION_TIMEOUT_TICKS)
    for node in cluster.ids:
        assert cluster.raw(node).raft.log.committed < proposal.index
        assert applied_data(cluster, node, proposal.index) is None

    for node in cut:
        cluster.connect(node)
    # The old leader may or may not win again; either way commits resume.
    commit_one(cluster, b"30", 5)
    converge(cluster)
    applied = assert_all_applied_same(cluster)
    # "20" survives only if the old leader won again and committed it in its new term.
    assert commands(applied) in ([b"10", b"30"], [b"10", b"20", b"30"])


@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize("seed", SEEDS)
def test_concurrent_proposals(seed: int, nodes: int) -> None:
    cluster = SimCluster(nodes, seed)
    leader = wait_for_stable_leader(cluster)
    followers = [n for n in cluster.ids if n != leader]
    assert all(cluster.propose(b"to-a-follower", f) is None for f in followers)

    # Fifty clients propose in the same simulated instant.
    proposals = [cluster.propose(f"c{i}".encode()) for i in range(50)]
    assert all(p is not None for p in proposals)
    indices = [p.index for p in proposals if p is not None]
    assert len(set(indices)) == len(indices)
    assert indices == list(range(indices[0], indices[0] + 50))

    converge(cluster)
    expected = [f"c{i}".encode() for i in range(50)]
    for node in cluster.ids:
        assert commands(cluster.nodes[node].applied) == expected
        for proposal in proposals:
            assert proposal is not None
            assert applied_data(cluster, node, proposal.index) == proposal.data
    assert len(cluster.acknowledged) == 50


@pytest.mark.parametrize("seed", SEEDS)
def test_rejoin_of_partitioned_leader_overwrites_its_uncommitted_entries(seed: int) -> None:
    cluster = SimCluster(3, seed)
    leader1 = wait_for_stable_leader(cluster)
    commit_one(cluster, b"101", 3)

    # The leader is cut off and takes proposals it can never commit.
    cluster.disconnect(leader1)
    lost = [cluster.propose(data, leader1) for data in (b"lost-102", b"lost-103", b"lost-104")]
    assert all(p is not None for p in lost)
    lost_entries = {
        Entry(p.term, p.index, EntryKind.COMMAND, p.data) for p in lost if p is not None
    }
    assert lost_entries <= set(log_entries(cluster, leader1))

    # The other two elect a leader and commit without it.
    others = [n for n in cluster.ids if n != leader1]
    leader2 = wait_for_stable_leader(cluster, others, max_ticks=ELECTION_TICKS_MAX)
    commit_one(cluster, b"103", 2, retry=False)

    # The new leader is cut off; the old one returns and must accept the newer log.
    # (`partition`, not `connect`: connecting leader1 would also link it to leader2.)
    third = next(n for n in others if n != leader2)
    cluster.partition([leader1, third])
    assert wait_for_stable_leader(cluster, [leader1, third], max_ticks=ELECTION_TICKS_MAX) == third
    commit_one(cluster, b"104", 2, retry=False)
    cluster.heal()
    commit_one(cluster, b"105", 3, retry=False)
    converge(cluster)

    reference = log_entries(cluster, others[0])
    for node in cluster.ids:
        entries = log_entries(cluster, node)
        assert not lost_entries & set(entries)
        assert not {b"lost-102", b"lost-103", b"lost-104"} & set(commands(entries))
        assert entries == reference
    assert commands(reference) == [b"101", b"103", b"104", b"105"]


def _catch_up(cluster: SimCluster, leader: NodeId, laggards: list[NodeId]) -> int:
    """Runs until `laggards` hold the leader's log; returns the ticks it took."""
    return run_until(
        cluster,
        lambda: all(log_entries(cluster, n) == log_entries(cluster, leader) for n in laggards),
        ELECTION_TIMEOUT_TICKS,
        f"{laggards} catch up with leader {leader}",
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_backup_skips_conflicting_terms_quickly(seed: int) -> None:
    """6.824 TestBackup2B: 50 uncommitted entries on each side of alternating
    partitions; a leader that backed up one entry per round trip would need over 50
    rejected AppendEntries per lagging follower to find where the logs agree."""
    cluster = RejectCountingCluster(5, seed)
    leader1 = wait_for_stable_leader(cluster)
    commit_one(cluster, b"first", 5)

    # leader1 and one follower are cut off with 50 proposals they cannot commit.
    ids = list(cluster.ids)
    follower1 = next(n for n in ids if n != leader1)
    rest = [n for n in ids if n not in (leader1, follower1)]
    cluster.partition([leader1, follower1], rest)
    for i in range(50):
        assert cluster.propose(f"a{i}".encode(), leader1) is not None
    cluster.run_ticks(ELECTION_TIMEOUT_TICKS)

    # The other three elect a leader and commit 50 entries.
    leader2 = wait_for_stable_leader(cluster, rest, max_ticks=ELECTION_TICKS_MAX)
    for i in range(50):
        commit_one(cluster, f"b{i}".encode(), 3)

    # Cut leader2 and one of its followers off with 50 more uncommitted entries.
    other = next(n for n in rest if n != leader2)
    partner = next(n for n in rest if n not in (leader2, other))
    cluster.partition([leader2, partner], [leader1, follower1, other])
    for i in range(50):
        assert cluster.propose(f"c{i}".encode(), leader2) is not None
    cluster.run_ticks(ELECTION_TIMEOUT_TICKS)

    # leader1, follower1 and other: only `other` has the committed "b" entries, so it
    # must win, and the other two must discard their 50 "a" entries.
    rejections_before = sum(cluster.append_rejections.values())
    leader3 = wait_for_stable_leader(
        cluster, [leader1, follower1, other], max_ticks=ELECTION_TICKS_MAX
    )
    assert leader3 == other
    first_ticks = _catch_up(cluster, leader3, [leader1, follower1])
    first_rejections = sum(cluster.append_rejections.values()) - rejections_before
    for i in range(50):
        commit_one(cluster, f"d{i}".encode(), 3)

    # Everyone together: leader2 and partner discard their 50 "c" entries.
    rejections_before = sum(cluster.append_rejections.values())
    cluster.heal()
    second_ticks = _catch_up(cluster, leader3, [leader2, partner])
    second_rejections = sum(cluster.append_rejections.values()) - rejections_before
    commit_one(cluster, b"last", 5)
    converge(cluster)

    # leader1 and follower1 each hold one conflicting term past the match point: the
    # first rejection's hint skips all of it, so the second probe matches. A heartbeat
    # answer may resend the probe while that rejection is on its way back, hence at
    # most 2 x 2. Backing up one entry per round trip would take over 50 each.
    assert first_rejections <= 4
    # leader2 and partner share leader3's log up to leader3's first index: the probe
    # from there matches at once and the conflicting "c" entries are overwritten.
    assert second_rejections <= 4
    # A round trip takes under a tick; a probe lost to the partition waits for the
    # next heartbeat answer at worst.
    assert first_ticks <= 3
    assert second_ticks <= 3
    applied = assert_all_applied_same(cluster)
    for prefix in (b"a", b"c"):
        assert not [c for c in commands(applied) if c.startswith(prefix)]
    assert len([c for c in commands(applied) if c.startswith(b"b")]) == 50
    assert len([c for c in commands(applied) if c.startswith(b"d")]) == 50


# -- message counts ------------------------------------------------------------------------


def _sent_since(cluster: SimCluster, before: dict[str, int]) -> dict[str, int]:
    return {
        kind: count - before.get(kind, 0)
        for kind, count in cluster.messages_by_type.items()
        if count - before.get(kind, 0)
    }


@pytest.mark.parametrize("seed", SEEDS)
def test_message_counts_for_an_election_and_ten_entries(seed: int) -> None:
    nodes = 3
    peers = nodes - 1
    # A constant delay keeps every link FIFO, as TCP would: with the default jittered
    # delay, an AppendEntries may overtake the one before it and be rejected, and the
    # count would measure the network's reordering rather than the protocol.
    fifo = NetworkFaults(delay_min=3, delay_max=3)
    cluster = SimCluster(nodes, seed, faults=fifo)
    leader = wait_for_stable_leader(cluster)
    # A PreVote round and a vote round each cost a request and a response per peer;
    # the bound allows one failed attempt (a split vote) before the winning one.
    votes = cluster.messages_by_type["VoteRequest"] + cluster.messages_by_type["VoteResponse"]
    assert 4 * peers <= votes <= 2 * 4 * peers
    cluster.run_ticks(2)  # the no-op commits and its acknowledgements drain

    before = dict(cluster.messages_by_type)
    start = cluster.time
    last_index = 0
    for i in range(10):
        # The next entry is proposed as soon as the previous one commits.
        proposal = cluster.propose(f"entry-{i}".encode())
        assert proposal is not None
        last_index = proposal.index
        while cluster.raw(leader).raft.log.committed < last_index:
            cluster.run_until(cluster.time + 1)
    run_until(
        cluster,
        lambda: all(len(cluster.nodes[n].applied) >= last_index for n in cluster.ids),
        2,
        "followers learn the last commit",
    )
    elapsed_ticks = -(-(cluster.time - start) // TICK)
    sent = _sent_since(cluster, before)
    assert set(sent) <= {"AppendRequest", "AppendResponse", "HeartbeatRequest", "HeartbeatResponse"}
    # A commit needs one round trip (2 x 3 units, under a tick).
    assert elapsed_ticks <= 10 + 2
    # One heartbeat per peer per leader tick; each answered at most once.
    assert sent["HeartbeatRequest"] <= peers * (elapsed_ticks + 1)
    assert sent["HeartbeatResponse"] <= sent["HeartbeatRequest"] + peers
    # Per entry and peer: one AppendEntries carrying it and one carrying its commit
    # index. Beyond that, only a heartbeat answer from a peer still missing an entry
    # prompts one more.
    assert sent["AppendRequest"] <= 10 * 2 * peers + sent["HeartbeatResponse"]
    assert sent["AppendResponse"] <= sent["AppendRequest"]
    # Altogether: 4 messages per entry and peer, and 4 per tick and peer.
    assert sum(sent.values()) <= 4 * peers * (10 + elapsed_ticks)


@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize("seed", SEEDS)
def test_an_idle_second_sends_only_heartbeats(seed: int, nodes: int) -> None:
    peers = nodes - 1
    cluster = SimCluster(nodes, seed)
    wait_for_stable_leader(cluster)
    commit_one(cluster, b"something", nodes)
    cluster.run_ticks(2)

    before = dict(cluster.messages_by_type)
    idle_ticks = 10
    cluster.run_ticks(idle_ticks)
    sent = _sent_since(cluster, before)
    assert set(sent) == {"HeartbeatRequest", "HeartbeatResponse"}
    # The leader ticks exactly `idle_ticks` times in the window and sends one heartbeat
    # per peer each time; answers to the round sent just before the window may
    # still fall in it (a delay is shorter than a tick).
    assert sent["HeartbeatRequest"] == idle_ticks * peers
    assert (idle_ticks - 1) * peers <= sent["HeartbeatResponse"] <= (idle_ticks + 1) * peers


# -- persistence -----------------------------------------------------------------------------


def _durable_state(cluster: SimCluster, node: NodeId) -> tuple[int, int, list[Entry]]:
    raft = cluster.raw(node).raft
    return raft.term, raft.vote, list(raft.log.entries)


@pytest.mark.parametrize("who", ["all", "leader", "follower"])
@pytest.mark.parametrize("seed", SEEDS)
def test_persistence_across_crash_and_restart(seed: int, who: str) -> None:
    cluster = SimCluster(3, seed)
    leader = wait_for_stable_leader(cluster)
    committed = [commit_one(cluster, f"before-{i}".encode(), 3) for i in range(3)]
    victims = {
        "all": list(cluster.ids),
        "leader": [leader],
        "follower": [next(n for n in cluster.ids if n != leader)],
    }[who]
    saved = {n: _durable_state(cluster, n) for n in victims}
    commits = {n: cluster.raw(n).raft.log.committed for n in victims}

    for node in victims:
        cluster.crash(node)
    if who != "all":
        # The survivors are still a majority and keep committing.
        commit_one(cluster, b"while-down", 2)
    for node in victims:
        cluster.restart(node)
        # Term, vote and log come back from the disk alone. The commit index is a hint
        # the storage persists lazily (as the node's does): it may come back lower,
        # never higher.
        assert _durable_state(cluster, node) == saved[node]
        assert cluster.raw(node).raft.log.committed <= commits[node]

    commit_one(cluster, b"after", 3)
    converge(cluster)
    applied = assert_all_applied_same(cluster)
    for index, i in zip(committed, range(3), strict=True):
        assert applied[index - 1].data == f"before-{i}".encode()
    expected = [b"before-0", b"before-1", b"before-2", b"after"]
    if who != "all":
        expected.insert(3, b"while-down")
    assert commands(applied) == expected
    for node in victims:
        assert cluster.raw(node).raft.term >= saved[node][0]
        assert cluster.raw(node).raft.log.committed > commits[node]


# -- Figure 8 ---------------------------------------------------------------------------------


def _short_run(cluster: SimCluster, rng: random.Random) -> None:
    """6.824's pauses: mostly a few milliseconds, sometimes up to half a timeout."""
    if rng.random() < 0.1:
        cluster.run_ticks(rng.randrange(ELECTION_TIMEOUT_TICKS // 2 + 1))
    else:
        cluster.run_until(cluster.time + rng.randrange(13))


def _propose_everywhere(cluster: SimCluster, rng: random.Random) -> list[NodeId]:
    """Proposes a random value at every live node; returns those that accepted (a
    leader, and perhaps deposed leaders that do not know it yet)."""
    return [
        node
        for node in cluster.alive()
        if cluster.propose(f"v{rng.randrange(10**9)}".encode(), node) is not None
    ]


@pytest.mark.parametrize(
    ("seed", "crash_in_ready_rate", "max_message_bytes"),
    [
        *((seed, 0.0, 64 * 1024) for seed in (1, 2, 3)),
        *((seed, 0.002, 64 * 1024) for seed in (4, 5, 6)),
        # One entry per AppendEntries: commit points fall between entries of different
        # terms, where the Figure 8 rule matters most.
        *((seed, 0.0, 1) for seed in (7, 8, 9)),
        *((seed, 0.002, 1) for seed in (10, 11, 12)),
    ],
)
def test_figure_8(seed: int, crash_in_ready_rate: float, max_message_bytes: int) -> None:
    """6.824 TestFigure82C: leaders crash right after taking a proposal, so logs fill
    with entries of many terms that only some nodes hold: the situation of Raft paper
    Figure 8, where counting replicas of an older term's entry would commit it unsafely.
    The checkers watch every step; at the end all nodes must agree."""
    nodes = 5
    cluster = SimCluster(nodes, seed, max_message_bytes=max_message_bytes)
    rng = random.Random(seed)
    commit_one(cluster, b"first", 1)
    cluster.crash_in_ready_rate = crash_in_ready_rate
    leader_crashes = 0
    for _ in range(1000):
        accepted = _propose_everywhere(cluster, rng)
        _short_run(cluster, rng)
        leader = accepted[-1] if accepted else None
        if leader is not None and leader in cluster.alive():
            cluster.crash(leader)
            leader_crashes += 1
        elif rng.random() < 0.05 and cluster.alive():
            cluster.crash(rng.choice(cluster.alive()))
        if len(cluster.alive()) < 3:
            down = [n for n in cluster.ids if n not in cluster.alive()]
            cluster.restart(rng.choice(down))
    cluster.crash_in_ready_rate = 0.0
    for node in cluster.ids:
        cluster.restart(node)
    commit_one(cluster, b"last", nodes)
    converge(cluster)
    cluster.check_log_matching()

    # The schedule did what it is for: many leaders crashed, across many terms.
    assert leader_crashes > 20
    assert cluster.raw(cluster.ids[0]).raft.term > 20
    applied = assert_all_applied_same(cluster)
    assert commands(applied)[0] == b"first"
    assert commands(applied)[-1] == b"last"
    assert not cluster.missing_acknowledged()
    reference = log_entries(cluster, cluster.ids[0])
    assert all(log_entries(cluster, n) == reference for n in cluster.ids)


@pytest.mark.parametrize("seed", SEEDS)
def test_figure_8_paper_schedule(seed: int) -> None:
    """The exact schedule of Raft paper Figure 8 (see `run_paper_figure_8`): a leader
    must not commit an entry of an earlier term by counting its replicas (§5.4.2)."""
    run = run_paper_figure_8(seed)
    cluster, index = run.cluster, run.old_entry.index
    # x was on S1 and S3, a majority, and S1 still did not count it as committed.
    assert run.commit_when_old_entry_on_majority < index
    # S1 committed x only with its own no-op, which S3 then held too, so S5 (whose
    # log ends in an older term) could not win, and x survived everywhere.
    for node in cluster.ids:
        assert log_entries(cluster, node)[index - 1] == run.old_entry
        assert applied_data(cluster, node, index) == b"x"
    assert cluster.leader() != run.second_leader


# -- unreliable networks and churn -------------------------------------------------------------


def _unreliable(long_delay_rate: float = 0.0) -> NetworkFaults:
    return NetworkFaults(drop_rate=0.1, duplicate_rate=0.1, long_delay_rate=long_delay_rate)


@pytest.mark.parametrize("seed", MANY_SEEDS)
def test_unreliable_agreement(seed: int) -> None:
    """6.824 TestUnreliableAgree2C: drops, duplicates and reordering, many proposals
    (four fire-and-forget ones and one awaited one per round); all agree at the end."""
    nodes = 5
    cluster = SimCluster(nodes, seed, faults=_unreliable(long_delay_rate=0.05))
    awaited = []
    for i in range(1, 51):
        for j in range(4):
            cluster.propose(f"{100 * i + j}".encode())
        data = f"{i}".encode()
        commit_one(cluster, data, 1)
        awaited.append(data)
    assert cluster.messages_sent > cluster.messages_delivered  # the faults did bite

    cluster.faults = NetworkFaults()
    commit_one(cluster, b"100", nodes)
    converge(cluster)
    applied = assert_all_applied_same(cluster)
    applied_commands = commands(applied)
    assert set(awaited) <= set(applied_commands)
    assert not cluster.missing_acknowledged()
    assert len(cluster.acknowledged) >= len(awaited)


@pytest.mark.parametrize("seed", MANY_SEEDS)
def test_figure_8_unreliable_with_long_reordering(seed: int) -> None:
    """6.824 TestFigure8Unreliable2C: leaders are cut off right after taking a
    proposal, over a lossy network; from round 200 on, many messages are held back for
    up to 40 ticks and arrive long after newer ones."""
    nodes = 5
    cluster = SimCluster(nodes, seed, faults=_unreliable())
    rng = random.Random(seed)
    commit_one(cluster, b"first", 1)
    connected = set(cluster.ids)
    for round_number in range(1000):
        if round_number == 200:
            cluster.faults = _unreliable(long_delay_rate=0.3)
        accepted = [n for n in _propose_everywhere(cluster, rng) if n in connected]
        _short_run(cluster, rng)
        leader = accepted[-1] if accepted else None
        if leader is not None and rng.random() < 0.5:
            connected.discard(leader)
        if len(connected) < 3:
            connected.add(rng.choice(cluster.ids))
        # As in 6.824, a node that reconnects joins the connected group only.
        cluster.partition(sorted(connected))
    cluster.heal()
    commit_one(cluster, b"last", nodes)

    cluster.faults = NetworkFaults()
    converge(cluster, max_ticks=1000)
    cluster.check_log_matching()
    applied = assert_all_applied_same(cluster)
    assert commands(applied)[0] == b"first"
    assert b"last" in commands(applied)
    assert not cluster.missing_acknowledged()
    assert cluster.raw(cluster.ids[0]).raft.term > 10


@pytest.mark.parametrize("unreliable", [False, True])
@pytest.mark.parametrize("seed", MANY_SEEDS)
def test_churn_keeps_every_acknowledged_value(seed: int, unreliable: bool) -> None:
    """6.824 TestReliableChurn2C / TestUnreliableChurn2C: nodes crash, restart, drop
    off and return at random while clients keep proposing; every value a client was
    told is committed must be in the final log of every node."""
    nodes = 5
    cluster = SimCluster(nodes, seed, faults=_unreliable() if unreliable else None)
    rng = random.Random(seed)
    counter = 0
    connected = set(cluster.ids)
    leaders_seen = set()

    def victim() -> NodeId:
        # Half the time the leader, so that leadership really churns.
        leader = cluster.leader()
        return leader if leader is not None and rng.random() < 0.5 else rng.choice(cluster.ids)

    for _ in range(30):
        if rng.random() < 0.2:
            connected.discard(victim())
        if rng.random() < 0.5:
            node = rng.choice(cluster.ids)
            cluster.restart(node)
            connected.add(node)
        if rng.random() < 0.2:
            cluster.crash(victim())
        # As in 6.824, a node that reconnects joins the connected group only.
        cluster.partition(sorted(connected))
        # Seven tenths of an election timeout of client traffic, as in 6.824.
        for _ in range(7 * ELECTION_TIMEOUT_TICKS // 10):
            for _ in range(3):
                counter += 1
                node = rng.choice(cluster.ids)
                # Clients mostly find the leader, sometimes ask a random node.
                target = cluster.leader() if rng.random() < 0.8 else node
                cluster.propose(f"client-{counter}".encode(), target)
            cluster.run_ticks(1)
            leader = cluster.leader()
            if leader is not None:
                leaders_seen.add((cluster.raw(leader).raft.term, leader))

    acknowledged_during_churn = dict(cluster.acknowledged)
    assert len(acknowledged_during_churn) > 20
    assert len(leaders_seen) >= 2  # leadership did change hands under the churn
    cluster.faults = NetworkFaults()
    cluster.heal()
    for node in cluster.ids:
        cluster.restart(node)
    commit_one(cluster, b"final", nodes)
    converge(cluster)

    assert not cluster.missing_acknowledged()
    for node in cluster.ids:
        entries = {(e.index, e.data) for e in log_entries(cluster, node)}
        for index, data in acknowledged_during_churn.items():
            assert (index, data) in entries, f"node {node} lost acknowledged entry {index}"
    assert_all_applied_same(cluster)
