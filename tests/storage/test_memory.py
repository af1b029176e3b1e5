"""MemoryStorage, the twin: same semantics, and crash() drops what was not synced."""

from __future__ import annotations

from pathlib import Path

from tests.storage.helpers import entries, hard

from phalanx.core.types import HardState
from phalanx.storage import LogStorage, MemoryStorage, WalStorage


def test_both_implementations_satisfy_the_protocol(tmp_path: Path) -> None:
    assert isinstance(MemoryStorage(), LogStorage)
    with WalStorage(tmp_path, cluster_id="c", node_id=1) as wal:
        assert isinstance(wal, LogStorage)


def test_crash_drops_unsynced_entries_and_hard_state() -> None:
    storage = MemoryStorage()
    storage.load()
    storage.write(entries(1, 5), hard(1, 1, 0))
    storage.sync()
    storage.write(entries(6, 3), hard(2, 0, 0))
    storage.write(entries(4, 1, term=2), None)  # truncates 5..8, unsynced
    assert storage.load().entries == entries(1, 3) + entries(4, 1, term=2)
    storage.crash()
    restored = storage.load()
    assert restored.entries == entries(1, 5)
    assert restored.hard_state == hard(1, 1, 0)


def test_crash_keeps_the_synced_truncation() -> None:
    storage = MemoryStorage()
    storage.load()
    storage.write(entries(1, 5), None)
    storage.sync()
    storage.write(entries(3, 1, term=2), None)
    storage.sync()
    storage.write(entries(4, 2, term=2), None)
    storage.crash()
    assert storage.load().entries == entries(1, 2) + entries(3, 1, term=2)
    assert storage.synced_entries == storage.load().entries


def test_commit_alone_may_be_lost_in_a_crash() -> None:
    now = [0.0]
    storage = MemoryStorage(hard_state_commit_interval_s=1.0, clock=lambda: now[0])
    storage.load()
    storage.write(entries(1, 3), hard(1, 1, 0))
    storage.sync()
    storage.write([], hard(1, 1, 3))
    storage.sync()
    storage.crash()
    assert storage.load().hard_state == hard(1, 1, 0)
    storage.write([], hard(1, 1, 3))
    now[0] = 1.0
    storage.sync()
    storage.crash()
    assert storage.load().hard_state == hard(1, 1, 3)


def test_close_makes_everything_durable() -> None:
    storage = MemoryStorage()
    storage.load()
    storage.write(entries(1, 2), hard(3, 0, 2))
    storage.close()
    storage.crash()
    assert storage.load().entries == entries(1, 2)
    assert storage.load().hard_state == hard(3, 0, 2)
    assert MemoryStorage().load().hard_state == HardState()
