"""Clusters of real phalanx node processes on 127.0.0.1 for the benchmarks.

Each node is started with the argv `phalanx node` gets from `node_command(config)` (as
`phalanx cluster` and the demo do), its output in `node-N.log` beside its data.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from phalanx.client import AsyncClient, ClientError
from phalanx.server.cli import node_command
from phalanx.server.config import build_config
from phalanx.transport.addresses import free_ports

KV_SERVICE = "phalanx.examples.kv:KeyValue"
HOST = "127.0.0.1"
#: Bounds on waiting for the cluster, not expectations.
LEADER_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0

Status = dict[str, Any]


class BenchCluster:
    def __init__(self, root: Path, nodes: int = 3, service: str = KV_SERVICE) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.addresses = [f"{HOST}:{port}" for port in free_ports(nodes)]
        members = ",".join(f"{i + 1}={a}" for i, a in enumerate(self.addresses))
        self.configs = [
            build_config(
                {"id": i + 1, "members": members, "data": str(root / f"node-{i + 1}"),
                 "service": service}
            )
            for i in range(nodes)
        ]  # fmt: skip
        self.logs = [root / f"node-{i + 1}.log" for i in range(nodes)]
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * nodes
        #: The leader when last looked for (by `running_cluster`), for labels.
        self.leader_index: int | None = None

    def watch(self) -> dict[str, int]:
        """Names and pids of the running nodes, the leader marked, for CPU accounting."""
        return {
            f"node {i + 1}" + (" (leader)" if i == self.leader_index else ""): process.pid
            for i, process in enumerate(self.processes)
            if process is not None
        }

    def start(self, index: int) -> None:
        assert self.processes[index] is None, f"node {index + 1} is running"
        with self.logs[index].open("ab") as log_file:
            self.processes[index] = subprocess.Popen(
                node_command(self.configs[index]), stdout=log_file, stderr=subprocess.STDOUT
            )

    def start_all(self) -> None:
        for index, process in enumerate(self.processes):
            if process is None:
                self.start(index)

    def pid(self, index: int) -> int:
        process = self.processes[index]
        assert process is not None, f"node {index + 1} is not running"
        return process.pid

    def kill(self, index: int) -> None:
        process = self.processes[index]
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            self.processes[index] = None

    def stop(self, index: int) -> None:
        process = self.processes[index]
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.processes[index] = None

    def stop_all(self) -> None:
        for index in range(len(self.processes)):
            self.stop(index)

    async def statuses(self, attempt_timeout: float = 0.5) -> list[Status | None]:
        async def one(address: str) -> Status | None:
            client = AsyncClient([address], attempt_timeout=attempt_timeout)
            try:
                return await client.status()
            except (ClientError, OSError, TimeoutError):
                return None
            finally:
                await client.close()

        return list(await asyncio.gather(*(one(a) for a in self.addresses)))

    def current_term(self) -> int:
        """The highest Raft term any running node reports (0 if none answers)."""
        statuses = asyncio.run(self.statuses())
        return max((int(s["term"]) for s in statuses if s is not None), default=0)

    def log_counts(self) -> tuple[int, int]:
        """(log entries, commands applied) of the most advanced running node: between
        two readings, entries per command says how many entries each acknowledged
        command cost (retries appended again push it above 1)."""
        statuses = [s for s in asyncio.run(self.statuses()) if s is not None]
        if not statuses:
            return (0, 0)
        best = max(statuses, key=lambda s: int(s["applied_index"]))
        return (int(best["last_index"]), int(best["commands_applied"]))

    async def wait_for_leader(self, timeout_s: float = LEADER_TIMEOUT_S) -> int:
        """The index of the node that leads with every running node agreeing."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            statuses = await self.statuses()
            leaders = {s["leader"] for s in statuses if s is not None}
            for index, status in enumerate(statuses):
                if status is not None and status["role"] == "leader" and len(leaders) == 1:
                    return index
            await asyncio.sleep(0.05)
        raise RuntimeError(f"no leader within {timeout_s}s; node logs in {self.logs[0].parent}")


@contextlib.contextmanager
def running_cluster(nodes: int = 3, keep: bool = False) -> Iterator[BenchCluster]:
    """A started cluster with a leader, its data in a temporary directory removed after."""
    root = Path(tempfile.mkdtemp(prefix="phalanx-bench-"))
    cluster = BenchCluster(root, nodes)
    try:
        cluster.start_all()
        cluster.leader_index = asyncio.run(cluster.wait_for_leader())
        yield cluster
    finally:
        cluster.stop_all()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
