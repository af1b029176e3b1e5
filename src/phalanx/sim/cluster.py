"""A deterministic, single-threaded simulation of a cluster of the replicas that ship.

Theory of operation
-------------------
Each simulated node is the production `Replica` (phalanx.server.replica), the very class
`phalanx node` drives, with its real service container, sessions, timers, snapshots and
checkpoints. The simulator is its second driver: where `Node` has TCP, a tick timer, a
write-ahead log and forked snapshot writers, the simulator has a seeded network, a
simulated clock, a `MemoryStorage` (the WAL's in-memory twin, which loses whatever was
not synced when its node crashes) and snapshots kept in memory. The batch protocol is
`Node`'s, step for step (see replica.py): reset/compact, send the early messages, write
and sync as asked, send the rest, `persisted`, carry out the outbox.

Everything that happens is an event in one priority queue ordered by (time, sequence):
a node's clock ticking, a message arriving (to a node or to a client), a node
restarting, a client's timer. Time is an integer number of milliseconds; a node ticks
every `TICK` with its own phase. All randomness (delays, drops, duplicates, election
timeouts, crash points, clients' backoff) comes from `random.Random`s derived from one
seed, and nothing iterates over an unordered collection, so one seed always gives the
same run. Every event is folded into a trace hash that proves it.

A crash may come anywhere in a batch: before it, after its early messages left but
before its sync (its writes are lost, its early messages are out), or after the sync
before its other messages left. A restart rebuilds the replica from its storage and its
newest stored snapshot alone, exactly as `Node.__init__` does.

Invariant checkers (checkers.py) run after every event; a violation raises with the
simulated time.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from phalanx.core.errors import NotLeaderError, ProposalDroppedError
from phalanx.core.messages import (
    AppendRequest,
    AppendResponse,
    InstallSnapshot,
    Message,
    VoteResponse,
)
from phalanx.core.raft import Role
from phalanx.core.rawnode import RawNode
from phalanx.core.types import Entry, EntryKind, Index, NodeId, SnapshotMeta, Term
from phalanx.server.config import NodeConfig
from phalanx.server.replica import Batch, Replica
from phalanx.service.base import Service
from phalanx.sim.checkers import InvariantChecker
from phalanx.storage.memory import MemoryStorage
from phalanx.transport.wire import CheckpointReport, ClientReply, PushedMessage

#: Simulated milliseconds per node tick (a node's `tick_ms`).
TICK = 10
_EVENT_TICK = 0
_EVENT_DELIVER = 1
_EVENT_RESTART = 2
_EVENT_TO_NODE = 3
_EVENT_TO_CLIENT = 4
_EVENT_CLIENT_WAKE = 5
_EVENT_SNAPSHOT_WRITTEN = 6
_EVENT_SNAPSHOT_LOST = 7
#: A snapshot's writer finishes up to this many ticks after the fork (`Node` forks a
#: child that writes while the parent goes on applying).
SNAPSHOT_WRITE_TICKS_MAX = 5
#: Ticks after which a leader learns that a snapshot transfer failed (as the node's
#: transfer step times out).
SNAPSHOT_TRANSFER_TIMEOUT_TICKS = 20
#: Messages queued in the network at once; a run that exceeds it has a bug.
MAX_MESSAGES_IN_FLIGHT = 200_000
#: How often (in events) the full Log Matching check runs.
LOG_MATCHING_EVERY_EVENTS = 500
#: Snapshots each simulated node keeps (as `snapshots_keep`).
SNAPSHOTS_KEPT = 2
#: Wall clocks start here (milliseconds): cluster time looks like a real date.
WALL_CLOCK_START_MS = 1_800_000_000_000
#: Where in a batch a crash may strike.
CRASH_BEFORE_BATCH = "before"
CRASH_BEFORE_SYNC = "before-sync"
CRASH_AFTER_SYNC = "after-sync"


@dataclass
class NetworkFaults:
    """The network's misbehaviour; probabilities are per message."""

    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    #: A message is held back long enough to arrive after later ones.
    long_delay_rate: float = 0.0
    delay_min: int = 1
    delay_max: int = 5
    long_delay_max: int = 40 * TICK


@dataclass(frozen=True, slots=True)
class SnapshotTransfer:
    """A leader's InstallSnapshot with the stored snapshot's bytes beside it (the real
    node streams them in chunks; the simulator delivers them whole, or loses them)."""

    install: InstallSnapshot
    data: bytes
    repair: bool = False

    @property
    def to(self) -> NodeId:
        return self.install.to

    @property
    def from_id(self) -> NodeId:
        return self.install.from_id

    @property
    def term(self) -> Term:
        return self.install.term


