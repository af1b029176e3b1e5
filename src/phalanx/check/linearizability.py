"""Linearizability checking by search, after Wing & Gong and Lowe.

Theory of operation
-------------------
A history is linearizable when each operation can be given a single instant between
its invocation and its completion such that running the operations one at a time in
the order of those instants, through the model, yields every result the clients saw
(Herlihy & Wing, "Linearizability: a correctness condition for concurrent objects",
TOPLAS 1990).

Wing & Gong ("Testing and verifying concurrent objects", JPDC 1993) search for such
an order directly. The history is kept as a list of call and return entries in
real-time order. Walking from the head, any call met before the first return is a
candidate to go next: its operation was invoked before every remaining operation
completed. Placing a candidate ("lifting" it) applies it to the model state and
removes its call and return from the list; the walk restarts at the head. Meeting a
return entry means that operation has not been placed although everything after it
must come later: the search is stuck and backtracks by undoing the last placement
and trying the next candidate. The history is linearizable when every operation has
been placed, and not linearizable when a return is met with nothing left to undo.

Lowe ("Testing for linearizability", CCPE 2017) makes this practical by memoising:
two partial searches with the same set of placed operations and the same model state
have the same future, so a (placed set, state) pair seen once is never expanded
again. The placed set is a bitset held in a Python int; the pair goes into a hash
set. The list is a doubly linked list in arrays, so lifting and restoring an entry
are O(1) (Knuth's dancing links: a removed entry keeps its neighbours, so undoing
removals in reverse order puts it back).

Three further reductions, none of which changes a verdict:

- P-compositionality (Horn & Kroening, "Faster linearizability checking via
  P-compositionality", FORTE 2015): when the model splits into independent parts
  (the keys of a map) each part's sub-history is checked alone. `check_history`
  does this from `Model.partition_key`.
- Operations whose outcome is unknown (`info`) may take effect at any time after
  their invocation, or never. They have no return entry, so they stay candidates
  to the end; and the search succeeds as soon as every operation with a known
  outcome is placed, since the rest may simply never have happened. An `info` read
  changes nothing and is dropped.
- Two `info` operations with the same function, key and argument that are both
  candidates are interchangeable: whichever is placed, the other stays a candidate
  forever. The search only ever places the earliest-invoked unplaced one of such a
  group, which cuts the many equal timed-out writes of a Jepsen history from a
  factorial number of orders to one.

When the search fails, the return entry it was stuck at with the most of the history
behind it marks the first operation that cannot be placed: every earlier completion
was passed in some partial order, and the history up to that completion is already
not linearizable. The report shows it, the states the model could have been in just
before it, and the operations around it.

A budget of time, steps and memo memory bounds the search; running out gives the
verdict "unknown", never a guess.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Generator, Hashable, Sequence
from dataclasses import dataclass

from phalanx.check import limits
from phalanx.check.errors import CheckError
from phalanx.check.history import History, Operation, Outcome
from phalanx.check.models import ILLEGAL, Model, State, Transition


class Verdict(enum.Enum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a history is not linearizable, around the first operation that fails."""

    operation: Operation
    reason: str
    # The states the model could be in just before `operation` (described by the
    # model), at most `limits.reported_states_max` of them; `states_truncated` when
    # there were more.
    states: tuple[str, ...]
    # The operations that the failing operation contends with, in invocation order.
    excerpt: tuple[Operation, ...]
    states_truncated: bool = False


@dataclass(frozen=True, slots=True)
class CheckResult:
    verdict: Verdict
    model: str
    partitions: int
    steps: int
    seconds: float
    failure: Failure | None = None
    # Why the verdict is unknown, when it is.
    reason: str = ""


@dataclass(frozen=True, slots=True)
class _Budget:
    deadline: float
    steps_max: int
    cache_bytes_max: int


@dataclass(frozen=True, slots=True)
class _Outcome:
    verdict: Verdict
    steps: int
    reason: str = ""
    # For NOT_LINEARIZABLE: the partition, the index (into its operations) of the first
    # operation that cannot be placed, the states seen just before it, and the tail
    # of the longest partial linearization that reached it.
    partition: int = -1
    culprit: int = -1
    states: tuple[State, ...] = ()
    states_truncated: bool = False
    placed_before: tuple[int, ...] = ()


