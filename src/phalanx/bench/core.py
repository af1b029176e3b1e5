"""`phalanx bench core`: how fast the pure Raft core commits, with no I/O at all.

Three `RawNode`s exchange messages through in-memory lists; each loop proposes one
batch at the leader, then delivers messages and processes every `Ready` (persist is a
no-op, apply counts) until the cluster is quiet. This bounds what the core can cost the
real cluster: if it commits far faster than a disk syncs, it is never the bottleneck.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass

from phalanx.core.messages import Message
from phalanx.core.raft import RaftConfig, Role
from phalanx.core.rawnode import RawNode
from phalanx.core.types import NodeId
from phalanx.sim.swarm import run_seed


@dataclass(frozen=True)
class CoreResult:
    batch_size: int
    entries: int
    seconds: float
    messages: int

    @property
    def entries_per_second(self) -> float:
        return self.entries / self.seconds


def _make_cluster(nodes: int) -> dict[NodeId, RawNode]:
    ids = tuple(NodeId(i) for i in range(1, nodes + 1))
    return {
        node_id: RawNode(RaftConfig(node_id=node_id, voters=ids), random.Random(node_id))
        for node_id in ids
    }


def _pump(cluster: dict[NodeId, RawNode], inbox: deque[Message]) -> tuple[int, int]:
    """Runs every node's Ready loop and delivers messages until nothing moves."""
    applied = 0
    delivered = 0
    while True:
        moved = False
        for raw in cluster.values():
            while raw.has_ready():
                ready = raw.ready()
                inbox.extend(ready.messages)
                applied += len(ready.committed_entries)
                raw.advance(ready)
                moved = True
        while inbox:
            message = inbox.popleft()
            cluster[message.to].step(message)
            delivered += 1
            moved = True
        if not moved:
            return applied, delivered


def bench_core(batch_size: int, total_entries: int, nodes: int = 3) -> CoreResult:
    cluster = _make_cluster(nodes)
    inbox: deque[Message] = deque()
    leader = cluster[NodeId(1)]
    leader.campaign()
    _pump(cluster, inbox)
    assert leader.raft.role is Role.LEADER
    payload = [b"x" * 100] * batch_size
    committed_before = leader.raft.log.committed
    messages = 0
    started = time.perf_counter()
    while leader.raft.log.committed - committed_before < total_entries:
        leader.propose(payload)
        _, delivered = _pump(cluster, inbox)
        messages += delivered
    seconds = time.perf_counter() - started
    entries = leader.raft.log.committed - committed_before
    return CoreResult(batch_size, entries, seconds, messages)


def bench_simulator(seeds: int = 20, nodes: int = 5) -> tuple[int, float]:
    """Node-ticks simulated per second over a small faulty swarm."""
    started = time.perf_counter()
    ticks = sum(run_seed(seed, nodes).ticks for seed in range(seeds))
    return ticks, time.perf_counter() - started
