"""`SnapshotStore`: checksummed snapshot files beside the write-ahead log.

Theory of operation
-------------------
A snapshot replaces every log entry up to its `SnapshotMeta.index` (Raft §7). Each one
is a single file, named after its meta so that listing the directory orders them::

    <directory>/
      snap-00000000000000001000-00000000000000000003.snap    index 1000, term 3
      snap-00000000000000002000-00000000000000000004.snap    index 2000, term 4 (newest)
      snap-...-....snap.receiving.partial                    an install being received
      snap-...-....snap.writing.partial                      a local snapshot being written

    snapshot file
    +------+---------+----------+-------+------+----------------+---------+----------+
    | PXSN | version | reserved | index | term | content length | content | CRC32C   |
    | 4 B  | u16     | u16      | u64   | u64  | u64            | ...     | u32      |
    +------+---------+----------+-------+------+----------------+---------+----------+
      header, 32 bytes                                                      of header +
                                                                            content

Writing. A writer appends content to a `.partial` file; `finish()` writes the final
length into the header, computes the CRC32C of header and content (reading the content
back, so resumed and fresh writes are checksummed the same way), appends it, fsyncs the
file, renames it to its final name and fsyncs the directory. Only then does the file
count: a crash earlier leaves a `.partial`, which `latest()` never looks at. Retention
follows: all but the `keep` newest valid snapshots are deleted (a damaged one is deleted
too, with a warning).

Resumable receive. `resume(meta)` continues a `.receiving.partial` of the same meta. A
power loss may drop written but unsynced pages and leave zeros inside the file's length,
which a CRC computed afterwards would bless; so a receiving writer checkpoints every
`SNAPSHOT_CHECKPOINT_BYTES`: it fdatasyncs the content and only then records the synced
length in the partial's header length field. `resume()` trusts the content only up to
that length and cuts the rest. Partials of other metas are deleted: the leader has moved
on to a newer snapshot.

Local snapshots and installs use different partial names (`.writing` / `.receiving`),
so a follower can receive an install while a forked child writes its own snapshot, and
each kind only ever deletes its own leftovers. Only one local snapshot is written at a
time: `writer()` deletes other `.writing.partial` files (those of a crashed run).

Reading. `latest()` verifies the newest snapshot's checksum; a damaged one (bad header,
truncated, CRC mismatch) is skipped with a WARNING naming the file and the problem, and
the previous one is used. `read_chunks()` verifies the CRC while streaming and raises
`StorageCorruptError` before yielding the last chunk, so a damaged snapshot is never
handed out whole.

Processes. Everything is plain `os` calls on file descriptors, with no threads and no
locks, so a writer may be created and used in a forked child. Two processes may finish
snapshots at once: retention tolerates files that vanish under it.

Limits. A snapshot's content is at most `SNAPSHOT_CONTENT_BYTES_MAX`; a header claiming
more is corruption, never an allocation.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path

from crc32c import crc32c

from phalanx.core.errors import invariant
from phalanx.core.types import Index, SnapshotMeta, Term
from phalanx.limits import (
    SNAPSHOT_CHECKPOINT_BYTES,
    SNAPSHOT_CHUNK_BYTES_MAX,
    SNAPSHOT_CONTENT_BYTES_MAX,
)
from phalanx.storage.codec import FORMAT_VERSION
from phalanx.storage.errors import StorageCorruptError, StorageError
from phalanx.storage.files import ensure_directory, write_all

logger = logging.getLogger(__name__)

SNAPSHOT_MAGIC = b"PXSN"
#: magic, format version, reserved (0), index, term, content length.
_HEADER = struct.Struct("<4sHHQQQ")
SNAPSHOT_HEADER_BYTES = _HEADER.size
_LENGTH_OFFSET = SNAPSHOT_HEADER_BYTES - 8
_TRAILER = struct.Struct("<I")
SNAPSHOT_TRAILER_BYTES = _TRAILER.size
_VERIFY_CHUNK_BYTES = 1024 * 1024
SNAPSHOT_KEEP_DEFAULT = 2

_SUFFIX = ".snap"
_WRITING_SUFFIX = ".snap.writing.partial"
_RECEIVING_SUFFIX = ".snap.receiving.partial"
_NAME = re.compile(r"snap-(\d{20})-(\d{20})(\.snap(?:\.writing\.partial|\.receiving\.partial)?)")


def snapshot_file_name(meta: SnapshotMeta, suffix: str = _SUFFIX) -> str:
    return f"snap-{meta.index:020d}-{meta.term:020d}{suffix}"


def _encode_header(meta: SnapshotMeta, content_bytes: int) -> bytes:
    invariant(
        0 <= content_bytes <= SNAPSHOT_CONTENT_BYTES_MAX, "snapshot of %d bytes", content_bytes
    )
    return _HEADER.pack(SNAPSHOT_MAGIC, FORMAT_VERSION, 0, meta.index, meta.term, content_bytes)


def _decode_header(data: bytes, path: str) -> tuple[SnapshotMeta, int]:
    """The meta and content length a header names; any problem is corruption."""
    if len(data) < SNAPSHOT_HEADER_BYTES:
        raise StorageCorruptError(
            path, 0, f"snapshot header incomplete ({len(data)} of {SNAPSHOT_HEADER_BYTES} bytes)"
        )
    magic, version, _, index, term, length = _HEADER.unpack_from(data)
    if magic != SNAPSHOT_MAGIC:
        raise StorageCorruptError(
            path, 0, f"bad snapshot magic {magic!r} (expected {SNAPSHOT_MAGIC!r})"
        )
    if version != FORMAT_VERSION:
        raise StorageCorruptError(
            path,
            4,
            f"unsupported snapshot format version {version} (this build reads {FORMAT_VERSION})",
        )
    if length > SNAPSHOT_CONTENT_BYTES_MAX:
        raise StorageCorruptError(
            path,
            _LENGTH_OFFSET,
            f"header claims {length} bytes of content, above the maximum of "
            f"{SNAPSHOT_CONTENT_BYTES_MAX}",
        )
    return SnapshotMeta(Index(index), Term(term)), int(length)


def _read_exactly(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    while len(data) < size:
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data


def _check_file(fd: int, path: str) -> tuple[SnapshotMeta, int]:
    """Header checks that need no content read: magic, version, bound, file size, name."""
    meta, length = _decode_header(_read_exactly(fd, SNAPSHOT_HEADER_BYTES, 0), path)
    expected = SNAPSHOT_HEADER_BYTES + length + SNAPSHOT_TRAILER_BYTES
    size = os.fstat(fd).st_size
    if size != expected:
        raise StorageCorruptError(
            path,
            min(size, expected),
            f"file holds {size} bytes, its header promises {expected} (truncated or extended)",
        )
    match = _NAME.fullmatch(os.path.basename(path))
    if match and (int(match.group(1)), int(match.group(2))) != (meta.index, meta.term):
        raise StorageCorruptError(
            path, 8, f"header names index {meta.index} term {meta.term}, the file name differs"
        )
    return meta, length


def _chunks(fd: int, path: str, start: int, end: int, chunk_bytes: int) -> Iterator[bytes]:
    offset = start
    while offset < end:
        data = _read_exactly(fd, min(chunk_bytes, end - offset), offset)
        if not data:
            raise StorageCorruptError(path, offset, "file shrank while being read")
        yield data
        offset += len(data)


def _checksum(fd: int, path: str, end: int) -> int:
    value = 0
    for data in _chunks(fd, path, 0, end, _VERIFY_CHUNK_BYTES):
        value = crc32c(data, value)
    return value


def _check_trailer(fd: int, path: str, length: int, computed: int) -> None:
    end = SNAPSHOT_HEADER_BYTES + length
    (stored,) = _TRAILER.unpack(_read_exactly(fd, SNAPSHOT_TRAILER_BYTES, end))
    if stored != computed:
        raise StorageCorruptError(
            path, end, f"snapshot CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
        )


def _verify(path: str) -> SnapshotMeta:
    """The meta of a complete, undamaged snapshot file; raises on any damage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        meta, length = _check_file(fd, path)
        end = SNAPSHOT_HEADER_BYTES + length
        _check_trailer(fd, path, length, _checksum(fd, path, end))
        return meta
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    # Another process (a forked writer, or the server) may have removed it already.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class SnapshotWriter:
    """Content of one snapshot being written; `finish()` makes it count, `abort()` not.

    Create it with `SnapshotStore.writer` or `SnapshotStore.resume`."""

    def __init__(
        self,
        store: SnapshotStore,
        meta: SnapshotMeta,
        partial: str,
        fd: int,
        offset: int,
        *,
        checkpoints: bool,
    ) -> None:
        self.meta = meta
        self.partial_path = Path(partial)
        self._store = store
        self._fd: int | None = fd
        self._offset = offset
        self._checkpoints = checkpoints
        self._checkpointed = offset

    @property
    def offset(self) -> int:
        """Bytes of content written so far (where the next chunk goes)."""
        return self._offset

    def write(self, chunk: bytes) -> None:
        fd = self._open_fd()
        if self._offset + len(chunk) > SNAPSHOT_CONTENT_BYTES_MAX:
            raise StorageError(
                f"snapshot {self.partial_path} would exceed {SNAPSHOT_CONTENT_BYTES_MAX} bytes "
                "of content (SNAPSHOT_CONTENT_BYTES_MAX)"
            )
        with self._store._failing("write snapshot", str(self.partial_path)):
            write_all(fd, chunk, SNAPSHOT_HEADER_BYTES + self._offset)
            self._offset += len(chunk)
            if self._checkpoints and self._offset - self._checkpointed >= SNAPSHOT_CHECKPOINT_BYTES:
                self._checkpoint(fd)

    def finish(self) -> Path:
        """Seals the snapshot durably under its final name, then applies retention."""
        fd = self._open_fd()
        final = os.path.join(self._store.directory, snapshot_file_name(self.meta))
        with self._store._failing("finish snapshot", str(self.partial_path)):
            write_all(fd, _encode_header(self.meta, self._offset), 0)
            end = SNAPSHOT_HEADER_BYTES + self._offset
            write_all(fd, _TRAILER.pack(_checksum(fd, str(self.partial_path), end)), end)
            os.ftruncate(fd, end + SNAPSHOT_TRAILER_BYTES)
            os.fsync(fd)
            os.close(fd)
            self._fd = None
            os.replace(self.partial_path, final)
            self._store._fsync_directory()
        self._store._retain(newest_written=final)
        return Path(final)

    def abort(self) -> None:
        """Deletes the partial file. Safe to call more than once."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        _unlink_quietly(str(self.partial_path))

    def close(self) -> None:
        """Releases the file but keeps the partial, for `resume()` to continue."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open_fd(self) -> int:
        if self._fd is None:
            raise StorageError(f"snapshot writer for {self.partial_path} is finished or aborted")
        return self._fd

    def _checkpoint(self, fd: int) -> None:
        # Content first, then the length that vouches for it (see "Resumable receive").
        os.fdatasync(fd)
        if self._checkpointed == 0:
            self._store._fsync_directory()  # the partial's name survives a power loss
        write_all(fd, struct.pack("<Q", self._offset), _LENGTH_OFFSET)
        self._checkpointed = self._offset


