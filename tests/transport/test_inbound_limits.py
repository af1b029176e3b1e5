"""A node's listener bounds what inbound connections can make it hold (issue 11, item 5,
"A few connections can take the node's memory"): the frame allowed before a Hello, the
time a frame may take to arrive, the unfinished frames of all connections together, and
the sessions one client connection may open.

These run a real `NodeTransport` on 127.0.0.1 in this process, with small limits passed
in so that nothing takes long; tests/cluster/test_transport_limits.py checks the
production limits against real node processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import pytest

from phalanx.core.types import NodeId
from phalanx.transport.addresses import free_ports
from phalanx.transport.tcp import (
    HELLO_FRAME_BYTES_MAX,
    PARTIAL_FRAME_SHED_TO_FRACTION,
    SESSIONS_PER_CONNECTION_MAX,
    ClientRequestMessage,
    Connection,
    NodeTransport,
    SessionOpens,
)
from phalanx.transport.wire import (
    FRAME_HEADER,
    PROTOCOL_VERSION,
    ClientReply,
    CommandRequest,
    Hello,
    OpenSessionRequest,
    ReplyStatus,
    StatusRequest,
    Welcome,
    WireMessage,
    decode_message,
    encode_frame,
)

CLUSTER_ID = "limits"
HOST = "127.0.0.1"
#: Small limits, so that a test fills them with kilobytes and waits fractions of a second.
MAX_FRAME_BYTES = 64 * 1024
PARTIAL_FRAME_BYTES_MAX = 4 * MAX_FRAME_BYTES
STALL_TIMEOUT_S = 0.5
#: Bounds on waiting, not expectations.
WAIT_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.01


def header(length: int) -> bytes:
    return FRAME_HEADER.pack(length, PROTOCOL_VERSION)


class Listener:
    """A `NodeTransport` (node 1) with a stub for the node behind it. Its known peers
    are dialled at an address nobody listens on: only their Hello matters here."""

    def __init__(self, known_peers: tuple[int, ...]) -> None:
        port, nowhere = free_ports(2)
        self.address = (HOST, port)
        #: How the stub node answers an OpenSessionRequest; None: it never answers.
        self.session_answer: ReplyStatus | None = ReplyStatus.OK
        self.requests: list[ClientRequestMessage] = []
        #: Every client-side connection, closed when the scenario ends.
        self.raws: list[Raw] = []
        self.transport = NodeTransport(
            node_id=NodeId(1),
            cluster_id=CLUSTER_ID,
            host=HOST,
            port=port,
            peers={NodeId(peer): (HOST, nowhere) for peer in known_peers},
            on_peer_message=lambda message: None,
            on_client_message=self.on_client_message,
            on_peer_unreachable=lambda peer: None,
            max_frame_bytes=MAX_FRAME_BYTES,
            frame_stall_timeout_s=STALL_TIMEOUT_S,
            partial_frame_bytes_max=PARTIAL_FRAME_BYTES_MAX,
        )

    def on_client_message(self, connection: Connection, message: ClientRequestMessage) -> None:
        self.requests.append(message)
        if isinstance(message, OpenSessionRequest) and self.session_answer is not None:
            session = message.request_id if self.session_answer is ReplyStatus.OK else 0
            connection.send(
                ClientReply(message.request_id, self.session_answer, session_id=session)
            )


def run_with_listener(
    scenario: Callable[[Listener], Awaitable[None]], *, known_peers: tuple[int, ...] = ()
) -> None:
    async def main() -> None:
        listener = Listener(known_peers)
        await listener.transport.start()
        try:
            await asyncio.wait_for(scenario(listener), WAIT_TIMEOUT_S * 4)
        finally:
            for raw in listener.raws:
                await raw.close()
            await listener.transport.close()

    asyncio.run(main())


class Raw:
    """A client-side socket speaking the wire format by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, listener: Listener, role: str = "", node_id: int = 0) -> Raw:
        raw = cls(*await asyncio.open_connection(*listener.address))
        listener.raws.append(raw)
        if role:
            await raw.send(encode_frame(Hello(CLUSTER_ID, role, node_id)))
            assert await raw.receive() == Welcome(1)
        return raw

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self) -> WireMessage:
        length, _ = FRAME_HEADER.unpack(await self.reader.readexactly(FRAME_HEADER.size))
        return decode_message(await self.reader.readexactly(length))

    async def closed_by_node(self) -> bool:
        """True once the node closed its side, False if it kept it open WAIT_TIMEOUT_S."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), WAIT_TIMEOUT_S):
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            pass
        return True

    async def still_open(self, seconds: float) -> bool:
        """False if the node closes it (or sends anything) within `seconds`."""
        try:
            await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return True
        return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(POLL_INTERVAL_S)


async def hold_partial_frame(listener: Listener, raw: Raw, held_bytes: int) -> None:
    """Sends all but the last bytes of a frame and waits until the listener holds them."""
    before = listener.transport.partial_frame_bytes
    await raw.send(header(MAX_FRAME_BYTES) + bytes(held_bytes - FRAME_HEADER.size))
    await wait_until(
        lambda: listener.transport.partial_frame_bytes != before,
        "the listener to read the partial frame",
    )


# -- before the Hello ------------------------------------------------------------------------


def test_a_large_frame_before_the_hello_closes_the_connection_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(listener: Listener) -> None:
        stranger = await Raw.connect(listener)
        await stranger.send(header(HELLO_FRAME_BYTES_MAX + 1))
        assert await stranger.closed_by_node()
        assert listener.transport.partial_frame_bytes == 0

    run_with_listener(scenario)
    assert f"exceeds this connection's limit of {HELLO_FRAME_BYTES_MAX} bytes" in caplog.text


def test_a_hello_earns_the_full_frame_size_even_within_one_write() -> None:
    async def scenario(listener: Listener) -> None:
        client = await Raw.connect(listener)
        command = CommandRequest(2, 1, 1, 1, bytes(HELLO_FRAME_BYTES_MAX * 4))
        # A Hello, then a frame far above the Hello limit, in one write.
        await client.send(encode_frame(Hello(CLUSTER_ID, "client")) + encode_frame(command))
        assert await client.receive() == Welcome(1)
        await wait_until(lambda: listener.requests == [command], "the command")
        assert await client.still_open(0.05)

    run_with_listener(scenario)


# -- stalled frames --------------------------------------------------------------------------


def test_a_stalled_frame_closes_the_connection_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(listener: Listener) -> None:
        client = await Raw.connect(listener, "client")
        started = time.monotonic()
        await client.send(header(1000) + bytes(500))
        assert await client.closed_by_node()
        assert time.monotonic() - started >= STALL_TIMEOUT_S * 0.9
        assert listener.transport.partial_frame_bytes == 0

    run_with_listener(scenario)
    assert "a frame stalled: 505 bytes of it arrived" in caplog.text
    assert "FRAME_STALL_TIMEOUT_S" in caplog.text


def test_a_trickling_frame_is_closed_though_bytes_keep_coming() -> None:
    async def scenario(listener: Listener) -> None:
        client = await Raw.connect(listener, "client")
        started = time.monotonic()
        await client.send(header(1000))
        closed = asyncio.create_task(client.closed_by_node())
        while not closed.done() and time.monotonic() - started < STALL_TIMEOUT_S * 5:
            client.writer.write(b"x")
            await asyncio.sleep(STALL_TIMEOUT_S / 10)
        assert await closed
        assert time.monotonic() - started < STALL_TIMEOUT_S * 5

    run_with_listener(scenario)


def test_frames_that_each_arrive_in_time_keep_the_connection_open() -> None:
    """Each frame gets its own time: a stream of slow but finishing frames, each begun
    before the previous one's deadline, is not a stall."""

    async def scenario(listener: Listener) -> None:
        client = await Raw.connect(listener, "client")
        frame = encode_frame(StatusRequest(9))
        for _ in range(6):  # three timeouts' worth in all
            await client.send(frame + frame[:3])  # finish one frame, begin the next
            await asyncio.sleep(STALL_TIMEOUT_S / 4)
            await client.send(frame[3:])  # and finish it
            await client.send(frame[:3])
            await asyncio.sleep(STALL_TIMEOUT_S / 4)
            await client.send(frame[3:])
        assert await client.still_open(STALL_TIMEOUT_S * 2)
        assert len(listener.requests) == 6 * 3

    run_with_listener(scenario)


