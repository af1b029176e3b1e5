"""A snapshot whose writer cannot be forked (no memory, no processes) fails that
snapshot only: the node says why, keeps serving, and takes the next one. It used to
leave the replica believing a snapshot was still being taken, forever."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from phalanx.client import AsyncClient
from phalanx.server.config import NodeConfig
from phalanx.server.node import Node
from phalanx.transport.addresses import free_ports


def test_a_fork_that_fails_fails_one_snapshot_and_the_next_one_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (port,) = free_ports(1)
    config = NodeConfig(
        node_id=1,  # type: ignore[arg-type]
        members={1: ("127.0.0.1", port)},  # type: ignore[dict-item]
        data_dir=tmp_path / "node",
        service="phalanx.examples.kv:KeyValue",
        snapshot_every_entries=20,
        snapshot_compaction_margin=2,
    )
    real_fork = os.fork
    forks = [0]

    def fork_once_failing() -> int:
        forks[0] += 1
        if forks[0] == 1:
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        return real_fork()

    monkeypatch.setattr(os, "fork", fork_once_failing)

    async def scenario() -> None:
        node = Node(config)
        stop = asyncio.Event()
        running = asyncio.create_task(node.run(stop))
        try:
            async with AsyncClient(f"127.0.0.1:{port}", timeout=10.0) as client:
                for i in range(30):
                    await client.call({"op": "put", "key": f"k{i}", "value": i})
                failed = node.status()
                assert failed.snapshots_taken == 0
                assert failed.snapshot_error is not None
                assert "cannot fork the writer" in failed.snapshot_error
                # After as many entries again the node tries anew, and succeeds.
                for i in range(30, 80):
                    await client.call({"op": "put", "key": f"k{i}", "value": i})
                for _ in range(100):
                    if node.status().snapshots_taken:
                        break
                    await asyncio.sleep(0.05)
                taken = node.status()
                assert taken.snapshots_taken >= 1 and taken.snapshot_error is None
                assert taken.snapshot_index > 0
        finally:
            stop.set()
            await running

    asyncio.run(scenario())
    assert forks[0] >= 2
