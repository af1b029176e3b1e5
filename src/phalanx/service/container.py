"""The service container: applies committed entries to a service, exactly once.

Theory of operation
-------------------
The container is itself a deterministic state machine fed by the log. For each
committed entry it:

1. advances cluster time to max(cluster time, the entry's leader timestamp), so time
   never runs backwards across leader changes with skewed clocks;
2. expires sessions idle for longer than `session_timeout_ms` of cluster time;
3. applies the envelope: opening a session (its id is the entry's log index, unique
   and known to every replica), closing one, keeping one alive, or a command.

Exactly-once (Raft thesis §6.3): a command carries (session id, sequence number). The
session remembers the encoded reply of every sequence number at or above the client's
`first_incomplete`; a retry of a remembered number gets the cached reply without
applying again. Because the table is updated only by applying log entries, every
replica agrees on it, and a retry that reaches a new leader is recognised there too.

Bounds: at most `max_sessions` sessions (opening one more evicts the least recently
active, deterministically) and `max_replies_per_session` cached replies each.

Replay equivalence: a replica rebuilt from any snapshot plus the log after it must
reach the same outcomes as one that applied the whole log live. So nothing that
decides an outcome may depend on state a snapshot does not carry: the reply cache
forgets exactly the sequence numbers below `first_incomplete` (not "from the front of
a dict", whose order a snapshot would not keep), sessions keep their least-recently-
active order in the snapshot, timers fire in (deadline, id) order. The container
chains a digest of every outcome (status and reply bytes) into each checkpoint, so
replicas that answer differently are caught even when their service states agree.

Service code is untrusted: whatever it raises or returns becomes a deterministic
error reply, identical on every replica, and the node keeps serving. The one
exception is `MemoryError`, which says nothing about the command and everything about
this process: it raises `ServiceFault`, and the node stops naming the entry.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
import logging
import re
import sys
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from phalanx.core.errors import InvariantError, PhalanxError
from phalanx.core.types import Entry, EntryKind, Index
from phalanx.limits import (
    ERROR_MESSAGE_CHARS_MAX,
    MAX_PENDING_CHECKPOINTS,
    MAX_PENDING_EGRESS,
    SERVICE_STACK_FRAMES,
)
from phalanx.service.base import Service
from phalanx.service.context import ServiceContext, Timers
from phalanx.service.envelope import (
    Clock,
    CloseSession,
    Command,
    KeepAlive,
    OpenSession,
    decode_envelope,
)

log = logging.getLogger("phalanx.container")


class ApplyStatus(enum.IntEnum):
    OK = 0
    #: The session does not exist (never opened, expired or evicted): not applied.
    SESSION_UNKNOWN = 1
    #: The client has more unanswered commands than the session may cache: not applied.
    TOO_MANY_INFLIGHT = 2
    #: A sequence number below the client's own acknowledgement: a stale duplicate.
    STALE = 3
    #: The entry's bytes are not a valid envelope or command: not applied.
    MALFORMED = 4


@dataclass(frozen=True, slots=True)
class ContainerLimits:
    session_timeout_ms: int = 60_000
    max_sessions: int = 10_000
    max_replies_per_session: int = 4096
    #: Pushed messages each session keeps for clients that reconnect.
    max_egress_per_session: int = 1024
    #: Record a checkpoint (log digest and state digest) every this many entries; 0: never.
    checkpoint_every_entries: int = 0


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What replicas compare to find a non-deterministic one (the seed lesson): after
    applying the same `index` entries, every correct replica has these same digests."""

    index: Index
    log_digest: bytes
    state_digest: bytes


@dataclass(frozen=True, slots=True)
class ApplyResult:
    index: Index
    status: ApplyStatus
    #: The encoded reply (OK), the new session id (opening), or an error message.
    reply: bytes = b""
    session_id: int = 0
    seq: int = 0
    duplicate: bool = False


