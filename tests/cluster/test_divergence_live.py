"""Divergence detection with real processes: the faulty-replica demo end to end, and no
false alarm from correct services across restarts and snapshots."""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from phalanx.cli import main
from phalanx.client import AsyncClient
from phalanx.demo.bank import Stats, open_accounts, transfer_until
from phalanx.server.local import LocalCluster, cluster_statuses

from .harness import LiveCluster
from .test_snapshots_live import write


def test_demo_faulty_detects_isolates_and_repairs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "faulty"]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 4 and "FAIL" not in out
    assert "self-diverged" in out and "others-diverged" in out


def test_no_false_alarm_across_restarts_and_snapshots(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    cluster = make_cluster(3)
    for index in range(3):
        config = cluster.configs[index]
        path = cluster.root / f"node-{index + 1}.toml"
        path.write_text(
            f'id = {config.node_id}\nmembers = "{cluster.members}"\n'
            f'data = "{config.data_dir}"\nservice = "{config.service}"\n'
            "checkpoint_every_entries = 50\nsnapshot_every_entries = 120\n"
            "snapshot_compaction_margin = 10\n"
        )
    commands = [
        [
            sys.executable,
            "-m",
            "phalanx",
            "node",
            "--config",
            str(cluster.root / f"node-{i + 1}.toml"),
        ]
        for i in range(3)
    ]
    for index in range(3):
        cluster.start(index, commands[index])
    cluster.wait_for_leader()
    for round_number in range(3):
        write(cluster, f"r{round_number}-", 150)
        victim = round_number % 3
        cluster.kill(victim)
        write(cluster, f"s{round_number}-", 60)
        cluster.start(victim, commands[victim])
        cluster.wait_for_leader()
    statuses = cluster.wait_converged()
    cluster.assert_same_digests(statuses)
    for status in statuses:
        assert status["diverged"] is None
        check = status["replica_check"]
        assert check is None or "agree" in check, check


def test_two_replicas_that_diverge_cannot_tell_which(tmp_path: Path) -> None:
    async def scenario(cluster: LocalCluster) -> list[dict[str, Any]]:
        cluster.start(0)
        cluster.start(1)
        await open_accounts(cluster)
        stats = Stats()
        async with AsyncClient(cluster.addresses, timeout=30) as client:
            loop = asyncio.get_running_loop()
            for _ in range(60):
                stop = loop.time() + 0.5
                rng = random.Random(len(stats.completions))
                await asyncio.gather(*(transfer_until(client, rng, stats, stop) for _ in range(8)))
                statuses = await cluster_statuses(cluster)
                checks = [s.replica_check or "" for s in statuses if s is not None]
                if len(checks) == 2 and all("cannot tell which" in c for c in checks):
                    return [s for s in statuses if s is not None]
        raise AssertionError(f"no undecidable verdict: {await cluster_statuses(cluster)}")

    cluster = LocalCluster(
        tmp_path,
        nodes=2,
        services=["phalanx.examples.bank:Bank", "phalanx.examples.faulty:FaultyBank"],
        settings={"checkpoint_every_entries": 100},
    )
    try:
        statuses = asyncio.run(scenario(cluster))
    finally:
        cluster.stop_all()
    # Nobody can be blamed, so nobody is isolated: both still report no self-divergence.
    assert all(status.diverged is None for status in statuses)
