"""Simulated clients: the real client decisions (`phalanx.client.session`) over the
simulated network, recording a history the linearizability checker reads.

Theory of operation
-------------------
A `SimClient` is one client process with one session, as an application holding an
`AsyncClient` is. Its retries, leader-hint following, backoff, flow window and
outcome classification are `ClientSession`'s, the same code `AsyncClient` runs; this
module only carries its requests and replies through the simulator's network and turns
its timeouts into simulator wake-ups. It pipelines: `lanes` operations are in flight at
once (each lane is a history process with one operation at a time), so commands of one
session are retried out of order, and reply caches fill up.

Every operation is recorded as an invocation and a completion (`ok`, `fail` when the
client is sure it did not happen, `info` when it may have) in one history per run,
which `phalanx.check` judges at the end of the seed. Every command carries an operation
id that the simulated services count (services.py), so a command applied twice is seen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from phalanx.check.history import Event, EventType, freeze
from phalanx.client.errors import ClusterUnavailableError, RequestRejectedError
from phalanx.client.session import (
    Attempt,
    Call,
    ClientSession,
    Done,
    Fail,
    Ignored,
    Reopen,
    Retry,
)
from phalanx.core.types import NodeId
from phalanx.sim.services import BANK_ACCOUNTS
from phalanx.transport.wire import ClientReply, PushedMessage

if TYPE_CHECKING:
    from phalanx.sim.cluster import ClientClosed, SimCluster

#: How long one attempt waits for an answer, and one operation in all (seconds).
ATTEMPT_TIMEOUT_S = 0.3
OPERATION_DEADLINE_S = 3.0
#: Keys of the key-value workload: few, so that operations contend.
KV_KEYS = ("x", "y", "z")


@dataclass
class History:
    """Events of every simulated client of one run, in simulated-time order."""

    events: list[Event] = field(default_factory=list)
    #: Operation ids acknowledged with a result (they must be applied, once).
    acknowledged: list[str] = field(default_factory=list)

    def add(self, process: str, kind: EventType, f: str, key: Any, value: Any) -> None:
        line = len(self.events) + 1
        text = f"{process} {kind.value} {f} {key} {value!r}"
        self.events.append(Event(freeze(process), kind, f, freeze(key), freeze(value), line, text))


@dataclass
class _Operation:
    lane: int
    op_id: str
    f: str
    key: Any
    argument: Any
    command: dict[str, Any]
    call: Call | None = None


class SimClient:
    """One simulated client (see the module docstring)."""

    def __init__(
        self,
        client_id: int,
        cluster: SimCluster,
        history: History,
        rng: random.Random,
        *,
        workload: str = "kv",
        lanes: int = 1,
        operations: int = 20,
        think_ms: tuple[int, int] = (0, 30),
        timer_rate: float = 0.0,
    ) -> None:
        self.client_id = client_id
        self.cluster = cluster
        self.history = history
        self.rng = rng
        self.workload = workload
        self.lanes = lanes
        self.operations_left = operations
        self.think_ms = think_ms
        self.timer_rate = timer_rate
        members = [f"sim:{int(node)}" for node in cluster.ids]
        self.core = ClientSession(
            members, random.Random(rng.random()), attempt_timeout_s=ATTEMPT_TIMEOUT_S
        )
        self._request_ids = 0
        self._tokens = 0
        #: request id -> the attempt it carries.
        self._attempts: dict[int, tuple[Attempt, _Operation | None]] = {}
        #: wake-up token -> what to do then.
        self._wakes: dict[int, tuple[str, Any]] = {}
        self._opening: Call | None = None
        self._waiting_for_session: list[_Operation] = []
        self._busy_lanes: set[int] = set()
        self._operations = 0
        self.completed = 0
        cluster.add_client(client_id, self)

    @property
    def now_s(self) -> float:
        return self.cluster.time / 1000

    def start(self) -> None:
        for lane in range(self.lanes):
            self._wake_in(self.rng.randint(0, 50), "next", lane)

    # -- the cluster's callbacks ------------------------------------------------------------

    def on_message(self, node: NodeId, message: ClientReply | PushedMessage | ClientClosed) -> None:
        if isinstance(message, ClientReply):
            found = self._attempts.pop(message.request_id, None)
            if found is None:
                return  # an answer to an attempt already given up on
            attempt, operation = found
            self.core.heard(self.now_s)
            self._decide(attempt, operation, self.core.on_reply(attempt, message, self.now_s))
        elif not isinstance(message, PushedMessage):
            # The node closed the connection: what was in flight on it is lost.
            address = f"sim:{int(node)}"
            lost = [rid for rid, (a, _) in self._attempts.items() if a.address == address]
            for request_id in lost:
                attempt, operation = self._attempts.pop(request_id)
                self._decide(attempt, operation, self.core.on_lost(attempt, self.now_s))

    def on_wake(self, token: int) -> None:
        what, subject = self._wakes.pop(token)
        if what == "next":
            self._next_operation(subject)
        elif what == "timeout":
            found = self._attempts.pop(subject, None)
            if found is not None:
                attempt, operation = found
                self._decide(attempt, operation, self.core.on_timeout(attempt, self.now_s))
        elif what == "retry":
            call, operation = subject
            self._try(call, operation)
        elif what == "begin":
            self._begin(subject)

    # -- operations -------------------------------------------------------------------------

    def _next_operation(self, lane: int) -> None:
        if self.operations_left <= 0 or lane in self._busy_lanes:
            return
        self.operations_left -= 1
        self._operations += 1
        operation = self._make_operation(lane)
        self._busy_lanes.add(lane)
        if operation.f != "timers":  # timers only change what the digests compare
            op = operation
            self.history.add(self._process(lane), EventType.INVOKE, op.f, op.key, op.argument)
        self._begin(operation)

    def _begin(self, operation: _Operation) -> None:
        if self.core.session_id == 0:
            self._waiting_for_session.append(operation)
            if self._opening is None:
                self._opening = self.core.open_session(self.now_s + OPERATION_DEADLINE_S)
                self._try(self._opening, None)
            return
        payload = msgspec.msgpack.encode(operation.command)
        call = self.core.start_command(payload, self.now_s + OPERATION_DEADLINE_S)
        if call is None:  # the flow window is full: try again a little later
            self._wake_in(5, "begin", operation)
            return
        operation.call = call
        self._try(call, operation)

    def _try(self, call: Call, operation: _Operation | None) -> None:
        attempt = self.core.attempt(call, self.now_s)
        if isinstance(attempt, Fail):
            self._decide(None, operation, attempt, call=call)
            return
        self._request_ids += 1
        request_id = self._request_ids
        self._attempts[request_id] = (attempt, operation)
        node = NodeId(int(attempt.address.rpartition(":")[2]))
        self.cluster.client_send(self.client_id, node, attempt.message(request_id))
        timeout_ms = max(1, round((attempt.timeout_at_s - self.now_s) * 1000))
        self._wake_in(timeout_ms, "timeout", request_id)

    def _decide(
        self,
        attempt: Attempt | None,
        operation: _Operation | None,
        decision: Any,
        *,
        call: Call | None = None,
    ) -> None:
        call = attempt.call if attempt is not None else call
        assert call is not None
        if isinstance(decision, Ignored):
            return
        if isinstance(decision, Retry):
            self._wake_in(max(1, round(decision.delay_s * 1000)), "retry", (call, operation))
            return
        if operation is None:  # the session-opening call
            self._opening = None
            if isinstance(decision, Done):
                waiting, self._waiting_for_session = self._waiting_for_session, []
                for pending in waiting:
                    self._begin(pending)
            else:
                waiting, self._waiting_for_session = self._waiting_for_session, []
                for pending in waiting:  # nothing was sent for them: they did not happen
                    self._complete(pending, EventType.FAIL, None)
            return
        if isinstance(decision, Reopen):
            self._begin(operation)  # under a new session, with a new sequence number
            return
        if isinstance(decision, Done):
            self._on_result(operation, decision.payload)
            return
        assert isinstance(decision, Fail)
        definite = isinstance(decision.error, ClusterUnavailableError | RequestRejectedError)
        self._complete(operation, EventType.FAIL if definite else EventType.INFO, None)

    def _on_result(self, operation: _Operation, payload: bytes) -> None:
        try:
            reply = msgspec.msgpack.decode(payload)
        except (msgspec.DecodeError, ValueError):
            reply = {"undecodable": payload.hex()}
        self.history.acknowledged.append(operation.op_id)
        f = operation.f
        refused = False
        value: Any = None
        if not isinstance(reply, dict):
            value = ("unexpected reply", repr(reply))
        elif f in ("get", "read"):
            value = reply.get("value") if f == "get" else reply.get("balances")
        elif f == "cas":
            refused = not reply.get("ok", False)
        elif f == "transfer" and not reply.get("ok", False):
            # The bank refused it (not enough money): it changed nothing.
            self._complete(operation, EventType.FAIL, None)
            return
        elif f == "append":
            value = reply.get("value")
        self._complete(operation, EventType.OK, value, refused=refused)

    def _complete(
        self, operation: _Operation, kind: EventType, value: Any, *, refused: bool = False
    ) -> None:
        self.completed += 1
        self._busy_lanes.discard(operation.lane)
        low, high = self.think_ms
        self._wake_in(self.rng.randint(low, high), "next", operation.lane)
        if operation.f == "timers":
            return
        process = self._process(operation.lane)
        line = len(self.history.events) + 1
        text = f"{process} {kind.value} {operation.f} {operation.key}"
        if kind is EventType.OK and operation.f not in ("get", "read"):
            value = operation.argument  # a write's completion repeats its argument
        self.history.events.append(
            Event(
                freeze(process),
                kind,
                operation.f,
                freeze(operation.key),
                freeze(value),
                line,
                text,
                refused,
            )
        )

    def _make_operation(self, lane: int) -> _Operation:
        rng = self.rng
        op_id = f"{self.client_id}.{self._operations}"
        if self.workload == "bank":
            if rng.random() < 0.3:
                return _Operation(lane, op_id, "read", None, None, {"op": "balances", "id": op_id})
            source, target = rng.sample(sorted(BANK_ACCOUNTS), 2)
            amount = rng.randint(1, 60)
            argument = {"from": source, "to": target, "amount": amount}
            command = {"op": "transfer", **argument, "id": op_id}
            return _Operation(lane, op_id, "transfer", None, argument, command)
        key = rng.choice(KV_KEYS)
        if self.timer_rate and rng.random() < self.timer_rate:
            # Not part of the history: timers only change what the digests compare.
            command = {"op": "timers", "count": rng.randint(2, 4), "delay_ms": 30, "id": op_id}
            return _Operation(lane, op_id, "timers", None, None, command)
        roll = rng.random()
        if roll < 0.35:
            return _Operation(lane, op_id, "get", key, None, {"op": "get", "key": key, "id": op_id})
        value = f"{self.client_id}.{self._operations}"
        if roll < 0.65:
            command = {"op": "put", "key": key, "value": value, "id": op_id}
            return _Operation(lane, op_id, "put", key, value, command)
        if roll < 0.85:
            command = {"op": "append", "key": key, "value": f"[{value}]", "id": op_id}
            return _Operation(lane, op_id, "append", key, f"[{value}]", command)
        expected = rng.choice((None, f"{rng.randrange(4)}.{rng.randrange(10)}"))
        command = {"op": "cas", "key": key, "expected": expected, "new": value, "id": op_id}
        return _Operation(lane, op_id, "cas", key, (expected, value), command)

    def _process(self, lane: int) -> str:
        return f"c{self.client_id}.{lane}"

    def _wake_in(self, delay_ms: int, what: str, subject: Any) -> None:
        self._tokens += 1
        self._wakes[self._tokens] = (what, subject)
        self.cluster.client_wake(self.client_id, delay_ms, self._tokens)
