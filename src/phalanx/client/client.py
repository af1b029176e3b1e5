"""`AsyncClient` and its synchronous twin `Client`.

Theory of operation
-------------------
A client talks to one node at a time. It opens a session through the log (the session
id is the log index of the open entry), then sends each command with its session id
and a fresh sequence number. Any answer other than a result (not the leader, leadership
changed, connection lost, no answer within `attempt_timeout`) makes it try again, at the
leader it was pointed to or at the next member, with the SAME sequence number: the
replicated session table applies a sequence number once and returns the cached reply to
every retry, so retrying is always safe. Each command also carries the lowest sequence
number still unanswered, which lets the cluster forget older replies.

Many calls may be in flight at once (from many tasks, or many threads for `Client`);
they share the connection and are matched to replies by request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import msgspec

from phalanx.client.errors import (
    ClientError,
    ClusterUnavailableError,
    OutcomeUnknownError,
    RequestRejectedError,
    SessionExpiredError,
)
from phalanx.transport.addresses import client_addresses
from phalanx.transport.tcp import Connection, ConnectionState
from phalanx.transport.wire import (
    MAX_FRAME_BYTES_DEFAULT,
    ClientReply,
    CommandRequest,
    Hello,
    KeepAliveRequest,
    OpenSessionRequest,
    PushedMessage,
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
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
RETRY_DELAY_S = 0.01
RETRY_DELAY_MAX_S = 0.05
#: Pushed messages waiting in `messages()` before new ones are dropped (and counted).
MAX_QUEUED_PUSHED = 10_000


class _ConnectionLost(Exception):
    pass


class AsyncClient:
    def __init__(
        self,
        members: Sequence[str] | str,
        *,
        cluster_id: str = "phalanx",
        timeout: float = 10.0,
        attempt_timeout: float = 1.0,
        on_message: Callable[[Any], None] | None = None,
        keepalive_interval: float = 15.0,
    ) -> None:
        self.addresses = client_addresses(members)
        #: Called (in the client's event loop) with each message the service pushes.
        self.on_message = on_message
        #: While subscribed, the session is renewed this often (well below the
        #: cluster's session timeout, 60 s by default).
        self.keepalive_interval = keepalive_interval
        self._pushed: asyncio.Queue[Any] | None = None
        self._last_pushed_seq = 0
        self._subscription: asyncio.Task[None] | None = None
        self.pushed_received = 0
        self.pushed_gaps = 0
        self.pushed_dropped = 0
        self.cluster_id = cluster_id
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.session_id = 0
        self._target = 0
        self._connection: Connection | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._session_lock: asyncio.Lock | None = None
        self._futures: dict[
            int, tuple[asyncio.Future[ClientReply | StatusReply | SnapshotReply], Connection]
        ] = {}
        self._request_ids = itertools.count(1)
        self._next_seq = 1
        #: Sequence numbers of the commands in flight, and a min-heap over them (with
        #: finished ones removed lazily) for `first_incomplete` in O(log n).
        self._outstanding: set[int] = set()
        self._outstanding_heap: list[int] = []
        self.retries = 0

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._subscription is not None:
            self._subscription.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._subscription
            self._subscription = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- the public calls ----------------------------------------------------------------

    async def call(self, command: Any, timeout: float | None = None) -> Any:
        """Sends one command and returns the service's reply, applied exactly once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        payload = _encoder.encode(command)
        while True:
            if not self.session_id:
                await self._ensure_session(deadline)
            seq = self._next_seq
            self._next_seq += 1
            self._outstanding.add(seq)
            heapq.heappush(self._outstanding_heap, seq)
            try:
                reply = await self._send_command(deadline, self.session_id, seq, payload)
            finally:
                self._outstanding.discard(seq)
            if reply is not None:
                return _decoder.decode(reply.payload)

    async def _send_command(
        self, deadline: float, session_id: int, seq: int, payload: bytes
    ) -> ClientReply | None:
        """The reply, or None when the session was gone before the command could apply
        (the caller then sends it again under a new session)."""
        attempts = 0

        def request(request_id: int) -> CommandRequest:
            nonlocal attempts
            attempts += 1
            return CommandRequest(request_id, session_id, seq, self._first_incomplete(), payload)

        try:
            return await self._until_answered(deadline, request, sent_once=False)
        except SessionExpiredError:
            # Sequence numbers keep increasing across sessions, so numbers of the old
            # session still in flight never collide with the new one's.
            if self.session_id == session_id:
                self.session_id = 0
            if attempts > 1:
                raise  # an earlier attempt may have applied under the old session
            return None

    def _first_incomplete(self) -> int:
        """The lowest sequence number still in flight: the service may forget the
        replies to every command below it."""
        heap, outstanding = self._outstanding_heap, self._outstanding
        while heap[0] not in outstanding:
            heapq.heappop(heap)
        return heap[0]

    # -- pushed messages -------------------------------------------------------------------

    def subscribe(self) -> None:
        """Starts receiving what the service pushes to this client's session
        (`ctx.send`): delivered to `on_message` and to `messages()`, in order, once
        each, across leader changes (the client resubscribes by itself)."""
        if self._subscription is None:
            self._subscription = asyncio.get_running_loop().create_task(self._keep_subscribed())

    async def messages(self) -> AsyncIterator[Any]:
        """Pushed messages as an async iterator (subscribes on first use)."""
        if self._pushed is None:
            self._pushed = asyncio.Queue(MAX_QUEUED_PUSHED)
        self.subscribe()
        while True:
            yield await self._pushed.get()

    async def _keep_subscribed(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                deadline = loop.time() + self.timeout
                await self._ensure_session(deadline)
                await self._until_answered(
                    deadline,
                    lambda rid: Subscribe(rid, self.session_id, self._last_pushed_seq),
                    sent_once=False,
                )
                connection = self._connection
                if connection is not None:
                    await self._keep_alive_until_closed(connection)
            except ClientError:
                pass
            await asyncio.sleep(RETRY_DELAY_MAX_S)

    async def _keep_alive_until_closed(self, connection: Connection) -> None:
        """While subscribed, an idle client still renews its session through the log
        (sessions expire by cluster time), then resubscribes wherever it goes next."""
        loop = asyncio.get_running_loop()
        while not connection.closed.done():
            done, _ = await asyncio.wait({connection.closed}, timeout=self.keepalive_interval)
            if done:
                return
            await self._until_answered(
                loop.time() + self.timeout,
                lambda rid: KeepAliveRequest(rid, self.session_id),
                sent_once=False,
            )

    def _on_pushed(self, message: PushedMessage) -> None:
        if message.session_id != self.session_id or message.seq <= self._last_pushed_seq:
            return  # a resend of something already delivered
        self._last_pushed_seq = message.seq
        self.pushed_received += 1
        if message.gap:
            self.pushed_gaps += 1
        value = _decoder.decode(message.payload)
        if self.on_message is not None:
            self.on_message(value)
        if self._pushed is not None:
            try:
                self._pushed.put_nowait(value)
            except asyncio.QueueFull:
                self.pushed_dropped += 1

    async def repair(self, timeout: float = 10.0) -> tuple[int, int, str]:
        """Asks the connected node to rebuild its service from the leader's snapshot."""
        return await self._admin(RepairRequest, timeout)

    async def snapshot(self, timeout: float = 120.0) -> tuple[int, int, str]:
        """Asks the connected node to take a snapshot now: (index, term, note)."""
        return await self._admin(SnapshotRequest, timeout)

    async def _admin(self, make: Any, timeout: float) -> tuple[int, int, str]:
        loop = asyncio.get_running_loop()
        connection = await self._connect(loop.time() + self.attempt_timeout)
        request_id = next(self._request_ids)
        future = self._register(request_id, connection)
        connection.send(make(request_id))
        reply = await self._await_admin(future, timeout)
        assert isinstance(reply, SnapshotReply)
        return reply.index, reply.term, reply.message

    async def status(self, address_index: int | None = None) -> dict[str, object]:
        """The status of one member (by position in `members`), or of the current node."""
        if address_index is not None:
            if self._connection is not None:
                self._drop(self._connection, rotate=False)
            self._target = address_index
        connection = await self._connect(asyncio.get_running_loop().time() + self.attempt_timeout)
        request_id = next(self._request_ids)
        future = self._register(request_id, connection)
        connection.send(StatusRequest(request_id))
        reply = await self._await_admin(future, self.attempt_timeout)
        assert isinstance(reply, StatusReply)
        return reply.status

    async def _await_admin(
        self, future: asyncio.Future[ClientReply | StatusReply | SnapshotReply], timeout: float
    ) -> ClientReply | StatusReply | SnapshotReply:
        try:
            return await asyncio.wait_for(future, timeout)
        except _ConnectionLost:
            raise ClusterUnavailableError(
                "the node closed the connection before answering"
            ) from None
        except TimeoutError:
            raise ClusterUnavailableError(f"no answer within {timeout} s") from None

    # -- sessions and retries -------------------------------------------------------------

    async def _ensure_session(self, deadline: float) -> None:
        if self._session_lock is None:
            self._session_lock = asyncio.Lock()
        async with self._session_lock:
            if self.session_id:
                return
            reply = await self._until_answered(deadline, OpenSessionRequest, sent_once=False)
            self.session_id = reply.session_id

    async def _until_answered(self, deadline: float, make: Any, *, sent_once: bool) -> ClientReply:
        loop = asyncio.get_running_loop()
        delay = RETRY_DELAY_S
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                if sent_once:
                    raise OutcomeUnknownError("no answer before the deadline; it may have applied")
                raise ClusterUnavailableError("no leader reachable before the deadline")
            connection = self._connection  # connected: no coroutine to create and await
            try:
                if connection is None or connection.state is ConnectionState.CLOSED:
                    connection = await self._connect(deadline)
            except ClusterUnavailableError:
                await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
                delay = min(delay * 2, RETRY_DELAY_MAX_S)
                continue
            request_id = next(self._request_ids)
            future = self._register(request_id, connection)
            connection.send(make(request_id))
            sent_once = True
            # A timer rather than asyncio.wait_for: this is the hot path of every call.
            timer = loop.call_later(min(remaining, self.attempt_timeout), _time_out, future)
            try:
                reply = await future
            except (TimeoutError, _ConnectionLost):
                self._futures.pop(request_id, None)
                self._drop(connection, rotate=True)
                self.retries += 1
                continue
            finally:
                timer.cancel()
            assert isinstance(reply, ClientReply)
            if reply.status is ReplyStatus.OK:
                return reply
            if reply.status is ReplyStatus.REJECTED:
                raise RequestRejectedError(reply.message)
            if reply.status is ReplyStatus.SESSION_UNKNOWN:
                raise SessionExpiredError(reply.message)
            self.retries += 1
            if reply.status is ReplyStatus.NOT_LEADER:
                self._redirect(connection, reply.leader_hint)
            # Back off unless pointed at the leader: during an election every node
            # answers "not leader, unknown", and retrying at once only floods them.
            pointed = reply.status is ReplyStatus.NOT_LEADER and bool(reply.leader_hint)
            await asyncio.sleep(0 if pointed else delay)
            delay = min(delay * 2, RETRY_DELAY_MAX_S)

    def _register(
        self, request_id: int, connection: Connection
    ) -> asyncio.Future[ClientReply | StatusReply | SnapshotReply]:
        future: asyncio.Future[ClientReply | StatusReply | SnapshotReply] = (
            asyncio.get_running_loop().create_future()
        )
        self._futures[request_id] = (future, connection)
        return future

    # -- connections ------------------------------------------------------------------------

    def _redirect(self, connection: Connection, hint: str) -> None:
        if connection is not self._connection:
            return  # someone already moved on
        target = None
        if hint:
            host, _, port = hint.rpartition(":")
            if (host, int(port)) in self.addresses:
                target = self.addresses.index((host, int(port)))
        self._drop(connection, rotate=target is None)
        if target is not None:
            self._target = target

    def _drop(self, connection: Connection, *, rotate: bool) -> None:
        """Stops using `connection`; `rotate` moves on to the next member."""
        if connection is self._connection:
            self._connection = None
            if rotate:
                self._target = (self._target + 1) % len(self.addresses)
        connection.close()

    async def _connect(self, deadline: float) -> Connection:
        if self._connection is not None and self._connection.state is not ConnectionState.CLOSED:
            return self._connection
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if (
                self._connection is not None
                and self._connection.state is not ConnectionState.CLOSED
            ):
                return self._connection
            for _ in range(len(self.addresses)):
                connection = await self._try_connect(self.addresses[self._target], deadline)
                if connection is not None:
                    self._connection = connection
                    return connection
                self._target = (self._target + 1) % len(self.addresses)
        raise ClusterUnavailableError(f"no member of {self.addresses} accepted a connection")

    async def _try_connect(self, address: tuple[str, int], deadline: float) -> Connection | None:
        loop = asyncio.get_running_loop()
        welcome: asyncio.Future[bool] = loop.create_future()

        def on_message(connection: Connection, message: WireMessage) -> None:
            if isinstance(message, Welcome | Refused):
                if not welcome.done():
                    welcome.set_result(isinstance(message, Welcome))
                return
            if isinstance(message, ClientReply | StatusReply | SnapshotReply):
                waiting = self._futures.pop(message.request_id, None)
                if waiting is not None and not waiting[0].done():
                    waiting[0].set_result(message)
            elif isinstance(message, PushedMessage):
                self._on_pushed(message)

        def on_lost(connection: Connection) -> None:
            if not welcome.done():
                welcome.set_result(False)
            for request_id, (future, owner) in list(self._futures.items()):
                if owner is connection:
                    del self._futures[request_id]
                    if not future.done():
                        future.set_exception(_ConnectionLost())

        timeout = max(0.01, min(self.attempt_timeout, deadline - loop.time()))
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Connection(
                        on_message, on_lost, MAX_FRAME_BYTES_DEFAULT, ConnectionState.OUTBOUND
                    ),
                    *address,
                ),
                timeout,
            )
            connection.send(Hello(self.cluster_id, "client"))
            if await asyncio.wait_for(welcome, timeout):
                return connection
            connection.close()
        except (OSError, TimeoutError):
            pass
        return None


def _time_out(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class Client:
    """The synchronous twin of `AsyncClient`; safe to call from many threads at once."""

    def __init__(self, members: Sequence[str] | str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._async = AsyncClient(members, **options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(self, command: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(
            self._async.call(command, timeout), self._loop
        ).result()

    def subscribe(self) -> None:
        """Starts delivering pushed messages to the `on_message` callback (which runs
        in the client's own thread)."""
        self._loop.call_soon_threadsafe(self._async.subscribe)

    def status(self, address_index: int | None = None) -> dict[str, object]:
        return asyncio.run_coroutine_threadsafe(
            self._async.status(address_index), self._loop
        ).result()

    @property
    def session_id(self) -> int:
        return self._async.session_id

    def close(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._async.close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
