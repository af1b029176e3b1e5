"""A bank account as a deterministic state machine, and a faulty twin of it.

Theory of operation
-------------------
The account is *definite*: at any moment it holds exactly one `AccountState` (a balance,
a count of applied transitions and its recent history), an immutable value.
It is *deterministic*: `transition(state, command)` is a pure function, so the next state
depends on nothing but the current state and the input. No clock, no randomness, no I/O.

Because of that, any number of copies fed the same inputs in the same order end in the
same state, and `state_digest` (a blake2b hash over a canonical encoding) lets copies
compare states cheaply. `FaultyAccount` breaks the rule on purpose: with a seeded
probability it skips a transition, the kind of silent bug a replicated system has to
catch. A rejected input (an overdraft, say) leaves the state exactly as it was, so only
applied inputs change the state; skipping one leaves a different balance, count and
history, and the digests differ from that step on.

Money is integer cents: floats would make "the same state" depend on rounding.
"""

from __future__ import annotations

import enum
import hashlib
import random
from dataclasses import dataclass
from typing import Protocol

import msgspec

#: Largest amount one deposit or withdrawal may move (one million, in cents).
AMOUNT_CENTS_MAX = 1_000_000_00
#: Largest balance an account may hold; a deposit past it is rejected, not clamped.
BALANCE_CENTS_MAX = 1_000_000_000_00
#: How many of the most recent inputs the state keeps in its history. The history is part
#: of the state (and of its digest), so it needs a bound; `applied_count` still covers the
#: whole past.
HISTORY_ENTRIES_MAX = 32
#: Length of the digest in bytes; 16 bytes makes an accidental collision negligible.
DIGEST_BYTES = 16
#: Prefix of the encoded state: a change of the encoding must change every digest.
_DIGEST_DOMAIN = b"phalanx.examples.account.v1"


class AccountError(ValueError):
    """An input the account cannot accept; the message says what to change."""


class InvalidAmountError(AccountError):
    """An amount is not a whole, positive number of cents within the limit."""


def _check_amount(kind: str, amount_cents: object) -> None:
    # bool is a subclass of int, but `Deposit(True)` is always a mistake.
    if not isinstance(amount_cents, int) or isinstance(amount_cents, bool):
        raise InvalidAmountError(
            f"{kind} amount must be a whole number of cents (int), got {amount_cents!r}"
        )
    if amount_cents <= 0:
        raise InvalidAmountError(f"{kind} amount must be positive, got {amount_cents} cents")
    if amount_cents > AMOUNT_CENTS_MAX:
        raise InvalidAmountError(
            f"{kind} amount must be at most {AMOUNT_CENTS_MAX} cents, got {amount_cents}"
        )


@dataclass(frozen=True, slots=True)
class Deposit:
    """Add `amount_cents` to the balance."""

    amount_cents: int

    def __post_init__(self) -> None:
        _check_amount("deposit", self.amount_cents)

    def describe(self) -> str:
        return f"deposit {format_cents(self.amount_cents)}"


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Take `amount_cents` from the balance, unless that would overdraw it."""

    amount_cents: int

    def __post_init__(self) -> None:
        _check_amount("withdraw", self.amount_cents)

    def describe(self) -> str:
        return f"withdraw {format_cents(self.amount_cents)}"


Command = Deposit | Withdraw


class Outcome(enum.Enum):
    """What an input did to the account."""

    APPLIED = "applied"
    #: A withdrawal larger than the balance: the balance is left alone.
    REJECTED_OVERDRAFT = "rejected: overdraft"
    #: A deposit that would push the balance past `BALANCE_CENTS_MAX`.
    REJECTED_BALANCE_LIMIT = "rejected: balance limit"
    #: Only `FaultyAccount` reports this: the planted fault, a transition that should have
    #: happened and did not. A real faulty machine would not know it skipped; the lesson
    #: uses it as ground truth.
    SKIPPED = "skipped (fault)"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One applied input, numbered from 1, with the balance after it."""

    sequence: int
    command: Command
    balance_after_cents: int


