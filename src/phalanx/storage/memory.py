"""`MemoryStorage`: the in-memory twin of `WalStorage` for tests and the simulator.

Compaction and reset follow wal.py's rules with one entry standing for one segment:
`compact(index)` drops the entries <= `index` but never the last one (the WAL never
deletes its active segment), and a reset log remembers where it starts even while it
is empty, so `load(snapshot_index)` finds the same gaps the WAL finds. A `crash()`
before the next `sync()` brings compacted or reset entries back, one of the outcomes a
crash of the WAL may have too; `load` copes with both."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from phalanx.core.errors import InvariantError, invariant
from phalanx.core.types import Entry, HardState, entry_size_bytes
from phalanx.storage.base import (
    HARD_STATE_COMMIT_INTERVAL_S_DEFAULT,
    HardStateKeeper,
    Restored,
    default_clock,
)
from phalanx.storage.errors import StorageCorruptError

#: What `StorageCorruptError` names as the file of a `MemoryStorage`.
MEMORY_PATH = "<memory>"


def replace_suffix(log: list[Entry], entries: Sequence[Entry]) -> None:
    """Applies one `write`: `entries` replace `log` from `entries[0].index` on."""
    if not entries:
        return
    first = entries[0].index
    for offset, entry in enumerate(entries):
        if entry.index != first + offset:
            raise InvariantError(
                f"entries of one write must be consecutive: entry {entry.index} at "
                f"position {offset} of a write from {first}"
            )
    if log:
        base = log[0].index
        invariant(
            base <= first <= log[-1].index + 1,
            "write at index %d leaves a gap after the stored log %d..%d",
            first,
            base,
            log[-1].index,
        )
        del log[first - base :]
    log.extend(entries)


class MemoryStorage:
    """Same semantics as `WalStorage`, with `crash()` to model a power loss: it drops
    everything written since the last `sync()` (including a hard state not yet due)."""

    def __init__(
        self,
        *,
        hard_state_commit_interval_s: float = HARD_STATE_COMMIT_INTERVAL_S_DEFAULT,
        clock: Callable[[], float] = default_clock,
    ) -> None:
        self._entries: list[Entry] = []
        self._synced_entries: list[Entry] = []
        #: Where the log starts (0: nothing ever written); kept while the log is empty
        #: after a reset, as the WAL keeps its empty segment.
        self._first = 0
        self._synced_first = 0
        #: A compaction or reset happened since the last sync: copy the whole log.
        self._resync = False
        #: The lowest index written since the last sync (None: no entry written).
        self._dirty_from: int | None = None
        self._hard = HardStateKeeper(HardState(), hard_state_commit_interval_s, clock)
        self.syncs = 0

    def load(self, snapshot_index: int = 0, *, snapshot_term: int | None = None) -> Restored:
        """As `WalStorage.load`: entries after the snapshot; a gap is corruption."""
        invariant(snapshot_index >= 0, "load after snapshot index %d", snapshot_index)
        first = self._first
        report = []
        if first > snapshot_index + 1:
            raise StorageCorruptError(
                MEMORY_PATH,
                0,
                f"the log starts at index {first} but the snapshot ends at index "
                f"{snapshot_index}: entries {snapshot_index + 1}..{first - 1} are missing (gap)",
            )
        why = self._why_reset(snapshot_index, snapshot_term)
        if why is not None:
            self._reset_durably(snapshot_index + 1)
            report.append(f"log reset to start at index {snapshot_index + 1}: {why}")
        skip = max(snapshot_index + 1 - self._first, 0) if self._entries else 0
        return Restored(self._hard.current(), self._entries[skip:], report)

    def compact(self, index: int) -> int:
        """Drops entries <= `index`, except the last one; returns the bytes they counted
        for (`entry_size_bytes`). Durable with the next `sync()`."""
        if not self._entries:
            return 0
        dropped = min(max(index + 1 - self._first, 0), len(self._entries) - 1)
        if dropped == 0:
            return 0
        freed = sum(entry_size_bytes(entry) for entry in self._entries[:dropped])
        del self._entries[:dropped]
        self._first = self._entries[0].index
        self._resync = True
        return freed

    def reset(self, first_index: int) -> None:
        """Drops the whole log; the next entry is `first_index`. Durable with `sync()`."""
        invariant(first_index >= 1, "reset to first index %d", first_index)
        self._entries = []
        self._first = first_index
        self._dirty_from = None
        self._resync = True

    def write(self, entries: Sequence[Entry], hard_state: HardState | None) -> None:
        if entries and not self._entries:
            self._first = entries[0].index  # an empty log starts over, as the WAL's does
        replace_suffix(self._entries, entries)
        if entries:
            first = entries[0].index
            self._dirty_from = first if self._dirty_from is None else min(self._dirty_from, first)
        if hard_state is not None:
            self._hard.note(hard_state)

    def sync(self) -> None:
        self._sync(force_hard_state=False)

    def close(self) -> None:
        """Syncs everything. The twin stays usable: `load()` after `close()` models a
        restart, so the commit interval starts afresh as it does in a new `WalStorage`."""
        self._sync(force_hard_state=True)
        self._hard.restart_interval()

    def crash(self) -> None:
        """Loses what was not synced; `load()` then returns what a restart would find."""
        self._entries = list(self._synced_entries)
        self._first = self._synced_first
        self._dirty_from = None
        self._resync = False
        self._hard.forget_pending()
        self._hard.restart_interval()

    @property
    def synced_entries(self) -> list[Entry]:
        return list(self._synced_entries)

    @property
    def synced_hard_state(self) -> HardState:
        return self._hard.durable

    def _why_reset(self, snapshot_index: int, snapshot_term: int | None) -> str | None:
        if snapshot_index == 0 or self._first == 0:
            return None
        last_index = self._first + len(self._entries) - 1
        if last_index < snapshot_index:
            return f"the log ends at index {last_index}, before the snapshot at {snapshot_index}"
        if snapshot_term is not None and self._first <= snapshot_index:
            found = self._entries[snapshot_index - self._first].term
            if found != snapshot_term:
                return f"entry {snapshot_index} has term {found}, the snapshot term {snapshot_term}"
        return None

    def _reset_durably(self, first_index: int) -> None:
        self.reset(first_index)
        self._synced_entries = []
        self._synced_first = first_index
        self._resync = False

    def _sync(self, *, force_hard_state: bool) -> None:
        # Copies only what changed since the last sync, so a sync costs O(batch); after
        # a compaction or reset (rare) it copies the whole log.
        start = self._dirty_from
        if self._resync or (start is not None and not self._synced_entries):
            self._synced_entries = list(self._entries)
            self._synced_first = self._first
            self._resync = False
            self._dirty_from = None
        elif start is not None:
            synced = self._synced_entries
            base = synced[0].index
            del synced[start - base :]
            synced.extend(self._entries[start - base :])
            self._synced_first = self._first
            self._dirty_from = None
        due = self._hard.due(force=force_hard_state)
        if due is not None:
            self._hard.persisted(due)
        self.syncs += 1
