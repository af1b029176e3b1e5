"""A bank as a deterministic phalanx service (`phalanx.examples.bank:Bank`).

Theory of operation
-------------------
The bank holds named accounts with integer balances in minor units (cents, say), and two
lifetime counters: money deposited into the bank and money withdrawn from it. Transfers
move money between accounts and change neither counter, so at every moment

    sum of all balances == deposited - withdrawn,    and no balance is negative.

`apply` checks the whole command (shape, names, amount, funds, limits) before it changes
anything, so a rejected command leaves the state exactly as it was; a transfer changes
both accounts or neither. After every mutating command the invariant above is asserted
against the balances themselves: a failure there is a bug in this module, and crashing
the replica beats serving a ledger that lost money.

Amounts are ints because floats would make "the same state" depend on rounding; bools,
although Python ints, are rejected as the mistake they always are.

Bounds: ACCOUNTS_MAX accounts, names of at most ACCOUNT_NAME_BYTES_MAX bytes, amounts of
at most AMOUNT_MAX per command, and at most DEPOSITED_MAX deposited over the bank's
life. Since withdrawn <= deposited and every balance <= the total <= deposited, that
last bound keeps every number in the state within a signed 64-bit integer, which
msgpack (and so every digest and snapshot) can carry.
"""

from __future__ import annotations

from typing import Any

from phalanx.examples.commands import Rejected, check_fields
from phalanx.service import Service

#: Most accounts the bank holds; opening one more is rejected with "full".
ACCOUNTS_MAX = 10_000
#: Longest account name, in bytes of UTF-8.
ACCOUNT_NAME_BYTES_MAX = 64
#: Largest amount one deposit, withdrawal or transfer may move, in minor units.
AMOUNT_MAX = 10**15
#: Most money deposited over the bank's life; a deposit past it is "limit_exceeded".
DEPOSITED_MAX = 2**63 - 1

#: The fields each command must have, and may only have: a misspelt field is an error
#: rather than silently ignored.
_FIELDS: dict[str, frozenset[str]] = {
    "open": frozenset({"op", "account"}),
    "deposit": frozenset({"op", "account", "amount"}),
    "withdraw": frozenset({"op", "account", "amount"}),
    "transfer": frozenset({"op", "from", "to", "amount"}),
    "balance": frozenset({"op", "account"}),
    "balances": frozenset({"op"}),
    "total": frozenset({"op"}),
}
_MUTATING_OPS = frozenset({"open", "deposit", "withdraw", "transfer"})


