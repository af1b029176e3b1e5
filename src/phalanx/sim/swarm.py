"""Swarm simulation: each seed picks its own fault mix, runs a cluster through a
fault phase with clients, heals everything, and checks liveness.

Swarm testing (Groce et al., 2012) varies which faults are enabled per run rather than
enabling all of them at once: a run with only one-way partitions and no drops reaches
states that a run drowning in every fault never does.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from phalanx.core.types import NodeId
from phalanx.sim.checkers import InvariantViolation
from phalanx.sim.cluster import TICK, NetworkFaults, SimCluster
from phalanx.sim.replay import check_replay

#: No run may take longer than this to converge after healing.
HEAL_TICKS_MAX = 20_000

NEMESIS_ACTIONS = (
    "partition-halves",
    "isolate-leader",
    "one-way",
    "bridge",
    "crash",
    "crash-leader",
    "restart",
    "heal",
)


@dataclass(frozen=True)
class FaultMix:
    network: NetworkFaults
    actions: tuple[str, ...]
    nemesis_every_ticks: int
    crash_in_ready_rate: float
    proposals_per_tick: float
    #: 1 byte means one entry per AppendEntries: commit points then fall between
    #: entries of different terms, where the Figure 8 rule matters.
    max_message_bytes: int
    max_inflight_messages: int
    snapshot_every: int
    compaction_margin: int

    @staticmethod
    def pick(rng: random.Random) -> FaultMix:
        network = NetworkFaults(
            drop_rate=rng.choice((0.0, 0.0, 0.01, 0.05, 0.2)),
            duplicate_rate=rng.choice((0.0, 0.02, 0.1)),
            long_delay_rate=rng.choice((0.0, 0.0, 0.02, 0.1)),
            delay_max=rng.choice((2, 5, 15)),
        )
        actions = tuple(a for a in NEMESIS_ACTIONS if rng.random() < 0.5) or ("heal",)
        return FaultMix(
            network=network,
            actions=actions,
            nemesis_every_ticks=rng.randint(5, 40),
            crash_in_ready_rate=rng.choice((0.0, 0.0, 0.001, 0.01)),
            proposals_per_tick=rng.choice((0.2, 1.0, 3.0)),
            max_message_bytes=rng.choice((1, 200, 64 * 1024)),
            max_inflight_messages=rng.choice((1, 4, 64)),
            snapshot_every=rng.choice((0, 0, 5, 20, 50)),
            compaction_margin=rng.choice((0, 2, 10)),
        )

    def describe(self) -> str:
        n = self.network
        return (
            f"drop={n.drop_rate} dup={n.duplicate_rate} long-delay={n.long_delay_rate} "
            f"delay<={n.delay_max} nemesis/{self.nemesis_every_ticks}t={','.join(self.actions)} "
            f"crash-in-ready={self.crash_in_ready_rate} load={self.proposals_per_tick}/t "
            f"msg-bytes={self.max_message_bytes} inflight={self.max_inflight_messages} "
            f"snapshot-every={self.snapshot_every} margin={self.compaction_margin}"
        )


@dataclass(frozen=True)
class SeedResult:
    seed: int
    nodes: int
    violation: str | None
    trace_hash: str
    ticks: int
    events: int
    committed: int
    acknowledged: int
    mix: str

    @property
    def ok(self) -> bool:
        return self.violation is None


def run_seed(seed: int, nodes: int, *, fault_ticks: int = 300, heal_ticks: int = 200) -> SeedResult:
    rng = random.Random(f"swarm/{seed}/{nodes}")
    mix = FaultMix.pick(rng)
    cluster = SimCluster(
        nodes,
        seed,
        faults=mix.network,
        max_message_bytes=mix.max_message_bytes,
        max_inflight_messages=mix.max_inflight_messages,
        snapshot_every=mix.snapshot_every,
        compaction_margin=mix.compaction_margin,
    )
    cluster.crash_in_ready_rate = mix.crash_in_ready_rate
    violation: str | None = None
    try:
        _fault_phase(cluster, rng, mix, fault_ticks)
        _heal_phase(cluster, rng, mix, heal_ticks)
        cluster.check_log_matching()
        # The service container the nodes run, on a history of this seed's own.
        check_replay(seed)
    except InvariantViolation as error:
        violation = str(error)
    leader = cluster.leader()
    committed = cluster.raw(leader).raft.log.committed if leader is not None else 0
    return SeedResult(
        seed=seed,
        nodes=nodes,
        violation=violation,
        trace_hash=cluster.trace_hash(),
        ticks=cluster.ticks,
        events=cluster.events,
        committed=committed,
        acknowledged=len(cluster.acknowledged),
        mix=mix.describe(),
    )


def _propose_some(cluster: SimCluster, rng: random.Random, rate: float, counter: list[int]) -> None:
    count = int(rate) + (1 if rng.random() < rate - int(rate) else 0)
    for _ in range(count):
        counter[0] += 1
        cluster.propose(f"cmd-{counter[0]}".encode())


def _fault_phase(cluster: SimCluster, rng: random.Random, mix: FaultMix, fault_ticks: int) -> None:
    counter = [0]
    for tick in range(fault_ticks):
        if tick and tick % mix.nemesis_every_ticks == 0:
            _nemesis(cluster, rng, rng.choice(mix.actions))
        _propose_some(cluster, rng, mix.proposals_per_tick, counter)
        cluster.run_ticks(1)


def _heal_phase(cluster: SimCluster, rng: random.Random, mix: FaultMix, heal_ticks: int) -> None:
    """Heals every fault, then requires convergence: a leader, and every acknowledged
    entry applied on every node. A slow configuration (one entry per message) may take
    long to catch up, so the bound is on stalls: `heal_ticks` without any progress
    (see `_total_progress`) is a liveness failure, and so is not converging by the
    hard cap."""
    cluster.heal()
    cluster.faults = NetworkFaults()
    cluster.crash_in_ready_rate = 0.0
    for node_id in cluster.ids:
        cluster.restart(node_id)
    hard_cap = cluster.time + HEAL_TICKS_MAX * TICK
    last_progress_time = cluster.time
    progress = _total_progress(cluster)
    while cluster.time < hard_cap and cluster.time - last_progress_time < heal_ticks * TICK:
        cluster.run_ticks(1)
        if cluster.converged() and not cluster.missing_acknowledged():
            return
        now = _total_progress(cluster)
        if now > progress:
            progress = now
            last_progress_time = cluster.time
    cluster.checker.fail(
        "Liveness",
        f"after healing, no convergence (leader={cluster.leader()}, missing acknowledged "
        f"entries={cluster.missing_acknowledged()[:5]}, stalled for "
        f"{(cluster.time - last_progress_time) // TICK} ticks)",
    )


def _total_progress(cluster: SimCluster) -> int:
    """Grows whenever anything moves towards convergence: entries applied, logs
    growing, or the leader learning that followers match more of its log (a backlog
    may need many ticks of replication before the next commit)."""
    total = sum(len(node.applied) for node in cluster.nodes.values())
    for node in cluster.nodes.values():
        if node.raw is not None:
            total += node.raw.raft.log.last_index()
            total += sum(p.match for p in node.raw.raft.progress.values())
    return total


def _nemesis(cluster: SimCluster, rng: random.Random, action: str) -> None:
    ids = list(cluster.ids)
    leader = cluster.leader()
    if action == "partition-halves":
        rng.shuffle(ids)
        cut = rng.randint(1, len(ids) - 1) if len(ids) > 1 else 1
        cluster.partition(ids[:cut], ids[cut:])
    elif action == "isolate-leader" and leader is not None:
        cluster.disconnect(leader)
    elif action == "one-way":
        for _ in range(rng.randint(1, len(ids))):
            src, dst = rng.sample(ids, 2) if len(ids) > 1 else (ids[0], ids[0])
            if src != dst:
                cluster.block_one_way(src, dst)
    elif action == "bridge" and len(ids) >= 3:
        rng.shuffle(ids)
        middle = len(ids) // 2
        left, bridge, right = ids[:middle], ids[middle], ids[middle + 1 :]
        cluster.partition([*left, bridge], right)
        for node in right:
            cluster.blocked.discard((node, bridge))
            cluster.blocked.discard((bridge, node))
    elif action == "crash":
        alive = cluster.alive()
        if alive:
            victim = rng.choice(alive)
            cluster.crash(victim)
            cluster.restart(victim, after_ticks=rng.randint(1, 60))
    elif action == "crash-leader" and leader is not None:
        cluster.crash(leader)
        cluster.restart(leader, after_ticks=rng.randint(1, 60))
    elif action == "restart":
        for node_id in ids:
            cluster.restart(NodeId(node_id))
    elif action == "heal":
        cluster.heal()


@dataclass(frozen=True)
class SwarmSummary:
    results: list[SeedResult]
    seconds: float

    @property
    def failures(self) -> list[SeedResult]:
        return [r for r in self.results if not r.ok]

    @property
    def ticks(self) -> int:
        return sum(r.ticks for r in self.results)

    def combined_hash(self) -> str:
        digest = hashlib.blake2b(digest_size=16)
        for result in self.results:
            digest.update(result.trace_hash.encode())
        return digest.hexdigest()


def run_swarm(
    seeds: list[int],
    nodes: int,
    *,
    on_result: Callable[[SeedResult], None] | None = None,
    fault_ticks: int = 300,
) -> SwarmSummary:
    started = time.perf_counter()
    results = []
    for seed in seeds:
        result = run_seed(seed, nodes, fault_ticks=fault_ticks)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return SwarmSummary(results, time.perf_counter() - started)
