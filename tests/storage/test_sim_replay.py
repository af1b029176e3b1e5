"""Fixed simulator scenarios replayed through the real storage codec.

The simulator keeps each node's disk as a `MemoryStorage`. These tests run seeded
scenarios (leader crashes, partitions, crashes in the middle of a batch, so logs get
truncated and terms change) and check that `WalStorage`, fed the same writes, restores
exactly what the simulated disk holds (issue 3: "fixed simulation scenarios still pass
with the real storage codec"). The simulator itself is not modified: the mirror is a
`MemoryStorage` subclass swapped in before the first event.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from tests.storage.helpers import CLUSTER

from phalanx.core.types import Entry, HardState, NodeId
from phalanx.sim.cluster import SimCluster
from phalanx.storage import WalStorage
from phalanx.storage.memory import MemoryStorage

SEGMENT_BYTES_MAX = 2048


class WalMirrorStorage(MemoryStorage):
    """A `MemoryStorage` that also persists every write and sync through a `WalStorage`.
    The simulator writes entries only together with their sync (a crash strikes before
    the write or after the sync), so both hold the same entries through crashes."""

    def __init__(self, wal: WalStorage) -> None:
        super().__init__()
        self.wal = wal
        self.truncations = 0

    def write(self, entries: Sequence[Entry], hard_state: HardState | None) -> None:
        stored = self.synced_entries
        if entries and stored and entries[0].index <= stored[-1].index:
            self.truncations += 1
        super().write(entries, hard_state)
        self.wal.write(entries, hard_state)

    def sync(self) -> None:
        super().sync()
        self.wal.sync()


def open_wal(
    directory: Path, node_id: NodeId, segment_bytes_max: int = SEGMENT_BYTES_MAX
) -> WalStorage:
    return WalStorage(
        directory, cluster_id=CLUSTER, node_id=node_id, segment_bytes_max=segment_bytes_max
    )


def run_churn_scenario(cluster: SimCluster, seed: int, rounds: int) -> None:
    """Figure-8-style churn: proposals everywhere, leaders crash, partitions come and go."""
    rng = random.Random(seed)
    cluster.run_until_leader()
    for round_number in range(rounds):
        for node in cluster.alive():
            cluster.propose(f"{round_number}/{node}".encode() * rng.randint(1, 8), node)
        cluster.run_ticks(rng.randint(1, 15))
        leader = cluster.leader()
        if leader is not None and rng.random() < 0.3:
            # A cut-off leader takes entries it can never commit: its log gets truncated
            # when it rejoins.
            cluster.disconnect(leader)
            for _ in range(3):
                cluster.propose(b"doomed", leader)
        elif leader is not None and rng.random() < 0.4:
            cluster.crash(leader)
        if rng.random() < 0.2:
            cluster.partition([n for n in cluster.ids if rng.random() < 0.6])
        elif rng.random() < 0.3:
            cluster.heal()
        down = [n for n in cluster.ids if n not in cluster.alive()]
        if len(down) > len(cluster.ids) // 2 or (down and rng.random() < 0.3):
            cluster.restart(rng.choice(down))
    cluster.heal()
    cluster.crash_in_ready_rate = 0.0
    for node in cluster.ids:
        cluster.restart(node)
    cluster.run_ticks(100)


def assert_restores_the_disk(
    directory: Path, node_id: NodeId, entries: list[Entry], hard_state: HardState
) -> None:
    with open_wal(directory, node_id) as wal:
        restored = wal.load()
    assert restored.report == []
    assert restored.entries == entries, f"node {node_id}"
    # A commit index alone is written lazily (it is a hint), on each side by its own
    # clock; the term and the vote must agree.
    assert (restored.hard_state.term, restored.hard_state.vote) == (
        hard_state.term,
        hard_state.vote,
    ), f"node {node_id}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_ready_through_the_wal_restores_the_simulated_disk(tmp_path: Path, seed: int) -> None:
    cluster = SimCluster(5, seed)
    mirrors: dict[NodeId, WalMirrorStorage] = {}
    for node_id, node in cluster.nodes.items():
        wal = open_wal(tmp_path / f"node-{node_id}", node_id)
        assert wal.load().entries == []
        mirrors[node_id] = node.storage = WalMirrorStorage(wal)
    cluster.crash_in_ready_rate = 0.002
    run_churn_scenario(cluster, seed, rounds=150)
    cluster.check_log_matching()

    assert sum(m.truncations for m in mirrors.values()) > 0, "the scenario truncated no log"
    for node_id, mirror in mirrors.items():
        mirror.wal.close()
        entries = mirror.synced_entries
        assert entries, f"node {node_id} stored nothing"
        directory = tmp_path / f"node-{node_id}"
        assert_restores_the_disk(directory, node_id, entries, mirror.synced_hard_state)


@pytest.mark.parametrize("seed", [4, 5])
def test_the_final_simulated_disks_round_trip_through_the_wal(tmp_path: Path, seed: int) -> None:
    cluster = SimCluster(3, seed)
    run_churn_scenario(cluster, seed, rounds=40)
    rng = random.Random(seed)
    for node_id, node in cluster.nodes.items():
        node.storage.close()  # makes the latest commit index durable too
        entries, hard_state = node.storage.synced_entries, node.storage.synced_hard_state
        directory = tmp_path / f"node-{node_id}"
        with open_wal(directory, node_id, segment_bytes_max=256) as wal:
            wal.load()
            position = 0
            while position < len(entries):
                batch = entries[position : position + rng.randint(1, 20)]
                wal.write(batch, None)
                wal.sync()
                position += len(batch)
            wal.write([], hard_state)
        assert len(list(directory.glob("wal-*.seg"))) > 1
        assert_restores_the_disk(directory, node_id, entries, hard_state)
