"""What a client that does not read its replies can make a node hold (issue 11, item 5,
the write side): above a high-water mark of unsent replies the node stops reading the
connection and resumes once the client has read them; a connection holding more than
its limit, or paused too long, is closed; over the node-wide budget the client
connection holding the most is closed. Peers are not held to any of it.

These run a real `NodeTransport` on 127.0.0.1 in this process with small limits set on
it, and small kernel socket buffers, so that the replies a client does not read stay in
the node's process after a few kilobytes (as they do on a node whose buffers are full).
tests/cluster/test_transport_limits.py checks the production limits against real node
processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Awaitable, Callable

import pytest

from phalanx.core.messages import HeartbeatRequest
from phalanx.core.types import Index, NodeId, Term
from phalanx.transport.tcp import (
    PEER_WRITE_BUFFER_HIGH_BYTES,
    ClientReplyLimits,
    ClientRequestMessage,
    Connection,
    ConnectionState,
)
from phalanx.transport.wire import (
    Hello,
    PushedMessage,
    StatusReply,
    StatusRequest,
    Welcome,
    encode_frame,
)

from .test_inbound_limits import (
    CLUSTER_ID,
    HOST,
    STALL_TIMEOUT_S,
    WAIT_TIMEOUT_S,
    Listener,
    Raw,
    wait_until,
)
from .test_wire import node_status

#: Small limits, so that a test fills them with a few megabytes.
LIMITS = ClientReplyLimits(
    high_bytes=64 * 1024,
    low_bytes=16 * 1024,
    max_bytes=2 * 1024 * 1024,
    paused_timeout_s=WAIT_TIMEOUT_S * 10,  # out of the way, unless a test shortens it
)
BUDGET_BYTES = 3 * 1024 * 1024
PAUSED_TIMEOUT_S = 0.5
#: A node's status reply is about a kilobyte, for a 25-byte request (a snapshot error
#: pads this one to that).
STATUS = node_status(snapshot_error="x" * 350)
#: Enough requests that their replies (about 20 MB) fill any socket buffers many times.
REQUESTS = 20_000
#: The kernel's socket buffers on both sides of a test's connections: small, so that
#: what a client does not read stays in the node's process after a few kilobytes.
KERNEL_BUFFER_BYTES = 4096
PUSHED_MESSAGE_BYTES = 64 * 1024


class ReplyListener(Listener):
    """The listener of test_inbound_limits with small reply limits, and a stub node that
    answers StatusRequests."""

    def __init__(
        self, limits: ClientReplyLimits, budget_bytes: int, known_peers: tuple[int, ...]
    ) -> None:
        super().__init__(known_peers)
        #: Request ids of the StatusRequests answered, in the order handled.
        self.answered: list[int] = []
        self.transport.client_reply_limits = limits
        self.transport.client_reply_bytes_max = budget_bytes

    def on_client_message(self, connection: Connection, message: ClientRequestMessage) -> None:
        if isinstance(message, StatusRequest):
            self.answered.append(message.request_id)
            connection.send(StatusReply(message.request_id, STATUS))

    async def connect(self, role: str = "client", node_id: int = 0) -> tuple[Raw, Connection]:
        """A client-side socket greeted as `role`, and the node's side of it, both with
        small kernel buffers."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, KERNEL_BUFFER_BYTES)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, self.address)
        raw = Raw(*await asyncio.open_connection(sock=sock))
        self.raws.append(raw)
        await raw.send(encode_frame(Hello(CLUSTER_ID, role, node_id)))
        assert await raw.receive() == Welcome(1)
        remote = f"{HOST}:{sock.getsockname()[1]}"
        node_side = next(c for c in self.transport.inbound if c.remote == remote)
        assert node_side.transport is not None
        node_socket = node_side.transport.get_extra_info("socket")
        node_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_BUFFER_BYTES)
        return raw, node_side


def run_with_listener(
    scenario: Callable[[ReplyListener], Awaitable[None]],
    *,
    limits: ClientReplyLimits = LIMITS,
    budget_bytes: int = BUDGET_BYTES,
    known_peers: tuple[int, ...] = (),
) -> None:
    async def main() -> None:
        listener = ReplyListener(limits, budget_bytes, known_peers)
        await listener.transport.start()
        try:
            await asyncio.wait_for(scenario(listener), WAIT_TIMEOUT_S * 4)
        finally:
            for raw in listener.raws:
                # Not close(): that would wait for requests the node is not reading.
                raw.writer.transport.abort()
            await listener.transport.close()

    asyncio.run(main())


