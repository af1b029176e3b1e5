"""`phalanx.server.local.LocalCluster`, the one local process cluster: what its users
(`phalanx cluster`, the demo, chaos, the benchmarks and these tests) rely on beyond
starting nodes: clear errors from a node that cannot start, process control by
signals, and no node outliving its caller."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from phalanx.server.local import (
    HOST,
    LocalCluster,
    NodeExitedError,
    cluster_statuses,
    wait_for_leader,
)

from .harness import EXIT_TIMEOUT_S, LEADER_TIMEOUT_S

#: A caller that starts a node, says its pid, and dies by SIGKILL without cleaning up.
CRASHING_CALLER = """
import os, signal, sys
from pathlib import Path
from phalanx.server.local import LocalCluster
cluster = LocalCluster(Path(sys.argv[1]), 1)
cluster.start(0)
print(cluster.pid(0), flush=True)
sys.stdin.readline()
os.kill(os.getpid(), signal.SIGKILL)
"""


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_a_node_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        cluster = LocalCluster(tmp_path, 1, ports=[port])
        with cluster, pytest.raises(NodeExitedError) as caught:
            cluster.start(0)
            asyncio.run(wait_for_leader(cluster, timeout_s=LEADER_TIMEOUT_S))
    message = str(caught.value)
    assert message.startswith("node 1 exited with code"), message
    assert str(port) in message, message  # the node's own words, from its log


def test_pause_resume_stop_and_restart_by_signals(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, 1) as cluster:
        cluster.start(0)
        assert asyncio.run(wait_for_leader(cluster)) == 0
        cluster.pause(0)
        assert cluster.state(0) == "paused"
        assert asyncio.run(cluster_statuses(cluster, attempt_timeout_s=0.2)) == [None]
        cluster.resume(0)
        assert asyncio.run(wait_for_leader(cluster)) == 0
        cluster.pause(0)
        assert cluster.stop(0, timeout_s=EXIT_TIMEOUT_S) == 0  # resumed to see SIGTERM
        assert cluster.state(0) == "not running" and not cluster.paused
        cluster.start(0)
        cluster.restart(0, kill=True)
        assert asyncio.run(wait_for_leader(cluster)) == 0
    assert cluster.started_indices() == []
    assert "stopped" in cluster.log_text(0)


def test_nodes_die_with_a_caller_killed_by_sigkill(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", CRASHING_CALLER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as caller:
        assert caller.stdout is not None and caller.stdin is not None
        node_pid = int(caller.stdout.readline())
        try:
            assert pid_alive(node_pid)
            caller.stdin.write("\n")
            caller.stdin.flush()
            assert caller.wait(timeout=EXIT_TIMEOUT_S) == -signal.SIGKILL
            deadline = time.monotonic() + EXIT_TIMEOUT_S
            while pid_alive(node_pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not pid_alive(node_pid), "the node outlived its caller"
        finally:
            if pid_alive(node_pid):
                os.kill(node_pid, signal.SIGKILL)


def test_a_node_started_from_a_thread_outlives_that_thread(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, 1) as cluster:
        starter = threading.Thread(target=cluster.start, args=(0,))
        starter.start()
        starter.join()
        assert asyncio.run(wait_for_leader(cluster)) == 0  # not killed with its starter