class ClientClosed:
    """Tells a simulated client that a node closed its connection."""

    __slots__ = ()


CLIENT_CLOSED = ClientClosed()


class SimClientDriver(Protocol):
    """What the cluster needs of a simulated client (see clients.py)."""

    def on_message(
        self, node: NodeId, message: ClientReply | PushedMessage | ClientClosed
    ) -> None: ...

    def on_wake(self, token: int) -> None: ...


class _Clock:
    """A node's clock: the simulation's time, with this node's wall-clock offset."""

    __slots__ = ("_cluster", "_offset_ms")

    def __init__(self, cluster: SimCluster, offset_ms: int) -> None:
        self._cluster = cluster
        self._offset_ms = offset_ms

    def wall_ms(self) -> int:
        return WALL_CLOCK_START_MS + self._cluster.time + self._offset_ms

    def mono_ms(self) -> float:
        return float(self._cluster.time)


@dataclass
class SimNode:
    node_id: NodeId
    storage: MemoryStorage
    replica: Replica | None = None
    incarnation: int = 0
    #: Durable snapshots, oldest first: (meta, container bytes).
    snapshots: list[tuple[SnapshotMeta, bytes]] = field(default_factory=list)
    #: The entries this incarnation's service state holds, in order (1..applied).
    applied: list[Entry] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.replica is not None

    @property
    def raw(self) -> RawNode | None:
        return self.replica.raw if self.replica is not None else None

    @property
    def snapshot(self) -> SnapshotMeta:
        return self.snapshots[-1][0] if self.snapshots else SnapshotMeta()


@dataclass
class Proposal:
    node_id: NodeId
    term: Term
    index: Index
    data: bytes
    incarnation: int


@dataclass
class SimSettings:
    """The simulated nodes' settings; each seed of the swarm picks its own."""

    election_timeout_ticks: int = 10
    heartbeat_interval_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    broadcast_commit: bool = False
    max_message_bytes: int = 64 * 1024
    max_inflight_messages: int = 64
    #: Take a snapshot after this many applied entries (0: never) ...
    snapshot_every: int = 0
    #: ... then compact the log to this many entries before it.
    compaction_margin: int = 0
    checkpoint_every: int = 0
    max_replies_per_session: int = 64
    session_timeout_ms: int = 3_600_000
    #: A replica that finds its service diverged asks the leader for a snapshot.
    auto_repair: bool = False
    #: What the replicas run (MODULE:CLASS).
    service: str = "phalanx.sim.services:SimKV"


