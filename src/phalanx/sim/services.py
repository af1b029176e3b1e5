"""The services the simulated replicas run: the shipped examples, instrumented.

Each simulated client command carries an operation id (`"id"`) beside the service's
own fields. The wrappers strip it, run the real service (`KeyValue`, `Bank`) and keep a
count per id in their replicated state: a command the cluster applied twice (a retry
that the session table should have answered from its reply cache) shows up in every
replica's state, where the swarm's Exactly-Once check reads it.

`SimKV` also exercises timers the way the container promises them: `{"op": "timers"}`
schedules several timers with one deadline, and `on_timer` records the order they fire
in. Every replica, and every replica restored from a snapshot, must fire them in the
same order, so that order is part of the state the replicas' digests compare.
"""

from __future__ import annotations

from typing import Any

from phalanx.examples.bank import Bank
from phalanx.examples.kv import KeyValue
from phalanx.service.base import Service
from phalanx.service.context import ServiceContext

#: Fired timers remembered (oldest forgotten first), for the digests.
TIMERS_FIRED_KEPT = 64
#: Accounts of the simulated bank and their opening balances.
BANK_ACCOUNTS = {"a": 100, "b": 100, "c": 100, "d": 100}


class _OnceCounter:
    """Replicated bookkeeping: how often each operation id was applied."""

    def __init__(self) -> None:
        self.applied: dict[str, int] = {}
        #: Operation ids applied more than once, in the order found.
        self.twice: list[str] = []

    def count(self, command: Any) -> Any:
        if not isinstance(command, dict) or "id" not in command:
            return command
        command = dict(command)
        op_id = str(command.pop("id"))
        seen = self.applied.get(op_id, 0) + 1
        self.applied[op_id] = seen
        if seen == 2:
            self.twice.append(op_id)
        return command

    def state(self) -> dict[str, Any]:
        return {"applied": sorted(self.applied.items()), "twice": list(self.twice)}

    def restore(self, state: dict[str, Any]) -> None:
        self.applied = {op_id: count for op_id, count in state["applied"]}
        self.twice = list(state["twice"])


class SimKV(Service):
    """`KeyValue`, with operation ids counted and same-deadline timers recorded."""

    def __init__(self) -> None:
        self.kv = KeyValue()
        self.once = _OnceCounter()
        self.fired: list[int] = []
        self.next_timer = 1

    def on_message(self, ctx: ServiceContext, session_id: int, message: Any) -> Any:
        message = self.once.count(message)
        if isinstance(message, dict) and message.get("op") == "timers":
            count, delay_ms = int(message["count"]), int(message["delay_ms"])
            deadline = ctx.time_ms + delay_ms
            first = self.next_timer
            # Scheduled in descending id order: the firing order must not depend on it.
            for timer_id in reversed(range(first, first + count)):
                ctx.schedule_timer(timer_id, deadline)
            self.next_timer += count
            return {"ok": True, "first": first}
        return self.kv.apply(message)

    def on_timer(self, ctx: ServiceContext, timer_id: int) -> None:
        self.fired.append(timer_id)
        del self.fired[:-TIMERS_FIRED_KEPT]

    def apply(self, command: Any) -> Any:
        return self.kv.apply(self.once.count(command))

    def state(self) -> dict[str, Any]:
        return {
            "kv": self.kv.state(),
            "once": self.once.state(),
            "fired": list(self.fired),
            "next_timer": self.next_timer,
        }

    def restore(self, snapshot: Any) -> None:
        self.kv.restore(snapshot["kv"])
        self.once.restore(snapshot["once"])
        self.fired = list(snapshot["fired"])
        self.next_timer = int(snapshot["next_timer"])


class SimBank(Service):
    """`Bank` with `BANK_ACCOUNTS` open from the start, operation ids counted."""

    def __init__(self) -> None:
        self.bank = Bank()
        for account, balance in sorted(BANK_ACCOUNTS.items()):
            self.bank.apply({"op": "open", "account": account})
            self.bank.apply({"op": "deposit", "account": account, "amount": balance})
        self.once = _OnceCounter()

    def apply(self, command: Any) -> Any:
        return self.bank.apply(self.once.count(command))

    def total(self) -> int:
        return sum(self.bank.state()["accounts"].values())

    def state(self) -> dict[str, Any]:
        return {"bank": self.bank.state(), "once": self.once.state()}

    def restore(self, snapshot: Any) -> None:
        self.bank.restore(snapshot["bank"])
        self.once.restore(snapshot["once"])
