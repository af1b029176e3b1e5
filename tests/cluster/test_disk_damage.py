"""What a node does with the data directory it finds at start: wiped (catches up from
the leader), a damaged early record (refuses to start, naming file and offset), a torn
tail (truncates, reports, catches up). Issue 3, "Storage" and "Tests"."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from phalanx.core.types import Entry, EntryKind, Index
from phalanx.server.local import node_command
from phalanx.storage.codec import (
    RECORD_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
    decode_hard_state,
    encode_record,
    read_record,
)

from .harness import EXIT_TIMEOUT_S, LiveCluster

pytestmark = pytest.mark.slow

_RECORD_LENGTH = struct.Struct("<I")


def segment_files(data_dir: Path) -> list[Path]:
    return sorted(data_dir.glob("wal-*.seg"))


def record_layout(segment: Path) -> tuple[list[int], int]:
    """The byte offset of every complete record in a segment and the end of the last
    one (format in storage/wal.py); only zeros (preallocated space) may follow it."""
    data = segment.read_bytes()
    offsets = []
    offset = SEGMENT_HEADER_BYTES
    while offset + RECORD_HEADER_BYTES <= len(data):
        (length,) = _RECORD_LENGTH.unpack_from(data, offset)
        end = offset + RECORD_HEADER_BYTES + length
        if length == 0 or end > len(data):
            break
        offsets.append(offset)
        offset = end
    zeros = bytes(len(data) - offset)
    assert data[offset:] == zeros, f"{segment} has non-zero bytes after its records"
    return offsets, offset


def record_offsets(segment: Path) -> list[int]:
    return record_layout(segment)[0]


def flip_byte(path: Path, offset: int) -> None:
    # In place: segment files are preallocated, rewriting one would write all of it.
    with path.open("r+b") as file:
        file.seek(offset)
        (byte,) = file.read(1)
        file.seek(offset)
        file.write(bytes([byte ^ 0x5A]))


def write_some(cluster: LiveCluster, prefix: str, count: int) -> None:
    with cluster.client() as client:
        for i in range(count):
            cluster.put_and_check(client, f"{prefix}-{i}", f"{prefix}-value-{i}")


def check_all_keys(cluster: LiveCluster, prefixes: dict[str, int]) -> None:
    with cluster.client() as client:
        for prefix, count in prefixes.items():
            for i in range(count):
                reply = client.call({"op": "get", "key": f"{prefix}-{i}"})
                assert reply == {"value": f"{prefix}-value-{i}"}


def assert_refuses_to_start(cluster: LiveCluster, index: int) -> str:
    """Runs `phalanx node` exactly as the cluster starts it, in the foreground, expects
    a clear refusal, and returns its stderr."""
    result = subprocess.run(
        node_command(cluster.configs[index]),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT_S * 2,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "refusing to start" in result.stderr, output
    assert "serving on" not in output, "the node must never serve a damaged log"
    assert "Traceback" not in output, "a clear message, not a crash"
    return result.stderr


@pytest.mark.parametrize("writes_while_down", [0, 10], ids=["idle", "written-while-down"])
def test_a_follower_whose_data_was_wiped_catches_up_and_the_cluster_keeps_serving(
    cluster: LiveCluster, writes_while_down: int
) -> None:
    leader = cluster.wait_for_leader()
    follower = (leader + 1) % cluster.size
    write_some(cluster, "a", 20)
    cluster.wait_converged()

    assert cluster.terminate(follower) == 0
    shutil.rmtree(cluster.data_dir(follower))
    write_some(cluster, "b", writes_while_down)  # the two others still form a majority
    cluster.start(follower)

    # Nothing is written until it has caught up: the cluster alone must notice.
    statuses = cluster.wait_converged()
    assert len(statuses) == 3
    cluster.assert_same_digests(statuses)
    write_some(cluster, "c", 10)
    cluster.assert_same_digests(cluster.wait_converged())

    # The wiped node now really holds the log: without the old leader, it and the third
    # node are the majority that must elect a leader and still have every write.
    cluster.kill(leader)
    cluster.wait_for_leader()
    check_all_keys(cluster, {"a": 20, "b": writes_while_down, "c": 10})
    write_some(cluster, "d", 5)
    cluster.assert_same_digests(cluster.wait_converged())
    cluster.assert_election_safety()


@pytest.mark.parametrize("where", ["payload", "length", "checksum"])
def test_a_damaged_early_record_makes_the_node_refuse_to_start(
    cluster: LiveCluster, where: str
) -> None:
    leader = cluster.wait_for_leader()
    victim = (leader + 1) % cluster.size
    write_some(cluster, "a", 15)
    cluster.wait_converged()
    assert cluster.terminate(victim) == 0

    segments = segment_files(cluster.data_dir(victim))
    assert len(segments) == 1
    segment = segments[0]
    offsets = record_offsets(segment)
    assert len(offsets) > 20, "the log should hold every write"
    damaged = offsets[2]  # the third record: many valid ones follow it
    (length,) = _RECORD_LENGTH.unpack_from(segment.read_bytes(), damaged)
    position = {
        "length": damaged,
        "checksum": damaged + 4,
        "payload": damaged + RECORD_HEADER_BYTES + length // 2,
    }[where]
    flip_byte(segment, position)
    damaged_bytes = segment.read_bytes()

    error = assert_refuses_to_start(cluster, victim)
    assert f"{segment} at byte offset {damaged}" in error, error
    assert segment.read_bytes() == damaged_bytes, "a damaged log is left for the operator"

    # The other two carry on without it.
    write_some(cluster, "b", 5)
    cluster.assert_same_digests(cluster.wait_converged())


@pytest.mark.parametrize("damage", ["garbage-appended", "last-record-cut"])
def test_a_torn_tail_is_truncated_and_the_node_catches_up(
    cluster: LiveCluster, damage: str
) -> None:
    leader = cluster.wait_for_leader()
    victim = (leader + 1) % cluster.size
    write_some(cluster, "a", 15)
    before = cluster.wait_converged()
    cluster.kill(victim)  # SIGKILL: no chance to sync or close

    segment = segment_files(cluster.data_dir(victim))[-1]
    good_end = record_layout(segment)[1]
    if damage == "garbage-appended":
        # A record header that promises more than was written, then stray bytes.
        torn = _RECORD_LENGTH.pack(300) + b"\xde\xad\xbe\xef" + b"\x00\xff" * 40
    else:
        # The record of the next entry, cut partway: what a crash during its write
        # leaves. (Cutting a record the node had synced is not a torn write; when the
        # persisted commit index covers it, see the test below.)
        data = segment.read_bytes()
        last = read_record(data, record_offsets(segment)[-1], str(segment)).entry
        assert last is not None
        record = encode_record(
            Entry(last.term, Index(last.index + 1), EntryKind.COMMAND, b"never synced" * 8)
        )
        torn = record[: len(record) // 2]
    with segment.open("r+b") as file:  # into the preallocated zeros after the records
        file.seek(good_end)
        file.write(torn)

    write_some(cluster, "b", 5)
    cluster.start(victim)
    line = cluster.wait_for_log_line(victim, "torn tail truncated")
    assert f"{segment} at byte offset {good_end}" in line, line

    statuses = cluster.wait_converged()
    assert len(statuses) == 3
    assert statuses[0]["applied_index"] > before[0]["applied_index"]
    cluster.assert_same_digests(statuses)
    assert cluster.running(victim)
    check_all_keys(cluster, {"a": 15, "b": 5})
    cluster.assert_election_safety()


def test_damage_to_a_last_record_the_hard_state_counts_as_committed_is_refused(
    cluster: LiveCluster,
) -> None:
    leader = cluster.wait_for_leader()
    victim = (leader + 1) % cluster.size
    write_some(cluster, "a", 10)
    cluster.wait_converged()
    assert cluster.terminate(victim) == 0  # a graceful stop persists the commit index

    data_dir = cluster.data_dir(victim)
    hard_state_path = data_dir / "hardstate"
    commit = decode_hard_state(hard_state_path.read_bytes(), str(hard_state_path)).commit
    segment = segment_files(data_dir)[-1]
    offsets = record_offsets(segment)
    last = read_record(segment.read_bytes(), offsets[-1], str(segment)).entry
    assert last is not None and last.index == commit
    flip_byte(segment, offsets[-1] + RECORD_HEADER_BYTES + 2)
    damaged_bytes = segment.read_bytes()

    # Repairing it as a torn tail would silently lose a committed entry.
    error = assert_refuses_to_start(cluster, victim)
    assert str(segment) in error and f"commit index {commit}" in error, error
    assert segment.read_bytes() == damaged_bytes, "a refused directory is left as found"
