"""`WalStorage`: the durable write-ahead log and hard state of one node.

Theory of operation
-------------------
The log lives in segment files named after the index of their first entry; the hard
state, the directory's owner and a lock live in small files beside them::

    <directory>/
      lock                            flock'ed while a WalStorage has the directory open
      meta                            cluster id + node id, written once (atomic)
      hardstate                       term, vote, commit (replaced atomically)
      wal-00000000000000000001.seg    entries 1 .. 8190
      wal-00000000000000008191.seg    entries 8191 .. (the last segment: appends go here)

    segment file
    +------+---------+----------+-------------+----------+
    | PXWL | version | reserved | first index | CRC32C   |   header, 20 bytes
    | 4 B  | u16     | u16      | u64         | u32      |   (CRC of the 16 bytes before)
    +------+---------+----------+-------------+----------+
    | length u32 | CRC32C(payload) u32 | payload: msgpack Entry [term, index, kind, data] |
    | length u32 | CRC32C(payload) u32 | payload ...                                      |
    ...                                                    one record per entry, in order
    | 00 00 00 ...                        zeros (preallocated) up to the end of the file |

    meta, hardstate
    +------+---------+----------+----------------+----------+-----------------+
    | PXMT | version | reserved | payload length | CRC32C   | msgpack payload |
    | PXHS | u16     | u16      | u32            | u32      |                 |
    +------+---------+----------+----------------+----------+-----------------+

Writing. `write()` encodes each entry once and appends all records of the call with one
`pwrite` per segment it touches; it does not fsync. `sync()` does one `fdatasync` per
segment written since the last sync, an `fsync` of the directory if a segment was
created, and then, if due, replaces the hard state file (see `HardStateKeeper` in
base.py for why only a term or vote change forces that). An in-memory index holds the
byte offset of every entry's record, so a write that starts inside the stored log
truncates in place: later segments are deleted and the segment holding the first
replaced entry is cut (see below).

Preallocation. A segment file is created at its full size: `posix_fallocate` gives it
`segment_bytes_max` bytes of allocated zeros before the header is written, and the last
segment of a log written without preallocation is extended the same way when it is
opened for appends. An append is then a write into allocated space whose `fdatasync`
has no new file size to persist (ext4 on a virtual disk, write + sync of one 150-byte
record: median ~135 µs without preallocation, ~93 µs with it). The append position is
the in-memory logical end of the last record (`_Segment.size`), never the file size.
A segment holding a record larger than `segment_bytes_max` grows past its preallocated
size: the preallocation is only a minimum. Where the file system declines (EOPNOTSUPP,
EINVAL, e.g. some tmpfs or network file systems), this is logged once at INFO and files
grow as records are appended, as they always did; running out of space while
preallocating is a failed write like any other (see Failure).

Cutting a segment at an offset (a truncation in place, or the repair of a torn tail)
is `ftruncate` to the offset, `posix_fallocate` back to `segment_bytes_max`, `fsync`:
the bytes after the new logical end read as zeros again, so stale records can never
look like live ones after a crash. It is `fsync`, not `fdatasync`, because the file
may end up exactly as long as before while the blocks it dropped must stay dropped.

Crash ordering. Recovery assumes that only the tail of the last segment can hold
unsynced bytes. Two rare steps of `write()` therefore sync on the spot rather than at
the next `sync()`, because nothing may be written after them until they are durable:

- rolling over to a new segment first `fdatasync`s the full one (and the directory if
  that segment is new): once a next segment exists, this one is complete on disk;
- a truncation deletes the later segments and fsyncs the directory, then cuts the
  segment holding the first replaced entry (`ftruncate`, `posix_fallocate`, `fsync`):
  otherwise the new, shorter records could reach the disk while the cut did not,
  leaving stale records after them.

Both happen once per segment or once per log conflict (a leader change), not per batch.

Creating a segment and preallocating it need no sync of their own: the first `sync()`
(or the rollover after it) `fdatasync`s the file, which persists its size and blocks
with the records, and fsyncs the directory. A preallocation lost in a crash leaves a
shorter file, which reads the same (zeros, or nothing, after the last record).

Recovery (`load()`). Segments are read in index order and must be contiguous (each
starts where the previous one ended) with a valid header; every record's index must be
the next one and terms must never decrease.

The end of a segment's records is where only zero bytes remain up to the end of the
file (or the file ends). This is unambiguous: a record may begin with a zero byte (a
length of 256 is `00 01 00 00`), but its length is never 0 (that is an invalid record)
and its payload starts with a non-zero byte (0x94, a msgpack array), so a record never
consists of zeros up to the end of the file. Such a zero region is preallocated space
in any segment, first or last: it is not damage, nothing is reported and nothing cut.

A record that cannot be read (incomplete header or payload, impossible length, CRC
mismatch) with a non-zero byte at or after it is a *torn tail* only if it is in the
last segment and no valid record follows it: the file is cut to the last good record
(only zeros follow, see "Cutting" above), and the repair is logged at WARNING and
listed in `Restored.report`. A last segment whose header is incomplete or all zeros,
or (in a preallocated file) a prefix of the expected header followed only by zeros (a
crash while it was being created) is deleted the same way. Anything else (damage
followed by valid records, damage in an earlier segment, an index gap, a bad header, a
segment that does not continue its predecessor, a torn hard state or meta file, a
persisted commit index beyond the last stored entry) raises `StorageCorruptError`
naming the file and byte offset, and the node refuses to start: serving a damaged log
could make it acknowledge or vote as if it held entries it no longer holds.

Two limits of these rules, both resolved on the side of refusing rather than guessing:

- Damage in the very last record looks exactly like a torn write and is repaired as
  one. If that entry had been synced and acknowledged, the node now lacks it; when
  the persisted commit index covers it, `load()` notices and refuses to start, and
  otherwise it is the same loss as a disk that silently drops its last write.
- A crash that persisted a later page of an unsynced batch but not an earlier one
  leaves valid records after damage (or after zeros, in preallocated space), which is
  reported as corruption although no synced data was harmed. The remedy is the same:
  wipe the node, it catches up.

Damage that turns the last records of a segment into zeros reads as a shorter segment,
not as damage: in an earlier segment the next one then does not continue it (refused
as non-contiguous); in the last one it is the loss of the last writes, which the commit
index check above catches when they were committed.

Compaction and reset (snapshots, Raft §7). The log is paired with the snapshots in
snapshots.py: `load(snapshot_index)` returns only the entries after the snapshot the
node restored, and the segments before it may be gone.

- `compact(index)`, after a snapshot: deletes, oldest first, each segment whose
  entries are all <= `index`, i.e. whose successor starts at or before `index + 1`,
  and returns the sizes of the files deleted (preallocated space included).
  The segment holding `index + 1` and the last (active) segment always stay, so the
  log still continues any snapshot at or after `index`. The deletions reach the disk
  with the next `sync()`; a segment that comes back after a crash is harmless, see
  below. Bound: compacting after each snapshot to the index of the *previous* one
  (the older of the two a `SnapshotStore(keep=2)` holds, so that a damaged newest
  snapshot can fall back to it) leaves at most the entries since the previous
  snapshot plus one partly covered segment on disk, and the in-memory index holds
  only those.
- `reset(first_index)`, after installing a leader's snapshot at `first_index - 1`:
  deletes every segment, newest first with a directory fsync after each, so that a
  crash leaves a prefix of the old log and never a log with holes; then starts an
  empty segment at `first_index`, durable with the next `sync()`. The snapshot must be
  durable (`SnapshotWriter.finish()`) before the reset, or a crash in between leaves
  a log that starts after the only snapshot.
- `load(snapshot_index)` reads from the segment holding entry `snapshot_index` (or the
  first one after it): earlier segments are not read (they hold only covered
  entries, and an interrupted compaction may have left holes among them), but are
  remembered so that `compact` and `reset` delete them. A log whose first segment
  starts after `snapshot_index + 1`, even an empty one written by `reset`, is a gap:
  `StorageCorruptError`, because the snapshot that log was reset for is missing or
  damaged and starting from an older one would forget acknowledged entries. Only a
  directory without segments is an empty log at any snapshot. The log is reset to
  `snapshot_index + 1` on load, as a logged repair, when it cannot continue the
  snapshot: it ends before the snapshot (a crash between installing a snapshot and
  the reset), or, given `snapshot_term`, its entry at `snapshot_index` has another
  term (the entries after it come from a history the leader's snapshot replaced;
  keeping them would break the Log Matching property, Raft §5.3).

Threading contract. Calls on one `WalStorage` never overlap. The node makes all of
them, `sync()` included, on its event-loop thread: while `fdatasync` runs, what peers
and clients send waits in the kernel's socket buffers and becomes the next batch, so
one sync covers a whole batch without a worker thread (handing each sync to a worker
and back was measured slower; see server/node.py). Nothing here is tied to one thread,
though: a caller may run `sync()` on another thread if it calls nothing else on the
object until that returns. No lock orders the calls; a non-blocking guard turns an
overlapping call into an `InvariantError` (an `AssertionError`) rather than silent
corruption.

Limits. A record's payload is at most `RECORD_PAYLOAD_BYTES_MAX` (a larger length field
is damage, never an allocation); a segment file above `SEGMENT_FILE_BYTES_LIMIT` is
refused before it is read; the small files are read only up to `SMALL_FILE_BYTES_MAX`.
Recovery finds a segment's last non-zero byte by reading backwards from the end of the
file a MiB at a time, then holds in memory only the file up to that byte plus
`_ZERO_TAIL_READ_SLACK_BYTES`; only when that is not a clean end (damage, or a last
record whose payload ends in a longer run of zeros) does it read the whole file.
The in-memory index costs 8 bytes per stored entry and grows with the log until
`compact` deletes old segments (see the bound above).

Failure. An `OSError` during `write` or `sync` leaves the files in an unknown state (a
failed fsync may have dropped the dirty pages, and retrying it would report success):
the storage turns unusable and every later call raises `StorageError`. The node must
restart, and recovery decides from what is really on disk.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import logging
import os
import re
import threading
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from phalanx.core.errors import ConfigError, InvariantError, invariant
from phalanx.core.types import Entry, HardState
from phalanx.limits import (
    RECORD_PAYLOAD_BYTES_MAX,
    SEGMENT_BYTES_MAX_DEFAULT,
    SEGMENT_FILE_BYTES_LIMIT,
    SMALL_FILE_BYTES_MAX,
)
from phalanx.storage.base import (
    HARD_STATE_COMMIT_INTERVAL_S_DEFAULT,
    HardStateKeeper,
    Restored,
    default_clock,
)
from phalanx.storage.codec import (
    SEGMENT_HEADER_BYTES,
    Meta,
    decode_hard_state,
    decode_meta,
    decode_segment_header,
    encode_hard_state,
    encode_meta,
    encode_record,
    encode_segment_header,
    find_valid_record_after,
    scan_records,
)
from phalanx.storage.errors import StorageCorruptError, StorageError
from phalanx.storage.files import (
    ensure_directory,
    fsync_directory,
    nonzero_end,
    preallocate,
    read_at,
    read_file,
    replace_atomically,
    write_all,
)

logger = logging.getLogger(__name__)

META_FILE = "meta"
LOCK_FILE = "lock"
HARD_STATE_FILE = "hardstate"
_TEMPORARY_SUFFIX = ".tmp"
#: Recovery first reads a segment only this far past its last non-zero byte (the rest
#: is preallocated zeros). A last record whose payload ends in a longer run of zero
#: bytes, or any damage, makes it read the whole file instead.
_ZERO_TAIL_READ_SLACK_BYTES = 64 * 1024
_SEGMENT_NAME = re.compile(r"wal-(\d{20})\.seg")


def segment_file_name(first_index: int) -> str:
    return f"wal-{first_index:020d}.seg"


@dataclass(slots=True)
class _Segment:
    path: str
    first_index: int
    #: Byte offset of each entry's record; entry `first_index + i` is at `offsets[i]`.
    offsets: array[int]
    #: The logical end: the end of its last record, where the next one goes. The file
    #: is usually longer (preallocated zeros); its size is never the append position.
    size: int
    #: Open only for the last segment (the one appends go to).
    fd: int | None = None

    @property
    def next_index(self) -> int:
        return self.first_index + len(self.offsets)


def _torn_while_created(header: bytes, data_end: int, name_index: int) -> bool:
    """Whether an unreadable header is what a crash while creating the segment leaves:
    an incomplete file, an all-zero header, or (in a preallocated file) a prefix of the
    expected header followed only by zeros."""
    if len(header) < SEGMENT_HEADER_BYTES or not any(header):
        return True
    return (
        name_index >= 1
        and data_end < SEGMENT_HEADER_BYTES
        and encode_segment_header(name_index).startswith(header[:data_end])
    )


@dataclass(frozen=True, slots=True)
class _Repair:
    """A change recovery makes to a torn file, once it knows it will not refuse."""

    path: str
    #: Cut the file to this length; None: remove the file.
    truncate_to: int | None
    message: str


class WalStorage:
    """The durable `LogStorage`. See the module docstring for format, rules and threads."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        cluster_id: str,
        node_id: int,
        segment_bytes_max: int = SEGMENT_BYTES_MAX_DEFAULT,
        hard_state_commit_interval_s: float = HARD_STATE_COMMIT_INTERVAL_S_DEFAULT,
        clock: Callable[[], float] = default_clock,
    ) -> None:
        if segment_bytes_max < SEGMENT_HEADER_BYTES + 64:
            raise ConfigError("segment_bytes_max", f"{segment_bytes_max} is too small")
        if segment_bytes_max > SEGMENT_FILE_BYTES_LIMIT - RECORD_PAYLOAD_BYTES_MAX:
            raise ConfigError("segment_bytes_max", f"{segment_bytes_max} is too large")
        if hard_state_commit_interval_s < 0:
            raise ConfigError("hard_state_commit_interval_s", "must not be negative")
        if node_id < 1:
            raise ConfigError("node_id", f"{node_id} is not a node id (they start at 1)")
        self.directory = os.path.abspath(os.fspath(directory))
        self._segment_bytes_max = segment_bytes_max
        try:
            ensure_directory(self.directory)
            self._directory_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as error:
            raise StorageError(f"cannot open data directory {self.directory}: {error}") from error
        self._lock_fd = -1
        try:
            self._lock_fd = self._lock_directory()
            self._check_meta(cluster_id, node_id)
        except BaseException as error:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
            os.close(self._directory_fd)
            if isinstance(error, OSError):
                message = f"cannot open data directory {self.directory}: {error}"
                raise StorageError(message) from error
            raise
        self._segments: list[_Segment] = []
        #: Segments before the snapshot that `load()` did not read: (first index, path).
        self._covered: list[tuple[int, str]] = []
        #: Segments written since the last sync, by path.
        self._dirty: dict[str, _Segment] = {}
        self._directory_dirty = False
        #: Cleared when the file system declines `posix_fallocate`, not to ask again.
        self._preallocating = True
        self._hard_state_commit_interval_s = hard_state_commit_interval_s
        self._clock = clock
        self._hard = HardStateKeeper(HardState(), hard_state_commit_interval_s, clock)
        self._loaded = False
        self._closed = False
        self._failed: str | None = None
        self._busy = threading.Lock()

    def __enter__(self) -> WalStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the LogStorage interface -----------------------------------------------------------

    def load(self, snapshot_index: int = 0, *, snapshot_term: int | None = None) -> Restored:
        """Reads the log that continues the snapshot at `snapshot_index` (0: none).

        Entries up to `snapshot_index` are dropped from the result. `snapshot_term`
        (optional, recommended) lets recovery notice a log from a history that
        diverged at or before the snapshot; see "Compaction and reset" above."""
        invariant(snapshot_index >= 0, "load after snapshot index %d", snapshot_index)
        with self._exclusive():
            invariant(not self._loaded, "load() is called once, right after opening")
            invariant(not self._closed, "load() after close()")
            repairs: list[_Repair] = []
            try:
                with self._failing_fatally("load"):
                    repairs.extend(self._find_temporaries())
                    hard_state = self._load_hard_state()
                    stored = self._recover_segments(repairs, snapshot_index)
                    reset_message = self._check_continues_snapshot(
                        stored, snapshot_index, snapshot_term
                    )
                    entries = [] if reset_message else self._after(stored, snapshot_index)
                    last_index = entries[-1].index if entries else snapshot_index
                    self._check_commit_is_held(hard_state, last_index)
                    # Only now that nothing will be refused are the repairs made, so a
                    # refused directory is left exactly as found, for the operator.
                    report = [self._repair(repair) for repair in repairs]
                    if reset_message:
                        report.append(self._reset_on_load(snapshot_index + 1, reset_message))
                    if self._segments:
                        self._activate(self._segments[-1])
            except BaseException as error:
                # A half-read directory must never be written to; close() still works.
                self._failed = f"load: {error}"
                raise
            self._hard = HardStateKeeper(
                hard_state, self._hard_state_commit_interval_s, self._clock
            )
            self._loaded = True
            return Restored(hard_state, entries, report)

    def write(self, entries: Sequence[Entry], hard_state: HardState | None) -> None:
        with self._exclusive():
            self._check_usable()
            first = entries[0].index if entries else 0
            for offset, entry in enumerate(entries):
                if entry.index != first + offset:
                    raise InvariantError(
                        f"entries of one write must be consecutive: entry {entry.index} at "
                        f"position {offset} of a write from {first}"
                    )
            # Encoding first: an oversized entry is refused before anything is written.
            records = [encode_record(entry) for entry in entries]
            if hard_state is not None:
                self._hard.note(hard_state)
            if not records:
                return
            with self._failing_fatally("write"):
                self._make_room(first)
                self._append(entries, records)

    def sync(self) -> None:
        with self._exclusive():
            self._check_usable()
            with self._failing_fatally("sync"):
                self._sync(force_hard_state=False)

    def close(self) -> None:
        with self._exclusive():
            if self._closed:
                return
            try:
                if self._loaded and self._failed is None:
                    with self._failing_fatally("close"):
                        self._sync(force_hard_state=True)
            finally:
                self._closed = True
                for segment in self._segments:
                    self._close_fd(segment)
                os.close(self._directory_fd)
                os.close(self._lock_fd)  # releases the flock

    def compact(self, index: int) -> int:
        """Deletes the segments whose entries are all <= `index` (never the one holding
        `index + 1`, never the last); returns the bytes freed. Same thread rules as
        `write`. The deletions become durable with the next `sync()`."""
        with self._exclusive():
            self._check_usable()
            with self._failing_fatally("compact"):
                return self._compact(index)

    def reset(self, first_index: int) -> None:
        """Drops the whole log (a snapshot at `first_index - 1` replaced it) and starts
        an empty one at `first_index`. Durable with the next `sync()`."""
        invariant(first_index >= 1, "reset to first index %d", first_index)
        with self._exclusive():
            self._check_usable()
            with self._failing_fatally("reset"):
                self._reset(first_index)

    # -- guards -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        if not self._busy.acquire(blocking=False):
            raise InvariantError(
                "WalStorage used by two threads at once (calls on it must not overlap; "
                "the node makes them all on its event-loop thread)"
            )
        try:
            yield
        finally:
            self._busy.release()

    @contextlib.contextmanager
    def _failing_fatally(self, operation: str) -> Iterator[None]:
        try:
            yield
        except OSError as error:
            self._failed = f"{operation}: {error}"
            raise StorageError(
                f"{operation} failed in {self.directory}: {error}; the storage is unusable "
                "until the node restarts and recovers from what is on disk"
            ) from error

    def _check_usable(self) -> None:
        if self._closed:
            raise StorageError(f"storage in {self.directory} is closed")
        if self._failed is not None:
            raise StorageError(
                f"storage in {self.directory} failed earlier ({self._failed}); restart the node"
            )
        invariant(self._loaded, "call load() before write() or sync()")

    # -- opening ------------------------------------------------------------------------------

    def _lock_directory(self) -> int:
        # Two processes (or two objects) appending to one log would interleave records.
        path = os.path.join(self.directory, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageError(
                f"{self.directory} is in use by another storage (lock held on {path}); "
                "is another node running with the same data directory?"
            ) from None
        return fd

    def _check_meta(self, cluster_id: str, node_id: int) -> None:
        path = os.path.join(self.directory, META_FILE)
        if not os.path.exists(path):
            ours = [
                name
                for name in sorted(os.listdir(self.directory))
                if _SEGMENT_NAME.fullmatch(name) or name == HARD_STATE_FILE
            ]
            if ours:
                raise StorageError(
                    f"{self.directory} holds {ours[0]} but no {META_FILE} file, so it cannot "
                    "tell which cluster and node it belongs to; refusing to use it"
                )
            meta = encode_meta(Meta(cluster_id=cluster_id, node_id=node_id))
            replace_atomically(self.directory, self._directory_fd, META_FILE, meta)
            return
        meta_found = decode_meta(read_file(path, SMALL_FILE_BYTES_MAX), path)
        if meta_found.cluster_id != cluster_id or meta_found.node_id != node_id:
            raise StorageError(
                f"{self.directory} belongs to cluster {meta_found.cluster_id!r} node "
                f"{meta_found.node_id}, but this node is cluster {cluster_id!r} node "
                f"{node_id}; refusing to use another node's data (check --data)"
            )

    def _find_temporaries(self) -> list[_Repair]:
        # A temporary file is what a crash during an atomic replace leaves behind; the
        # file it was meant to replace is intact, so the temporary is ignored.
        repairs = []
        for name in (META_FILE, HARD_STATE_FILE):
            path = os.path.join(self.directory, name + _TEMPORARY_SUFFIX)
            if os.path.exists(path):
                message = f"ignored and removed the leftover temporary file {path}"
                repairs.append(_Repair(path, None, message))
        return repairs

    def _check_commit_is_held(self, hard_state: HardState, last_index: int) -> None:
        # The commit index is persisted only after the entries up to it were synced, and
        # committed entries are never truncated; so a log that ends before it lost
        # durable, committed entries (e.g. damage in its last record was repaired as a
        # torn tail). Voting with such a log could elect a leader without them, so the
        # node refuses to start (etcd-io/raft panics on the same "state.commit is out
        # of range" condition). A snapshot holds committed entries too.
        if hard_state.commit <= last_index:
            return
        hard_state_path = os.path.join(self.directory, HARD_STATE_FILE)
        if self._segments:
            path, offset = self._segments[-1].path, self._segments[-1].size
        else:
            path, offset = hard_state_path, 0
        raise StorageCorruptError(
            path,
            offset,
            f"the log ends at index {last_index} but {hard_state_path} records commit index "
            f"{hard_state.commit}: committed entries are missing from the log",
        )

    def _load_hard_state(self) -> HardState:
        path = os.path.join(self.directory, HARD_STATE_FILE)
        if not os.path.exists(path):
            return HardState()
        return decode_hard_state(read_file(path, SMALL_FILE_BYTES_MAX), path)

    # -- recovery -----------------------------------------------------------------------------

    def _segment_paths(self) -> list[tuple[int, str]]:
        found = []
        for name in os.listdir(self.directory):
            match = _SEGMENT_NAME.fullmatch(name)
            if match:
                found.append((int(match.group(1)), os.path.join(self.directory, name)))
        return sorted(found)

    def _recover_segments(self, repairs: list[_Repair], snapshot_index: int) -> list[Entry]:
        entries: list[Entry] = []
        paths = self._segment_paths()
        # Segments wholly before the snapshot are not read (they may even be a
        # non-contiguous leftover of an interrupted compaction); reading starts at the
        # one holding the snapshot's own entry, for the term check.
        names = [name_index for name_index, _ in paths]
        start = max(bisect.bisect_right(names, max(snapshot_index, 1)) - 1, 0)
        self._covered = paths[:start]
        paths = paths[start:]
        for position, (name_index, path) in enumerate(paths):
            is_last = position == len(paths) - 1
            expected = self._segments[-1].next_index if self._segments else None
            last_term = entries[-1].term if entries else 0
            recovered = self._recover_segment(
                path,
                name_index,
                expected=expected,
                last_term=last_term,
                is_last=is_last,
                repairs=repairs,
            )
            if recovered is not None:
                segment, segment_entries = recovered
                self._segments.append(segment)
                entries.extend(segment_entries)
        return entries

    def _check_continues_snapshot(
        self, stored: list[Entry], snapshot_index: int, snapshot_term: int | None
    ) -> str | None:
        """Raises on a gap after the snapshot; returns why the log must be reset if it
        cannot continue the snapshot (None: it does)."""
        if not self._segments:
            if self._covered and snapshot_index > 0:
                return f"only segments before the snapshot at index {snapshot_index} remain"
            return None
        first = self._segments[0]
        if first.first_index > snapshot_index + 1:
            raise StorageCorruptError(
                first.path,
                0,
                f"the log starts at index {first.first_index} but the snapshot ends at index "
                f"{snapshot_index}: entries {snapshot_index + 1}..{first.first_index - 1} are "
                "missing (gap); was the newest snapshot damaged or removed?",
            )
        if snapshot_index == 0:
            return None
        last_index = self._segments[-1].next_index - 1
        if last_index < snapshot_index:
            return (
                f"the log ends at index {last_index}, before the snapshot at index "
                f"{snapshot_index} (a snapshot install was interrupted before reset)"
            )
        if snapshot_term is not None and first.first_index <= snapshot_index:
            found = stored[snapshot_index - first.first_index].term
            if found != snapshot_term:
                return (
                    f"entry {snapshot_index} has term {found} but the snapshot there has term "
                    f"{snapshot_term}: the log diverged from the snapshot's history"
                )
        return None

    def _after(self, stored: list[Entry], snapshot_index: int) -> list[Entry]:
        if not self._segments:
            return stored
        skip = snapshot_index + 1 - self._segments[0].first_index
        return stored[skip:] if skip > 0 else stored

    def _recover_segment(
        self,
        path: str,
        name_index: int,
        *,
        expected: int | None,
        last_term: int,
        is_last: bool,
        repairs: list[_Repair],
    ) -> tuple[_Segment, list[Entry]] | None:
        data, data_end, size = self._read_segment(path)
        header = data[:SEGMENT_HEADER_BYTES]
        first_index, problem = decode_segment_header(header)
        if first_index is None:
            if is_last and _torn_while_created(header, data_end, name_index):
                message = f"removed {path}: torn while being created ({problem})"
                repairs.append(_Repair(path, None, message))
                return None
            raise StorageCorruptError(path, 0, problem or "bad segment header")
        if first_index != name_index:
            raise StorageCorruptError(
                path, 0, f"header names first index {first_index}, the file name {name_index}"
            )
        if expected is not None and first_index != expected:
            raise StorageCorruptError(
                path,
                0,
                f"segment starts at index {first_index} but the previous segment ends at "
                f"index {expected - 1} (non-contiguous segments)",
            )
        scan = scan_records(data, first_index, last_term, path)
        if scan.problem is not None and scan.good_end < data_end and len(data) < size:
            # Not just the zeros after the last record: a last record running into the
            # zeros past the partial read, or damage. Either way, the whole file decides.
            data = self._read_whole_segment(path, size)
            scan = scan_records(data, first_index, last_term, path)
        if scan.problem is not None and scan.good_end < data_end:
            # Non-zero bytes that are no record: a torn tail or damage.
            next_index = first_index + len(scan.entries)
            if not is_last:
                raise StorageCorruptError(
                    path, scan.good_end, f"{scan.problem}, in a segment followed by another"
                )
            valid = find_valid_record_after(data, scan.good_end, next_index, path)
            if valid is not None:
                raise StorageCorruptError(
                    path,
                    scan.good_end,
                    f"{scan.problem}, followed by a valid record at byte offset {valid}",
                )
            message = (
                f"torn tail truncated: {path} at byte offset {scan.good_end} ({scan.problem}); "
                f"{data_end - scan.good_end} bytes dropped, the log now ends at index "
                f"{next_index - 1}"
            )
            repairs.append(_Repair(path, scan.good_end, message))
        return _Segment(path, first_index, scan.offsets, scan.good_end), scan.entries

    def _read_segment(self, path: str) -> tuple[bytes, int, int]:
        """(data, data end, file size): the data end is just past the last non-zero
        byte (everything after it is zeros: preallocated space); the data read is the
        file up to the data end plus `_ZERO_TAIL_READ_SLACK_BYTES` (or all of it)."""
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size > SEGMENT_FILE_BYTES_LIMIT:
                raise StorageCorruptError(
                    path, SEGMENT_FILE_BYTES_LIMIT, f"segment file of {size} bytes is too large"
                )
            data_end = nonzero_end(fd, size)
            data = read_at(fd, min(size, data_end + _ZERO_TAIL_READ_SLACK_BYTES), 0)
        finally:
            os.close(fd)
        return data, data_end, size

    def _read_whole_segment(self, path: str, size: int) -> bytes:
        fd = os.open(path, os.O_RDONLY)
        try:
            return read_at(fd, size, 0)
        finally:
            os.close(fd)

    def _repair(self, repair: _Repair) -> str:
        if repair.truncate_to is None:
            os.unlink(repair.path)
            fsync_directory(self._directory_fd)
        else:
            fd = os.open(repair.path, os.O_RDWR)
            try:
                self._cut(fd, repair.truncate_to)
            finally:
                os.close(fd)
        logger.warning("storage recovery: %s", repair.message)
        return repair.message

    # -- writing ------------------------------------------------------------------------------

    def _next_index(self) -> int | None:
        return self._segments[-1].next_index if self._segments else None

    def _make_room(self, first: int) -> None:
        """Truncates the stored log so that the next record appended is entry `first`."""
        next_index = self._next_index()
        if next_index is None or first == next_index:
            return
        log_first = self._segments[0].first_index
        if next_index == log_first:
            # The log is empty (only a segment without records): start over at `first`.
            self._truncate_from(log_first)
            return
        invariant(
            log_first <= first < next_index,
            "write at index %d does not continue the stored log %d..%d",
            first,
            log_first,
            next_index - 1,
        )
        self._truncate_from(first)

    def _append(self, entries: Sequence[Entry], records: list[bytes]) -> None:
        segment = self._segments[-1] if self._segments else None
        chunk: list[bytes] = []
        chunk_bytes = 0
        for entry, record in zip(entries, records, strict=True):
            if segment is None or (
                segment.offsets
                and segment.size + chunk_bytes + len(record) > self._segment_bytes_max
            ):
                if segment is not None:
                    self._flush(segment, chunk)
                    self._seal(segment)
                segment = self._create_segment(entry.index)
                chunk, chunk_bytes = [], 0
            segment.offsets.append(segment.size + chunk_bytes)
            chunk.append(record)
            chunk_bytes += len(record)
        if segment is None:
            raise InvariantError("a write of at least one record chose no segment")
        self._flush(segment, chunk)

    def _flush(self, segment: _Segment, chunk: list[bytes]) -> None:
        if not chunk:
            return
        data = b"".join(chunk)
        if segment.fd is None:
            raise InvariantError(f"{segment.path}: written after it was closed")
        write_all(segment.fd, data, segment.size)
        segment.size += len(data)
        self._dirty[segment.path] = segment

    def _seal(self, segment: _Segment) -> None:
        # The next segment must never reach the disk before this one is complete there.
        if segment.fd is None:
            raise InvariantError(f"{segment.path}: sealed after it was closed")
        os.fdatasync(segment.fd)
        if self._directory_dirty:
            fsync_directory(self._directory_fd)
            self._directory_dirty = False
        self._dirty.pop(segment.path, None)
        self._close_fd(segment)

    def _create_segment(self, first_index: int) -> _Segment:
        path = os.path.join(self.directory, segment_file_name(first_index))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        header = encode_segment_header(first_index)
        segment = _Segment(path, first_index, array("Q"), 0, fd)
        self._segments.append(segment)
        self._directory_dirty = True
        # Allocated before anything is written, durable with the first fdatasync.
        self._preallocate(fd)
        self._flush(segment, [header])
        return segment

    def _preallocate(self, fd: int) -> None:
        """Extends the file to `segment_bytes_max` bytes of allocated zeros (if shorter),
        so that an append is a write into allocated space and its fdatasync need not
        also persist a new file size. Skipped where the file system declines."""
        if self._preallocating and not preallocate(fd, self._segment_bytes_max):
            self._preallocating = False
            logger.info(
                "storage: the file system of %s does not support posix_fallocate; "
                "segment files are not preallocated",
                self.directory,
            )

    def _cut(self, fd: int, offset: int) -> None:
        """Cuts the file at `offset`, durably, leaving only zeros after it: `ftruncate`
        drops the stale bytes, the preallocation brings the (zero) space back, and an
        `fsync` (not `fdatasync`: the file may end up as long as before, and the cut
        blocks must not come back) makes both durable before anything is appended."""
        os.ftruncate(fd, offset)
        self._preallocate(fd)
        os.fsync(fd)

    def _activate(self, segment: _Segment) -> None:
        """Opens the last segment for appends, preallocating it if it is shorter than
        `segment_bytes_max` (e.g. written before preallocation, or by `_cut` where the
        file system declined). Its bytes after `segment.size` are zeros or absent, so
        the extension needs no sync of its own: lost in a crash, the file is just
        shorter again, and an append's `fdatasync` persists the size it needs."""
        fd = self._open_fd(segment)
        if self._preallocating and os.fstat(fd).st_size < self._segment_bytes_max:
            self._preallocate(fd)

    def _truncate_from(self, index: int) -> None:
        """Removes entries `index`.. from disk, durably, before anything is appended."""
        firsts = [segment.first_index for segment in self._segments]
        position = max(bisect.bisect_right(firsts, index) - 1, 0)
        segment = self._segments[position]
        cut = position if index <= segment.first_index else position + 1
        doomed = self._segments[cut:]
        for victim in reversed(doomed):
            self._close_fd(victim)
            self._dirty.pop(victim.path, None)
            os.unlink(victim.path)
        del self._segments[cut:]
        if doomed:
            fsync_directory(self._directory_fd)
            self._directory_dirty = False
        if cut == position + 1:
            keep = index - segment.first_index
            offset = segment.offsets[keep]
            self._cut(self._open_fd(segment), offset)
            del segment.offsets[keep:]
            segment.size = offset
            self._dirty.pop(segment.path, None)
        if self._segments:
            self._activate(self._segments[-1])

    def _compact(self, index: int) -> int:
        tracked = [(segment.first_index, segment.path) for segment in self._segments]
        every = self._covered + tracked
        doomed = 0
        # Segment i holds only entries <= index iff segment i + 1 starts at or before
        # index + 1; the last segment is never deleted.
        while doomed < len(every) - 1 and every[doomed + 1][0] <= index + 1:
            doomed += 1
        freed = 0
        for position in range(doomed):
            if position < len(self._covered):
                path = self._covered[position][1]
            else:
                segment = self._segments[position - len(self._covered)]
                self._close_fd(segment)
                self._dirty.pop(segment.path, None)
                path = segment.path
            # The file's size, preallocated space included: what the disk gets back.
            freed += os.path.getsize(path)
            os.unlink(path)
        if doomed:
            dropped_tracked = max(doomed - len(self._covered), 0)
            del self._covered[:doomed]
            del self._segments[:dropped_tracked]
            self._directory_dirty = True
        return freed

    def _reset(self, first_index: int) -> None:
        # Newest first, each deletion durable before the next: a crash leaves a prefix
        # of the old log, which recovery either reads or resets again, never a log with
        # holes in it.
        victims = [segment.path for segment in self._segments]
        for segment in self._segments:
            self._close_fd(segment)
        victims = [path for _, path in self._covered] + victims
        for path in reversed(victims):
            os.unlink(path)
            fsync_directory(self._directory_fd)
        self._segments.clear()
        self._covered.clear()
        self._dirty.clear()
        self._directory_dirty = False
        self._create_segment(first_index)

    def _reset_on_load(self, first_index: int, why: str) -> str:
        self._reset(first_index)
        segment = self._segments[-1]
        if segment.fd is None:
            raise InvariantError(f"{segment.path}: the new log's segment is closed")
        os.fdatasync(segment.fd)
        fsync_directory(self._directory_fd)
        self._dirty.clear()
        self._directory_dirty = False
        message = f"log reset to start at index {first_index}: {why}"
        logger.warning("storage recovery: %s", message)
        return message

    def _sync(self, *, force_hard_state: bool) -> None:
        for segment in self._dirty.values():
            if segment.fd is None:
                raise InvariantError(f"{segment.path}: synced after it was closed")
            os.fdatasync(segment.fd)
        self._dirty.clear()
        if self._directory_dirty:
            fsync_directory(self._directory_fd)
            self._directory_dirty = False
        # Entries first, then the hard state: a persisted commit index never points past
        # the durable log.
        due = self._hard.due(force=force_hard_state)
        if due is not None:
            data = encode_hard_state(due)
            replace_atomically(self.directory, self._directory_fd, HARD_STATE_FILE, data)
            self._hard.persisted(due)

    # -- file descriptors ---------------------------------------------------------------------

    def _open_fd(self, segment: _Segment) -> int:
        if segment.fd is None:
            segment.fd = os.open(segment.path, os.O_RDWR)
        return segment.fd

    def _close_fd(self, segment: _Segment) -> None:
        if segment.fd is not None:
            os.close(segment.fd)
            segment.fd = None
