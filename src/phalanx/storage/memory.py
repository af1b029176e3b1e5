"""`MemoryStorage`: the in-memory twin of `WalStorage` for tests and the simulator."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from phalanx.core.types import Entry, HardState
from phalanx.storage.base import (
    HARD_STATE_COMMIT_INTERVAL_S_DEFAULT,
    HardStateKeeper,
    Restored,
    default_clock,
)


def replace_suffix(log: list[Entry], entries: Sequence[Entry]) -> None:
    """Applies one `write`: `entries` replace `log` from `entries[0].index` on."""
    if not entries:
        return
    first = entries[0].index
    for offset, entry in enumerate(entries):
        assert entry.index == first + offset, "entries of one write must be consecutive"
    if log:
        base = log[0].index
        assert base <= first <= log[-1].index + 1, (
            f"write at index {first} leaves a gap after the stored log {base}..{log[-1].index}"
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
        #: The lowest index written since the last sync (None: no entry written).
        self._dirty_from: int | None = None
        self._hard = HardStateKeeper(HardState(), hard_state_commit_interval_s, clock)
        self.syncs = 0

    def load(self) -> Restored:
        return Restored(self._hard.current(), list(self._entries), [])

    def write(self, entries: Sequence[Entry], hard_state: HardState | None) -> None:
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
        self._dirty_from = None
        self._hard.forget_pending()
        self._hard.restart_interval()

    @property
    def synced_entries(self) -> list[Entry]:
        return list(self._synced_entries)

    @property
    def synced_hard_state(self) -> HardState:
        return self._hard.durable

    def _sync(self, *, force_hard_state: bool) -> None:
        # Copies only what changed since the last sync, so a sync costs O(batch).
        start = self._dirty_from
        if start is not None:
            synced = self._synced_entries
            if not synced:
                synced.extend(self._entries)
            else:
                base = synced[0].index
                del synced[start - base :]
                synced.extend(self._entries[start - base :])
            self._dirty_from = None
        due = self._hard.due(force=force_hard_state)
        if due is not None:
            self._hard.persisted(due)
        self.syncs += 1
