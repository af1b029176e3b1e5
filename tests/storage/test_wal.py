"""WalStorage on real files with real fsync: format, truncation, rollover, restart."""

from __future__ import annotations

import concurrent.futures
import errno
import os
import re
from pathlib import Path

import pytest
from tests.storage.helpers import entries, hard, open_wal, segment_files

from phalanx.core.errors import ConfigError, InvariantError
from phalanx.core.types import HardState
from phalanx.storage import MemoryStorage, StorageError, codec
from phalanx.storage.wal import SEGMENT_BYTES_MAX_DEFAULT, segment_file_name


def test_empty_directory_is_created_and_loads_empty(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    with open_wal(directory) as wal:
        restored = wal.load()
    assert restored.entries == []
    assert restored.hard_state == HardState()
    assert restored.report == []
    assert (directory / "meta").exists()


def test_round_trip(tmp_path: Path) -> None:
    log = entries(1, 100, term=3, size=100)
    with open_wal(tmp_path) as wal:
        wal.load()
        wal.write(log[:40], hard(3, 2, 0))
        wal.sync()
        wal.write(log[40:], hard(3, 2, 90))
        wal.sync()
    with open_wal(tmp_path) as wal:
        restored = wal.load()
    assert restored.entries == log
    assert restored.hard_state == hard(3, 2, 90)
    assert restored.report == []
    assert [p.name for p in segment_files(tmp_path)] == [segment_file_name(1)]


def test_segment_header_and_record_layout(tmp_path: Path) -> None:
    log = entries(7, 2)
    with open_wal(tmp_path) as wal:
        wal.load()
        wal.write(log, None)
    data = (tmp_path / "wal-00000000000000000007.seg").read_bytes()
    assert data[:4] == b"PXWL"
    assert codec.decode_segment_header(data[: codec.SEGMENT_HEADER_BYTES]) == (7, None)
    first = codec.read_record(data, codec.SEGMENT_HEADER_BYTES, "x")
    assert first.entry == log[0]
    assert data[codec.SEGMENT_HEADER_BYTES + 8 : codec.SEGMENT_HEADER_BYTES + 9] == (
        codec.PAYLOAD_FIRST_BYTE
    )
    end = codec.SEGMENT_HEADER_BYTES + sum(len(codec.encode_record(e)) for e in log)
    # Preallocated: the file has the maximum segment size, zeros after the last record.
    assert len(data) == SEGMENT_BYTES_MAX_DEFAULT
    assert data[end:] == bytes(len(data) - end)


def test_truncate_and_append_in_the_middle_of_a_segment(tmp_path: Path) -> None:
    with open_wal(tmp_path) as wal:
        wal.load()
        wal.write(entries(1, 20, term=1), hard(1))
        wal.sync()
        replacement = entries(11, 3, term=2)
        wal.write(replacement, hard(2))
        wal.sync()
        wal.write(entries(14, 2, term=2), None)
        wal.sync()
    expected = entries(1, 10, term=1) + replacement + entries(14, 2, term=2)
    with open_wal(tmp_path) as wal:
        restored = wal.load()
    assert restored.entries == expected
    assert restored.hard_state == hard(2)
    assert restored.report == []


def test_truncate_across_segments(tmp_path: Path) -> None:
    with open_wal(tmp_path, segment_bytes_max=1024) as wal:
        wal.load()
        wal.write(entries(1, 100, term=1, size=40), hard(1))
        wal.sync()
        files = segment_files(tmp_path)
        assert len(files) > 5
        # Cut in the middle of the second segment: every later segment goes.
        second_first = int(re.findall(r"\d{20}", files[1].name)[0])
        cut = second_first + 2
        wal.write(entries(cut, 3, term=2, size=40), hard(2))
        wal.sync()
        assert len(segment_files(tmp_path)) == 2
    expected = entries(1, cut - 1, term=1, size=40) + entries(cut, 3, term=2, size=40)
    with open_wal(tmp_path, segment_bytes_max=1024) as wal:
        assert wal.load().entries == expected


def test_truncate_at_a_segment_boundary_and_to_the_very_first_entry(tmp_path: Path) -> None:
    with open_wal(tmp_path, segment_bytes_max=1024) as wal:
        wal.load()
        wal.write(entries(1, 60, term=1, size=40), hard(1))
        wal.sync()
        files = segment_files(tmp_path)
        third_first = int(re.findall(r"\d{20}", files[2].name)[0])
        wal.write(entries(third_first, 2, term=2, size=40), hard(2))
        wal.sync()
    expected = entries(1, third_first - 1, term=1, size=40) + entries(third_first, 2, 2, 40)
    with open_wal(tmp_path, segment_bytes_max=1024) as wal:
        assert wal.load().entries == expected
        wal.write(entries(1, 5, term=3), hard(3))
    with open_wal(tmp_path, segment_bytes_max=1024) as wal:
        assert wal.load().entries == entries(1, 5, term=3)
    assert [p.name for p in segment_files(tmp_path)] == [segment_file_name(1)]


def test_rollover_with_small_segments(tmp_path: Path) -> None:
    log = entries(1, 200, term=1, size=50)
    record_bytes = len(codec.encode_record(log[0]))
    segment_bytes_max = 1000
    with open_wal(tmp_path, segment_bytes_max=segment_bytes_max) as wal:
        wal.load()
        for start in range(0, 200, 17):
            wal.write(log[start : start + 17], None)
            wal.sync()
    files = segment_files(tmp_path)
    per_segment = (segment_bytes_max - codec.SEGMENT_HEADER_BYTES) // record_bytes
    assert len(files) == -(-200 // per_segment)
    for position, path in enumerate(files):
        assert path.name == segment_file_name(1 + position * per_segment)
        assert path.stat().st_size <= segment_bytes_max
    with open_wal(tmp_path, segment_bytes_max=segment_bytes_max) as wal:
        assert wal.load().entries == log


def test_a_record_larger_than_a_segment_gets_a_segment_of_its_own(tmp_path: Path) -> None:
    log = entries(1, 1, size=10) + entries(2, 1, size=5000) + entries(3, 1, size=10)
    with open_wal(tmp_path, segment_bytes_max=1024) as wal:
        wal.load()
        wal.write(log, None)
    assert len(segment_files(tmp_path)) == 3
    with open_wal(tmp_path, segment_bytes_max=1024) as wal:
        assert wal.load().entries == log


def test_restart_reads_back_exactly_after_many_batches(tmp_path: Path) -> None:
    model = MemoryStorage()
    model.load()
    with open_wal(tmp_path, segment_bytes_max=4096) as wal:
        wal.load()
        index = 1
        for batch in range(50):
            term = 1 + batch // 10
            start = max(1, index - (batch % 3))  # overlap: a truncation now and then
            chunk = entries(start, 1 + batch % 7, term=term, size=batch * 3)
            wal.write(chunk, hard(term, 1, start))
            model.write(chunk, hard(term, 1, start))
            wal.sync()
            index = chunk[-1].index + 1
    model.close()
    with open_wal(tmp_path, segment_bytes_max=4096) as wal:
        restored = wal.load()
    assert restored.entries == model.load().entries
    assert restored.hard_state == model.load().hard_state


def test_an_oversized_entry_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codec, "RECORD_PAYLOAD_BYTES_MAX", 100)
    with open_wal(tmp_path) as wal:
        wal.load()
        with pytest.raises(StorageError, match="entry 2 encodes to"):
            wal.write(entries(1, 1) + entries(2, 1, size=200), None)
        wal.write(entries(1, 1), None)
    with open_wal(tmp_path) as wal:
        assert wal.load().entries == entries(1, 1)


def test_invalid_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="segment_bytes_max"):
        open_wal(tmp_path, segment_bytes_max=10)
    with pytest.raises(ConfigError, match="node_id"):
        open_wal(tmp_path, node_id=0)


