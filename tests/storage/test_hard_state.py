"""Hard state: atomic replacement, the commit interval, and the directory's owner."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.storage.helpers import CLUSTER, entries, flip_byte, hard, open_wal

from phalanx.core.types import HardState
from phalanx.storage import StorageCorruptError, StorageError, codec
from phalanx.storage.wal import HARD_STATE_FILE


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def on_disk(directory: Path) -> HardState:
    path = directory / HARD_STATE_FILE
    if not path.exists():
        return HardState()
    return codec.decode_hard_state(path.read_bytes(), str(path))


def test_commit_alone_is_persisted_at_most_every_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    wal = open_wal(tmp_path, clock=clock, hard_state_commit_interval_s=1.0)
    wal.load()
    wal.write(entries(1, 5), hard(1, 2, 0))
    wal.sync()
    assert on_disk(tmp_path) == hard(1, 2, 0)  # a term/vote change: at once

    clock.now_s += 0.5
    wal.write(entries(6, 1), hard(1, 2, 4))
    wal.sync()
    assert on_disk(tmp_path) == hard(1, 2, 0)  # commit only, interval not over

    clock.now_s += 0.5
    wal.sync()
    assert on_disk(tmp_path) == hard(1, 2, 4)  # due now (a later sync carries it)

    clock.now_s += 0.1
    wal.write([], hard(1, 2, 6))
    wal.sync()
    assert on_disk(tmp_path) == hard(1, 2, 4)
    wal.write([], hard(2, 0, 6))  # a new term: at once, whatever the clock
    wal.sync()
    assert on_disk(tmp_path) == hard(2, 0, 6)

    wal.write([], hard(2, 3, 6))  # a vote: at once
    wal.sync()
    assert on_disk(tmp_path) == hard(2, 3, 6)

    wal.write([], hard(2, 3, 7))
    wal.sync()
    assert on_disk(tmp_path) == hard(2, 3, 6)
    wal.close()  # always on close
    assert on_disk(tmp_path) == hard(2, 3, 7)


def test_nothing_reaches_the_disk_before_sync(tmp_path: Path) -> None:
    wal = open_wal(tmp_path)
    wal.load()
    wal.write([], hard(5, 1, 0))
    assert on_disk(tmp_path) == HardState()
    wal.sync()
    assert on_disk(tmp_path) == hard(5, 1, 0)
    wal.close()


def test_a_leftover_temporary_file_is_ignored(tmp_path: Path) -> None:
    with open_wal(tmp_path) as wal:
        wal.load()
        wal.write(entries(1, 2), hard(4, 2, 1))
    # A crash between writing the temporary file and renaming it over the real one.
    (tmp_path / (HARD_STATE_FILE + ".tmp")).write_bytes(b"half a hard st")
    with open_wal(tmp_path) as wal:
        restored = wal.load()
    assert restored.hard_state == hard(4, 2, 1)
    assert restored.entries == entries(1, 2)
    assert "leftover temporary file" in restored.report[0]
    assert not (tmp_path / (HARD_STATE_FILE + ".tmp")).exists()


def test_replacing_leaves_no_temporary_file(tmp_path: Path) -> None:
    with open_wal(tmp_path) as wal:
        wal.load()
        for term in range(1, 5):
            wal.write([], hard(term))
            wal.sync()
    assert sorted(p.name for p in tmp_path.iterdir()) == [HARD_STATE_FILE, "lock", "meta"]


def test_a_damaged_hard_state_file_refuses_to_start(tmp_path: Path) -> None:
    with open_wal(tmp_path) as wal:
        wal.load()
        wal.write([], hard(4, 2, 1))
    flip_byte(tmp_path / HARD_STATE_FILE, 17)
    with pytest.raises(StorageCorruptError, match=HARD_STATE_FILE), open_wal(tmp_path) as wal:
        wal.load()


def test_another_nodes_directory_is_refused(tmp_path: Path) -> None:
    open_wal(tmp_path).close()
    with pytest.raises(StorageError) as caught:
        open_wal(tmp_path, node_id=2)
    message = str(caught.value)
    assert f"cluster {CLUSTER!r} node 1" in message and f"cluster {CLUSTER!r} node 2" in message
    with pytest.raises(StorageError, match="cluster 'other' node 1"):
        open_wal(tmp_path, cluster_id="other")
    open_wal(tmp_path).close()  # the owner still can


def test_a_log_without_meta_file_is_refused(tmp_path: Path) -> None:
    with open_wal(tmp_path) as wal:
        wal.load()
        wal.write(entries(1, 1), None)
    (tmp_path / "meta").unlink()
    with pytest.raises(StorageError, match="no meta file"):
        open_wal(tmp_path)


def test_a_directory_in_use_is_refused(tmp_path: Path) -> None:
    first = open_wal(tmp_path)
    with pytest.raises(StorageError, match="in use by another storage"):
        open_wal(tmp_path)
    first.close()
    open_wal(tmp_path).close()  # the lock went with the first one
