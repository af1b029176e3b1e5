"""The node: the asyncio shell that carries out what its `Replica` decides.

Theory of operation
-------------------
Every decision (what to propose, what to send when, what to apply, whom to answer,
when to snapshot, whether this replica diverged) is made by `Replica` (replica.py),
which performs no I/O; the deterministic simulator drives the same class. The node
owns only what the replica must not touch: the TCP transport, the tick timer, the
write-ahead log and its fsync, and forked snapshot writers.

Everything runs on one asyncio event loop. Peer messages are stepped into the replica
as they arrive, a timer ticks it every `tick_ms`, and client requests are queued in it
and proposed as one batch per turn of the ready loop. For each `Batch` the node follows
the replica's ordering rules:

1. storage reset (after an installed snapshot) and compaction;
2. `send_now` (a leader's AppendEntries and heartbeats) leaves at once: replication
   overlaps the leader's own disk write;
3. entries and hard state are written and, if `batch.sync`, synced (fdatasync) on the
   loop's own thread. Messages and client requests that arrive meanwhile wait in the
   kernel's socket buffers, so the next batch carries everything that arrived during
   the sync: one fdatasync covers a whole batch (group commit). A worker thread was
   tried and measured: handing each sync to it and back cost 100-180 µs of wake-ups on
   the commit path and gained no throughput on 2 cores;
4. only then do votes and acknowledgements (`send_after_sync`) leave;
5. `replica.persisted(batch)` applies the committed entries; the replies it produces
   go back to the clients waiting on them (only the leader has any).

A write or sync that fails, a service fault, or a bug that escapes a batch stops the
node (fail-stop): nothing more is acknowledged, voted or applied.
"""

from __future__ import annotations

import asyncio
import logging
import random
import resource
import time
from typing import Any

from phalanx.core.messages import InstallSnapshot, Message
from phalanx.core.types import SnapshotMeta
from phalanx.limits import (
    FDS_RESERVED,
    FDS_WANTED,
    MAX_INBOUND_CONNECTIONS,
    MIN_INBOUND_CONNECTIONS,
)
from phalanx.server.config import NodeConfig, load_service_class
from phalanx.server.identity import check_or_record
from phalanx.server.replica import Batch, Replica
from phalanx.server.snapshots import SnapshotManager
from phalanx.service.container import ServiceFault
from phalanx.storage import StorageError, WalStorage
from phalanx.transport.tcp import (
    ClientRequestMessage,
    Connection,
    ConnectionState,
    NodeTransport,
)
from phalanx.transport.wire import (
    NodeStatus,
    RepairRequest,
    SnapshotChunk,
    SnapshotOffer,
    SnapshotReply,
    SnapshotRequest,
    SnapshotResume,
    StatusReply,
    StatusRequest,
)

log = logging.getLogger("phalanx.node")

#: A tick this late is logged: the loop did not run for that long.
LOOP_STALL_WARN_MS = 100
#: Stalls logged one by one; after these, every hundredth.
STALLS_LOGGED_IN_FULL = 20


class SystemClock:
    """The replica's time on a real machine."""

    def wall_ms(self) -> int:
        return int(time.time() * 1000)

    def mono_ms(self) -> float:
        return time.monotonic() * 1000


