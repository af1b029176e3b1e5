"""Bugs outside `phalanx.chaos` that the fault runs found, kept as regression tests.

Both fail on commit da9c041 and pass with the fixes made beside this work:

- `node_command(config)` passed only id, members, data, service, cluster id and
  tick, so every other setting of the config was silently reset in the node;
- `AsyncClient.status()` let the private `_ConnectionLost` escape when a node died
  in the middle of a status request (it crashed the first 180 s bank run).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import phalanx.server.node
from phalanx.cli import main
from phalanx.client import AsyncClient, ClientError
from phalanx.server.config import NodeConfig, build_config
from phalanx.server.local import node_command
from phalanx.transport.wire import Welcome, encode_frame


class _Captured(Exception):
    pass


def test_node_command_starts_the_node_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = build_config(
        {
            "id": 1,
            "members": "1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103",
            "data": str(tmp_path / "node-1"),
            "service": "phalanx.examples.kv:KeyValue",
            "raft": {"election_timeout_ticks": 40, "heartbeat_interval_ticks": 4},
            "auto_repair": True,
        }
    )
    started: list[NodeConfig] = []

    def capture(node_config: NodeConfig, *args: Any, **kwargs: Any) -> None:
        started.append(node_config)
        raise _Captured

    monkeypatch.setattr(phalanx.server.node, "Node", capture)
    argv = node_command(config)
    assert argv[1:4] == ["-m", "phalanx", "node"]
    with pytest.raises(_Captured):
        main(argv[3:])
    assert started == [config]


def test_status_from_a_node_that_dies_mid_request_raises_a_client_error() -> None:
    async def scenario() -> None:
        async def welcome_then_die(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await reader.read(4096)  # the client's Hello
            writer.write(encode_frame(Welcome(1)))
            await writer.drain()
            await reader.read(4096)  # the StatusRequest: the node "dies" here
            writer.close()

        server = await asyncio.start_server(welcome_then_die, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = AsyncClient([f"127.0.0.1:{port}"], attempt_timeout=5.0)
        try:
            with pytest.raises((ClientError, OSError, TimeoutError)):
                await client.status()
        finally:
            await client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
