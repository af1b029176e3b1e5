"""A deterministic, single-threaded simulation of a Raft cluster built from the real core.

Theory of operation
-------------------
Everything that happens is an event in one priority queue ordered by (time, sequence):
a node's clock ticking, a message arriving, a node crashing or restarting. Time is an
integer; a node ticks every `TICK` units, with its own phase. All randomness (message
delays, drops, duplicates, election timeouts) comes from `random.Random`s derived from
one seed, and nothing iterates over an unordered collection, so one seed always gives
the same run. Every event is folded into a trace hash that proves it.

After each event the affected node's `Ready` is processed exactly as the real server
does it: persist to its simulated disk, then send, then apply, then advance. The disk
keeps only what was synced: a crash in the middle of processing a `Ready` loses what
had not reached the disk, and a restart rebuilds the node from its disk alone.

The network can delay, drop, duplicate and reorder messages, and partition nodes
symmetrically or in one direction. Invariant checkers (checkers.py) run after every
event; a violation raises with the simulated time.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from phalanx.core.errors import NotLeaderError, ProposalDroppedError
from phalanx.core.messages import Message
from phalanx.core.raft import RaftConfig, Role
from phalanx.core.rawnode import RawNode, Ready
from phalanx.core.types import Entry, EntryKind, HardState, Index, NodeId, SnapshotMeta, Term
from phalanx.sim.checkers import InvariantChecker

#: Simulated time units per node tick.
TICK = 10
_EVENT_TICK = 0
_EVENT_DELIVER = 1
_EVENT_RESTART = 2
#: Messages queued in the network at once; a run that exceeds it has a bug.
MAX_MESSAGES_IN_FLIGHT = 200_000
#: How often (in events) the full Log Matching check runs.
LOG_MATCHING_EVERY_EVENTS = 500


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


@dataclass
class SimDisk:
    """What survives a crash: the synced hard state, snapshot and log.

    `entries` starts at `first_index`; the snapshot's state is the list of entries a
    node had applied up to the snapshot index (the simulated service's whole state)."""

    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    first_index: int = 1
    snapshot: SnapshotMeta = field(default_factory=SnapshotMeta)
    snapshot_state: tuple[Entry, ...] = ()
    syncs: int = 0

    def write(self, ready: Ready, snapshot_state: tuple[Entry, ...] = ()) -> None:
        if ready.snapshot is not None:
            self.snapshot = ready.snapshot
            self.snapshot_state = snapshot_state
            self.entries = []
            self.first_index = ready.snapshot.index + 1
        if ready.entries:
            first = ready.entries[0].index
            assert first >= self.first_index, "writing below the stored log"
            del self.entries[first - self.first_index :]
            self.entries.extend(ready.entries)
        if ready.hard_state is not None:
            self.hard_state = ready.hard_state
        self.syncs += 1

    def save_snapshot(self, meta: SnapshotMeta, state: tuple[Entry, ...], compact_to: int) -> None:
        self.snapshot = meta
        self.snapshot_state = state
        drop = min(compact_to, meta.index) - self.first_index + 1
        if drop > 0:
            del self.entries[:drop]
            self.first_index += drop

    def restored_entries(self) -> list[Entry]:
        return [e for e in self.entries if e.index > self.snapshot.index]


@dataclass
class SimNode:
    node_id: NodeId
    raw: RawNode | None
    disk: SimDisk
    incarnation: int = 0
    applied: list[Entry] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.raw is not None


@dataclass
class Proposal:
    node_id: NodeId
    term: Term
    index: Index
    data: bytes
    incarnation: int


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
    ) -> None:
        assert nodes >= 1
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = faults or NetworkFaults()
        self.ids = tuple(NodeId(i) for i in range(1, nodes + 1))
        self._config_kwargs = dict(
            election_timeout_ticks=election_timeout_ticks,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            max_message_bytes=max_message_bytes,
            max_inflight_messages=max_inflight_messages,
            snapshot_stall_heartbeats=20,
        )
        #: Take a snapshot after this many applied entries (0: never), then compact the
        #: log to `compaction_margin` entries before it.
        self.snapshot_every = snapshot_every
        self.compaction_margin = compaction_margin
        #: (index, term) -> the state at that snapshot, shared as the bytes a real
        #: leader would stream beside InstallSnapshot.
        self._snapshot_states: dict[tuple[int, int], tuple[Entry, ...]] = {}
        self.snapshots_taken = 0
        self.snapshots_installed = 0
        self.time = 0
        self._queue: list[tuple[int, int, int, NodeId, Message | None]] = []
        self._sequence = 0
        self._messages_in_flight = 0
        self._trace = hashlib.blake2b(digest_size=16)
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.checker = InvariantChecker()
        self.messages_sent = 0
        #: Messages the nodes sent, by message type name (before any network fault).
        self.messages_by_type: Counter[str] = Counter()
        self.messages_delivered = 0
        self.events = 0
        self.ticks = 0
        self.proposals: list[Proposal] = []
        self.acknowledged: dict[Index, bytes] = {}
        #: Crash a node while it processes a Ready with this probability.
        self.crash_in_ready_rate = 0.0
        self.nodes: dict[NodeId, SimNode] = {}
        for node_id in self.ids:
            node = SimNode(node_id, None, SimDisk())
            self.nodes[node_id] = node
            self._start(node)
            self._push(self.rng.randrange(TICK), _EVENT_TICK, node_id, None)

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

    def _push(self, time: int, kind: int, node: NodeId, message: Message | None) -> None:
        self._sequence += 1
        heapq.heappush(self._queue, (time, self._sequence, kind, node, message))

    def _run_one(self) -> None:
        time, _, kind, node_id, message = heapq.heappop(self._queue)
        self.time = time
        self.checker.time = time
        self.events += 1
        node = self.nodes[node_id]
        if kind == _EVENT_TICK:
            self._push(time + TICK, _EVENT_TICK, node_id, None)
            if node.raw is None:
                return
            self.ticks += 1
            self._record(time, "tick", node_id)
            node.raw.tick()
        elif kind == _EVENT_DELIVER:
            assert message is not None
            self._messages_in_flight -= 1
            if node.raw is None or (message.from_id, message.to) in self.blocked:
                return
            self._record(time, type(message).__name__, node_id, message.from_id, message.term)
            self.messages_delivered += 1
            node.raw.step(message)
        elif kind == _EVENT_RESTART:
            if node.raw is None:
                self._start(node)
            return
        self._process(node)
        if self.events % LOG_MATCHING_EVERY_EVENTS == 0:
            self.check_log_matching()

    def _record(self, *parts: object) -> None:
        self._trace.update(repr(parts).encode())

    # -- the server loop, simulated ------------------------------------------------------

    def _process(self, node: SimNode) -> None:
        raw = node.raw
        assert raw is not None
        while raw.has_ready():
            ready = raw.ready()
            if self._should_crash_mid_ready(node, ready):
                self._crash_mid_ready(node, ready)
                return
            state = self._install_snapshot(node, ready.snapshot) if ready.snapshot else ()
            node.disk.write(ready, state)
            for message in ready.messages:
                self._send(message)
            self._apply(node, ready.committed_entries)
            raw.advance(ready)
        self._maybe_snapshot(node)
        raft = raw.raft
        self.checker.after_event(node.node_id, raft.role is Role.LEADER, raft.term, raft.log)

    def _install_snapshot(self, node: SimNode, meta: SnapshotMeta) -> tuple[Entry, ...]:
        state = self._snapshot_states[(meta.index, meta.term)]
        for entry in state:
            self.checker.on_snapshot_entry(node.node_id, entry)
        node.applied = list(state)
        self.snapshots_installed += 1
        self._record(self.time, "install-snapshot", node.node_id, meta.index)
        return state

    def _maybe_snapshot(self, node: SimNode) -> None:
        raw = node.raw
        if not self.snapshot_every or raw is None:
            return
        applied = len(node.applied)
        if applied - node.disk.snapshot.index < self.snapshot_every:
            return
        log = raw.raft.log
        term = log.term(applied)
        if term is None or applied > log.stable:
            return
        meta = SnapshotMeta(Index(applied), term)
        state = tuple(node.applied)
        self._snapshot_states.setdefault((meta.index, meta.term), state)
        compact_to = Index(max(0, applied - self.compaction_margin))
        node.disk.save_snapshot(meta, state, compact_to)
        raw.snapshot_taken(meta, compact_to)
        self.snapshots_taken += 1

    def _should_crash_mid_ready(self, node: SimNode, ready: Ready) -> bool:
        """Whether the node dies while processing `ready` (scenarios override this)."""
        return bool(self.crash_in_ready_rate) and self.rng.random() < self.crash_in_ready_rate

    def _crash_mid_ready(self, node: SimNode, ready: Ready) -> None:
        # Either the sync never happened (the Ready's writes are lost), or it did and the
        # crash came before the messages left: both are states a real node can reach.
        if self.rng.random() < 0.5:
            state = self._install_snapshot(node, ready.snapshot) if ready.snapshot else ()
            node.disk.write(ready, state)
        self._record(self.time, "crash-mid-ready", node.node_id)
        self.crash(node.node_id)
        self.restart(node.node_id, after_ticks=self.rng.randint(1, 30))

    def _apply(self, node: SimNode, entries: Iterable[Entry]) -> None:
        for entry in entries:
            self.checker.on_apply(node.node_id, entry, Index(len(node.applied) + 1))
            node.applied.append(entry)
            self._acknowledge(node, entry)

    def _acknowledge(self, node: SimNode, entry: Entry) -> None:
        # A client is answered when the node it proposed to applies its entry.
        if entry.kind is not EntryKind.COMMAND:
            return
        for proposal in self.proposals:
            if (
                (
                    proposal.node_id == node.node_id
                    and proposal.index == entry.index
                    and proposal.incarnation == node.incarnation
                )
                and proposal.term == entry.term
                and proposal.data == entry.data
            ):
                self.acknowledged[entry.index] = entry.data
        self.proposals = [
            p for p in self.proposals if not (p.node_id == node.node_id and p.index <= entry.index)
        ]

    def _send(self, message: Message) -> None:
        self.messages_sent += 1
        self.messages_by_type[type(message).__name__] += 1
        if (message.from_id, message.to) in self.blocked:
            return
        faults = self.faults
        rng = self.rng
        if faults.drop_rate and rng.random() < faults.drop_rate:
            return
        copies = 2 if faults.duplicate_rate and rng.random() < faults.duplicate_rate else 1
        for _ in range(copies):
            if faults.long_delay_rate and rng.random() < faults.long_delay_rate:
                delay = rng.randint(faults.delay_max, faults.long_delay_max)
            else:
                delay = rng.randint(faults.delay_min, faults.delay_max)
            self._messages_in_flight += 1
            assert self._messages_in_flight <= MAX_MESSAGES_IN_FLIGHT, "network flooded"
            self._push(self.time + delay, _EVENT_DELIVER, message.to, message)

    # -- faults ---------------------------------------------------------------------------

    def crash(self, node_id: NodeId) -> None:
        """The process dies: everything not on its disk is gone."""
        node = self.nodes[node_id]
        if node.raw is None:
            return
        self._record(self.time, "crash", node_id)
        node.raw = None
        node.applied = []
        self.proposals = [p for p in self.proposals if p.node_id != node_id]

    def restart(self, node_id: NodeId, after_ticks: int = 0) -> None:
        if after_ticks:
            self._push(self.time + after_ticks * TICK, _EVENT_RESTART, node_id, None)
        elif self.nodes[node_id].raw is None:
            self._start(self.nodes[node_id])

    def _start(self, node: SimNode) -> None:
        node.incarnation += 1
        node.applied = list(node.disk.snapshot_state)
        self.checker.on_restart(node.node_id)
        self._record(self.time, "start", node.node_id, node.incarnation)
        config = RaftConfig(node_id=node.node_id, voters=self.ids, **self._config_kwargs)  # type: ignore[arg-type]
        node_rng = random.Random(f"{self.seed}/{node.node_id}/{node.incarnation}")
        node.raw = RawNode(
            config,
            node_rng,
            hard_state=node.disk.hard_state,
            entries=node.disk.restored_entries(),
            snapshot=node.disk.snapshot,
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

    # -- clients ---------------------------------------------------------------------------

    def propose(self, data: bytes, node_id: NodeId | None = None) -> Proposal | None:
        """A client sends `data` to `node_id` (default: a current leader). Returns the
        proposal if that node accepted it, None if it was refused."""
        target = node_id if node_id is not None else self.leader()
        if target is None or self.nodes[target].raw is None:
            return None
        raw = self.nodes[target].raw
        assert raw is not None
        try:
            first, _ = raw.propose([data])
        except (NotLeaderError, ProposalDroppedError):
            return None
        proposal = Proposal(target, raw.raft.term, first, data, self.nodes[target].incarnation)
        self.proposals.append(proposal)
        self._record(self.time, "propose", target, first)
        self._process(self.nodes[target])
        return proposal

    # -- observation ------------------------------------------------------------------------

    def leader(self) -> NodeId | None:
        """The live leader with the highest term, if any."""
        best: tuple[int, NodeId] | None = None
        for node in self.nodes.values():
            if node.raw is not None and node.raw.raft.role is Role.LEADER:
                candidate = (node.raw.raft.term, node.node_id)
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

    def alive(self) -> list[NodeId]:
        return [n.node_id for n in self.nodes.values() if n.raw is not None]

    def applied_count(self, index: Index) -> int:
        """How many live nodes have applied the entry at `index`."""
        return sum(1 for n in self.nodes.values() if n.raw is not None and len(n.applied) >= index)

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
                if node.raw is None:
                    continue
                if len(node.applied) < index or node.applied[index - 1].data != data:
                    missing.append(index)
                    break
        return missing
