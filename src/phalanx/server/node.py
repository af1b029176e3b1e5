"""The node: the one place where the pure core meets disks, sockets and clocks.

Theory of operation
-------------------
Everything runs on one asyncio event loop. Peer messages are stepped into the core as
they arrive, a timer ticks it every `tick_ms`, and client requests are queued and
proposed as one batch per turn of the ready loop. The ready loop follows the core's
contract for each `Ready`:

1. the leader's AppendEntries and heartbeats go out at once: they promise nothing,
   and a leader counts itself towards a commit only after its own sync (Raft thesis
   §10.2.1), so replication overlaps the leader's disk write;
2. entries and hard state are written and synced (fdatasync) on the loop's own
   thread. Messages and client requests that arrive meanwhile wait in the kernel's
   socket buffers, so the next `Ready` carries everything that arrived during the
   sync: one fdatasync covers a whole batch (group commit). A worker thread was tried
   and measured: handing each sync to it and back cost 100-180 µs of wake-ups on the
   commit path and gained no throughput on 2 cores. A Ready whose hard state changed
   only in its commit index needs no sync (a commit index is a hint; see
   `HardStateKeeper`);
3. only then do votes and acknowledgements leave;
4. committed entries are applied to the service container, whose replies go back to
   the clients waiting on those log indices (only the leader has any);
5. `advance`.

A client's request is answered only after its entry is applied. When a node stops
leading, every waiting request is told to retry: its entry may still commit, and the
session table makes the retry return the first outcome rather than apply twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from phalanx.core.errors import NotLeaderError, ProposalDroppedError
from phalanx.core.messages import AppendRequest, HeartbeatRequest, InstallSnapshot, Message
from phalanx.core.raft import RaftConfig, Role
from phalanx.core.rawnode import RawNode, Ready
from phalanx.core.types import NO_NODE, Entry, Index, NodeId, SnapshotMeta, Term
from phalanx.server.config import NodeConfig, load_service_class
from phalanx.server.divergence import DivergenceMonitor, Verdict, VerdictKind
from phalanx.server.identity import check_or_record
from phalanx.server.snapshots import SnapshotManager
from phalanx.service.container import (
    ApplyResult,
    ApplyStatus,
    ContainerLimits,
    ServiceContainer,
    ServiceFault,
)
from phalanx.service.envelope import Clock, Command, KeepAlive, OpenSession, encode_envelope
from phalanx.storage import StorageError, WalStorage
from phalanx.transport.tcp import (
    MAX_INBOUND_CONNECTIONS,
    ClientRequestMessage,
    Connection,
    ConnectionState,
    NodeTransport,
)
from phalanx.transport.wire import (
    CheckpointReport,
    ClientReply,
    CommandRequest,
    KeepAliveRequest,
    OpenSessionRequest,
    PushedMessage,
    RepairRequest,
    RepairWanted,
    ReplyStatus,
    SnapshotChunk,
    SnapshotOffer,
    SnapshotReply,
    SnapshotRequest,
    SnapshotResume,
    StatusReply,
    StatusRequest,
    Subscribe,
)

log = logging.getLogger("phalanx.node")

#: File descriptors kept for the node's own files, peer links and snapshots.
FDS_RESERVED = 256
#: The open-file limit a node asks for when it may raise it.
FDS_WANTED = 65_536
#: Inbound connections allowed however low the open-file limit.
MIN_INBOUND_CONNECTIONS = 16
#: A tick this late is logged: the loop did not run for that long.
LOOP_STALL_WARN_MS = 100
#: Stalls logged one by one; after these, every hundredth.
STALLS_LOGGED_IN_FULL = 20
#: Retries of one pending command that wait on its entry (beyond: appended again).
MAX_RETRIES_JOINED = 8


@dataclass(slots=True)
class _Request:
    """A client request on its way into the log: queued, then waiting on its index.

    `retries` are later requests for the same (session, seq) that arrived while this
    one was pending: they wait on the same entry instead of appending it again."""

    data: bytes
    connection: Connection | None  # None: the node's own entry (a clock)
    request_id: int
    #: (session id, seq) of a command, for recognising its retries; None otherwise.
    key: tuple[int, int] | None = None
    queued_at: float = 0.0
    term: Term = Term(0)
    retries: list[tuple[Connection, int]] | None = None

    def answer(self, reply: ClientReply) -> None:
        if self.connection is not None:
            self.connection.send(reply)
        for connection, request_id in self.retries or ():
            connection.send(msgspec.structs.replace(reply, request_id=request_id))


class Node:
    def __init__(self, config: NodeConfig) -> None:
        config.validate()
        self.config = config
        self.service = load_service_class(config.service)()
        self.container = ServiceContainer(
            self.service,
            ContainerLimits(
                session_timeout_ms=config.session_timeout_ms,
                max_sessions=config.max_sessions,
                max_replies_per_session=config.max_replies_per_session,
                checkpoint_every_entries=config.checkpoint_every_entries,
            ),
        )
        # Before the log is opened: a node must never count votes against other
        # members than the ones its data was written with.
        self.identity = check_or_record(config)
        self.storage = WalStorage(
            config.data_dir, cluster_id=config.cluster_id, node_id=config.node_id
        )
        self.snapshots = SnapshotManager(self, config.data_dir / "snapshots")
        snapshot = self._restore_snapshot()
        restored = self.storage.load(snapshot_index=snapshot.index, snapshot_term=snapshot.term)
        for line in restored.report:
            log.warning("storage recovery: %s", line)
        raft_config = RaftConfig(
            node_id=config.node_id,
            voters=tuple(sorted(config.members)),
            election_timeout_ticks=config.election_timeout_ticks,
            heartbeat_interval_ticks=config.heartbeat_interval_ticks,
            max_message_bytes=config.max_message_bytes,
            max_inflight_messages=config.max_inflight_messages,
        )
        self.raw = RawNode(
            raft_config,
            random.Random(),
            hard_state=restored.hard_state,
            entries=restored.entries,
            snapshot=snapshot,
        )
        self.transport: NodeTransport | None = None
        #: Proposals for the next batch, oldest first.
        self._queue: list[_Request] = []
        self._clock_queued_for = -1
        #: Proposed requests by log index, oldest first (so the first is the oldest).
        self._waiters: dict[Index, _Request] = {}
        #: Queued or proposed commands by (session id, seq): a retry that arrives while
        #: its command is pending joins it rather than appending it again.
        self._pending: dict[tuple[int, int], _Request] = {}
        #: Requests turned away because the leader was busy (for status and benchmarks).
        self.refused_busy = 0
        self.loop_stalls = 0
        self.retries_joined = 0
        self.retries_answered_from_cache = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._stop: asyncio.Event | None = None
        #: Why this node stopped itself (its disk failed, its service faulted, a bug),
        #: or None; `exit_code` says which for `phalanx node`.
        self.failed: str | None = None
        self.exit_code = 0
        self.syncs = 0
        self.divergence = DivergenceMonitor(config.node_id, tuple(sorted(config.members)))
        #: Set while this node's service disagrees with the majority's.
        self.diverged: Verdict | None = None
        self.last_verdict: Verdict | None = None
        self.repairs = 0
        self._pending_repair: SnapshotMeta | None = None
        #: session id -> the connection its client subscribed on (leader only).
        self._subscribers: dict[int, Connection] = {}

    def _restore_snapshot(self) -> SnapshotMeta:
        """Loads the newest valid snapshot into the container (damaged ones are skipped
        by the store with a warning); only the log after it will be replayed."""
        latest = self.snapshots.latest
        if latest is None:
            return SnapshotMeta()
        meta, path = latest
        self.container.restore(self.snapshots.store.read_content(path))
        log.info("restored snapshot at index %s (term %s)", meta.index, meta.term)
        return meta

    def wake(self) -> None:
        self._wake.set()

    def local_callback(self, method: Any, *args: Any) -> None:
        """A node-local service callback (on_start, on_role_change, on_terminate): what
        it raises is logged, never allowed to stop the node."""
        try:
            self.container.local_callback(method, *args)
        except Exception as error:
            log.error(
                "service %s: %s raised %s: %s",
                type(self.service).__name__,
                method.__name__,
                type(error).__name__,
                error,
            )

    def require_transport(self) -> NodeTransport:
        assert self.transport is not None, "node not started"
        return self.transport

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        host, port = self.config.address
        self.transport = NodeTransport(
            node_id=self.config.node_id,
            cluster_id=self.config.cluster_id,
            host=host,
            port=port,
            peers={n: a for n, a in self.config.members.items() if n != self.config.node_id},
            on_peer_message=self._on_peer_message,
            on_client_message=self._on_client_message,
            on_peer_unreachable=self._on_peer_unreachable,
            max_frame_bytes=self.config.max_message_bytes * 2 + 65536,
            on_peer_read=self._on_peer_read,
            identity=self.identity.describe_cluster(),
            client_max_in_flight=self.config.max_replies_per_session,
            max_inbound_connections=inbound_connections_allowed(),
        )
        await self.transport.start()
        log.info("node %s serving on %s:%s", self.config.node_id, host, port)

        self.local_callback(self.service.on_start)
        ticker = asyncio.get_running_loop().create_task(self._tick_loop())
        ready_loop = asyncio.get_running_loop().create_task(self._ready_loop())
        await stop.wait()
        self._stopping = True
        self._wake.set()
        ticker.cancel()
        await ready_loop  # finishes the Ready in progress, if any
        self.local_callback(self.service.on_terminate)
        self.snapshots.close()
        await self.transport.close()
        self.storage.close()
        log.info("node %s stopped", self.config.node_id)

    async def _tick_loop(self) -> None:
        interval = self.config.tick_ms / 1000
        next_tick = time.monotonic()
        while True:
            next_tick += interval
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            late_s = time.monotonic() - next_tick
            if late_s > interval:
                # The loop did not run for a while (kept from the CPU, a long Ready).
                # The missed ticks are not replayed in a burst: a burst would count the
                # stall as silence from the leader before this node could read the
                # heartbeats that wait in its socket, and start an election over it.
                next_tick += late_s
                if late_s * 1000 > LOOP_STALL_WARN_MS:
                    self._note_stall(late_s * 1000)
            self.raw.tick()
            self._queue_clock_if_due()
            self._wake.set()

    def _note_stall(self, late_ms: float) -> None:
        self.loop_stalls += 1
        # etcd's "took too long" warning: a stalled loop misses heartbeats, and its
        # peers may elect another leader meanwhile.
        if self.loop_stalls <= STALLS_LOGGED_IN_FULL or self.loop_stalls % 100 == 0:
            log.warning(
                "event loop stalled: a tick ran %.0f ms late (%d stalls so far)",
                late_ms,
                self.loop_stalls,
            )

    def _queue_clock_if_due(self) -> None:
        """Timers fire only when an entry carries cluster time past their deadline; when
        one is due and nothing else is being proposed, the leader appends a clock entry."""
        if self.raw.raft.role is not Role.LEADER or self._queue:
            return
        deadline = self.container.next_timer_deadline()
        now_ms = int(time.time() * 1000)
        if deadline is None or deadline > now_ms or self._clock_queued_for == deadline:
            return
        self._clock_queued_for = deadline  # one clock per deadline, until it is applied
        self._queue.append(_Request(encode_envelope(Clock(now_ms)), None, 0))

    # -- inputs ------------------------------------------------------------------------------

    def _on_peer_message(self, message: Message) -> None:
        """A message from a peer's connection; `_on_peer_read` follows each read."""
        if isinstance(message, CheckpointReport):
            self._on_verdict(
                self.divergence.record(
                    message.from_id,
                    Index(message.index),
                    message.log_digest,
                    message.state_digest,
                )
            )
        elif isinstance(message, RepairWanted):
            if self.raw.raft.role is Role.LEADER:
                asyncio.get_running_loop().create_task(self.snapshots.send_repair(message.from_id))
        elif isinstance(message, SnapshotChunk):
            self.snapshots.on_chunk(message, self._on_peer_message, self._on_repair_snapshot)
        elif isinstance(message, SnapshotOffer):
            self.snapshots.on_offer(message)
        elif isinstance(message, SnapshotResume):
            self.snapshots.on_resume(message)
        else:
            self.raw.step(message)
            return  # `_on_peer_read` handles the Ready this makes
        self._wake.set()

    def _on_peer_read(self) -> None:
        """Handles the Ready that a peer's messages made (an append to persist and
        acknowledge, an acknowledgement that commits) right away, in the same loop turn,
        rather than a turn later through the ready loop: one wake-up less on each of the
        two peer hops of every commit. Client requests still wait for the ready loop,
        which batches every client's requests of a turn into one proposal."""
        if self._stopping:
            return
        if self.raw.has_ready():
            self._handle_ready_or_stop(self.raw.ready())
        if self._stopping:
            return
        if self._queue or self.raw.has_ready():
            self._wake.set()  # the ready loop takes the rest

    def _on_peer_unreachable(self, peer: NodeId) -> None:
        self.raw.report_unreachable(peer)

    def _on_client_message(self, connection: Connection, message: ClientRequestMessage) -> None:
        if isinstance(message, StatusRequest):
            connection.send(StatusReply(message.request_id, self.status()))
            return
        if isinstance(message, SnapshotRequest):
            asyncio.get_running_loop().create_task(self._snapshot_on_request(connection, message))
            return
        if isinstance(message, Subscribe):
            self._subscribe(connection, message)
            return
        if isinstance(message, RepairRequest):
            note = self.request_repair()
            connection.send(SnapshotReply(message.request_id, 0, 0, note))
            return
        if self.diverged is not None:
            # A diverged service must not answer anyone: send the client elsewhere.
            hint = "" if self.raw.raft.role is Role.LEADER else self._hint()
            connection.send(
                ClientReply(
                    message.request_id,
                    ReplyStatus.NOT_LEADER,
                    leader_hint=hint,
                    message="this node's service diverged from the majority",
                )
            )
            return
        if self.config.unsafe_local_reads and self._answer_locally(connection, message):
            return
        raft = self.raw.raft
        if raft.role is not Role.LEADER:
            connection.send(
                ClientReply(message.request_id, ReplyStatus.NOT_LEADER, leader_hint=self._hint())
            )
            return
        if isinstance(message, CommandRequest):
            self._on_command(connection, message)
            return
        if self._refuse_if_busy(connection, message.request_id):
            return
        now_ms = int(time.time() * 1000)
        envelope: Any
        if isinstance(message, OpenSessionRequest):
            envelope = OpenSession(now_ms)
        elif isinstance(message, KeepAliveRequest):
            envelope = KeepAlive(now_ms, message.session_id)
        self._enqueue(_Request(encode_envelope(envelope), connection, message.request_id))

    def _on_command(self, connection: Connection, message: CommandRequest) -> None:
        if len(message.payload) > self.config.max_command_bytes:
            connection.send(
                ClientReply(
                    message.request_id,
                    ReplyStatus.REJECTED,
                    message=f"command of {len(message.payload)} bytes exceeds "
                    f"max_command_bytes={self.config.max_command_bytes}",
                )
            )
            return
        if message.seq - message.first_incomplete >= self.config.max_replies_per_session:
            # Its session could not cache the reply: it would be appended only to be
            # refused when applied. Say so now, with no log entry.
            connection.send(
                ClientReply(
                    message.request_id,
                    ReplyStatus.RETRY,
                    message="too many commands in flight: sequence numbers span more than "
                    f"max_replies_per_session={self.config.max_replies_per_session}",
                )
            )
            return
        key = (message.session_id, message.seq)
        pending = self._pending.get(key)
        if pending is not None:
            # A retry of a command already on its way: wait on the same entry.
            if pending.retries is None:
                pending.retries = []
            if len(pending.retries) < MAX_RETRIES_JOINED:
                pending.retries.append((connection, message.request_id))
                self.retries_joined += 1
                return
        cached = self._cached_reply(message)
        if cached is not None:
            self.retries_answered_from_cache += 1
            connection.send(
                ClientReply(
                    message.request_id,
                    ReplyStatus.OK,
                    payload=cached,
                    session_id=message.session_id,
                )
            )
            return
        if self._refuse_if_busy(connection, message.request_id):
            return
        envelope = Command(
            int(time.time() * 1000),
            message.session_id,
            message.seq,
            message.first_incomplete,
            message.payload,
        )
        request = _Request(encode_envelope(envelope), connection, message.request_id, key)
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

    def _refuse_if_busy(self, connection: Connection, request_id: int) -> bool:
        busy = self._busy()
        if busy:
            self.refused_busy += 1
            connection.send(ClientReply(request_id, ReplyStatus.RETRY, message=busy))
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
            waited_ms = (time.monotonic() - oldest.queued_at) * 1000
            if waited_ms > wait_ms_max:
                return (
                    f"leader busy: the oldest pending request has waited {waited_ms:.0f} ms; "
                    "retry after backing off"
                )
        return ""

    def _enqueue(self, request: _Request) -> None:
        request.queued_at = time.monotonic()
        self._queue.append(request)
        self._wake.set()

    def _answer_locally(self, connection: Connection, message: ClientRequestMessage) -> bool:
        """The deliberately broken read path of `unsafe_local_reads`."""
        if not isinstance(message, CommandRequest):
            return False
        try:
            command = msgspec.msgpack.decode(message.payload)
        except (msgspec.DecodeError, ValueError):
            return False
        if not self.service.is_read_only(command):
            return False
        reply = msgspec.msgpack.encode(self.service.apply(command))
        connection.send(ClientReply(message.request_id, ReplyStatus.OK, payload=reply))
        return True

    async def _snapshot_on_request(self, connection: Connection, message: SnapshotRequest) -> None:
        if not self.service.supports_snapshots():
            connection.send(SnapshotReply(message.request_id, 0, 0, "service has no restore()"))
            return
        failures_before = self.snapshots.failures
        meta = await self.snapshots.start_taking()
        if meta is None and self.snapshots.failures != failures_before:
            note = f"failed: {self.snapshots.last_error}"
            connection.send(SnapshotReply(message.request_id, 0, 0, note))
            return
        if meta is None:
            meta = self.raw.raft.snapshot_meta
            note = "no new entries since the last snapshot"
        else:
            note = f"fork {self.snapshots.stats.last_fork_ms:.1f} ms"
        connection.send(SnapshotReply(message.request_id, meta.index, meta.term, note))

    # -- pushed messages ----------------------------------------------------------------------

    def _subscribe(self, connection: Connection, message: Subscribe) -> None:
        if self.raw.raft.role is not Role.LEADER or self.diverged is not None:
            connection.send(
                ClientReply(message.request_id, ReplyStatus.NOT_LEADER, leader_hint=self._hint())
            )
            return
        if message.session_id not in self.container.sessions:
            # Perhaps not applied here yet (a new leader catching up): try again soon.
            connection.send(ClientReply(message.request_id, ReplyStatus.RETRY))
            return
        self._subscribers[message.session_id] = connection
        kept, gap = self.container.egress_after(message.session_id, message.after_seq)
        connection.send(ClientReply(message.request_id, ReplyStatus.OK))
        for position, pushed in enumerate(kept):
            connection.send(
                PushedMessage(pushed.session_id, pushed.seq, pushed.payload, gap and not position)
            )

    def _deliver_pushed(self) -> None:
        pushed_messages, self.container.new_egress = self.container.new_egress, []
        if self.raw.raft.role is not Role.LEADER:
            return  # clients follow the leader; a new one resends from the session's buffer
        for pushed in pushed_messages:
            connection = self._subscribers.get(pushed.session_id)
            if connection is None:
                continue
            if connection.state is ConnectionState.CLOSED:
                del self._subscribers[pushed.session_id]
                continue
            connection.send(PushedMessage(pushed.session_id, pushed.seq, pushed.payload))

    # -- divergence and repair -------------------------------------------------------------

    def _publish_checkpoints(self) -> None:
        checkpoints, self.container.new_checkpoints = self.container.new_checkpoints, []
        transport = self.require_transport()
        raft = self.raw.raft
        for checkpoint in checkpoints:
            for peer in raft.peers:
                transport.send(
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
                log.warning("node %s agrees with the majority again", self.config.node_id)
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
        self._wake.set()

    def request_repair(self) -> str:
        raft = self.raw.raft
        if raft.role is Role.LEADER:
            return "this node leads; it hands leadership over first, then repair it"
        if raft.leader_id == NO_NODE:
            return "no leader known yet; try again"
        self.require_transport().send(RepairWanted(raft.term, raft.id, raft.leader_id))
        return f"asked leader {raft.leader_id} for a snapshot to rebuild from"

    def _on_repair_snapshot(self, meta: SnapshotMeta) -> None:
        self._pending_repair = meta
        self._wake.set()

    def _repair_if_ready(self) -> None:
        """Restores the service from a healthy snapshot and re-applies the log after it;
        only between Readies, so nothing half-applied is in flight."""
        meta = self._pending_repair
        if meta is None:
            return
        log_ = self.raw.raft.log
        if meta.index > log_.applied:
            return  # wait until this node has applied that far itself
        self._pending_repair = None
        if meta.index < log_.offset:
            log.error("repair snapshot %s is older than this node's log; asking again", meta)
            self.request_repair()
            return
        try:
            self.container.restore(self.snapshots.read(meta))
        except ServiceFault as fault:
            self._fail_stop(str(fault), exit_code=5)
            return
        self.raw.reapply_from(meta.index)
        self.repairs += 1
        # The state is now the healthy majority's; the next checkpoint re-checks it.
        self.diverged = None
        self.last_verdict = None
        self.raw.set_promotable(True)
        log.warning("repaired from the leader's snapshot at index %s", meta.index)

    def _hint(self) -> str:
        leader = self.raw.raft.leader_id
        if leader in self.config.members:
            host, port = self.config.members[leader]
            return f"{host}:{port}"
        return ""

    # -- the ready loop ------------------------------------------------------------------------

    async def _ready_loop(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            self._repair_if_ready()
            self._propose_queued()
            while not self._stopping and self.raw.has_ready():
                self._handle_ready_or_stop(self.raw.ready())
                if self._stopping:
                    break
                self._propose_queued()
                if not self.raw.has_ready():
                    break  # back to waiting, without a loop turn spent to find that out
                # Let heartbeats, peers and clients in between Readies, even when none
                # needed a sync (replaying a long log after a restart, say).
                await asyncio.sleep(0)

    def _handle_ready_or_stop(self, ready: Ready) -> None:
        """Handles a Ready; anything that escapes it stops the node. A Ready half handled
        cannot be advanced or retried (the core would assert on the next one, forever),
        and a replica that cannot tell what it applied must not go on serving."""
        try:
            self._handle_ready(ready)
        except ServiceFault as fault:
            self._fail_stop(str(fault), exit_code=5)
        except Exception as error:
            entries = ready.committed_entries
            where = (
                f" (applying entries {entries[0].index}..{entries[-1].index})" if entries else ""
            )
            log.exception("internal error while handling a Ready%s", where)
            self._fail_stop(f"internal error{where}: {type(error).__name__}: {error}", exit_code=6)

    def _handle_ready(self, ready: Ready) -> None:
        transport = self.transport
        assert transport is not None
        if ready.soft_state is not None:
            self._on_soft_state(ready.soft_state.role, ready.soft_state.leader_id)
        if ready.snapshot is not None:
            # Before anything else in this Ready: the state and log it replaces.
            self.container.restore(self.snapshots.read(ready.snapshot))
            self.storage.reset(ready.snapshot.index + 1)
        if self.snapshots.compact_to:
            self.storage.compact(self.snapshots.compact_to)
            self.snapshots.compact_to = Index(0)
        later: list[Message] = []
        for message in ready.messages:
            if isinstance(message, AppendRequest | HeartbeatRequest):
                transport.send(message)
            elif isinstance(message, InstallSnapshot):
                self.snapshots.send(message)
            else:
                later.append(message)
        transport.flush()  # replication overlaps this node's own sync
        try:
            if ready.must_sync():
                self.storage.write(ready.entries, ready.hard_state)
                self.storage.sync()
                self.syncs += 1
            elif ready.hard_state is not None:
                self.storage.write((), ready.hard_state)  # a new commit index: lazily
        except StorageError as error:
            self._fail_stop(f"its storage failed: {error}", exit_code=4)
            return  # nothing this Ready promised may leave, nothing may apply
        for message in later:
            transport.send(message)
        transport.flush()
        self._apply(ready.committed_entries)
        self.raw.advance(ready)
        if self.container.new_egress:
            self._deliver_pushed()
        if self.container.new_checkpoints:
            self._publish_checkpoints()
        if self.service.supports_snapshots():
            self.snapshots.maybe_take()

    def _fail_stop(self, reason: str, *, exit_code: int) -> None:
        """Stops the node without acknowledging, voting or applying anything more.

        A write or sync failed: what the disk holds is unknown (a failed fsync may have
        dropped the dirty pages). Or the service faulted in a way that says nothing
        about the command (out of memory), or a bug broke a Ready half way. The peers
        carry on; an operator restarts this node, where recovery checks what survived."""
        if self.failed is not None:
            return
        self.failed = reason
        self.exit_code = exit_code
        log.critical("node %s stops: %s", self.config.node_id, reason)
        self._stopping = True
        self._wake.set()
        if self._stop is not None:
            self._stop.set()

    def _propose_queued(self) -> None:
        """Proposes the queue's oldest requests, at most `max_proposals_per_batch` per
        turn: a bounded Ready keeps ticks, heartbeats and peers' messages flowing."""
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
            reply = ClientReply(0, status, leader_hint=self._hint(), message=str(error))
            for request in batch:
                self._finish(request, reply)
            self._clock_queued_for = -1
            return
        term = self.raw.raft.term
        for offset, request in enumerate(batch):
            if request.connection is not None:
                request.term = term
                self._waiters[Index(first + offset)] = request
        if self._queue:
            self._wake.set()

    def _finish(self, request: _Request, reply: ClientReply) -> None:
        """Answers a request (and its joined retries) and forgets it."""
        if request.key is not None:
            self._pending.pop(request.key, None)
        if request.connection is not None:
            request.answer(msgspec.structs.replace(reply, request_id=request.request_id))

    def _on_soft_state(self, role: Role, leader: NodeId) -> None:
        log.info("node %s is now %s (leader %s)", self.config.node_id, role.value, leader)
        self._clock_queued_for = -1
        if role is not Role.LEADER:
            # Closing makes subscribed clients go and find the new leader.
            for connection in self._subscribers.values():
                connection.close()
            self._subscribers.clear()
        self.local_callback(self.service.on_role_change, role.value)
        if role is not Role.LEADER and (self._waiters or self._queue):
            waiters, self._waiters = self._waiters, {}
            queue, self._queue = self._queue, []
            changed = ClientReply(
                0,
                ReplyStatus.RETRY,
                leader_hint=self._hint(),
                message="leadership changed; outcome unknown, retry",
            )
            for waiter in waiters.values():
                self._finish(waiter, changed)
            never_proposed = ClientReply(
                0, ReplyStatus.NOT_LEADER, leader_hint=self._hint(), message="not the leader"
            )
            for request in queue:
                self._finish(request, never_proposed)
            self._pending.clear()

    def _apply(self, entries: Sequence[Entry]) -> None:
        results = self.container.apply_batch(entries)
        for entry, result in zip(entries, results, strict=True):
            waiter = self._waiters.pop(entry.index, None)
            if waiter is None:
                continue
            if waiter.term != entry.term or result is None:
                reply = ClientReply(waiter.request_id, ReplyStatus.RETRY, message="entry lost")
            else:
                reply = _reply_for(waiter.request_id, result)
            self._finish(waiter, reply)

    # -- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        raft = self.raw.raft
        return {
            "id": int(self.config.node_id),
            "role": raft.role.value,
            "term": int(raft.term),
            "leader": int(raft.leader_id),
            "leader_address": self._hint(),
            "last_index": int(raft.log.last_index()),
            "commit_index": int(raft.log.committed),
            "applied_index": int(self.container.applied_index),
            "log_digest": self.container.log_digest(),
            "state_digest": self.container.state_digest(),
            "outcome_digest": self.container.outcome_digest(),
            "state_digest_error": self.container.state_digest_error,
            "service_errors": self.container.service_errors,
            "callback_errors": self.container.callback_errors,
            "snapshot_error": self.snapshots.last_error,
            "commands_applied": self.container.commands_applied,
            "duplicates_suppressed": self.container.duplicates_suppressed,
            "sessions": len(self.container.sessions),
            "syncs": self.syncs,
            "pending_requests": len(self._queue) + len(self._waiters),
            "refused_busy": self.refused_busy,
            "loop_stalls": self.loop_stalls,
            "retries_joined": self.retries_joined,
            "retries_answered_from_cache": self.retries_answered_from_cache,
            "snapshot_index": int(raft.snapshot_meta.index),
            "log_offset": int(raft.log.offset),
            "snapshots_taken": self.snapshots.stats.taken,
            "snapshots_sent": self.snapshots.stats.sent,
            "snapshots_received": self.snapshots.stats.received,
            "snapshot_fork_ms_max": round(self.snapshots.stats.max_fork_ms, 2),
            "diverged": self.diverged.describe() if self.diverged else None,
            "replica_check": self.last_verdict.describe() if self.last_verdict else None,
            "repairs": self.repairs,
            "timers": len(self.container.timers.deadlines),
            "timers_fired": self.container.timers_fired,
        }


def inbound_connections_allowed() -> int:
    """As many inbound connections as this process can hold file descriptors for.

    The soft limit on open files is raised to the hard one first (often 1,024 -> over
    500,000); whatever it is, the node keeps `FDS_RESERVED` descriptors for its own
    files and peer links, so a flood of connections is refused at the door rather than
    leaving the node unable to open its write-ahead log (which would stop it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else FDS_WANTED
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, FDS_WANTED), hard))
        except (ValueError, OSError) as error:
            log.warning("cannot raise the open-file limit from %s: %s", soft, error)
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_INBOUND_CONNECTIONS
    allowed = max(MIN_INBOUND_CONNECTIONS, soft - FDS_RESERVED)
    if allowed < MAX_INBOUND_CONNECTIONS:
        log.warning(
            "open-file limit %s: at most %s inbound connections (not %s)",
            soft,
            allowed,
            MAX_INBOUND_CONNECTIONS,
        )
    return min(MAX_INBOUND_CONNECTIONS, allowed)


def _reply_for(request_id: int, result: ApplyResult) -> ClientReply:
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