def push(connection: Connection, total_bytes: int) -> None:
    """Sends the client `total_bytes` it did not ask for, as a subscriber's pushed
    messages come: replies that pausing its reading does not stop."""
    for seq in range(total_bytes // PUSHED_MESSAGE_BYTES):
        connection.send(PushedMessage(1, seq, bytes(PUSHED_MESSAGE_BYTES)))


def status_requests(count: int) -> bytes:
    return b"".join(encode_frame(StatusRequest(i)) for i in range(count))


# -- pausing and resuming ---------------------------------------------------------------------


def test_a_client_that_does_not_read_is_paused_then_answered_in_order() -> None:
    async def scenario(listener: ReplyListener) -> None:
        client, node_side = await listener.connect()
        client.writer.write(status_requests(REQUESTS))
        await wait_until(lambda: node_side.reading_paused, "the node to stop reading")
        answered = len(listener.answered)
        assert answered < REQUESTS
        assert LIMITS.high_bytes < node_side.reply_bytes <= LIMITS.max_bytes
        assert listener.transport.client_reply_bytes == node_side.reply_bytes
        other, _ = await listener.connect()  # another client is served meanwhile
        await other.send(encode_frame(StatusRequest(REQUESTS)))
        assert await other.receive() == StatusReply(REQUESTS, STATUS)
        await asyncio.sleep(PAUSED_TIMEOUT_S)
        assert listener.answered.count(REQUESTS) == 1
        listener.answered.remove(REQUESTS)
        assert len(listener.answered) == answered, "requests were handled while paused"
        replies = [await client.receive() for _ in range(REQUESTS)]
        # Requests held back when reading paused were handled first when it resumed.
        assert [r.request_id for r in replies if isinstance(r, StatusReply)] == list(
            range(REQUESTS)
        )
        assert listener.answered == list(range(REQUESTS))
        await wait_until(lambda: not node_side.reading_paused, "reading to resume")
        assert node_side.state is ConnectionState.CLIENT

    run_with_listener(scenario)


def test_a_slow_reader_is_paused_and_resumed_but_never_closed() -> None:
    """The timeout is for reading that stays paused: a client that keeps reading, however
    slowly, is paused and resumed many times over and still gets every reply."""
    requests = 8000
    read_bytes = 128 * 1024

    async def scenario(listener: ReplyListener) -> None:
        client, node_side = await listener.connect()
        client.writer.write(status_requests(requests))
        started = time.monotonic()
        received = 0
        expected = sum(len(encode_frame(StatusReply(i, STATUS))) for i in range(requests))
        while received < expected:
            received += len(await client.reader.read(read_bytes))
            await asyncio.sleep(0.02)
        assert time.monotonic() - started > PAUSED_TIMEOUT_S * 1.5
        assert node_side.state is ConnectionState.CLIENT
        assert listener.answered == list(range(requests))

    run_with_listener(
        scenario, limits=dataclasses.replace(LIMITS, paused_timeout_s=PAUSED_TIMEOUT_S)
    )


# -- closing ---------------------------------------------------------------------------------


def test_a_client_paused_too_long_is_closed(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(listener: ReplyListener) -> None:
        client, node_side = await listener.connect()
        client.writer.write(status_requests(REQUESTS))
        await wait_until(lambda: node_side.reading_paused, "the node to stop reading")
        paused = time.monotonic()
        await wait_until(node_side.closed.done, "the node to close it")
        assert time.monotonic() - paused >= PAUSED_TIMEOUT_S * 0.9
        assert listener.transport.client_reply_bytes == 0

    run_with_listener(
        scenario, limits=dataclasses.replace(LIMITS, paused_timeout_s=PAUSED_TIMEOUT_S)
    )
    line = next(r.getMessage() for r in caplog.records if "CLIENT_READ_PAUSE" in r.getMessage())
    assert line.startswith(f"closing connection from {HOST}:"), line
    assert "bytes of replies it has not read" in line, line


def test_replies_past_the_connections_limit_close_it_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(listener: ReplyListener) -> None:
        _, node_side = await listener.connect()
        push(node_side, 2 * LIMITS.max_bytes)
        assert node_side.state is ConnectionState.CLOSED
        assert node_side.transport is not None
        assert node_side.transport.get_write_buffer_size() == 0, "unsent replies kept"
        assert listener.transport.client_reply_bytes == 0
        await wait_until(node_side.closed.done, "the connection to be lost")

    run_with_listener(scenario)
    assert f"over the limit of {LIMITS.max_bytes} (CLIENT_REPLY_BYTES_MAX)" in caplog.text


def test_closing_a_client_that_does_not_read_drops_its_replies() -> None:
    """A graceful close would keep the connection, and its unsent replies, until the
    client read them."""

    async def scenario(listener: ReplyListener) -> None:
        _, node_side = await listener.connect()
        push(node_side, LIMITS.max_bytes // 2)
        assert node_side.reading_paused
        node_side.close()
        await wait_until(node_side.closed.done, "the connection to be lost")
        assert listener.transport.client_reply_bytes == 0

    run_with_listener(scenario)


def test_over_the_budget_the_client_holding_the_most_is_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(listener: ReplyListener) -> None:
        connections = [(await listener.connect())[1] for _ in range(3)]
        most, second, third = connections
        push(most, BUDGET_BYTES // 2)
        push(second, BUDGET_BYTES // 3)
        assert listener.transport.client_reply_bytes <= BUDGET_BYTES
        push(third, BUDGET_BYTES // 3)  # the one that crosses the budget
        assert most.state is ConnectionState.CLOSED
        assert second.state is third.state is ConnectionState.CLIENT
        assert listener.transport.client_reply_bytes == second.reply_bytes + third.reply_bytes
        assert listener.transport.client_reply_bytes <= BUDGET_BYTES

    run_with_listener(scenario)
    assert "over the budget of" in caplog.text
    assert "CLIENT_REPLY_BYTES_TOTAL_MAX" in caplog.text
    assert caplog.text.count("the most of any client") == 1


def test_the_budget_counts_again_before_closing_anyone() -> None:
    """A count taken at a flush still includes what the client has read since: a client
    that read its replies must not be closed for them."""

    async def scenario(listener: ReplyListener) -> None:
        (_, drained), (_, holder) = [await listener.connect() for _ in range(2)]
        # As if `drained` held this much at its last flush and its client read it since.
        stale_bytes = BUDGET_BYTES // 2
        drained.reply_bytes += stale_bytes
        listener.transport.client_reply_bytes += stale_bytes
        push(holder, BUDGET_BYTES * 2 // 3)  # over the budget by the stale count only
        assert drained.state is holder.state is ConnectionState.CLIENT
        assert drained.reply_bytes == 0
        assert listener.transport.client_reply_bytes == holder.reply_bytes

    run_with_listener(scenario)


# -- what pausing must not break -------------------------------------------------------------


def test_a_frame_arriving_when_reading_paused_is_not_taken_for_a_stall() -> None:
    """Its sender cannot send the rest while the node does not read: the frame's time
    starts again when reading resumes."""
    pushed_bytes = LIMITS.max_bytes // 2

    async def scenario(listener: ReplyListener) -> None:
        client, node_side = await listener.connect()
        frame = encode_frame(StatusRequest(7))
        await client.send(frame[:3])
        await wait_until(lambda: node_side.partial_frame_bytes == 3, "the partial frame")
        push(node_side, pushed_bytes)
        assert node_side.reading_paused
        await asyncio.sleep(STALL_TIMEOUT_S * 3)
        assert node_side.state is ConnectionState.CLIENT
        for _ in range(pushed_bytes // PUSHED_MESSAGE_BYTES):
            assert isinstance(await client.receive(), PushedMessage)
        await wait_until(lambda: not node_side.reading_paused, "reading to resume")
        await client.send(frame[3:])
        assert await client.receive() == StatusReply(7, STATUS)

    run_with_listener(scenario)


def test_an_inbound_peer_connection_is_not_held_to_the_client_limits() -> None:
    async def scenario(listener: ReplyListener) -> None:
        peer, node_side = await listener.connect("peer", node_id=2)
        push(node_side, 2 * PEER_WRITE_BUFFER_HIGH_BYTES)
        node_side.flush()
        assert node_side.state is ConnectionState.PEER
        assert node_side.paused  # asyncio's flow control, which a peer link drops by
        assert not node_side.reading_paused
        assert listener.transport.client_reply_bytes == 0
        # The node still reads it: a frame's first bytes arrive.
        await peer.send(encode_frame(HeartbeatRequest(Term(1), NodeId(2), NodeId(1), Index(0)))[:3])
        await wait_until(lambda: node_side.partial_frame_bytes == 3, "the peer's bytes")

    run_with_listener(scenario, known_peers=(2,))


def test_client_reply_limits_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="low"):
        ClientReplyLimits(high_bytes=10, low_bytes=10, max_bytes=20)
    with pytest.raises(ValueError, match="max"):
        ClientReplyLimits(high_bytes=30, low_bytes=10, max_bytes=20)
    with pytest.raises(ValueError, match="paused_timeout_s"):
        ClientReplyLimits(paused_timeout_s=0)
