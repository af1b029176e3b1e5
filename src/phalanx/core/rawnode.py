"""The caller's interface to the core: `RawNode`, `Ready` and `advance`.

The contract (as in etcd-io/raft's RawNode), for each `Ready` in order:

0. If `snapshot` is set, install it: restore the service from that snapshot's bytes
   (which the caller received beside the InstallSnapshot message), store it, and
   discard the stored log.
1. Persist `hard_state` (if not None) and `entries` (truncating the stored log from
   `entries[0].index` on), and sync if `must_sync()`.
2. Send `messages`. A leader's AppendRequest, HeartbeatRequest and InstallSnapshot may
   leave before step 1 completes: they promise nothing, and the leader counts its own
   log towards a commit only for entries `advance` reported durable (Raft thesis
   §10.2.1), so replication may overlap the leader's disk write. Every other message
   (a vote, an acknowledgement, a response) is a promise that holds only once step 1
   is durable (Raft Fig. 2, "Persistent state"): it must not leave before.
   `phalanx.server.replica.split_messages` draws exactly this line for both drivers.
3. Apply `committed_entries` to the service, in order.
4. Call `advance(ready)`.

Between `ready()` and `advance()` the caller may keep calling `tick`, `step` and
`propose`; it must not ask for another `Ready` before advancing the last one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from phalanx.core.messages import Message
from phalanx.core.progress import Progress
from phalanx.core.raft import Raft, RaftConfig, Role
from phalanx.core.types import Entry, HardState, Index, NodeId, SnapshotMeta, Term

if TYPE_CHECKING:
    import random  # only the type of the injected generator


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting; need not be persisted."""

    leader_id: NodeId
    role: Role


@dataclass(frozen=True, slots=True)
class Ready:
    """Work for the caller. Field order is the order of the contract above."""

    soft_state: SoftState | None
    #: A snapshot from the leader: install it (restore the service state from its
    #: bytes, store it, discard the stored log) before anything else in this Ready.
    snapshot: SnapshotMeta | None
    #: Persist before sending the promises among `messages`.
    hard_state: HardState | None
    #: Persist (truncating from entries[0].index) before sending the promises among
    #: `messages`.
    entries: Sequence[Entry]
    #: Send after persisting; a leader's AppendRequest, HeartbeatRequest and
    #: InstallSnapshot may go before (see the module's contract, step 2).
    messages: Sequence[Message]
    #: Apply in order, after persisting.
    committed_entries: Sequence[Entry]
    #: Whether `hard_state` changed in term or vote (not only in `commit`).
    vote_changed: bool = False

    def must_sync(self) -> bool:
        """Whether step 1 needs a sync before `messages` may leave: new entries, a
        snapshot, or a new term or vote. A change to `commit` alone is only a hint
        (etcd-io/raft's MustSync draws the same line): write it, but do not wait for it."""
        return self.vote_changed or bool(self.entries) or self.snapshot is not None


@dataclass(frozen=True, slots=True)
class Status:
    node_id: NodeId
    role: Role
    term: Term
    leader_id: NodeId
    last_index: Index
    commit_index: Index
    applied_index: Index
    progress: dict[NodeId, str]


class RawNode:
    def __init__(
        self,
        config: RaftConfig,
        rng: random.Random,
        *,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: SnapshotMeta | None = None,
    ) -> None:
        self.raft = Raft(config, rng, hard_state=hard_state, entries=entries, snapshot=snapshot)
        self._persisted_hard_state = hard_state or HardState()
        self._reported_soft_state = SoftState(self.raft.leader_id, self.raft.role)
        self._outstanding = False

    # Inputs pass straight through; see `Raft` for their meaning.
    def tick(self) -> None:
        self.raft.tick()

    def step(self, message: Message) -> None:
        self.raft.step(message)

    def propose(self, commands: Sequence[bytes]) -> tuple[Index, Index]:
        return self.raft.propose(commands)

    def campaign(self) -> None:
        self.raft.campaign()

    def transfer_leadership(self, target: NodeId) -> None:
        self.raft.transfer_leadership(target)

    def report_unreachable(self, peer: NodeId) -> None:
        self.raft.report_unreachable(peer)

    def report_snapshot(self, peer: NodeId, *, succeeded: bool) -> None:
        self.raft.report_snapshot(peer, succeeded=succeeded)

    def snapshot_taken(self, snapshot: SnapshotMeta, compact_to: Index) -> None:
        self.raft.snapshot_taken(snapshot, compact_to)

    def set_promotable(self, promotable: bool) -> None:
        """Whether this node may campaign (a node with a diverged service may not)."""
        self.raft.promotable = promotable

    def reapply_from(self, index: Index) -> None:
        """The caller restored its service to the state after `index` (from a healthy
        node's snapshot): committed entries after it will be handed out again."""
        assert not self._outstanding, "reapply_from() between ready() and advance()"
        log = self.raft.log
        assert log.offset <= index <= log.applied, "cannot reapply from outside the log"
        log.applied = index

    def has_ready(self) -> bool:
        raft = self.raft
        return bool(
            raft.pending_snapshot is not None
            or raft.messages
            or raft.log.has_unstable()
            or raft.log.has_committed_to_apply()
            or raft.hard_state() != self._persisted_hard_state
            or self._soft_state() != self._reported_soft_state
        )

    def ready(self) -> Ready:
        assert not self._outstanding, "advance() the previous Ready first"
        raft = self.raft
        soft = self._soft_state()
        hard = raft.hard_state()
        ready = Ready(
            soft_state=soft if soft != self._reported_soft_state else None,
            snapshot=raft.pending_snapshot,
            hard_state=hard if hard != self._persisted_hard_state else None,
            entries=raft.log.unstable_entries(),
            messages=raft.messages,
            committed_entries=raft.log.next_committed_entries(raft.config.max_apply_bytes),
            vote_changed=(hard.term, hard.vote)
            != (self._persisted_hard_state.term, self._persisted_hard_state.vote),
        )
        raft.messages = []
        self._reported_soft_state = soft
        self._outstanding = True
        return ready

    def advance(self, ready: Ready) -> None:
        assert self._outstanding, "advance() without ready()"
        self._outstanding = False
        raft = self.raft
        if ready.snapshot is not None and raft.pending_snapshot == ready.snapshot:
            raft.pending_snapshot = None
        if ready.hard_state is not None:
            self._persisted_hard_state = ready.hard_state
        if ready.entries:
            last = ready.entries[-1]
            raft.log.stable_to(last.index, last.term)
            raft.on_persisted(raft.log.stable)
        if ready.committed_entries:
            last_applied = ready.committed_entries[-1].index
            # A snapshot installed since ready() may already have moved past them.
            if last_applied > raft.log.applied:
                raft.log.applied_to(last_applied)

    def status(self) -> Status:
        raft = self.raft
        progress: dict[NodeId, Progress] = raft.progress if raft.role is Role.LEADER else {}
        return Status(
            node_id=raft.id,
            role=raft.role,
            term=raft.term,
            leader_id=raft.leader_id,
            last_index=raft.log.last_index(),
            commit_index=raft.log.committed,
            applied_index=raft.log.applied,
            progress={node: repr(p) for node, p in progress.items()},
        )

    def _soft_state(self) -> SoftState:
        return SoftState(self.raft.leader_id, self.raft.role)
