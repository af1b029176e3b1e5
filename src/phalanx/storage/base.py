"""The storage interface the server loop and the simulator program against.

`LogStorage` is deliberately narrow (hashicorp/raft's LogStore + StableStore folded into
the one call the Raft `Ready` contract needs): `write` what a Ready asks to persist,
`sync` before sending its messages, `load` once at start. `WalStorage` is the durable
implementation, `MemoryStorage` its in-memory twin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from phalanx.core.types import Entry, HardState

#: Default for how stale the persisted commit index may get (see `HardStateKeeper`).
HARD_STATE_COMMIT_INTERVAL_S_DEFAULT = 1.0


@dataclass(frozen=True, slots=True)
class Restored:
    """What `load()` found: the state to start the node from, and what recovery did."""

    hard_state: HardState
    entries: list[Entry]
    #: One line per repair recovery made (e.g. a torn tail truncated at file/offset).
    report: list[str] = field(default_factory=list)


@runtime_checkable
class LogStorage(Protocol):
    """Durable log and hard state, as the Raft `Ready` contract uses them.

    `load()` first, once. Then any sequence of `write`, `sync`, `compact` and `reset`;
    `close()` last.
    Threads: calls on one object never overlap, so an implementation needs no lock.
    The node makes every call, `sync()` included, on its event-loop thread (group
    commit needs no worker thread: see server/node.py); see wal.py for the contract.
    """

    def load(self, snapshot_index: int = 0, *, snapshot_term: int | None = None) -> Restored:
        """Reads (and, where the rules allow, repairs) what is stored: the entries after
        the snapshot at `snapshot_index` (0: no snapshot). A gap between the snapshot
        and the first stored entry is corruption."""
        ...

    def write(self, entries: Sequence[Entry], hard_state: HardState | None) -> None:
        """Buffers entries and hard state. `entries` are consecutive; they replace the
        stored log from `entries[0].index` on. Nothing is durable until `sync()`."""
        ...

    def sync(self) -> None:
        """Makes every entry written so far, and any term or vote change, durable."""
        ...

    def compact(self, index: int) -> int:
        """Deletes stored entries <= `index` where whole units (segments) allow; returns
        the bytes freed. The entry `index + 1` and the last entry always stay."""
        ...

    def reset(self, first_index: int) -> None:
        """Drops the whole log after a snapshot at `first_index - 1` was installed; the
        next entry written is `first_index`. Durable with the next `sync()`."""
        ...

    def close(self) -> None:
        """Syncs everything, including the latest commit index, and releases files."""
        ...


class HardStateKeeper:
    """Decides when the hard state must reach the disk.

    Raft needs `term` and `vote` durable before the node sends the vote or the
    acknowledgement that depends on them (Raft Fig. 2), so a change to either is
    persisted by the very next `sync()`. `commit` is a hint: a restarted node with an
    older commit index simply learns the current one from the leader, and the index it
    restarts with was true when written (entries are synced before the hard state, and
    committed entries are never truncated). So a change to `commit` alone is persisted
    at most every `interval_s`, and always on close, saving a file replacement (two
    fsyncs) on nearly every Ready.
    """

    def __init__(self, durable: HardState, interval_s: float, clock: Callable[[], float]) -> None:
        self.durable = durable
        #: The latest hard state written and not yet persisted (None: nothing newer).
        self.pending: HardState | None = None
        self._interval_s = interval_s
        self._clock = clock
        self._persisted_at_s = clock()

    def note(self, hard_state: HardState) -> None:
        self.pending = hard_state if hard_state != self.durable else None

    def current(self) -> HardState:
        return self.pending if self.pending is not None else self.durable

    def due(self, *, force: bool = False) -> HardState | None:
        """The hard state to persist now, if any."""
        pending = self.pending
        if pending is None:
            return None
        durable = self.durable
        if force or pending.term != durable.term or pending.vote != durable.vote:
            return pending
        if self._clock() - self._persisted_at_s >= self._interval_s:
            return pending
        return None

    def persisted(self, hard_state: HardState) -> None:
        self.durable = hard_state
        if self.pending == hard_state:
            self.pending = None
        self._persisted_at_s = self._clock()

    def forget_pending(self) -> None:
        self.pending = None

    def restart_interval(self) -> None:
        """Starts the commit interval afresh, as opening the storage again does."""
        self._persisted_at_s = self._clock()


def default_clock() -> float:
    return time.monotonic()
