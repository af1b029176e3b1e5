"""Clusters of real phalanx node processes on 127.0.0.1 for the benchmarks: a
`phalanx.server.local.LocalCluster` and what the benchmarks read from it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from phalanx.server.local import (
    HOST,
    KV_SERVICE,
    LocalCluster,
    cluster_statuses,
    temporary_directory,
    wait_for_leader,
)
from phalanx.transport.wire import NodeStatus

__all__ = ["HOST", "KV_SERVICE", "BenchCluster", "running_cluster"]


class BenchCluster(LocalCluster):
    #: The leader when last looked for (by `running_cluster`), for labels.
    leader_index: int | None = None

    def watch(self) -> dict[str, int]:
        """Names and pids of the running nodes, the leader marked, for CPU accounting."""
        return {
            f"node {i + 1}" + (" (leader)" if i == self.leader_index else ""): process.pid
            for i, process in enumerate(self.processes)
            if process is not None
        }

    async def statuses(self, attempt_timeout: float = 0.5) -> list[NodeStatus | None]:
        return await cluster_statuses(self, attempt_timeout_s=attempt_timeout)

    async def wait_for_leader(self) -> int:
        """The index of the node that leads with every running node agreeing."""
        return await wait_for_leader(self)

    def current_term(self) -> int:
        """The highest Raft term any running node reports (0 if none answers)."""
        statuses = asyncio.run(self.statuses())
        return max((s.term for s in statuses if s is not None), default=0)

    def log_counts(self) -> tuple[int, int]:
        """(log entries, commands applied) of the most advanced running node: between
        two readings, entries per command says how many entries each acknowledged
        command cost (retries appended again push it above 1)."""
        statuses = [s for s in asyncio.run(self.statuses()) if s is not None]
        if not statuses:
            return (0, 0)
        best = max(statuses, key=lambda s: s.applied_index)
        return (best.last_index, best.commands_applied)


@contextlib.contextmanager
def running_cluster(nodes: int = 3, keep: bool = False) -> Iterator[BenchCluster]:
    """A started cluster with a leader, its data in a temporary directory removed after."""
    with (
        temporary_directory("phalanx-bench-", keep) as root,
        BenchCluster(root, nodes) as cluster,
    ):
        cluster.start_all()
        cluster.leader_index = asyncio.run(cluster.wait_for_leader())
        yield cluster
