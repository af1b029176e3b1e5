"""Small builders shared by the storage tests."""

from __future__ import annotations

import os
from pathlib import Path

from phalanx.core.types import Entry, EntryKind, HardState, Index, NodeId, Term
from phalanx.storage import WalStorage

CLUSTER = "test-cluster"
NODE = 1


def entries(first: int, count: int, term: int = 1, size: int = 16) -> list[Entry]:
    return [
        Entry(Term(term), Index(i), EntryKind.COMMAND, f"{term}/{i}/".encode().ljust(size, b"x"))
        for i in range(first, first + count)
    ]


def hard(term: int, vote: int = 0, commit: int = 0) -> HardState:
    return HardState(Term(term), NodeId(vote), Index(commit))


def open_wal(directory: Path, **kwargs: object) -> WalStorage:
    options: dict[str, object] = {"cluster_id": CLUSTER, "node_id": NODE}
    options.update(kwargs)
    return WalStorage(directory, **options)  # type: ignore[arg-type]


def segment_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(".seg"))


def flip_byte(path: Path, offset: int) -> None:
    # In place: segment files are preallocated, rewriting one would write it all.
    with open(path, "r+b") as file:
        file.seek(offset)
        (byte,) = file.read(1)
        file.seek(offset)
        file.write(bytes([byte ^ 0x5A]))


def cut_file(path: Path, size: int) -> None:
    with open(path, "r+b") as file:
        file.truncate(size)
        os.fsync(file.fileno())
