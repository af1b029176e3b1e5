"""The deliberately broken nodes of `phalanx chaos --unsafe-local-reads` (stale_reads.py):
they know every workload's reads, they start from the configuration they were given,
and a node cut off from the majority really does answer a read with an old value
(which a normal node never does: `--unsafe-local-reads` is the only way to get one)."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from phalanx.chaos import stale_reads
from phalanx.chaos.cluster import ChaosCluster, stale_read_node_command
from phalanx.chaos.nemesis import Shape, partition_links
from phalanx.chaos.workloads import KV_SERVICE, WORKLOADS, make_workload
from phalanx.client import AsyncClient
from phalanx.core.errors import ConfigError
from phalanx.server.config import NodeConfig, build_config
from phalanx.server.local import wait_for_leader
from phalanx.transport.addresses import free_ports

OPS_SAMPLED = 500
TIMEOUT_S = 20.0


class _Captured(Exception):
    pass


@pytest.mark.parametrize("name", WORKLOADS)
def test_every_read_of_every_workload_is_answered_locally_and_nothing_else(name: str) -> None:
    workload = make_workload(name)
    read_ops = stale_reads.READ_OPS[workload.service]
    rng = random.Random(1)
    ops = [op for op in (workload.next_op(rng) for _ in range(OPS_SAMPLED)) if op is not None]
    ops += workload.final_reads()
    assert any(op.is_read for op in ops) and any(not op.is_read for op in ops)
    for op in ops:
        assert stale_reads.is_read(read_ops, op.command) == op.is_read, op
    for command in workload.setup_commands():
        assert not stale_reads.is_read(read_ops, command), command


def config_of(tmp_path: Path, service: str) -> NodeConfig:
    return build_config(
        {
            "id": 1,
            "members": "1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103",
            "data": str(tmp_path / "node-1"),
            "service": service,
            "raft": {"election_timeout_ticks": 40},
            "auto_repair": True,
        }
    )


def test_the_stale_read_command_starts_a_stale_read_node_with_the_config_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_of(tmp_path, KV_SERVICE)
    started: list[NodeConfig] = []

    def capture(node_config: NodeConfig, *args: Any, **kwargs: Any) -> None:
        started.append(node_config)
        raise _Captured

    monkeypatch.setattr(stale_reads, "StaleReadNode", capture)
    argv = stale_read_node_command(config)
    assert argv[1:3] == ["-m", "phalanx.chaos.stale_reads"]
    with pytest.raises(_Captured):
        stale_reads.main(argv[3:])
    assert started == [config]


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc/PID/environ")
def test_a_stale_read_node_started_by_hand_runs_with_the_fixed_hash_seed(tmp_path: Path) -> None:
    # As `phalanx node` does (tests/cli/test_node_hash_seed.py): it re-executes itself,
    # in the same process, with PYTHONHASHSEED=0 before it reads or writes anything.
    port = free_ports(1)[0]
    argv = [sys.executable, "-m", "phalanx.chaos.stale_reads", "--id", "1"]
    argv += ["--members", f"1=127.0.0.1:{port}", "--data", str(tmp_path / "data")]
    argv += ["--service", KV_SERVICE]
    environment = dict(os.environ, PYTHONHASHSEED="random")
    process = subprocess.Popen(argv, env=environment, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not listening(port):  # then it also stops gracefully on SIGTERM
            assert process.poll() is None and time.monotonic() < deadline, "it never listened"
            time.sleep(0.05)
        environ = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
        assert b"PYTHONHASHSEED=0" in environ
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, stderr.decode()


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return False
    return True


def test_a_stale_read_node_refuses_a_service_whose_reads_it_does_not_know(
    tmp_path: Path,
) -> None:
    config = config_of(tmp_path, "phalanx.examples.reminders:Reminders")
    with pytest.raises(ConfigError, match="stale local reads know the reads of"):
        stale_reads.StaleReadNode(config)


@pytest.mark.parametrize(("unsafe_local_reads", "value_read"), [(True, "old"), (False, "new")])
def test_only_a_stale_read_node_cut_off_from_the_majority_answers_with_an_old_value(
    tmp_path: Path, unsafe_local_reads: bool, value_read: str
) -> None:
    async def scenario() -> None:
        cluster = ChaosCluster(tmp_path, 3, KV_SERVICE, {}, unsafe_local_reads=unsafe_local_reads)
        client = AsyncClient(cluster.client_addresses, attempt_timeout=0.5)
        try:
            await cluster.prepare()
            cluster.start_all()
            leader = await wait_for_leader(cluster, timeout_s=TIMEOUT_S)
            follower = (leader + 1) % cluster.size
            await client.call({"op": "put", "key": "k", "value": "old"}, timeout=TIMEOUT_S)
            await converged(cluster)
            cluster.set_cut(partition_links(Shape.ISOLATE_FOLLOWER, cluster.size, [follower]))
            await client.call({"op": "put", "key": "k", "value": "new"}, timeout=TIMEOUT_S)
            await client.status(address_index=follower)
            reply = await client.call({"op": "get", "key": "k"}, timeout=TIMEOUT_S)
            assert reply == {"value": value_read}
        finally:
            await client.close()
            cluster.close()
            await cluster.close_proxies()

    asyncio.run(scenario())


async def converged(cluster: ChaosCluster) -> None:
    """Waits until every node has applied the same index."""
    for _ in range(int(TIMEOUT_S / 0.05)):
        statuses = await cluster.statuses()
        applied = {status.applied_index if status else None for status in statuses}
        if len(applied) == 1 and None not in applied:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"the nodes did not converge: {cluster.describe_logs()}")
