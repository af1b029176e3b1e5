"""Invariant checkers for the simulator: Raft's safety properties (paper Fig. 3),
checked after every simulated event, plus the properties a user relies on.

* Election Safety: at most one leader per term.
* Leader Append-Only: a leader never overwrites or deletes entries in its log.
* Log Matching: two logs with an entry of the same index and term are identical up
  to that index.
* Leader Completeness: a leader's log holds every entry committed in earlier terms.
* State Machine Safety: no two nodes apply different entries at the same index.
* Commit monotonicity: a node's commit index never decreases while it runs.
* Replica Digest Agreement: replicas that applied the same number of entries hold the
  same chained log and outcome digests, and at each checkpoint the same state digest
  (a replica rebuilt from a snapshot included).

A violation raises `InvariantViolation`, carrying the simulated time, so the seed
and time are enough to replay up to the failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from phalanx.core.log import RaftLog
from phalanx.core.types import Entry, Index, NodeId, Term


class InvariantViolation(AssertionError):
    def __init__(self, invariant: str, detail: str, time: int) -> None:
        super().__init__(f"{invariant} violated at t={time}: {detail}")
        self.invariant = invariant
        self.detail = detail
        self.time = time


@dataclass(slots=True)
class _LeaderMark:
    term: Term
    last_index: Index
    last_term: Term


@dataclass
class InvariantChecker:
    time: int = 0
    leaders_by_term: dict[Term, NodeId] = field(default_factory=dict)
    #: index -> the entry every node applied there (the first one seen).
    applied: dict[Index, Entry] = field(default_factory=dict)
    #: Highest index known committed anywhere (the highest applied index).
    committed_high: Index = Index(0)
    _leader_marks: dict[NodeId, _LeaderMark] = field(default_factory=dict)
    _commit_seen: dict[NodeId, Index] = field(default_factory=dict)
    #: index -> the entry a leader committed there (known at the moment a leader's
    #: commit index moves, before anyone applies it: a leader may crash first).
    committed: dict[Index, Entry] = field(default_factory=dict)
    #: applied index -> (log digest, outcome digest, the node that reported it first).
    digests: dict[Index, tuple[str, str, NodeId]] = field(default_factory=dict)
    #: Nodes running a deliberately faulty service: left out of digest agreement.
    faulty: set[NodeId] = field(default_factory=set)
    #: checkpoint index -> (log digest, state digest, the node that reported it first).
    checkpoints: dict[Index, tuple[bytes, bytes, NodeId]] = field(default_factory=dict)

    def fail(self, invariant: str, detail: str) -> None:
        raise InvariantViolation(invariant, detail, self.time)

    def on_restart(self, node: NodeId) -> None:
        """A new incarnation: its volatile commit may restart lower, legitimately."""
        self._commit_seen.pop(node, None)
        self._leader_marks.pop(node, None)

    def on_apply(self, node: NodeId, entry: Entry, expected_index: Index) -> None:
        if entry.index != expected_index:
            self.fail(
                "State Machine Safety",
                f"node {node} applied index {entry.index}, expected {expected_index}",
            )
        first = self.applied.setdefault(entry.index, entry)
        committed = self.committed.get(entry.index)
        if committed is not None and committed != entry:
            self.fail(
                "State Machine Safety",
                f"node {node} applied {entry} at index {entry.index}, where {committed} was "
                "committed",
            )
        if first != entry:
            self.fail(
                "State Machine Safety",
                f"node {node} applied {entry} at index {entry.index}; another node applied {first}",
            )
        self.committed_high = max(self.committed_high, entry.index)

    def applied_prefix(self, node: NodeId, index: Index) -> list[Entry]:
        """The entries 1..`index` as applied anywhere: what a service state that a
        snapshot or a restart put at `index` must hold."""
        prefix = []
        for i in range(1, index + 1):
            entry = self.applied.get(Index(i))
            if entry is None:
                raise InvariantViolation(
                    "State Machine Safety",
                    f"node {node} holds a state at index {index}, but no node ever applied "
                    f"entry {i}",
                    self.time,
                )
            prefix.append(entry)
        return prefix

    def on_digests(self, node: NodeId, index: Index, log_digest: str, outcome_digest: str) -> None:
        if index == 0 or node in self.faulty:
            return
        first = self.digests.setdefault(index, (log_digest, outcome_digest, node))
        if first[:2] != (log_digest, outcome_digest):
            what = "log" if first[0] != log_digest else "outcome"
            self.fail(
                "Replica Digest Agreement",
                f"after {index} entries node {node}'s {what} digest differs from node {first[2]}'s",
            )

    def on_checkpoint(
        self, node: NodeId, index: Index, log_digest: bytes, state_digest: bytes
    ) -> None:
        if node in self.faulty:
            return
        first = self.checkpoints.setdefault(index, (log_digest, state_digest, node))
        if first[:2] != (log_digest, state_digest):
            what = "log" if first[0] != log_digest else "state"
            self.fail(
                "Replica Digest Agreement",
                f"at checkpoint {index} node {node}'s {what} digest differs from node {first[2]}'s",
            )

    def on_snapshot_entry(self, node: NodeId, entry: Entry) -> None:
        """An entry a node's installed snapshot claims was applied at its index."""
        first = self.applied.get(entry.index)
        if first is not None and first != entry:
            self.fail(
                "State Machine Safety",
                f"node {node} installed a snapshot holding {entry} where {first} was applied",
            )

    def after_event(self, node: NodeId, role_is_leader: bool, term: Term, log: RaftLog) -> None:
        """Checks that only need the node that just changed."""
        previous_commit = self._commit_seen.get(node, Index(0))
        if log.committed < previous_commit:
            self.fail(
                "Commit Monotonicity",
                f"node {node} commit index went from {previous_commit} to {log.committed}",
            )
        if role_is_leader and log.committed > previous_commit:
            self._record_commits(node, log, previous_commit)
        self._commit_seen[node] = log.committed
        if role_is_leader:
            self._check_leader(node, term, log)
        else:
            self._leader_marks.pop(node, None)

    def _record_commits(self, node: NodeId, log: RaftLog, since: Index) -> None:
        for index in range(max(since, log.offset) + 1, log.committed + 1):
            entry = log.entry(index)
            first = self.committed.setdefault(Index(index), entry)
            if first != entry:
                self.fail(
                    "State Machine Safety",
                    f"leader {node} committed {entry} at index {index}, where {first} was "
                    "committed before",
                )
            applied = self.applied.get(Index(index))
            if applied is not None and applied != entry:
                self.fail(
                    "State Machine Safety",
                    f"leader {node} committed {entry} at index {index}, where {applied} "
                    "was applied",
                )
        self.committed_high = max(self.committed_high, log.committed)

    def _check_leader(self, node: NodeId, term: Term, log: RaftLog) -> None:
        owner = self.leaders_by_term.setdefault(term, node)
        if owner != node:
            self.fail("Election Safety", f"nodes {owner} and {node} both lead term {term}")
        mark = self._leader_marks.get(node)
        if mark is None or mark.term != term:
            self._check_completeness(node, term, log)
        elif log.last_index() < mark.last_index or log.term(mark.last_index) != mark.last_term:
            self.fail(
                "Leader Append-Only",
                f"leader {node} of term {term} lost or changed entry {mark.last_index}",
            )
        self._leader_marks[node] = _LeaderMark(term, log.last_index(), log.last_term())

    def _check_completeness(self, node: NodeId, term: Term, log: RaftLog) -> None:
        for index in range(log.offset + 1, self.committed_high + 1):
            committed = self.applied.get(Index(index)) or self.committed.get(Index(index))
            if committed is None or committed.term >= term:
                continue
            if index > log.last_index() or log.entry(index) != committed:
                self.fail(
                    "Leader Completeness",
                    f"new leader {node} of term {term} lacks committed entry {committed}",
                )

    def check_log_matching(self, logs: Iterable[tuple[NodeId, RaftLog]]) -> None:
        """Full Log Matching check across all nodes: for every pair, the entries both
        logs still hold must be equal up to the last index where their terms agree."""
        snapshot = list(logs)
        for position, (node_a, log_a) in enumerate(snapshot):
            for node_b, log_b in snapshot[position + 1 :]:
                self._check_pair(node_a, log_a, node_b, log_b)

    def _check_pair(self, node_a: NodeId, a: RaftLog, node_b: NodeId, b: RaftLog) -> None:
        low = max(a.offset, b.offset) + 1
        agree: int = min(a.last_index(), b.last_index())
        while agree >= low and a.term(agree) != b.term(agree):
            agree -= 1
        for index in range(low, agree + 1):
            if a.entry(index) != b.entry(index):
                self.fail(
                    "Log Matching",
                    f"nodes {node_a} and {node_b} both hold index={agree} "
                    f"term={a.term(agree)} but differ at index {index}",
                )
