"""Restart recovery: torn tails are repaired and reported, damage elsewhere refuses to
start with the file and byte offset (issue 3, "Storage")."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from tests.storage.helpers import cut_file, entries, flip_byte, hard, open_wal, segment_files

from phalanx.storage import StorageCorruptError, StorageError, codec
from phalanx.storage.wal import segment_file_name

LOG = entries(1, 8, term=2, size=30)
#: A segment size for tests that copy or rewrite whole (preallocated) segment files.
SMALL_SEGMENT = 4096


def write_log(directory: Path, log: list = LOG, **kwargs: object) -> list[int]:  # type: ignore[type-arg]
    """Writes `log` durably and returns each record's byte offset in the first segment."""
    with open_wal(directory, **kwargs) as wal:
        wal.load()
        wal.write(log, hard(2, 1, 3))
        wal.sync()
    offsets = []
    offset = codec.SEGMENT_HEADER_BYTES
    for entry in log:
        offsets.append(offset)
        offset += len(codec.encode_record(entry))
    return offsets


def load(directory: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    with open_wal(directory, **kwargs) as wal:
        return wal.load()


def test_cut_anywhere_in_the_last_record_recovers_the_previous_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Small segments: each case copies the (preallocated) segment file.
    original = tmp_path / "original"
    offsets = write_log(original, segment_bytes_max=SMALL_SEGMENT)
    segment_name = segment_file_name(1)
    end = offsets[-1] + len(codec.encode_record(LOG[-1]))
    kept = (original / segment_name).read_bytes()[: offsets[-1]]
    for cut in range(offsets[-1] + 1, end):
        directory = tmp_path / f"cut-{cut}"
        shutil.copytree(original, directory)
        cut_file(directory / segment_name, cut)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="phalanx.storage.wal"):
            restored = load(directory, segment_bytes_max=SMALL_SEGMENT)
        assert restored.entries == LOG[:-1], cut
        assert restored.hard_state == hard(2, 1, 3)
        (line,) = restored.report
        assert str(directory / segment_name) in line
        assert f"byte offset {offsets[-1]}" in line
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        # The repair is durable: the next start finds a clean log, the torn bytes
        # replaced by zeros (preallocated space again).
        data = (directory / segment_name).read_bytes()
        assert data == kept + bytes(SMALL_SEGMENT - offsets[-1])
        again = load(directory, segment_bytes_max=SMALL_SEGMENT)
        assert again.entries == LOG[:-1] and again.report == []
        shutil.rmtree(directory)


def test_a_cut_on_a_record_boundary_is_just_a_shorter_log(tmp_path: Path) -> None:
    offsets = write_log(tmp_path)
    cut_file(tmp_path / segment_file_name(1), offsets[-2])
    restored = load(tmp_path)
    assert restored.entries == LOG[:-2]
    assert restored.report == []


@pytest.mark.parametrize("where", ["length", "crc", "payload"])
def test_damage_in_the_last_record_is_a_torn_tail(tmp_path: Path, where: str) -> None:
    offsets = write_log(tmp_path)
    delta = {"length": 1, "crc": 5, "payload": 12}[where]
    flip_byte(tmp_path / segment_file_name(1), offsets[-1] + delta)
    restored = load(tmp_path)
    assert restored.entries == LOG[:-1]
    assert "torn tail truncated" in restored.report[0]


def test_a_zero_filled_tail_is_clean_preallocated_space(tmp_path: Path) -> None:
    # Zeros after the last record are what preallocation leaves there: not a torn tail
    # (they used to be one, before segment files were preallocated).
    offsets = write_log(tmp_path)
    path = tmp_path / segment_file_name(1)
    end = offsets[-1] + len(codec.encode_record(LOG[-1]))
    cut_file(path, end)  # as the old code left it
    with open(path, "ab") as file:
        file.write(bytes(4096))
    restored = load(tmp_path, segment_bytes_max=SMALL_SEGMENT)
    assert restored.entries == LOG
    assert restored.report == []
    assert path.stat().st_size == end + 4096, "nothing was cut"


