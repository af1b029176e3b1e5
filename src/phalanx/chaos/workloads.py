"""What the clients of a fault run do, and how their answers are judged.

Theory of operation
-------------------
A workload generates operations, turns each into a command for a phalanx service,
interprets the reply as a history completion, and knows how to judge the finished
history. Three workloads, after Jepsen's:

- `lin-kv` (`phalanx.examples.kv:KeyValue`): `get`, `put` and `cas` of the small
  integers 0..4 on a few independent keys, as Jepsen's linearizable register test.
  Small values keep the checker's search narrow (timed-out writes of equal values
  are interchangeable). A cas that found another value is recorded as `fail`: it
  changed nothing. Judged by the checker's kv model, key by key.
- `bank` (`phalanx.examples.bank:Bank`): transfers of 1..`TRANSFER_MAX` between a
  few accounts opened (outside the history) with `OPENING_BALANCE` each, and reads
  of every balance. A transfer the bank refused (insufficient funds) is `fail`.
  Judged by the checker's bank model: every read sums to the total, no balance is
  negative, and the reads and transfers linearize.
- `set` (`phalanx.examples.kv:KeyValue`): adds of unique integers, each appended as
  `"n "` to one of a few keys, and after healing one final read of every key.
  Judged as Jepsen's set checker does: every acknowledged add must be in the final
  read (else *lost*), every element read must have been attempted and not have
  definitely failed (else *unexpected*), and none may appear twice (a command
  applied twice). Adds still unknown at the end may be present or not.

Every workload ends, after the cluster is healed, with final reads through the log
(`final_reads`), recorded in the history like any other operation: for lin-kv and
bank they are what makes "no acknowledged write lost" part of the linearizability
check, since a lost write leaves a final value no order of the history explains.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from phalanx.chaos.recorder import HistoryEvent
from phalanx.check import BankModel, KvModel, Model

KV_SERVICE = "phalanx.examples.kv:KeyValue"
BANK_SERVICE = "phalanx.examples.bank:Bank"
KEYS = ("k0", "k1", "k2", "k3")
VALUES_MAX = 4
ACCOUNTS = ("a0", "a1", "a2", "a3", "a4")
OPENING_BALANCE = 100
TRANSFER_MAX = 20
SET_KEYS = ("set-0", "set-1", "set-2", "set-3")
#: Most elements a set run adds: each costs at most 8 bytes of a kv value
#: (64 KiB per key), so four keys hold them with room to spare.
SET_ELEMENTS_MAX = 20_000


@dataclass(frozen=True, slots=True)
class Op:
    """One operation: its history fields and the command that performs it."""

    f: str
    key: str | None
    value: Any
    command: dict[str, Any]

    @property
    def is_read(self) -> bool:
        return self.f in ("get", "read")


class Workload(Protocol):
    name: str
    service: str
    #: How long a client waits for an answer before the outcome counts as unknown.
    op_timeout_s: float

    def setup_commands(self) -> list[dict[str, Any]]:
        """Commands run once before the history starts (not recorded)."""
        ...

    def next_op(self, rng: random.Random) -> Op | None:
        """The next operation, or None when the workload has nothing more to do."""
        ...

    def completion(self, op: Op, reply: Any) -> tuple[str, Any]:
        """(ok | fail, value) for a service reply."""
        ...

    def final_reads(self) -> list[Op]: ...

    def model(self) -> Model | None:
        """The checker's model, or None when the workload judges itself."""
        ...

    def judge(self, events: Sequence[HistoryEvent]) -> dict[str, Any]:
        """Workload-specific findings (the set's lost elements); empty when none."""
        ...


class LinKv:
    name = "lin-kv"
    service = KV_SERVICE
    op_timeout_s = 2.0

    def setup_commands(self) -> list[dict[str, Any]]:
        return []

    def next_op(self, rng: random.Random) -> Op | None:
        key = rng.choice(KEYS)
        roll = rng.random()
        if roll < 0.5:
            return _get(key)
        if roll < 0.75:
            value = rng.randint(0, VALUES_MAX)
            return Op("put", key, value, {"op": "put", "key": key, "value": value})
        expected, new = rng.randint(0, VALUES_MAX), rng.randint(0, VALUES_MAX)
        command = {"op": "cas", "key": key, "expected": expected, "new": new}
        return Op("cas", key, [expected, new], command)

    def completion(self, op: Op, reply: Any) -> tuple[str, Any]:
        if not isinstance(reply, dict) or "error" in reply:
            return "fail", None  # the store changed nothing
        if op.f == "get":
            return "ok", reply.get("value")
        if op.f == "cas":
            return ("ok", op.value) if reply.get("ok") else ("fail", None)
        return "ok", op.value

    def final_reads(self) -> list[Op]:
        return [_get(key) for key in KEYS]

    def model(self) -> Model | None:
        return KvModel()

    def judge(self, events: Sequence[HistoryEvent]) -> dict[str, Any]:
        return {}


