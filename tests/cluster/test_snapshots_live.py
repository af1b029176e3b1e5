"""Snapshots with real node processes: taken under load without stopping commits, the
log compacted behind them, InstallSnapshot to a wiped node, restart from snapshots, a
damaged newest snapshot skipped, and `phalanx snapshot` on demand."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from phalanx.cli import main
from phalanx.client import Client

from .harness import LiveCluster

SNAPSHOT_EVERY = 200
MARGIN = 20


def start_with_snapshots(cluster: LiveCluster, index: int) -> None:
    config = cluster.configs[index]
    members = ",".join(f"{n}={h}:{p}" for n, (h, p) in sorted(config.members.items()))
    path = cluster.root / f"node-{index + 1}.toml"
    path.write_text(
        f"id = {config.node_id}\n"
        f'members = "{members}"\n'
        f'data = "{config.data_dir}"\n'
        f'service = "{config.service}"\n'
        f'cluster_id = "{config.cluster_id}"\n'
        f"snapshot_every_entries = {SNAPSHOT_EVERY}\n"
        f"snapshot_compaction_margin = {MARGIN}\n"
    )
    cluster.start(index, [sys.executable, "-m", "phalanx", "node", "--config", str(path)])


def snapshot_cluster(make_cluster: Callable[..., LiveCluster]) -> LiveCluster:
    cluster = make_cluster(3)
    for index in range(3):
        start_with_snapshots(cluster, index)
    cluster.wait_for_leader()
    return cluster


def write(cluster: LiveCluster, prefix: str, count: int) -> None:
    with cluster.client() as client:
        for i in range(count):
            assert client.call({"op": "put", "key": f"{prefix}{i % 40}", "value": i}) == {
                "ok": True
            }


def snapshot_files(cluster: LiveCluster, index: int) -> list[Path]:
    return sorted((cluster.data_dir(index) / "snapshots").glob("snap-*.snap"))


def test_snapshots_compact_the_log_and_a_wiped_node_rejoins_by_install_snapshot(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    cluster = snapshot_cluster(make_cluster)
    write(cluster, "a", 3 * SNAPSHOT_EVERY)
    statuses = cluster.wait_converged()
    for status in statuses:
        assert status["snapshots_taken"] >= 2
        assert status["log_offset"] > 0  # entries below the previous snapshot are gone
    leader = cluster.wait_for_leader()
    follower = (leader + 1) % 3
    assert cluster.terminate(follower) == 0
    for path in sorted(cluster.data_dir(follower).iterdir()):
        if path.is_dir():
            for inner in path.iterdir():
                inner.unlink()
            path.rmdir()
        else:
            path.unlink()
    write(cluster, "b", SNAPSHOT_EVERY)
    start_with_snapshots(cluster, follower)
    statuses = cluster.wait_converged()
    cluster.assert_same_digests(statuses)
    rejoined = next(s for s in statuses if s["id"] == follower + 1)
    assert rejoined["snapshots_received"] >= 1
    assert rejoined["snapshot_index"] > 0


def test_all_nodes_killed_restart_from_snapshots_and_keep_every_write(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    cluster = snapshot_cluster(make_cluster)
    write(cluster, "c", 2 * SNAPSHOT_EVERY + 37)
    before = cluster.wait_converged()
    for index in range(3):
        cluster.kill(index)
    for index in range(3):
        assert snapshot_files(cluster, index), f"node {index + 1} has no snapshot"
        start_with_snapshots(cluster, index)
    cluster.wait_for_leader()
    for index in range(3):
        assert "restored snapshot at index" in cluster.wait_for_log_line(index, "restored")
    with cluster.client() as client:
        for i in range(40):
            expected = max(n for n in range(2 * SNAPSHOT_EVERY + 37) if n % 40 == i)
            assert client.call({"op": "get", "key": f"c{i}"}) == {"value": expected}
    after = cluster.wait_converged()
    cluster.assert_same_digests(after)
    assert after[0]["state_digest"] == before[0]["state_digest"]


def test_a_damaged_newest_snapshot_is_skipped_for_the_previous_one(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    cluster = snapshot_cluster(make_cluster)
    write(cluster, "d", 3 * SNAPSHOT_EVERY)
    cluster.wait_converged()
    victim = (cluster.wait_for_leader() + 1) % 3
    assert cluster.terminate(victim) == 0
    newest = snapshot_files(cluster, victim)[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    start_with_snapshots(cluster, victim)
    cluster.wait_for_log_line(victim, newest.name)
    write(cluster, "e", 10)
    cluster.assert_same_digests(cluster.wait_converged())


def test_phalanx_snapshot_takes_one_on_every_member(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    cluster = snapshot_cluster(make_cluster)
    write(cluster, "f", 30)
    cluster.wait_converged()
    assert main(["snapshot", "--members", cluster.members]) == 0
    for index in range(3):
        assert snapshot_files(cluster, index)


def test_snapshots_are_also_triggered_by_bytes(tmp_path: Path) -> None:
    from phalanx.server.local import LocalCluster

    cluster = LocalCluster(
        tmp_path,
        services=["phalanx.examples.kv:KeyValue"] * 3,
        settings={"snapshot_every_entries": 0, "snapshot_every_bytes": 20_000},
    )
    try:
        for index in range(3):
            cluster.start(index)
        with Client(cluster.addresses, timeout=20) as client:
            for i in range(300):
                client.call({"op": "put", "key": f"k{i % 30}", "value": "v" * 100})
            statuses = [client.status(i) for i in range(3)]
        assert all(s.snapshots_taken >= 1 for s in statuses), statuses
    finally:
        cluster.stop_all()
