"""Node processes of a fault run, wired to each other through the proxy mesh.

Theory of operation
-------------------
`ChaosCluster` is a `phalanx.server.local.LocalCluster` (free ports on 127.0.0.1,
data in a directory, one `phalanx node` process per member, output in `node-N.log`,
kill, pause and resume, nothing left running) whose nodes reach each other only
through the proxies of a `proxy.ProxyMesh`, so that partitions act outside the nodes:
each node's configuration lists its peers at the addresses of the proxies that carry
its outbound links, and itself at its real address. Clients use the real addresses.

With `unsafe_local_reads` every node runs as a `stale_reads.StaleReadNode`, which
answers reads from its own state (broken on purpose, for the checker to catch): the
same configuration, started by `stale_read_node_command` instead of `phalanx node`.

`close()` always leaves nothing behind: it resumes paused nodes (a stopped process
would sit on SIGTERM), asks every node to stop, and kills whatever has not stopped
within `STOP_TIMEOUT_S`. The proxies are closed by `close_proxies()`, which must run
on the event loop that started them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from phalanx.chaos.proxy import Link, ProxyMesh
from phalanx.client import AsyncClient
from phalanx.core.types import NodeId
from phalanx.server.config import NodeConfig
from phalanx.server.local import STOP_TIMEOUT_S, LocalCluster, leader_of, node_command
from phalanx.transport.wire import NodeStatus

__all__ = ["STOP_TIMEOUT_S", "ChaosCluster", "leader_of"]

STATUS_TIMEOUT_S = 0.5
#: The module that runs a node answering reads from its own state.
STALE_READS_MODULE = "phalanx.chaos.stale_reads"


def stale_read_node_command(config: NodeConfig) -> list[str]:
    """`node_command(config)` (the same TOML file), run as a `StaleReadNode`."""
    argv = node_command(config)
    assert argv[2:4] == ["phalanx", "node"], f"node_command changed its argv: {argv}"
    return [argv[0], "-m", STALE_READS_MODULE, *argv[4:]]


class ChaosCluster(LocalCluster):
    """`nodes` node processes of `service`; node id `i + 1` is at index `i`. With
    `unsafe_local_reads` they answer reads from their own state (stale_reads.py)."""

    def __init__(
        self,
        root: Path,
        nodes: int,
        service: str,
        settings: dict[str, Any],
        *,
        unsafe_local_reads: bool = False,
    ) -> None:
        super().__init__(root, nodes, services=service, settings=settings)
        self.unsafe_local_reads = unsafe_local_reads
        self.mesh = ProxyMesh([config.address for config in self.configs])

    @property
    def nodes(self) -> int:
        return self.size

    @property
    def client_addresses(self) -> list[str]:
        return self.addresses

    async def prepare(self) -> None:
        """Starts the proxies and routes every node's peers through them."""
        await self.mesh.start()
        real = [config.address for config in self.configs]
        for index, config in enumerate(self.configs):
            members = {
                NodeId(peer + 1): real[peer]
                if peer == index
                else self.mesh.peer_address(index, peer)
                for peer in range(self.size)
            }
            self.configs[index] = dataclasses.replace(config, members=members)

    def start(self, index: int, argv: Sequence[str] | None = None) -> None:
        """Starts node `index` unless it runs (the nemesis and the healing may both ask)."""
        if self.running(index):
            return
        if argv is None and self.unsafe_local_reads:
            argv = stale_read_node_command(self.configs[index])
        super().start(index, argv)

    def set_cut(self, links: frozenset[Link]) -> None:
        self.mesh.set_cut(links)

    def describe_logs(self, lines: int = 8) -> str:
        """The last `lines` lines of every node's log, for error messages."""
        return self.describe(lines)

    def heal_everything(self) -> None:
        """Reconnects every link, resumes every paused node, starts every stopped one."""
        self.mesh.heal_all()
        for index in sorted(self.paused):
            self.resume(index)
        for index in self.down():
            self.start(index)

    def close(self) -> None:
        """Stops every process (resume, SIGTERM, then SIGKILL after STOP_TIMEOUT_S)."""
        self.stop_all()

    async def close_proxies(self) -> None:
        await self.mesh.close()

    # -- observing -----------------------------------------------------------------------

    async def statuses(self) -> list[NodeStatus | None]:
        """Every node's status, or None for a node that did not answer in time."""

        async def one(address: str) -> NodeStatus | None:
            client = AsyncClient([address], attempt_timeout=STATUS_TIMEOUT_S)
            try:
                return await asyncio.wait_for(client.status(), STATUS_TIMEOUT_S * 3)
            except Exception:
                # Not only ClientError: status() can leak the client's private
                # _ConnectionLost when a node dies mid-request (test_found_bugs.py).
                return None
            finally:
                await client.close()

        return list(await asyncio.gather(*(one(a) for a in self.addresses)))

    async def leader(self) -> int | None:
        """The index of the node that leads in the highest term seen, if any."""
        return leader_of(await self.statuses())
