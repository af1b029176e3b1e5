"""Sequential specifications the checker compares histories against.

A model says what one operation does to a state when run alone: `transition(op)`
compiles an operation into a function from state to next state, or to `ILLEGAL` when
the operation could not have returned what it returned in that state. States are
hashable so the search can remember the (linearized set, state) pairs it has seen.

An `info` operation has no result, so its function never returns `ILLEGAL`: it acts
as the operation would have acted. That it may also never take effect needs no
special case, because the search may leave it out entirely.

`partition_key(op)` names the independent part of the state an operation touches.
Operations with different keys commute and never observe each other, so by
P-compositionality (Herlihy & Wing 1990, locality; Horn & Kroening 2015) the history
is linearizable exactly when each key's sub-history is; the checker searches each
part alone, which is exponentially cheaper than searching their product.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from phalanx.check.history import Operation, Outcome, Value, show


class Illegal(enum.Enum):
    TOKEN = 0


ILLEGAL: Final = Illegal.TOKEN

State = Hashable
Transition = Callable[[State], State | Illegal]


class Model(Protocol):
    """What the search needs from a sequential specification.

    For an `info` operation the transition must depend only on its function, key and
    argument: the search treats such operations with equal ones as interchangeable.
    """

    @property
    def name(self) -> str: ...

    def initial_state(self) -> State: ...

    def partition_key(self, op: Operation) -> Hashable:
        """Operations with different keys are independent; one key for all = one part."""
        ...

    def has_effect(self, op: Operation) -> bool:
        """False for operations that cannot change the state (reads)."""
        ...

    def transition(self, op: Operation) -> Transition:
        """Compile `op`; raise ValueError when the model does not know it."""
        ...

    def violation(self, op: Operation) -> str | None:
        """A reason why an `ok` result is impossible in every state, if there is one."""
        ...

    def describe_state(self, state: State) -> str: ...


def _unsupported(model: str, op: Operation, supported: str) -> ValueError:
    # Models raise ValueError; the checker turns it into a CheckError naming the
    # file and line, which only it knows.
    return ValueError(f"model {model} has no operation {op.f!r} (it knows {supported})")


def _read(result: Value) -> Transition:
    def read(state: State) -> State | Illegal:
        return state if state == result else ILLEGAL

    return read


def _write(value: Value) -> Transition:
    def write(state: State) -> State | Illegal:
        return value

    return write


def _pair(op: Operation) -> tuple[Value, Value]:
    argument = op.argument
    if not isinstance(argument, tuple) or len(argument) != 2:
        raise ValueError(f"cas needs [expected new], got {show(argument)}")
    return argument[0], argument[1]


def _cas(op: Operation) -> Transition:
    expected, new = _pair(op)
    if op.outcome is Outcome.INFO:

        def cas_unknown(state: State) -> State | Illegal:
            return new if state == expected else state

        return cas_unknown
    if op.refused:

        def cas_refused(state: State) -> State | Illegal:
            return state if state != expected else ILLEGAL

        return cas_refused

    def cas_swapped(state: State) -> State | Illegal:
        return new if state == expected else ILLEGAL

    return cas_swapped


@dataclass(frozen=True, slots=True)
class RegisterModel:
    """One value with read and write; `initial` is the value before any write."""

    initial: Value = None
    name: str = "register"

    def initial_state(self) -> State:
        return self.initial

    def partition_key(self, op: Operation) -> Hashable:
        return None

    def has_effect(self, op: Operation) -> bool:
        return op.f != "read"

    def transition(self, op: Operation) -> Transition:
        if op.f == "read":
            return _read(op.result)
        if op.f == "write":
            return _write(op.argument)
        raise _unsupported(self.name, op, "read, write")

    def violation(self, op: Operation) -> str | None:
        return None

    def describe_state(self, state: State) -> str:
        return show(state)


@dataclass(frozen=True, slots=True)
class CasRegisterModel(RegisterModel):
    """A register with compare-and-set: cas [expected new] swaps only on a match.

    An `ok` cas swapped; a refused one (Jepsen's `:fail :cas`) ran and found another
    value; a `fail` one never ran and is dropped before the search.
    """

    name: str = "cas-register"

    def transition(self, op: Operation) -> Transition:
        if op.f == "cas":
            return _cas(op)
        if op.f in ("read", "write"):
            return RegisterModel.transition(self, op)
        raise _unsupported(self.name, op, "read, write, cas")


def _kv_value_transition(op: Operation, absent: Value) -> Transition:
    """What `op` does to the value of its key (`absent` when the key has none)."""
    f = op.f
    if f in ("get", "read"):
        return _read(absent if op.result is None else op.result)
    if f in ("put", "write"):
        return _write(op.argument)
    if f == "delete":
        return _write(absent)
    if f == "cas":
        return _cas(op)
    if f == "append":
        suffix = op.argument
        if not isinstance(suffix, str):
            raise ValueError(f"append needs a string, got {show(suffix)}")

        def append(state: State) -> State | Illegal:
            # Only strings grow: appending to a non-string was not a legal outcome.
            if state is None:
                return suffix
            return state + suffix if isinstance(state, str) else ILLEGAL

        return append
    raise ValueError(f"model kv has no operation {f!r} (it knows get, put, append, cas, delete)")


@dataclass(frozen=True, slots=True)
class KvModel:
    """A map from keys to values; each key is an independent register.

    Operations: get (alias read), put (alias write), append (string concatenation),
    cas [expected new], delete. A key that was never written or was deleted holds
    `absent`: None (JSON null) by default, the empty string for histories in which
    every key starts as "" (the EDN key-value histories). With `per_key` the checker
    searches each key alone; without it the state is the whole map, which must give
    the same verdict more slowly.
    """

    absent: Value = None
    per_key: bool = True
    name: str = "kv"

    def initial_state(self) -> State:
        return self.absent if self.per_key else frozenset()

    def partition_key(self, op: Operation) -> Hashable:
        return op.key if self.per_key else None

    def has_effect(self, op: Operation) -> bool:
        return op.f not in ("get", "read")

    def transition(self, op: Operation) -> Transition:
        on_value = _kv_value_transition(op, self.absent)
        if self.per_key:
            return on_value
        return _on_map(op.key, on_value, self.absent)

    def violation(self, op: Operation) -> str | None:
        return None

    def describe_state(self, state: State) -> str:
        return show(state)


def _on_map(key: Value, on_value: Transition, absent: Value) -> Transition:
    # The whole map is a frozenset of (key, value) pairs holding only present keys,
    # so that equal maps are equal states.
    def on_map(state: State) -> State | Illegal:
        assert isinstance(state, frozenset)
        entries = dict(state)
        current = entries.get(key, absent)
        new = on_value(current)
        if new is ILLEGAL or new == current:
            return new if new is ILLEGAL else state
        if new == absent:
            del entries[key]
        else:
            entries[key] = new
        return frozenset(entries.items())

    return on_map


@dataclass(frozen=True, slots=True)
class BankModel:
    """Accounts with balances; transfers move money, reads see every balance.

    Operations: transfer with value {"from": a, "to": b, "amount": n} (or [a b n]),
    and read, whose result maps every account to its balance. A transfer that would
    take a balance below zero is refused by the bank, so an `ok` one at such a point
    is illegal. Every `ok` read must show balances that sum to the initial total, none
    below zero (checked on its own first, for a plain message), and must equal the
    state at its linearization point.
    """

    initial: Mapping[str, int]
    name: str = "bank"

    @property
    def accounts(self) -> tuple[str, ...]:
        return tuple(sorted(self.initial))

    @property
    def total(self) -> int:
        return sum(self.initial.values())

    def initial_state(self) -> State:
        return tuple(self.initial[account] for account in self.accounts)

    def partition_key(self, op: Operation) -> Hashable:
        return None

    def has_effect(self, op: Operation) -> bool:
        return op.f != "read"

    def transition(self, op: Operation) -> Transition:
        if op.f == "read":
            return _read(self._balances(op.result))
        if op.f == "transfer":
            return self._transfer(op)
        raise _unsupported(self.name, op, "transfer, read")

    def violation(self, op: Operation) -> str | None:
        if op.f != "read" or op.outcome is not Outcome.OK:
            return None
        balances = self._balances(op.result)
        for account, balance in zip(self.accounts, balances, strict=True):
            if balance < 0:
                return f"read shows account {account!r} at {balance}, below zero"
        if sum(balances) != self.total:
            return f"read shows balances summing to {sum(balances)}, expected {self.total}"
        return None

    def describe_state(self, state: State) -> str:
        assert isinstance(state, tuple)
        pairs = zip(self.accounts, state, strict=True)
        return "{" + ", ".join(f"{account!r} {balance}" for account, balance in pairs) + "}"

    def _balances(self, result: Value) -> tuple[int, ...]:
        if not isinstance(result, frozenset):
            raise ValueError(f"a bank read returns a map of balances, got {show(result)}")
        balances = dict(result)
        if set(balances) != set(self.accounts):
            raise ValueError(
                f"a bank read must show exactly the accounts {list(self.accounts)}, "
                f"got {sorted(map(str, balances))}"
            )
        if not all(isinstance(value, int) for value in balances.values()):
            raise ValueError("balances must be integers")
        return tuple(balances[account] for account in self.accounts)

    def _transfer(self, op: Operation) -> Transition:
        source, target, amount = _transfer_fields(op.argument, self.accounts)
        index_from = self.accounts.index(source)
        index_to = self.accounts.index(target)
        must_apply = op.outcome is Outcome.OK

        def transfer(state: State) -> State | Illegal:
            assert isinstance(state, tuple)
            if state[index_from] < amount:
                # The bank refuses to overdraw: an acknowledged transfer cannot have
                # run here, an unacknowledged one ran as a no-op.
                return ILLEGAL if must_apply else state
            balances = list(state)
            balances[index_from] -= amount
            balances[index_to] += amount
            return tuple(balances)

        return transfer


def _transfer_fields(argument: Value, accounts: tuple[str, ...]) -> tuple[str, str, int]:
    if isinstance(argument, frozenset):
        fields = {str(name).removeprefix(":"): value for name, value in argument}
        values = (fields.get("from"), fields.get("to"), fields.get("amount"))
    elif isinstance(argument, tuple) and len(argument) == 3:
        values = (argument[0], argument[1], argument[2])
    else:
        raise ValueError(f'transfer needs {{"from", "to", "amount"}}, got {show(argument)}')
    source, target, amount = values
    if source not in accounts or target not in accounts:
        raise ValueError(f"transfer between unknown accounts {show(argument)}")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
        raise ValueError(f"transfer amount must be a whole number >= 0, got {amount!r}")
    assert isinstance(source, str) and isinstance(target, str)
    return source, target, amount
