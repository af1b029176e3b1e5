"""Timers with real node processes: a reminder fires with no client traffic at all (the
leader appends a clock entry), at the same log index on every node."""

from __future__ import annotations

import time
from pathlib import Path

from phalanx.client import Client
from phalanx.demo import LocalCluster


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
                applied = {s["applied_index"] for s in statuses}
                if all(s["timers_fired"] == 1 for s in statuses) and len(applied) == 1:
                    break
            assert all(s["timers_fired"] == 1 for s in statuses), statuses
            assert len({s["state_digest"] for s in statuses}) == 1
            fired = client.call({"op": "fired"})["fired"]
        assert [timer_id for timer_id, _, _ in fired] == [5]
        _, index, time_ms = fired[0]
        assert time_ms >= reply["due_ms"]
        assert index > 4  # a later entry than the three commands and the session
    finally:
        cluster.stop_all()
