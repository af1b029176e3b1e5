"""Timers and pushed messages with real node processes: a reminder fires with no client
traffic at all (the leader appends a clock entry), at the same log index on every node,
and reaches its client once, even when the leader dies in between."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from phalanx.client import AsyncClient, Client
from phalanx.core import Role
from phalanx.server.local import LocalCluster


def test_a_reminder_fires_through_the_log_without_client_traffic(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, services=["phalanx.examples.reminders:Reminders"] * 3)
    try:
        for index in range(3):
            cluster.start(index)
        with Client(cluster.addresses, timeout=20) as client:
            reply = client.call({"op": "remind", "id": 5, "after_ms": 300})
            assert reply["ok"] is True
            assert client.call({"op": "remind", "id": 6, "after_ms": 60_000})["ok"] is True
            assert client.call({"op": "cancel", "id": 6}) == {"ok": True}
            # No traffic now: only the leader's clock entry can carry time past 300 ms.
            deadline = time.monotonic() + 10
            statuses: list[dict[str, object]] = []
            while time.monotonic() < deadline:
                time.sleep(0.2)
                statuses = [client.status(i) for i in range(3)]
                applied = {s.applied_index for s in statuses}
                if all(s.timers_fired == 1 for s in statuses) and len(applied) == 1:
                    break
            assert all(s.timers_fired == 1 for s in statuses), statuses
            assert len({s.state_digest for s in statuses}) == 1
            fired = client.call({"op": "fired"})["fired"]
        assert [timer_id for timer_id, _, _ in fired] == [5]
        _, index, time_ms = fired[0]
        assert time_ms >= reply["due_ms"]
        assert index > 4  # a later entry than the three commands and the session
    finally:
        cluster.stop_all()


def test_a_pushed_message_reaches_its_client_once_across_a_leader_kill(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, services=["phalanx.examples.reminders:Reminders"] * 3)

    async def scenario() -> list[dict[str, object]]:
        received: list[dict[str, object]] = []
        async with AsyncClient(cluster.addresses, timeout=20) as client:
            iterator = client.messages()
            assert (await client.call({"op": "remind", "id": 1, "after_ms": 0}))["ok"]
            received.append(await asyncio.wait_for(anext(iterator), 10))
            # The second fires while the leader is dead: the new leader's clock entry
            # fires it, and the client, resubscribing, gets it from the new leader.
            assert (await client.call({"op": "remind", "id": 2, "after_ms": 700}))["ok"]
            statuses = [await client.status(i) for i in range(3)]
            leader = next(i for i, s in enumerate(statuses) if s.role is Role.LEADER)
            cluster.kill(leader)
            received.append(await asyncio.wait_for(anext(iterator), 15))
            await asyncio.sleep(1.0)  # nothing more may arrive: no duplicates
            assert client._pushed is not None and client._pushed.empty()
            assert client.pushed_gaps == 0
        return received

    try:
        for index in range(3):
            cluster.start(index)
        received = asyncio.run(scenario())
    finally:
        cluster.stop_all()
    assert [message["fired"] for message in received] == [1, 2]


def test_an_idle_subscribed_client_keeps_its_session_alive(tmp_path: Path) -> None:
    cluster = LocalCluster(
        tmp_path,
        services=["phalanx.examples.reminders:Reminders"] * 3,
        settings={"session_timeout_ms": 1500},
    )

    async def scenario() -> object:
        async with AsyncClient(cluster.addresses, timeout=20, keepalive_interval=0.4) as client:
            iterator = client.messages()
            assert (await client.call({"op": "remind", "id": 8, "after_ms": 4000}))["ok"]
            # Idle for longer than the session timeout: only keepalives renew it, and
            # the reminder's owner must still exist when it fires.
            return await asyncio.wait_for(anext(iterator), 15)

    try:
        for index in range(3):
            cluster.start(index)
        pushed = asyncio.run(scenario())
    finally:
        cluster.stop_all()
    assert isinstance(pushed, dict) and pushed["fired"] == 8
