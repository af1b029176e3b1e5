"""Rebuilding a replica offline from its data directory, once from every snapshot.

Why: replay equivalence is the promise everything else rests on. A replica restarted
from its newest snapshot, from an older one (the newest was damaged), or from the
empty state must reach exactly the state it had live, or it answers differently from
the others after a restart. `rebuild_all` checks that promise on a real data
directory: for each stored snapshot (and from index 1 when the log still starts
there) it restores a fresh container, replays the log after it up to the same index,
and reports the log, state and outcome digests each rebuild reached; they must all be
equal, and equal to what the live node reported at that index. `phalanx replay-check`
prints the same for an operator.

It opens the log for reading, which takes the directory's lock: the node must be
stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from phalanx.core.errors import ConfigError
from phalanx.core.types import Entry, SnapshotMeta
from phalanx.server.config import load_service_class
from phalanx.server.identity import IDENTITY_FILE, read_identity
from phalanx.service.container import ContainerLimits, ServiceContainer
from phalanx.storage import WalStorage
from phalanx.storage.snapshots import SnapshotStore

#: Snapshots a rebuild reads (a node keeps `snapshots_keep`, 2 by default).
SNAPSHOTS_READ_MAX = 10_000


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


def rebuild_all(data_dir: Path, up_to: int | None = None) -> list[Rebuilt]:
    """One rebuild per stored snapshot, oldest first (from the empty state when there
    is none); each replays the log up to `up_to` (default: the log's last entry)."""
    identity = read_identity(data_dir)
    if identity is None:
        raise ConfigError("data", f"{data_dir} holds no {IDENTITY_FILE}: not a node's directory")
    service_class = load_service_class(identity.service)
    limits = ContainerLimits(**identity.outcome_settings)
    store = SnapshotStore(data_dir / "snapshots", keep=SNAPSHOTS_READ_MAX)
    starts: list[tuple[SnapshotMeta, Path | None]] = sorted(
        store.all(), key=lambda found: found[0].index
    )
    if not starts:
        starts = [(SnapshotMeta(), None)]
    oldest = starts[0][0]
    wal = WalStorage(data_dir, cluster_id=identity.cluster_id, node_id=identity.node_id)
    try:
        # Loading continues the oldest snapshot: every newer one lies inside that log.
        entries = wal.load(oldest.index, snapshot_term=oldest.term or None).entries
    finally:
        wal.close()
    if up_to is None:
        up_to = entries[-1].index if entries else oldest.index
    results = []
    for meta, path in starts:
        if meta.index > up_to:
            continue
        container = ServiceContainer(service_class(), limits)
        if path is not None:
            container.restore(store.read_content(path))
        _replay(container, entries, meta.index, up_to)
        results.append(
            Rebuilt(
                meta,
                int(container.applied_index),
                container.log_digest(),
                container.state_digest(),
                container.outcome_digest(),
            )
        )
    return results


def _replay(container: ServiceContainer, entries: Sequence[Entry], after: int, up_to: int) -> None:
    container.apply_batch([entry for entry in entries if after < entry.index <= up_to])
    if container.applied_index != up_to:
        raise ConfigError(
            "data",
            f"the log holds entries only up to {container.applied_index}, not {up_to}",
        )
