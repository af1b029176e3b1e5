"""File-system steps with the fsyncs that make them durable.

POSIX only promises what `fsync` covers: a file's data is durable after `fdatasync` of
the file, its name (creation, rename, unlink) after `fsync` of the directory. Each
helper here says which of the two it does. An fsync error is never retried: after a
failed fsync the kernel may have dropped the dirty pages ("fsyncgate", PostgreSQL 2018),
so the caller treats it as fatal.
"""

from __future__ import annotations

import os

from phalanx.storage.errors import StorageError


def fsync_directory(directory_fd: int) -> None:
    os.fsync(directory_fd)


def write_all(fd: int, data: bytes, offset: int) -> None:
    """Writes `data` at `offset`, looping over short writes."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        assert written > 0
        view = view[written:]
        offset += written


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