class Bank(Service):
    """A bank of named accounts holding integer minor units. Commands and replies:

    {"op": "open", "account": a}             -> {"ok": True, "balance": 0}
    {"op": "deposit", "account": a, "amount": n}  -> {"ok": True, "balance": new}
    {"op": "withdraw", "account": a, "amount": n} -> {"ok": True, "balance": new}
    {"op": "transfer", "from": a, "to": b, "amount": n}
        -> {"ok": True, "from_balance": x, "to_balance": y}   (both or neither change)
    {"op": "balance", "account": a}          -> {"ok": True, "balance": n}
    {"op": "balances"}                       -> {"ok": True, "balances": {name: n, ...}}
    {"op": "total"}   -> {"ok": True, "total": t, "deposited": d, "withdrawn": w}
        where always t == d - w.

    Account names are non-empty strings of at most ACCOUNT_NAME_BYTES_MAX bytes (UTF-8).
    Amounts are ints from 1 to AMOUNT_MAX (floats, bools, zero and negatives are
    rejected). There is no overdraft.

    A rejected command gets {"ok": False, "error": code, "message": text} and changes
    nothing. Codes: "bad_command" (not a dict, or no "op"), "unknown_op",
    "bad_argument" (missing, extra or ill-typed field, bad name), "too_large" (name too
    long), "bad_amount", "account_exists", "no_such_account", "same_account" (transfer
    to itself), "insufficient_funds" (the reply also carries the "balance"), "full"
    (ACCOUNTS_MAX reached), "limit_exceeded" (DEPOSITED_MAX reached).
    """

    def __init__(self) -> None:
        self._balances: dict[str, int] = {}
        self._deposited = 0
        self._withdrawn = 0

    def apply(self, command: Any) -> dict[str, Any]:
        """Applies one command (see the class docstring) and returns its reply."""
        try:
            op = check_fields(command, _FIELDS, '{"op": "total"}')
            reply = self._run(op, command)
        except Rejected as rejected:
            return rejected.reply
        if op in _MUTATING_OPS:
            self._check_invariants()
        return reply

    def restore(self, snapshot: Any) -> None:
        self._balances = dict(snapshot["accounts"])
        self._deposited = int(snapshot["deposited"])
        self._withdrawn = int(snapshot["withdrawn"])
        assert sum(self._balances.values()) == self._deposited - self._withdrawn

    def state(self) -> dict[str, Any]:
        """Every balance (names sorted) and both lifetime counters."""
        return {
            "accounts": {name: self._balances[name] for name in sorted(self._balances)},
            "deposited": self._deposited,
            "withdrawn": self._withdrawn,
        }

    def _run(self, op: str, command: dict[str, Any]) -> dict[str, Any]:
        match op:
            case "open":
                return self._open(_check_name(command["account"], "account"))
            case "deposit":
                return self._deposit(command)
            case "withdraw":
                return self._withdraw(command)
            case "transfer":
                return self._transfer(command)
            case "balance":
                return {"ok": True, "balance": self._balance_of(command["account"], "account")}
            case "balances":
                return {"ok": True, "balances": self.state()["accounts"]}
            case "total":
                return {
                    "ok": True,
                    "total": sum(self._balances.values()),
                    "deposited": self._deposited,
                    "withdrawn": self._withdrawn,
                }
            case _:
                raise AssertionError(f"_FIELDS admits op {op!r} that _run cannot run")

    def _open(self, name: str) -> dict[str, Any]:
        if name in self._balances:
            raise Rejected("account_exists", f"account {name!r} is already open")
        if len(self._balances) >= ACCOUNTS_MAX:
            raise Rejected("full", f"the bank holds its maximum of {ACCOUNTS_MAX} accounts")
        self._balances[name] = 0
        return {"ok": True, "balance": 0}

    def _deposit(self, command: dict[str, Any]) -> dict[str, Any]:
        amount = _check_amount(command["amount"])
        name = command["account"]
        balance = self._balance_of(name, "account")
        if self._deposited + amount > DEPOSITED_MAX:
            raise Rejected(
                "limit_exceeded",
                f"the bank has taken {self._deposited} in deposits over its life; "
                f"at most {DEPOSITED_MAX} fit",
            )
        self._balances[name] = balance + amount
        self._deposited += amount
        return {"ok": True, "balance": balance + amount}

    def _withdraw(self, command: dict[str, Any]) -> dict[str, Any]:
        amount = _check_amount(command["amount"])
        name = command["account"]
        balance = self._balance_of(name, "account")
        _check_funds(name, balance, amount)
        self._balances[name] = balance - amount
        self._withdrawn += amount
        return {"ok": True, "balance": balance - amount}

    def _transfer(self, command: dict[str, Any]) -> dict[str, Any]:
        amount = _check_amount(command["amount"])
        source, target = command["from"], command["to"]
        source_balance = self._balance_of(source, "from")
        target_balance = self._balance_of(target, "to")
        if source == target:
            raise Rejected("same_account", f"cannot transfer from {source!r} to itself")
        _check_funds(source, source_balance, amount)
        # Every check is done: from here on both writes happen, which makes it atomic.
        self._balances[source] = source_balance - amount
        self._balances[target] = target_balance + amount
        return {
            "ok": True,
            "from_balance": source_balance - amount,
            "to_balance": target_balance + amount,
        }

    def _balance_of(self, name: Any, field: str) -> int:
        """The balance of an open account, checking the name first."""
        name = _check_name(name, field)
        if name not in self._balances:
            raise Rejected("no_such_account", f"{field}: no account named {name!r}")
        return self._balances[name]

    def _check_invariants(self) -> None:
        # Re-derived from the balances (O(accounts), bounded by ACCOUNTS_MAX) instead of a
        # running sum, so a handler that creates or loses money fails at the command that
        # did it rather than agreeing with its own bookkeeping.
        total = sum(self._balances.values())
        assert total == self._deposited - self._withdrawn, (
            f"bank invariant broken: balances sum to {total}, but deposited "
            f"{self._deposited} - withdrawn {self._withdrawn} = "
            f"{self._deposited - self._withdrawn}"
        )
        assert all(balance >= 0 for balance in self._balances.values()), (
            "bank invariant broken: a negative balance"
        )
        assert 0 <= self._withdrawn <= self._deposited <= DEPOSITED_MAX, (
            f"bank invariant broken: deposited {self._deposited}, withdrawn {self._withdrawn}"
        )


def _check_name(name: Any, field: str) -> str:
    if type(name) is not str:
        raise Rejected("bad_argument", f"{field} must be a str, got {type(name).__name__}")
    if not name:
        raise Rejected("bad_argument", f"{field} must not be empty")
    try:
        name_bytes = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise Rejected("bad_argument", f"{field} is not valid Unicode") from None
    if name_bytes > ACCOUNT_NAME_BYTES_MAX:
        raise Rejected(
            "too_large",
            f"{field} is {name_bytes} bytes of UTF-8; the maximum is {ACCOUNT_NAME_BYTES_MAX}",
        )
    return name


def _check_amount(amount: Any) -> int:
    # `type(...) is int` rather than isinstance: it turns away bools as well as floats.
    if type(amount) is not int:
        raise Rejected(
            "bad_amount",
            f"amount must be an int number of minor units, got {type(amount).__name__}",
        )
    if amount <= 0:
        raise Rejected("bad_amount", f"amount must be positive, got {amount}")
    if amount > AMOUNT_MAX:
        raise Rejected("bad_amount", f"amount must be at most {AMOUNT_MAX}, got {amount}")
    return amount


def _check_funds(name: str, balance: int, amount: int) -> None:
    if amount > balance:
        raise Rejected(
            "insufficient_funds",
            f"account {name!r} holds {balance}, less than {amount}",
            balance=balance,
        )
