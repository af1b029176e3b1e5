"""Log compaction, reset and loading after a snapshot (Raft §7), on WalStorage with real
files and on MemoryStorage, its twin."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.storage.helpers import entries, flip_byte, hard, open_wal, segment_files

from phalanx.storage import MemoryStorage, StorageCorruptError, WalStorage
from phalanx.storage.memory import MEMORY_PATH
from phalanx.storage.wal import segment_file_name

#: About five entries of `entries()` per segment, so 50 entries make ten segments.
SEGMENT_BYTES_MAX = 200


def wal(directory: Path) -> WalStorage:
    return open_wal(directory, segment_bytes_max=SEGMENT_BYTES_MAX)


def firsts(directory: Path) -> list[int]:
    return [int(path.name[4:24]) for path in segment_files(directory)]


def written(directory: Path, count: int = 50) -> list[int]:
    """A closed log of entries 1..count; the first index of each segment."""
    with wal(directory) as storage:
        storage.load()
        storage.write(entries(1, count), hard(1, 1, 0))
        storage.sync()
    return firsts(directory)


# -- WalStorage ------------------------------------------------------------------------------


def test_compact_deletes_only_whole_segments_below_the_index(tmp_path: Path) -> None:
    starts = written(tmp_path)
    assert len(starts) >= 8
    index = starts[4] + 1  # inside the fifth segment: it holds index + 1, so it stays
    files = segment_files(tmp_path)
    sizes = {first: path.stat().st_size for first, path in zip(starts, files, strict=True)}
    with wal(tmp_path) as storage:
        assert storage.load().entries == entries(1, 50)
        freed = storage.compact(index)
        assert freed == sum(sizes[first] for first in starts[:4])
        assert firsts(tmp_path) == starts[4:]
        assert storage.compact(index) == 0, "compacting again frees nothing"
        storage.write(entries(51, 5), None)
        storage.sync()
    with wal(tmp_path) as storage:
        restored = storage.load(snapshot_index=index)
    assert restored.entries == entries(index + 1, 55 - index)
    assert restored.report == []


def test_compact_at_a_segment_boundary_keeps_the_segment_holding_the_next_entry(
    tmp_path: Path,
) -> None:
    starts = written(tmp_path)
    with wal(tmp_path) as storage:
        storage.load()
        storage.compact(starts[3] - 1)  # segment 3 holds index + 1
    assert firsts(tmp_path) == starts[3:]


def test_compact_never_deletes_the_active_segment(tmp_path: Path) -> None:
    starts = written(tmp_path)
    with wal(tmp_path) as storage:
        storage.load()
        storage.compact(10_000)
        assert firsts(tmp_path) == starts[-1:]
        storage.write(entries(51, 1), None)
    with wal(tmp_path) as storage:
        assert storage.load(snapshot_index=50).entries == entries(51, 1)


def test_load_without_the_snapshot_after_compaction_is_a_gap(tmp_path: Path) -> None:
    starts = written(tmp_path)
    with wal(tmp_path) as storage:
        storage.load()
        storage.compact(starts[2] - 1)
    for snapshot_index in (0, starts[2] - 2):
        with wal(tmp_path) as storage, pytest.raises(StorageCorruptError) as caught:
            storage.load(snapshot_index=snapshot_index)
        assert caught.value.path.endswith(segment_file_name(starts[2]))
        assert "gap" in caught.value.problem
    with wal(tmp_path) as storage:
        assert storage.load(snapshot_index=starts[2] - 1).entries[0].index == starts[2]


def test_segments_before_the_snapshot_are_not_read_and_compact_deletes_them(
    tmp_path: Path,
) -> None:
    starts = written(tmp_path)
    # Damage in a segment the snapshot covers does not matter: it is not even read.
    flip_byte(segment_files(tmp_path)[1], 30)
    snapshot_index = starts[5] + 1
    with wal(tmp_path) as storage:
        restored = storage.load(snapshot_index=snapshot_index)
        assert restored.entries == entries(snapshot_index + 1, 50 - snapshot_index)
        assert storage.compact(snapshot_index) > 0
    assert firsts(tmp_path) == starts[5:]


def test_reset_then_append_then_reload(tmp_path: Path) -> None:
    written(tmp_path)
    with wal(tmp_path) as storage:
        storage.load()
        storage.reset(101)  # a leader's snapshot at 100 was installed
        assert firsts(tmp_path) == [101]
        storage.write(entries(101, 7, term=3), hard(3, 2, 100))
        storage.sync()
    with wal(tmp_path) as storage:
        restored = storage.load(snapshot_index=100, snapshot_term=3)
    assert restored.entries == entries(101, 7, term=3)
    assert restored.hard_state == hard(3, 2, 100)
    assert firsts(tmp_path)[0] == 101


def test_reset_also_deletes_the_segments_load_did_not_read(tmp_path: Path) -> None:
    starts = written(tmp_path)
    with wal(tmp_path) as storage:
        storage.load(snapshot_index=starts[3] + 1)
        storage.reset(201)
    assert firsts(tmp_path) == [201]


def test_a_reset_log_is_durable_through_close_and_loads_empty(tmp_path: Path) -> None:
    written(tmp_path)
    with wal(tmp_path) as storage:
        storage.load()
        storage.write([], hard(2, 0, 100))
        storage.reset(101)
    with wal(tmp_path) as storage:
        restored = storage.load(snapshot_index=100)
        assert restored.entries == []
        assert restored.hard_state.commit == 100, "the commit index is held by the snapshot"
        storage.write(entries(101, 2), None)
    with wal(tmp_path) as storage:
        assert storage.load(snapshot_index=100).entries == entries(101, 2)


def test_a_reset_log_without_its_snapshot_is_a_gap(tmp_path: Path) -> None:
    written(tmp_path)
    with wal(tmp_path) as storage:
        storage.load()
        storage.reset(101)
    # The snapshot at 100 is damaged; falling back to one at 40 would forget 41..100.
    with wal(tmp_path) as storage, pytest.raises(StorageCorruptError, match=r"41\.\.100"):
        storage.load(snapshot_index=40)


def test_a_log_ending_before_the_snapshot_is_reset_on_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    written(tmp_path, count=30)
    # A crash between storing the leader's snapshot at 80 and the reset.
    with wal(tmp_path) as storage, caplog.at_level(logging.WARNING):
        restored = storage.load(snapshot_index=80)
        assert restored.entries == []
        assert "log reset to start at index 81" in restored.report[0]
        storage.write(entries(81, 3, term=2), None)
    assert "log reset to start at index 81" in caplog.text
    assert firsts(tmp_path) == [81]
    with wal(tmp_path) as storage:
        assert storage.load(snapshot_index=80).entries == entries(81, 3, term=2)


def test_a_log_that_diverges_from_the_snapshot_term_is_reset_on_load(tmp_path: Path) -> None:
    written(tmp_path)  # every entry has term 1
    with wal(tmp_path) as storage:
        restored = storage.load(snapshot_index=20, snapshot_term=2)
        assert restored.entries == [], "entries after a divergent entry 20 are not kept"
        assert "has term 1" in restored.report[0]
    with wal(tmp_path) as storage:
        kept = storage.load(snapshot_index=20, snapshot_term=1)
    assert kept.entries == [], "the reset was durable"
    assert firsts(tmp_path) == [21]


def test_a_matching_snapshot_term_keeps_the_log(tmp_path: Path) -> None:
    written(tmp_path)
    with wal(tmp_path) as storage:
        restored = storage.load(snapshot_index=20, snapshot_term=1)
    assert restored.entries == entries(21, 30)
    assert restored.report == []


def test_commit_beyond_the_snapshot_and_the_log_is_still_refused(tmp_path: Path) -> None:
    with wal(tmp_path) as storage:
        storage.load()
        storage.reset(11)
        storage.write(entries(11, 2), hard(1, 1, 15))
    with wal(tmp_path) as storage, pytest.raises(StorageCorruptError, match="commit index 15"):
        storage.load(snapshot_index=10)


# -- both implementations --------------------------------------------------------------------


class Twin:
    """One storage and a way to restart it (close and reopen, or load after close)."""

    def __init__(self, make: Callable[[], WalStorage | MemoryStorage]) -> None:
        self._make = make
        self.storage = make()

    def restart(self) -> None:
        self.storage.close()
        if isinstance(self.storage, WalStorage):
            self.storage = self._make()


@pytest.fixture(params=["wal", "memory"])
def twin(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Twin]:
    if request.param == "wal":
        made = Twin(lambda: wal(tmp_path))
    else:
        memory = MemoryStorage()
        made = Twin(lambda: memory)
    yield made
    made.storage.close()


def test_parity_load_drops_entries_up_to_the_snapshot(twin: Twin) -> None:
    twin.storage.load()
    twin.storage.write(entries(1, 30), None)
    twin.restart()
    assert twin.storage.load(snapshot_index=12).entries == entries(13, 18)


def test_parity_compact_then_reload(twin: Twin) -> None:
    twin.storage.load()
    twin.storage.write(entries(1, 30), None)
    twin.storage.sync()
    assert twin.storage.compact(20) > 0
    assert twin.storage.compact(0) == 0
    twin.storage.write(entries(31, 2), None)
    twin.restart()
    assert twin.storage.load(snapshot_index=20).entries == entries(21, 12)


def test_parity_compact_keeps_the_last_entry(twin: Twin) -> None:
    twin.storage.load()
    twin.storage.write(entries(1, 30), None)
    twin.storage.compact(1000)
    twin.restart()
    with pytest.raises(StorageCorruptError, match="gap"):
        twin.storage.load(snapshot_index=0)
    twin.restart()
    assert twin.storage.load(snapshot_index=30).entries == []


def test_parity_reset_append_reload(twin: Twin) -> None:
    twin.storage.load()
    twin.storage.write(entries(1, 10), None)
    twin.storage.reset(101)
    twin.storage.write(entries(101, 3, term=2), hard(2, 0, 100))
    twin.storage.sync()
    twin.restart()
    restored = twin.storage.load(snapshot_index=100, snapshot_term=2)
    assert restored.entries == entries(101, 3, term=2)
    assert restored.report == []


def test_parity_gap_after_reset(twin: Twin) -> None:
    twin.storage.load()
    twin.storage.write(entries(1, 10), None)
    twin.storage.reset(101)
    twin.restart()
    with pytest.raises(StorageCorruptError, match="gap") as caught:
        twin.storage.load(snapshot_index=50)
    if isinstance(twin.storage, MemoryStorage):
        assert caught.value.path == MEMORY_PATH


def test_parity_log_before_the_snapshot_is_reset(twin: Twin) -> None:
    twin.storage.load()
    twin.storage.write(entries(1, 10), None)
    twin.restart()
    restored = twin.storage.load(snapshot_index=40)
    assert restored.entries == []
    assert restored.report and "start at index 41" in restored.report[0]
    twin.storage.write(entries(41, 2), None)
    twin.restart()
    assert twin.storage.load(snapshot_index=40).entries == entries(41, 2)


def test_parity_divergent_term_is_reset(twin: Twin) -> None:
    twin.storage.load()
    twin.storage.write(entries(1, 10), None)
    twin.restart()
    restored = twin.storage.load(snapshot_index=5, snapshot_term=9)
    assert restored.entries == []
    assert "has term 1" in restored.report[0]


def test_memory_crash_before_sync_brings_a_reset_log_back() -> None:
    storage = MemoryStorage()
    storage.load()
    storage.write(entries(1, 10), None)
    storage.sync()
    storage.reset(101)
    storage.crash()
    # What a crash of the WAL may leave too; with the snapshot at 100 loaded, the old
    # log ends before it and is reset then.
    assert storage.load().entries == entries(1, 10)
    assert storage.load(snapshot_index=100).entries == []
    storage.crash()
    assert storage.load(snapshot_index=100).entries == [], "the load-time reset is durable"
