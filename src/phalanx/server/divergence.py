"""Finding the replica whose service is not deterministic (the seed lesson, in the
cluster).

Every node records a checkpoint (its chained log digest and a digest of its service
state) every `checkpoint_every_entries` applied entries, and sends it to every peer.
For each checkpoint index the monitor collects the state digests reported by the
members. Since every correct replica applied the same entries, they report the same
digest; a value held by a majority of the cluster is taken as the correct one:

* a node whose digest differs from a majority value is faulty (if that node is this
  one, it stops serving clients and stops leading until it is repaired);
* once every member has reported and no value has a majority (two replicas that
  disagree, say), the replicas diverged and nobody can tell which is right.

Log digests are compared too: differing log digests would mean the log itself differs,
which Raft rules out, so that is reported as a bug rather than blamed on a service.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

from phalanx.core.quorum import majority
from phalanx.core.types import Index, NodeId
from phalanx.limits import (
    MAX_TRACKED_CHECKPOINTS,
)


class VerdictKind(enum.Enum):
    AGREE = "agree"
    SELF_DIVERGED = "self-diverged"
    OTHERS_DIVERGED = "others-diverged"
    UNDECIDABLE = "diverged, cannot tell which"
    LOG_MISMATCH = "log digests differ"


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    index: Index
    faulty: tuple[NodeId, ...] = ()
    majority_digest: str = ""

    def describe(self) -> str:
        if self.kind is VerdictKind.UNDECIDABLE:
            return f"at index {self.index}: diverged, cannot tell which replica is right"
        if self.faulty:
            nodes = ", ".join(str(n) for n in self.faulty)
            return f"at index {self.index}: {self.kind.value}: node(s) {nodes}"
        return f"at index {self.index}: {self.kind.value}"


@dataclass
class DivergenceMonitor:
    node_id: NodeId
    members: tuple[NodeId, ...]
    reports: dict[Index, dict[NodeId, tuple[bytes, bytes]]] = field(default_factory=dict)
    decided: dict[Index, Verdict] = field(default_factory=dict)

    def record(
        self, node: NodeId, index: Index, log_digest: bytes, state_digest: bytes
    ) -> Verdict | None:
        """Adds one report; returns a verdict when this report decides its index."""
        if node not in self.members:
            return None
        reports = self.reports.setdefault(index, {})
        reports[node] = (log_digest, state_digest)
        while len(self.reports) > MAX_TRACKED_CHECKPOINTS:
            oldest = min(self.reports)
            del self.reports[oldest]
            self.decided.pop(oldest, None)
        verdict = self._judge(index, reports)
        if verdict is None or self.decided.get(index) == verdict:
            return None
        self.decided[index] = verdict
        return verdict

    def _judge(self, index: Index, reports: dict[NodeId, tuple[bytes, bytes]]) -> Verdict | None:
        needed = majority(len(self.members))
        logs = Counter(log for log, _ in reports.values())
        if len(logs) > 1 and len(reports) == len(self.members):
            return Verdict(VerdictKind.LOG_MISMATCH, index)
        states = Counter(state for _, state in reports.values())
        value, count = states.most_common(1)[0]
        if count < needed:
            if len(reports) == len(self.members):
                return Verdict(VerdictKind.UNDECIDABLE, index)
            return None
        faulty = tuple(sorted(n for n, (_, state) in reports.items() if state != value))
        if self.node_id in faulty:
            return Verdict(VerdictKind.SELF_DIVERGED, index, faulty, value.hex())
        if faulty:
            return Verdict(VerdictKind.OTHERS_DIVERGED, index, faulty, value.hex())
        if len(reports) < len(self.members):
            return None  # agreement is only known once everyone has reported
        return Verdict(VerdictKind.AGREE, index, (), value.hex())