@pytest.mark.parametrize("where", ["length", "crc", "payload"])
@pytest.mark.parametrize("record", [0, 3, 6])
def test_a_flipped_byte_in_an_earlier_record_refuses_to_start(
    tmp_path: Path, where: str, record: int
) -> None:
    offsets = write_log(tmp_path)
    delta = {"length": 0, "crc": 6, "payload": 9}[where]
    path = tmp_path / segment_file_name(1)
    flip_byte(path, offsets[record] + delta)
    with pytest.raises(StorageCorruptError) as caught:
        load(tmp_path)
    error = caught.value
    assert error.path == str(path)
    assert error.offset == offsets[record]
    assert str(path) in str(error) and f"byte offset {offsets[record]}" in str(error)
    assert "refusing to start" in str(error)


def test_a_huge_length_field_is_corruption_not_an_allocation(tmp_path: Path) -> None:
    offsets = write_log(tmp_path)
    path = tmp_path / segment_file_name(1)
    data = bytearray(path.read_bytes())
    data[offsets[2] : offsets[2] + 4] = (0xFFFFFFF0).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(StorageCorruptError, match=r"outside 1\.\.") as caught:
        load(tmp_path)
    assert caught.value.offset == offsets[2]


def write_segments(directory: Path) -> list[Path]:
    with open_wal(directory, segment_bytes_max=512) as wal:
        wal.load()
        wal.write(entries(1, 40, term=1, size=30), hard(1))
    files = segment_files(directory)
    assert len(files) >= 4
    return files


def test_damage_at_the_end_of_an_earlier_segment_refuses_to_start(tmp_path: Path) -> None:
    files = write_segments(tmp_path)
    # The end of its last record (the entries' data ends in b"x", never in zeros).
    end = len(files[1].read_bytes().rstrip(b"\0"))
    cut_file(files[1], end - 3)
    with pytest.raises(StorageCorruptError, match="followed by another") as caught:
        load(tmp_path, segment_bytes_max=512)
    assert caught.value.path == str(files[1])


def test_a_missing_middle_segment_refuses_to_start(tmp_path: Path) -> None:
    files = write_segments(tmp_path)
    files[1].unlink()
    with pytest.raises(StorageCorruptError, match="non-contiguous") as caught:
        load(tmp_path, segment_bytes_max=512)
    assert caught.value.path == str(files[2])
    assert caught.value.offset == 0


def test_a_bad_segment_header_refuses_to_start(tmp_path: Path) -> None:
    files = write_segments(tmp_path)
    flip_byte(files[2], 10)
    with pytest.raises(StorageCorruptError, match="header CRC mismatch"):
        load(tmp_path, segment_bytes_max=512)


def test_a_last_segment_torn_while_created_is_removed(tmp_path: Path) -> None:
    files = write_segments(tmp_path)
    restored_before = load(tmp_path, segment_bytes_max=512).entries
    last_first = int(files[-1].name[4:24])
    for size in range(codec.SEGMENT_HEADER_BYTES):
        files[-1].write_bytes(codec.encode_segment_header(last_first)[:size])
        restored = load(tmp_path, segment_bytes_max=512)
        assert restored.entries == restored_before[: last_first - 1]
        assert "torn while being created" in restored.report[0]
        assert not files[-1].exists()


def test_an_index_gap_refuses_to_start(tmp_path: Path) -> None:
    log = entries(1, 3) + entries(5, 2)  # index 4 missing, CRCs all valid
    data = codec.encode_segment_header(1) + b"".join(codec.encode_record(e) for e in log)
    write_log(tmp_path, entries(1, 1))
    (tmp_path / segment_file_name(1)).write_bytes(data)
    with pytest.raises(StorageCorruptError, match="index gap"):
        load(tmp_path)


def test_a_term_that_goes_backwards_refuses_to_start(tmp_path: Path) -> None:
    log = entries(1, 3, term=2) + entries(4, 1, term=1)
    data = codec.encode_segment_header(1) + b"".join(codec.encode_record(e) for e in log)
    write_log(tmp_path, entries(1, 1))
    (tmp_path / segment_file_name(1)).write_bytes(data)
    with pytest.raises(StorageCorruptError, match="term 1 after term 2"):
        load(tmp_path)


