"""Rebuilding a replica offline from its data directory, once from every snapshot.

Why: replay equivalence is the promise everything else rests on. A replica restarted
from its newest snapshot, from an older one (the newest was damaged), or from the
empty state must reach exactly the state it had live, or it answers differently from
the others after a restart. `rebuild_all` checks that promise on a real data
directory: for each stored snapshot (and from index 1 when the log still starts
there) it restores a fresh container, replays the log after it up to the same index,
and reports the log, state and outcome digests each rebuild reached; they must all be
equal, and equal to what the live node reported at that index. A snapshot older than
the start of the log (a node keeping more snapshots than compaction keeps log) cannot
be replayed from: it is skipped and reported. `phalanx replay-check` prints the same
for an operator.

It opens the log for reading, which takes the directory's lock: the node must be
stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

from phalanx.core.errors import ConfigError
from phalanx.core.types import Entry, SnapshotMeta
from phalanx.limits import (
    SNAPSHOTS_READ_MAX,
)
from phalanx.server.config import load_service_class
from phalanx.server.identity import IDENTITY_FILE, ClusterIdentity, read_identity
from phalanx.service.container import ContainerLimits, ServiceContainer
from phalanx.storage import WalStorage
from phalanx.storage.errors import StorageCorruptError
from phalanx.storage.snapshots import SnapshotStore


@dataclass(frozen=True)
class Rebuilt:
    #: The snapshot the rebuild started from (index 0: the empty state).
    start: SnapshotMeta
    applied_index: int
    log_digest: str
    state_digest: str
    outcome_digest: str

    def digests(self) -> tuple[str, str, str]:
        return (self.log_digest, self.state_digest, self.outcome_digest)


@dataclass(frozen=True)
class Rebuilds(Sequence[Rebuilt]):
    """The rebuilds `rebuild_all` made, oldest start first, and the stored snapshots it
    could not start from because the log no longer continues them (compaction removed
    the entries after them: a node keeping more snapshots than log)."""

    rebuilt: tuple[Rebuilt, ...]
    skipped: tuple[SnapshotMeta, ...]

    @overload
    def __getitem__(self, position: int) -> Rebuilt: ...
    @overload
    def __getitem__(self, position: slice) -> Sequence[Rebuilt]: ...
    def __getitem__(self, position: int | slice) -> Rebuilt | Sequence[Rebuilt]:
        return self.rebuilt[position]

    def __len__(self) -> int:
        return len(self.rebuilt)

    def differing(self) -> list[Rebuilt]:
        """The rebuilds whose digests differ from the first one's (none: all agree)."""
        return [r for r in self.rebuilt if r.digests() != self.rebuilt[0].digests()]


def rebuild_all(data_dir: Path, up_to: int | None = None) -> Rebuilds:
    """One rebuild from the empty state (when the log still starts at index 1) and one
    per stored snapshot the log continues, oldest first; each replays the log up to
    `up_to` (default: the log's last entry).

    Raises `ConfigError` for a directory that is not a node's, `StorageError` for one
    that is locked by a running node or damaged."""
    identity = read_identity(data_dir)
    if identity is None:
        raise ConfigError("data", f"{data_dir} holds no {IDENTITY_FILE}: not a node's directory")
    service_class = load_service_class(identity.service)
    limits = ContainerLimits(**identity.outcome_settings)
    store = SnapshotStore(data_dir / "snapshots", keep=SNAPSHOTS_READ_MAX)
    stored = sorted(store.all(), key=lambda found: found[0].index)
    starts: list[tuple[SnapshotMeta, Path | None]] = [(SnapshotMeta(), None), *stored]
    first, entries = _load_continuing(data_dir, identity, [meta for meta, _ in starts])
    skipped = tuple(meta for meta, _ in starts[1:first])
    if up_to is None:
        up_to = entries[-1].index if entries else starts[first][0].index
    rebuilt = []
    for meta, path in starts[first:]:
        if meta.index > up_to:
            continue
        container = ServiceContainer(service_class(), limits)
        if path is not None:
            container.restore(store.read_content(path))
        _replay(container, entries, meta.index, up_to)
        rebuilt.append(
            Rebuilt(
                meta,
                int(container.applied_index),
                container.log_digest(),
                container.state_digest(),
                container.outcome_digest(),
            )
        )
    return Rebuilds(tuple(rebuilt), skipped)


def _load_continuing(
    data_dir: Path, identity: ClusterIdentity, starts: Sequence[SnapshotMeta]
) -> tuple[int, list[Entry]]:
    """(position in `starts`, entries after it) of the oldest start the log continues.

    Every newer start lies inside that log. A log that begins after a start is refused
    by `WalStorage.load` with the directory left as found, so the next newer start is
    tried with a fresh storage; any other refusal (damage) is raised."""
    for position, meta in enumerate(starts):
        wal = WalStorage(data_dir, cluster_id=identity.cluster_id, node_id=identity.node_id)
        try:
            return position, wal.load(meta.index, snapshot_term=meta.term or None).entries
        except StorageCorruptError as error:
            # The gap refusal is the only one a newer start can cure; its wording is
            # WalStorage._check_continues_snapshot's.
            if not error.problem.startswith("the log starts at index"):
                raise
            if position == len(starts) - 1:
                raise
        finally:
            wal.close()
    raise AssertionError("starts always holds the empty state")


def _replay(container: ServiceContainer, entries: Sequence[Entry], after: int, up_to: int) -> None:
    container.apply_batch([entry for entry in entries if after < entry.index <= up_to])
    if container.applied_index != up_to:
        raise ConfigError(
            "data",
            f"the log holds entries only up to {container.applied_index}, not {up_to}",
        )
