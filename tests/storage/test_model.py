"""WalStorage against its twin: random write / sync / reopen sequences must leave both
with the same log and hard state (hypothesis stateful testing)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from tests.storage.helpers import CLUSTER, NODE

from phalanx.core.types import Entry, EntryKind, HardState, Index, NodeId, Term
from phalanx.storage import MemoryStorage, WalStorage

#: Small enough that a run rolls over, truncates across and at segment boundaries.
SEGMENT_BYTES_MAX = 600


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


class WalAgainstMemory(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="phalanx-wal-model-"))
        self.clock = FakeClock()
        self.model = MemoryStorage(hard_state_commit_interval_s=1.0, clock=self.clock)
        self.model.load()
        self.wal = self._open()
        self.term = 1
        self.hard_state = HardState()

    def _open(self) -> WalStorage:
        wal = WalStorage(
            self.directory,
            cluster_id=CLUSTER,
            node_id=NODE,
            segment_bytes_max=SEGMENT_BYTES_MAX,
            hard_state_commit_interval_s=1.0,
            clock=self.clock,
        )
        try:
            self.restored = wal.load()
        except BaseException:
            wal.close()
            raise
        return wal

    @rule(
        back=st.integers(0, 12),
        count=st.integers(0, 15),
        size=st.integers(0, 120),
        new_term=st.booleans(),
        hard_change=st.sampled_from(["none", "commit", "vote", "term"]),
    )
    def write(self, back: int, count: int, size: int, new_term: bool, hard_change: str) -> None:
        log = self.model.load().entries
        next_index = log[-1].index + 1 if log else 1
        # Committed entries are never truncated (Raft's Leader Completeness).
        first = max(self.hard_state.commit + 1, next_index - back)
        if new_term:
            self.term += 1
        batch = [
            Entry(Term(self.term), Index(i), EntryKind.COMMAND, bytes([i % 251]) * size)
            for i in range(first, first + count)
        ]
        last_index = batch[-1].index if batch else next_index - 1
        hard_state = self._next_hard_state(hard_change, last_index)
        self.model.write(batch, hard_state)
        self.wal.write(batch, hard_state)

    def _next_hard_state(self, change: str, last_index: int) -> HardState | None:
        current = self.hard_state
        if change == "none" or (change == "commit" and current.commit >= last_index):
            return None
        if change == "commit":
            # As in Raft: commit only covers stored entries, and those are never truncated.
            current = HardState(current.term, current.vote, Index(current.commit + 1))
        elif change == "vote":
            current = HardState(current.term, NodeId(current.vote % 3 + 1), current.commit)
        else:
            current = HardState(Term(current.term + 1), NodeId(0), current.commit)
        self.hard_state = current
        return current

    @rule(seconds=st.sampled_from([0.0, 0.4, 1.0]))
    def sync(self, seconds: float) -> None:
        self.clock.now_s += seconds
        self.model.sync()
        self.wal.sync()

    @rule()
    def reopen(self) -> None:
        self.wal.close()
        self.model.close()
        self.wal = self._open()
        assert self.restored.report == []
        assert self.restored.entries == self.model.load().entries
        assert self.restored.hard_state == self.model.load().hard_state

    @invariant()
    def hard_state_file_matches_the_twins_durable_one(self) -> None:
        # Both follow the same persistence policy, so they agree on what is on disk.
        assert self.wal._hard.durable == self.model.synced_hard_state

    def teardown(self) -> None:
        try:
            self.wal.close()
            self._open().close()
            self.model.close()
            assert self.restored.entries == self.model.load().entries
            assert self.restored.hard_state == self.model.load().hard_state
        finally:
            shutil.rmtree(self.directory)


WalAgainstMemory.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestWalAgainstMemory = WalAgainstMemory.TestCase
