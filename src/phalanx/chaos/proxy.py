"""TCP proxies between nodes: the partitions of a fault run happen here, not in the nodes.

Theory of operation
-------------------
Every node dials every other node and sends its Raft messages to that peer over its
own outbound connection (see `phalanx.transport.tcp`), so each *directed* pair (i, j)
of a cluster has a connection of its own. The harness puts one `LinkProxy` on each
directed pair: node i's configuration lists peer j at the proxy's address on
127.0.0.1, and the proxy forwards every connection it accepts to j's real address.
The handshake names node ids, not addresses, so a node cannot tell a proxy from its
peer. Clients use the nodes' real addresses and are never cut off.

A proxy is either open or cut. `cut()` aborts every connection it carries (bytes
queued inside the proxy are dropped, the peers see a reset) and from then on accepts
and at once closes any new connection: node i's messages to j are lost until
`heal()`. Because each direction has its own proxy, cutting (i, j) and (j, i) severs
the pair, and cutting only one of them gives a one-way partition.

`ProxyMesh` holds the proxies of a whole cluster and sets a partition as the set of
directed links that must be cut: every other link is healed. Nodes take no part in
any of this, which is the point: a node never cooperates in its own partition.

Bounds: at most `CONNECTIONS_MAX` connections per proxy (a node keeps one; the spare
room covers reconnects racing the close of the old one), reads of `CHUNK_BYTES`, and
writes awaited with `drain()` so a slow reader holds at most one chunk plus the
transport's high-water mark in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

HOST = "127.0.0.1"
CHUNK_BYTES = 64 * 1024
CONNECTIONS_MAX = 16
CONNECT_TIMEOUT_S = 2.0

Link = tuple[int, int]


class _Pair:
    """One accepted connection and the one the proxy opened to the target."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class LinkProxy:
    """Forwards connections from its own port on 127.0.0.1 to `target`, unless cut."""

    def __init__(self, link: Link, target: tuple[str, int]) -> None:
        assert target[0] == HOST, "fault runs only use 127.0.0.1"
        self.link = link
        self.target = target
        self.is_cut = False
        self.accepted = 0
        self.refused = 0
        self.bytes_forwarded = 0
        self._pairs: set[_Pair] = set()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "start() the proxy first"
        port: int = self._server.sockets[0].getsockname()[1]
        return HOST, port

    @property
    def connections(self) -> int:
        return len(self._pairs)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, HOST, 0)

    def cut(self) -> None:
        """Drops every connection through this link and refuses new ones until `heal`."""
        self.is_cut = True
        for pair in list(self._pairs):
            pair.abort()

    def heal(self) -> None:
        self.is_cut = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # The pipes are ours to cancel; the connection handlers belong to the server's
        # stream machinery, which reports a cancelled handler as an error, so they are
        # left to finish: with every pipe aborted they return at once (or after at
        # most CONNECT_TIMEOUT_S when still dialling a target).
        for pair in list(self._pairs):
            pair.abort()
            for task in pair.tasks:
                task.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers))
        self._pairs.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut or len(self._pairs) >= CONNECTIONS_MAX:
            self.refused += 1
            writer.transport.abort()
            return
        pair = _Pair(writer)
        self._pairs.add(pair)
        try:
            try:
                upstream_reader, upstream = await asyncio.wait_for(
                    asyncio.open_connection(*self.target), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError):
                return  # the target is down: the node sees its connection close
            pair.upstream = upstream
            if self.is_cut:  # cut while we were connecting
                return
            self.accepted += 1
            pair.tasks = [
                asyncio.create_task(self._pipe(reader, upstream)),
                asyncio.create_task(self._pipe(upstream_reader, writer)),
            ]
            await asyncio.wait(pair.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pair.abort()
            for task in pair.tasks:
                task.cancel()
            await asyncio.gather(*pair.tasks, return_exceptions=True)
            self._pairs.discard(pair)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while not self.is_cut:
                data = await reader.read(CHUNK_BYTES)
                if not data or self.is_cut:
                    return
                writer.write(data)
                self.bytes_forwarded += len(data)
                await writer.drain()


class ProxyMesh:
    """One proxy per directed link between `nodes` nodes (indices from 0)."""

    def __init__(self, real_addresses: list[tuple[str, int]]) -> None:
        self.nodes = len(real_addresses)
        self.proxies: dict[Link, LinkProxy] = {
            (i, j): LinkProxy((i, j), real_addresses[j])
            for i in range(self.nodes)
            for j in range(self.nodes)
            if i != j
        }

    async def start(self) -> None:
        for proxy in self.proxies.values():
            await proxy.start()

    def peer_address(self, source: int, target: int) -> tuple[str, int]:
        """Where node `source` must dial node `target`."""
        return self.proxies[(source, target)].address

    def cut_links(self) -> frozenset[Link]:
        return frozenset(link for link, proxy in self.proxies.items() if proxy.is_cut)

    def set_cut(self, links: Iterable[Link]) -> None:
        """Cuts exactly `links` and heals every other link."""
        wanted = frozenset(links)
        unknown = wanted - self.proxies.keys()
        assert not unknown, f"no such links {sorted(unknown)}"
        for link, proxy in self.proxies.items():
            if link in wanted:
                proxy.cut()
            else:
                proxy.heal()

    def heal_all(self) -> None:
        self.set_cut(())

    async def close(self) -> None:
        for proxy in self.proxies.values():
            await proxy.close()
