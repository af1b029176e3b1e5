"""Replay equivalence: a container rebuilt from ANY snapshot plus the log after it
reaches the same outcomes and digests as the one that applied the whole log live.

The bug this guards against (issue 11, item 1): the reply cache forgot acknowledged
replies "from the front of the dict" (apply order) while snapshots saved them sorted,
so a restored replica and a live one disagreed on whether a later command fit in the
cache: two states from one log.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from phalanx.examples.kv import KeyValue
from phalanx.service.container import ApplyStatus, ContainerLimits, ServiceContainer
from phalanx.service.envelope import Command, OpenSession
from phalanx.sim.bugs import inject
from phalanx.sim.checkers import InvariantViolation
from phalanx.sim.replay import check_replay, digests, entries_of, outcome

encode = msgspec.msgpack.encode


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


@pytest.mark.parametrize("seed", range(12))
def test_rebuilding_from_every_snapshot_reaches_the_live_outcomes_and_digests(seed: int) -> None:
    """The swarm's replay check, rebuilding from the snapshot before EVERY entry."""
    report = check_replay(seed, entries=600, every=1)
    assert report.rebuilds == 600
    assert report.duplicates > 0


def test_the_histories_reach_every_outcome_that_state_decides() -> None:
    """A history that never fills a reply cache or loses a session proves little."""
    reports = [check_replay(seed, entries=300, every=50) for seed in range(12)]
    for status in ApplyStatus:
        if status is not ApplyStatus.MALFORMED:
            reached = sum(status in report.statuses for report in reports)
            assert reached >= 6, f"{status.name} reached in only {reached} of 12 seeds"


def test_the_replay_check_catches_forgetting_in_cache_order() -> None:
    with inject("forget-in-cache-order"):
        caught = []
        for seed in range(30):
            try:
                check_replay(seed)
            except InvariantViolation as violation:
                caught.append(violation)
    assert caught, "the planted bug went unseen in 30 seeds"
    assert all(v.invariant == "Replay Equivalence" for v in caught)
    for seed in range(30):
        check_replay(seed)  # and the real code passes the same seeds


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
