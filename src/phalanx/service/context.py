"""What a service's callbacks may see and do (`ServiceContext`).

Inside the deterministic callbacks (`on_session_open`, `on_session_close`,
`on_message`, `on_timer`) the context offers the cluster time of the entry being applied
(the leader's clock, never the local one), its log index, the open sessions, timers and
closing a session. Every replica calls these callbacks at the same log positions with
the same context, so whatever a callback does through the context happens identically
everywhere, and again on a replay.

The other callbacks (`on_start`, `on_role_change`, `on_terminate`) run on one node at a
moment of its own choosing; scheduling a timer or closing a session there would make
replicas differ, so the context refuses with `NondeterministicCallError`.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from phalanx.core.errors import PhalanxError
from phalanx.limits import (
    MAX_TIMERS,
)

if TYPE_CHECKING:
    from phalanx.service.container import ServiceContainer


class NondeterministicCallError(PhalanxError):
    """A context method that changes replicated state was called outside a
    deterministic callback (from on_start, on_role_change or on_terminate)."""


class TimerLimitError(PhalanxError):
    """The service tried to schedule more than MAX_TIMERS timers."""


class Timers:
    """Timer id -> deadline, fired in (deadline, id) order; replaced or cancelled lazily
    in a heap so firing stays O(log n) however many timers wait."""

    def __init__(self) -> None:
        self.deadlines: dict[int, int] = {}
        self._heap: list[tuple[int, int]] = []

    def schedule(self, timer_id: int, deadline_ms: int) -> None:
        if timer_id not in self.deadlines and len(self.deadlines) >= MAX_TIMERS:
            raise TimerLimitError(f"more than {MAX_TIMERS} timers scheduled")
        self.deadlines[timer_id] = deadline_ms
        heapq.heappush(self._heap, (deadline_ms, timer_id))

    def cancel(self, timer_id: int) -> bool:
        return self.deadlines.pop(timer_id, None) is not None

    def next_deadline(self) -> int | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ms: int) -> int | None:
        """The next timer due at `now_ms`, removed; None when none is due."""
        self._drop_stale()
        if not self._heap or self._heap[0][0] > now_ms:
            return None
        _, timer_id = heapq.heappop(self._heap)
        del self.deadlines[timer_id]
        return timer_id

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap and self.deadlines.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)

    def restore(self, deadlines: dict[int, int]) -> None:
        self.deadlines = dict(deadlines)
        self._heap = sorted((deadline, timer_id) for timer_id, deadline in deadlines.items())


class ServiceContext:
    def __init__(self, container: ServiceContainer) -> None:
        self._container = container
        self._deterministic = False

    @property
    def time_ms(self) -> int:
        """Cluster time: the leader's clock as stamped into the log, never decreasing."""
        return self._container.cluster_time_ms

    @property
    def log_index(self) -> int:
        return int(self._container.applied_index)

    @property
    def sessions(self) -> tuple[int, ...]:
        return tuple(self._container.sessions)

    def schedule_timer(self, timer_id: int, deadline_ms: int) -> None:
        """Fires `on_timer(ctx, timer_id)` at the first entry whose cluster time reaches
        `deadline_ms` (the leader appends a clock entry when nothing else would).
        Scheduling an id again moves its deadline."""
        self._require("schedule_timer")
        self._container.timers.schedule(timer_id, deadline_ms)

    def cancel_timer(self, timer_id: int) -> bool:
        self._require("cancel_timer")
        return self._container.timers.cancel(timer_id)

    def send(self, session_id: int, message: Any) -> bool:
        """Pushes `message` (plain data) to the client of `session_id`; False when there
        is no such session. Every replica numbers and keeps it alike, so a client that
        reconnects to any node after a failover still receives it, once, in order."""
        self._require("send")
        return self._container.send(session_id, message)

    def close_session(self, session_id: int) -> bool:
        self._require("close_session")
        return self._container.close_session(session_id, "service_closed")

    def _require(self, name: str) -> None:
        if not self._deterministic:
            raise NondeterministicCallError(
                f"ctx.{name}() is only allowed in on_session_open, on_session_close, "
                "on_message and on_timer: elsewhere replicas would not agree on it"
            )