def test_an_idle_client_with_no_frame_in_flight_is_kept() -> None:
    async def scenario(listener: Listener) -> None:
        client = await Raw.connect(listener, "client")
        await client.send(encode_frame(StatusRequest(1)))
        assert await client.still_open(STALL_TIMEOUT_S * 3)

    run_with_listener(scenario)


# -- the node-wide budget --------------------------------------------------------------------


def test_over_the_budget_the_oldest_unfinished_frames_are_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    held_bytes = MAX_FRAME_BYTES - 4096
    count = 8

    async def scenario(listener: Listener) -> None:
        transport = listener.transport
        clients = [await Raw.connect(listener, "client") for _ in range(count)]
        for client in clients:
            await hold_partial_frame(listener, client, held_bytes)
            assert transport.partial_frame_bytes <= PARTIAL_FRAME_BYTES_MAX
        budget_fits = PARTIAL_FRAME_BYTES_MAX // held_bytes
        closed = [await client.closed_by_node() for client in clients[: count - budget_fits]]
        assert all(closed)
        for client in clients[count - budget_fits :]:
            assert await client.still_open(0.05), "a newer frame was shed before an older one"
        assert transport.partial_frame_bytes == budget_fits * held_bytes
        for client in clients:
            await client.close()
        await wait_until(lambda: transport.partial_frame_bytes == 0, "all frames released")

    run_with_listener(scenario)
    assert "over the budget" in caplog.text
    assert "PARTIAL_FRAME_BYTES_TOTAL_MAX" in caplog.text


