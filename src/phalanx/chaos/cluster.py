"""Node processes of a fault run, wired to each other through the proxy mesh.

Theory of operation
-------------------
`ChaosCluster` does what `phalanx.demo.LocalCluster` does (free ports on 127.0.0.1,
data in a directory, one `phalanx node` process per member, output in
`node-N.log`) with two differences the nemesis needs:

- each node gets its own TOML configuration in which its peers are listed at the
  addresses of the proxies that carry its outbound links (`proxy.ProxyMesh`), while
  its own entry is its real address. Clients use the real addresses.
- processes can be paused (SIGSTOP) and resumed (SIGCONT) as well as killed and
  started again.

`close()` always leaves nothing behind: it resumes paused nodes (a stopped process
would sit on SIGTERM), asks every node to stop, and kills whatever has not stopped
within `STOP_TIMEOUT_S`. The proxies are closed by `close_proxies()`, which must run
on the event loop that started them.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from phalanx.chaos.proxy import HOST, Link, ProxyMesh
from phalanx.client import AsyncClient
from phalanx.server.config import build_config, toml_value
from phalanx.transport.addresses import free_ports

STOP_TIMEOUT_S = 10.0
STATUS_TIMEOUT_S = 0.5

Status = dict[str, Any]


class ChaosCluster:
    """`nodes` node processes of `service`; node id `i + 1` is at index `i`."""

    def __init__(self, root: Path, nodes: int, service: str, settings: dict[str, Any]) -> None:
        self.root = root
        self.service = service
        self.settings = dict(settings)
        self.addresses = [(HOST, port) for port in free_ports(nodes)]
        self.mesh = ProxyMesh(self.addresses)
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * nodes
        self.paused: set[int] = set()
        self.config_paths = [root / f"node-{i + 1}.toml" for i in range(nodes)]

    @property
    def nodes(self) -> int:
        return len(self.addresses)

    @property
    def client_addresses(self) -> list[str]:
        return [f"{host}:{port}" for host, port in self.addresses]

    def log_path(self, index: int) -> Path:
        return self.root / f"node-{index + 1}.log"

    async def prepare(self) -> None:
        """Starts the proxies and writes every node's configuration (validated)."""
        await self.mesh.start()
        for index in range(self.nodes):
            self.config_paths[index].write_text(self._config_text(index))

    def _config_text(self, index: int) -> str:
        members = {}
        for peer in range(self.nodes):
            host, port = (
                self.addresses[peer] if peer == index else self.mesh.peer_address(index, peer)
            )
            members[str(peer + 1)] = f"{host}:{port}"
        raw: dict[str, Any] = {
            "id": index + 1,
            "data": str(self.root / f"node-{index + 1}"),
            "service": self.service,
            **self.settings,
        }
        build_config({**raw, "members": members})  # raises ConfigError on a bad setting
        lines = [f"{key} = {toml_value(value)}" for key, value in raw.items()]
        lines.append("[members]")
        lines.extend(f'"{node}" = "{address}"' for node, address in members.items())
        return "\n".join(lines) + "\n"

    # -- processes ---------------------------------------------------------------------

    def start(self, index: int) -> None:
        if self.running(index):
            return
        command = [
            sys.executable,
            "-m",
            "phalanx",
            "node",
            "--config",
            str(self.config_paths[index]),
        ]
        with self.log_path(index).open("ab") as log_file:
            # A session of its own: a Ctrl-C at the terminal (SIGINT to the foreground
            # process group) reaches only the harness, which stops the nodes in order.
            self.processes[index] = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start_all(self) -> None:
        for index in range(self.nodes):
            self.start(index)

    def running(self, index: int) -> bool:
        process = self.processes[index]
        return process is not None and process.poll() is None

    def kill(self, index: int) -> None:
        process = self.processes[index]
        if process is None:
            return
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.processes[index] = None
        self.paused.discard(index)

    def pause(self, index: int) -> None:
        process = self.processes[index]
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGSTOP)
            self.paused.add(index)

    def resume(self, index: int) -> None:
        process = self.processes[index]
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)
        self.paused.discard(index)

    def set_cut(self, links: frozenset[Link]) -> None:
        self.mesh.set_cut(links)

    def reap_exited(self) -> list[tuple[int, int]]:
        """(index, exit code) of every node that exited although nobody stopped it.

        The nemesis's kills clear their process at once, so anything found here died
        on its own (a crash, an assertion) or was stopped from outside the harness.
        """
        exited = []
        for index, process in enumerate(self.processes):
            if process is not None and process.poll() is not None:
                exited.append((index, process.returncode))
                self.processes[index] = None
                self.paused.discard(index)
        return exited

    def describe_logs(self, lines: int = 8) -> str:
        """The last `lines` lines of every node's log, for error messages."""
        parts = []
        for index in range(self.nodes):
            path = self.log_path(index)
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            tail = "\n".join("    " + line for line in text.splitlines()[-lines:])
            parts.append(f"  {path}:\n{tail}")
        return "\n".join(parts)

    def down(self) -> list[int]:
        return [index for index in range(self.nodes) if not self.running(index)]

    def heal_everything(self) -> None:
        """Reconnects every link, resumes every paused node, starts every stopped one."""
        self.mesh.heal_all()
        for index in sorted(self.paused):
            self.resume(index)
        for index in self.down():
            self.start(index)

    def close(self) -> None:
        """Stops every process (resume, SIGTERM, then SIGKILL after STOP_TIMEOUT_S)."""
        for index in sorted(self.paused):
            self.resume(index)
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for index, process in enumerate(self.processes):
            if process is None:
                continue
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self.processes[index] = None

    async def close_proxies(self) -> None:
        await self.mesh.close()

    # -- observing -----------------------------------------------------------------------

    async def statuses(self) -> list[Status | None]:
        """Every node's status, or None for a node that did not answer in time."""

        async def one(address: str) -> Status | None:
            client = AsyncClient([address], attempt_timeout=STATUS_TIMEOUT_S)
            try:
                return await asyncio.wait_for(client.status(), STATUS_TIMEOUT_S * 3)
            except Exception:
                # Not only ClientError: status() can leak the client's private
                # _ConnectionLost when a node dies mid-request (test_found_bugs.py).
                return None
            finally:
                await client.close()

        return list(await asyncio.gather(*(one(a) for a in self.client_addresses)))

    async def leader(self) -> int | None:
        """The index of the node that leads in the highest term seen, if any."""
        return leader_of(await self.statuses())


def leader_of(statuses: list[Status | None]) -> int | None:
    best: tuple[int, int] | None = None
    for index, status in enumerate(statuses):
        if status is not None and status.get("role") == "leader":
            term = int(status["term"])
            if best is None or term > best[0]:
                best = (term, index)
    return None if best is None else best[1]
