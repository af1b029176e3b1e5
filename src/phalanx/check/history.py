"""Histories: what clients asked, what they were told, and when.

A history is the real-time sequence of events recorded by clients. Each event is an
invocation or a completion of one operation by one process; a process has at most one
operation in flight. Pairing the two gives an `Operation`:

- `ok`: the operation took effect exactly once, between its invocation and its
  completion, with the result the client saw.
- `fail`: the operation definitely did not take effect. The checker drops it.
- `info`: the outcome is unknown (a timeout, a crash). The operation may take effect
  at any point after its invocation, or never; it has no completion time.

An invocation still open when the history ends is treated as `info`. Parsers produce
`Event`s; `build_history` pairs them, validates them and freezes their values so that
models can hash and compare them.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

from phalanx.check import limits
from phalanx.check.errors import CheckError

# A frozen value: JSON or EDN data with lists turned into tuples and maps into
# frozensets of (key, value) pairs, so that it hashes.
Value = Hashable


class Boolean(enum.Enum):
    """JSON and EDN booleans once frozen.

    Python's True equals 1 and hashes like it, so a register that held true would
    pass for one that held 1, and the search's memo would merge the two states.
    Frozen booleans are these members instead, equal only to themselves.
    """

    FALSE = "false"
    TRUE = "true"


class EventType(enum.Enum):
    INVOKE = "invoke"
    OK = "ok"
    FAIL = "fail"
    INFO = "info"


class Outcome(enum.Enum):
    OK = "ok"
    FAIL = "fail"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a history, as a parser read it."""

    process: Value
    type: EventType
    f: str
    key: Value
    value: Value
    line: int
    text: str
    # A completion that the source format defines as "executed, with a negative
    # answer" (a Jepsen `:fail :cas`), rather than "did not happen".
    refused: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    """An invocation paired with its completion.

    `call` and `ret` are positions in the history's event sequence; `ret` is None for
    an `info` operation, which never completes. `result` is the completion's value for
    `ok` operations and None otherwise; `refused` marks an `ok` operation whose answer
    was negative (a compare-and-set that found a different value).
    """

    id: int
    process: Value
    f: str
    key: Value
    argument: Value
    result: Value
    outcome: Outcome
    call: int
    ret: int | None
    invoke: Event
    completion: Event | None
    refused: bool = False

    def describe(self) -> str:
        key = "" if self.key is None else f" {show(self.key)}"
        text = f"process {show(self.process)} {self.f}{key}"
        if self.argument is not None:
            text += f" {show(self.argument)}"
        if self.outcome is Outcome.OK:
            answer = "refused" if self.refused else show(self.result)
            text += f" -> {answer}"
        else:
            text += f" ({self.outcome.value})"
        return text

    def lines(self) -> str:
        first = self.invoke.line
        if self.completion is None:
            return f"line {first}"
        return f"lines {first}-{self.completion.line}"


@dataclass(frozen=True, slots=True)
class History:
    """Operations in order of invocation, and the name of their source."""

    operations: tuple[Operation, ...]
    source: str


def freeze(value: object) -> Value:
    """Make parsed data hashable: lists become tuples, maps frozensets of pairs."""
    if isinstance(value, bool):
        return Boolean.TRUE if value else Boolean.FALSE
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    if isinstance(value, Mapping):
        return frozenset((freeze(k), freeze(v)) for k, v in value.items())
    if isinstance(value, set | frozenset):
        return frozenset(freeze(item) for item in value)
    assert isinstance(value, Hashable), value
    return value


def show(value: Value) -> str:
    """Render a frozen value compactly, the way a user would write it."""
    if value is None:
        return "nil"
    if isinstance(value, Boolean):
        return value.value
    if isinstance(value, tuple):
        return "[" + " ".join(show(item) for item in value) + "]"
    if isinstance(value, frozenset):
        items = sorted(value, key=repr)
        if all(isinstance(item, tuple) and len(item) == 2 for item in items):
            return "{" + ", ".join(f"{show(k)} {show(v)}" for k, v in items) + "}"
        return "#{" + " ".join(show(item) for item in items) + "}"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def build_history(events: Iterable[Event], source: str) -> History:
    """Pair invocations with completions, in real-time order.

    Raises CheckError for a completion without an invocation, a second invocation by a
    process whose operation is still in flight, or a completion of a different
    function than the one invoked.
    """
    # process -> (slot in `operations`, position of the invocation, the invocation)
    pending: dict[Value, tuple[int, int, Event]] = {}
    operations: list[Operation | None] = []
    for position, event in enumerate(events):
        if event.type is EventType.INVOKE:
            _check_invoke(event, pending, len(operations), source)
            pending[event.process] = (len(operations), position, event)
            operations.append(None)
            continue
        if event.process not in pending:
            raise CheckError(
                f"process {show(event.process)} completes an operation it never invoked",
                path=source,
                line=event.line,
            )
        slot, call, invoke = pending.pop(event.process)
        if invoke.f != event.f:
            raise CheckError(
                f"completion of {event.f!r} does not match the invocation of "
                f"{invoke.f!r} at line {invoke.line}",
                path=source,
                line=event.line,
            )
        operations[slot] = _pair(slot, call, position, invoke, event)
    # Whatever is still in flight at the end has an unknown outcome.
    for slot, call, invoke in pending.values():
        operations[slot] = _open(slot, call, invoke, None)
    complete = tuple(op for op in operations if op is not None)
    assert len(complete) == len(operations)
    return History(complete, source)


def _check_invoke(
    event: Event, pending: Mapping[Value, tuple[int, int, Event]], count: int, source: str
) -> None:
    if event.process in pending:
        previous = pending[event.process][2]
        raise CheckError(
            f"process {show(event.process)} invokes again while its operation "
            f"from line {previous.line} is still in flight",
            path=source,
            line=event.line,
        )
    if count >= limits.history_operations_max:
        raise CheckError(
            f"more than {limits.history_operations_max} operations",
            path=source,
            line=event.line,
        )


def _pair(slot: int, call: int, position: int, invoke: Event, completion: Event) -> Operation:
    if completion.type is EventType.INFO:
        return _open(slot, call, invoke, completion)
    if completion.type is EventType.FAIL and not completion.refused:
        outcome = Outcome.FAIL
        result: Value = None
    else:
        outcome = Outcome.OK
        result = completion.value
    return Operation(
        id=slot,
        process=invoke.process,
        f=invoke.f,
        key=invoke.key if invoke.key is not None else completion.key,
        argument=invoke.value,
        result=result,
        outcome=outcome,
        call=call,
        ret=position,
        invoke=invoke,
        completion=completion,
        refused=completion.refused,
    )


def _open(slot: int, call: int, invoke: Event, completion: Event | None) -> Operation:
    return Operation(
        id=slot,
        process=invoke.process,
        f=invoke.f,
        key=invoke.key,
        argument=invoke.value,
        result=None,
        outcome=Outcome.INFO,
        call=call,
        ret=None,
        invoke=invoke,
        completion=completion,
    )
