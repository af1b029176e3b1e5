"""A newcomer's first service lives in a .py file in the current directory (issue 11,
item 7): `phalanx node` and `phalanx cluster` import it from there, started by the
installed `phalanx` script as well as by `python -m phalanx`; and a service without
`restore()` is told at start that snapshots are off."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from phalanx.client import Client
from phalanx.transport.addresses import free_ports

from .helpers import (
    PHALANX_MODULE,
    PHALANX_SCRIPT,
    Processes,
    leader_position,
    wait_until,
    write_service_module,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PHALANX_SCRIPT.exists(), reason="the phalanx script is not installed"),
]

CALL_TIMEOUT_S = 20.0


def serves_counter(processes: Processes, process: subprocess.Popen[bytes], address: str) -> None:
    """Waits until the node at `address` leads, then adds through it."""
    wait_until(
        lambda: leader_position([address]) is not None,
        f"a leader at {address}",
        describe=lambda: processes.output(process),
    )
    with Client([address], timeout=CALL_TIMEOUT_S) as client:
        assert client.call({"op": "add", "n": 5}) == {"ok": True, "value": 5}


def start_counter_node(
    tmp_path: Path, processes: Processes, program: list[str]
) -> tuple[subprocess.Popen[bytes], str]:
    """`program node` as the single member, serving Counter from a module in its
    working directory; returns the process and its address."""
    module = write_service_module(tmp_path)
    address = f"127.0.0.1:{free_ports(1)[0]}"
    argv = [*program, "node", "--id", "1", "--members", f"1={address}", "--data", "data"]
    node = processes.start([*argv, "--service", f"{module}:Counter"], cwd=tmp_path)
    return node, address


def test_phalanx_node_imports_a_service_module_from_its_working_directory(
    tmp_path: Path, processes: Processes
) -> None:
    node, address = start_counter_node(tmp_path, processes, [str(PHALANX_SCRIPT)])
    serves_counter(processes, node, address)
    assert processes.stop(node) == 0


def test_phalanx_cluster_runs_a_service_module_from_its_working_directory(
    tmp_path: Path, processes: Processes
) -> None:
    module = write_service_module(tmp_path)
    port = free_ports(1)[0]
    argv = [str(PHALANX_SCRIPT), "cluster", "--nodes", "1", "--base-port", str(port)]
    argv += ["--data", "data", "--service", f"{module}:Counter"]
    cluster = processes.start(argv, cwd=tmp_path)
    serves_counter(processes, cluster, f"127.0.0.1:{port}")
    assert processes.stop(cluster) == 0


def test_a_service_without_restore_is_told_at_start_that_snapshots_are_off(
    tmp_path: Path, processes: Processes
) -> None:
    node, _ = start_counter_node(tmp_path, processes, list(PHALANX_MODULE))
    line = wait_until(
        lambda: next(
            (x for x in processes.output(node).splitlines() if "snapshots are off" in x), None
        ),
        "the snapshot warning",
        describe=lambda: processes.output(node),
    )
    assert "WARNING" in line and "newcomer_service:Counter has no restore()" in line, line
    assert processes.stop(node) == 0
