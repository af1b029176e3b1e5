"""The link proxies: bytes flow while a link is open, and a cut really drops traffic."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from phalanx.chaos.nemesis import Shape, partition_links
from phalanx.chaos.proxy import HOST, LinkProxy, ProxyMesh

TIMEOUT_S = 5.0


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[tuple[str, int]]:
    writers: list[asyncio.StreamWriter] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, HOST, 0)
    try:
        yield HOST, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def round_trip(address: tuple[str, int], payload: bytes) -> bytes:
    """Sends `payload` through a fresh connection and returns what comes back ("" if cut)."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(len(payload)), TIMEOUT_S)
    except ConnectionError:
        return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def run(coroutine: object) -> None:
    asyncio.run(coroutine)  # type: ignore[arg-type]


def test_an_open_link_forwards_bytes_both_ways() -> None:
    async def scenario() -> None:
        async with echo_server() as target:
            proxy = LinkProxy((0, 1), target)
            await proxy.start()
            try:
                assert await round_trip(proxy.address, b"hello") == b"hello"
                assert proxy.accepted == 1
                assert proxy.bytes_forwarded == 10
            finally:
                await proxy.close()

    run(scenario())


def test_cut_drops_a_live_connection_and_refuses_new_ones_until_healed() -> None:
    async def scenario() -> None:
        async with echo_server() as target:
            proxy = LinkProxy((0, 1), target)
            await proxy.start()
            try:
                reader, writer = await asyncio.open_connection(*proxy.address)
                writer.write(b"before")
                assert await asyncio.wait_for(reader.read(6), TIMEOUT_S) == b"before"
                proxy.cut()
                # The live connection is reset: nothing written after the cut comes back.
                with contextlib.suppress(ConnectionError):
                    writer.write(b"after")
                    await writer.drain()
                with contextlib.suppress(ConnectionError):
                    assert await asyncio.wait_for(reader.read(5), TIMEOUT_S) == b""
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
                # New connections are accepted and closed at once.
                assert await round_trip(proxy.address, b"again") == b""
                assert proxy.refused >= 1
                assert proxy.connections == 0
                proxy.heal()
                assert await round_trip(proxy.address, b"healed") == b"healed"
            finally:
                await proxy.close()

    run(scenario())


def test_a_link_to_a_stopped_target_closes_the_connection() -> None:
    async def scenario() -> None:
        async with echo_server() as target:
            pass  # closed: nothing listens there any more
        proxy = LinkProxy((0, 1), target)
        await proxy.start()
        try:
            assert await round_trip(proxy.address, b"anyone?") == b""
        finally:
            await proxy.close()

    run(scenario())


def test_mesh_cuts_exactly_the_links_of_a_partition() -> None:
    async def scenario() -> None:
        async with echo_server() as a, echo_server() as b, echo_server() as c:
            mesh = ProxyMesh([a, b, c])
            await mesh.start()
            try:
                assert len(mesh.proxies) == 6
                links = partition_links(Shape.MAJORITY_MINORITY, 3, [2])
                mesh.set_cut(links)
                assert mesh.cut_links() == {(0, 2), (2, 0), (1, 2), (2, 1)}
                for (source, target), _proxy in mesh.proxies.items():
                    expected = b"" if (source, target) in links else b"x"
                    assert await round_trip(mesh.peer_address(source, target), b"x") == expected
                mesh.heal_all()
                assert mesh.cut_links() == frozenset()
                assert await round_trip(mesh.peer_address(0, 2), b"y") == b"y"
            finally:
                await mesh.close()

    run(scenario())


@pytest.mark.parametrize(
    ("shape", "nodes", "side", "expected"),
    [
        (Shape.ISOLATE_LEADER, 3, [0], {(0, 1), (1, 0), (0, 2), (2, 0)}),
        (Shape.MAJORITY_MINORITY, 5, [1, 3], {(i, j) for i in (1, 3) for j in (0, 2, 4)}
         | {(j, i) for i in (1, 3) for j in (0, 2, 4)}),
        # Bridge node 2 talks to both halves {0, 1} and {3, 4}, which cannot talk.
        (Shape.BRIDGE, 5, [2, 0, 1], {(i, j) for i in (0, 1) for j in (3, 4)}
         | {(j, i) for i in (0, 1) for j in (3, 4)}),
        (Shape.BRIDGE, 3, [1, 0], {(0, 2), (2, 0)}),
    ],
)  # fmt: skip
def test_partition_shapes(
    shape: Shape, nodes: int, side: list[int], expected: set[tuple[int, int]]
) -> None:
    assert partition_links(shape, nodes, side) == expected
