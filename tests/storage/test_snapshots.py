"""SnapshotStore on real files with real fsync: format, resume, damage, retention."""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import pytest
from crc32c import crc32c
from tests.storage.helpers import cut_file, flip_byte

from phalanx.core.types import Index, SnapshotMeta, Term
from phalanx.storage import (
    SNAPSHOT_CONTENT_BYTES_MAX,
    SnapshotStore,
    SnapshotWriter,
    StorageCorruptError,
    StorageError,
    snapshots,
)

HEADER = snapshots.SNAPSHOT_HEADER_BYTES


def meta(index: int, term: int = 1) -> SnapshotMeta:
    return SnapshotMeta(Index(index), Term(term))


def content(size: int, seed: int = 0) -> bytes:
    return bytes((seed + i * 7) % 251 for i in range(size))


def take(store: SnapshotStore, at: SnapshotMeta, data: bytes, chunk_bytes: int = 1000) -> Path:
    writer = store.writer(at)
    for start in range(0, len(data), chunk_bytes):
        writer.write(data[start : start + chunk_bytes])
    return writer.finish()


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_round_trip_and_layout(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    data = content(10_000)
    writer = store.writer(meta(42, 3))
    assert isinstance(writer, SnapshotWriter)
    writer.write(data[:4000])
    assert writer.offset == 4000
    writer.write(data[4000:])
    assert writer.offset == 10_000
    path = writer.finish()
    assert path.name == "snap-00000000000000000042-00000000000000000003.snap"
    assert names(tmp_path) == [path.name], "the partial was renamed, nothing else left"
    assert store.latest() == (meta(42, 3), path)
    assert store.read_content(path) == data
    assert store.content_length(path) == 10_000
    chunks = list(store.read_chunks(path, 3000))
    assert [offset for offset, _ in chunks] == [0, 3000, 6000, 9000]
    assert b"".join(chunk for _, chunk in chunks) == data
    raw = path.read_bytes()
    assert raw[:4] == b"PXSN"
    assert struct.unpack_from("<QQQ", raw, 8) == (42, 3, 10_000)
    assert raw[HEADER:-4] == data
    assert struct.unpack("<I", raw[-4:])[0] == crc32c(raw[:-4])


def test_empty_content_and_empty_store(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    assert store.latest() is None
    path = take(store, meta(1), b"")
    assert store.read_content(path) == b""
    assert list(store.read_chunks(path, 10)) == []
    assert store.latest() == (meta(1), path)


def test_abort_deletes_the_partial_and_ends_the_writer(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    writer = store.writer(meta(5))
    writer.write(b"abc")
    assert len(names(tmp_path)) == 1
    writer.abort()
    writer.abort()
    assert names(tmp_path) == []
    with pytest.raises(StorageError, match="finished or aborted"):
        writer.write(b"more")
    assert store.latest() is None


def test_a_partial_never_counts_as_a_snapshot(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    first = take(store, meta(10), b"old")
    writer = store.writer(meta(20))
    writer.write(b"new, but never finished")
    writer.close()  # the process died before finish()
    assert store.latest() == (meta(10), first)


def test_resume_continues_a_received_partial_at_its_durable_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "SNAPSHOT_CHECKPOINT_BYTES", 1500)
    store = SnapshotStore(tmp_path)
    data = content(5000, seed=3)
    writer = store.resume(meta(100, 2))
    assert writer.offset == 0
    for start in (0, 1000, 2000):  # a checkpoint after 2000 bytes, none after 3000
        writer.write(data[start : start + 1000])
    assert writer.offset == 3000
    writer.close()  # dropped: the connection or the process died

    resumed = store.resume(meta(100, 2))
    assert resumed.offset == 2000, "only content vouched for by a checkpoint is trusted"
    resumed.write(data[2000:])
    path = resumed.finish()
    assert store.read_content(path) == data
    assert store.latest() == (meta(100, 2), path)
    assert names(tmp_path) == [path.name]


def test_resume_without_a_checkpoint_starts_at_zero(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    writer = store.resume(meta(7))
    writer.write(b"x" * 100)
    writer.close()
    again = store.resume(meta(7))
    assert again.offset == 0
    again.write(b"y" * 10)
    assert store.read_content(again.finish()) == b"y" * 10


def test_resume_deletes_received_partials_of_other_metas_only(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    stale = store.resume(meta(50, 1))
    stale.write(b"stale")
    stale.close()
    local = store.writer(meta(60, 2))  # a local snapshot in progress (a forked child)
    local.write(b"local")
    current = store.resume(meta(70, 2))
    assert not any("00000000000000000050" in name for name in names(tmp_path))
    current.write(b"current")
    local.write(b" snapshot")
    assert store.read_content(local.finish()) == b"local snapshot"
    assert store.read_content(current.finish()) == b"current"


def test_resume_restarts_a_partial_with_a_damaged_header(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "SNAPSHOT_CHECKPOINT_BYTES", 10)
    store = SnapshotStore(tmp_path)
    writer = store.resume(meta(9))
    writer.write(b"z" * 40)
    writer.close()
    (partial,) = tmp_path.iterdir()
    flip_byte(partial, 0)
    with caplog.at_level(logging.WARNING):
        again = store.resume(meta(9))
    assert again.offset == 0
    assert "bad snapshot magic" in caplog.text
    again.abort()


@pytest.mark.parametrize("damage", ["flip content", "flip trailer", "truncate", "extend"])
def test_a_damaged_newest_snapshot_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    store = SnapshotStore(tmp_path, keep=3)
    older = take(store, meta(100, 1), content(3000, seed=1))
    newest = take(store, meta(200, 2), content(3000, seed=2))
    size = newest.stat().st_size
    if damage == "flip content":
        flip_byte(newest, HEADER + 1234)
    elif damage == "flip trailer":
        flip_byte(newest, size - 1)
    elif damage == "truncate":
        cut_file(newest, size - 100)
    else:
        with open(newest, "ab") as file:
            file.write(b"\0")
    with caplog.at_level(logging.WARNING, logger="phalanx.storage.snapshots"):
        assert store.latest() == (meta(100, 1), older)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert newest.name in record.getMessage()
    problem = "CRC mismatch" if damage.startswith("flip") else "its header promises"
    assert problem in record.getMessage()
    with pytest.raises(StorageCorruptError, match=newest.name):
        store.read_content(newest)


def test_streaming_a_damaged_snapshot_raises_before_the_last_chunk(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    path = take(store, meta(3), content(1000))
    flip_byte(path, HEADER + 10)
    received = []
    with pytest.raises(StorageCorruptError, match="CRC mismatch"):
        for offset, chunk in store.read_chunks(path, 300):
            received.append((offset, chunk))
    assert [offset for offset, _ in received] == [0, 300, 600], "the last chunk is held back"


def test_a_header_claiming_too_much_content_is_corruption(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SnapshotStore(tmp_path)
    good = take(store, meta(1), b"good")
    forged = tmp_path / snapshots.snapshot_file_name(meta(2))
    header = struct.pack("<4sHHQQQ", b"PXSN", 1, 0, 2, 1, SNAPSHOT_CONTENT_BYTES_MAX + 1)
    forged.write_bytes(header + b"x" * 8)
    with pytest.raises(StorageCorruptError, match="above the maximum"):
        store.content_length(forged)
    with pytest.raises(StorageCorruptError, match="above the maximum"):
        store.read_content(forged)
    with caplog.at_level(logging.WARNING):
        assert store.latest() == (meta(1), good)
    assert forged.name in caplog.text


def test_writing_beyond_the_content_maximum_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "SNAPSHOT_CONTENT_BYTES_MAX", 10)
    store = SnapshotStore(tmp_path)
    writer = store.writer(meta(1))
    writer.write(b"0123456789")
    with pytest.raises(StorageError, match="SNAPSHOT_CONTENT_BYTES_MAX"):
        writer.write(b"!")
    writer.abort()


def test_a_file_whose_header_disagrees_with_its_name_is_corruption(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    path = take(store, meta(5, 1), b"data")
    renamed = path.with_name(snapshots.snapshot_file_name(meta(6, 1)))
    path.rename(renamed)
    with pytest.raises(StorageCorruptError, match="file name differs"):
        store.read_content(renamed)


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_retention_keeps_the_newest_valid_snapshots(tmp_path: Path, keep: int) -> None:
    store = SnapshotStore(tmp_path, keep=keep)
    paths = [take(store, meta(10 * i, i), content(100, seed=i)) for i in range(1, 6)]
    assert names(tmp_path) == [path.name for path in paths[-keep:]]
    assert store.latest() == (meta(50, 5), paths[-1])


def test_retention_deletes_a_damaged_snapshot_and_keeps_an_older_valid_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SnapshotStore(tmp_path, keep=3)
    first = take(store, meta(10), b"first")
    second = take(store, meta(20), b"second")
    third = take(store, meta(30), b"third")
    flip_byte(third, HEADER)
    store.keep = 2
    with caplog.at_level(logging.WARNING):
        fourth = take(store, meta(40), b"fourth")
    assert names(tmp_path) == [second.name, fourth.name]
    assert "deleting damaged snapshot" in caplog.text
    assert third.name in caplog.text
    assert not first.exists()


def test_a_writer_works_in_a_forked_child(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    data = content(50_000, seed=9)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            take(store, meta(77, 4), data, chunk_bytes=4096)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    latest = store.latest()
    assert latest is not None
    assert latest[0] == meta(77, 4)
    assert store.read_content(latest[1]) == data


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep=0"):
        SnapshotStore(tmp_path, keep=0)
    store = SnapshotStore(tmp_path)
    path = take(store, meta(1), b"x")
    with pytest.raises(ValueError, match="chunk_bytes=0"):
        list(store.read_chunks(path, 0))
