"""asyncio TCP for nodes and clients.

Theory of operation
-------------------
Each node listens on one address that serves both peers and clients; the first frame
on a connection (`Hello`) says which. Each node also dials every other node and sends
its Raft messages for that node over that outbound link, so each direction of each
pair has its own connection and nobody has to break ties between simultaneous dials.

Writes are batched per event-loop turn: `Connection.send` appends an encoded frame to
a list and the first send of a turn schedules one flush with `call_soon`, so many
messages produced by one `Ready` leave in one `write`.

A peer's bytes are never trusted: a malformed, oversized or unexpected frame, a Hello
naming another cluster or an unknown node, or a Raft message whose sender differs from
the handshake closes that connection with a log line; the node keeps running.
Outbound links reconnect with capped exponential backoff and tell the node when a
link drops (Raft then re-probes that follower rather than waiting on lost appends).

What an inbound connection can make the node hold is bounded too. Before its Hello
it may send frames of at most `HELLO_FRAME_BYTES_MAX` bytes. A frame that started
arriving must be whole within `FRAME_STALL_TIMEOUT_S`. The unfinished frames of all
inbound connections together may hold `PARTIAL_FRAME_BYTES_TOTAL_MAX` bytes; beyond
that the connections holding the oldest ones (clients' before peers') are closed. A
client connection may open `SESSIONS_PER_CONNECTION_MAX` sessions per
`SESSION_OPENS_WINDOW_S`; further OpenSessionRequests are answered REJECTED.

So is what a client that does not read its replies can make the node hold: a 25-byte
StatusRequest costs hundreds of bytes of reply, and a reply not read stays in the
process (the transport's write buffer) once the kernel's socket buffers are full. A client
connection's unsent replies, counted at each flush, drive asyncio's flow control: above
`CLIENT_REPLY_BYTES_HIGH` the transport calls `pause_writing` and the node stops
reading that connection (requests of the last read that are not handled yet wait with
it), and once the client has read them down to `CLIENT_REPLY_BYTES_LOW`,
`resume_writing` has the node handle those and read again. Replies to requests taken
before the pause still come (commands committing, pushed messages), so a connection
whose unsent replies pass `CLIENT_REPLY_BYTES_MAX`, or whose reading stays paused for
`CLIENT_READ_PAUSE_TIMEOUT_S`, is closed, its unsent replies dropped. The unsent replies
of all client connections together may hold `CLIENT_REPLY_BYTES_TOTAL_MAX`; beyond that
the ones holding the most are closed. Peers are not held to this: an outbound link drops
Raft messages while its transport is paused (Raft sends them again), and an inbound
peer connection is never paused or closed by the client rule.
docs/limits.md says what a peer or client sees at each limit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import enum
import logging
import random
import sys
import typing
from collections.abc import Callable

from phalanx.core.messages import Message
from phalanx.core.types import NodeId
from phalanx.limits import (
    CLIENT_READ_PAUSE_TIMEOUT_S,
    CLIENT_REPLY_BYTES_HIGH,
    CLIENT_REPLY_BYTES_LOW,
    CLIENT_REPLY_BYTES_MAX,
    CLIENT_REPLY_BYTES_TOTAL_MAX,
    FRAME_STALL_TIMEOUT_S,
    HANDSHAKE_TIMEOUT_S,
    HELLO_FRAME_BYTES_MAX,
    PARTIAL_FRAME_BYTES_TOTAL_MAX,
    PARTIAL_FRAME_SHED_TO_FRACTION,
    PEER_WRITE_BUFFER_HIGH_BYTES,
    RECONNECT_DELAY_MAX_S,
    RECONNECT_DELAY_MIN_S,
    SESSION_OPENS_WINDOW_S,
    SESSIONS_PER_CONNECTION_MAX,
)

# Re-exported: server/node.py imports it from here.
from phalanx.limits import MAX_INBOUND_CONNECTIONS as MAX_INBOUND_CONNECTIONS  # noqa: PLC0414
from phalanx.transport.wire import (
    MAX_FRAME_BYTES_DEFAULT,
    ClientReply,
    CommandRequest,
    FrameError,
    FrameReader,
    Hello,
    KeepAliveRequest,
    OpenSessionRequest,
    Refused,
    RepairRequest,
    ReplyStatus,
    SnapshotReply,
    SnapshotRequest,
    StatusReply,
    StatusRequest,
    Subscribe,
    Welcome,
    WireMessage,
    decode_message,
    encode_frame,
)

log = logging.getLogger("phalanx.transport")


ClientRequestMessage = (
    OpenSessionRequest
    | CommandRequest
    | KeepAliveRequest
    | StatusRequest
    | SnapshotRequest
    | RepairRequest
    | Subscribe
)
ClientResponseMessage = ClientReply | StatusReply | SnapshotReply


@dataclasses.dataclass(frozen=True, slots=True)
class ClientReplyLimits:
    """What one client connection's unsent replies may make the node hold (see the
    module docstring): reading pauses above `high_bytes` and resumes at `low_bytes`; the
    connection is closed above `max_bytes` or once paused for `paused_timeout_s`."""

    high_bytes: int = CLIENT_REPLY_BYTES_HIGH
    low_bytes: int = CLIENT_REPLY_BYTES_LOW
    max_bytes: int = CLIENT_REPLY_BYTES_MAX
    paused_timeout_s: float = CLIENT_READ_PAUSE_TIMEOUT_S

    def __post_init__(self) -> None:
        if not 0 <= self.low_bytes < self.high_bytes <= self.max_bytes:
            raise ValueError(
                f"client reply limits need 0 <= low ({self.low_bytes}) < high "
                f"({self.high_bytes}) <= max ({self.max_bytes})"
            )
        if self.paused_timeout_s <= 0:
            raise ValueError(f"paused_timeout_s must be positive, not {self.paused_timeout_s}")


class ConnectionState(enum.Enum):
    AWAIT_HELLO = "await-hello"
    PEER = "peer"
    CLIENT = "client"
    OUTBOUND = "outbound"
    CLOSED = "closed"


class SessionOpens:
    """The sessions one client connection opened lately, to refuse more than `count_max`
    within `window_s`.

    A request counts from its arrival, so a burst sent before any answer is bounded
    too. One answered other than OK (not leader, leader busy) stops counting: a client
    retrying through an election or an overload opened nothing.
    """

    def __init__(
        self,
        count_max: int = SESSIONS_PER_CONNECTION_MAX,
        window_s: float = SESSION_OPENS_WINDOW_S,
    ) -> None:
        self.count_max = count_max
        self.window_s = window_s
        #: Loop times of the OK answers within the window, oldest first.
        self._opened: collections.deque[float] = collections.deque()
        #: Request ids of the OpenSessionRequests not answered yet.
        self.unanswered: set[int] = set()
        self.refused = 0

    def admit(self, request_id: int, now: float) -> bool:
        opened = self._opened
        while opened and now - opened[0] >= self.window_s:
            opened.popleft()
        if len(opened) + len(self.unanswered) >= self.count_max:
            self.refused += 1
            return False
        self.unanswered.add(request_id)
        return True

    def answered(self, reply: ClientReply, now: float) -> None:
        if reply.request_id in self.unanswered:
            self.unanswered.remove(reply.request_id)
            if reply.status is ReplyStatus.OK:
                self._opened.append(now)

    def refusal(self) -> str:
        return (
            f"this connection opened or is opening {self.count_max} sessions within "
            f"{self.window_s:g} s, the most one connection may "
            "(SESSIONS_PER_CONNECTION_MAX); keep using the session you have"
        )


class Connection(asyncio.Protocol):
    """One framed TCP connection. `on_message` gets each decoded message.

    With `frame_stall_timeout_s`, a frame that began arriving and is not whole that
    long after closes the connection. After `limit_replies` (a client connection), its
    unsent replies pause its reading and may close it (see the module docstring).
    """

    def __init__(
        self,
        on_message: Callable[[Connection, WireMessage], None],
        on_lost: Callable[[Connection], None],
        max_frame_bytes: int,
        state: ConnectionState,
        *,
        frame_stall_timeout_s: float | None = None,
    ) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._reader = FrameReader(max_frame_bytes)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        #: Flush at once when this much is queued: a client's high-water mark, so that the
        #: transport's flow control sees a burst of replies within the turn.
        self._flush_at_bytes = sys.maxsize
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.state = state
        self.peer_id = NodeId(0)
        self.remote = "?"
        self.paused = False
        #: Set by a listener over its connection limit: close as soon as connected.
        self.refuse = False
        #: Called after the messages of each read were handed to `on_message`.
        self.on_received: Callable[[], None] | None = None
        #: Called with each change in `partial_frame_bytes` (the listener's budget).
        self.on_partial_frame: Callable[[Connection, int], None] | None = None
        #: Bytes held of the frame still arriving, and the loop time it began.
        self.partial_frame_bytes = 0
        self.partial_frame_since = 0.0
        #: The reader's `frames_read` when that frame began: which frame it is.
        self._partial_frame_number = 0
        self._frame_stall_timeout_s = frame_stall_timeout_s
        self._stall_timer: asyncio.TimerHandle | None = None
        #: On a client connection that asked for a session: the sessions it opened.
        self.session_opens: SessionOpens | None = None
        #: On a client connection: what its unsent replies may hold.
        self.reply_limits: ClientReplyLimits | None = None
        #: Called with each change in `reply_bytes` (the listener's budget).
        self.on_reply_bytes: Callable[[Connection, int], None] | None = None
        #: What a client connection made the node hold when last counted (at each flush
        #: and pause): unsent replies, and requests held back while reading is paused.
        #: Replies sent since are not subtracted until the next count.
        self.reply_bytes = 0
        self.reading_paused = False
        self._pause_timer: asyncio.TimerHandle | None = None
        #: The payloads of a read not handled when reading paused, oldest first, and the
        #: memory they take.
        self._held_back: list[bytes] = []
        self._held_back_bytes = 0
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed: asyncio.Future[None] = self._loop.create_future()

    @property
    def max_frame_bytes(self) -> int:
        return self._reader.max_frame_bytes

    @max_frame_bytes.setter
    def max_frame_bytes(self, value: int) -> None:
        self._reader.max_frame_bytes = value

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self.transport = typing.cast(asyncio.Transport, transport)
        transport = self.transport
        peer = transport.get_extra_info("peername")
        self.remote = f"{peer[0]}:{peer[1]}" if peer else "?"
        transport.set_write_buffer_limits(high=PEER_WRITE_BUFFER_HIGH_BYTES)
        if self.refuse:
            log.warning("refusing %s: too many connections", self.remote)
            self.close()
        elif self.state is ConnectionState.AWAIT_HELLO:
            self._loop.call_later(HANDSHAKE_TIMEOUT_S, self._check_greeted)

    def _check_greeted(self) -> None:
        if self.state is ConnectionState.AWAIT_HELLO:
            self.protocol_error(f"no Hello within {HANDSHAKE_TIMEOUT_S:.0f} s")

    def data_received(self, data: bytes) -> None:
        self._reader.append(data)
        self._handle_frames()

    def _handle_frames(self) -> None:
        try:
            self._hand_over_payloads()
        except FrameError as error:
            self.protocol_error(str(error))
        if self.state is not ConnectionState.CLOSED:
            self._note_partial_frame()  # may close it: the listener's budget
        if self.on_received is not None and self.state is not ConnectionState.CLOSED:
            self.on_received()

    def _hand_over_payloads(self) -> None:
        reader = self._reader
        # Until nothing is taken: handling a Hello raises the limit for the frames after
        # it, which the first take may have left. Held-back payloads go first: they were
        # read first.
        while not self.reading_paused and (
            payloads := self._take_held_back() or reader.take_payloads()
        ):
            for position, payload in enumerate(payloads):
                if self.state is ConnectionState.CLOSED:
                    return
                if self.reading_paused:  # a reply just filled the write buffer
                    self._hold_back(payloads[position:])
                    return
                self._on_message(self, decode_message(payload))

    def _note_partial_frame(self) -> None:
        reader = self._reader
        held = reader.buffered_bytes
        if held and (
            not self.partial_frame_bytes or reader.frames_read != self._partial_frame_number
        ):
            self.partial_frame_since = self._loop.time()
            self._partial_frame_number = reader.frames_read
            if self._frame_stall_timeout_s is not None and self._stall_timer is None:
                self._watch_for_stall()
        change = held - self.partial_frame_bytes
        if change:
            self.partial_frame_bytes = held
            if self.on_partial_frame is not None:
                self.on_partial_frame(self, change)  # may close this connection

    def _watch_for_stall(self) -> None:
        # One timer per connection, re-armed for whichever frame is arriving when it
        # fires: not one per frame, which on a busy peer link is one per read.
        assert self._frame_stall_timeout_s is not None
        self._stall_timer = self._loop.call_at(
            self.partial_frame_since + self._frame_stall_timeout_s,
            self._check_stalled,
            self._partial_frame_number,
            self.partial_frame_since,
        )

    def _check_stalled(self, frame_number: int, since: float) -> None:
        self._stall_timer = None
        if self.state is ConnectionState.CLOSED or not self.partial_frame_bytes:
            return
        if self.reading_paused:
            return  # the node stopped reading, not the sender: re-armed on resuming
        if frame_number != self._partial_frame_number or since != self.partial_frame_since:
            self._watch_for_stall()  # that frame completed (or its clock restarted)
            return
        self.protocol_error(
            f"a frame stalled: {self.partial_frame_bytes} bytes of it arrived and it was "
            f"not whole within {self._frame_stall_timeout_s:g} s (FRAME_STALL_TIMEOUT_S)"
        )

    def _release_partial_frame(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._reader.clear()
        held, self.partial_frame_bytes = self.partial_frame_bytes, 0
        if held and self.on_partial_frame is not None:
            self.on_partial_frame(self, -held)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = ConnectionState.CLOSED
        self._release_partial_frame()
        self._release_replies()
        if not self.closed.done():
            self.closed.set_result(None)
        self._on_lost(self)

    def pause_writing(self) -> None:
        self.paused = True
        self.writable.clear()
        if self.reply_limits is not None:
            self._pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        self.writable.set()
        if self.reading_paused:
            # Not from within the transport's write callback: handling the requests held
            # back sends replies.
            self._loop.call_soon(self._resume_reading)

    # -- a client's unsent replies -----------------------------------------------------------

    def limit_replies(
        self, limits: ClientReplyLimits, on_reply_bytes: Callable[[Connection, int], None]
    ) -> None:
        """Holds this connection (a client's) to `limits`; `on_reply_bytes` gets each
        change in what it holds."""
        assert self.transport is not None
        self.reply_limits = limits
        self.on_reply_bytes = on_reply_bytes
        self._flush_at_bytes = limits.high_bytes
        self.transport.set_write_buffer_limits(high=limits.high_bytes, low=limits.low_bytes)

    def count_reply_bytes(self) -> None:
        """Counts what this client connection holds now (see `reply_bytes`) and closes
        it if that is over its limit. Between counts only the client's reading changes
        it, so a count taken again is never higher."""
        limits = self.reply_limits
        if limits is None or self.closed.done():
            return
        held = self._held_bytes()
        if held > limits.max_bytes:
            self.abort(
                f"it holds {held} bytes of replies it has not read, over the limit of "
                f"{limits.max_bytes} (CLIENT_REPLY_BYTES_MAX)"
            )
        else:
            self._set_reply_bytes(held)

    def _held_bytes(self) -> int:
        assert self.transport is not None
        return self.transport.get_write_buffer_size() + self._held_back_bytes

    def _set_reply_bytes(self, held: int) -> None:
        change = held - self.reply_bytes
        if change:
            self.reply_bytes = held
            if self.on_reply_bytes is not None:
                self.on_reply_bytes(self, change)  # may close this or another connection

    def _pause_reading(self) -> None:
        limits = self.reply_limits
        if self.reading_paused or limits is None or self.transport is None:
            return
        self.reading_paused = True
        self.transport.pause_reading()
        self._pause_timer = self._loop.call_later(limits.paused_timeout_s, self._check_paused)

    def _resume_reading(self) -> None:
        if not self.reading_paused or self.paused or self.state is ConnectionState.CLOSED:
            return  # paused again before this ran, or closed
        self._stop_pause_timer()
        self.reading_paused = False
        self._handle_frames()  # the requests held back; their replies may pause it again
        self.count_reply_bytes()
        transport = self.transport
        if self.reading_paused or transport is None or transport.is_closing():
            return
        transport.resume_reading()
        if self.partial_frame_bytes and self._frame_stall_timeout_s is not None:
            # Its sender could not send the rest while the node was not reading.
            self.partial_frame_since = self._loop.time()
            if self._stall_timer is None:
                self._watch_for_stall()

    def _check_paused(self) -> None:
        self._pause_timer = None
        if not self.reading_paused or self.closed.done():
            return
        assert self.reply_limits is not None
        timeout_s = self.reply_limits.paused_timeout_s
        self.abort(
            f"it holds {self._held_bytes()} bytes of replies it has not read, and reading "
            f"it stayed paused for {timeout_s:g} s (CLIENT_READ_PAUSE_TIMEOUT_S)"
        )

    def _stop_pause_timer(self) -> None:
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None

    def _hold_back(self, payloads: list[bytes]) -> None:
        self._held_back = payloads
        self._held_back_bytes = sys.getsizeof(payloads) + sum(map(sys.getsizeof, payloads))
        self.count_reply_bytes()

    def _take_held_back(self) -> list[bytes]:
        payloads, self._held_back = self._held_back, []
        self._held_back_bytes = 0
        return payloads

    def _release_replies(self) -> None:
        self._stop_pause_timer()
        self._pending.clear()
        self._pending_bytes = 0
        self._take_held_back()
        self._set_reply_bytes(0)

    # -- sending ---------------------------------------------------------------------------

    def send(self, message: WireMessage) -> None:
        if self.state is ConnectionState.CLOSED or self.transport is None:
            return
        if self.session_opens is not None and isinstance(message, ClientReply):
            self.session_opens.answered(message, self._loop.time())
        frame = encode_frame(message)
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        if self._pending_bytes >= self._flush_at_bytes:
            self._flush()  # may pause reading this connection, or close it
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def flush(self) -> None:
        """Writes what this turn queued now rather than at the end of the turn: for
        messages that should not wait behind a disk sync."""
        if self._pending:
            self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self.transport
        if self._pending and transport is not None and not transport.is_closing():
            transport.write(b"".join(self._pending))  # may call pause_writing
        self._pending.clear()
        self._pending_bytes = 0
        if self.reply_limits is not None:
            self.count_reply_bytes()

    def protocol_error(self, problem: str) -> None:
        log.warning("closing connection from %s: %s", self.remote, problem)
        self.close()

    def close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self._flush()
            self.state = ConnectionState.CLOSED
            limits = self.reply_limits
            if limits is not None and transport.get_write_buffer_size() > limits.high_bytes:
                # A client not reading its replies: closing gracefully would hold them
                # until it read them.
                transport.abort()
                self._release_replies()
            else:
                transport.close()
            # At once, not at connection_lost a loop turn later: a listener over its
            # budget counts on the memory being free when this returns.
            self._release_partial_frame()

    def abort(self, problem: str) -> None:
        """Closes at once, dropping what is unsent: for a client that does not read its
        replies, whose connection a graceful close would keep, holding them, until it
        did."""
        log.warning("closing connection from %s: %s", self.remote, problem)
        self.state = ConnectionState.CLOSED
        if self.transport is not None:
            self.transport.abort()
        self._release_partial_frame()
        self._release_replies()


class PeerLink:
    """The outbound connection to one peer, kept up with capped backoff."""

    def __init__(self, owner: NodeTransport, peer_id: NodeId, host: str, port: int) -> None:
        self.owner = owner
        self.peer_id = peer_id
        self.host = host
        self.port = port
        self.connection: Connection | None = None
        self.dropped_messages = 0
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.connection is not None:
            self.connection.close()

    def send(self, message: Message) -> None:
        connection = self.connection
        if connection is None or connection.paused:
            self.dropped_messages += 1
            return
        connection.send(message)  # type: ignore[arg-type]

    async def send_bulk(self, message: Message, timeout: float) -> None:
        """Sends `message`, first waiting (up to `timeout`) for the link to drain: for
        snapshot chunks, which must not be dropped the way Raft messages may be."""
        connection = self.connection
        if connection is None:
            raise ConnectionError(f"no link to node {self.peer_id}")
        await asyncio.wait_for(connection.writable.wait(), timeout)
        if connection is not self.connection:
            raise ConnectionError(f"link to node {self.peer_id} was replaced")
        connection.send(message)  # type: ignore[arg-type]

    async def _run(self) -> None:
        delay = RECONNECT_DELAY_MIN_S
        while True:
            welcomed = await self._connect_once()
            if welcomed:
                delay = RECONNECT_DELAY_MIN_S
            await asyncio.sleep(delay * (0.5 + self._rng.random()))
            delay = min(delay * 2, RECONNECT_DELAY_MAX_S)

    async def _connect_once(self) -> bool:
        loop = asyncio.get_running_loop()
        welcome: asyncio.Future[bool] = loop.create_future()

        def on_message(connection: Connection, message: WireMessage) -> None:
            if isinstance(message, Welcome) and message.node_id == self.peer_id:
                if not welcome.done():
                    welcome.set_result(True)
            elif isinstance(message, Refused):
                log.error("node %s refused our connection: %s", self.peer_id, message.reason)
                if not welcome.done():
                    welcome.set_result(False)
                connection.close()
            else:
                connection.protocol_error(f"unexpected {type(message).__name__} on outbound link")

        def on_lost(connection: Connection) -> None:
            if not welcome.done():
                welcome.set_result(False)

        try:
            _, connection = await loop.create_connection(
                lambda: Connection(
                    on_message, on_lost, self.owner.max_frame_bytes, ConnectionState.OUTBOUND
                ),
                self.host,
                self.port,
            )
        except OSError:
            return False
        connection.send(
            Hello(self.owner.cluster_id, "peer", self.owner.node_id, self.owner.identity)
        )
        try:
            ok = await asyncio.wait_for(welcome, HANDSHAKE_TIMEOUT_S)
        except TimeoutError:
            ok = False
        if not ok:
            connection.close()
            return False
        self.connection = connection
        try:
            await connection.closed
        finally:
            self.connection = None
            self.owner.on_peer_unreachable(self.peer_id)
        return True


class NodeTransport:
    """A node's listener plus its outbound links to every peer."""

    def __init__(
        self,
        *,
        node_id: NodeId,
        cluster_id: str,
        host: str,
        port: int,
        peers: dict[NodeId, tuple[str, int]],
        on_peer_message: Callable[[Message], None],
        on_client_message: Callable[[Connection, ClientRequestMessage], None],
        on_peer_unreachable: Callable[[NodeId], None],
        max_frame_bytes: int = MAX_FRAME_BYTES_DEFAULT,
        on_peer_read: Callable[[], None] | None = None,
        frame_stall_timeout_s: float = FRAME_STALL_TIMEOUT_S,
        partial_frame_bytes_max: int = PARTIAL_FRAME_BYTES_TOTAL_MAX,
        client_reply_limits: ClientReplyLimits | None = None,
        client_reply_bytes_max: int = CLIENT_REPLY_BYTES_TOTAL_MAX,
        identity: str = "",
        client_max_in_flight: int = 0,
        max_inbound_connections: int = MAX_INBOUND_CONNECTIONS,
    ) -> None:
        self.node_id = node_id
        #: This node's cluster description, sent to peers and compared with theirs.
        self.identity = identity
        #: Told to clients in Welcome (see `Welcome.max_in_flight`).
        self.client_max_in_flight = client_max_in_flight
        self.max_inbound_connections = max_inbound_connections
        self.cluster_id = cluster_id
        self.host = host
        self.port = port
        self.max_frame_bytes = max_frame_bytes
        self.frame_stall_timeout_s = frame_stall_timeout_s
        #: Never so small that the peers' largest frames, arriving at once, are shed.
        self.partial_frame_bytes_max = max(
            partial_frame_bytes_max, (len(peers) + 1) * max_frame_bytes
        )
        #: Bytes of unfinished frames all inbound connections hold together.
        self.partial_frame_bytes = 0
        self.client_reply_limits = client_reply_limits or ClientReplyLimits()
        self.client_reply_bytes_max = client_reply_bytes_max
        #: What client connections hold together (see `Connection.reply_bytes`).
        self.client_reply_bytes = 0
        self._on_peer_message = on_peer_message
        self._on_client_message = on_client_message
        self.on_peer_unreachable = on_peer_unreachable
        #: Called after each read from a peer whose messages were all stepped: the node
        #: handles what they made ready at once instead of a loop turn later.
        self.on_peer_read = on_peer_read
        self.links = {
            peer: PeerLink(self, peer, address[0], address[1]) for peer, address in peers.items()
        }
        self.inbound: set[Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._accept, self.host, self.port, reuse_address=True
        )
        for link in self.links.values():
            link.start()

    def _accept(self) -> Connection:
        connection = Connection(
            self._on_inbound_message,
            self.inbound.discard,
            HELLO_FRAME_BYTES_MAX,
            ConnectionState.AWAIT_HELLO,
            frame_stall_timeout_s=self.frame_stall_timeout_s,
        )
        connection.on_partial_frame = self._on_partial_frame
        connection.refuse = len(self.inbound) >= self.max_inbound_connections
        self.inbound.add(connection)
        return connection

    def _on_partial_frame(self, connection: Connection, change: int) -> None:
        self.partial_frame_bytes += change
        if change > 0 and self.partial_frame_bytes > self.partial_frame_bytes_max:
            self._shed_partial_frames()

    def _shed_partial_frames(self) -> None:
        """Closes connections holding unfinished frames until they hold at most
        `PARTIAL_FRAME_SHED_TO_FRACTION` of the budget: clients' (and strangers') before
        peers', then the oldest first, since a live sender finishes a frame in
        milliseconds and a stalled one is what holds memory."""
        over = self.partial_frame_bytes
        target = int(self.partial_frame_bytes_max * PARTIAL_FRAME_SHED_TO_FRACTION)
        holders = sorted(
            (c for c in self.inbound if c.partial_frame_bytes),
            key=lambda c: (c.state is ConnectionState.PEER, c.partial_frame_since),
        )
        log.warning(
            "inbound connections hold %d bytes of unfinished frames, over the budget of %d "
            "(PARTIAL_FRAME_BYTES_TOTAL_MAX): closing the oldest until at most %d",
            over,
            self.partial_frame_bytes_max,
            target,
        )
        now = asyncio.get_running_loop().time()
        for connection in holders:
            if self.partial_frame_bytes <= target:
                break
            connection.protocol_error(
                f"its unfinished frame ({connection.partial_frame_bytes} bytes, begun "
                f"{now - connection.partial_frame_since:.1f} s ago) is among the oldest "
                "while unfinished frames are over the node's budget"
            )

    def _on_reply_bytes(self, connection: Connection, change: int) -> None:
        self.client_reply_bytes += change
        if change > 0 and self.client_reply_bytes > self.client_reply_bytes_max:
            self._shed_replies()

    def _shed_replies(self) -> None:
        """Closes the client connections holding the most unsent replies until they hold
        at most the budget, after counting them all again: a count taken at a flush still
        includes what the client has read since."""
        for connection in list(self.inbound):
            connection.count_reply_bytes()  # never higher: this does not recurse
        if self.client_reply_bytes <= self.client_reply_bytes_max:
            return
        log.warning(
            "client connections hold %d bytes of unsent replies, over the budget of %d "
            "(CLIENT_REPLY_BYTES_TOTAL_MAX): closing those holding the most",
            self.client_reply_bytes,
            self.client_reply_bytes_max,
        )
        holders = sorted(
            (c for c in self.inbound if c.reply_bytes), key=lambda c: c.reply_bytes, reverse=True
        )
        for connection in holders:
            if self.client_reply_bytes <= self.client_reply_bytes_max:
                break
            connection.abort(
                f"it holds {connection.reply_bytes} bytes of replies it has not read, the "
                "most of any client while client connections are over the node's budget"
            )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self.links.values():
            await link.stop()
        for connection in list(self.inbound):
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()

    def send(self, message: Message) -> None:
        link = self.links.get(message.to)
        if link is not None:
            link.send(message)

    def flush(self) -> None:
        """Writes every peer link's queued messages now (see `Connection.flush`)."""
        for link in self.links.values():
            if link.connection is not None:
                link.connection.flush()

    async def send_bulk(self, message: Message, timeout: float) -> None:
        link = self.links.get(message.to)
        if link is None:
            raise ConnectionError(f"node {message.to} is not a peer")
        await link.send_bulk(message, timeout)

    def _on_inbound_message(self, connection: Connection, message: WireMessage) -> None:
        state = connection.state
        if state is ConnectionState.PEER:
            if not isinstance(message, Message):
                connection.protocol_error(f"unexpected {type(message).__name__} from a peer")
            elif message.from_id != connection.peer_id or message.to != self.node_id:
                connection.protocol_error(
                    f"message claims {message.from_id}->{message.to} on node "
                    f"{connection.peer_id}'s link"
                )
            else:
                self._on_peer_message(message)
        elif state is ConnectionState.CLIENT:
            if isinstance(message, ClientRequestMessage):
                self._client_request(connection, message)
            else:
                connection.protocol_error(f"unexpected {type(message).__name__} from a client")
        elif state is ConnectionState.AWAIT_HELLO:
            self._handshake(connection, message)

    def _client_request(self, connection: Connection, message: ClientRequestMessage) -> None:
        opens = connection.session_opens
        if opens is not None and message.request_id in opens.unanswered:
            # Else an answer to this request could pass for the session's, and the
            # session stop counting before it was answered.
            connection.protocol_error(
                f"request id {message.request_id} reused while the OpenSessionRequest "
                "with that id is unanswered"
            )
            return
        if isinstance(message, OpenSessionRequest):
            if opens is None:
                opens = connection.session_opens = SessionOpens()
            if not opens.admit(message.request_id, asyncio.get_running_loop().time()):
                if opens.refused == 1:
                    log.warning("client %s: %s", connection.remote, opens.refusal())
                connection.send(
                    ClientReply(message.request_id, ReplyStatus.REJECTED, message=opens.refusal())
                )
                return
        self._on_client_message(connection, message)

    def _handshake(self, connection: Connection, message: WireMessage) -> None:
        if not isinstance(message, Hello):
            connection.protocol_error(f"expected Hello, got {type(message).__name__}")
            return
        problem = self._check_hello(message)
        if problem:
            log.warning("refusing %s from %s: %s", message.role, connection.remote, problem)
            connection.send(Refused(problem))
            connection.close()
            return
        # Clients get the peers' limit rather than one sized to their commands: a
        # command a little over max_command_bytes should be answered REJECTED, naming
        # that setting, not hung up on and retried until the client's deadline. What
        # bounds the total is PARTIAL_FRAME_BYTES_TOTAL_MAX.
        connection.max_frame_bytes = self.max_frame_bytes
        if message.role == "peer":
            connection.state = ConnectionState.PEER
            connection.peer_id = NodeId(message.node_id)
            connection.on_received = self.on_peer_read
            connection.send(Welcome(self.node_id))
        else:
            connection.state = ConnectionState.CLIENT
            connection.limit_replies(self.client_reply_limits, self._on_reply_bytes)
            connection.send(Welcome(self.node_id, self.client_max_in_flight))

    def _check_hello(self, hello: Hello) -> str:
        if hello.cluster_id != self.cluster_id:
            return f"cluster id {hello.cluster_id!r} is not this cluster's ({self.cluster_id!r})"
        if hello.role == "peer":
            if hello.node_id not in self.links:
                return f"node id {hello.node_id} is not a member of this cluster"
            if hello.identity and self.identity and hello.identity != self.identity:
                return (
                    f"node {hello.node_id} was started for another cluster "
                    f"({hello.identity}) than this node ({self.identity})"
                )
            return ""
        if hello.role == "client":
            return ""
        return f"unknown role {hello.role!r}"
