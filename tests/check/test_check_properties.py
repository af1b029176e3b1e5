"""Property tests: the checker against sequential runs and against brute force.

- Any history produced by running the model one operation at a time, each at an
  instant inside its (randomly stretched) invocation interval, is linearizable; some
  of its operations time out (`info`), taking effect or not.
- Adding a read of a value nobody wrote makes it not linearizable.
- On small random histories (random results, so both verdicts occur) the checker
  agrees with a brute-force search over every order the definition allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.check import (
    ILLEGAL,
    BankModel,
    CasRegisterModel,
    Event,
    EventType,
    History,
    KvModel,
    Model,
    Operation,
    Outcome,
    Verdict,
    build_history,
    check_history,
)
from phalanx.check.history import Value, freeze
from phalanx.check.models import State

VALUES = st.integers(0, 3)
KEYS = st.sampled_from(["a", "b"])


@dataclass(frozen=True)
class Planned:
    """An operation with its invocation, effect and completion instants."""

    f: str
    key: Value
    argument: Value
    invoke_at: float
    effect_at: float
    complete_at: float
    outcome: Outcome  # OK, or INFO (completion unknown; effect applied or not)
    takes_effect: bool


@st.composite
def planned_operations(draw: st.DrawFn, kv: bool) -> list[Planned]:
    count = draw(st.integers(0, 12))
    planned = []
    for index in range(count):
        if kv:
            f = draw(st.sampled_from(["get", "put", "append", "cas", "delete"]))
        else:
            f = draw(st.sampled_from(["read", "write", "cas"]))
        # Map values are strings, so that any of them can be appended to.
        values = st.sampled_from(["", "x", "xy"]) if kv else VALUES
        argument: Value = None
        if f in ("write", "put"):
            argument = draw(values)
        elif f == "append":
            argument = draw(st.sampled_from(["x", "y"]))
        elif f == "cas":
            argument = (draw(values), draw(values))
        info = draw(st.integers(0, 5)) == 0
        planned.append(
            Planned(
                f=f,
                key=draw(KEYS) if kv else None,
                argument=argument,
                invoke_at=index - draw(st.floats(0, 3)),
                effect_at=float(index),
                complete_at=index + draw(st.floats(0.01, 3)),
                outcome=Outcome.INFO if info else Outcome.OK,
                takes_effect=not info or draw(st.booleans()),
            )
        )
    return planned


def run_sequentially(planned: Sequence[Planned], kv: bool) -> History:
    """Apply the operations in order of their effect instants; record what they saw."""
    store: dict[Value, Value] = {}
    timed: list[tuple[float, int, Event]] = []
    for process, item in enumerate(planned):
        result: Value = None
        refused = False
        current = store.get(item.key)
        if item.f in ("read", "get"):
            result = current
        elif item.f == "cas":
            assert isinstance(item.argument, tuple)
            refused = current != item.argument[0]
        if item.takes_effect:
            store[item.key] = _after(item, current)
        invoke = Event(process, EventType.INVOKE, item.f, item.key, item.argument, 0, "")
        timed.append((item.invoke_at, 0, invoke))
        if item.outcome is Outcome.OK:
            if refused and not kv:
                done = Event(process, EventType.FAIL, item.f, item.key, None, 0, "", True)
            elif refused:
                # The kv format has no refused cas: a refused one is a failed one.
                done = Event(process, EventType.FAIL, item.f, item.key, None, 0, "")
            else:
                done = Event(process, EventType.OK, item.f, item.key, result, 0, "")
            timed.append((item.complete_at, 1, done))
    timed.sort(key=lambda entry: (entry[0], entry[1]))
    return build_history([event for _, _, event in timed], "generated")


def _after(item: Planned, current: Value) -> Value:
    if item.f in ("write", "put"):
        return item.argument
    if item.f == "append":
        assert isinstance(item.argument, str)
        assert current is None or isinstance(current, str)
        return (current or "") + item.argument
    if item.f == "delete":
        return None
    if item.f == "cas":
        assert isinstance(item.argument, tuple)
        return item.argument[1] if current == item.argument[0] else current
    return current


@settings(max_examples=150, deadline=None)
@given(planned_operations(kv=False))
def test_sequential_run_of_a_cas_register_is_linearizable(planned: list[Planned]) -> None:
    result = check_history(run_sequentially(planned, kv=False), CasRegisterModel())
    assert result.verdict is Verdict.LINEARIZABLE, result


@settings(max_examples=150, deadline=None)
@given(planned_operations(kv=True))
def test_sequential_run_of_a_kv_map_is_linearizable(planned: list[Planned]) -> None:
    generated = run_sequentially(planned, kv=True)
    assert check_history(generated, KvModel()).verdict is Verdict.LINEARIZABLE
    assert check_history(generated, KvModel(per_key=False)).verdict is Verdict.LINEARIZABLE


@settings(max_examples=100, deadline=None)
@given(planned_operations(kv=False), st.integers(0, 12))
def test_read_of_a_value_never_written_is_not_linearizable(planned: list[Planned], at: int) -> None:
    events = [_event(op) for op in run_sequentially(planned, kv=False).operations]
    flat = [event for pair in events for event in pair]
    flat.sort(key=lambda event: event.line)
    position = min(at, len(flat))
    # Tucked anywhere into the history: no interleaving explains a value never written.
    flat[position:position] = [
        Event("reader", EventType.INVOKE, "read", None, None, 0, ""),
        Event("reader", EventType.OK, "read", None, 99, 0, ""),
    ]
    bad = build_history(flat, "generated")
    assert check_history(bad, CasRegisterModel()).verdict is Verdict.NOT_LINEARIZABLE


def _event(op: Operation) -> list[Event]:
    # Re-create events with their history positions as `line`, to re-sort them.
    invoke = Event(op.process, EventType.INVOKE, op.f, op.key, op.argument, op.call, "")
    if op.completion is None or op.ret is None:
        return [invoke]
    done = op.completion
    return [
        invoke,
        Event(op.process, done.type, op.f, op.key, done.value, op.ret, "", done.refused),
    ]


@st.composite
def random_histories(draw: st.DrawFn) -> History:
    """Up to 3 processes, up to 7 operations, random results and outcomes."""
    events: list[Event] = []
    busy: dict[int, tuple[str, Value, Value]] = {}
    started = 0
    while started < 7 or busy:
        process = draw(st.integers(0, 2))
        if process in busy:
            f, key, argument = busy.pop(process)
            kind = draw(st.sampled_from([EventType.OK] * 4 + [EventType.INFO, EventType.FAIL]))
            value = draw(VALUES) if f == "read" and kind is EventType.OK else argument
            refused = f == "cas" and kind is EventType.FAIL and draw(st.booleans())
            events.append(Event(process, kind, f, key, value, len(events), "", refused))
        elif started < 7 and draw(st.booleans()):
            f = draw(st.sampled_from(["read", "write", "cas"]))
            argument: Value = {"read": None, "write": draw(VALUES)}.get(f)
            if f == "cas":
                argument = freeze([draw(VALUES), draw(VALUES)])
            busy[process] = (f, None, argument)
            started += 1
            events.append(Event(process, EventType.INVOKE, f, None, argument, len(events), ""))
        elif not busy:
            started = 7  # nothing in flight and the draw chose to stop
    return build_history(events, "random")


def brute_force_linearizable(history: History, model: Model) -> bool:
    """Try every order the definition allows, without memoisation or pruning."""
    ops = [
        op
        for op in history.operations
        if op.outcome is Outcome.OK or (op.outcome is Outcome.INFO and model.has_effect(op))
    ]
    transitions = {op.id: model.transition(op) for op in ops}

    def place(state: State, placed: frozenset[int]) -> bool:
        waiting = [op for op in ops if op.id not in placed]
        deadlines = [op.ret for op in waiting if op.ret is not None]
        if not deadlines:
            return True  # every definite operation placed; the unknown may never happen
        horizon = min(deadlines)
        for op in waiting:
            if op.call < horizon:
                new = transitions[op.id](state)
                if new is not ILLEGAL and place(new, placed | {op.id}):
                    return True
        return False

    return place(model.initial_state(), frozenset())


@settings(max_examples=400, deadline=None)
@given(random_histories())
def test_agrees_with_brute_force(generated: History) -> None:
    model = CasRegisterModel()
    expected = brute_force_linearizable(generated, model)
    result = check_history(generated, model)
    assert result.verdict is (Verdict.LINEARIZABLE if expected else Verdict.NOT_LINEARIZABLE)
    if not expected:
        assert result.failure is not None
        assert result.failure.operation in result.failure.excerpt


@st.composite
def bank_runs(draw: st.DrawFn) -> tuple[dict[str, int], History]:
    """Transfers and reads applied one at a time at instants 0, 1, 2, ... inside
    randomly stretched intervals; some transfers time out (taking effect or not)."""
    balances = {"a": draw(st.integers(0, 5)), "b": draw(st.integers(0, 5))}
    initial = dict(balances)
    timed: list[tuple[float, int, Event]] = []
    for process in range(draw(st.integers(0, 10))):
        invoke_at = process - draw(st.floats(0, 2))
        complete_at = process + draw(st.floats(0.01, 2))
        if draw(st.booleans()):
            source, target = draw(st.permutations(["a", "b"]))
            amount = draw(st.integers(0, 4))
            argument = freeze({"from": source, "to": target, "amount": amount})
            info = draw(st.integers(0, 3)) == 0
            refused = balances[source] < amount
            if not refused and (not info or draw(st.booleans())):
                balances[source] -= amount
                balances[target] += amount
            kind = EventType.INFO if info else EventType.FAIL if refused else EventType.OK
            f, result = "transfer", argument
        else:
            argument, f, kind, result = None, "read", EventType.OK, freeze(balances)
        timed.append((invoke_at, 0, Event(process, EventType.INVOKE, f, None, argument, 0, "")))
        timed.append((complete_at, 1, Event(process, kind, f, None, result, 0, "")))
    timed.sort(key=lambda entry: (entry[0], entry[1]))
    return initial, build_history([event for _, _, event in timed], "bank")


@settings(max_examples=150, deadline=None)
@given(bank_runs())
def test_sequential_run_of_a_bank_is_linearizable(run: tuple[dict[str, int], History]) -> None:
    initial, generated = run
    assert check_history(generated, BankModel(initial)).verdict is Verdict.LINEARIZABLE