def _get(key: str) -> Op:
    return Op("get", key, None, {"op": "get", "key": key})


class Bank:
    name = "bank"
    service = BANK_SERVICE
    # Longer than the others: each transfer with an unknown outcome may or may not
    # have applied, and the search must try both around every later read, so a
    # history with many of them can exhaust the checker's budget (verdict unknown).
    # Waiting out a failover instead keeps them rare.
    op_timeout_s = 5.0

    def setup_commands(self) -> list[dict[str, Any]]:
        commands: list[dict[str, Any]] = []
        for account in ACCOUNTS:
            commands.append({"op": "open", "account": account})
            commands.append({"op": "deposit", "account": account, "amount": OPENING_BALANCE})
        return commands

    def next_op(self, rng: random.Random) -> Op | None:
        if rng.random() < 0.4:
            return _balances()
        source, target = rng.sample(ACCOUNTS, 2)
        amount = rng.randint(1, TRANSFER_MAX)
        value = {"from": source, "to": target, "amount": amount}
        return Op("transfer", None, value, {"op": "transfer", **value})

    def completion(self, op: Op, reply: Any) -> tuple[str, Any]:
        if not isinstance(reply, dict) or not reply.get("ok"):
            return "fail", None  # refused (insufficient funds): nothing changed
        if op.f == "read":
            return "ok", reply.get("balances")
        return "ok", op.value

    def final_reads(self) -> list[Op]:
        return [_balances()]

    def model(self) -> Model | None:
        return BankModel(dict.fromkeys(ACCOUNTS, OPENING_BALANCE))

    def judge(self, events: Sequence[HistoryEvent]) -> dict[str, Any]:
        return {}


def _balances() -> Op:
    return Op("read", None, None, {"op": "balances"})


class SetWorkload:
    name = "set"
    service = KV_SERVICE
    op_timeout_s = 2.0

    def __init__(self) -> None:
        self._next = 0

    def setup_commands(self) -> list[dict[str, Any]]:
        return []

    def next_op(self, rng: random.Random) -> Op | None:
        if self._next >= SET_ELEMENTS_MAX:
            return None
        element, self._next = self._next, self._next + 1
        key = SET_KEYS[element % len(SET_KEYS)]
        command = {"op": "append", "key": key, "value": f"{element} "}
        return Op("add", None, element, command)

    def completion(self, op: Op, reply: Any) -> tuple[str, Any]:
        if not isinstance(reply, dict) or "error" in reply:
            return "fail", None
        if op.f == "read":
            return "ok", reply.get("value")
        return ("ok", op.value) if reply.get("ok") else ("fail", None)

    def final_reads(self) -> list[Op]:
        return [Op("read", key, None, {"op": "get", "key": key}) for key in SET_KEYS]

    def model(self) -> Model | None:
        return None

    def judge(self, events: Sequence[HistoryEvent]) -> dict[str, Any]:
        return judge_set(events)


def judge_set(events: Sequence[HistoryEvent]) -> dict[str, Any]:
    """Jepsen's set checker over the adds and the final reads of every key."""
    invoked: dict[int | str, int] = {}
    acknowledged: set[int] = set()
    failed: set[int] = set()
    attempted: set[int] = set()
    read: list[int] = []
    reads_ok = 0
    for event in events:
        if event.f == "add":
            if event.type == "invoke":
                invoked[event.process] = int(event.value)
                attempted.add(int(event.value))
            elif event.type == "ok":
                acknowledged.add(invoked[event.process])
            elif event.type == "fail":
                failed.add(invoked[event.process])
        elif event.f == "read" and event.type == "ok":
            reads_ok += 1
            read.extend(int(item) for item in str(event.value or "").split())
    present = set(read)
    duplicated = sorted(item for item, count in Counter(read).items() if count > 1)
    return {
        "final_reads_ok": reads_ok == len(SET_KEYS),
        "attempted": len(attempted),
        "acknowledged": len(acknowledged),
        "present": len(present),
        "lost": sorted(acknowledged - present),
        "unexpected": sorted((present - attempted) | (present & failed)),
        "duplicated": duplicated,
        "recovered": len(present - acknowledged - failed),
    }


WORKLOADS = ("bank", "lin-kv", "set")


def make_workload(name: str) -> Workload:
    if name == "lin-kv":
        return LinKv()
    if name == "bank":
        return Bank()
    if name == "set":
        return SetWorkload()
    raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")