@dataclass(frozen=True, slots=True)
class AccountState:
    """The one state an account is in. Immutable: a transition makes a new one."""

    balance_cents: int = 0
    applied_count: int = 0
    history: tuple[HistoryEntry, ...] = ()


def transition(state: AccountState, command: Command) -> tuple[AccountState, Outcome]:
    """The deterministic transition function: the next state and what happened.

    A rejected input returns the very same state: the rules forbid the change, so there
    is no transition (the caller learns why from the outcome).
    """
    assert 0 <= state.balance_cents <= BALANCE_CENTS_MAX, state
    if isinstance(command, Deposit):
        new_balance_cents = state.balance_cents + command.amount_cents
        if new_balance_cents > BALANCE_CENTS_MAX:
            return state, Outcome.REJECTED_BALANCE_LIMIT
    else:
        new_balance_cents = state.balance_cents - command.amount_cents
        if new_balance_cents < 0:
            return state, Outcome.REJECTED_OVERDRAFT
    sequence = state.applied_count + 1
    entry = HistoryEntry(sequence, command, new_balance_cents)
    history = (*state.history, entry)[-HISTORY_ENTRIES_MAX:]
    return AccountState(new_balance_cents, sequence, history), Outcome.APPLIED


def _canonical_encoding(state: AccountState) -> bytes:
    # Plain lists of ints and strings, in a fixed order: msgpack encodes them the same way
    # on every machine and every run, which a dataclass repr or pickle does not promise.
    history = [
        [
            entry.sequence,
            type(entry.command).__name__,
            entry.command.amount_cents,
            entry.balance_after_cents,
        ]
        for entry in state.history
    ]
    return msgspec.msgpack.encode([state.balance_cents, state.applied_count, history])


def state_digest(state: AccountState) -> str:
    """A stable hash of the whole state, in hex: equal states, equal digests."""
    hasher = hashlib.blake2b(digest_size=DIGEST_BYTES, person=b"phalanx-account")
    hasher.update(_DIGEST_DOMAIN)
    hasher.update(_canonical_encoding(state))
    return hasher.hexdigest()


def format_cents(amount_cents: int) -> str:
    """`12345` -> `"123.45"`."""
    sign = "-" if amount_cents < 0 else ""
    whole, cents = divmod(abs(amount_cents), 100)
    return f"{sign}{whole}.{cents:02d}"


class Account(Protocol):
    """What a replica group needs from an account."""

    @property
    def state(self) -> AccountState: ...

    def apply(self, command: Command) -> Outcome: ...


class DeterministicAccount:
    """An account that follows `transition` exactly."""

    def __init__(self, initial_state: AccountState | None = None) -> None:
        self._state = initial_state if initial_state is not None else AccountState()

    @property
    def state(self) -> AccountState:
        return self._state

    def apply(self, command: Command) -> Outcome:
        self._state, outcome = transition(self._state, command)
        return outcome

    def digest(self) -> str:
        return state_digest(self._state)


class FaultyAccount(DeterministicAccount):
    """An account that skips each input with probability `skip_probability`.

    The randomness comes from the injected `rng`, so the same seed plants the same faults:
    a faulty run can be replayed and explained.
    """

    def __init__(
        self,
        rng: random.Random,
        skip_probability: float,
        initial_state: AccountState | None = None,
    ) -> None:
        if not 0.0 <= skip_probability <= 1.0:
            raise AccountError(
                f"skip probability must be between 0 and 1, got {skip_probability!r}"
            )
        super().__init__(initial_state)
        self._rng = rng
        self._skip_probability = skip_probability

    def apply(self, command: Command) -> Outcome:
        # Draw on every input, skipped or not, so that the fault schedule depends on the
        # seed and the input count only.
        if self._rng.random() < self._skip_probability:
            return self._skip(command)
        return super().apply(command)

    def _skip(self, command: Command) -> Outcome:
        # A rejected input is no transition, so there is nothing to skip: report it as
        # rejected, like a healthy account. SKIPPED therefore always marks a real fault.
        _, outcome = transition(self.state, command)
        return Outcome.SKIPPED if outcome is Outcome.APPLIED else outcome