def test_shedding_frees_room_for_more_than_the_next_read() -> None:
    held_bytes = MAX_FRAME_BYTES - 4096

    async def scenario(listener: Listener) -> None:
        clients = [await Raw.connect(listener, "client") for _ in range(5)]
        for client in clients:
            await hold_partial_frame(listener, client, held_bytes)
        target = PARTIAL_FRAME_BYTES_MAX * PARTIAL_FRAME_SHED_TO_FRACTION
        assert listener.transport.partial_frame_bytes <= target

    run_with_listener(scenario)


def test_peers_frames_are_shed_after_clients_frames() -> None:
    """A peer legitimately sends the largest frames, and its link matters more than any
    one client's: over the budget, clients go first even when the peer's frame is older."""
    held_bytes = MAX_FRAME_BYTES - 4096

    async def scenario(listener: Listener) -> None:
        peer = await Raw.connect(listener, "peer", node_id=2)
        await hold_partial_frame(listener, peer, held_bytes)
        clients = [await Raw.connect(listener, "client") for _ in range(6)]
        for client in clients:
            await hold_partial_frame(listener, client, held_bytes)
        assert await clients[0].closed_by_node()
        assert await peer.still_open(0.05)

    # The budget is at least every peer's largest frame plus one: here 2 frames, so
    # PARTIAL_FRAME_BYTES_MAX (4 frames) applies.
    run_with_listener(scenario, known_peers=(2,))


def test_the_budget_always_fits_every_peers_largest_frame() -> None:
    async def scenario(listener: Listener) -> None:
        assert listener.transport.partial_frame_bytes_max == 9 * MAX_FRAME_BYTES

    run_with_listener(scenario, known_peers=tuple(range(2, 10)))


# -- sessions per client connection ------------------------------------------------------------


def test_a_burst_of_session_requests_is_bounded_per_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    burst = SESSIONS_PER_CONNECTION_MAX * 3

    async def scenario(listener: Listener) -> None:
        client = await Raw.connect(listener, "client")
        await client.send(b"".join(encode_frame(OpenSessionRequest(i)) for i in range(burst)))
        replies = [await client.receive() for _ in range(burst)]
        statuses = [r.status for r in replies if isinstance(r, ClientReply)]
        assert statuses.count(ReplyStatus.OK) == SESSIONS_PER_CONNECTION_MAX
        assert statuses.count(ReplyStatus.REJECTED) == burst - SESSIONS_PER_CONNECTION_MAX
        rejected = next(r for r in replies if isinstance(r, ClientReply) and r.message)
        assert "SESSIONS_PER_CONNECTION_MAX" in rejected.message
        opened = [m for m in listener.requests if isinstance(m, OpenSessionRequest)]
        assert len(opened) == SESSIONS_PER_CONNECTION_MAX  # the rest never reached the node
        # Another connection is not affected.
        other = await Raw.connect(listener, "client")
        await other.send(encode_frame(OpenSessionRequest(1)))
        assert await other.receive() == ClientReply(1, ReplyStatus.OK, session_id=1)

    run_with_listener(scenario)
    assert caplog.text.count("SESSIONS_PER_CONNECTION_MAX") == 1  # logged once per connection


def test_session_requests_answered_retry_do_not_count() -> None:
    """A client retrying through an overload or an election opened nothing."""

    async def scenario(listener: Listener) -> None:
        listener.session_answer = ReplyStatus.RETRY
        client = await Raw.connect(listener, "client")
        for request_id in range(SESSIONS_PER_CONNECTION_MAX * 2):
            await client.send(encode_frame(OpenSessionRequest(request_id)))
            reply = await client.receive()
            assert isinstance(reply, ClientReply) and reply.status is ReplyStatus.RETRY

    run_with_listener(scenario)


def test_reusing_the_id_of_an_unanswered_session_request_closes_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Else a quick answer to the other request would stop the session counting."""

    async def scenario(listener: Listener) -> None:
        listener.session_answer = None
        client = await Raw.connect(listener, "client")
        await client.send(encode_frame(OpenSessionRequest(5)) + encode_frame(StatusRequest(5)))
        assert await client.closed_by_node()

    run_with_listener(scenario)
    assert "request id 5 reused" in caplog.text


def test_session_opens_count_within_a_window() -> None:
    opens = SessionOpens(count_max=2, window_s=60.0)
    assert opens.admit(1, now=0.0)
    assert opens.admit(2, now=1.0)
    assert not opens.admit(3, now=2.0), "two unanswered already"
    opens.answered(ClientReply(1, ReplyStatus.OK, session_id=1), now=2.0)
    opens.answered(ClientReply(2, ReplyStatus.NOT_LEADER), now=3.0)
    assert opens.admit(4, now=4.0)  # the refused one and the NOT_LEADER one do not count
    opens.answered(ClientReply(4, ReplyStatus.OK, session_id=4), now=5.0)
    assert not opens.admit(5, now=61.9)
    assert opens.admit(6, now=62.0), "the first session opened a window ago"
    assert opens.refused == 2
    assert "2 sessions within 60 s" in opens.refusal()
