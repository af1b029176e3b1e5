"""Small drivers shared by the scenario tests, in the spirit of the MIT 6.824 harness
(`one`, `checkOneLeader`): each waits in simulated ticks, never in wall-clock time, and
fails with the seed so a failure can be replayed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from phalanx.core.messages import AppendResponse, Message
from phalanx.core.raft import Role
from phalanx.core.types import Entry, EntryKind, Index, NodeId, Term
from phalanx.sim.cluster import TICK, SimCluster

#: Ticks `commit_one` waits for one attempt before proposing again (6.824 waits 2 s).
COMMIT_ATTEMPT_TICKS = 20
#: Ticks `commit_one` keeps trying before it gives up (6.824 gives up after 10 s).
COMMIT_TICKS_MAX = 400


class RejectCountingCluster(SimCluster):
    """A `SimCluster` that also counts rejected AppendEntries per (follower, leader).

    `messages_by_type` counts responses by class only; the backup scenario needs the
    rejections themselves, because fast backtracking is a promise about them."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.append_rejections: Counter[tuple[NodeId, NodeId]] = Counter()
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _send(self, message: Message) -> None:
        if isinstance(message, AppendResponse) and message.reject:
            self.append_rejections[(message.from_id, message.to)] += 1
        super()._send(message)


def run_until(cluster: SimCluster, condition: Callable[[], bool], max_ticks: int, what: str) -> int:
    """Runs tick by tick until `condition()` holds; returns the ticks it took."""
    for ticks in range(max_ticks + 1):
        if condition():
            return ticks
        cluster.run_ticks(1)
    raise AssertionError(f"{what}: not within {max_ticks} ticks (seed {cluster.seed})")


def stable_leader(cluster: SimCluster, among: Iterable[NodeId]) -> NodeId | None:
    """The leader every node of `among` agrees on (same term, same leader), if any."""
    group = list(among)
    leaders = [n for n in group if cluster.raw(n).raft.role is Role.LEADER]
    if len(leaders) != 1:
        return None
    leader = leaders[0]
    term = cluster.raw(leader).raft.term
    for node in group:
        raft = cluster.raw(node).raft
        if raft.term != term or raft.leader_id != leader:
            return None
    return leader


def wait_for_stable_leader(
    cluster: SimCluster, among: Iterable[NodeId] | None = None, max_ticks: int = 200
) -> NodeId:
    group = list(cluster.ids if among is None else among)
    run_until(
        cluster,
        lambda: stable_leader(cluster, group) is not None,
        max_ticks,
        f"one leader agreed on by {group}",
    )
    leader = stable_leader(cluster, group)
    assert leader is not None
    return leader


def applied_data(cluster: SimCluster, node: NodeId, index: int) -> bytes | None:
    applied = cluster.nodes[node].applied
    if len(applied) < index:
        return None
    return applied[index - 1].data


def count_applied(cluster: SimCluster, index: int, data: bytes) -> int:
    """How many live nodes applied exactly `data` at `index`."""
    return sum(1 for n in cluster.alive() if applied_data(cluster, n, index) == data)


def commit_one(
    cluster: SimCluster,
    data: bytes,
    expected_nodes: int,
    *,
    retry: bool = True,
    max_ticks: int = COMMIT_TICKS_MAX,
) -> Index:
    """6.824's `one()`: proposes `data` at the leader until `expected_nodes` live nodes
    applied it at one index, and returns that index. With `retry`, a proposal that was
    lost (a leader change) is proposed again, so `data` may end up in the log twice."""
    deadline = cluster.time + max_ticks * TICK
    while cluster.time < deadline:
        proposal = cluster.propose(data)
        if proposal is None:
            cluster.run_ticks(1)
            continue
        for _ in range(COMMIT_ATTEMPT_TICKS):
            if count_applied(cluster, proposal.index, data) >= expected_nodes:
                return proposal.index
            cluster.run_ticks(1)
        if not retry:
            break
    raise AssertionError(
        f"{data!r} not applied on {expected_nodes} nodes within {max_ticks} ticks "
        f"(seed {cluster.seed})"
    )


def log_entries(cluster: SimCluster, node: NodeId) -> list[Entry]:
    return list(cluster.raw(node).raft.log.entries)


def terms(cluster: SimCluster, nodes: Iterable[NodeId] | None = None) -> dict[NodeId, Term]:
    return {n: cluster.raw(n).raft.term for n in (cluster.ids if nodes is None else nodes)}


def commands(entries: Iterable[Entry]) -> list[bytes]:
    return [e.data for e in entries if e.kind is EntryKind.COMMAND]


