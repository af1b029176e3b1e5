"""Replay equivalence: a container rebuilt from ANY snapshot plus the log after it
reaches the same outcomes and digests as the one that applied the whole log live.

The bug this guards against (issue 11, item 1): the reply cache forgot acknowledged
replies "from the front of the dict" (apply order) while snapshots saved them sorted,
so a restored replica and a live one disagreed on whether a later command fit in the
cache: two states from one log.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from phalanx.core.types import Entry, EntryKind, Index, Term
from phalanx.examples.kv import KeyValue
from phalanx.service.container import (
    ApplyResult,
    ApplyStatus,
    ContainerLimits,
    ServiceContainer,
)
from phalanx.service.envelope import Clock, Command, KeepAlive, OpenSession, encode_envelope

encode = msgspec.msgpack.encode


def entries_of(envelopes: list[Any]) -> list[Entry]:
    return [
        Entry(Term(1), Index(i + 1), EntryKind.COMMAND, encode_envelope(envelope))
        for i, envelope in enumerate(envelopes)
    ]


def outcome(result: ApplyResult | None) -> Any:
    if result is None:
        return None
    return (result.status, result.reply, result.session_id, result.seq, result.duplicate)


def digests(container: ServiceContainer) -> tuple[str, str, str, int]:
    return (
        container.log_digest(),
        container.state_digest(),
        container.outcome_digest(),
        len(container.sessions),
    )


def test_reply_cached_out_of_order_is_forgotten_the_same_live_and_restored() -> None:
    """The issue's reproduction: replies cached in the order 2, 1, 3 with room for 3;
    the client then acknowledges 1 and sends 4."""
    limits = ContainerLimits(max_replies_per_session=3)
    put = encode({"op": "put", "key": "k", "value": 1})
    envelopes: list[Any] = [
        OpenSession(0),
        Command(0, 1, 2, 1, put),
        Command(0, 1, 1, 1, put),
        Command(0, 1, 3, 1, put),
        Command(0, 1, 4, 2, encode({"op": "put", "key": "k", "value": 4})),
    ]
    log = entries_of(envelopes)
    live = ServiceContainer(KeyValue(), limits)
    live_results = [live.apply(entry) for entry in log]
    assert live_results[-1] is not None
    assert live_results[-1].status is ApplyStatus.OK  # reply 1 was forgotten: room for 4

    before_last = ServiceContainer(KeyValue(), limits)
    for entry in log[:-1]:
        before_last.apply(entry)
    restored = ServiceContainer(KeyValue(), limits)
    restored.restore(before_last.snapshot_bytes())
    assert outcome(restored.apply(log[-1])) == outcome(live_results[-1])
    assert digests(restored) == digests(live)


def random_history(rng: random.Random, length: int) -> list[Any]:
    """Sessions with commands retried out of order, acknowledgements that jump, time
    that moves and stalls (so sessions expire), keepalives and clock entries."""
    envelopes: list[Any] = []
    sessions: list[int] = []
    next_seq: dict[int, int] = {}
    time_ms = 0
    for _ in range(length):
        index = len(envelopes) + 1
        if rng.random() < 0.3:
            time_ms += rng.choice((0, 0, 5, 50, 400))
        roll = rng.random()
        if not sessions or roll < 0.04:
            envelopes.append(OpenSession(time_ms))
            sessions.append(index)
            next_seq[index] = 1
        elif roll < 0.07:
            envelopes.append(KeepAlive(time_ms, rng.choice(sessions)))
        elif roll < 0.09:
            envelopes.append(Clock(time_ms))
        elif roll < 0.1:  # a session this log never opened (or long forgotten)
            envelopes.append(Command(time_ms, index + 7, 1, 1, encode({"op": "get", "key": "k"})))
        else:
            session = rng.choice(sessions)
            top = next_seq[session]
            if rng.random() < 0.35 and top > 1:
                seq = rng.randint(max(1, top - 12), top - 1)  # a late retry
            else:
                seq = top
                next_seq[session] = top + 1
            first_incomplete = rng.randint(max(1, seq - 10), seq)
            key = f"k{rng.randint(0, 20)}"
            command = (
                {"op": "put", "key": key, "value": index}
                if rng.random() < 0.7
                else {"op": "get", "key": key}
            )
            envelopes.append(Command(time_ms, session, seq, first_incomplete, encode(command)))
    return envelopes


@pytest.mark.parametrize("seed", range(12))
def test_rebuilding_from_every_snapshot_reaches_the_live_outcomes_and_digests(seed: int) -> None:
    rng = random.Random(seed)
    limits = ContainerLimits(
        max_replies_per_session=rng.choice((2, 3, 5)),
        max_sessions=rng.choice((3, 5, 50)),
        session_timeout_ms=rng.choice((300, 1000, 60_000)),
    )
    log = entries_of(random_history(rng, 600))
    live = ServiceContainer(KeyValue(), limits)
    snapshots = []
    live_outcomes = []
    for entry in log:
        snapshots.append(live.snapshot_bytes())  # the state before `entry`
        live_outcomes.append(outcome(live.apply(entry)))
    statuses = {o[0] for o in live_outcomes if o is not None}
    # The history must reach the paths that decide outcomes, or the test proves little.
    assert ApplyStatus.TOO_MANY_INFLIGHT in statuses
    assert ApplyStatus.SESSION_UNKNOWN in statuses
    assert any(o is not None and o[4] for o in live_outcomes)  # duplicates answered
    for start, data in enumerate(snapshots):
        rebuilt = ServiceContainer(KeyValue(), limits)
        rebuilt.restore(data)
        replayed = [outcome(rebuilt.apply(entry)) for entry in log[start:]]
        assert replayed == live_outcomes[start:], f"seed {seed}: rebuilt from entry {start}"
        assert digests(rebuilt) == digests(live), f"seed {seed}: rebuilt from entry {start}"


def test_a_restore_keeps_which_session_is_least_recently_active() -> None:
    """Eviction order is state: it must survive a snapshot, not be re-derived."""
    limits = ContainerLimits(max_sessions=2)
    put = encode({"op": "put", "key": "k", "value": 1})
    log = entries_of([OpenSession(0), OpenSession(0), Command(0, 1, 1, 1, put), OpenSession(0)])
    live = ServiceContainer(KeyValue(), limits)
    for entry in log[:-1]:
        live.apply(entry)
    restored = ServiceContainer(KeyValue(), limits)
    restored.restore(live.snapshot_bytes())
    live.apply(log[-1])
    restored.apply(log[-1])
    assert list(live.sessions) == list(restored.sessions) == [1, 4]  # session 2 evicted
