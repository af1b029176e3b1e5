"""`phalanx cluster` is where a newcomer watches a failover (issue 11, item 7): a node
that dies is reported with its exit code and the others keep serving; SIGTERM stops
every node, killing one that will not stop, instead of leaving them as orphans."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from tests.cluster.harness import free_consecutive_ports

from phalanx.client import Client
from phalanx.core import Role

from .helpers import (
    PHALANX_MODULE,
    Processes,
    children,
    pid_alive,
    statuses,
    wait_until,
    write_service_module,
)

pytestmark = pytest.mark.slow

CALL_TIMEOUT_S = 20.0


def node_ids_by_pid(cluster_pid: int, count: int) -> dict[int, int]:
    """The node processes of a `phalanx cluster`, by node id (read from their argv)."""
    found: dict[int, int] = {}

    def look() -> bool:
        found.clear()
        for pid in children(cluster_pid):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            config = next((a for a in argv if a.endswith(b".toml")), b"")
            found[int(Path(config.decode()).stem.removeprefix("node-"))] = pid
        return len(found) == count

    wait_until(look, f"{count} node processes")
    return dict(found)


def test_a_node_that_exits_is_reported_and_the_others_keep_serving(
    tmp_path: Path, processes: Processes
) -> None:
    base = free_consecutive_ports(3)
    addresses = [f"127.0.0.1:{base + i}" for i in range(3)]
    argv = [*PHALANX_MODULE, "cluster", "--nodes", "3", "--base-port", str(base)]
    cluster = processes.start([*argv, "--data", str(tmp_path / "data")])

    def leader() -> int | None:
        found = statuses(addresses)
        leaders = [s.id for s in found if s is not None and s.role is Role.LEADER]
        return leaders[0] if len(leaders) == 1 and all(found) else None

    first = wait_until(leader, "a leader", describe=lambda: processes.output(cluster))
    pids = node_ids_by_pid(cluster.pid, 3)
    survivors = [pid for node, pid in pids.items() if node != first]
    os.kill(pids[first], signal.SIGKILL)

    report = f"node {first} exited with code -9 (killed by SIGKILL); the others keep running"
    wait_until(lambda: report in processes.output(cluster), "the exit to be reported")
    assert cluster.poll() is None, processes.output(cluster)
    assert all(pid_alive(pid) for pid in survivors)

    others = [a for i, a in enumerate(addresses) if i + 1 != first]

    def new_leader() -> bool:
        found = statuses(others)
        return any(s is not None and s.role is Role.LEADER for s in found)

    wait_until(new_leader, "a new leader among the others")
    with Client(others, timeout=CALL_TIMEOUT_S) as client:
        assert client.call({"op": "put", "key": "after", "value": "failover"}) == {"ok": True}

    assert processes.stop(cluster, signal.SIGTERM) == 0
    assert not any(pid_alive(pid) for pid in survivors)
    assert "SIGTERM: stopping the nodes" in processes.output(cluster)


def test_sigterm_stops_every_node_and_kills_one_that_will_not_stop(
    tmp_path: Path, processes: Processes
) -> None:
    module = write_service_module(tmp_path)
    base = free_consecutive_ports(2)
    addresses = [f"127.0.0.1:{base + i}" for i in range(2)]
    argv = [*PHALANX_MODULE, "cluster", "--nodes", "2", "--base-port", str(base)]
    argv += ["--data", "data", "--service", f"{module}:Stubborn", "--stop-grace-seconds", "1"]
    cluster = processes.start(argv, cwd=tmp_path)
    wait_until(
        lambda: all(statuses(addresses)),
        "both nodes to answer",
        describe=lambda: processes.output(cluster),
    )
    pids = node_ids_by_pid(cluster.pid, 2)

    assert processes.stop(cluster, signal.SIGTERM) == 0
    output = processes.output(cluster)
    assert not any(pid_alive(pid) for pid in pids.values()), output
    for node in pids:
        assert f"node {node} still running 1s after SIGTERM; killing it" in output, output
