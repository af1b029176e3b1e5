"""Service callbacks, cluster time and timers: every replica, and every replay, calls
them at the same log positions."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from phalanx.core.types import Entry, EntryKind, Index, Term
from phalanx.service import Service
from phalanx.service.container import ContainerLimits, ServiceContainer
from phalanx.service.context import NondeterministicCallError, ServiceContext
from phalanx.service.envelope import (
    Clock,
    CloseSession,
    Command,
    Envelope,
    OpenSession,
    encode_envelope,
)


class Reminders(Service):
    """Records every callback with the log index and cluster time it saw."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, int, Any]] = []

    def on_session_open(self, ctx: ServiceContext, session_id: int) -> None:
        self.events.append(("open", ctx.log_index, ctx.time_ms, session_id))

    def on_session_close(self, ctx: ServiceContext, session_id: int, reason: str) -> None:
        self.events.append(("close", ctx.log_index, ctx.time_ms, reason))

    def on_message(self, ctx: ServiceContext, session_id: int, message: Any) -> Any:
        if message["op"] == "remind":
            ctx.schedule_timer(message["id"], ctx.time_ms + message["after_ms"])
        elif message["op"] == "cancel":
            return {"cancelled": ctx.cancel_timer(message["id"])}
        return {"ok": True}

    def on_timer(self, ctx: ServiceContext, timer_id: int) -> None:
        self.events.append(("timer", ctx.log_index, ctx.time_ms, timer_id))

    def apply(self, command: Any) -> Any:
        return None

    def state(self) -> Any:
        return self.events

    def restore(self, snapshot: Any) -> None:
        self.events = [tuple(event) for event in snapshot]


def entries(envelopes: list[Envelope]) -> list[Entry]:
    return [
        Entry(Term(1), Index(i + 1), EntryKind.COMMAND, encode_envelope(e))
        for i, e in enumerate(envelopes)
    ]


def command(time_ms: int, seq: int, message: Any) -> Command:
    return Command(time_ms, 1, seq, seq, msgspec.msgpack.encode(message))


LOG = entries(
    [
        OpenSession(1_000),
        command(1_100, 1, {"op": "remind", "id": 7, "after_ms": 500}),
        command(1_200, 2, {"op": "remind", "id": 3, "after_ms": 300}),
        command(1_300, 3, {"op": "remind", "id": 9, "after_ms": 5_000}),
        command(1_400, 4, {"op": "cancel", "id": 9}),
        Clock(1_550),  # timer 3 (due 1_500) fires here
        command(1_650, 5, {"op": "noop"}),  # timer 7 (due 1_600) fires here
        CloseSession(1_700, 1),
    ]
)


def run(log: list[Entry], limits: ContainerLimits | None = None) -> ServiceContainer:
    container = ServiceContainer(Reminders(), limits)
    for entry in log:
        container.apply(entry)
    return container


def test_timers_fire_in_order_at_the_entry_whose_time_reaches_them() -> None:
    events = run(LOG).service.state()
    assert events == [
        ("open", 1, 1_000, 1),
        ("timer", 6, 1_550, 3),
        ("timer", 7, 1_650, 7),
        ("close", 8, 1_700, "client_closed"),
    ]


def test_every_replica_and_every_replay_fires_at_the_same_log_index() -> None:
    first, second = run(LOG), run(LOG)
    assert first.service.state() == second.service.state()
    assert first.state_digest() == second.state_digest()


def test_timers_survive_a_snapshot_and_fire_identically_after_it() -> None:
    whole = run(LOG)
    partial = run(LOG[:4])
    restored = ServiceContainer(Reminders())
    restored.restore(partial.snapshot_bytes())
    for entry in LOG[4:]:
        restored.apply(entry)
    assert restored.service.state() == whole.service.state()
    assert restored.next_timer_deadline() is None


def test_a_session_expires_at_the_same_log_index_everywhere() -> None:
    log = entries([OpenSession(0), Clock(400), Clock(1_001)])
    for _ in range(2):
        events = run(log, ContainerLimits(session_timeout_ms=1_000)).service.state()
        assert events[-1] == ("close", 3, 1_001, "timed_out")


def test_replicated_changes_are_refused_outside_deterministic_callbacks() -> None:
    container = ServiceContainer(Reminders())
    context = container.context
    with pytest.raises(NondeterministicCallError, match="schedule_timer"):
        context.schedule_timer(1, 10)
    with pytest.raises(NondeterministicCallError, match="close_session"):
        context.close_session(1)

    class SchedulesAtStart(Reminders):
        def on_start(self, ctx: ServiceContext) -> None:
            ctx.schedule_timer(1, 0)

    starting = ServiceContainer(SchedulesAtStart())
    with pytest.raises(NondeterministicCallError):
        starting.local_callback(starting.service.on_start)


def test_a_failing_timer_callback_does_not_stop_the_log() -> None:
    class Broken(Reminders):
        def on_timer(self, ctx: ServiceContext, timer_id: int) -> None:
            raise RuntimeError("boom")

    container = ServiceContainer(Broken())
    for entry in LOG:
        container.apply(entry)
    assert container.applied_index == len(LOG)
    assert container.callback_errors == 2


class Pusher(Reminders):
    def on_timer(self, ctx: ServiceContext, timer_id: int) -> None:
        super().on_timer(ctx, timer_id)
        assert ctx.send(1, {"fired": timer_id})
        assert not ctx.send(999, "nobody")


def test_pushed_messages_are_numbered_kept_and_survive_snapshots() -> None:
    container = ServiceContainer(Pusher(), ContainerLimits(max_egress_per_session=1))
    for entry in LOG[:7]:
        container.apply(entry)
    assert [(p.seq, msgspec.msgpack.decode(p.payload)) for p in container.new_egress] == [
        (1, {"fired": 3}),
        (2, {"fired": 7}),
    ]
    kept, gap = container.egress_after(1, 0)
    assert [p.seq for p in kept] == [2] and gap  # only one kept: seq 1 was forgotten
    assert container.egress_after(1, 1) == (kept, False)
    restored = ServiceContainer(Pusher())
    restored.restore(container.snapshot_bytes())
    assert restored.egress_after(1, 1) == (kept, False)
    with pytest.raises(NondeterministicCallError, match="send"):
        container.context.send(1, "from outside a callback")
