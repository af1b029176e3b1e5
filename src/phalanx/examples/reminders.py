"""Reminders: the smallest service that uses cluster time and timers.

    {"op": "remind", "id": n, "after_ms": ms} -> {"ok": True, "due_ms": t}
    {"op": "cancel", "id": n}                 -> {"ok": bool}
    {"op": "fired"}                           -> {"fired": [[id, log_index, time_ms], ...]}

A reminder fires through the log: at the first entry whose cluster time reaches its
deadline (the leader appends a clock entry when no other entry would), so every replica
records it at the same log index and cluster time. It is also pushed to the session
that set it: `{"fired": id, "log_index": i, "time_ms": t}` (see `AsyncClient.messages`).
"""

from __future__ import annotations

from typing import Any

from phalanx.examples.commands import Rejected, check_fields
from phalanx.service import Service
from phalanx.service.context import ServiceContext

_FIELDS = {
    "remind": frozenset({"op", "id", "after_ms"}),
    "cancel": frozenset({"op", "id"}),
    "fired": frozenset({"op"}),
}
#: Fired reminders remembered (the oldest are forgotten first).
FIRED_MAX = 1000
AFTER_MS_MAX = 7 * 24 * 3600 * 1000


class Reminders(Service):
    def __init__(self) -> None:
        self.fired: list[list[int]] = []
        #: timer id -> the session that set it (who is told when it fires).
        self.owners: dict[int, int] = {}

    def on_message(self, ctx: ServiceContext, session_id: int, message: Any) -> Any:
        try:
            op = check_fields(message, _FIELDS, '{"op": "fired"}')
            if op == "fired":
                return {"fired": self.fired}
            timer_id = message["id"]
            if type(timer_id) is not int or timer_id < 0:
                raise Rejected("bad_argument", "id must be a non-negative int")
            if op == "cancel":
                self.owners.pop(timer_id, None)
                return {"ok": ctx.cancel_timer(timer_id)}
            after_ms = message["after_ms"]
            if type(after_ms) is not int or not 0 <= after_ms <= AFTER_MS_MAX:
                raise Rejected("bad_argument", f"after_ms must be an int in 0..{AFTER_MS_MAX}")
            ctx.schedule_timer(timer_id, ctx.time_ms + after_ms)
            self.owners[timer_id] = session_id
            return {"ok": True, "due_ms": ctx.time_ms + after_ms}
        except Rejected as rejected:
            return rejected.reply

    def on_timer(self, ctx: ServiceContext, timer_id: int) -> None:
        self.fired.append([timer_id, ctx.log_index, ctx.time_ms])
        del self.fired[:-FIRED_MAX]
        owner = self.owners.pop(timer_id, None)
        if owner is not None:
            ctx.send(owner, {"fired": timer_id, "log_index": ctx.log_index, "time_ms": ctx.time_ms})

    def apply(self, command: Any) -> Any:
        raise AssertionError("Reminders is driven through on_message")

    def state(self) -> Any:
        return {"fired": self.fired, "owners": sorted(self.owners.items())}

    def restore(self, snapshot: Any) -> None:
        self.fired = [list(item) for item in snapshot["fired"]]
        self.owners = {timer_id: owner for timer_id, owner in snapshot["owners"]}
