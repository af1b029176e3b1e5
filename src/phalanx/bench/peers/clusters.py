"""Starting and stopping the peers' 3-member clusters on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from phalanx.bench.clusters import HOST
from phalanx.bench.loadgen import EtcdConnection
from phalanx.transport.addresses import free_ports

#: Bounds on waiting, not expectations.
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0

PYSYNCOBJ_DURABILITY = "memory only, no fsync"
ETCD_DURABILITY = "fsync on (WAL fdatasync per batch)"


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_pysyncobj(root: Path, workload: dict[str, Any], *, batch: bool) -> dict[str, Any]:
    """Starts 3 PySyncObj nodes; the leader runs `workload` in-process; returns its result."""
    root.mkdir(parents=True, exist_ok=True)
    addresses = [f"{HOST}:{port}" for port in free_ports(3)]
    result_file = root / f"result-{'batch' if batch else 'nobatch'}.json"
    processes = []
    try:
        for index, address in enumerate(addresses):
            partners = ",".join(a for a in addresses if a != address)
            argv = [
                sys.executable, "-m", "phalanx.bench.peers.pysyncobj_node",
                "--self", address, "--partners", partners, "--result", str(result_file),
                "--workload", json.dumps(workload), "--batch", "on" if batch else "off",
            ]  # fmt: skip
            with (root / f"pysyncobj-{index + 1}.log").open("ab") as log_file:
                processes.append(subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT))
        budget = READY_TIMEOUT_S + _workload_seconds(workload)
        deadline = time.monotonic() + budget
        while not result_file.exists():
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"PySyncObj cluster gave no result; logs in {root}")
            time.sleep(0.1)
        result: dict[str, Any] = json.loads(result_file.read_text())
        return result
    finally:
        _stop(processes)


def _workload_seconds(workload: dict[str, Any]) -> float:
    levels = len(workload.get("levels", []))
    per_level = float(workload.get("warmup_s", 0)) + float(workload.get("measure_s", 0)) + 30
    return levels * per_level + int(workload.get("requests", 0)) * 0.2


class EtcdCluster:
    """Three etcd members (default settings, so fsync on) on loopback ports."""

    def __init__(self, etcd: str, root: Path) -> None:
        self.etcd = etcd
        self.root = root
        ports = free_ports(6)
        self.client_addresses = [f"{HOST}:{p}" for p in ports[:3]]
        self.peer_urls = [f"http://{HOST}:{p}" for p in ports[3:]]
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        initial = ",".join(f"m{i + 1}={url}" for i, url in enumerate(self.peer_urls))
        for index, (client, peer) in enumerate(
            zip(self.client_addresses, self.peer_urls, strict=True)
        ):
            argv = [
                self.etcd, "--name", f"m{index + 1}",
                "--data-dir", str(self.root / f"m{index + 1}.etcd"),
                "--listen-client-urls", f"http://{client}",
                "--advertise-client-urls", f"http://{client}",
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", "phalanx-bench", "--log-level", "warn",
            ]  # fmt: skip
            with (self.root / f"etcd-{index + 1}.log").open("ab") as log_file:
                self.processes.append(
                    subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
                )

    def watch(self, leader: str) -> dict[str, int]:
        """Names and pids of the members, the leader marked, for CPU accounting."""
        return {
            f"member {i + 1}" + (" (leader)" if address == leader else ""): process.pid
            for i, (address, process) in enumerate(
                zip(self.client_addresses, self.processes, strict=True)
            )
        }

    def stop(self) -> None:
        _stop(self.processes)
        self.processes = []

    def leader_address(self) -> str:
        """The client address of the member that leads, once all three agree on one."""
        return asyncio.run(self._leader_address())

    async def _leader_address(self) -> str:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            statuses = await asyncio.gather(
                *(self._status(a) for a in self.client_addresses), return_exceptions=True
            )
            good = [s for s in statuses if isinstance(s, dict)]
            leaders = {s.get("leader") for s in good}
            if len(good) == 3 and len(leaders) == 1 and None not in leaders:
                for address, status in zip(self.client_addresses, good, strict=True):
                    if status["header"]["member_id"] == status["leader"]:
                        await self._check_put(address)
                        return address
            await asyncio.sleep(0.2)
        raise RuntimeError(f"etcd elected no leader in time; logs in {self.root}")

    async def _status(self, address: str) -> dict[str, Any]:
        connection = EtcdConnection(address)
        try:
            status, body = await asyncio.wait_for(
                connection.post("/v3/maintenance/status", b"{}"), 2.0
            )
        finally:
            await connection.close()
        if status != 200:
            raise RuntimeError(f"status {status}")
        result: dict[str, Any] = json.loads(body)
        return result

    async def _check_put(self, address: str) -> None:
        connection = EtcdConnection(address)
        try:
            await connection.put("phalanx-bench-probe", "ok")
            status, body = await connection.post(
                "/v3/kv/range", json.dumps({"key": base64.b64encode(b"phalanx-bench-probe")
                                            .decode()}).encode()
            )  # fmt: skip
            assert status == 200 and b"kvs" in body, body
        finally:
            await connection.close()
