"""`AsyncClient` and its synchronous twin `Client`: the asyncio shell around the
sans-I/O `ClientSession` (`session.py`, which holds the theory of operation: sessions,
sequence numbers, retries, backoff, what each failure means, the flow window).

The shell owns what needs a clock, sockets or tasks. It connects to the core's target
(trying each address once, reporting `connect_failed`, before the core's back-off),
sends each attempt on the shared connection and matches replies to it by request id,
turns timers and lost connections into `on_timeout` / `on_lost`, sleeps for `Retry`
delays, and closes its connection when the core moves to another route. Two failures
are final at once in the shell: a handshake every member refuses (a wrong cluster id:
`HandshakeRefusedError`, with the node's reason) and a command over
`max_command_bytes` (`RequestRejectedError`, before anything is sent).

Many calls may be in flight at once (from many tasks, or many threads for `Client`);
they share the connection. Calls beyond the core's flow window wait here, first come
first served, sending nothing; a call whose deadline passes while it waits did not
happen (`ClusterUnavailableError`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import random
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from phalanx.client.errors import (
    ClientError,
    ClusterUnavailableError,
    HandshakeRefusedError,
)
from phalanx.client.session import (
    ATTEMPT_TIMEOUT_S_DEFAULT,
    BACKOFF_MAX_S,
    BACKOFF_MIN_S,
    MAX_COMMAND_BYTES_DEFAULT,
    MAX_IN_FLIGHT_DEFAULT,
    MAX_LEARNED_ADDRESSES,
    WINDOW_DECREASE_INTERVAL_S,
    WINDOW_MIN,
    Attempt,
    Call,
    ClientSession,
    Decision,
    Done,
    Fail,
    Reopen,
    Retry,
    backoff_delay_s,
)
from phalanx.transport.addresses import parse_address
from phalanx.transport.tcp import Connection, ConnectionState
from phalanx.transport.wire import (
    MAX_FRAME_BYTES_DEFAULT,
    ClientReply,
    Hello,
    KeepAliveRequest,
    NodeStatus,
    PushedMessage,
    Refused,
    RepairRequest,
    SnapshotReply,
    SnapshotRequest,
    StatusReply,
    StatusRequest,
    Subscribe,
    Welcome,
    WireMessage,
)

# Re-exported: the retry and flow constants moved to `session.py` with the decisions.
__all__ = [
    "BACKOFF_MAX_S",
    "BACKOFF_MIN_S",
    "MAX_COMMAND_BYTES_DEFAULT",
    "MAX_IN_FLIGHT_DEFAULT",
    "MAX_LEARNED_ADDRESSES",
    "WINDOW_DECREASE_INTERVAL_S",
    "WINDOW_MIN",
    "AsyncClient",
    "Client",
    "backoff_delay_s",
]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
#: The cap for resubscribing, which runs in the background with no caller waiting.
RESUBSCRIBE_BACKOFF_MAX_S = 1.0
#: Pushed messages waiting in `messages()` before new ones are dropped (and counted).
MAX_QUEUED_PUSHED = 10_000

#: Builds the message of one attempt, given a fresh request id.
MakeRequest = Callable[[Attempt, int], WireMessage]


class _ConnectionLost(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Unreachable:
    """Why one address gave no connection; `refused` if it answered the handshake no."""

    address: str
    reason: str
    refused: bool


class AsyncClient:
    def __init__(
        self,
        members: Sequence[str] | str,
        *,
        cluster_id: str = "phalanx",
        timeout: float = 10.0,
        attempt_timeout: float = ATTEMPT_TIMEOUT_S_DEFAULT,
        on_message: Callable[[Any], None] | None = None,
        keepalive_interval: float = 15.0,
        max_command_bytes: int = MAX_COMMAND_BYTES_DEFAULT,
        max_in_flight: int = MAX_IN_FLIGHT_DEFAULT,
    ) -> None:
        #: Every decision about sessions, sequence numbers, retries and the flow window.
        self._core = ClientSession(
            members,
            random.Random(),
            max_in_flight=max_in_flight,
            max_command_bytes=max_command_bytes,
            attempt_timeout_s=attempt_timeout,
        )
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
        self._connection: Connection | None = None
        #: The core's route when `_connection` was made: once the core moves on from
        #: it, the connection is closed.
        self._connection_route = -1
        self._connect_lock: asyncio.Lock | None = None
        self._session_lock: asyncio.Lock | None = None
        self._futures: dict[
            int, tuple[asyncio.Future[ClientReply | StatusReply | SnapshotReply], Connection]
        ] = {}
        self._request_ids = itertools.count(1)
        #: Calls waiting for room in the window, first come first served.
        self._admission: collections.deque[asyncio.Future[int]] = collections.deque()

    # -- the core's state, as the client has always shown it ---------------------------------

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The members given, then up to MAX_LEARNED_ADDRESSES learned from hints."""
        return [parse_address(address) for address in self._core.addresses]

    @property
    def session_id(self) -> int:
        return self._core.session_id

    @property
    def attempt_timeout(self) -> float:
        """How long one attempt waits for its answer before the client tries elsewhere."""
        return self._core.attempt_timeout_s

    @attempt_timeout.setter
    def attempt_timeout(self, value: float) -> None:
        self._core.attempt_timeout_s = value

    @property
    def max_command_bytes(self) -> int:
        """Commands whose encoding is larger are refused before they are sent."""
        return self._core.max_command_bytes

    @property
    def max_in_flight(self) -> int:
        """Commands in flight at most (and the widest span of their sequence numbers)."""
        return self._core.max_in_flight

    @property
    def window(self) -> float:
        """The adaptive flow window (see `session.py`); starts fully open."""
        return self._core.window

    @property
    def window_decreases(self) -> int:
        """Times the window was halved because the leader said it was busy."""
        return self._core.window_decreases

    @property
    def retries(self) -> int:
        """Answers other than a result, and attempts that got none."""
        return self._core.retries

    @property
    def _rng(self) -> random.Random:
        return self._core.rng

    @_rng.setter
    def _rng(self, rng: random.Random) -> None:
        self._core.rng = rng

    @property
    def _outstanding(self) -> frozenset[int]:
        return self._core.in_flight

    @property
    def _next_seq(self) -> int:
        return self._core.next_seq

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
        # The node would refuse it (or, past its frame limit, drop the connection and
        # leave the call to time out): say so now, having sent nothing.
        self._core.check_command(payload)
        while True:
            if not self._core.session_id:
                await self._ensure_session(deadline)
            seq = await self._admit(deadline)
            try:
                decision = await self._drive(
                    self._core.command(seq, payload, deadline), Attempt.message
                )
            finally:
                self._release(seq)
            if isinstance(decision, Done):
                return _decoder.decode(decision.payload)
            # Reopen: the session was gone before the command could apply, so it goes
            # again under a new session.

    # -- flow control ------------------------------------------------------------------------

    async def _admit(self, deadline: float) -> int:
        """A sequence number for a new command, once the window has room for it."""
        core = self._core
        if not self._admission and core.has_room():
            return core.admit()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._admission.append(future)
        timer = loop.call_later(max(0.0, deadline - loop.time()), _time_out, future)
        try:
            return await future
        except TimeoutError:
            raise ClusterUnavailableError(
                f"no room in the client's flow window before the deadline; nothing was sent "
                f"({len(core.in_flight)} commands in flight, window {int(core.window)}; "
                f"max_in_flight {core.max_in_flight} also bounds how far sequence numbers "
                "may run ahead of the oldest unanswered one)"
            ) from None
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self._release(future.result())  # admitted just as the caller gave up
            raise
        finally:
            timer.cancel()

    def _release(self, seq: int) -> None:
        core = self._core
        core.release(seq)
        admission = self._admission
        while admission and core.has_room():
            future = admission.popleft()
            if not future.done():
                future.set_result(core.admit())

    def _widen(self) -> None:
        self._core.widen()

    def _narrow(self) -> None:
        self._core.narrow(asyncio.get_running_loop().time())

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
        failures = 0
        while True:
            try:
                deadline = loop.time() + self.timeout
                await self._ensure_session(deadline)
                await self._drive(
                    self._core.session_call(deadline),
                    lambda attempt, rid: Subscribe(rid, attempt.session_id, self._last_pushed_seq),
                )
                failures = 0
                connection = self._connection
                if connection is not None:
                    await self._keep_alive_until_closed(connection)
            except ClientError:
                failures += 1
            await asyncio.sleep(
                backoff_delay_s(failures, self._core.rng, RESUBSCRIBE_BACKOFF_MAX_S)
            )

    async def _keep_alive_until_closed(self, connection: Connection) -> None:
        """While subscribed, an idle client still renews its session through the log
        (sessions expire by cluster time), then resubscribes wherever it goes next."""
        loop = asyncio.get_running_loop()
        while not connection.closed.done():
            done, _ = await asyncio.wait({connection.closed}, timeout=self.keepalive_interval)
            if done:
                return
            await self._drive(
                self._core.session_call(loop.time() + self.timeout),
                lambda attempt, rid: KeepAliveRequest(rid, attempt.session_id),
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

    async def status(self, address_index: int | None = None) -> NodeStatus:
        """The status of one member (by position in `members`), or of the current node."""
        if address_index is not None:
            self._core.aim(address_index)
            self._current_connection()  # closes the one to the old target
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
            if not self._core.session_id:
                await self._drive(self._core.open_session(deadline), Attempt.message)

    async def _drive(self, call: Call, make: MakeRequest) -> Done | Reopen:
        """Sends `call` until the core decides it is over, waiting as it says between
        attempts; raises its error if it fails."""
        try:
            while True:
                decision = await self._try_once(call, make)
                if isinstance(decision, Retry):
                    if decision.delay_s > 0:
                        await asyncio.sleep(decision.delay_s)
                    continue
                if isinstance(decision, Fail):
                    raise decision.error
                assert isinstance(decision, Done | Reopen), decision  # only our own attempts
                return decision
        finally:
            if not call.finished:
                self._core.abandon(call)  # cancelled: the seq goes back to the window

    async def _try_once(self, call: Call, make: MakeRequest) -> Decision:
        """One attempt of `call` on the connection to the core's target, and the core's
        decision on what came of it."""
        loop = asyncio.get_running_loop()
        core = self._core
        connection = self._current_connection()
        while connection is None and loop.time() < call.deadline_s:
            try:
                await self._connect(call.deadline_s)
            except HandshakeRefusedError:
                raise  # every member said no: waiting will not change its mind
            except ClusterUnavailableError as error:
                return self._decided(core.on_unreachable(call, loop.time(), str(error)))
            connection = self._current_connection()  # None if the core moved on meanwhile
        attempt = core.attempt(call, loop.time())
        if isinstance(attempt, Fail):
            return attempt
        assert connection is not None  # the deadline had not passed, so it connected
        request_id = next(self._request_ids)
        future = self._register(request_id, connection)
        connection.send(make(attempt, request_id))
        # A timer rather than asyncio.wait_for: this is the hot path of every call.
        timer = loop.call_later(attempt.timeout_at_s - loop.time(), _time_out, future)
        try:
            reply = await future
        except _ConnectionLost:
            self._futures.pop(request_id, None)
            return self._decided(core.on_lost(attempt, loop.time()))
        except TimeoutError:
            self._futures.pop(request_id, None)
            return self._decided(core.on_timeout(attempt, loop.time()))
        finally:
            timer.cancel()
        assert isinstance(reply, ClientReply)
        return self._decided(core.on_reply(attempt, reply, loop.time()))

    def _decided(self, decision: Decision) -> Decision:
        """Follows the core to its new route, if it took one, and passes `decision` on."""
        self._current_connection()
        return decision

    def _current_connection(self) -> Connection | None:
        """The open connection of the core's current route, if any; one of an older
        route is closed (its in-flight requests then count as lost)."""
        connection = self._connection
        if connection is None:
            return None
        if self._connection_route != self._core.route:
            self._connection = None
            connection.close()
            return None
        return None if connection.state is ConnectionState.CLOSED else connection

    def _register(
        self, request_id: int, connection: Connection
    ) -> asyncio.Future[ClientReply | StatusReply | SnapshotReply]:
        future: asyncio.Future[ClientReply | StatusReply | SnapshotReply] = (
            asyncio.get_running_loop().create_future()
        )
        self._futures[request_id] = (future, connection)
        return future

    # -- connections ------------------------------------------------------------------------

    async def _connect(self, deadline: float) -> Connection:
        """The open connection, or a new one to the first address (from the core's
        target on) that welcomes this client. Raises HandshakeRefusedError if every
        address refused the handshake, ClusterUnavailableError if none welcomed it."""
        connection = self._current_connection()
        if connection is not None:
            return connection
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        core = self._core
        async with self._connect_lock:
            connection = self._current_connection()
            if connection is not None:
                return connection
            failures: list[_Unreachable] = []
            for _ in range(len(core.addresses)):
                address, route = core.target, core.route
                result = await self._try_connect(address, deadline)
                if isinstance(result, Connection):
                    # If the core moved on while this connected, the route is old and
                    # the next look at it closes it.
                    self._connection, self._connection_route = result, route
                    return result
                failures.append(result)
                core.connect_failed(address)
        why = _describe_unreachable(failures)
        if all(failure.refused for failure in failures):
            raise HandshakeRefusedError(why)
        raise ClusterUnavailableError(f"no member accepted a connection: {why}")

    async def _try_connect(self, where: str, deadline: float) -> Connection | _Unreachable:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Welcome | Refused | None] = loop.create_future()

        def on_message(connection: Connection, message: WireMessage) -> None:
            if isinstance(message, Welcome | Refused):
                if isinstance(message, Welcome) and message.max_in_flight:
                    self._core.cap_in_flight(message.max_in_flight)
                if not answer.done():
                    answer.set_result(message)
                return
            if isinstance(message, ClientReply | StatusReply | SnapshotReply):
                self._core.heard(loop.time())
                waiting = self._futures.pop(message.request_id, None)
                if waiting is not None and not waiting[0].done():
                    waiting[0].set_result(message)
            elif isinstance(message, PushedMessage):
                self._on_pushed(message)

        def on_lost(connection: Connection) -> None:
            if not answer.done():
                answer.set_result(None)
            for request_id, (future, owner) in list(self._futures.items()):
                if owner is connection:
                    del self._futures[request_id]
                    if not future.done():
                        future.set_exception(_ConnectionLost())

        host, port = parse_address(where)
        timeout = max(0.01, min(self.attempt_timeout, deadline - loop.time()))
        waited = f"no answer within {timeout:.2f} s"
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Connection(
                        on_message, on_lost, MAX_FRAME_BYTES_DEFAULT, ConnectionState.OUTBOUND
                    ),
                    host,
                    port,
                ),
                timeout,
            )
        except TimeoutError:
            return _Unreachable(where, waited, refused=False)
        except OSError as error:
            # asyncio's message repeats the address; the errno's text does not.
            reason = os.strerror(error.errno) if error.errno else str(error)
            return _Unreachable(where, reason, refused=False)
        connection.send(Hello(self.cluster_id, "client"))
        try:
            reply = await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            connection.close()
            return _Unreachable(where, waited, refused=False)
        if isinstance(reply, Welcome):
            return connection
        connection.close()
        if isinstance(reply, Refused):
            return _Unreachable(where, reply.reason, refused=True)
        return _Unreachable(where, "closed the connection unanswered", refused=False)


def _describe_unreachable(failures: Sequence[_Unreachable]) -> str:
    """One clause per distinct reason, naming the addresses that gave it."""
    addresses: dict[tuple[bool, str], list[str]] = {}
    for failure in failures:
        addresses.setdefault((failure.refused, failure.reason), []).append(failure.address)
    return "; ".join(
        f"{', '.join(where)} {'refused' if refused else 'unreachable'}: {reason}"
        for (refused, reason), where in addresses.items()
    )


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

    def status(self, address_index: int | None = None) -> NodeStatus:
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