@dataclass(slots=True)
class _Session:
    last_active_ms: int
    first_incomplete: int = 1
    replies: dict[int, bytes] = field(default_factory=dict)
    #: The keys of `replies` as a min-heap: forgetting acknowledged replies removes
    #: exactly the sequence numbers below `first_incomplete`, in O(log n) each, whatever
    #: order they were cached in (retries make that order differ between replicas'
    #: histories and a snapshot's sorted copy).
    reply_seqs: list[int] = field(default_factory=list)
    #: Pushed messages (`ctx.send`), numbered per session from 1. Every replica keeps
    #: the same recent ones, so any node can resend them to a client that reconnects.
    egress_next: int = 1
    egress: deque[tuple[int, bytes]] = field(default_factory=deque)


@dataclass(frozen=True, slots=True)
class Pushed:
    session_id: int
    seq: int
    payload: bytes


#: Bumped whenever `snapshot_bytes` changes shape.
SNAPSHOT_FORMAT = 3


class SnapshotFormatError(PhalanxError):
    """A snapshot's bytes are not a container snapshot this version can read."""


class ServiceFault(PhalanxError):
    """Service code failed in a way that says nothing about the command (it ran out of
    memory, or its `restore()` refused a snapshot): continuing could make this replica
    differ from the others, so its node stops, naming the entry and the service."""

    def __init__(self, index: int, service: str, error: BaseException, during: str = "") -> None:
        where = (
            f"in {during} of the snapshot at log entry {index}"
            if during
            else f"on log entry {index}"
        )
        super().__init__(
            f"service {service} failed {where} with {type(error).__name__}: {error}; "
            "this node stops rather than risk answering differently from the others"
        )
        self.index = index


def describe_exception(error: BaseException) -> str:
    """`Type: message`, the same on every replica (nothing process-specific in it);
    the message is cut so a huge one cannot bloat every reply."""
    try:
        text = f"{type(error).__name__}: {error}"
    except BaseException:  # an exception whose str() raises
        text = f"{type(error).__name__}: (its message could not be rendered)"
    # An object's default repr holds its address, which differs between processes.
    text = _ADDRESS.sub(" at 0x...", text)
    return text if len(text) <= ERROR_MESSAGE_CHARS_MAX else text[:ERROR_MESSAGE_CHARS_MAX] + "..."


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


#: Service failures logged one by one; after these, every thousandth.
ERRORS_LOGGED_IN_FULL = 10
#: Exceptions that describe this process, not the command: never turned into a reply.
_PROCESS_FAULTS = (MemoryError,)


_blake2b = hashlib.blake2b
_reply_encoder = msgspec.msgpack.Encoder(order="deterministic")
_snapshot_encoder = msgspec.msgpack.Encoder()
_command_decoder = msgspec.msgpack.Decoder()


