"""File-system steps with the fsyncs that make them durable.

POSIX only promises what `fsync` covers: a file's data is durable after `fdatasync` of
the file, its name (creation, rename, unlink) after `fsync` of the directory. Each
helper here says which of the two it does. An fsync error is never retried: after a
failed fsync the kernel may have dropped the dirty pages ("fsyncgate", PostgreSQL 2018),
so the caller treats it as fatal.
"""

from __future__ import annotations

import errno
import os

from phalanx.core.errors import invariant
from phalanx.storage.errors import StorageError

#: What `posix_fallocate` fails with when the file system cannot preallocate (rather
#: than a real failure such as ENOSPC or EIO).
_PREALLOCATE_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS})
#: `nonzero_end` reads this much at a time.
_ZERO_SCAN_CHUNK_BYTES = 1024 * 1024
_ZEROS = bytes(_ZERO_SCAN_CHUNK_BYTES)


def fsync_directory(directory_fd: int) -> None:
    os.fsync(directory_fd)


def write_all(fd: int, data: bytes, offset: int) -> None:
    """Writes `data` at `offset`, looping over short writes."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        invariant(written > 0, "pwrite wrote nothing at offset %d", offset)
        view = view[written:]
        offset += written


def preallocate(fd: int, size: int) -> bool:
    """Allocates the file's blocks up to `size` bytes with `posix_fallocate`, extending
    it with zeros (a larger file is never shortened). Returns False, leaving the file as
    it was, if the file system declines (EOPNOTSUPP, EINVAL, ENOSYS); other errors
    (ENOSPC, EIO) raise. Not synced: the new size and blocks reach the disk with the
    next `fsync` or `fdatasync` of the file."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is None:
        return False
    try:
        fallocate(fd, 0, size)
    except OSError as error:
        if error.errno in _PREALLOCATE_UNSUPPORTED:
            return False
        raise
    return True


def read_at(fd: int, length: int, offset: int) -> bytes:
    """Up to `length` bytes at `offset`, looping over short reads; fewer only at the end
    of the file."""
    parts = []
    while length > 0:
        part = os.pread(fd, length, offset)
        if not part:
            break
        parts.append(part)
        length -= len(part)
        offset += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def nonzero_end(fd: int, size: int) -> int:
    """The offset just past the last non-zero byte among the first `size` bytes of the
    file (0: they are all zero). Reads backwards a chunk at a time, so memory stays
    bounded however long the run of zeros at the end is."""
    end = size
    while end > 0:
        start = max(end - _ZERO_SCAN_CHUNK_BYTES, 0)
        chunk = read_at(fd, end - start, start)
        if chunk != _ZEROS[: len(chunk)]:
            return start + len(chunk.rstrip(b"\0"))
        end = start
    return 0


def read_file(path: str, bytes_max: int) -> bytes:
    """A whole small file, refusing one larger than `bytes_max` rather than reading it."""
    with open(path, "rb") as file:
        data = file.read(bytes_max + 1)
    if len(data) > bytes_max:
        raise StorageError(f"{path} is larger than {bytes_max} bytes; not a phalanx file")
    return data


def replace_atomically(directory: str, directory_fd: int, name: str, data: bytes) -> None:
    """Replaces `name` so that a crash leaves either the old or the new content:
    write a temporary file, fsync it, rename it over `name`, fsync the directory."""
    final = os.path.join(directory, name)
    temporary = final + ".tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, final)
    fsync_directory(directory_fd)


def ensure_directory(directory: str) -> None:
    """Creates `directory` (and parents) if missing, making the new name durable."""
    if os.path.isdir(directory):
        return
    os.makedirs(directory, exist_ok=True)
    parent = os.path.dirname(os.path.abspath(directory))
    parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(parent_fd)
    finally:
        os.close(parent_fd)