class Node:
    def __init__(self, config: NodeConfig) -> None:
        config.validate()
        self.config = config
        service = load_service_class(config.service)()
        # Before the log is opened: a node must never count votes against other
        # members than the ones its data was written with.
        self.identity = check_or_record(config)
        self.storage = WalStorage(
            config.data_dir, cluster_id=config.cluster_id, node_id=config.node_id
        )
        self.snapshots = SnapshotManager(self, config.data_dir / "snapshots")
        snapshot: tuple[SnapshotMeta, bytes] | None = None
        if self.snapshots.latest is not None:
            meta, path = self.snapshots.latest
            snapshot = (meta, self.snapshots.store.read_content(path))
        restored = self.storage.load(
            snapshot_index=snapshot[0].index if snapshot else 0,
            snapshot_term=snapshot[0].term if snapshot else None,
        )
        for line in restored.report:
            log.warning("storage recovery: %s", line)
        self.replica = Replica(
            config,
            service,
            clock=SystemClock(),
            rng=random.Random(),
            hard_state=restored.hard_state,
            entries=restored.entries,
            snapshot=snapshot,
        )
        if snapshot is not None:
            log.info("restored snapshot at index %s (term %s)", snapshot[0].index, snapshot[0].term)
        self.transport: NodeTransport | None = None
        self.loop_stalls = 0
        self.syncs = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._stop: asyncio.Event | None = None
        #: Why this node stopped itself (its disk failed, its service faulted, a bug),
        #: or None; `exit_code` says which for `phalanx node`.
        self.failed: str | None = None
        self.exit_code = 0
        self._background: set[asyncio.Task[None]] = set()

    @property
    def service(self) -> Any:
        return self.replica.service

    def wake(self) -> None:
        self._wake.set()

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

        self.replica.local_callback(self.replica.service.on_start)
        ticker = asyncio.get_running_loop().create_task(self._tick_loop())
        ready_loop = asyncio.get_running_loop().create_task(self._ready_loop())
        await stop.wait()
        self._stopping = True
        self._wake.set()
        ticker.cancel()
        await ready_loop  # finishes the batch in progress, if any
        self.replica.local_callback(self.replica.service.on_terminate)
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
                # The loop did not run for a while (kept from the CPU, a long batch).
                # The missed ticks are not replayed in a burst: a burst would count the
                # stall as silence from the leader before this node could read the
                # heartbeats that wait in its socket, and start an election over it.
                next_tick += late_s
                if late_s * 1000 > LOOP_STALL_WARN_MS:
                    self._note_stall(late_s * 1000)
            self.replica.tick()
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

    # -- inputs ------------------------------------------------------------------------------

    def _on_peer_message(self, message: Message) -> None:
        """A message from a peer's connection; `_on_peer_read` follows each read."""
        if isinstance(message, SnapshotChunk):
            self.snapshots.on_chunk(message, self._on_snapshot_received)
        elif isinstance(message, SnapshotOffer):
            self.snapshots.on_offer(message)
        elif isinstance(message, SnapshotResume):
            self.snapshots.on_resume(message)
        else:
            self.replica.on_peer_message(message)
            return  # `_on_peer_read` handles the batch this makes
        self._wake.set()

    def _on_snapshot_received(self, install: InstallSnapshot, data: bytes, repair: bool) -> None:
        self.replica.on_snapshot_received(install, data, repair=repair)
        self._wake.set()

    def _on_peer_read(self) -> None:
        """Handles the batch that a peer's messages made (an append to persist and
        acknowledge, an acknowledgement that commits) right away, in the same loop turn,
        rather than a turn later through the ready loop: one wake-up less on each of the
        two peer hops of every commit. Client requests still wait for the ready loop,
        which batches every client's requests of a turn into one proposal."""
        if self._stopping:
            return
        batch = self._next_batch_or_stop(propose=False)
        if self._stopping:
            return
        if batch is not None:
            self._handle_batch_or_stop(batch)
        else:
            self._carry_out_outbox()
        if self._stopping:
            return
        if self.replica.has_work():
            self._wake.set()  # the ready loop takes the rest

    def _on_peer_unreachable(self, peer: Any) -> None:
        self.replica.on_peer_unreachable(peer)

    def _on_client_message(self, connection: Connection, message: ClientRequestMessage) -> None:
        if isinstance(message, StatusRequest):
            connection.send(StatusReply(message.request_id, self.status()))
            return
        if isinstance(message, SnapshotRequest):
            asyncio.get_running_loop().create_task(self._snapshot_on_request(connection, message))
            return
        if isinstance(message, RepairRequest):
            note = self.replica.request_repair()
            connection.send(SnapshotReply(message.request_id, 0, 0, note))
        else:
            self.replica.on_client_request(connection, message)
        self._carry_out_outbox()
        if self.replica.has_work():
            self._wake.set()

    async def _snapshot_on_request(self, connection: Connection, message: SnapshotRequest) -> None:
        replica = self.replica
        if not replica.service.supports_snapshots():
            connection.send(SnapshotReply(message.request_id, 0, 0, "service has no restore()"))
            return
        failures_before = replica.snapshot_failures
        meta = await self.snapshots.start_taking()
        if meta is None and replica.snapshot_failures != failures_before:
            note = f"failed: {replica.snapshot_error}"
            connection.send(SnapshotReply(message.request_id, 0, 0, note))
            return
        if meta is None:
            meta = replica.raw.raft.snapshot_meta
            note = "no new entries since the last snapshot"
        else:
            note = f"fork {self.snapshots.stats.last_fork_ms:.1f} ms"
        connection.send(SnapshotReply(message.request_id, meta.index, meta.term, note))

    # -- the ready loop ------------------------------------------------------------------------

    async def _ready_loop(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            while not self._stopping:
                batch = self._next_batch_or_stop(propose=True)
                if self._stopping:
                    break
                if batch is None:
                    self._carry_out_outbox()
                    break
                self._handle_batch_or_stop(batch)
                if self._stopping or not self.replica.has_work():
                    break  # back to waiting, without a loop turn spent to find that out
                # Let heartbeats, peers and clients in between batches, even when none
                # needed a sync (replaying a long log after a restart, say).
                await asyncio.sleep(0)

    def _next_batch_or_stop(self, *, propose: bool) -> Batch | None:
        """The replica's next batch. Making one may restore the service (an installed
        or repair snapshot): what escapes that stops the node as a batch would."""
        try:
            return self.replica.next_batch(propose=propose)
        except ServiceFault as fault:
            self._fail_stop(str(fault), exit_code=5)
        except Exception as error:
            log.exception("internal error while preparing a batch")
            self._fail_stop(f"internal error: {type(error).__name__}: {error}", exit_code=6)
        return None

    def _handle_batch_or_stop(self, batch: Batch) -> None:
        """Carries out a batch; anything that escapes it stops the node. A batch half
        handled cannot be finished or retried, and a replica that cannot tell what it
        applied must not go on serving."""
        try:
            self._handle_batch(batch)
        except ServiceFault as fault:
            self._fail_stop(str(fault), exit_code=5)
        except Exception as error:
            entries = batch.ready.committed_entries
            where = (
                f" (applying entries {entries[0].index}..{entries[-1].index})" if entries else ""
            )
            log.exception("internal error while handling a batch%s", where)
            self._fail_stop(f"internal error{where}: {type(error).__name__}: {error}", exit_code=6)

    def _handle_batch(self, batch: Batch) -> None:
        transport = self.require_transport()
        storage = self.storage
        try:
            if batch.reset_log_to is not None:
                storage.reset(batch.reset_log_to)
            if batch.compact_log_to:
                storage.compact(batch.compact_log_to)
        except StorageError as error:
            self._fail_stop(f"its storage failed: {error}", exit_code=4)
            self.replica.abandon()
            return
        for message in batch.send_now:
            transport.send(message)
        for install in batch.install_snapshots:
            self.snapshots.send(install)
        transport.flush()  # replication overlaps this node's own sync
        try:
            if batch.sync:
                storage.write(batch.entries, batch.hard_state)
                storage.sync()
                self.syncs += 1
            elif batch.hard_state is not None:
                storage.write((), batch.hard_state)  # a new commit index: lazily
        except StorageError as error:
            self._fail_stop(f"its storage failed: {error}", exit_code=4)
            self.replica.abandon()
            return  # nothing this batch promised may leave, nothing may apply
        for message in batch.send_after_sync:
            transport.send(message)
        transport.flush()  # acknowledgements before the apply, which may take long
        self.replica.persisted(batch)
        self._carry_out_outbox()
        transport.flush()

    def _carry_out_outbox(self) -> None:
        outbox = self.replica.take_outbox()
        if not outbox:
            return
        transport = self.require_transport()
        for connection, message in outbox.to_clients:
            if not isinstance(connection, Connection):
                continue
            if connection.state is ConnectionState.CLOSED:
                self.replica.forget_client(connection)
                continue
            connection.send(message)
        for peer_message in outbox.to_peers:
            transport.send(peer_message)
        for connection in outbox.close_clients:
            if isinstance(connection, Connection):
                connection.close()
        for peer in outbox.repairs:
            task = asyncio.get_running_loop().create_task(self.snapshots.send_repair(peer))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if outbox.take_snapshot:
            self.snapshots.start_taking()
        if outbox.to_peers:
            transport.flush()

    def _fail_stop(self, reason: str, *, exit_code: int) -> None:
        """Stops the node without acknowledging, voting or applying anything more.

        A write or sync failed: what the disk holds is unknown (a failed fsync may have
        dropped the dirty pages). Or the service faulted in a way that says nothing
        about the command (out of memory), or a bug broke a batch half way. The peers
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

    # -- status --------------------------------------------------------------------------------

    def status(self) -> NodeStatus:
        stats = self.snapshots.stats
        return NodeStatus(
            **self.replica.status_fields(),
            syncs=self.syncs,
            loop_stalls=self.loop_stalls,
            snapshots_taken=stats.taken,
            snapshots_sent=stats.sent,
            snapshots_received=stats.received,
            snapshot_fork_ms_max=round(stats.max_fork_ms, 2),
        )


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