class ServiceContainer:
    def __init__(self, service: Service, limits: ContainerLimits | None = None) -> None:
        self.service = service
        self.limits = limits or ContainerLimits()
        self.cluster_time_ms = 0
        self.applied_index = Index(0)
        self.sessions: OrderedDict[int, _Session] = OrderedDict()
        self.commands_applied = 0
        self.duplicates_suppressed = 0
        self._log_digest = bytes(16)
        #: A chained digest of every outcome (status and reply bytes) in log order.
        self._outcome_digest = bytes(16)
        #: Set once when the service's `state()` could not be digested (logged once).
        self.state_digest_error: str | None = None
        #: Checkpoints recorded since the caller last took them (bounded).
        self.new_checkpoints: list[Checkpoint] = []
        self.timers = Timers()
        self.context = ServiceContext(self)
        self.timers_fired = 0
        #: Messages pushed since the caller last took them (bounded).
        self.new_egress: list[Pushed] = []
        self.callback_errors = 0
        #: Commands answered with an error reply because service code failed.
        self.service_errors = 0
        #: Bytes of entries applied by this process: a snapshot trigger, not replicated
        #: state (a restored node counts from its snapshot on).
        self.applied_bytes = 0

    def apply_batch(self, entries: Sequence[Entry]) -> list[ApplyResult | None]:
        """Applies committed entries in order, giving service code the same stack
        budget on every replica: `SERVICE_STACK_FRAMES` frames beyond this call,
        whatever depth the caller runs at. Without it, a service recursing near
        Python's limit could raise RecursionError on a node whose loop called it from
        a deeper frame and not on another: the same log, two outcomes."""
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(_stack_depth() + SERVICE_STACK_FRAMES)
        try:
            return [self.apply(entry) for entry in entries]
        finally:
            sys.setrecursionlimit(limit)

    def apply(self, entry: Entry) -> ApplyResult | None:
        """Applies one committed entry; None for entries that carry no command.
        Callers that apply many (nodes, rebuilds) use `apply_batch`."""
        if entry.index != self.applied_index + 1:
            raise InvariantError(
                f"entry {entry.index} applied after {self.applied_index}: committed entries "
                "are applied once each, in log order"
            )
        self.applied_index = entry.index
        data = entry.data
        self.applied_bytes += len(data)
        # Chained, not a running hash object, so that a snapshot can carry it: the
        # digest of (previous digest, index as 8 little-endian bytes, entry data).
        self._log_digest = _blake2b(
            b"".join((self._log_digest, entry.index.to_bytes(8, "little"), data)),
            digest_size=16,
        ).digest()
        result = self._apply_entry(entry)
        if result is not None:
            self._outcome_digest = _blake2b(
                b"".join(
                    (self._outcome_digest, bytes((result.status, result.duplicate)), result.reply)
                ),
                digest_size=16,
            ).digest()
        every = self.limits.checkpoint_every_entries
        if every and entry.index % every == 0:
            self._record_checkpoint()
        return result

    def _record_checkpoint(self) -> None:
        # Replies are outcomes too: a service whose randomness shows only in a reply
        # leaves the states equal and the outcome digests different.
        state = _blake2b(
            bytes.fromhex(self.state_digest()) + self._outcome_digest, digest_size=16
        ).digest()
        checkpoint = Checkpoint(self.applied_index, self._log_digest, state)
        self.new_checkpoints.append(checkpoint)
        del self.new_checkpoints[:-MAX_PENDING_CHECKPOINTS]

    def _apply_entry(self, entry: Entry) -> ApplyResult | None:
        if entry.kind is not EntryKind.COMMAND:
            return None
        try:
            envelope = decode_envelope(entry.data)
        except (msgspec.DecodeError, ValueError) as error:
            return ApplyResult(
                entry.index, ApplyStatus.MALFORMED, describe_exception(error).encode()
            )
        if envelope.time_ms > self.cluster_time_ms:
            self.cluster_time_ms = envelope.time_ms
            # Only a later time can expire a session (each was active at or before now).
            self._expire_sessions()
        self._fire_timers()
        if isinstance(envelope, Clock):
            return None
        if isinstance(envelope, Command):
            return self._apply_command(entry.index, envelope)
        if isinstance(envelope, OpenSession):
            return self._open_session(entry.index)
        if isinstance(envelope, KeepAlive):
            return self._touch(entry.index, envelope.session_id)
        return self._close_session(entry.index, envelope)

    def log_digest(self) -> str:
        """A chained digest of every entry applied so far."""
        return self._log_digest.hex()

    def outcome_digest(self) -> str:
        """A chained digest of every outcome (status and reply) so far."""
        return self._outcome_digest.hex()

    # -- snapshots --------------------------------------------------------------------

    def snapshot_bytes(self) -> bytes:
        """The container's whole state (service included) at `applied_index`.

        Safe to call in a forked child: it only reads and encodes."""
        sessions = [
            [
                session_id,
                s.last_active_ms,
                s.first_incomplete,
                sorted(s.replies.items()),
                s.egress_next,
                list(s.egress),
            ]
            for session_id, s in self.sessions.items()
        ]
        return _snapshot_encoder.encode(
            {
                "format": SNAPSHOT_FORMAT,
                "applied_index": self.applied_index,
                "cluster_time_ms": self.cluster_time_ms,
                "log_digest": self._log_digest,
                "outcome_digest": self._outcome_digest,
                "commands_applied": self.commands_applied,
                "duplicates_suppressed": self.duplicates_suppressed,
                "sessions": sessions,
                "timers": sorted(self.timers.deadlines.items()),
                "timers_fired": self.timers_fired,
                "service": self.service.snapshot(),
            }
        )

    def restore(self, data: bytes) -> None:
        """Replaces everything by a snapshot from `snapshot_bytes` (any node's)."""
        snapshot = _command_decoder.decode(data)
        if not isinstance(snapshot, dict) or snapshot.get("format") != SNAPSHOT_FORMAT:
            raise SnapshotFormatError("not a phalanx container snapshot of a known format")
        try:
            self.service.restore(snapshot["service"])
        except Exception as error:
            # Not the command's fault, nor phalanx's: this replica cannot take on the
            # state it was given, so it must not go on applying.
            raise ServiceFault(
                snapshot["applied_index"], type(self.service).__name__, error, "restore()"
            ) from error
        self.applied_index = Index(snapshot["applied_index"])
        self.cluster_time_ms = snapshot["cluster_time_ms"]
        self._log_digest = snapshot["log_digest"]
        self._outcome_digest = snapshot["outcome_digest"]
        self.commands_applied = snapshot["commands_applied"]
        self.duplicates_suppressed = snapshot["duplicates_suppressed"]
        self.timers.restore({timer_id: deadline for timer_id, deadline in snapshot["timers"]})
        self.timers_fired = snapshot["timers_fired"]
        # The snapshot lists sessions least recently active first: that order decides
        # expiry and eviction, so it is kept, not re-derived.
        self.sessions = OrderedDict(
            (session_id, _Session(last_active, first_incomplete, dict(replies), seqs))
            for session_id, last_active, first_incomplete, replies, _, _ in snapshot["sessions"]
            for seqs in [sorted(seq for seq, _ in replies)]  # sorted: already a heap
        )
        for session_id, *_, egress_next, egress in snapshot["sessions"]:
            session = self.sessions[session_id]
            session.egress_next = egress_next
            session.egress = deque((seq, payload) for seq, payload in egress)

    def state_digest(self) -> str:
        """The service state's digest. A service whose `state()` (or `state_hash()`)
        raises or cannot be encoded gets the digest of that error instead, logged once:
        the same on every replica, so checkpoints keep working (they still compare the
        log and the outcomes) and the node keeps serving."""
        try:
            cheap = self.service.state_hash()
            if cheap is not None:
                return hashlib.blake2b(bytes(cheap), digest_size=16).hexdigest()
            state = _reply_encoder.encode(self.service.state())
        except _PROCESS_FAULTS:
            raise
        except BaseException as error:  # the service's bug, the same on every replica
            problem = describe_exception(error)
            if self.state_digest_error is None:
                log.error(
                    "service %s: state() cannot be digested (%s); replicas compare only "
                    "their logs and outcomes until it can",
                    type(self.service).__name__,
                    problem,
                )
            self.state_digest_error = problem
            state = b"state-digest-error:" + problem.encode()
        return hashlib.blake2b(state, digest_size=16).hexdigest()

    # -- sessions ---------------------------------------------------------------------

    def _open_session(self, index: Index) -> ApplyResult:
        while len(self.sessions) >= self.limits.max_sessions:
            evicted, _ = self.sessions.popitem(last=False)  # least recently active
            self._notify(self.service.on_session_close, evicted, "evicted")
        self.sessions[index] = _Session(self.cluster_time_ms)
        self._notify(self.service.on_session_open, index)
        return ApplyResult(index, ApplyStatus.OK, session_id=index)

    def _close_session(self, index: Index, envelope: CloseSession) -> ApplyResult:
        existed = self.close_session(envelope.session_id, "client_closed")
        status = ApplyStatus.OK if existed else ApplyStatus.SESSION_UNKNOWN
        return ApplyResult(index, status, session_id=envelope.session_id)

    def close_session(self, session_id: int, reason: str) -> bool:
        if self.sessions.pop(session_id, None) is None:
            return False
        self._notify(self.service.on_session_close, session_id, reason)
        return True

    # -- callbacks and timers ------------------------------------------------------------

    def _callback(self, method: Any, *args: Any) -> Any:
        """Runs a deterministic callback with the context open for replicated changes."""
        context = self.context
        context._deterministic = True
        try:
            return method(context, *args)
        finally:
            context._deterministic = False

    def _notify(self, method: Any, *args: Any) -> None:
        """A callback whose exception (the service's bug, raised identically on every
        replica) must not stop the node: the entry is applied all the same."""
        try:
            self._callback(method, *args)
        except _PROCESS_FAULTS as error:
            raise ServiceFault(self.applied_index, type(self.service).__name__, error) from error
        except BaseException as error:
            self.callback_errors += 1
            log.error(
                "service %s: %s raised at log entry %s: %s",
                type(self.service).__name__,
                getattr(method, "__name__", "callback"),
                self.applied_index,
                describe_exception(error),
            )

    def _fire_timers(self) -> None:
        while (timer_id := self.timers.pop_due(self.cluster_time_ms)) is not None:
            self.timers_fired += 1
            self._notify(self.service.on_timer, timer_id)

    def send(self, session_id: int, message: Any) -> bool:
        """`ctx.send`: numbers and keeps a pushed message for the session."""
        session = self.sessions.get(session_id)
        if session is None:
            return False
        payload = _reply_encoder.encode(message)
        seq = session.egress_next
        session.egress_next += 1
        session.egress.append((seq, payload))
        if len(session.egress) > self.limits.max_egress_per_session:
            session.egress.popleft()
        self.new_egress.append(Pushed(session_id, seq, payload))
        del self.new_egress[:-MAX_PENDING_EGRESS]
        return True

    def egress_after(self, session_id: int, after_seq: int) -> tuple[list[Pushed], bool]:
        """Kept messages numbered above `after_seq`, and whether some in between were
        already forgotten (the client fell further behind than the buffer)."""
        session = self.sessions.get(session_id)
        if session is None:
            return [], False
        kept = [Pushed(session_id, seq, data) for seq, data in session.egress if seq > after_seq]
        first_kept = session.egress[0][0] if session.egress else session.egress_next
        return kept, first_kept > after_seq + 1

    def next_timer_deadline(self) -> int | None:
        return self.timers.next_deadline()

    def local_callback(self, method: Any, *args: Any) -> None:
        """Runs a node-local callback (on_start, on_role_change, on_terminate); the
        context refuses replicated changes there."""
        method(self.context, *args)

    def _touch(self, index: Index, session_id: int) -> ApplyResult:
        status = ApplyStatus.OK if self._active(session_id) else ApplyStatus.SESSION_UNKNOWN
        return ApplyResult(index, status, session_id=session_id)

    def _active(self, session_id: int) -> _Session | None:
        """The session, marked active now (most recently used), or None if unknown."""
        session = self.sessions.get(session_id)
        if session is not None:
            session.last_active_ms = self.cluster_time_ms
            self.sessions.move_to_end(session_id)
        return session

    def _expire_sessions(self) -> None:
        deadline = self.cluster_time_ms - self.limits.session_timeout_ms
        sessions = self.sessions
        while sessions:
            session_id, session = next(iter(sessions.items()))
            if session.last_active_ms >= deadline:
                return
            del sessions[session_id]
            self._notify(self.service.on_session_close, session_id, "timed_out")

    # -- commands ---------------------------------------------------------------------

    def _apply_command(self, index: Index, command: Command) -> ApplyResult:
        session = self._active(command.session_id)
        if session is None:
            return ApplyResult(
                index, ApplyStatus.SESSION_UNKNOWN, session_id=command.session_id, seq=command.seq
            )
        if command.first_incomplete > session.first_incomplete:
            session.first_incomplete = command.first_incomplete
            _forget_acknowledged(session, command.first_incomplete)
        cached = session.replies.get(command.seq)
        if cached is not None:
            self.duplicates_suppressed += 1
            return ApplyResult(
                index, ApplyStatus.OK, cached, command.session_id, command.seq, duplicate=True
            )
        if command.seq < session.first_incomplete:
            return ApplyResult(index, ApplyStatus.STALE, b"", command.session_id, command.seq)
        if len(session.replies) >= self.limits.max_replies_per_session:
            return ApplyResult(
                index, ApplyStatus.TOO_MANY_INFLIGHT, b"", command.session_id, command.seq
            )
        reply = self._run_service(command.session_id, command.payload)
        session.replies[command.seq] = reply
        heapq.heappush(session.reply_seqs, command.seq)
        self.commands_applied += 1
        return ApplyResult(index, ApplyStatus.OK, reply, command.session_id, command.seq)

    def _run_service(self, session_id: int, payload: bytes) -> bytes:
        try:
            command: Any = _command_decoder.decode(payload)
        except (msgspec.DecodeError, ValueError) as error:
            return _reply_encoder.encode(
                {"ok": False, "error": "malformed_command", "message": str(error)}
            )
        # Whatever service code raises (even SystemExit) or returns that msgpack cannot
        # encode (an object, an int beyond 64 bits) is the service's bug, identical on
        # every replica: it becomes an error reply, the same bytes everywhere.
        try:
            reply = self._callback(self.service.on_message, session_id, command)
        except _PROCESS_FAULTS as error:
            raise ServiceFault(self.applied_index, type(self.service).__name__, error) from error
        except BaseException as error:
            return self._error_reply("service_exception", error)
        try:
            return _reply_encoder.encode(reply)
        except _PROCESS_FAULTS as error:
            raise ServiceFault(self.applied_index, type(self.service).__name__, error) from error
        except BaseException as error:
            return self._error_reply("unencodable_reply", error)

    def _error_reply(self, kind: str, error: BaseException) -> bytes:
        # The message must carry nothing process-specific (an object's id): every
        # replica must produce the same reply bytes.
        message = describe_exception(error)
        self.service_errors += 1
        if self.service_errors <= ERRORS_LOGGED_IN_FULL or self.service_errors % 1000 == 0:
            log.warning(
                "service %s, log entry %s: %s (%s; %d so far)",
                type(self.service).__name__,
                self.applied_index,
                kind.replace("_", " "),
                message,
                self.service_errors,
            )
        return _reply_encoder.encode({"ok": False, "error": kind, "message": message})


def _stack_depth() -> int:
    frame = sys._getframe(1)
    depth = 0
    while frame is not None:
        depth += 1
        frame = frame.f_back  # type: ignore[assignment]
    return depth


def _forget_acknowledged(session: _Session, first_incomplete: int) -> None:
    """Drops exactly the cached replies below `first_incomplete`: the client has them.

    A min-heap of the cached sequence numbers makes this touch only what it removes
    (scanning the whole cache on every command was 8% of a leader's time under load)
    while staying independent of the order replies were cached in."""
    seqs, replies = session.reply_seqs, session.replies
    while seqs and seqs[0] < first_incomplete:
        del replies[heapq.heappop(seqs)]
