"""The replica: everything a node decides, and nothing it does.

Theory of operation
-------------------
`Replica` holds the Raft core (`RawNode`), the service container, the client ingress
(the queue of requests to propose, the requests waiting on their log index, retries
joined to a pending command), admission control, the divergence monitor, repair and
the snapshot policy. It performs no I/O: no sockets, no files, no clock reads, no
global randomness. Time comes in through a `Clock`, randomness through the
`random.Random` given to the core. Two drivers run this same class:

* `Node` (node.py), the asyncio shell of `phalanx node`: TCP, the tick timer, fsync on
  the write-ahead log, forked snapshot writers;
* the simulator (`phalanx.sim`): a seeded network, an in-memory disk that loses what was
  not synced, simulated time and clients.

Inputs are method calls: `tick()`, `on_peer_message()`, `on_client_request()`,
`on_snapshot_received()`, `on_snapshot_sent()`, `snapshot_taken()`. A driver then
takes work out in this loop, which is the whole contract::

    while (batch := replica.next_batch()) is not None:
        storage.reset / storage.compact          # batch.reset_log_to, batch.compact_log_to
        send(batch.send_now)                     # before the sync: they promise nothing
        stream(batch.install_snapshots)          # the stored snapshot beside each
        storage.write(batch.entries, batch.hard_state); if batch.sync: storage.sync()
        send(batch.send_after_sync)              # only once step 4 is durable
        replica.persisted(batch)                 # the storage completion: apply
        carry out replica.take_outbox()          # replies, pushes, reports, snapshots

Ordering rules (each `Batch` field repeats its own):

1. `send_now` holds only a leader's AppendEntries and heartbeats. They promise nothing:
   a leader counts its own log towards a commit only once its sync completed (Raft
   thesis §10.2.1), so replication overlaps the leader's disk write.
2. Everything else a `Ready` carries — votes, acknowledgements, pre-votes, responses —
   is a promise that holds only once the term, the vote and the entries it speaks of
   are durable: it is in `send_after_sync`, and must not leave before the sync.
3. Committed entries are applied in `persisted()`, after the sync, and a client is
   answered only from an applied entry (its reply), never from a proposal.

A driver that crashes anywhere in that loop loses what the replica holds in memory; what
survives is what its storage synced and the snapshots it stored. `Replica.__init__`
rebuilds from exactly that.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from phalanx.core.errors import NotLeaderError, ProposalDroppedError
from phalanx.core.messages import AppendRequest, HeartbeatRequest, InstallSnapshot, Message
from phalanx.core.raft import Role
from phalanx.core.rawnode import RawNode, Ready
from phalanx.core.types import NO_NODE, Entry, HardState, Index, NodeId, SnapshotMeta, Term
from phalanx.limits import MAX_RETRIES_JOINED, RECEIVED_SNAPSHOTS_KEPT
from phalanx.server.config import NodeConfig
from phalanx.server.divergence import DivergenceMonitor, Verdict, VerdictKind
from phalanx.service.base import Service
from phalanx.service.container import (
    ApplyResult,
    ApplyStatus,
    ContainerLimits,
    ServiceContainer,
)
from phalanx.service.envelope import Clock as ClockEntry
from phalanx.service.envelope import Command, KeepAlive, OpenSession, encode_envelope
from phalanx.transport.wire import (
    CheckpointReport,
    ClientReply,
    CommandRequest,
    KeepAliveRequest,
    OpenSessionRequest,
    PushedMessage,
    RepairWanted,
    ReplyStatus,
    Subscribe,
)

log = logging.getLogger("phalanx.replica")


#: Whatever a driver uses to name a client connection: replies go back to it. The
#: replica only stores and returns it (a TCP `Connection`, a simulated client's id).
ClientHandle = Hashable


class Clock(Protocol):
    """Time, from outside. `wall_ms` stamps entries (the leader's cluster time; it only
    has to move forward roughly with real time); `mono_ms` measures how long requests
    have waited, and must never go back."""

    def wall_ms(self) -> int: ...

    def mono_ms(self) -> float: ...


class ServiceRequest(Protocol):
    """A client request the replica answers (see `on_client_request`)."""

    request_id: int


@dataclass(slots=True)
class _Request:
    """A client request on its way into the log: queued, then waiting on its index.

    `retries` are later requests for the same (session, seq) that arrived while this
    one was pending: they wait on the same entry instead of appending it again."""

    data: bytes
    client: ClientHandle | None  # None: the replica's own entry (a clock)
    request_id: int
    #: (session id, seq) of a command, for recognising its retries; None otherwise.
    key: tuple[int, int] | None = None
    queued_at_ms: float = 0.0
    term: Term = Term(0)
    retries: list[tuple[ClientHandle, int]] | None = None


@dataclass(slots=True)
class Batch:
    """One `Ready`, split into what a driver does with it, in field order."""

    ready: Ready
    #: 1. Storage, before anything else: a snapshot was installed (the container is
    #: already restored from it), so the stored log starts over at this index.
    reset_log_to: Index | None
    #: 1. Storage: entries up to here are covered by a durable snapshot; drop them.
    compact_log_to: Index
    #: 2. Send now, before the sync: a leader's AppendEntries and heartbeats only.
    send_now: list[Message]
    #: 2. A leader's InstallSnapshot: stream the stored snapshot it names beside it.
    install_snapshots: list[InstallSnapshot]
    #: 3. Write (truncating the stored log from entries[0].index on) ...
    entries: Sequence[Entry]
    #: ... and this hard state (None: unchanged) ...
    hard_state: HardState | None
    #: ... then sync, if True. False: the write may stay buffered (a new commit index
    #: alone is a hint; a restarted node learns the current one from its leader).
    sync: bool
    #: 4. Send only after step 3 is durable: votes and acknowledgements are promises.
    send_after_sync: list[Message]


@dataclass(slots=True)
class Outbox:
    """What the replica wants done that no Ready ordering constrains. A driver takes it
    (`take_outbox`) after every input and every batch."""

    #: Replies and pushed messages, to the client named by each handle, in order.
    to_clients: list[tuple[ClientHandle, ClientReply | PushedMessage]] = field(default_factory=list)
    #: Peer messages that promise nothing (checkpoint reports, repair requests).
    to_peers: list[Message] = field(default_factory=list)
    #: Client connections to close (subscribers, when this node stops leading).
    close_clients: list[ClientHandle] = field(default_factory=list)
    #: Followers to repair: send each a fresh snapshot, marked as a repair (leader).
    repairs: list[NodeId] = field(default_factory=list)
    #: Take a snapshot now, at `snapshot_point()`; report `snapshot_taken` or
    #: `snapshot_failed` when it is stored.
    take_snapshot: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.to_clients
            or self.to_peers
            or self.close_clients
            or self.repairs
            or self.take_snapshot
        )


def container_limits_for(config: NodeConfig) -> ContainerLimits:
    return ContainerLimits(
        session_timeout_ms=config.session_timeout_ms,
        max_sessions=config.max_sessions,
        max_replies_per_session=config.max_replies_per_session,
        checkpoint_every_entries=config.checkpoint_every_entries,
    )


class Replica:
    def __init__(
        self,
        config: NodeConfig,
        service: Service,
        *,
        clock: Clock,
        rng: random.Random,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: tuple[SnapshotMeta, bytes] | None = None,
    ) -> None:
        """Rebuilds a replica from what survived: the newest stored snapshot (its meta
        and the container bytes) and the hard state and entries storage recovered."""
        self.config = config
        self.clock = clock
        self.service = service
        self.container = ServiceContainer(service, container_limits_for(config))
        meta = SnapshotMeta()
        if snapshot is not None:
            meta, data = snapshot
            self.container.restore(data)
        self.raw = RawNode(
            config.raft_config(),
            rng,
            hard_state=hard_state,
            entries=entries,
            snapshot=meta,
        )
        #: Proposals for the next batch, oldest first.
        self._queue: list[_Request] = []
        self._clock_queued_for = -1
        #: Proposed requests by log index, oldest first (so the first is the oldest).
        self._waiters: dict[Index, _Request] = {}
        #: Queued or proposed commands by (session id, seq): a retry that arrives while
        #: its command is pending joins it rather than appending it again.
        self._pending: dict[tuple[int, int], _Request] = {}
        self._outbox = Outbox()
        self._batch_out: Batch | None = None
        #: The bytes of the snapshots last handed to the core (InstallSnapshot), kept
        #: until the core hands one back in a Ready to install (the core may take an
        #: earlier one and ignore a later, staler one: a few are kept, newest last).
        self._received: dict[SnapshotMeta, bytes] = {}
        self._pending_repair: tuple[SnapshotMeta, bytes] | None = None
        self._compact_to = Index(0)
        #: Snapshot policy: one at a time; after a failure, wait as long as after a
        #: success before trying again.
        self._snapshot_running = False
        self.snapshot_failed_at = Index(0)
        self.snapshot_failures = 0
        self.snapshot_error: str | None = None
        self._bytes_at_last_snapshot = 0
        self.divergence = DivergenceMonitor(config.node_id, tuple(sorted(config.members)))
        #: Set while this node's service disagrees with the majority's.
        self.diverged: Verdict | None = None
        self.last_verdict: Verdict | None = None
        self.repairs = 0
        #: session id -> the client subscribed for its pushed messages (leader only).
        self._subscribers: dict[int, ClientHandle] = {}
        self.refused_busy = 0
        self.retries_joined = 0
        self.retries_answered_from_cache = 0

    # -- small views ------------------------------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        return self.config.node_id

    @property
    def role(self) -> Role:
        return self.raw.raft.role

    @property
    def is_leader(self) -> bool:
        return self.raw.raft.role is Role.LEADER

    def leader_hint(self) -> str:
        leader = self.raw.raft.leader_id
        if leader in self.config.members:
            host, port = self.config.members[leader]
            return f"{host}:{port}"
        return ""

    @property
    def snapshot_running(self) -> bool:
        """A snapshot was started and is not yet reported taken or failed."""
        return self._snapshot_running

    def pending_requests(self) -> int:
        return len(self._queue) + len(self._waiters)

    def local_callback(self, method: Any, *args: Any) -> None:
        """A node-local service callback (on_start, on_role_change, on_terminate): what
        it raises is logged, never allowed to stop the replica."""
        try:
            self.container.local_callback(method, *args)
        except Exception as error:
            log.error(
                "service %s: %s raised %s: %s",
                type(self.service).__name__,
                getattr(method, "__name__", "callback"),
                type(error).__name__,
                error,
            )

    # -- inputs ------------------------------------------------------------------------------

    def tick(self) -> None:
        """One Raft tick; the leader also appends a clock entry when a timer is due."""
        self.raw.tick()
        self._queue_clock_if_due()

    def on_peer_message(self, message: Message) -> None:
        """A Raft message, a checkpoint report or a repair request from a peer."""
        if isinstance(message, CheckpointReport):
            self._on_verdict(
                self.divergence.record(
                    message.from_id, Index(message.index), message.log_digest, message.state_digest
                )
            )
        elif isinstance(message, RepairWanted):
            if self.is_leader:
                self._outbox.repairs.append(message.from_id)
        elif isinstance(message, InstallSnapshot):
            # A snapshot comes only whole, through `on_snapshot_received` (its bytes
            # beside it); a bare one from the wire carries nothing to install.
            log.warning("ignoring a bare InstallSnapshot from node %s", message.from_id)
        else:
            self.raw.step(message)

    def on_peer_unreachable(self, peer: NodeId) -> None:
        self.raw.report_unreachable(peer)

    def on_snapshot_received(
        self, message: InstallSnapshot, data: bytes, *, repair: bool = False
    ) -> None:
        """A whole snapshot arrived from the leader and is stored durably. A normal one
        goes through the core, which hands it back in a Ready to install (or ignores it
        if it is stale); a repair one replaces a diverged service's state."""
        if repair:
            self._pending_repair = (message.snapshot, data)
            return
        self._received.pop(message.snapshot, None)
        self._received[message.snapshot] = data
        while len(self._received) > RECEIVED_SNAPSHOTS_KEPT:
            del self._received[next(iter(self._received))]
        self.raw.step(message)

    def on_snapshot_sent(self, peer: NodeId, *, succeeded: bool) -> None:
        self.raw.report_snapshot(peer, succeeded=succeeded)

    def on_client_request(self, client: ClientHandle, message: Any) -> None:
        """An OpenSession, KeepAlive, Command or Subscribe request, or a repair request
        (answered with `request_repair`'s note by the driver). The answer (now, or once
        the entry applies) appears in the outbox, addressed to `client`."""
        if isinstance(message, Subscribe):
            self._subscribe(client, message)
            return
        if self.diverged is not None:
            # A diverged service must not answer anyone: send the client elsewhere.
            self._reply(
                client,
                ClientReply(
                    message.request_id,
                    ReplyStatus.NOT_LEADER,
                    leader_hint="" if self.is_leader else self.leader_hint(),
                    message="this node's service diverged from the majority",
                ),
            )
            return
        if not self.is_leader:
            self._reply(
                client,
                ClientReply(
                    message.request_id, ReplyStatus.NOT_LEADER, leader_hint=self.leader_hint()
                ),
            )
            return
        if isinstance(message, CommandRequest):
            self._on_command(client, message)
            return
        if self._refuse_if_busy(client, message.request_id):
            return
        envelope: Any
        if isinstance(message, OpenSessionRequest):
            envelope = OpenSession(self.clock.wall_ms())
        elif isinstance(message, KeepAliveRequest):
            envelope = KeepAlive(self.clock.wall_ms(), message.session_id)
        else:
            raise TypeError(f"not a request the replica answers: {type(message).__name__}")
        self._enqueue(_Request(encode_envelope(envelope), client, message.request_id))

    def forget_client(self, client: ClientHandle) -> None:
        """The driver found `client`'s connection closed: stop pushing to it."""
        for session_id in [s for s, c in self._subscribers.items() if c == client]:
            del self._subscribers[session_id]

    def snapshot_point(self) -> SnapshotMeta | None:
        """Where a snapshot taken now would sit (the applied index), or None if there is
        nothing new since the last one."""
        index = self.container.applied_index
        term = self.raw.raft.log.term(index)
        if index == 0 or term is None or index <= self.raw.raft.snapshot_meta.index:
            return None
        return SnapshotMeta(index, term)

    def snapshot_started(self) -> None:
        self._snapshot_running = True
        self._bytes_at_last_snapshot = self.container.applied_bytes

    def snapshot_taken(self, meta: SnapshotMeta) -> None:
        """A snapshot at `meta` is stored durably: the core may compact its log, and the
        next batch compacts the stored one. Never past the previous snapshot: if the
        newest one is ever found damaged at start, the previous one plus the log still
        rebuild the state."""
        self._snapshot_running = False
        self.snapshot_error = None
        previous = self.raw.raft.snapshot_meta.index
        margin = self.config.snapshot_compaction_margin
        compact_to = Index(max(0, min(meta.index - margin, previous)))
        self.raw.snapshot_taken(meta, compact_to)
        self._compact_to = max(self._compact_to, self.raw.raft.log.offset)

    def snapshot_failed(self, index: Index, reason: str) -> None:
        self._snapshot_running = False
        self.snapshot_failed_at = index
        self.snapshot_failures += 1
        self.snapshot_error = reason

    def request_repair(self) -> str:
        """Asks the leader for a snapshot to rebuild this node's service from."""
        raft = self.raw.raft
        if raft.role is Role.LEADER:
            return "this node leads; it hands leadership over first, then repair it"
        if raft.leader_id == NO_NODE:
            return "no leader known yet; try again"
        self._outbox.to_peers.append(RepairWanted(raft.term, raft.id, raft.leader_id))
        return f"asked leader {raft.leader_id} for a snapshot to rebuild from"

    # -- outputs ------------------------------------------------------------------------------

    def take_outbox(self) -> Outbox:
        outbox, self._outbox = self._outbox, Outbox()
        return outbox

    def has_work(self) -> bool:
        return bool(self._queue) or self._pending_repair is not None or self.raw.has_ready()

    def next_batch(self, *, propose: bool = True) -> Batch | None:
        """The next batch of work, or None. `propose=False` leaves queued client
        requests for a later batch (a driver answering a peer at once, say, while it
        gathers clients' requests into one proposal per turn)."""
        assert self._batch_out is None, "persisted() the previous batch first"
        self._repair_if_ready()
        if propose:
            self._propose_queued()
        if not self.raw.has_ready():
            return None
        ready = self.raw.ready()
        if ready.soft_state is not None:
            self._on_soft_state(ready.soft_state.role)
        reset_to: Index | None = None
        if ready.snapshot is not None:
            # Before anything else in this Ready: the state and log it replaces.
            data = self._received.get(ready.snapshot)
            if data is None:
                raise AssertionError(f"snapshot {ready.snapshot} to install was never received")
            self._received.clear()
            self.container.restore(data)
            reset_to = Index(ready.snapshot.index + 1)
        compact_to, self._compact_to = self._compact_to, Index(0)
        send_now, snapshots, after = split_messages(ready.messages)
        batch = Batch(
            ready=ready,
            reset_log_to=reset_to,
            compact_log_to=compact_to,
            send_now=send_now,
            install_snapshots=snapshots,
            entries=ready.entries,
            hard_state=ready.hard_state,
            sync=ready.must_sync(),
            send_after_sync=after,
        )
        self._batch_out = batch
        return batch

    def persisted(self, batch: Batch) -> None:
        """The driver carried out `batch` up to its step 4 (its writes are durable as
        asked). Applies the committed entries, answers their clients, advances."""
        assert batch is self._batch_out, "persisted() a batch that is not the current one"
        self._batch_out = None
        self._apply(batch.ready.committed_entries)
        self.raw.advance(batch.ready)
        container = self.container
        if container.new_egress:
            self._deliver_pushed()
        if container.new_checkpoints:
            self._publish_checkpoints()
        self._maybe_snapshot()

    def abandon(self) -> None:
        """The driver failed part way through a batch and stops (its storage failed):
        nothing of the batch may be acknowledged or applied."""
        self._batch_out = None

    # -- client requests ------------------------------------------------------------------

    def _reply(self, client: ClientHandle, reply: ClientReply) -> None:
        self._outbox.to_clients.append((client, reply))

    def _on_command(self, client: ClientHandle, message: CommandRequest) -> None:
        if len(message.payload) > self.config.max_command_bytes:
            self._reply(
                client,
                ClientReply(
                    message.request_id,
                    ReplyStatus.REJECTED,
                    message=f"command of {len(message.payload)} bytes exceeds "
                    f"max_command_bytes={self.config.max_command_bytes}",
                ),
            )
            return
        if message.seq - message.first_incomplete >= self.config.max_replies_per_session:
            # Its session could not cache the reply: it would be appended only to be
            # refused when applied. Say so now, with no log entry.
            self._reply(
                client,
                ClientReply(
                    message.request_id,
                    ReplyStatus.RETRY,
                    message="too many commands in flight: sequence numbers span more than "
                    f"max_replies_per_session={self.config.max_replies_per_session}",
                ),
            )
            return
        key = (message.session_id, message.seq)
        pending = self._pending.get(key)
        if pending is not None:
            # A retry of a command already on its way: wait on the same entry.
            if pending.retries is None:
                pending.retries = []
            if len(pending.retries) < MAX_RETRIES_JOINED:
                pending.retries.append((client, message.request_id))
                self.retries_joined += 1
                return
        cached = self._cached_reply(message)
        if cached is not None:
            self.retries_answered_from_cache += 1
            self._reply(
                client,
                ClientReply(
                    message.request_id,
                    ReplyStatus.OK,
                    payload=cached,
                    session_id=message.session_id,
                ),
            )
            return
        if self._refuse_if_busy(client, message.request_id):
            return
        envelope = Command(
            self.clock.wall_ms(),
            message.session_id,
            message.seq,
            message.first_incomplete,
            message.payload,
        )
        request = _Request(encode_envelope(envelope), client, message.request_id, key)
        self._pending[key] = request
        self._enqueue(request)

    def _cached_reply(self, message: CommandRequest) -> bytes | None:
        """The reply this leader already applied for (session, seq), if it still holds
        it: a retry of a finished command is answered without a log entry. Safe: the
        reply is the committed outcome, and the session table answers every later
        retry the same."""
        session = self.container.sessions.get(message.session_id)
        if session is None:
            return None
        return session.replies.get(message.seq)

    def _refuse_if_busy(self, client: ClientHandle, request_id: int) -> bool:
        busy = self._busy()
        if busy:
            self.refused_busy += 1
            self._reply(client, ClientReply(request_id, ReplyStatus.RETRY, message=busy))
        return bool(busy)

    def _busy(self) -> str:
        """Why the leader turns new work away now, or "" if it takes it.

        Admission control: beyond these bounds more work only lengthens every queue,
        clients time out and retry, and retries are more work (the overload collapse).
        Refusing early keeps latency bounded and tells clients to back off."""
        pending = len(self._queue) + len(self._waiters)
        if pending >= self.config.max_pending_proposals:
            return f"leader busy: {pending} requests pending; retry after backing off"
        wait_ms_max = self.config.max_commit_wait_ms
        if wait_ms_max and self._waiters:
            oldest = self._waiters[next(iter(self._waiters))]
            waited_ms = self.clock.mono_ms() - oldest.queued_at_ms
            if waited_ms > wait_ms_max:
                return (
                    f"leader busy: the oldest pending request has waited {waited_ms:.0f} ms; "
                    "retry after backing off"
                )
        return ""

    def _enqueue(self, request: _Request) -> None:
        request.queued_at_ms = self.clock.mono_ms()
        self._queue.append(request)

    def _queue_clock_if_due(self) -> None:
        """Timers fire only when an entry carries cluster time past their deadline; when
        one is due and nothing else is being proposed, the leader appends a clock entry."""
        if not self.is_leader or self._queue:
            return
        deadline = self.container.next_timer_deadline()
        if deadline is None or self._clock_queued_for == deadline:
            return
        now_ms = self.clock.wall_ms()
        if deadline > now_ms:
            return
        self._clock_queued_for = deadline  # one clock per deadline, until it is applied
        self._queue.append(_Request(encode_envelope(ClockEntry(now_ms)), None, 0))

    def _propose_queued(self) -> None:
        """Proposes the queue's oldest requests, at most `max_proposals_per_batch` per
        batch: a bounded Ready keeps ticks, heartbeats and peers' messages flowing."""
        if not self._queue:
            return
        limit = self.config.max_proposals_per_batch
        batch, self._queue = self._queue[:limit], self._queue[limit:]
        try:
            first, _ = self.raw.propose([request.data for request in batch])
        except (NotLeaderError, ProposalDroppedError) as error:
            status = (
                ReplyStatus.NOT_LEADER if isinstance(error, NotLeaderError) else ReplyStatus.RETRY
            )
            reply = ClientReply(0, status, leader_hint=self.leader_hint(), message=str(error))
            for request in batch:
                self._finish(request, reply)
            self._clock_queued_for = -1
            return
        term = self.raw.raft.term
        for offset, request in enumerate(batch):
            if request.client is not None:
                request.term = term
                self._waiters[Index(first + offset)] = request

    def _finish(self, request: _Request, reply: ClientReply) -> None:
        """Answers a request (and its joined retries) and forgets it."""
        if request.key is not None:
            self._pending.pop(request.key, None)
        if request.client is None:
            return
        self._reply(request.client, msgspec.structs.replace(reply, request_id=request.request_id))
        for client, request_id in request.retries or ():
            self._reply(client, msgspec.structs.replace(reply, request_id=request_id))

    def _on_soft_state(self, role: Role) -> None:
        log.info("node %s is now %s (leader %s)", self.node_id, role.value, self.raw.raft.leader_id)
        self._clock_queued_for = -1
        if role is not Role.LEADER:
            # Closing makes subscribed clients go and find the new leader.
            self._outbox.close_clients.extend(self._subscribers.values())
            self._subscribers.clear()
        self.local_callback(self.service.on_role_change, role.value)
        if role is not Role.LEADER and (self._waiters or self._queue):
            waiters, self._waiters = self._waiters, {}
            queue, self._queue = self._queue, []
            changed = ClientReply(
                0,
                ReplyStatus.RETRY,
                leader_hint=self.leader_hint(),
                message="leadership changed; outcome unknown, retry",
            )
            for waiter in waiters.values():
                self._finish(waiter, changed)
            never_proposed = ClientReply(
                0, ReplyStatus.NOT_LEADER, leader_hint=self.leader_hint(), message="not the leader"
            )
            for request in queue:
                self._finish(request, never_proposed)
            self._pending.clear()

    def _apply(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        results = self.container.apply_batch(entries)
        for entry, result in zip(entries, results, strict=True):
            waiter = self._waiters.pop(entry.index, None)
            if waiter is None:
                continue
            if waiter.term != entry.term or result is None:
                reply = ClientReply(waiter.request_id, ReplyStatus.RETRY, message="entry lost")
            else:
                reply = reply_for(waiter.request_id, result)
            self._finish(waiter, reply)

    # -- pushed messages ----------------------------------------------------------------

    def _subscribe(self, client: ClientHandle, message: Subscribe) -> None:
        if not self.is_leader or self.diverged is not None:
            self._reply(
                client,
                ClientReply(
                    message.request_id, ReplyStatus.NOT_LEADER, leader_hint=self.leader_hint()
                ),
            )
            return
        if message.session_id not in self.container.sessions:
            # Perhaps not applied here yet (a new leader catching up): try again soon.
            self._reply(client, ClientReply(message.request_id, ReplyStatus.RETRY))
            return
        self._subscribers[message.session_id] = client
        kept, gap = self.container.egress_after(message.session_id, message.after_seq)
        self._reply(client, ClientReply(message.request_id, ReplyStatus.OK))
        for position, pushed in enumerate(kept):
            self._outbox.to_clients.append(
                (
                    client,
                    PushedMessage(
                        pushed.session_id, pushed.seq, pushed.payload, gap and not position
                    ),
                )
            )

    def _deliver_pushed(self) -> None:
        pushed_messages, self.container.new_egress = self.container.new_egress, []
        if not self.is_leader:
            return  # clients follow the leader; a new one resends from the session's buffer
        for pushed in pushed_messages:
            client = self._subscribers.get(pushed.session_id)
            if client is not None:
                self._outbox.to_clients.append(
                    (client, PushedMessage(pushed.session_id, pushed.seq, pushed.payload))
                )

    # -- divergence and repair ---------------------------------------------------------

    def _publish_checkpoints(self) -> None:
        checkpoints, self.container.new_checkpoints = self.container.new_checkpoints, []
        raft = self.raw.raft
        for checkpoint in checkpoints:
            for peer in raft.peers:
                self._outbox.to_peers.append(
                    CheckpointReport(
                        raft.term,
                        raft.id,
                        peer,
                        checkpoint.index,
                        checkpoint.log_digest,
                        checkpoint.state_digest,
                    )
                )
            self._on_verdict(
                self.divergence.record(
                    raft.id, checkpoint.index, checkpoint.log_digest, checkpoint.state_digest
                )
            )

    def _on_verdict(self, verdict: Verdict | None) -> None:
        if verdict is None:
            return
        self.last_verdict = verdict
        if verdict.kind is VerdictKind.AGREE:
            if self.diverged is not None and verdict.index >= self.diverged.index:
                log.warning("node %s agrees with the majority again", self.node_id)
                self.diverged = None
                self.raw.set_promotable(True)
            return
        if verdict.kind is not VerdictKind.SELF_DIVERGED:
            log.error("replica check %s", verdict.describe())
            return
        log.error(
            "THIS NODE's service diverged from the majority %s; it stops serving clients "
            "and leading until repaired",
            verdict.describe(),
        )
        self.diverged = verdict
        self.raw.set_promotable(False)
        raft = self.raw.raft
        if raft.role is Role.LEADER:
            healthy = [p for p in raft.peers if p not in verdict.faulty]
            if healthy:
                best = max(healthy, key=lambda p: raft.progress[p].match)
                self.raw.transfer_leadership(best)
        if self.config.auto_repair:
            self.request_repair()

    def _repair_if_ready(self) -> None:
        """Restores the service from a healthy snapshot and re-applies the log after it;
        only between batches, so nothing half-applied is in flight."""
        pending = self._pending_repair
        if pending is None:
            return
        meta, data = pending
        log_ = self.raw.raft.log
        if meta.index > log_.applied:
            return  # wait until this node has applied that far itself
        self._pending_repair = None
        if meta.index < log_.offset:
            log.error("repair snapshot %s is older than this node's log; asking again", meta)
            self.request_repair()
            return
        self.container.restore(data)
        self.raw.reapply_from(meta.index)
        self.repairs += 1
        # The state is now the healthy majority's; the next checkpoint re-checks it.
        self.diverged = None
        self.last_verdict = None
        self.raw.set_promotable(True)
        log.warning("repaired from the leader's snapshot at index %s", meta.index)

    # -- snapshots ------------------------------------------------------------------------

    def _maybe_snapshot(self) -> None:
        """Snapshots after `snapshot_every_entries` entries or `snapshot_every_bytes`
        bytes of entries applied since the last one, whichever comes first."""
        if self._snapshot_running or not self.service.supports_snapshots():
            return
        config = self.config
        container = self.container
        since = max(self.raw.raft.snapshot_meta.index, self.snapshot_failed_at)
        entries = container.applied_index - since
        by_entries = config.snapshot_every_entries and entries >= config.snapshot_every_entries
        by_bytes = (
            config.snapshot_every_bytes
            and container.applied_bytes - self._bytes_at_last_snapshot
            >= config.snapshot_every_bytes
        )
        if (by_entries or by_bytes) and self.snapshot_point() is not None:
            self._outbox.take_snapshot = True

    # -- status ---------------------------------------------------------------------------

    def status_fields(self) -> dict[str, Any]:
        """What the replica knows about itself: the fields of `NodeStatus` that are not
        the driver's (syncs, loop stalls, snapshot transfer counts)."""
        raft = self.raw.raft
        container = self.container
        return {
            "id": self.node_id,
            "role": raft.role,
            "term": raft.term,
            "leader": raft.leader_id,
            "leader_address": self.leader_hint(),
            "last_index": raft.log.last_index(),
            "commit_index": raft.log.committed,
            "applied_index": container.applied_index,
            "log_digest": container.log_digest(),
            "state_digest": container.state_digest(),
            "outcome_digest": container.outcome_digest(),
            "state_digest_error": container.state_digest_error,
            "service_errors": container.service_errors,
            "callback_errors": container.callback_errors,
            "snapshot_error": self.snapshot_error,
            "commands_applied": container.commands_applied,
            "duplicates_suppressed": container.duplicates_suppressed,
            "sessions": len(container.sessions),
            "pending_requests": self.pending_requests(),
            "refused_busy": self.refused_busy,
            "retries_joined": self.retries_joined,
            "retries_answered_from_cache": self.retries_answered_from_cache,
            "snapshot_index": raft.snapshot_meta.index,
            "log_offset": raft.log.offset,
            "diverged": self.diverged.describe() if self.diverged else None,
            "replica_check": self.last_verdict.describe() if self.last_verdict else None,
            "repairs": self.repairs,
            "timers": len(container.timers.deadlines),
            "timers_fired": container.timers_fired,
        }


def split_messages(
    messages: Sequence[Message],
) -> tuple[list[Message], list[InstallSnapshot], list[Message]]:
    """A Ready's messages by when they may leave (the module's ordering rules 1 and 2):
    (send before the sync, snapshots to stream, send only after the sync)."""
    now: list[Message] = []
    snapshots: list[InstallSnapshot] = []
    after: list[Message] = []
    for message in messages:
        if isinstance(message, AppendRequest | HeartbeatRequest):
            now.append(message)
        elif isinstance(message, InstallSnapshot):
            snapshots.append(message)
        else:
            after.append(message)
    return now, snapshots, after


def reply_for(request_id: int, result: ApplyResult) -> ClientReply:
    status = result.status
    if status is ApplyStatus.OK:
        return ClientReply(
            request_id, ReplyStatus.OK, payload=result.reply, session_id=result.session_id
        )
    if status is ApplyStatus.SESSION_UNKNOWN:
        return ClientReply(
            request_id, ReplyStatus.SESSION_UNKNOWN, message="session expired or unknown"
        )
    if status is ApplyStatus.TOO_MANY_INFLIGHT:
        return ClientReply(request_id, ReplyStatus.RETRY, message="too many commands in flight")
    return ClientReply(request_id, ReplyStatus.REJECTED, message=f"{status.name.lower()}")
