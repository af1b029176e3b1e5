"""The client's session and retry decisions, with no I/O: the part of a client that
`AsyncClient` (asyncio, TCP) and a deterministic simulator's clients share.

Nothing here reads a clock, draws from the global random generator or touches a
socket: time comes in as `now_s` arguments (any clock, as long as one `ClientSession`
sees one clock), randomness from the `random.Random` it is given, and every decision
goes out as a frozen value the driver acts on. Given the same generator seed and the
same calls with the same times, it decides the same things.

Theory of operation
-------------------
A client talks to one member at a time, its *target*. It opens a session through the
log (the session id is the log index of the open entry), then sends each command with
its session id and a fresh sequence number. Any answer other than a result (not the
leader, leadership changed, leader busy, connection lost, no answer within
`attempt_timeout_s`) makes it try again, at the leader it was pointed to or at the next
member, with the SAME sequence number: the replicated session table applies a sequence
number once and returns the cached reply to every retry, so retrying is always safe.
Each command also carries the lowest sequence number still unanswered
(`first_incomplete`), which lets the cluster forget older replies.

Every retry but one waits first, for a capped exponential backoff with full jitter
(`backoff_delay_s`), so that clients turned away together (by an election, or by an
overloaded leader) do not all come back together. The exception keeps the common case
fast: "not the leader, try H:P" is followed at once, but only once in a row, so nodes
pointing at each other cannot make a client spin. A hint naming an address the client
was not given is learned (at most `MAX_LEARNED_ADDRESSES` of them): a client given any
one member finds the leader.

Many calls share one target. Each attempt remembers the *route* (a counter bumped every
time the client gives up on its target) it went by; only an answer on the current route
moves the client on, so a hundred calls told "not the leader" by one node rotate the
target once, not a hundred times. A driver that keeps connections closes the one it
opened under an older route.

When the deadline passes, the error says whether the command may have happened. It may
have only if some attempt was sent and then got no definite answer (timed out,
connection lost, "leadership changed, outcome unknown"): `OutcomeUnknownError`. If
every attempt was turned away before it could apply (no connection, not the leader,
leader busy), nothing happened: `ClusterUnavailableError`. An unknown session is final:
`SessionExpiredError` if an attempt may have applied under it, else `Reopen` (open a new
session and send the command again under a new sequence number). A rejected request is
final at once: `RequestRejectedError`. (A network that duplicates requests, as a
simulator's may, can apply a request the client was told was turned away; the
classification assumes each request is delivered at most once, as TCP does.)

Flow control: at most `window` commands are in flight. The window adapts as TCP's
congestion window does (additive increase, multiplicative decrease): it grows by one per
window of answered commands and halves, at most once per `WINDOW_DECREASE_INTERVAL_S`,
when the leader answers "busy". It never exceeds `max_in_flight`, and neither does the
span of sequence numbers between the oldest unanswered command and the newest: the
cluster caches that many replies per session (its `max_replies_per_session`, which its
Welcome states: `cap_in_flight`), and a wider span would be refused.

Driving protocol
----------------
One call (an open-session request, a command, or another request under the session)
is a `Call`; it has at most one `Attempt` open at a time, and every attempt ends in
exactly one report, which returns a decision::

    core = ClientSession(["sim:1", "sim:2", "sim:3"], random.Random(7))
    call = core.open_session(deadline_s=now_s + 10)  # its Done sets core.session_id;
    ...                                               # then, for each command:
    call = core.start_command(payload, deadline_s=now_s + 10)  # None: window full
    while True:
        attempt = core.attempt(call, now_s)          # an Attempt, or Fail at the deadline
        if isinstance(attempt, Fail): raise attempt.error
        send(attempt.address, attempt.message(request_id))  # OpenSession/CommandRequest
        # then the first of: its reply, its connection lost, attempt.timeout_at_s
        decision = core.on_reply(attempt, reply, now_s)  # or on_lost / on_timeout /
                                                         # on_unreachable (never sent)
        match decision:
            case Done(payload): return payload       # the result
            case Retry(address, delay_s): sleep(delay_s)  # `address`: where it would go
            case Fail(error): raise error
            case Reopen(): ...                       # open a session, start the command anew
            case Ignored(): ...                      # not this attempt's report: no change

`Done`, `Fail` and `Reopen` finish the call and release its sequence number; a driver
that gives up on a call otherwise (cancellation) calls `abandon`. A driver that queues
callers until the window has room (the asyncio shell does) uses `has_room`, `admit` and
`command` instead of `start_command`, and `release` for a number it admitted but never
made a command of. Reports on an attempt that is not its call's open one (a duplicate,
a late answer to an earlier attempt, anything after the call finished) are `Ignored`:
the retry of the same sequence number gets the cached answer anyway. Drivers that connect
before sending report each address that accepted no connection with `connect_failed`,
and call `heard(now_s)` for answers they do not pass to `on_reply` (a node that answers
anything is alive, only slow: a timeout there does not move the client on).
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from phalanx.client.errors import (
    ClientError,
    ClusterUnavailableError,
    OutcomeUnknownError,
    RequestRejectedError,
    SessionExpiredError,
)
from phalanx.core.errors import ConfigError
from phalanx.transport.addresses import client_addresses, format_address, parse_address
from phalanx.transport.wire import (
    MAX_FRAME_BYTES_DEFAULT,
    ClientReply,
    CommandRequest,
    OpenSessionRequest,
    ReplyStatus,
)

if TYPE_CHECKING:
    import random

#: Retry delays are drawn between the floor and a ceiling that doubles with each failure
#: in a row, up to the cap (`backoff_delay_s`).
BACKOFF_MIN_S = 0.005
BACKOFF_MAX_S = 0.2
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
#: How long one attempt waits for its answer before the client tries elsewhere.
ATTEMPT_TIMEOUT_S_DEFAULT = 1.0
#: The flow window halves at most this often, so one burst of "busy" answers (every
#: command of a full window) counts as one signal, as one loss per round trip in TCP.
WINDOW_DECREASE_INTERVAL_S = 0.05
#: The window never shrinks below this many commands.
WINDOW_MIN = 4
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
#: The RETRY answers that mean the leader is overloaded: the flow window halves.
RETRY_BUSY_PREFIXES = ("leader busy", "too many commands in flight")


def backoff_delay_s(failures: int, rng: random.Random, cap_s: float = BACKOFF_MAX_S) -> float:
    """Capped exponential backoff with full jitter: uniform between the floor and a
    ceiling that doubles with each failure in a row, so that clients turned away at
    the same moment spread out instead of returning together."""
    ceiling_s = min(cap_s, BACKOFF_MIN_S * 2.0 ** min(failures, 32))
    return rng.uniform(BACKOFF_MIN_S, ceiling_s)


def _invariant(condition: bool, message: str) -> None:
    """An assertion that stays on under `python -O`: a driver that breaks the protocol
    is a bug, and deciding on from an impossible state would hide it."""
    if not condition:
        raise AssertionError(message)


class CallKind(enum.Enum):
    OPEN_SESSION = "open session"
    #: A command: a sequence number of the session, counted in the flow window.
    COMMAND = "command"
    #: Another request under the session (keepalive, subscribe): no sequence number, and
    #: an unknown session fails it without forgetting the session (its sender decides).
    SESSION = "session request"


class Call:
    """One request on its way through attempts. Owned by its `ClientSession`; drivers
    read it (`seq`, `session_id`, `deadline_s`, `finished`) and never write it."""

    __slots__ = (
        "attempts",
        "deadline_s",
        "failures",
        "finished",
        "kind",
        "maybe_applied",
        "open_attempt",
        "payload",
        "problem",
        "redirected",
        "seq",
        "session_id",
    )

    def __init__(
        self, kind: CallKind, session_id: int, seq: int, payload: bytes, deadline_s: float
    ) -> None:
        self.kind = kind
        self.session_id = session_id
        #: The command's sequence number; 0 for the other kinds.
        self.seq = seq
        self.payload = payload
        self.deadline_s = deadline_s
        #: Attempts made; the open one's number, or 0 between attempts.
        self.attempts = 0
        self.open_attempt = 0
        #: Back-offs so far: each one's ceiling is twice the last one's.
        self.failures = 0
        #: Some attempt was sent and got no definite answer.
        self.maybe_applied = False
        #: The last attempt was answered with a usable leader hint.
        self.redirected = False
        #: What the last attempt came to, for the error at the deadline.
        self.problem = "no attempt finished"
        self.finished = False


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of `call`: send it to `address` and report what came of it by
    `timeout_at_s` at the latest."""

    call: Call
    number: int
    address: str
    session_id: int
    seq: int
    #: The lowest sequence number in flight when the attempt was made.
    first_incomplete: int
    sent_at_s: float
    timeout_at_s: float
    #: The route it went by (see the theory of operation).
    route: int

    def message(self, request_id: int) -> OpenSessionRequest | CommandRequest:
        """The request to send, for an open-session call or a command."""
        kind = self.call.kind
        _invariant(kind is not CallKind.SESSION, "a session request's sender builds it")
        if kind is CallKind.OPEN_SESSION:
            return OpenSessionRequest(request_id)
        return CommandRequest(
            request_id, self.session_id, self.seq, self.first_incomplete, self.call.payload
        )