class SimCluster:
    def __init__(
        self,
        nodes: int,
        seed: int,
        *,
        faults: NetworkFaults | None = None,
        election_timeout_ticks: int = 10,
        pre_vote: bool = True,
        check_quorum: bool = True,
        max_message_bytes: int = 64 * 1024,
        max_inflight_messages: int = 64,
        snapshot_every: int = 0,
        compaction_margin: int = 0,
        settings: SimSettings | None = None,
        service_factory: Callable[[], Service] | None = None,
        faulty_services: dict[NodeId, Callable[[], Service]] | None = None,
    ) -> None:
        assert nodes >= 1
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = faults or NetworkFaults()
        self.ids = tuple(NodeId(i) for i in range(1, nodes + 1))
        self.settings = settings or SimSettings(
            election_timeout_ticks=election_timeout_ticks,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            max_message_bytes=max_message_bytes,
            max_inflight_messages=max_inflight_messages,
            snapshot_every=snapshot_every,
            compaction_margin=compaction_margin,
        )
        self._service_factory = service_factory or _load_service(self.settings.service)
        #: Nodes that run a deliberately non-deterministic service instead (divergence
        #: scenarios): the checker leaves their digests out of its agreement.
        self._faulty_services = dict(faulty_services or {})
        self.members = {node_id: ("sim", int(node_id)) for node_id in self.ids}
        self.snapshots_taken = 0
        self.snapshots_installed = 0
        #: Every snapshot any node stored: (node, meta) -> bytes, for the replay check.
        self.snapshot_archive: dict[tuple[NodeId, SnapshotMeta], bytes] = {}
        self.time = 0
        self._queue: list[tuple[int, int, int, int, Any]] = []
        self._sequence = 0
        self._messages_in_flight = 0
        self._trace = hashlib.blake2b(digest_size=16)
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.checker = InvariantChecker()
        self.checker.faulty = set(faulty_services or ())
        self.messages_sent = 0
        #: Messages the nodes sent, by message type name (before any network fault).
        self.messages_by_type: Counter[str] = Counter()
        #: Entries carried by AppendEntries, and how many of them the receiver held.
        self.entries_sent = 0
        self.messages_delivered = 0
        self.events = 0
        self.ticks = 0
        self.crashes = 0
        self.proposals: list[Proposal] = []
        self.acknowledged: dict[Index, bytes] = {}
        #: Crash a node while it carries out a batch with this probability ...
        self.crash_in_ready_rate = 0.0
        #: ... a batch that grants a vote with this one, and one that acknowledges
        #: entries with this one.
        self.crash_on_vote_rate = 0.0
        self.crash_on_ack_rate = 0.0
        #: A leader whose commit index just moved crashes with this probability.
        self.crash_after_commit_rate = 0.0
        #: A snapshot's write fails (the disk is full) with this probability.
        self.snapshot_fail_rate = 0.0
        self.clients: dict[int, SimClientDriver] = {}
        #: Client links: a client's request or reply is lost with this probability.
        self.client_drop_rate = 0.0
        #: Called with (node, service) after every batch a node applied (the swarm adds
        #: service invariants: money conserved, no command applied twice).
        self.service_checks: list[Callable[[NodeId, Service], None]] = []
        self.nodes: dict[NodeId, SimNode] = {}
        self._clock_offsets = {node_id: self.rng.randrange(0, 50) for node_id in self.ids}
        for node_id in self.ids:
            node = SimNode(node_id, MemoryStorage(clock=self._seconds))
            self.nodes[node_id] = node
            self._start(node)
            self._push(self.rng.randrange(TICK), _EVENT_TICK, node_id, None)

    def _seconds(self) -> float:
        return self.time / 1000

    # -- configuration ----------------------------------------------------------------------

    def node_config(self, node_id: NodeId) -> NodeConfig:
        s = self.settings
        return NodeConfig(
            node_id=node_id,
            members=self.members,
            data_dir=Path("/nonexistent/phalanx-sim"),
            service=s.service,
            tick_ms=TICK,
            election_timeout_ticks=s.election_timeout_ticks,
            heartbeat_interval_ticks=s.heartbeat_interval_ticks,
            session_timeout_ms=s.session_timeout_ms,
            max_replies_per_session=s.max_replies_per_session,
            max_message_bytes=s.max_message_bytes,
            max_inflight_messages=s.max_inflight_messages,
            snapshot_every_entries=s.snapshot_every,
            snapshot_every_bytes=0,
            snapshot_compaction_margin=s.compaction_margin,
            checkpoint_every_entries=s.checkpoint_every,
            auto_repair=s.auto_repair,
            pre_vote=s.pre_vote,
            check_quorum=s.check_quorum,
            broadcast_commit=s.broadcast_commit,
            # Lost snapshot transfers are retried sooner than on a real network.
            snapshot_stall_heartbeats=20,
        )

    # -- driving ------------------------------------------------------------------------

    def run_until(self, time: int) -> None:
        while self._queue and self._queue[0][0] <= time:
            self._run_one()
        self.time = max(self.time, time)
        self.checker.time = self.time

    def run_ticks(self, ticks: int) -> None:
        self.run_until(self.time + ticks * TICK)

    def run_until_leader(self, max_ticks: int = 200) -> NodeId:
        deadline = self.time + max_ticks * TICK
        while self.time < deadline:
            leader = self.leader()
            if leader is not None:
                return leader
            self.run_ticks(1)
        raise AssertionError(f"no leader within {max_ticks} ticks (seed {self.seed})")

    def trace_hash(self) -> str:
        return self._trace.hexdigest()

    def _push(self, time: int, kind: int, target: int, payload: Any) -> None:
        self._sequence += 1
        heapq.heappush(self._queue, (time, self._sequence, kind, target, payload))

    def _run_one(self) -> None:
        time, _, kind, target, payload = heapq.heappop(self._queue)
        self.time = time
        self.checker.time = time
        self.events += 1
        if kind == _EVENT_TO_CLIENT:
            node_from, message = payload
            self._record(time, "to-client", target, type(message).__name__)
            self.clients[target].on_message(node_from, message)
            return
        if kind == _EVENT_CLIENT_WAKE:
            self.clients[target].on_wake(payload)
            return
        node = self.nodes[NodeId(target)]
        replica = node.replica
        if kind == _EVENT_TICK:
            self._push(time + TICK, _EVENT_TICK, target, None)
            if replica is None:
                return
            self.ticks += 1
            self._record(time, "tick", target)
            replica.tick()
        elif kind == _EVENT_DELIVER:
            self._messages_in_flight -= 1
            if replica is None or (payload.from_id, payload.to) in self.blocked:
                if isinstance(payload, SnapshotTransfer) and not payload.repair:
                    self._report_lost_transfer(payload)
                return
            self._record(time, type(payload).__name__, target, payload.from_id, payload.term)
            self.messages_delivered += 1
            committed_before = replica.raw.raft.log.committed
            self._deliver(node, replica, payload)
            # As `Node._on_peer_read`: the batch a peer's message made first, without
            # proposing what clients queued; the ready loop proposes right after.
            self._process(node, committed_before, propose=False)
            if self.events % LOG_MATCHING_EVERY_EVENTS == 0:
                self.check_log_matching()
            return
        elif kind == _EVENT_TO_NODE:
            client_id, request = payload
            if replica is None:
                return  # the connection is refused; the client times out
            self._record(time, type(request).__name__, target, client_id)
            replica.on_client_request(client_id, request)
        elif kind == _EVENT_RESTART:
            if replica is None:
                self._start(node)
            return
        elif kind == _EVENT_SNAPSHOT_WRITTEN:
            incarnation, meta, data, repairs = payload
            if replica is None or node.incarnation != incarnation:
                return  # the writer died with its node
            self._snapshot_written(node, replica, meta, data, repairs)
        elif kind == _EVENT_SNAPSHOT_LOST:
            incarnation, peer = payload
            if replica is None or node.incarnation != incarnation:
                return
            replica.on_snapshot_sent(peer, succeeded=False)
        self._process(node)
        if self.events % LOG_MATCHING_EVERY_EVENTS == 0:
            self.check_log_matching()

    def _deliver(self, node: SimNode, replica: Replica, message: Any) -> None:
        if isinstance(message, SnapshotTransfer):
            # Stored durably first, repair or not, as `SnapshotManager.on_chunk` does.
            self._store_snapshot(node, message.install.snapshot, message.data)
            replica.on_snapshot_received(message.install, message.data, repair=message.repair)
            return
        replica.on_peer_message(message)

    def _record(self, *parts: object) -> None:
        self._trace.update(repr(parts).encode())

    # -- the node's driver, simulated -----------------------------------------------------

    def _process(
        self, node: SimNode, committed_before: Index | None = None, *, propose: bool = True
    ) -> None:
        """Carries out every batch the node has. `committed_before`: its commit index
        before the input that led here (for a crash right after a commit)."""
        replica = node.replica
        assert replica is not None
        if committed_before is None:
            committed_before = replica.raw.raft.log.committed
        # What the input did (a commit index moved by an acknowledgement, say) is
        # checked before a crash in the batch below can hide it.
        self._check_node(node.node_id, replica)
        self._carry_out_outbox(node, replica)
        while (batch := replica.next_batch(propose=propose)) is not None:
            propose = True
            crash_at = self._crash_point(node, batch)
            if crash_at == CRASH_BEFORE_BATCH:
                self._crash_mid_batch(node)
                return
            if batch.reset_log_to is not None:
                self._on_snapshot_installed(node, replica, batch.reset_log_to - 1)
                node.storage.reset(batch.reset_log_to)
            if batch.compact_log_to:
                node.storage.compact(batch.compact_log_to)
            for message in batch.send_now:
                self._send(message)
            for install in batch.install_snapshots:
                self._send_snapshot(node, replica, install, repair=False)
            if crash_at == CRASH_BEFORE_SYNC:
                self._crash_mid_batch(node)
                return
            if batch.sync:
                node.storage.write(batch.entries, batch.hard_state)
                node.storage.sync()
            elif batch.hard_state is not None:
                node.storage.write((), batch.hard_state)
            if crash_at == CRASH_AFTER_SYNC:
                self._crash_mid_batch(node)
                return
            for message in batch.send_after_sync:
                self._send(message)
            replica.persisted(batch)
            self._on_applied(node, replica, batch)
            self._carry_out_outbox(node, replica)
            if self._crash_after_commit(replica, committed_before):
                self._check_node(node.node_id, replica)
                self._record(self.time, "crash-after-commit", node.node_id)
                self._crash_mid_batch(node)
                return
            committed_before = replica.raw.raft.log.committed
        self._check_node(node.node_id, replica)

    def _check_node(self, node_id: NodeId, replica: Replica) -> None:
        raft = replica.raw.raft
        self.checker.after_event(node_id, raft.role is Role.LEADER, raft.term, raft.log)

    def _carry_out_outbox(self, node: SimNode, replica: Replica) -> None:
        outbox = replica.take_outbox()
        if not outbox:
            return
        for client_id, to_client in outbox.to_clients:
            self._to_client(node.node_id, int(client_id), to_client)  # type: ignore[call-overload]
        for message in outbox.to_peers:
            if (
                isinstance(message, CheckpointReport)
                and message.from_id == node.node_id
                and message.to == min(p for p in self.ids if p != node.node_id)
            ):
                self.checker.on_checkpoint(
                    node.node_id, Index(message.index), message.log_digest, message.state_digest
                )
            self._send(message)
        for client_id in outbox.close_clients:
            self._to_client(node.node_id, int(client_id), CLIENT_CLOSED)  # type: ignore[call-overload]
        if outbox.repairs:
            self._take_snapshot(node, replica, tuple(outbox.repairs))
        if outbox.take_snapshot:
            self._take_snapshot(node, replica)

    def _on_applied(self, node: SimNode, replica: Replica, batch: Batch) -> None:
        for entry in batch.ready.committed_entries:
            if entry.index <= len(node.applied):
                continue  # a snapshot installed in this batch already covers it
            self.checker.on_apply(node.node_id, entry, Index(len(node.applied) + 1))
            node.applied.append(entry)
            self._acknowledge(node, entry)
        container = replica.container
        if container.applied_index != len(node.applied):
            self.checker.fail(
                "Apply Accounting",
                f"node {node.node_id}'s container applied up to {container.applied_index}, "
                f"the core handed out {len(node.applied)}",
            )
        self.checker.on_digests(
            node.node_id,
            container.applied_index,
            container.log_digest(),
            container.outcome_digest(),
        )
        for check in self.service_checks:
            check(node.node_id, replica.service)

    def _on_snapshot_installed(self, node: SimNode, replica: Replica, index: int) -> None:
        self.snapshots_installed += 1
        self._record(self.time, "install-snapshot", node.node_id, index)
        node.applied = self.checker.applied_prefix(node.node_id, Index(index))
        self.checker.on_digests(
            node.node_id,
            replica.container.applied_index,
            replica.container.log_digest(),
            replica.container.outcome_digest(),
        )

    def _store_snapshot(self, node: SimNode, meta: SnapshotMeta, data: bytes) -> None:
        node.snapshots = [s for s in node.snapshots if s[0] != meta]
        node.snapshots.append((meta, data))
        node.snapshots.sort(key=lambda s: (s[0].index, s[0].term))
        del node.snapshots[:-SNAPSHOTS_KEPT]
        self.snapshot_archive.setdefault((node.node_id, meta), data)

    def _take_snapshot(
        self, node: SimNode, replica: Replica, repairs: tuple[NodeId, ...] = ()
    ) -> None:
        """Forks the writer, as `SnapshotManager` does: the state is captured now, the
        write finishes a few ticks later (or fails, or dies with the node); `repairs`
        are followers to send it to once it is stored."""
        meta = replica.snapshot_point()
        if meta is None or replica.snapshot_running:
            for peer in repairs:  # nothing newer to take: send the newest stored one
                self._send_repair(node, replica, peer)
            return
        replica.snapshot_started()
        data = replica.container.snapshot_bytes()
        after = self.rng.randint(0, SNAPSHOT_WRITE_TICKS_MAX) * TICK
        payload = (node.incarnation, meta, data, repairs)
        self._push(self.time + after, _EVENT_SNAPSHOT_WRITTEN, node.node_id, payload)

    def _snapshot_written(
        self,
        node: SimNode,
        replica: Replica,
        meta: SnapshotMeta,
        data: bytes,
        repairs: tuple[NodeId, ...],
    ) -> None:
        if self.snapshot_fail_rate and self.rng.random() < self.snapshot_fail_rate:
            replica.snapshot_failed(meta.index, f"snapshot at index {meta.index}: disk full")
            self._record(self.time, "snapshot-failed", node.node_id, meta.index)
        else:
            self._store_snapshot(node, meta, data)
            replica.snapshot_taken(meta)
            self.snapshots_taken += 1
            self._record(self.time, "snapshot", node.node_id, meta.index)
        for peer in repairs:
            self._send_repair(node, replica, peer)

    def _send_repair(self, node: SimNode, replica: Replica, peer: NodeId) -> None:
        if node.snapshots:
            raft = replica.raw.raft
            install = InstallSnapshot(raft.term, raft.id, peer, node.snapshots[-1][0])
            self._send_snapshot(node, replica, install, repair=True)

    def _send_snapshot(
        self, node: SimNode, replica: Replica, install: InstallSnapshot, *, repair: bool
    ) -> None:
        latest = node.snapshots[-1] if node.snapshots else None
        if latest is None or latest[0] != install.snapshot:
            # As `SnapshotManager`: only the newest stored snapshot is ever sent.
            replica.on_snapshot_sent(install.to, succeeded=False)
            return
        self._send(SnapshotTransfer(install, latest[1], repair))  # type: ignore[arg-type]

    def _crash_point(self, node: SimNode, batch: Batch) -> str | None:
        if not self._should_crash_mid_batch(node, batch):
            return None
        if any(_promises(batch)):
            # A promise is kept or broken around its sync: crash right there.
            return self.rng.choice((CRASH_BEFORE_SYNC, CRASH_AFTER_SYNC))
        return self.rng.choice((CRASH_BEFORE_BATCH, CRASH_BEFORE_SYNC, CRASH_AFTER_SYNC))

    def _crash_after_commit(self, replica: Replica, committed_before: Index) -> bool:
        """A leader dies right after its commit index moved, before any follower can
        learn the new index: the moment the Figure 8 rule of the Raft paper is about."""
        return (
            bool(self.crash_after_commit_rate)
            and replica.is_leader
            and replica.raw.raft.log.committed > committed_before
            and self.rng.random() < self.crash_after_commit_rate
        )

    def _should_crash_mid_batch(self, node: SimNode, batch: Batch) -> bool:
        """Whether the node dies while carrying out `batch` (scenarios override this).

        Besides crashes at any batch, `crash_on_vote_rate` and `crash_on_ack_rate` aim
        at the batches where durability decides safety: those that grant a vote or
        acknowledge entries (a crash there, before or after the sync, is what a
        durability bug needs, and a uniform rate reaches it too rarely)."""
        rng = self.rng
        if self.crash_in_ready_rate and rng.random() < self.crash_in_ready_rate:
            return True
        vote, ack = _promises(batch)
        if vote and self.crash_on_vote_rate and rng.random() < self.crash_on_vote_rate:
            return True
        return bool(ack and self.crash_on_ack_rate and rng.random() < self.crash_on_ack_rate)

    def _crash_mid_batch(self, node: SimNode) -> None:
        replica = node.replica
        assert replica is not None
        replica.abandon()
        self._record(self.time, "crash-mid-batch", node.node_id)
        self.crash(node.node_id)
        # Often back at once: a node that restarts within its peers' election is the
        # one that can break a promise it forgot (a vote, an acknowledgement).
        quick = self.rng.random() < 0.5
        self.restart(node.node_id, after_ticks=self.rng.randint(1, 3 if quick else 30))

    def _acknowledge(self, node: SimNode, entry: Entry) -> None:
        # A raw proposal's proposer learns its outcome when it applies its entry.
        if entry.kind is not EntryKind.COMMAND or not self.proposals:
            return
        for proposal in self.proposals:
            if (
                proposal.node_id == node.node_id
                and proposal.index == entry.index
                and proposal.incarnation == node.incarnation
                and proposal.term == entry.term
                and proposal.data == entry.data
            ):
                self.acknowledged[entry.index] = entry.data
        self.proposals = [
            p for p in self.proposals if not (p.node_id == node.node_id and p.index <= entry.index)
        ]

    def _send(self, message: Message) -> None:
        self.messages_sent += 1
        install = isinstance(message, SnapshotTransfer)
        self.messages_by_type["InstallSnapshot" if install else type(message).__name__] += 1
        if isinstance(message, AppendRequest):
            self.entries_sent += len(message.entries)
        faults = self.faults
        rng = self.rng
        if (message.from_id, message.to) in self.blocked or (
            faults.drop_rate and rng.random() < faults.drop_rate
        ):
            if isinstance(message, SnapshotTransfer) and not message.repair:
                self._report_lost_transfer(message)
            return
        copies = 2 if faults.duplicate_rate and rng.random() < faults.duplicate_rate else 1
        for _ in range(copies):
            self._messages_in_flight += 1
            assert self._messages_in_flight <= MAX_MESSAGES_IN_FLIGHT, "network flooded"
            self._push(self.time + self._delay(), _EVENT_DELIVER, message.to, message)

    def _report_lost_transfer(self, transfer: SnapshotTransfer) -> None:
        """The leader's transfer step times out, as a real one does, and it is told."""
        sender = self.nodes[transfer.from_id]
        payload = (sender.incarnation, transfer.to)
        when = self.time + SNAPSHOT_TRANSFER_TIMEOUT_TICKS * TICK
        self._push(when, _EVENT_SNAPSHOT_LOST, transfer.from_id, payload)

    def _delay(self) -> int:
        faults, rng = self.faults, self.rng
        if faults.long_delay_rate and rng.random() < faults.long_delay_rate:
            return rng.randint(faults.delay_max, faults.long_delay_max)
        return rng.randint(faults.delay_min, faults.delay_max)

    # -- clients ----------------------------------------------------------------------------

    def add_client(self, client_id: int, client: SimClientDriver) -> None:
        assert client_id not in self.clients
        self.clients[client_id] = client

    def client_send(self, client_id: int, node_id: NodeId, request: Any) -> None:
        """A client's request leaves for `node_id` (lost or delayed as the network says)."""
        if self.client_drop_rate and self.rng.random() < self.client_drop_rate:
            return
        self._push(self.time + self._delay(), _EVENT_TO_NODE, node_id, (client_id, request))

    def client_wake(self, client_id: int, after_ms: int, token: int) -> None:
        self._push(self.time + max(1, after_ms), _EVENT_CLIENT_WAKE, client_id, token)

    def _to_client(
        self, node_id: NodeId, client_id: int, message: ClientReply | PushedMessage | ClientClosed
    ) -> None:
        if client_id not in self.clients:
            return
        if (
            not isinstance(message, ClientClosed)
            and self.client_drop_rate
            and self.rng.random() < self.client_drop_rate
        ):
            return
        self._push(self.time + self._delay(), _EVENT_TO_CLIENT, client_id, (node_id, message))

    # -- faults ---------------------------------------------------------------------------

    def crash(self, node_id: NodeId) -> None:
        """The process dies: everything not on its disk is gone."""
        node = self.nodes[node_id]
        if node.replica is None:
            return
        self._record(self.time, "crash", node_id)
        self.crashes += 1
        node.replica = None
        node.applied = []
        node.storage.crash()
        self.proposals = [p for p in self.proposals if p.node_id != node_id]

    def restart(self, node_id: NodeId, after_ticks: int = 0) -> None:
        if after_ticks:
            self._push(self.time + after_ticks * TICK, _EVENT_RESTART, node_id, None)
        elif self.nodes[node_id].replica is None:
            self._start(self.nodes[node_id])

    def _start(self, node: SimNode) -> None:
        """Rebuilds a replica from what survived, as `Node.__init__` does."""
        node.incarnation += 1
        self.checker.on_restart(node.node_id)
        self._record(self.time, "start", node.node_id, node.incarnation)
        snapshot = node.snapshots[-1] if node.snapshots else None
        restored = node.storage.load(
            snapshot_index=snapshot[0].index if snapshot else 0,
            snapshot_term=snapshot[0].term if snapshot else None,
        )
        replica = Replica(
            self.node_config(node.node_id),
            self._faulty_services.get(node.node_id, self._service_factory)(),
            clock=_Clock(self, self._clock_offsets[node.node_id]),
            rng=random.Random(f"{self.seed}/{node.node_id}/{node.incarnation}"),
            hard_state=restored.hard_state,
            entries=restored.entries,
            snapshot=snapshot,
        )
        node.replica = replica
        index = replica.container.applied_index
        node.applied = self.checker.applied_prefix(node.node_id, index)
        if snapshot is not None:
            container = replica.container
            self.checker.on_digests(
                node.node_id, index, container.log_digest(), container.outcome_digest()
            )

    def disconnect(self, node_id: NodeId) -> None:
        """Cuts `node_id` off from every other node, both ways."""
        for other in self.ids:
            if other != node_id:
                self.blocked.add((node_id, other))
                self.blocked.add((other, node_id))

    def connect(self, node_id: NodeId) -> None:
        """Removes every block to or from `node_id`, including blocks towards nodes that
        are themselves still disconnected (unlike 6.824's `connect`): use `partition`
        to describe several groups at once."""
        self.blocked = {(src, dst) for (src, dst) in self.blocked if node_id not in (src, dst)}

    def partition(self, *groups: Iterable[NodeId]) -> None:
        """Nodes talk only within their group; nodes in no group are isolated."""
        membership = {node: i for i, group in enumerate(groups) for node in group}
        self.blocked = {
            (src, dst)
            for src in self.ids
            for dst in self.ids
            if src != dst and (membership.get(src, -1 - src) != membership.get(dst, -1 - dst))
        }

    def block_one_way(self, src: NodeId, dst: NodeId) -> None:
        self.blocked.add((src, dst))

    def heal(self) -> None:
        self.blocked = set()

    # -- raw proposals (scenario tests) -------------------------------------------------------

    def propose(self, data: bytes, node_id: NodeId | None = None) -> Proposal | None:
        """Appends `data` as a bare log entry at `node_id` (default: a current leader),
        below the client protocol: the scenario tests of the core use it. The service
        container answers such an entry as malformed and changes nothing; real
        commands come from simulated clients (clients.py). Returns the proposal if that
        node accepted it, None if it was refused."""
        target = node_id if node_id is not None else self.leader()
        if target is None or self.nodes[target].replica is None:
            return None
        replica = self.nodes[target].replica
        assert replica is not None
        try:
            first, _ = replica.raw.propose([data])
        except (NotLeaderError, ProposalDroppedError):
            return None
        incarnation = self.nodes[target].incarnation
        proposal = Proposal(target, replica.raw.raft.term, first, data, incarnation)
        self.proposals.append(proposal)
        self._record(self.time, "propose", target, first)
        self._process(self.nodes[target])
        return proposal

    # -- observation ------------------------------------------------------------------------

    def leader(self) -> NodeId | None:
        """The live leader with the highest term, if any."""
        best: tuple[int, NodeId] | None = None
        for node in self.nodes.values():
            raw = node.raw
            if raw is not None and raw.raft.role is Role.LEADER:
                candidate = (raw.raft.term, node.node_id)
                if best is None or candidate > best:
                    best = candidate
        return best[1] if best else None

    def leaders(self) -> list[NodeId]:
        return [
            n.node_id
            for n in self.nodes.values()
            if n.raw is not None and n.raw.raft.role is Role.LEADER
        ]

    def raw(self, node_id: NodeId) -> RawNode:
        raw = self.nodes[node_id].raw
        assert raw is not None, f"node {node_id} is down"
        return raw

    def replica(self, node_id: NodeId) -> Replica:
        replica = self.nodes[node_id].replica
        assert replica is not None, f"node {node_id} is down"
        return replica

    def alive(self) -> list[NodeId]:
        return [n.node_id for n in self.nodes.values() if n.alive]

    def applied_count(self, index: Index) -> int:
        """How many live nodes have applied the entry at `index`."""
        return sum(1 for n in self.nodes.values() if n.alive and len(n.applied) >= index)

    def applied_commands(self, node_id: NodeId) -> list[bytes]:
        return [e.data for e in self.nodes[node_id].applied if e.kind is EntryKind.COMMAND]

    def check_log_matching(self) -> None:
        self.checker.check_log_matching(
            (n.node_id, n.raw.raft.log) for n in self.nodes.values() if n.raw is not None
        )

    def converged(self) -> bool:
        """A leader exists, and every node applied all of its committed log."""
        leader = self.leader()
        if leader is None:
            return False
        target = self.raw(leader).raft.log.committed
        if target < self.raw(leader).raft.log.last_index():
            return False
        return all(len(self.nodes[n].applied) == target for n in self.ids if self.nodes[n].alive)

    def missing_acknowledged(self) -> list[Index]:
        """Acknowledged entries not applied on every live node."""
        missing = []
        for index, data in sorted(self.acknowledged.items()):
            for node in self.nodes.values():
                if not node.alive:
                    continue
                if len(node.applied) < index or node.applied[index - 1].data != data:
                    missing.append(index)
                    break
        return missing


def _promises(batch: Batch) -> tuple[bool, bool]:
    """Whether `batch` grants a vote, and whether it acknowledges entries."""
    vote = ack = False
    for message in (*batch.send_now, *batch.send_after_sync):
        if isinstance(message, VoteResponse) and message.granted and not message.pre_vote:
            vote = True
        elif isinstance(message, AppendResponse) and not message.reject:
            ack = True
    return vote, ack


def _load_service(spec: str) -> Callable[[], Service]:
    from phalanx.server.config import load_service_class

    return load_service_class(spec)
