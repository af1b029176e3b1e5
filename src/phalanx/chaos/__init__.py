"""Fault runs of real node processes, Jepsen-style (`phalanx chaos`).

Theory of operation
-------------------
A run starts `--nodes` `phalanx node` processes on 127.0.0.1 with every peer link
going through a TCP proxy in the harness (`proxy`), so the harness, not the nodes,
decides which messages get through. Concurrent clients (`runner`) perform a
workload's operations (`workloads`) and record each invocation and completion in
real-time order (`recorder`), while the nemesis (`nemesis`) follows a seeded
schedule of faults: SIGKILL and restart, SIGSTOP/SIGCONT, partitions through the
proxies, whole-cluster crashes. At the end everything is healed, the cluster must
recover, final reads go through the log, and the run is judged (`verdict`): the
history must be linearizable (or satisfy the set checks), no acknowledged write may
be lost, and every replica must hold the same log and state. `report` draws the
timeline and the latencies into one self-contained HTML page.

With `--unsafe-local-reads` the nodes are `stale_reads.StaleReadNode`s, which answer
reads from their own state: broken on purpose, so that the checker has stale reads to
catch. That read path exists only here, never in the production node.

Layers: this package uses `phalanx.client`, `phalanx.check` and the node's
configuration (`phalanx.server.config`); nodes are separate processes (only
`stale_reads`, which runs in them, imports the node itself).
See docs/chaos.md.
"""

from phalanx.chaos.cluster import ChaosCluster
from phalanx.chaos.nemesis import FaultKind, Nemesis, PlannedFault, Shape, plan_schedule
from phalanx.chaos.proxy import LinkProxy, ProxyMesh
from phalanx.chaos.recorder import HistoryEvent, Recorder
from phalanx.chaos.runner import ChaosOptions, HarnessError, RunData, execute

__all__ = [
    "ChaosCluster",
    "ChaosOptions",
    "FaultKind",
    "HarnessError",
    "HistoryEvent",
    "LinkProxy",
    "Nemesis",
    "PlannedFault",
    "ProxyMesh",
    "Recorder",
    "RunData",
    "Shape",
    "execute",
    "plan_schedule",
]