def assert_all_applied_same(cluster: SimCluster) -> list[Entry]:
    """Every live node applied the same entries (and so holds the same state)."""
    alive = cluster.alive()
    reference = cluster.nodes[alive[0]].applied
    for node in alive[1:]:
        assert cluster.nodes[node].applied == reference, (
            f"node {node} applied a different sequence than node {alive[0]} (seed {cluster.seed})"
        )
    return reference


def converge(cluster: SimCluster, max_ticks: int = 400) -> None:
    """Runs until a leader exists and every live node applied the whole log."""
    run_until(
        cluster,
        lambda: cluster.converged() and not cluster.missing_acknowledged(),
        max_ticks,
        "convergence",
    )


@dataclass
class PaperFigure8:
    """What `run_paper_figure_8` observed (names after the paper's S1, S5 and S3)."""

    cluster: SimCluster
    first_leader: NodeId
    second_leader: NodeId
    voter: NodeId
    #: The first leader's entry of its first term, at `old_entry.index`.
    old_entry: Entry
    #: The first leader's commit index when, leading again in a later term, it first
    #: knew a majority held `old_entry`: counting those replicas would commit it.
    commit_when_old_entry_on_majority: Index


def _step_until(cluster: SimCluster, condition: Callable[[], bool], what: str) -> None:
    """Runs one time unit at a time (a message takes at least one), so the test can
    act between two deliveries."""
    deadline = cluster.time + 200 * TICK
    while not condition():
        if cluster.time >= deadline:
            raise AssertionError(f"{what}: not within 200 ticks (seed {cluster.seed})")
        cluster.run_until(cluster.time + 1)


def run_paper_figure_8(seed: int) -> PaperFigure8:
    """The schedule of Raft paper Figure 8, on three nodes with one entry per
    AppendEntries (with bigger messages the new leader's no-op travels with the old
    entry and hides the hazard):

    (a) leader S1 appends entry x at index i and is cut off before replicating it;
    (b) S5 is elected by S3 and appends its no-op at index i, which never leaves S5;
    (c) S1 returns with S3, is elected in a later term and replicates x to S3: x is
        now on a majority, but it is from an older term, so S1 must not commit it yet;
        S1 is cut off before its own no-op reaches S3;
    (d) S5 returns with S3 and, if S3 still holds only x at index i, wins and
        overwrites x. Had S1 committed x, a committed entry would be lost.
    """
    cluster = SimCluster(3, seed, max_message_bytes=1)
    s1 = wait_for_stable_leader(cluster)
    commit_one(cluster, b"base", 3, retry=False)

    # (a)
    cluster.disconnect(s1)
    proposal = cluster.propose(b"x", s1)
    assert proposal is not None
    old_entry = cluster.raw(s1).raft.log.entry(proposal.index)

    # (b) Let S3's vote reach S5, but nothing S5 sends after it.
    a, b = (n for n in cluster.ids if n != s1)
    cluster.partition([a, b])
    votes: dict[str, NodeId] = {}

    def voted() -> bool:
        for candidate, voter in ((a, b), (b, a)):
            c_raft, v_raft = cluster.raw(candidate).raft, cluster.raw(voter).raft
            if (
                c_raft.role is Role.CANDIDATE
                and v_raft.vote == candidate
                and v_raft.term == c_raft.term
            ):
                votes.update(candidate=candidate, voter=voter)
                return True
        return False

    _step_until(cluster, voted, "a vote in the partition without S1")
    s5, s3 = votes["candidate"], votes["voter"]
    cluster.block_one_way(s5, s3)
    _step_until(cluster, lambda: cluster.raw(s5).raft.role is Role.LEADER, "S5 wins")
    cluster.disconnect(s5)
    assert cluster.raw(s5).raft.log.term(old_entry.index) != old_entry.term

    # (c)
    cluster.partition([s1, s3])
    commit_seen: list[Index] = []

    def s3_holds_old_entry() -> bool:
        raft = cluster.raw(s1).raft
        if raft.role is Role.LEADER and raft.progress[s3].match >= old_entry.index:
            commit_seen.append(raft.log.committed)
            return True
        return False

    _step_until(cluster, s3_holds_old_entry, "S1 leads again and replicates x to S3")
    _step_until(
        cluster,
        lambda: cluster.raw(s1).raft.log.committed >= old_entry.index,
        "S1 commits x",
    )
    cluster.disconnect(s1)

    # (d)
    cluster.partition([s5, s3])
    wait_for_stable_leader(cluster, [s5, s3])
    cluster.heal()
    converge(cluster)
    return PaperFigure8(cluster, s1, s5, s3, old_entry, commit_seen[0])
