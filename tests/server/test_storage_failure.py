"""A node whose disk fails while it runs stops, and acknowledges nothing it could not
make durable (the fsync-failure rule etcd and PostgreSQL learned the hard way)."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from phalanx.client import AsyncClient, ClientError
from phalanx.server.config import build_config
from phalanx.server.node import Node
from phalanx.transport.addresses import free_ports


def test_a_failed_fsync_stops_the_node_without_acknowledging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    node = Node(
        build_config(
            {"id": 1, "members": f"1={address}", "data": str(tmp_path / "node-1"),
             "service": "phalanx.examples.kv:KeyValue"}
        )
    )  # fmt: skip
    replies: list[object] = []
    failures: list[BaseException] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.get_running_loop().create_task(node.run(stop))
        async with AsyncClient([address], timeout=3.0, attempt_timeout=0.5) as client:
            replies.append(await client.call({"op": "put", "key": "a", "value": "1"}))

            def broken_fdatasync(fd: int) -> None:
                raise OSError(errno.EIO, "Input/output error")

            monkeypatch.setattr("os.fdatasync", broken_fdatasync)
            try:
                replies.append(await client.call({"op": "put", "key": "b", "value": "2"}))
            except ClientError as error:
                failures.append(error)
        await asyncio.wait_for(running, 10)  # run() returns: the node stopped itself
        assert stop.is_set()

    asyncio.run(scenario())
    assert replies == [{"ok": True}]  # the second put was never acknowledged
    assert len(failures) == 1
    assert node.failed is not None and "Input/output error" in node.failed
