"""`Connection`: every message of a read is handed over, then the read is reported once."""

from __future__ import annotations

import asyncio

from phalanx.transport.tcp import Connection, ConnectionState
from phalanx.transport.wire import Hello, WireMessage, encode_frame


def test_each_read_is_reported_after_all_its_messages() -> None:
    events: list[str] = []

    async def scenario() -> None:
        def on_message(connection: Connection, message: WireMessage) -> None:
            assert isinstance(message, Hello)
            events.append(f"message {message.node_id}")

        connection = Connection(on_message, lambda c: None, 1 << 20, ConnectionState.PEER)
        connection.on_received = lambda: events.append("read")
        two = encode_frame(Hello("phalanx", "peer", 1)) + encode_frame(Hello("phalanx", "peer", 2))
        connection.data_received(two[:-3])  # the second frame arrives in two reads
        connection.data_received(two[-3:])

    asyncio.run(scenario())
    assert events == ["message 1", "read", "message 2", "read"]


def test_a_closed_connection_reports_no_read() -> None:
    events: list[str] = []

    async def scenario() -> None:
        def on_message(connection: Connection, message: WireMessage) -> None:
            events.append("message")
            connection.state = ConnectionState.CLOSED  # as protocol_error would

        connection = Connection(on_message, lambda c: None, 1 << 20, ConnectionState.PEER)
        connection.on_received = lambda: events.append("read")
        connection.data_received(encode_frame(Hello("phalanx", "peer", 1)) * 2)

    asyncio.run(scenario())
    assert events == ["message"]