_Search = Generator[int, None, _Outcome]


def check_history(
    history: History,
    model: Model,
    *,
    budget_seconds: float = limits.search_budget_seconds_default,
    steps_max: int = limits.search_steps_max,
    cache_bytes_max: int = limits.search_cache_bytes_max,
) -> CheckResult:
    """Decide whether `history` is linearizable with respect to `model`."""
    assert budget_seconds >= 0 and steps_max >= 0 and cache_bytes_max >= 0
    started = time.monotonic()
    budget = _Budget(started + budget_seconds, steps_max, cache_bytes_max)
    operations = [op for op in history.operations if _takes_part(op, model)]
    violation = _first_violation(operations, model, history.source)
    if violation is not None:
        operation, reason = violation
        impossible = Failure(operation, reason, (), (operation,))
        seconds = time.monotonic() - started
        return CheckResult(Verdict.NOT_LINEARIZABLE, model.name, 0, 0, seconds, impossible)
    partitions = _partition(operations, model)
    searches = [
        _walk(
            _prepare(part),
            [_compile(op, model, history.source) for op in part],
            model.initial_state(),
        )
        for part in partitions
    ]
    entry_bytes = [limits.search_cache_entry_bytes + len(part) // 8 for part in partitions]
    outcome, steps = _run_all(searches, entry_bytes, budget)
    seconds = time.monotonic() - started
    failure: Failure | None = None
    if outcome.verdict is Verdict.NOT_LINEARIZABLE:
        failure = _failure(partitions[outcome.partition], outcome, model)
    return CheckResult(
        outcome.verdict, model.name, len(partitions), steps, seconds, failure, outcome.reason
    )


def _run_all(
    searches: list[_Search], entry_bytes: list[int], budget: _Budget
) -> tuple[_Outcome, int]:
    """Run the partitions' searches side by side until one fails or all succeed.

    One failing partition decides the verdict, and partitions differ in difficulty by
    orders of magnitude, so taking turns (a slice of steps each) finds an easy
    failure without first exhausting a hard partition. `entry_bytes[i]` estimates
    the memory of one cache entry of partition i.
    """
    running = dict(enumerate(searches))
    cache_bytes = dict.fromkeys(running, 0)
    steps = 0
    while running:
        for number, walk in list(running.items()):
            try:
                cache_bytes[number] = next(walk) * entry_bytes[number]
            except StopIteration as stop:
                outcome: _Outcome = stop.value
                steps += outcome.steps % limits.search_clock_interval_steps
                del running[number]
                if outcome.verdict is Verdict.NOT_LINEARIZABLE:
                    _close(running)
                    return _Outcome(
                        outcome.verdict,
                        outcome.steps,
                        partition=number,
                        culprit=outcome.culprit,
                        states=outcome.states,
                        states_truncated=outcome.states_truncated,
                        placed_before=outcome.placed_before,
                    ), steps
                continue
            steps += limits.search_clock_interval_steps
            reason = _exhausted(budget, steps, sum(cache_bytes.values()))
            if reason:
                _close(running)
                return _Outcome(Verdict.UNKNOWN, steps, reason), steps
    return _Outcome(Verdict.LINEARIZABLE, steps), steps


def _close(running: dict[int, _Search]) -> None:
    for walk in running.values():
        walk.close()


def _takes_part(op: Operation, model: Model) -> bool:
    # A failed operation never happened; an unknown one that cannot change the state
    # constrains nothing. Neither needs a place in the order.
    if op.outcome is Outcome.FAIL:
        return False
    if op.outcome is Outcome.INFO:
        return model.has_effect(op)
    return True


def _first_violation(
    operations: Sequence[Operation], model: Model, source: str
) -> tuple[Operation, str] | None:
    """The earliest-completing `ok` operation whose result no state allows."""
    found: list[tuple[int, Operation, str]] = []
    for op in operations:
        if op.outcome is not Outcome.OK:
            continue
        try:
            reason = model.violation(op)
        except ValueError as error:
            raise CheckError(str(error), path=source, line=op.invoke.line) from error
        if reason is not None:
            assert op.ret is not None
            found.append((op.ret, op, reason))
    if not found:
        return None
    _, op, reason = min(found, key=lambda item: item[0])
    return op, reason


def _compile(op: Operation, model: Model, source: str) -> Transition:
    try:
        return model.transition(op)
    except ValueError as error:
        line = op.completion.line if op.completion is not None else op.invoke.line
        raise CheckError(str(error), path=source, line=line) from error


def _partition(operations: Sequence[Operation], model: Model) -> list[list[Operation]]:
    parts: dict[Hashable, list[Operation]] = {}
    for op in operations:
        parts.setdefault(model.partition_key(op), []).append(op)
    return list(parts.values())


def _linked_entries(operations: Sequence[Operation], end: int) -> tuple[list[int], list[int]]:
    count = len(operations)
    events: list[tuple[int, int]] = []
    for index, op in enumerate(operations):
        events.append((op.call, index + 1))
        if op.ret is not None:
            events.append((op.ret, index + 1 + count))
    events.sort()
    following = [end] * (end + 1)
    preceding = [0] * (end + 1)
    previous = 0
    for _, entry in events:
        following[previous] = entry
        preceding[entry] = previous
        previous = entry
    following[previous] = end
    preceding[end] = previous
    return following, preceding


def _symmetry_groups(operations: Sequence[Operation]) -> tuple[list[int], list[int]]:
    """Group interchangeable `info` operations; -1 for every other operation.

    `rank[i]` is operation i's place in its group by invocation: a group's placed
    members are always its first ranks, so one counter per group says who is next.
    """
    groups: dict[tuple[object, ...], int] = {}
    sizes: list[int] = []
    group = [-1] * len(operations)
    rank = [0] * len(operations)
    for index, op in enumerate(operations):
        if op.ret is not None:
            continue
        key = (op.f, op.key, op.argument)
        number = groups.setdefault(key, len(groups))
        if number == len(sizes):
            sizes.append(0)
        group[index] = number
        rank[index] = sizes[number]
        sizes[number] += 1
    return group, rank


@dataclass(slots=True)
class _Frontier:
    """The furthest return entry the search has been stuck at, and what it saw there."""

    position: int = -1
    culprit: int = -1
    states: list[State] | None = None
    states_truncated: bool = False
    placed_before: tuple[int, ...] = ()

    def stuck(
        self, position: int, culprit: int, state: State, placed: list[tuple[int, State]]
    ) -> None:
        if position < self.position:
            return
        if position > self.position:
            self.position = position
            self.culprit = culprit
            self.states = []
            self.states_truncated = False
            tail = placed[-limits.excerpt_preceding_operations :]
            self.placed_before = tuple(entry - 1 for entry, _ in tail)
        assert self.states is not None
        if state in self.states:
            return
        if len(self.states) < limits.reported_states_max:
            self.states.append(state)
        else:
            self.states_truncated = True

    def outcome(self, steps: int) -> _Outcome:
        return _Outcome(
            Verdict.NOT_LINEARIZABLE,
            steps,
            culprit=self.culprit,
            states=tuple(self.states or ()),
            states_truncated=self.states_truncated,
            placed_before=self.placed_before,
        )


@dataclass(frozen=True, slots=True)
class _Entries:
    """A partition's operations as the linked list of call and return entries.

    Entries 1..count are calls (operation i is entry i + 1), count + 1..2 * count are
    returns (entry i + 1 + count), 0 is the head, and `end` (2 * count + 1) follows
    the last entry; the walk treats `end` like a return, where an assertion stops it.
    """

    count: int
    following: list[int]
    preceding: list[int]
    definite: list[bool]
    return_position: list[int]
    group: list[int]
    rank: list[int]
    # Per group, the rank of its next member to place (the search updates it).
    group_next: list[int]


def _prepare(operations: Sequence[Operation]) -> _Entries:
    end = 2 * len(operations) + 1
    following, preceding = _linked_entries(operations, end)
    group, rank = _symmetry_groups(operations)
    return _Entries(
        count=len(operations),
        following=following,
        preceding=preceding,
        definite=[op.ret is not None for op in operations],
        return_position=[-1 if op.ret is None else op.ret for op in operations],
        group=group,
        rank=rank,
        group_next=[0] * (max(group, default=-1) + 1),
    )


def _walk(entries: _Entries, transitions: Sequence[Transition], state: State) -> _Search:
    """Search one partition; see the module docstring for the algorithm.

    `transitions[i]` is operation i compiled by the model. A generator: it yields the
    size of its cache every `limits.search_clock_interval_steps` steps, so that the
    caller can enforce the budget and interleave partitions, and returns the outcome.
    """
    # The hot loop: everything it touches is a local, and it is one function so that
    # a step costs no call beyond the model's transition.
    count, following, preceding = entries.count, entries.following, entries.preceding
    definite, group, rank = entries.definite, entries.group, entries.rank
    group_next, interval = entries.group_next, limits.search_clock_interval_steps
    remaining = sum(definite)
    seen: set[tuple[int, State]] = set()
    # (call entry, the state before it) for each placement, in order.
    placed: list[tuple[int, State]] = []
    frontier = _Frontier()
    linearized = steps = 0
    entry = following[0]
    while remaining:
        steps += 1
        if not steps % interval:
            yield len(seen)
        if entry <= count:
            index = entry - 1
            member = group[index]
            if member < 0 or rank[index] == group_next[member]:
                new = transitions[index](state)
                key = (linearized | (1 << index), new)
                if new is not ILLEGAL and key not in seen:
                    seen.add(key)
                    placed.append((entry, state))
                    linearized, state = key
                    before, after = preceding[entry], following[entry]
                    following[before], preceding[after] = after, before
                    if definite[index]:
                        before, after = preceding[entry + count], following[entry + count]
                        following[before], preceding[after] = after, before
                        remaining -= 1
                    else:
                        group_next[member] += 1
                    entry = following[0]
                    continue
            entry = following[entry]
            continue
        assert entry != len(following) - 1, "a return comes before the end while any is open"
        frontier.stuck(entries.return_position[entry - count - 1], entry - count - 1, state, placed)
        if not placed:
            return frontier.outcome(steps)
        entry, state = placed.pop()
        linearized ^= 1 << (entry - 1)
        if definite[entry - 1]:
            following[preceding[entry + count]] = entry + count
            preceding[following[entry + count]] = entry + count
            remaining += 1
        else:
            group_next[group[entry - 1]] -= 1
        following[preceding[entry]] = entry
        preceding[following[entry]] = entry
        entry = following[entry]
    return _Outcome(Verdict.LINEARIZABLE, steps)


def _exhausted(budget: _Budget, steps: int, cache_bytes: int) -> str:
    if time.monotonic() > budget.deadline:
        return "the time budget ran out"
    if steps > budget.steps_max:
        return "the step budget ran out"
    if cache_bytes > budget.cache_bytes_max:
        return f"the search's memory passed {budget.cache_bytes_max} bytes"
    return ""


def _failure(part: Sequence[Operation], outcome: _Outcome, model: Model) -> Failure:
    culprit = part[outcome.culprit]
    states = tuple(sorted(model.describe_state(state) for state in outcome.states))
    reason = "no order of the operations before and around it explains its result"
    excerpt = _excerpt(part, culprit, outcome.placed_before)
    return Failure(culprit, reason, states, excerpt, outcome.states_truncated)


def _excerpt(
    part: Sequence[Operation], culprit: Operation, placed_before: tuple[int, ...]
) -> tuple[Operation, ...]:
    """The failing operation, what overlaps it in time, and what last came before it."""
    assert culprit.ret is not None
    overlapping = [
        op
        for op in part
        if op is not culprit and op.call < culprit.ret and (op.ret is None or op.ret > culprit.call)
    ]
    # When many operations overlap (unknown outcomes stay open to the end) keep those
    # invoked closest to the failing one.
    overlapping.sort(key=lambda op: abs(op.call - culprit.call))
    room = limits.excerpt_operations_max - 1 - len(placed_before)
    chosen = {op.id: op for op in overlapping[: max(room, 0)]}
    for index in placed_before:
        op = part[index]
        if op.ret is not None and op.ret < culprit.call:
            chosen[op.id] = op
    chosen[culprit.id] = culprit
    return tuple(sorted(chosen.values(), key=lambda op: op.call))
