"""Overload with real node processes (issue 11, item 4): far more requests in flight
than the leader takes must not turn into retries appended again, elections or errors.

The leader's limits are set low so a laptop-sized load overloads it: it must refuse
("leader busy") rather than queue without bound, clients must back off, and a retry
of a command still pending must wait on its entry instead of appending it again."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from phalanx.bench.loadgen import LoadSpec, spawn_loads
from phalanx.client import AsyncClient

from .harness import CALL_TIMEOUT_S, LiveCluster

#: The sustained test: requests in flight per load process, and for how long.
SUSTAINED_IN_FLIGHT = 5000
SUSTAINED_S = 4.0
LOAD_START_UP_S = 2.5
#: Requests in flight from the clients, against a leader that takes 200 at once.
CALLERS = 16 * 1000
LEADER_PENDING_MAX = 200


async def flood(members: list[str], callers: int, per_client: int) -> tuple[int, int, list[Any]]:
    """`callers` calls at once from clients with no flow window of their own to speak
    of (max_in_flight as large as the cache allows) and an attempt timeout well below
    the time the whole flood takes: without admission control they time out, retry,
    and every retry is appended to the log again."""
    clients = [
        AsyncClient(members, attempt_timeout=0.2, max_in_flight=1000, timeout=CALL_TIMEOUT_S)
        for _ in range(callers // per_client)
    ]
    ok = failed = 0

    async def one(client: AsyncClient, number: int) -> None:
        nonlocal ok, failed
        reply = await client.call({"op": "put", "key": f"k{number % 300}", "value": number})
        if reply == {"ok": True}:
            ok += 1
        else:
            failed += 1

    try:
        results = await asyncio.gather(
            *(one(clients[n % len(clients)], n) for n in range(callers)), return_exceptions=True
        )
    finally:
        for client in clients:
            await client.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    return ok, failed, errors


def test_ten_times_the_peak_in_flight_sustained_commits_without_elections_or_retries(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    """The issue's reproduction: two load processes with 5,000 requests in flight each
    (about ten times what saturates the cluster here), sustained. Before admission
    control and flow windows this committed nothing while the term climbed."""
    cluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_for_leader()
    before = cluster.wait_converged()
    start_at = time.time() + LOAD_START_UP_S
    specs = [
        LoadSpec(
            "phalanx",
            cluster.addresses,
            SUSTAINED_IN_FLIGHT,
            key_prefix=f"c{number}-",
            start_at=start_at,
            end_at=start_at + SUSTAINED_S,
        )
        for number in range(2)
    ]
    results, _ = spawn_loads(specs, timeout_s=LOAD_START_UP_S + SUSTAINED_S + 120)
    ops = sum(result.ops for result in results)
    errors = sum(result.errors for result in results)
    after = cluster.wait_converged()
    leader = next(s for s in after if s["role"] == "leader")
    entries = leader["last_index"] - before[0]["last_index"]
    applied = leader["commands_applied"] - before[0]["commands_applied"]
    print(f"sustained 2x{SUSTAINED_IN_FLIGHT}: {ops / SUSTAINED_S:,.0f} ok/s, errors {errors}, "
          f"{entries / max(applied, 1):.3f} entries per command, terms "
          f"{before[0]['term']} -> {leader['term']}")  # fmt: skip
    assert errors == 0
    assert ops > 0
    assert entries / applied < 1.2, (entries, applied)
    assert all(s["term"] == before[0]["term"] for s in after), "an election under overload"


def test_overload_is_refused_early_and_never_appended_twice(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    cluster = make_cluster(3)
    cluster.configs = [
        dataclasses.replace(
            config,
            max_pending_proposals=LEADER_PENDING_MAX,
            max_commit_wait_ms=100,
            # Sessions of the flood's clients must hold their replies: one per caller.
            max_replies_per_session=1000,
        )
        for config in cluster.configs
    ]
    cluster.start_all()
    cluster.wait_for_leader()
    before = cluster.wait_converged()
    term_before = before[0]["term"]
    ok, failed, errors = asyncio.run(flood(cluster.addresses, CALLERS, per_client=1000))
    assert (ok, failed, errors) == (CALLERS, 0, [])
    after = cluster.wait_converged()
    leader = next(s for s in after if s["role"] == "leader")
    entries = leader["last_index"] - before[0]["last_index"]
    applied = leader["commands_applied"] - before[0]["commands_applied"]
    assert applied == CALLERS
    # Sessions opened (4) and the new leader's no-op aside, one entry per command.
    assert entries / applied < 1.2, (entries, applied)
    assert leader["refused_busy"] > 0  # the leader did refuse rather than queue
    assert all(s["term"] == term_before for s in after), "an election under overload"
