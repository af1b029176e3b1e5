"""Snapshots on a node: taking them without stopping, and moving them between nodes.

Theory of operation
-------------------
*Taking.* After `snapshot_every_entries` applied entries (or on request) the node forks.
The child process holds a copy-on-write image of the service container at that instant:
it encodes it, writes it through `SnapshotStore` (fsynced, checksummed, renamed into
place) and exits. The parent never waits for the write: it keeps committing and
applying, so the longest commit stall is the fork itself. When the child succeeds the
core is told (`snapshot_taken`), which lets it compact its in-memory log, and the
write-ahead log drops whole segments below the snapshot, keeping a margin of entries
for followers that are only a little behind.

*Sending* (leader). When the core asks for an InstallSnapshot to a follower, the node
offers the newest stored snapshot; the follower answers with how many of its bytes it
already holds (a transfer cut off earlier resumes where it stopped), and the leader
streams the rest in chunks of `snapshot_chunk_bytes`, waiting for the link to drain
between chunks rather than buffering the whole file. Failure at any point is reported
to the core, which retries later.

*Receiving* (follower). Chunks are appended to a partial file; when the last one
arrives the file is verified and renamed, and only then is InstallSnapshot stepped into
the core. The core hands the snapshot back in a `Ready`; the node restores the
container from it and resets its log before doing anything else with that `Ready`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from phalanx.core.messages import InstallSnapshot
from phalanx.core.types import NodeId, SnapshotMeta
from phalanx.storage import SnapshotStore, SnapshotWriter
from phalanx.storage.snapshots import snapshot_file_name
from phalanx.transport.wire import SnapshotChunk, SnapshotOffer, SnapshotResume

if TYPE_CHECKING:
    from phalanx.server.node import Node

log = logging.getLogger("phalanx.snapshots")

#: Longest failure reason a snapshot's writer process hands back.
SNAPSHOT_ERROR_BYTES_MAX = 2000
#: How long a leader waits for a follower's answer to an offer, or for a link to drain.
TRANSFER_STEP_TIMEOUT_S = 10.0


@dataclass
class SnapshotStats:
    taken: int = 0
    sent: int = 0
    received: int = 0
    last_fork_ms: float = 0.0
    max_fork_ms: float = 0.0
    last_write_ms: float = 0.0


class SnapshotManager:
    def __init__(self, node: Node, directory: Path) -> None:
        self.node = node
        self.store = SnapshotStore(directory, keep=node.config.snapshots_keep)
        self.stats = SnapshotStats()
        self._taking: asyncio.Task[SnapshotMeta | None] | None = None
        self._sending: dict[NodeId, asyncio.Task[None]] = {}
        self._resume_waiters: dict[NodeId, asyncio.Future[int]] = {}
        self._receiving: tuple[SnapshotMeta, SnapshotWriter, int, NodeId] | None = None
        self._receiving_repair = False
        #: The newest stored snapshot, so that it is found without rescanning files.
        self.latest: tuple[SnapshotMeta, Path] | None = self.store.latest()

    # -- taking ------------------------------------------------------------------------------

    def start_taking(self) -> asyncio.Task[SnapshotMeta | None]:
        """Takes a snapshot at the replica's `snapshot_point()` (the replica decides
        when; see `Replica._maybe_snapshot`), or joins the one being taken."""
        if self._taking is None:
            self._taking = asyncio.get_running_loop().create_task(self._take())
        return self._taking

    async def _take(self) -> SnapshotMeta | None:
        try:
            return await self._take_once()
        finally:
            self._taking = None

    async def _take_once(self) -> SnapshotMeta | None:
        replica = self.node.replica
        meta = replica.snapshot_point()
        if meta is None:
            return None
        index, term = meta.index, meta.term
        replica.snapshot_started()
        started = time.perf_counter()
        try:
            # The child says why it failed through a pipe (its exit code cannot).
            reason_read, reason_write = os.pipe()
            try:
                pid = os.fork()
            except OSError:
                os.close(reason_read)
                os.close(reason_write)
                raise
        except OSError as fork_error:  # no memory or processes to fork: try again later
            why = f"snapshot at index {index}: cannot fork the writer: {fork_error}"
            replica.snapshot_failed(index, why)
            log.error("%s; the node keeps serving and tries again later", why)
            return None
        if pid == 0:  # the child: write the frozen image and leave, whatever happens
            os.close(reason_read)
            os._exit(self._write_in_child(meta, reason_write))
        os.close(reason_write)
        fork_ms = (time.perf_counter() - started) * 1000
        self.stats.last_fork_ms = fork_ms
        self.stats.max_fork_ms = max(self.stats.max_fork_ms, fork_ms)
        loop = asyncio.get_running_loop()
        try:
            _, status = await loop.run_in_executor(None, os.waitpid, pid, 0)
            reason = os.read(reason_read, SNAPSHOT_ERROR_BYTES_MAX).decode(errors="replace")
        finally:
            os.close(reason_read)
        self.stats.last_write_ms = (time.perf_counter() - started) * 1000
        if os.waitstatus_to_exitcode(status) != 0:
            error = f"snapshot at index {index}: {reason or 'the writer process died'}"
            replica.snapshot_failed(index, error)
            log.error(
                "%s; the node keeps serving and tries again after snapshot_every_entries "
                "more entries",
                error,
            )
            return None
        self.stats.taken += 1
        self._note_latest(meta, Path(self.store.directory) / snapshot_file_name(meta))
        replica.snapshot_taken(meta)
        self.node.wake()  # the next batch compacts the stored log
        log.info(
            "snapshot at index %s (term %s): fork %.1f ms, written in %.0f ms",
            index, term, fork_ms, self.stats.last_write_ms,
        )  # fmt: skip
        return meta

    def _write_in_child(self, meta: SnapshotMeta, reason_fd: int) -> int:
        try:
            data = self.node.replica.container.snapshot_bytes()
            writer = self.store.writer(meta)
            chunk = self.node.config.snapshot_chunk_bytes
            for start in range(0, len(data), chunk):
                writer.write(data[start : start + chunk])
            writer.finish()
            return 0
        except BaseException as error:  # the child must never return into the parent's loop
            # Not `logging`: a lock held by another thread at the fork could hang it.
            with contextlib.suppress(BaseException):
                service = type(self.node.replica.service).__name__
                reason = f"service {service}: {type(error).__name__}: {error}"
                os.write(reason_fd, reason.encode(errors="replace")[:SNAPSHOT_ERROR_BYTES_MAX])
            return 1

    # -- sending (leader) ----------------------------------------------------------------------

    def send(self, message: InstallSnapshot, *, repair: bool = False) -> None:
        peer = message.to
        task = self._sending.get(peer)
        if task is not None and not task.done():
            return
        self._sending[peer] = asyncio.get_running_loop().create_task(self._send(message, repair))

    async def send_repair(self, peer: NodeId) -> None:
        """Streams a fresh snapshot to a follower whose service diverged."""
        await self.start_taking()
        raft = self.node.replica.raw.raft
        if self.latest is None:
            log.warning("cannot repair node %s: this node holds no snapshot", peer)
            return
        self.send(InstallSnapshot(raft.term, raft.id, peer, self.latest[0]), repair=True)

    async def _send(self, message: InstallSnapshot, repair: bool) -> None:
        peer = message.to
        succeeded = False
        try:
            succeeded = await self._stream(message, repair)
        except (ConnectionError, TimeoutError, OSError) as error:
            log.warning("sending snapshot to node %s failed: %s", peer, error)
        finally:
            self._resume_waiters.pop(peer, None)
            if not succeeded and not repair:
                self.node.replica.on_snapshot_sent(peer, succeeded=False)
                self.node.wake()

    async def _stream(self, message: InstallSnapshot, repair: bool) -> bool:
        latest = self.latest
        if latest is None or latest[0] != message.snapshot:
            log.warning("asked to send snapshot %s, which is not the newest stored", message)
            return False
        meta, path = latest
        transport = self.node.require_transport()
        peer, me, term = message.to, message.from_id, message.term
        length = self.store.content_length(path)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._resume_waiters[peer] = future
        await transport.send_bulk(
            SnapshotOffer(term, me, peer, meta, length, repair), TRANSFER_STEP_TIMEOUT_S
        )
        offset = await asyncio.wait_for(future, TRANSFER_STEP_TIMEOUT_S)
        chunk_bytes = self.node.config.snapshot_chunk_bytes
        for whole_offset, whole in self.store.read_chunks(path, chunk_bytes):
            if whole_offset + len(whole) <= offset:
                continue  # the follower already holds it
            chunk = whole[max(0, offset - whole_offset) :]
            chunk_offset = max(whole_offset, offset)
            if self.node.replica.raw.raft.term != term:
                return False  # no longer leading in that term
            await transport.send_bulk(
                SnapshotChunk(term, me, peer, meta, chunk_offset, chunk), TRANSFER_STEP_TIMEOUT_S
            )
        self.stats.sent += 1
        return True

    def _note_latest(self, meta: SnapshotMeta, path: Path) -> None:
        """The newest stored snapshot is the one with the highest index, not the one
        written last: a snapshot taken from an older applied index may finish after
        a newer one was installed from the leader."""
        if self.latest is None or meta.index >= self.latest[0].index:
            self.latest = (meta, path)

    def on_resume(self, message: SnapshotResume) -> None:
        future = self._resume_waiters.get(message.from_id)
        if future is not None and not future.done():
            future.set_result(message.offset)

    # -- receiving (follower) ------------------------------------------------------------------

    def on_offer(self, message: SnapshotOffer) -> None:
        if message.term < self.node.replica.raw.raft.term:
            return
        self._abort_receiving(unless=message.snapshot)
        if self._receiving is None:
            writer = self.store.resume(message.snapshot)
            self._receiving = (message.snapshot, writer, message.length, message.from_id)
        self._receiving_repair = message.repair
        meta, writer, _, _ = self._receiving
        self.node.require_transport().send(
            SnapshotResume(message.term, message.to, message.from_id, meta, writer.offset)
        )

    def on_chunk(
        self, message: SnapshotChunk, deliver: Callable[[InstallSnapshot, bytes, bool], None]
    ) -> None:
        """Appends a chunk; when the last one is in and the file verified, hands the
        whole snapshot to `deliver(install, data, repair)`."""
        receiving = self._receiving
        if receiving is None or receiving[0] != message.snapshot:
            return
        meta, writer, length, leader = receiving
        if message.offset != writer.offset:
            return  # a gap or a repeat: the leader retries with a fresh offer
        writer.write(message.data)
        if writer.offset < length:
            return
        self._receiving = None
        path = writer.finish()
        self._note_latest(meta, path)
        self.stats.received += 1
        install = InstallSnapshot(message.term, leader, message.to, meta)
        deliver(install, self.store.read_content(path), self._receiving_repair)

    def _abort_receiving(self, unless: SnapshotMeta) -> None:
        if self._receiving is not None and self._receiving[0] != unless:
            with contextlib.suppress(OSError):
                self._receiving[1].abort()
            self._receiving = None

    # -- installing ----------------------------------------------------------------------------

    def read(self, meta: SnapshotMeta) -> bytes:
        latest = self.latest
        if latest is None or latest[0] != meta:
            raise AssertionError(f"snapshot {meta} to install is not the newest stored")
        return self.store.read_content(latest[1])

    def close(self) -> None:
        for task in self._sending.values():
            task.cancel()
        if self._receiving is not None:
            with contextlib.suppress(OSError):
                self._receiving[1].abort()
