"""`AsyncClient` and its synchronous twin `Client`.

Theory of operation
-------------------
A client talks to one node at a time. It opens a session through the log (the session
id is the log index of the open entry), then sends each command with its session id
and a fresh sequence number. Any answer other than a result (not the leader, leadership
changed, leader busy, connection lost, no answer within `attempt_timeout`) makes it try
again, at the leader it was pointed to or at the next member, with the SAME sequence
number: the replicated session table applies a sequence number once and returns the
cached reply to every retry, so retrying is always safe. Each command also carries the
lowest sequence number still unanswered, which lets the cluster forget older replies.

Every retry but one waits first, for a capped exponential backoff with full jitter
(`backoff_delay_s`), so that clients turned away together (by an election, or by an
overloaded leader) do not all come back together. The exception keeps the common case
fast: "not the leader, try H:P" is followed at once, but only once in a row, so nodes
pointing at each other cannot make a client spin. A hint naming an address the client
was not given is learned (at most `MAX_LEARNED_ADDRESSES` of them): a client given any
one member finds the leader.

When the deadline passes, the error says whether the command may have happened. It may
have only if some attempt was written to a connection and then got no definite answer
(timed out, connection lost, "leadership changed, outcome unknown"):
`OutcomeUnknownError`. If every attempt was turned away before it could apply (no
connection, not the leader, leader busy), nothing happened: `ClusterUnavailableError`.
Two failures are final at once: a handshake every member refuses (a wrong cluster id:
`HandshakeRefusedError`, with the node's reason) and a command over
`max_command_bytes` (`RequestRejectedError`, before anything is sent).

Many calls may be in flight at once (from many tasks, or many threads for `Client`);
they share the connection and are matched to replies by request id.

Flow control: a client keeps at most `window` commands in flight and calls beyond it
wait in the client, sending nothing. The window adapts as TCP's congestion window
does (additive increase, multiplicative decrease): it grows by one per window of
answered commands and halves, at most once per `WINDOW_DECREASE_INTERVAL_S`, when the
leader answers "busy". So 25,000 callers of one client put only as much work on the
cluster as it can take, instead of a flood of refusals and retries. The window never
exceeds `max_in_flight`, and neither does the span of sequence numbers between the
oldest unanswered command and the newest: the cluster caches that many replies per
session (its `max_replies_per_session`), and a wider span would be refused.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
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
    OutcomeUnknownError,
    RequestRejectedError,
    SessionExpiredError,
)
from phalanx.core.errors import ConfigError
from phalanx.transport.addresses import client_addresses, parse_address
from phalanx.transport.tcp import Connection, ConnectionState
from phalanx.transport.wire import (
    MAX_FRAME_BYTES_DEFAULT,
    ClientReply,
    CommandRequest,
    Hello,
    KeepAliveRequest,
    NodeStatus,
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
#: Retry delays are drawn between the floor and a ceiling that doubles with each failure
#: in a row, up to the cap (`backoff_delay_s`).
BACKOFF_MIN_S = 0.005
BACKOFF_MAX_S = 0.2
#: The cap for resubscribing, which runs in the background with no caller waiting.
RESUBSCRIBE_BACKOFF_MAX_S = 1.0
#: Addresses learned from leader hints, beyond the members the client was given; when
#: full, the oldest learned one makes way.
MAX_LEARNED_ADDRESSES = 16
#: The node's default `max_command_bytes`; a cluster configured otherwise needs its
#: clients given the same value.
MAX_COMMAND_BYTES_DEFAULT = 1024 * 1024
#: What a `CommandRequest` frame adds around its payload (header, ids), rounded up.
COMMAND_FRAME_OVERHEAD_BYTES = 64
#: Commands in flight per client at most: the node's default `max_replies_per_session`
#: (a session caches that many replies; a client given more would be refused).
MAX_IN_FLIGHT_DEFAULT = 4096
#: The flow window halves at most this often, so one burst of "busy" answers (every
#: command of a full window) counts as one signal, as one loss per round trip in TCP.
WINDOW_DECREASE_INTERVAL_S = 0.05
#: The window never shrinks below this many commands.
WINDOW_MIN = 4
#: Pushed messages waiting in `messages()` before new ones are dropped (and counted).
MAX_QUEUED_PUSHED = 10_000
#: The RETRY answers a node gives when the request cannot have applied: refused before
#: it was proposed (busy, proposal dropped), its entry overwritten, or applied as a
#: refusal. They mirror the node's messages; any other RETRY (a leadership change with
#: the outcome unknown) may have applied, so an unrecognised text errs on that side.
RETRY_NOTHING_APPLIED_PREFIXES = (
    "leader busy",
    "proposal dropped",
    "entry lost",
    "too many commands in flight",
)


class _ConnectionLost(Exception):
    pass


class _SessionGone(SessionExpiredError):
    """The session is unknown and no attempt of this request can have applied, so it
    may be sent again under a new session."""


@dataclass(frozen=True, slots=True)
class _Unreachable:
    """Why one address gave no connection; `refused` if it answered the handshake no."""

    address: str
    reason: str
    refused: bool


class _Attempts:
    """What the attempts of one request have come to so far."""

    __slots__ = ("failures", "maybe_applied", "problem", "redirected")

    def __init__(self) -> None:
        #: Back-offs so far: each one's ceiling is twice the last one's.
        self.failures = 0
        #: Some attempt was sent and got no definite answer.
        self.maybe_applied = False
        #: The last attempt was answered with a usable leader hint.
        self.redirected = False
        #: What the last attempt came to, for the error at the deadline.
        self.problem = "no attempt finished"

    def deadline_error(self) -> ClientError:
        if self.maybe_applied:
            return OutcomeUnknownError(
                f"no answer before the deadline; it may have applied (last: {self.problem})"
            )
        return ClusterUnavailableError(
            f"no leader answered before the deadline; nothing applied (last: {self.problem})"
        )


def backoff_delay_s(failures: int, rng: random.Random, cap_s: float = BACKOFF_MAX_S) -> float:
    """Capped exponential backoff with full jitter: uniform between the floor and a
    ceiling that doubles with each failure in a row, so that clients turned away at
    the same moment spread out instead of returning together."""
    ceiling_s = min(cap_s, BACKOFF_MIN_S * 2.0 ** min(failures, 32))
    return rng.uniform(BACKOFF_MIN_S, ceiling_s)


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
        max_command_bytes: int = MAX_COMMAND_BYTES_DEFAULT,
        max_in_flight: int = MAX_IN_FLIGHT_DEFAULT,
    ) -> None:
        if max_in_flight < 1:
            raise ConfigError("max_in_flight", "must be at least 1")
        largest = MAX_FRAME_BYTES_DEFAULT - COMMAND_FRAME_OVERHEAD_BYTES
        if not 0 < max_command_bytes <= largest:
            raise ConfigError(
                "max_command_bytes", f"must be 1 to {largest} (a command travels in one frame)"
            )
        #: The members given, then up to MAX_LEARNED_ADDRESSES learned from hints.
        self.addresses = client_addresses(members)
        self._members_count = len(self.addresses)
        self._learned_count = 0
        #: Commands whose encoding is larger are refused before they are sent.
        self.max_command_bytes = max_command_bytes
        self._rng = random.Random()
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
        #: Commands in flight at most (and the widest span of their sequence numbers).
        self.max_in_flight = max_in_flight
        #: The adaptive flow window (see the theory of operation); starts fully open.
        self.window = float(max_in_flight)
        self._window_decreased_at = -WINDOW_DECREASE_INTERVAL_S
        #: Calls waiting for room in the window, first come first served.
        self._admission: collections.deque[asyncio.Future[int]] = collections.deque()
        #: Times the window was halved because the leader said it was busy.
        self.window_decreases = 0
        #: When the current connection last delivered an answer (event-loop time).
        self._heard_at = 0.0

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
        if len(payload) > self.max_command_bytes:
            # The node would refuse it (or, past its frame limit, drop the connection
            # and leave the call to time out): say so now, having sent nothing.
            raise RequestRejectedError(
                f"command of {len(payload)} bytes exceeds "
                f"max_command_bytes={self.max_command_bytes}; not sent"
            )
        while True:
            if not self.session_id:
                await self._ensure_session(deadline)
            seq = await self._admit(deadline)
            try:
                reply = await self._send_command(deadline, self.session_id, seq, payload)
            finally:
                self._release(seq)
            if reply is not None:
                self._widen()
                return _decoder.decode(reply.payload)

    # -- flow control ------------------------------------------------------------------------

    def _has_room(self) -> bool:
        outstanding = self._outstanding
        if len(outstanding) >= int(self.window):
            return False
        return not outstanding or self._next_seq - self._first_incomplete() < self.max_in_flight

    def _start(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        self._outstanding.add(seq)
        heapq.heappush(self._outstanding_heap, seq)
        return seq

    async def _admit(self, deadline: float) -> int:
        """A sequence number for a new command, once the window has room for it."""
        if not self._admission and self._has_room():
            return self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._admission.append(future)
        timer = loop.call_later(max(0.0, deadline - loop.time()), _time_out, future)
        try:
            return await future
        except TimeoutError:
            raise ClusterUnavailableError(
                f"no room in the client's flow window before the deadline; nothing was sent "
                f"({len(self._outstanding)} commands in flight, window {int(self.window)}; "
                f"max_in_flight {self.max_in_flight} also bounds how far sequence numbers "
                "may run ahead of the oldest unanswered one)"
            ) from None
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self._release(future.result())  # admitted just as the caller gave up
            raise
        finally:
            timer.cancel()

    def _release(self, seq: int) -> None:
        self._outstanding.discard(seq)
        admission = self._admission
        while admission and self._has_room():
            future = admission.popleft()
            if not future.done():
                future.set_result(self._start())

    def _cap_in_flight(self, cluster_max: int) -> None:
        """The cluster caches at most `cluster_max` replies per session (it says so in
        its Welcome): more in flight would only be refused, through the log."""
        if cluster_max < self.max_in_flight:
            self.max_in_flight = cluster_max
            self.window = min(self.window, float(cluster_max))

    def _widen(self) -> None:
        """Additive increase: one more command per window of answered ones."""
        if self.window < self.max_in_flight:
            self.window = min(float(self.max_in_flight), self.window + 1.0 / self.window)

    def _narrow(self) -> None:
        """Multiplicative decrease, at most once per interval: the leader is busy."""
        now = asyncio.get_running_loop().time()
        if now - self._window_decreased_at < WINDOW_DECREASE_INTERVAL_S:
            return
        self._window_decreased_at = now
        self.window = max(float(WINDOW_MIN), self.window / 2)
        self.window_decreases += 1

    async def _send_command(
        self, deadline: float, session_id: int, seq: int, payload: bytes
    ) -> ClientReply | None:
        """The reply, or None when the session was gone before the command could apply
        (the caller then sends it again under a new session)."""

        def request(request_id: int) -> CommandRequest:
            return CommandRequest(request_id, session_id, seq, self._first_incomplete(), payload)

        try:
            return await self._until_answered(deadline, request)
        except SessionExpiredError as error:
            # Sequence numbers keep increasing across sessions, so numbers of the old
            # session still in flight never collide with the new one's.
            if self.session_id == session_id:
                self.session_id = 0
            if isinstance(error, _SessionGone):
                return None
            raise  # an earlier attempt may have applied under the old session

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
        failures = 0
        while True:
            try:
                deadline = loop.time() + self.timeout
                await self._ensure_session(deadline)
                await self._until_answered(
                    deadline, lambda rid: Subscribe(rid, self.session_id, self._last_pushed_seq)
                )
                failures = 0
                connection = self._connection
                if connection is not None:
                    await self._keep_alive_until_closed(connection)
            except ClientError:
                failures += 1
            await asyncio.sleep(backoff_delay_s(failures, self._rng, RESUBSCRIBE_BACKOFF_MAX_S))

    async def _keep_alive_until_closed(self, connection: Connection) -> None:
        """While subscribed, an idle client still renews its session through the log
        (sessions expire by cluster time), then resubscribes wherever it goes next."""
        loop = asyncio.get_running_loop()
        while not connection.closed.done():
            done, _ = await asyncio.wait({connection.closed}, timeout=self.keepalive_interval)
            if done:
                return
            await self._until_answered(
                loop.time() + self.timeout, lambda rid: KeepAliveRequest(rid, self.session_id)
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
            try:
                reply = await self._until_answered(deadline, OpenSessionRequest)
            except OutcomeUnknownError as error:
                # A session may have opened (it will expire unused), but the command
                # itself was never sent.
                raise ClusterUnavailableError(
                    "no session opened before the deadline, so the command was not sent "
                    f"(the session request: {error})"
                ) from None
            self.session_id = reply.session_id

    async def _until_answered(self, deadline: float, make: Any) -> ClientReply:
        """Sends `make(request_id)` until a node answers it for good, retrying and backing
        off as the theory of operation says."""
        loop = asyncio.get_running_loop()
        attempts = _Attempts()
        while True:
            if loop.time() >= deadline:
                raise attempts.deadline_error()
            connection = self._connection  # connected: no coroutine to create and await
            if connection is None or connection.state is ConnectionState.CLOSED:
                try:
                    connection = await self._connect(deadline)
                except HandshakeRefusedError:
                    raise  # every member said no: waiting will not change its mind
                except ClusterUnavailableError as error:
                    attempts.problem = str(error)
                    await self._back_off(attempts, deadline)
                    continue
            reply = await self._attempt(connection, make, deadline, attempts)
            if reply is not None and reply.status is ReplyStatus.OK:
                return reply
            if reply is None or not self._judge(connection, reply, attempts):
                await self._back_off(attempts, deadline)

    async def _attempt(
        self, connection: Connection, make: Any, deadline: float, attempts: _Attempts
    ) -> ClientReply | None:
        """One try on `connection`: the reply, or None if none came (which leaves the
        outcome open: the request was sent)."""
        loop = asyncio.get_running_loop()
        request_id = next(self._request_ids)
        future = self._register(request_id, connection)
        connection.send(make(request_id))
        sent_at = loop.time()
        # A timer rather than asyncio.wait_for: this is the hot path of every call.
        waited_s = min(deadline - loop.time(), self.attempt_timeout)
        timer = loop.call_later(waited_s, _time_out, future)
        try:
            reply = await future
        except (TimeoutError, _ConnectionLost) as error:
            self._futures.pop(request_id, None)
            # A node that answered other requests meanwhile is alive, just slow for this
            # one: keep the connection (dropping it would turn every other request in
            # flight on it into a retry, the amplification that collapses a busy
            # cluster). A silent one is presumed dead: move on.
            if isinstance(error, _ConnectionLost) or self._heard_at <= sent_at:
                self._drop(connection, rotate=True)
            self.retries += 1
            attempts.maybe_applied = True
            attempts.redirected = False
            what = "connection lost" if isinstance(error, _ConnectionLost) else "no answer"
            attempts.problem = f"{connection.remote}: {what} after sending"
            return None
        finally:
            timer.cancel()
        assert isinstance(reply, ClientReply)
        return reply

    def _judge(self, connection: Connection, reply: ClientReply, attempts: _Attempts) -> bool:
        """Takes in an answer other than OK: raises if it is final, else notes what it
        means for the outcome and where to go next. True: retry at once."""
        if reply.status is ReplyStatus.REJECTED:
            raise RequestRejectedError(reply.message)
        if reply.status is ReplyStatus.SESSION_UNKNOWN:
            gone = SessionExpiredError if attempts.maybe_applied else _SessionGone
            raise gone(reply.message or "session expired or unknown")
        self.retries += 1
        attempts.problem = f"{connection.remote}: {_describe(reply)}"
        if reply.status is ReplyStatus.NOT_LEADER:
            # A redirect goes at once, but not twice in a row: nodes pointing at each
            # other (or at a leader just deposed) must not make the client spin.
            hinted = self._redirect(connection, reply.leader_hint)
            at_once = hinted and not attempts.redirected
            attempts.redirected = hinted
            return at_once
        attempts.redirected = False
        if reply.message.startswith(("leader busy", "too many commands in flight")):
            self._narrow()
        if not reply.message.startswith(RETRY_NOTHING_APPLIED_PREFIXES):
            attempts.maybe_applied = True
        return False

    async def _back_off(self, attempts: _Attempts, deadline: float) -> None:
        """Waits a jittered delay that grows with every back-off of this request."""
        delay_s = backoff_delay_s(attempts.failures, self._rng)
        attempts.failures += 1
        remaining_s = deadline - asyncio.get_running_loop().time()
        await asyncio.sleep(max(0.0, min(delay_s, remaining_s)))

    def _register(
        self, request_id: int, connection: Connection
    ) -> asyncio.Future[ClientReply | StatusReply | SnapshotReply]:
        future: asyncio.Future[ClientReply | StatusReply | SnapshotReply] = (
            asyncio.get_running_loop().create_future()
        )
        self._futures[request_id] = (future, connection)
        return future

    # -- connections ------------------------------------------------------------------------

    def _redirect(self, connection: Connection, hint: str) -> bool:
        """Moves on from `connection`: to the address hinted at if there is one (True),
        else to the next member."""
        target = self._learn(hint) if hint else None
        if connection is not self._connection:
            return target is not None  # someone already moved on
        self._drop(connection, rotate=target is None)
        if target is not None:
            self._target = target
        return target is not None

    def _learn(self, hint: str) -> int | None:
        """The position of the hinted address in `addresses`, added if new; None if the
        hint is not an address."""
        try:
            address = parse_address(hint, "leader_hint")
        except ConfigError:
            return None
        if address in self.addresses:
            return self.addresses.index(address)
        # Learned addresses are hints, not members: the oldest makes way when full.
        position = self._members_count + self._learned_count % MAX_LEARNED_ADDRESSES
        self._learned_count += 1
        if position == len(self.addresses):
            self.addresses.append(address)
        else:
            self.addresses[position] = address
        return position

    def _drop(self, connection: Connection, *, rotate: bool) -> None:
        """Stops using `connection`; `rotate` moves on to the next member."""
        if connection is self._connection:
            self._connection = None
            if rotate:
                self._target = (self._target + 1) % len(self.addresses)
        connection.close()

    async def _connect(self, deadline: float) -> Connection:
        """The open connection, or a new one to the first address (from `_target` on)
        that welcomes this client. Raises HandshakeRefusedError if every address
        refused the handshake, ClusterUnavailableError if none welcomed it."""
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
            failures: list[_Unreachable] = []
            for _ in range(len(self.addresses)):
                result = await self._try_connect(self.addresses[self._target], deadline)
                if isinstance(result, Connection):
                    self._connection = result
                    return result
                failures.append(result)
                self._target = (self._target + 1) % len(self.addresses)
        why = _describe_unreachable(failures)
        if all(failure.refused for failure in failures):
            raise HandshakeRefusedError(why)
        raise ClusterUnavailableError(f"no member accepted a connection: {why}")

    async def _try_connect(
        self, address: tuple[str, int], deadline: float
    ) -> Connection | _Unreachable:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Welcome | Refused | None] = loop.create_future()

        def on_message(connection: Connection, message: WireMessage) -> None:
            if isinstance(message, Welcome | Refused):
                if isinstance(message, Welcome) and message.max_in_flight:
                    self._cap_in_flight(message.max_in_flight)
                if not answer.done():
                    answer.set_result(message)
                return
            if isinstance(message, ClientReply | StatusReply | SnapshotReply):
                self._heard_at = loop.time()
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

        host, port = address
        where = f"{host}:{port}"
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


def _describe(reply: ClientReply) -> str:
    """A retried answer in words, for the error at the deadline."""
    if reply.status is ReplyStatus.NOT_LEADER:
        text = f"not the leader (leader {reply.leader_hint or 'unknown'})"
    else:
        text = reply.status.name.lower()
    return f"{text}: {reply.message}" if reply.message else text


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
