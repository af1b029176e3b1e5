"""Preallocated segment files: a new segment is created at `segment_bytes_max` bytes of
zeros, appends go to the logical end of the last record, the zeros after it are clean
space (not a torn tail), cuts leave zeros behind, and logs written before preallocation
still load."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

import pytest
from tests.storage.helpers import entries, hard, open_wal, segment_files

from phalanx.core.types import Entry, EntryKind, Index, Term
from phalanx.storage import StorageCorruptError, StorageError, codec
from phalanx.storage.wal import SEGMENT_BYTES_MAX_DEFAULT, segment_file_name

#: Small preallocated files for the tests that copy or rewrite them.
SMALL = 8192


def record_bytes(log: list[Entry]) -> int:
    return sum(len(codec.encode_record(entry)) for entry in log)


def logical_end(log: list[Entry]) -> int:
    """Where a segment holding exactly `log` ends its last record."""
    return codec.SEGMENT_HEADER_BYTES + record_bytes(log)


def layout(log: list[Entry]) -> bytes:
    """The bytes of a segment holding exactly `log`, up to its last record."""
    first = log[0].index
    return codec.encode_segment_header(first) + b"".join(codec.encode_record(e) for e in log)


def preallocation_supported(directory: Path) -> bool:
    probe = directory / "fallocate-probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, 4096)
    except OSError as error:
        if error.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return False
        raise
    finally:
        os.close(fd)
        probe.unlink()
    return True


def write_log(directory: Path, log: list[Entry], **kwargs: object) -> None:
    with open_wal(directory, **kwargs) as wal:
        wal.load()
        wal.write(log, hard(log[-1].term, 1, 0))
        wal.sync()


def load(directory: Path, snapshot_index: int = 0, **kwargs: object):  # type: ignore[no-untyped-def]
    with open_wal(directory, **kwargs) as wal:
        return wal.load(snapshot_index)


def write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(data)


def declining_fallocate(fd: int, offset: int, length: int) -> None:
    """`posix_fallocate` of a file system that cannot preallocate."""
    raise OSError(errno.EOPNOTSUPP, "Operation not supported")


# -- writing ---------------------------------------------------------------------------------


def test_a_new_segment_file_has_the_maximum_size_after_the_first_write(tmp_path: Path) -> None:
    log = entries(1, 3)
    with open_wal(tmp_path) as wal:
        wal.load()
        wal.write(log, None)
        (path,) = segment_files(tmp_path)
        stat = path.stat()
        assert stat.st_size == SEGMENT_BYTES_MAX_DEFAULT
        if preallocation_supported(tmp_path):
            # Allocated, not a sparse file grown with ftruncate.
            assert stat.st_blocks * 512 >= SEGMENT_BYTES_MAX_DEFAULT
    with open(path, "rb") as file:
        head = file.read(logical_end(log) + 4096)
    assert head == layout(log) + bytes(4096)


def test_write_sync_close_reopen_round_trips(tmp_path: Path) -> None:
    log = entries(1, 300, term=2, size=100)
    with open_wal(tmp_path) as wal:
        wal.load()
        for start in range(0, 300, 37):
            wal.write(log[start : start + 37], hard(2, 1, start))
            wal.sync()
    with open_wal(tmp_path) as wal:
        restored = wal.load()
    assert restored.entries == log
    assert restored.hard_state == hard(2, 1, 296)
    assert restored.report == []
    assert [p.stat().st_size for p in segment_files(tmp_path)] == [SEGMENT_BYTES_MAX_DEFAULT]


def test_appends_after_reopen_go_right_after_the_last_record(tmp_path: Path) -> None:
    log = entries(1, 15, size=40)
    write_log(tmp_path, log[:10], segment_bytes_max=SMALL)
    with open_wal(tmp_path, segment_bytes_max=SMALL) as wal:
        assert wal.load().entries == log[:10]
        wal.write(log[10:], None)
        wal.sync()
    (path,) = segment_files(tmp_path)
    data = path.read_bytes()
    assert len(data) == SMALL, "appended inside the preallocated file, not after it"
    end = logical_end(log)
    assert data[:end] == layout(log)
    assert data[end:] == bytes(SMALL - end)
    restored = load(tmp_path, segment_bytes_max=SMALL)
    assert restored.entries == log
    assert restored.report == []


def test_reset_creates_a_preallocated_segment(tmp_path: Path) -> None:
    write_log(tmp_path, entries(1, 20), segment_bytes_max=SMALL)
    with open_wal(tmp_path, segment_bytes_max=SMALL) as wal:
        wal.load()
        wal.reset(101)
        wal.write(entries(101, 2, term=2), hard(2, 0, 100))
    (path,) = segment_files(tmp_path)
    assert path.name == segment_file_name(101)
    assert path.stat().st_size == SMALL
    restored = load(tmp_path, segment_bytes_max=SMALL, snapshot_index=100)
    assert restored.entries == entries(101, 2, term=2)
    assert restored.report == []


# -- rollover --------------------------------------------------------------------------------


def test_rollover_to_the_next_segment_with_preallocation(tmp_path: Path) -> None:
    segment_bytes_max = 1024
    log = entries(1, 100, size=40)
    with open_wal(tmp_path, segment_bytes_max=segment_bytes_max) as wal:
        wal.load()
        for start in range(0, 100, 9):
            wal.write(log[start : start + 9], None)
            wal.sync()
    files = segment_files(tmp_path)
    assert len(files) > 5
    record = len(codec.encode_record(log[0]))
    per_segment = (segment_bytes_max - codec.SEGMENT_HEADER_BYTES) // record
    for position, path in enumerate(files):
        first = 1 + position * per_segment
        assert path.name == segment_file_name(first)
        data = path.read_bytes()
        assert len(data) == segment_bytes_max
        held = log[first - 1 : first - 1 + per_segment]
        end = logical_end(held)
        assert data[:end] == layout(held)
        assert not any(data[end:]), "only zeros after the last record"
    restored = load(tmp_path, segment_bytes_max=segment_bytes_max)
    assert restored.entries == log
    assert restored.report == []


def test_a_record_larger_than_a_segment_still_gets_a_segment_of_its_own(tmp_path: Path) -> None:
    log = entries(1, 1, size=10) + entries(2, 1, size=5000) + entries(3, 2, size=10)
    with open_wal(tmp_path, segment_bytes_max=1024) as wal:
        wal.load()
        wal.write(log[:3], None)
        wal.sync()
        wal.write(log[3:], None)
    files = segment_files(tmp_path)
    assert [p.name for p in files] == [segment_file_name(i) for i in (1, 2, 3)]
    # Preallocation is a minimum: the big record's segment is exactly as long as it.
    assert files[1].stat().st_size == logical_end(log[1:2]) > 1024
    assert [files[0].stat().st_size, files[2].stat().st_size] == [1024, 1024]
    restored = load(tmp_path, segment_bytes_max=1024)
    assert restored.entries == log
    assert restored.report == []


# -- recovery: the zero region ---------------------------------------------------------------


@pytest.mark.parametrize("where", ["adjacent", "after-zeros", "partial-record"])
def test_a_torn_tail_in_the_zero_area_is_reported_and_cut(
    tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    log = entries(1, 10, size=30)
    write_log(tmp_path, log, segment_bytes_max=SMALL)
    (path,) = segment_files(tmp_path)
    end = logical_end(log)
    garbage = {
        "adjacent": (end, b"\x13\x37garbage"),
        "after-zeros": (end + 500, b"\xff" * 3),
        "partial-record": (end, codec.encode_record(entries(11, 1, size=30)[0])[:20]),
    }[where]
    write_at(path, *garbage)
    with caplog.at_level(logging.WARNING, logger="phalanx.storage.wal"):
        restored = load(tmp_path, segment_bytes_max=SMALL)
    assert restored.entries == log
    (line,) = restored.report
    assert "torn tail truncated" in line
    assert str(path) in line and f"byte offset {end}" in line
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    data = path.read_bytes()
    assert data == layout(log) + bytes(SMALL - end), "cut, and preallocated again"
    more = entries(11, 3, term=2, size=30)
    with open_wal(tmp_path, segment_bytes_max=SMALL) as wal:
        assert wal.load().report == []
        wal.write(more, hard(2))
    again = load(tmp_path, segment_bytes_max=SMALL)
    assert again.entries == log + more
    assert again.report == []


def test_trailing_zeros_are_clean_in_every_segment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_log(tmp_path, entries(1, 60, size=40), segment_bytes_max=1024)
    files = segment_files(tmp_path)
    before = [p.read_bytes() for p in files]
    assert all(len(data) == 1024 and data.endswith(b"\0") for data in before)
    with caplog.at_level(logging.WARNING, logger="phalanx.storage.wal"):
        restored = load(tmp_path, segment_bytes_max=1024)
    assert restored.entries == entries(1, 60, size=40)
    assert restored.report == []
    assert caplog.records == []
    assert [p.read_bytes() for p in files] == before, "nothing was cut"


def test_garbage_in_the_zero_area_of_an_earlier_segment_refuses_to_start(tmp_path: Path) -> None:
    write_log(tmp_path, entries(1, 60, size=40), segment_bytes_max=1024)
    files = segment_files(tmp_path)
    data = files[1].read_bytes()
    end = len(data.rstrip(b"\0"))  # the entries' data ends in b"x"
    assert end < len(data) - 2, "the segment has some zero space after its last record"
    write_at(files[1], len(data) - 2, b"\x01")
    damaged = [p.read_bytes() for p in files]
    with pytest.raises(StorageCorruptError, match="followed by another") as caught:
        load(tmp_path, segment_bytes_max=1024)
    assert caught.value.path == str(files[1])
    assert caught.value.offset == end
    assert str(files[1]) in str(caught.value) and "refusing to start" in str(caught.value)
    assert [p.read_bytes() for p in files] == damaged, "a refused log is left as found"


def test_a_last_record_ending_in_zero_bytes_is_not_mistaken_for_the_zero_area(
    tmp_path: Path,
) -> None:
    # The data of an entry may end in zeros, even more of them than recovery reads past
    # the last non-zero byte at first: the record must still be read whole.
    def entry(index: int, zeros: int) -> Entry:
        return Entry(Term(1), Index(index), EntryKind.COMMAND, b"head" + bytes(zeros))

    log = [entry(1, 10), entry(2, 1), entry(3, 200_000), entry(4, 70_000)]
    segment_bytes_max = 1024 * 1024
    for count in range(1, len(log) + 1):
        directory = tmp_path / f"log-{count}"
        write_log(directory, log[:count], segment_bytes_max=segment_bytes_max)
        restored = load(directory, segment_bytes_max=segment_bytes_max)
        assert restored.entries == log[:count], count
        assert restored.report == [], count
        with open_wal(directory, segment_bytes_max=segment_bytes_max) as wal:
            wal.load()
            wal.write([entry(count + 1, 5)], None)
        reloaded = load(directory, segment_bytes_max=segment_bytes_max)
        assert reloaded.entries == [*log[:count], entry(count + 1, 5)]
    # Also at the end of an earlier segment: a small segment size rolls over after each.
    directory = tmp_path / "segments"
    write_log(directory, log, segment_bytes_max=4096)
    assert len(segment_files(directory)) == 3
    assert load(directory, segment_bytes_max=4096).entries == log


@pytest.mark.parametrize("written", [0, 1, 7, codec.SEGMENT_HEADER_BYTES - 1])
def test_a_preallocated_last_segment_torn_while_created_is_removed(
    tmp_path: Path, written: int
) -> None:
    write_log(tmp_path, entries(1, 30, size=40), segment_bytes_max=1024)
    files = segment_files(tmp_path)
    last_first = int(files[-1].name[4:24])
    header = codec.encode_segment_header(last_first)[:written]
    files[-1].write_bytes(header + bytes(1024 - written))
    restored = load(tmp_path, segment_bytes_max=1024)
    assert restored.entries == entries(1, last_first - 1, size=40)
    assert "torn while being created" in restored.report[0]
    assert not files[-1].exists()


def test_a_bad_header_in_a_preallocated_last_segment_still_refuses_to_start(
    tmp_path: Path,
) -> None:
    write_log(tmp_path, entries(1, 30, size=40), segment_bytes_max=1024)
    last = segment_files(tmp_path)[-1]
    write_at(last, 0, b"PXWX")  # not a prefix of the header this file should have
    with pytest.raises(StorageCorruptError, match="magic") as caught:
        load(tmp_path, segment_bytes_max=1024)
    assert caught.value.path == str(last)


# -- truncation in place ---------------------------------------------------------------------


@pytest.mark.parametrize("replacement", [1, 5, 60])
def test_truncation_in_place_never_resurrects_stale_entries(
    tmp_path: Path, replacement: int
) -> None:
    log = entries(1, 100, term=1, size=30)
    new = entries(50, replacement, term=2, size=30)
    live = tmp_path / "live"
    with open_wal(live, segment_bytes_max=SMALL) as wal:
        wal.load()
        wal.write(log, hard(1))
        wal.sync()
        wal.write(new, hard(2))
        wal.sync()
        # Crash-like: what is on disk now, without close().
        crashed = tmp_path / "crashed"
        shutil.copytree(live, crashed, ignore=shutil.ignore_patterns("lock"))
    expected = log[:49] + new
    (path,) = segment_files(crashed)
    data = path.read_bytes()
    end = logical_end(expected)
    assert data[:end] == layout(expected)
    assert data[end:] == bytes(len(data) - end), "nothing stale after the new end"
    assert len(data) == SMALL, "preallocated again after the cut"
    for directory in (crashed, live):
        restored = load(directory, segment_bytes_max=SMALL)
        assert restored.entries == expected
        assert restored.report == []


def test_truncation_across_preallocated_segments(tmp_path: Path) -> None:
    log = entries(1, 100, term=1, size=40)
    with open_wal(tmp_path, segment_bytes_max=1024) as wal:
        wal.load()
        wal.write(log, hard(1))
        wal.sync()
        files = segment_files(tmp_path)
        assert len(files) > 5
        second_first = int(files[1].name[4:24])
        wal.write(entries(second_first + 1, 1, term=2, size=40), hard(2))
        wal.sync()
    expected = log[:second_first] + entries(second_first + 1, 1, term=2, size=40)
    files = segment_files(tmp_path)
    assert len(files) == 2
    data = files[1].read_bytes()
    end = logical_end(expected[second_first - 1 :])
    assert len(data) == 1024 and not any(data[end:])
    restored = load(tmp_path, segment_bytes_max=1024)
    assert restored.entries == expected
    assert restored.report == []


# -- logs written without preallocation ------------------------------------------------------


def test_an_old_style_file_without_trailing_zeros_still_loads(tmp_path: Path) -> None:
    log = entries(1, 20, term=3, size=50)
    write_log(tmp_path, entries(1, 1), segment_bytes_max=SMALL)  # meta, hard state
    path = tmp_path / segment_file_name(1)
    path.write_bytes(layout(log))  # what the code before preallocation wrote
    with open_wal(tmp_path, segment_bytes_max=SMALL) as wal:
        restored = wal.load()
        assert restored.entries == log
        assert restored.report == []
        wal.write(entries(21, 2, term=3, size=50), None)
    data = path.read_bytes()
    expected = log + entries(21, 2, term=3, size=50)
    # Appended after the last record; opening it for appends preallocated it.
    assert data[: logical_end(expected)] == layout(expected)
    assert len(data) == SMALL and not any(data[logical_end(expected) :])
    assert load(tmp_path, segment_bytes_max=SMALL).entries == expected


def test_a_log_written_without_preallocation_loads_and_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log = entries(1, 60, size=40)
    with monkeypatch.context() as patch:
        patch.setattr(os, "posix_fallocate", declining_fallocate)
        with caplog.at_level(logging.INFO, logger="phalanx.storage.wal"):
            write_log(tmp_path, log, segment_bytes_max=1024)
        notes = [r for r in caplog.records if "posix_fallocate" in r.getMessage()]
        assert len(notes) == 1, "the fallback is logged once"
        files = segment_files(tmp_path)
        assert len(files) > 3
        for path in files:
            data = path.read_bytes()
            assert data and data[-1:] != b"\0", "files end at their last record"
    restored = load(tmp_path, segment_bytes_max=1024)
    assert restored.entries == log
    assert restored.report == []
    with open_wal(tmp_path, segment_bytes_max=1024) as wal:
        wal.load()
        wal.write(entries(61, 30, size=40), None)
    assert load(tmp_path, segment_bytes_max=1024).entries == log + entries(61, 30, size=40)


def test_running_out_of_space_while_preallocating_is_a_failed_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = open_wal(tmp_path, segment_bytes_max=1024)
    wal.load()
    wal.write(entries(1, 3), hard(1))
    wal.sync()

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "posix_fallocate", full)
        with pytest.raises(StorageError, match="No space left"):
            wal.write(entries(4, 40), None)  # rolls over: a new segment
    with pytest.raises(StorageError, match="failed earlier"):
        wal.write(entries(4, 1), None)
    wal.close()
    # The full segment was sealed before the new one was created; the new one, empty,
    # is what a crash during creation leaves and is removed.
    restored = load(tmp_path, segment_bytes_max=1024)
    assert restored.entries[:3] == entries(1, 3)
    assert len(restored.entries) > 3
    assert "torn while being created" in restored.report[0]
