"""`rebuild_all` and `phalanx replay-check` on data directories written offline: a log
compacted past older snapshots (a node keeping more snapshots than log), a service
whose restore loses state, a directory a running node holds, one that is no node's."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from phalanx.cli import main
from phalanx.core.types import Entry, EntryKind, Index, SnapshotMeta, Term
from phalanx.examples.kv import KeyValue
from phalanx.server.config import build_config
from phalanx.server.identity import check_or_record
from phalanx.server.replay import rebuild_all
from phalanx.service.container import ServiceContainer
from phalanx.service.envelope import Command, OpenSession, encode_envelope
from phalanx.storage import WalStorage
from phalanx.storage.errors import StorageCorruptError
from phalanx.storage.snapshots import SnapshotStore

KV_SERVICE = "phalanx.examples.kv:KeyValue"
#: Small segments, so that compaction has whole segments to delete.
SEGMENT_BYTES = 4096
ENTRIES = 300


class Marking(KeyValue):
    """Restores one key more than the snapshot held: a rebuild from a snapshot differs."""

    def restore(self, snapshot: Any) -> None:
        super().restore(snapshot)
        self.apply({"op": "put", "key": "restored", "value": True})


def log_entries(count: int) -> list[Entry]:
    envelopes: list[Any] = [OpenSession(0)]
    for seq in range(1, count):
        put = msgspec.msgpack.encode({"op": "put", "key": f"k{seq % 17}", "value": seq})
        envelopes.append(Command(seq, 1, seq, seq, put))
    return [
        Entry(Term(1), Index(i + 1), EntryKind.COMMAND, encode_envelope(envelope))
        for i, envelope in enumerate(envelopes)
    ]


def write_node(
    data: Path,
    snapshot_indexes: Sequence[int],
    compact_to: int = 0,
    service: str = KV_SERVICE,
) -> None:
    """A stopped node's directory: its identity, `ENTRIES` log entries, a snapshot at
    each of `snapshot_indexes`, and the log compacted up to `compact_to`."""
    config = build_config(
        {"id": 1, "members": "1=127.0.0.1:7101", "data": str(data), "service": service}
    )
    check_or_record(config)
    entries = log_entries(ENTRIES)
    store = SnapshotStore(data / "snapshots", keep=len(snapshot_indexes) or 1)
    container = ServiceContainer(KeyValue())
    for entry in entries:
        container.apply(entry)
        if entry.index in snapshot_indexes:
            writer = store.writer(SnapshotMeta(entry.index, entry.term))
            writer.write(container.snapshot_bytes())
            writer.finish()
    wal = WalStorage(data, cluster_id="phalanx", node_id=1, segment_bytes_max=SEGMENT_BYTES)
    try:
        wal.load()
        wal.write(entries, None)
        if compact_to:
            wal.compact(compact_to)
        wal.sync()
    finally:
        wal.close()


def log_continues(data: Path, snapshot_index: int) -> bool:
    wal = WalStorage(data, cluster_id="phalanx", node_id=1)
    try:
        wal.load(snapshot_index, snapshot_term=1)
    except StorageCorruptError:
        return False
    finally:
        wal.close()
    return True


def test_snapshots_older_than_the_log_are_skipped_and_reported(tmp_path: Path) -> None:
    data = tmp_path / "node-1"
    write_node(data, [50, 100, 160, 200, 250], compact_to=160)
    assert not log_continues(data, 100), "compaction should have removed the log after 100"
    assert log_continues(data, 160)
    rebuilds = rebuild_all(data)
    assert [meta.index for meta in rebuilds.skipped] == [50, 100]
    assert [r.start.index for r in rebuilds] == [160, 200, 250]
    assert {r.applied_index for r in rebuilds} == {ENTRIES}
    assert not rebuilds.differing()
    assert len({r.digests() for r in rebuilds}) == 1


def test_a_log_from_index_1_is_also_replayed_from_the_empty_state(tmp_path: Path) -> None:
    data = tmp_path / "node-1"
    write_node(data, [100, 200])
    rebuilds = rebuild_all(data, up_to=250)
    assert rebuilds.skipped == ()
    assert [r.start.index for r in rebuilds] == [0, 100, 200]
    assert {r.applied_index for r in rebuilds} == {250}
    assert not rebuilds.differing()


def run_check(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["replay-check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_replay_check_prints_each_rebuild_and_the_skipped_snapshots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "node-1"
    write_node(data, [50, 100, 160, 200, 250], compact_to=160)
    code, out, err = run_check(["--data", str(data)], capsys)
    assert code == 0, err
    rows = [[cell.strip() for cell in line.split("|")] for line in out.splitlines()[1:4]]
    assert [row[:3] for row in rows] == [
        ["160", "1", "300"],
        ["200", "1", "300"],
        ["250", "1", "300"],
    ]
    assert (
        "skipped (the log no longer continues them): the snapshot at index 50 (term 1), "
        "the snapshot at index 100 (term 1)"
    ) in out
    assert "all 3 rebuilds agree" in out

    code, out, err = run_check(["--data", str(data), "--json", "--up-to", "260"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["agree"] is True
    assert report["skipped"] == [{"index": 50, "term": 1}, {"index": 100, "term": 1}]
    assert [r["applied_index"] for r in report["rebuilds"]] == [260, 260, 260]
    assert [r["start"]["index"] for r in report["rebuilds"]] == [160, 200, 250]


def test_replay_check_names_the_rebuilds_that_differ(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "node-1"
    write_node(data, [100, 200], service=f"{__name__}:Marking")
    code, out, err = run_check(["--data", str(data)], capsys)
    assert code == 1, out + err
    assert "2 of 3 rebuilds differ from the first" in out
    assert "rebuilt from the snapshot at index 100 (term 1), index 300 has another state " in err
    assert "than rebuilt from the empty state" in err
    report = json.loads(run_check(["--data", str(data), "--json"], capsys)[1])
    assert report["agree"] is False
    assert [r["agrees"] for r in report["rebuilds"]] == [True, False, False]


def refusal(data: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str]:
    """(exit code, the one line on stderr) of `phalanx replay-check --data DATA FLAGS`."""
    code, out, err = run_check(["--data", str(data), *flags], capsys)
    assert not out and err.count("\n") == 1, (out, err)
    return code, err


def test_replay_check_refuses_bad_input_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = refusal(tmp_path / "absent", capsys)
    assert code == 2 and "no such directory" in err, err
    code, err = refusal(tmp_path, capsys)
    assert code == 2 and "not a node's directory" in err, err
    data = tmp_path / "node-1"
    write_node(data, [100])
    code, err = refusal(data, capsys, "--up-to", "400")
    assert code == 2 and "only up to 300, not 400" in err, err


def test_replay_check_refuses_a_directory_a_node_holds_with_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "node-1"
    write_node(data, [100])
    running = WalStorage(data, cluster_id="phalanx", node_id=1)  # as a running node would
    try:
        code, err = refusal(data, capsys)
    finally:
        running.close()
    assert code == 3 and "is in use by another storage" in err, err


def test_replay_check_refuses_a_damaged_log_with_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "node-1"
    write_node(data, [100])
    first_segment = sorted(data.glob("wal-*.seg"))[0]  # not the last: no torn tail
    with first_segment.open("r+b") as segment:
        segment.seek(200)
        segment.write(b"\xff" * 64)
    code, err = refusal(data, capsys)
    assert code == 3 and "corrupt" in err, err