class SnapshotStore:
    """Snapshot files in `directory`; keeps the `keep` newest valid ones.

    See the module docstring for the format, the durability rules and processes."""

    def __init__(
        self, directory: str | os.PathLike[str], *, keep: int = SNAPSHOT_KEEP_DEFAULT
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep={keep}: at least one snapshot must be kept")
        self.directory = os.path.abspath(os.fspath(directory))
        self.keep = keep
        with self._failing("open snapshot directory", self.directory):
            ensure_directory(self.directory)

    # -- writing ------------------------------------------------------------------------------

    def writer(self, meta: SnapshotMeta) -> SnapshotWriter:
        """A writer for a new snapshot at `meta`, starting from empty content."""
        self._remove_partials(_WRITING_SUFFIX, except_meta=None)
        return self._create(meta, _WRITING_SUFFIX, checkpoints=False)

    def resume(self, meta: SnapshotMeta) -> SnapshotWriter:
        """A writer continuing the received partial snapshot of `meta` at its durable
        offset (`writer.offset`), or starting a new one. Other received partials go."""
        self._remove_partials(_RECEIVING_SUFFIX, except_meta=meta)
        partial = os.path.join(self.directory, snapshot_file_name(meta, _RECEIVING_SUFFIX))
        with self._failing("resume snapshot", partial):
            if not os.path.exists(partial):
                return self._create(meta, _RECEIVING_SUFFIX, checkpoints=True)
            fd = os.open(partial, os.O_RDWR)
            try:
                offset = self._reopen(fd, partial, meta)
            except BaseException:
                os.close(fd)
                raise
        if offset is None:
            os.close(fd)
            return self._create(meta, _RECEIVING_SUFFIX, checkpoints=True)
        return SnapshotWriter(self, meta, partial, fd, offset, checkpoints=True)

    # -- reading ------------------------------------------------------------------------------

    def latest(self) -> tuple[SnapshotMeta, Path] | None:
        """The newest snapshot whose checksum verifies; damaged ones are skipped."""
        for _, path in self._finals():
            try:
                return _verify(path), Path(path)
            except FileNotFoundError:
                continue  # deleted by a concurrent retention
            except StorageCorruptError as error:
                logger.warning(
                    "skipping damaged snapshot %s (%s); trying an older one", path, error.problem
                )
        return None

    def all(self) -> list[tuple[SnapshotMeta, Path]]:
        """Every complete snapshot whose checksum verifies, newest first."""
        found = []
        for _, path in self._finals():
            try:
                found.append((_verify(path), Path(path)))
            except (FileNotFoundError, StorageCorruptError):
                continue
        return found

    def content_length(self, path: str | os.PathLike[str]) -> int:
        name = os.fspath(path)
        with self._failing("read snapshot", name):
            fd = os.open(name, os.O_RDONLY)
            try:
                return _check_file(fd, name)[1]
            finally:
                os.close(fd)

    def read_content(self, path: str | os.PathLike[str]) -> bytes:
        """The whole content, checksum verified (`StorageCorruptError` on damage)."""
        return b"".join(chunk for _, chunk in self.read_chunks(path, _VERIFY_CHUNK_BYTES * 16))

    def read_chunks(
        self, path: str | os.PathLike[str], chunk_bytes: int
    ) -> Iterator[tuple[int, bytes]]:
        """(content offset, chunk) pairs; the CRC is checked before the last chunk is
        yielded, so a damaged snapshot raises instead of being handed out whole."""
        if not 1 <= chunk_bytes <= SNAPSHOT_CHUNK_BYTES_MAX:
            raise ValueError(f"chunk_bytes={chunk_bytes} outside 1..{SNAPSHOT_CHUNK_BYTES_MAX}")
        name = os.fspath(path)
        with self._failing("read snapshot", name):
            fd = os.open(name, os.O_RDONLY)
        try:
            _, length = _check_file(fd, name)
            end = SNAPSHOT_HEADER_BYTES + length
            value = crc32c(_read_exactly(fd, SNAPSHOT_HEADER_BYTES, 0))
            offset = 0
            for chunk in _chunks(fd, name, SNAPSHOT_HEADER_BYTES, end, chunk_bytes):
                value = crc32c(chunk, value)
                if offset + len(chunk) == length:
                    _check_trailer(fd, name, length, value)
                yield offset, chunk
                offset += len(chunk)
            if length == 0:
                _check_trailer(fd, name, length, value)
        finally:
            os.close(fd)

    # -- used by SnapshotWriter ---------------------------------------------------------------

    def _failing(self, operation: str, path: str) -> _Translating:
        return _Translating(operation, path)

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _retain(self, *, newest_written: str) -> None:
        """Deletes all but the `keep` newest valid snapshots (damaged ones included)."""
        kept = 0
        removed = False
        for _, path in self._finals():
            if kept < self.keep:
                try:
                    if path != newest_written:  # just written and checksummed
                        _verify(path)
                    kept += 1
                    continue
                except FileNotFoundError:
                    continue
                except StorageCorruptError as error:
                    logger.warning("deleting damaged snapshot %s (%s)", path, error.problem)
            _unlink_quietly(path)
            removed = True
        if removed:
            self._fsync_directory()

    # -- files --------------------------------------------------------------------------------

    def _finals(self) -> list[tuple[SnapshotMeta, str]]:
        """Complete snapshot files by name, newest first."""
        found = []
        for name in os.listdir(self.directory):
            match = _NAME.fullmatch(name)
            if match and match.group(3) == _SUFFIX:
                meta = SnapshotMeta(Index(int(match.group(1))), Term(int(match.group(2))))
                found.append((meta, os.path.join(self.directory, name)))
        found.sort(key=lambda pair: (pair[0].index, pair[0].term), reverse=True)
        return found

    def _remove_partials(self, suffix: str, except_meta: SnapshotMeta | None) -> None:
        for name in os.listdir(self.directory):
            match = _NAME.fullmatch(name)
            if not match or match.group(3) != suffix:
                continue
            meta = SnapshotMeta(Index(int(match.group(1))), Term(int(match.group(2))))
            if meta != except_meta:
                _unlink_quietly(os.path.join(self.directory, name))

    def _create(self, meta: SnapshotMeta, suffix: str, *, checkpoints: bool) -> SnapshotWriter:
        invariant(meta.index >= 1, "a snapshot covers at least entry 1, not %d", meta.index)
        partial = os.path.join(self.directory, snapshot_file_name(meta, suffix))
        with self._failing("create snapshot", partial):
            fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                write_all(fd, _encode_header(meta, 0), 0)
            except BaseException:
                os.close(fd)
                raise
        return SnapshotWriter(self, meta, partial, fd, 0, checkpoints=checkpoints)

    def _reopen(self, fd: int, partial: str, meta: SnapshotMeta) -> int | None:
        """The durable content offset of an existing partial, cut to it; None if the
        partial cannot be continued (it is then started afresh, with a warning)."""
        try:
            found, durable = _decode_header(_read_exactly(fd, SNAPSHOT_HEADER_BYTES, 0), partial)
            if found != meta:
                raise StorageCorruptError(partial, 8, f"header names {found}, expected {meta}")
            size = os.fstat(fd).st_size
            if SNAPSHOT_HEADER_BYTES + durable > size:
                raise StorageCorruptError(
                    partial, size, f"header vouches for {durable} bytes, the file is shorter"
                )
        except StorageCorruptError as error:
            logger.warning("restarting snapshot receive: %s", error)
            return None
        os.ftruncate(fd, SNAPSHOT_HEADER_BYTES + durable)
        return durable


class _Translating:
    """Turns an `OSError` into a `StorageError` naming the operation and file."""

    def __init__(self, operation: str, path: str) -> None:
        self.operation = operation
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):
            raise StorageError(f"{self.operation} failed for {self.path}: {error}") from error