def test_the_repaired_log_accepts_appends(tmp_path: Path) -> None:
    offsets = write_log(tmp_path)
    cut_file(tmp_path / segment_file_name(1), offsets[-1] + 5)
    with open_wal(tmp_path) as wal:
        assert wal.load().entries == LOG[:-1]
        wal.write(entries(8, 3, term=3), hard(3))
    assert load(tmp_path).entries == LOG[:-1] + entries(8, 3, term=3)


def test_a_log_that_lost_committed_entries_refuses_to_start(tmp_path: Path) -> None:
    # Damage in the last record looks like a torn tail, but the hard state says that
    # entry was committed (hence synced): the node must not start without it.
    log = entries(1, 5)
    with open_wal(tmp_path) as wal:
        wal.load()
        wal.write(log, hard(1, 1, 5))
    offsets = write_log(tmp_path / "layout", log)
    segment = tmp_path / segment_file_name(1)
    flip_byte(segment, offsets[-1] + 12)
    damaged = segment.read_bytes()
    with pytest.raises(StorageCorruptError, match="records commit index 5") as caught:
        load(tmp_path)
    assert segment.read_bytes() == damaged, "a refused log is left as found, for the operator"
    assert "the log ends at index 4" in str(caught.value)
    assert caught.value.path == str(tmp_path / segment_file_name(1))
    assert caught.value.offset == offsets[-1]


def test_after_a_refused_start_the_storage_only_closes(tmp_path: Path) -> None:
    offsets = write_log(tmp_path)
    flip_byte(tmp_path / segment_file_name(1), offsets[1] + 12)
    wal = open_wal(tmp_path)
    with pytest.raises(StorageCorruptError):
        wal.load()
    with pytest.raises(StorageError, match="failed earlier"):
        wal.write(entries(1, 1), None)
    wal.close()


def test_a_crash_anywhere_in_an_unsynced_batch_recovers_a_prefix_of_it(tmp_path: Path) -> None:
    # What a power loss can leave: the synced bytes, then any prefix of the unsynced
    # ones. Recovery must give the synced entries plus the whole records of that prefix.
    # With preallocation the unwritten rest reads as zeros; a file written without it
    # simply ends at the cut. Both must recover the same way.
    log = entries(1, 12, term=1, size=20)
    original = tmp_path / "original"
    with open_wal(original, segment_bytes_max=SMALL_SEGMENT) as wal:
        wal.load()
        wal.write(log[:4], hard(1, 1, 4))
        wal.sync()
    segment_name = segment_file_name(1)
    synced_size = codec.SEGMENT_HEADER_BYTES + sum(len(codec.encode_record(e)) for e in log[:4])
    with open_wal(original, segment_bytes_max=SMALL_SEGMENT) as wal:
        wal.load()
        wal.write(log[4:], None)
    full = (original / segment_name).read_bytes()
    assert len(full) == SMALL_SEGMENT
    record_ends = [synced_size]
    for entry in log[4:]:
        record_ends.append(record_ends[-1] + len(codec.encode_record(entry)))
    assert not any(full[record_ends[-1] :])
    for preallocated in (False, True):
        for cut in range(synced_size, record_ends[-1] + 1):
            directory = tmp_path / "crashed"
            shutil.copytree(original, directory)
            image = full[:cut] + (bytes(len(full) - cut) if preallocated else b"")
            (directory / segment_name).write_bytes(image)
            restored = load(directory, segment_bytes_max=SMALL_SEGMENT)
            whole = sum(1 for end in record_ends[1:] if end <= cut)
            assert restored.entries == log[: 4 + whole], (preallocated, cut)
            torn = any(full[record_ends[whole] : cut])
            assert bool(restored.report) == torn, (preallocated, cut)
            assert torn == (cut not in record_ends), "each record starts with non-zero bytes"
            shutil.rmtree(directory)