@dataclass(frozen=True, slots=True)
class Done:
    """The answer: the service's reply bytes (and, for an open-session call, the new
    session id, which the `ClientSession` has already taken)."""

    payload: bytes
    session_id: int = 0


@dataclass(frozen=True, slots=True)
class Retry:
    """Wait `delay_s`, then make the next attempt. `address` is where it would go now;
    `attempt()` has the last word (other calls' answers may move the client first)."""

    address: str
    delay_s: float


@dataclass(frozen=True, slots=True)
class Fail:
    error: ClientError


@dataclass(frozen=True, slots=True)
class Reopen:
    """The session was unknown and no attempt of the command can have applied: open a
    new session and start the command again (it gets a new sequence number)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """A report about an attempt that is no longer open (a duplicate or late answer, or
    a call already finished): nothing changed."""

    reason: str


Decision = Done | Retry | Fail | Reopen | Ignored


class ClientSession:
    """The decisions of one client with one session at a time (see the module's theory
    of operation and driving protocol)."""

    def __init__(
        self,
        members: Sequence[str] | str,
        rng: random.Random,
        *,
        max_in_flight: int = MAX_IN_FLIGHT_DEFAULT,
        max_command_bytes: int = MAX_COMMAND_BYTES_DEFAULT,
        attempt_timeout_s: float = ATTEMPT_TIMEOUT_S_DEFAULT,
    ) -> None:
        if max_in_flight < 1:
            raise ConfigError("max_in_flight", "must be at least 1")
        largest = MAX_FRAME_BYTES_DEFAULT - COMMAND_FRAME_OVERHEAD_BYTES
        if not 0 < max_command_bytes <= largest:
            raise ConfigError(
                "max_command_bytes", f"must be 1 to {largest} (a command travels in one frame)"
            )
        #: The members given, then up to MAX_LEARNED_ADDRESSES learned from hints, each
        #: as `format_address` writes it.
        self._addresses = [format_address(*address) for address in client_addresses(members)]
        self._members_count = len(self._addresses)
        self._learned_count = 0
        self._target = 0
        #: Bumped whenever the client gives up on its target.
        self.route = 0
        self.rng = rng
        self.max_command_bytes = max_command_bytes
        self.attempt_timeout_s = attempt_timeout_s
        #: 0 until a session is open, and again once the cluster forgot it.
        self.session_id = 0
        self._next_seq = 1
        #: Sequence numbers of the commands in flight, and a min-heap over them (with
        #: finished ones removed lazily) for `first_incomplete` in O(log n).
        self._outstanding: set[int] = set()
        self._outstanding_heap: list[int] = []
        #: Commands in flight at most (and the widest span of their sequence numbers).
        self.max_in_flight = max_in_flight
        #: The adaptive flow window; starts fully open.
        self.window = float(max_in_flight)
        self._window_decreased_at_s = float("-inf")
        #: Times the window was halved because the leader said it was busy.
        self.window_decreases = 0
        #: Answers other than a result, and attempts that got none.
        self.retries = 0
        #: When any answer last arrived.
        self.heard_at_s = float("-inf")

    # -- where to send -----------------------------------------------------------------------

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(self._addresses)

    @property
    def target(self) -> str:
        return self._addresses[self._target]

    def aim(self, position: int) -> None:
        """Sends what follows to the address at `position` (a status request for one
        member), giving up the current route."""
        self._target = range(len(self._addresses))[position]  # IndexError if none there
        self.route += 1

    def connect_failed(self, address: str) -> None:
        """`address` accepted no connection: if it is the target, the next one is."""
        if address == self.target:
            self._target = (self._target + 1) % len(self._addresses)
            self.route += 1

    def heard(self, now_s: float) -> None:
        self.heard_at_s = max(self.heard_at_s, now_s)

    def _move_on(self, attempt: Attempt, position: int | None) -> None:
        """Gives up the route `attempt` went by, unless another call already has: to the
        address at `position`, or to the next one."""
        if attempt.route != self.route:
            return
        self.route += 1
        if position is None:
            self._target = (self._target + 1) % len(self._addresses)
        else:
            self._target = position

    def _learn(self, hint: str) -> int | None:
        """The position of the hinted address, added if new; None if the hint is not
        an address."""
        try:
            address = format_address(*parse_address(hint, "leader_hint"))
        except ConfigError:
            return None
        if address in self._addresses:
            return self._addresses.index(address)
        # Learned addresses are hints, not members: the oldest makes way when full.
        position = self._members_count + self._learned_count % MAX_LEARNED_ADDRESSES
        self._learned_count += 1
        if position == len(self._addresses):
            self._addresses.append(address)
        else:
            self._addresses[position] = address
        return position

    # -- sessions and calls ------------------------------------------------------------------

    def open_session(self, deadline_s: float) -> Call:
        """A call that opens a session; its `Done` carries the session id, which this
        `ClientSession` uses from then on."""
        return Call(CallKind.OPEN_SESSION, 0, 0, b"", deadline_s)

    def session_call(self, deadline_s: float) -> Call:
        """A call for another request under the current session (keepalive, subscribe):
        its sender builds the message from the attempt's `session_id`."""
        return Call(CallKind.SESSION, self.session_id, 0, b"", deadline_s)

    def check_command(self, payload: bytes) -> None:
        """Raises `RequestRejectedError` for a command the cluster would refuse for its
        size (past its frame limit, a node would drop the connection instead)."""
        if len(payload) > self.max_command_bytes:
            raise RequestRejectedError(
                f"command of {len(payload)} bytes exceeds "
                f"max_command_bytes={self.max_command_bytes}; not sent"
            )

    def start_command(self, payload: bytes, deadline_s: float) -> Call | None:
        """A call for one command under the current session, or None if the flow window
        has no room for it (nothing is taken then)."""
        self.check_command(payload)
        if not self.has_room():
            return None
        return self.command(self.admit(), payload, deadline_s)

    def command(self, seq: int, payload: bytes, deadline_s: float) -> Call:
        """A call for the command admitted as `seq`, under the current session (if none
        is open, the cluster answers that it does not know it, and the decision is to
        reopen)."""
        _invariant(seq in self._outstanding, f"sequence number {seq} was not admitted")
        self.check_command(payload)
        return Call(CallKind.COMMAND, self.session_id, seq, payload, deadline_s)

    def abandon(self, call: Call) -> None:
        """The driver gave up on `call` (it was cancelled): reports on it are ignored."""
        self._finish(call)

    # -- the flow window ---------------------------------------------------------------------

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def in_flight(self) -> frozenset[int]:
        """The sequence numbers admitted and not yet released."""
        return frozenset(self._outstanding)

    @property
    def first_incomplete(self) -> int:
        """The lowest sequence number in flight (the next one if none is): the cluster
        may forget the replies to every command below it."""
        heap, outstanding = self._outstanding_heap, self._outstanding
        while heap and heap[0] not in outstanding:
            heapq.heappop(heap)
        return heap[0] if heap else self._next_seq

    def has_room(self) -> bool:
        outstanding = self._outstanding
        if len(outstanding) >= int(self.window):
            return False
        return not outstanding or self._next_seq - self.first_incomplete < self.max_in_flight

    def admit(self) -> int:
        """The next sequence number, now in flight; only when `has_room()`."""
        _invariant(self.has_room(), "admitted a command beyond the flow window")
        seq = self._next_seq
        self._next_seq += 1
        self._outstanding.add(seq)
        heapq.heappush(self._outstanding_heap, seq)
        return seq

    def release(self, seq: int) -> None:
        """`seq` is no longer in flight (idempotent)."""
        self._outstanding.discard(seq)
        if not self._outstanding:
            self._outstanding_heap.clear()

    def cap_in_flight(self, cluster_max: int) -> None:
        """The cluster caches at most `cluster_max` replies per session (it says so in
        its Welcome): more in flight would only be refused, through the log."""
        if 0 < cluster_max < self.max_in_flight:
            self.max_in_flight = cluster_max
            self.window = min(self.window, float(cluster_max))

    def widen(self) -> None:
        """Additive increase: one more command per window of answered ones."""
        if self.window < self.max_in_flight:
            self.window = min(float(self.max_in_flight), self.window + 1.0 / self.window)

    def narrow(self, now_s: float) -> None:
        """Multiplicative decrease, at most once per interval: the leader is busy."""
        if now_s - self._window_decreased_at_s < WINDOW_DECREASE_INTERVAL_S:
            return
        self._window_decreased_at_s = now_s
        self.window = max(float(WINDOW_MIN), self.window / 2)
        self.window_decreases += 1

    # -- attempts and what they came to ------------------------------------------------------

    def attempt(self, call: Call, now_s: float) -> Attempt | Fail:
        """The next attempt of `call`, at the target; `Fail` once its deadline passed."""
        _invariant(not call.finished, f"an attempt of a finished {call.kind.value}")
        _invariant(not call.open_attempt, f"two attempts of one {call.kind.value} at once")
        if now_s >= call.deadline_s:
            return self._fail(call, self._deadline_error(call))
        call.attempts += 1
        call.open_attempt = call.attempts
        first_incomplete = self.first_incomplete if call.kind is CallKind.COMMAND else 0
        timeout_at_s = min(call.deadline_s, now_s + self.attempt_timeout_s)
        return Attempt(
            call,
            call.attempts,
            self.target,
            call.session_id,
            call.seq,
            first_incomplete,
            now_s,
            timeout_at_s,
            self.route,
        )

    def on_reply(self, attempt: Attempt, reply: ClientReply, now_s: float) -> Decision:
        """Judges the node's answer to `attempt`."""
        self.heard(now_s)
        call = attempt.call
        if (ignored := self._close(attempt)) is not None:
            return ignored
        status = reply.status
        if status is ReplyStatus.OK:
            return self._done(call, reply)
        if status is ReplyStatus.REJECTED:
            return self._fail(call, RequestRejectedError(reply.message))
        if status is ReplyStatus.SESSION_UNKNOWN:
            return self._session_unknown(call, reply.message or "session expired or unknown")
        self.retries += 1
        call.problem = f"{attempt.address}: {_describe(reply)}"
        if status is ReplyStatus.NOT_LEADER:
            # A redirect goes at once, but not twice in a row: nodes pointing at each
            # other (or at a leader just deposed) must not make the client spin.
            position = self._learn(reply.leader_hint) if reply.leader_hint else None
            self._move_on(attempt, position)
            at_once = position is not None and not call.redirected
            call.redirected = position is not None
            return self._retry(call, now_s, at_once=at_once)
        call.redirected = False
        if reply.message.startswith(RETRY_BUSY_PREFIXES):
            self.narrow(now_s)
        if not reply.message.startswith(RETRY_NOTHING_APPLIED_PREFIXES):
            call.maybe_applied = True
        return self._retry(call, now_s)

    def on_lost(self, attempt: Attempt, now_s: float) -> Decision:
        """The connection `attempt` was sent on closed before its answer came."""
        return self._unanswered(attempt, now_s, "connection lost", move_on=True)

    def on_timeout(self, attempt: Attempt, now_s: float) -> Decision:
        """No answer to `attempt` by its `timeout_at_s`. A node that answered anything
        since it was sent is alive, only slow: the client stays (leaving would turn
        every other request in flight there into a retry, the amplification that
        collapses a busy cluster). A silent one is presumed dead: the client moves on."""
        silent = self.heard_at_s <= attempt.sent_at_s
        return self._unanswered(attempt, now_s, "no answer", move_on=silent)

    def on_unreachable(self, turned_away: Call | Attempt, now_s: float, problem: str) -> Decision:
        """Nothing was sent: the driver found no connection for `turned_away` (a call
        between attempts, after `connect_failed` for each address it tried), or the
        attempt's address accepted none (the client moves on)."""
        if isinstance(turned_away, Attempt):
            if (ignored := self._close(turned_away)) is not None:
                return ignored
            self._move_on(turned_away, None)
            call = turned_away.call
        else:
            call = turned_away
            _invariant(not call.finished, f"a report on a finished {call.kind.value}")
            _invariant(not call.open_attempt, "unreachable with an attempt open")
        call.problem = problem
        return self._retry(call, now_s)

    def _close(self, attempt: Attempt) -> Ignored | None:
        """Ends `attempt` if it is its call's open one; else says why it is ignored."""
        call = attempt.call
        if call.finished:
            return Ignored(f"the {call.kind.value} already finished")
        if attempt.number != call.open_attempt:
            return Ignored(f"attempt {attempt.number} is not the open one")
        call.open_attempt = 0
        return None

    def _unanswered(self, attempt: Attempt, now_s: float, what: str, *, move_on: bool) -> Decision:
        if (ignored := self._close(attempt)) is not None:
            return ignored
        if move_on:
            self._move_on(attempt, None)
        call = attempt.call
        self.retries += 1
        call.maybe_applied = True
        call.redirected = False
        call.problem = f"{attempt.address}: {what} after sending"
        return self._retry(call, now_s)

    def _retry(self, call: Call, now_s: float, *, at_once: bool = False) -> Retry | Fail:
        """Another attempt after a jittered delay that grows with every back-off of
        `call` (none for a first redirect), if its deadline leaves time for one."""
        if now_s >= call.deadline_s:
            return self._fail(call, self._deadline_error(call))
        delay_s = 0.0
        if not at_once:
            delay_s = min(backoff_delay_s(call.failures, self.rng), call.deadline_s - now_s)
            call.failures += 1
        return Retry(self.target, delay_s)

    def _done(self, call: Call, reply: ClientReply) -> Done:
        if call.kind is CallKind.OPEN_SESSION:
            self.session_id = reply.session_id
        elif call.kind is CallKind.COMMAND:
            self.widen()
        self._finish(call)
        return Done(reply.payload, reply.session_id)

    def _session_unknown(self, call: Call, why: str) -> Fail | Reopen:
        if call.kind is not CallKind.COMMAND:
            return self._fail(call, SessionExpiredError(why))
        # Sequence numbers keep increasing across sessions, so numbers of the old
        # session still in flight never collide with the new one's.
        if self.session_id == call.session_id:
            self.session_id = 0
        if call.maybe_applied:
            return self._fail(call, SessionExpiredError(why))
        self._finish(call)
        return Reopen(why)

    def _fail(self, call: Call, error: ClientError) -> Fail:
        if call.kind is CallKind.OPEN_SESSION and isinstance(error, OutcomeUnknownError):
            # A session may have opened (it will expire unused), but the command itself
            # was never sent.
            error = ClusterUnavailableError(
                "no session opened before the deadline, so the command was not sent "
                f"(the session request: {error})"
            )
        self._finish(call)
        return Fail(error)

    def _finish(self, call: Call) -> None:
        call.finished = True
        call.open_attempt = 0
        if call.kind is CallKind.COMMAND:
            self.release(call.seq)

    @staticmethod
    def _deadline_error(call: Call) -> ClientError:
        if call.maybe_applied:
            return OutcomeUnknownError(
                f"no answer before the deadline; it may have applied (last: {call.problem})"
            )
        return ClusterUnavailableError(
            f"no leader answered before the deadline; nothing applied (last: {call.problem})"
        )


def _describe(reply: ClientReply) -> str:
    """A retried answer in words, for the error at the deadline."""
    if reply.status is ReplyStatus.NOT_LEADER:
        text = f"not the leader (leader {reply.leader_hint or 'unknown'})"
    else:
        text = reply.status.name.lower()
    return f"{text}: {reply.message}" if reply.message else text
