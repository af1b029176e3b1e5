"""Durable storage of a node's Raft log and hard state, and its in-memory twin.

    LogStorage        the interface (load / write / sync / close)
    ├── WalStorage    segment files with CRC32C records, group-commit friendly
    └── MemoryStorage the twin for tests and the simulator (crash() loses unsynced data)
    SnapshotStore     checksummed snapshot files; SnapshotWriter writes (or resumes) one

The file format, the recovery rules and the threading contract are in `wal.py`, the
snapshot format and its durability rules in `snapshots.py`.
"""

from typing import TYPE_CHECKING

from phalanx.limits import (
    RECORD_PAYLOAD_BYTES_MAX,
    SEGMENT_BYTES_MAX_DEFAULT,
    SNAPSHOT_CONTENT_BYTES_MAX,
)
from phalanx.storage.base import LogStorage, Restored
from phalanx.storage.errors import StorageCorruptError, StorageError
from phalanx.storage.memory import MemoryStorage
from phalanx.storage.snapshots import SnapshotStore, SnapshotWriter
from phalanx.storage.wal import WalStorage

__all__ = [
    "RECORD_PAYLOAD_BYTES_MAX",
    "SEGMENT_BYTES_MAX_DEFAULT",
    "SNAPSHOT_CONTENT_BYTES_MAX",
    "LogStorage",
    "MemoryStorage",
    "Restored",
    "SnapshotStore",
    "SnapshotWriter",
    "StorageCorruptError",
    "StorageError",
    "WalStorage",
]

if TYPE_CHECKING:  # both implementations satisfy the interface, checked by mypy

    def _conforms(wal: WalStorage, memory: MemoryStorage) -> tuple[LogStorage, LogStorage]:
        return wal, memory