def test_sync_on_a_worker_thread_while_the_owner_waits(tmp_path: Path) -> None:
    # Not what the node does (it syncs on its event-loop thread), but the contract allows
    # it: write batch n, sync it in a worker, write n+1 only after that sync returned.
    with open_wal(tmp_path) as wal, concurrent.futures.ThreadPoolExecutor(1) as pool:
        wal.load()
        for batch in range(20):
            wal.write(entries(1 + batch * 10, 10, term=1), hard(1, 1, batch * 10))
            pool.submit(wal.sync).result()
    with open_wal(tmp_path) as wal:
        assert wal.load().entries == entries(1, 200, term=1)


def test_overlapping_calls_fail_loudly(tmp_path: Path) -> None:
    with open_wal(tmp_path) as wal:
        wal.load()
        wal._busy.acquire()  # stands in for a sync() still running on another thread
        try:
            with pytest.raises(InvariantError, match="two threads"):
                wal.write(entries(1, 1), None)
        finally:
            wal._busy.release()


def test_closed_storage_refuses_work(tmp_path: Path) -> None:
    wal = open_wal(tmp_path)
    wal.load()
    wal.close()
    wal.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        wal.write(entries(1, 1), None)


def test_an_fsync_failure_makes_the_storage_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = open_wal(tmp_path)
    wal.load()
    wal.write(entries(1, 3), hard(1))

    def failing_fdatasync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fdatasync", failing_fdatasync)
        with pytest.raises(StorageError, match=r"sync failed .* Input/output error"):
            wal.sync()
    # Never retried: after a failed fsync the dirty pages may be gone.
    with pytest.raises(StorageError, match="failed earlier"):
        wal.sync()
    with pytest.raises(StorageError, match="failed earlier"):
        wal.write(entries(4, 1), None)
    wal.close()
    with open_wal(tmp_path) as reopened:
        assert reopened.load().entries == entries(1, 3)  # the page cache still had them
