"""The nemesis: a seeded schedule of faults, and the task that inflicts them.

Theory of operation
-------------------
`plan_schedule` turns (seed, fault kinds, run time, cluster size) into a list of
`PlannedFault`s: quiet gaps of `GAP_S` alternate with one fault at a time lasting
`FAULT_S`. Kinds are dealt in rounds, each round a seeded shuffle of every requested
kind, so a run long enough for one round sees every kind. Everything random is drawn
here, from `random.Random(seed)`: the same arguments always give the same schedule,
which `describe_schedule` prints and a test compares.

The kinds (Jepsen's names where it has them):

- `kill`: SIGKILL a minority of nodes (one, or two of five), then start them again
  when the fault ends. They recover from their write-ahead logs.
- `pause`: SIGSTOP a minority, SIGCONT when the fault ends. A paused leader keeps
  its term but stops sending heartbeats, and wakes up to find itself deposed.
- `partition`: cut links through the proxies (`proxy.ProxyMesh`) into one of the
  shapes below; heal them all when the fault ends.
- `restart`: SIGKILL every node at once and start them all again after
  `RESTART_DOWN_S`: a whole-cluster crash, after which every acknowledged write must
  still be there.

Partition shapes: `majority-minority` (a random minority cut off from the rest),
`isolate-leader` (the current leader alone), `isolate-follower` (one node that is not
the leader alone), `bridge` (two halves that cannot talk, and one node that talks to
both, so each half thinks a different majority is alive). The planned faults that
name "the leader" or "a follower" resolve it when they start, from the nodes' status;
the plan names a seeded fallback node for when no leader is known.

At most one fault is active at a time, and `Nemesis.heal_all` ends it at once, so
the end of a run leaves a whole, connected cluster. Every fault start and end goes
into the history as an event of process "nemesis", which the checker skips.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from phalanx.chaos.proxy import Link

#: Quiet time between faults, in seconds (min, max).
GAP_S = (2.0, 4.0)
#: How long one fault lasts, in seconds (min, max).
FAULT_S = (3.0, 6.0)
#: How long every node stays down in a `restart` fault.
RESTART_DOWN_S = 1.0
#: The most faults one schedule holds, whatever the run time.
FAULTS_MAX = 1000


class FaultKind(enum.Enum):
    KILL = "kill"
    PAUSE = "pause"
    PARTITION = "partition"
    RESTART = "restart"


class Shape(enum.Enum):
    MAJORITY_MINORITY = "majority-minority"
    ISOLATE_LEADER = "isolate-leader"
    ISOLATE_FOLLOWER = "isolate-follower"
    BRIDGE = "bridge"


def parse_kinds(text: str) -> tuple[FaultKind, ...]:
    """`kill,pause,partition,restart` (or `none`) as fault kinds; ValueError if unknown."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == ["none"]:
        return ()
    known = {kind.value: kind for kind in FaultKind}
    kinds: list[FaultKind] = []
    for name in names:
        if name not in known:
            raise ValueError(f"unknown nemesis {name!r}; known: {', '.join(known)}, none")
        if known[name] not in kinds:
            kinds.append(known[name])
    return tuple(kinds)


@dataclass(frozen=True, slots=True)
class PlannedFault:
    """One fault of the schedule. `nodes` are indices from 0; for a partition they are
    the minority side (or, for a bridge, [bridge node, *one half])."""

    start_s: float
    duration_s: float
    kind: FaultKind
    nodes: tuple[int, ...]
    shape: Shape | None = None
    #: Resolve the target at run time: the leader (True) or, for isolate-follower, a
    #: node that is not the leader. `nodes` is the fallback.
    target_leader: bool = False

    def describe(self) -> str:
        names = ",".join(str(n + 1) for n in self.nodes)
        what = self.kind.value if self.shape is None else f"partition {self.shape.value}"
        target = ""
        if self.target_leader:
            follower = self.shape is Shape.ISOLATE_FOLLOWER
            target = " (a follower)" if follower else " (the leader)"
        return f"{self.start_s:6.1f}s +{self.duration_s:.1f}s {what} nodes {names}{target}"


def plan_schedule(
    seed: int, kinds: Sequence[FaultKind], run_s: float, nodes: int
) -> list[PlannedFault]:
    """The faults of a run, in order; the same arguments always give the same list."""
    assert nodes >= 1 and run_s >= 0
    rng = random.Random(seed)
    plan: list[PlannedFault] = []
    round_: list[FaultKind] = []
    now = rng.uniform(*GAP_S)
    while kinds and len(plan) < FAULTS_MAX:
        duration = rng.uniform(*FAULT_S)
        if now + min(duration, FAULT_S[0]) > run_s:
            break
        duration = min(duration, run_s - now)
        if not round_:
            round_ = list(kinds)
            rng.shuffle(round_)
        kind = round_.pop()
        plan.append(_plan_one(rng, kind, now, duration, nodes))
        now += duration + rng.uniform(*GAP_S)
    return plan


def _plan_one(
    rng: random.Random, kind: FaultKind, start: float, duration: float, nodes: int
) -> PlannedFault:
    minority = max(1, (nodes - 1) // 2)
    start, duration = round(start, 3), round(duration, 3)
    if kind is FaultKind.RESTART:
        return PlannedFault(start, min(duration, RESTART_DOWN_S), kind, tuple(range(nodes)))
    if kind in (FaultKind.KILL, FaultKind.PAUSE):
        count = rng.randint(1, minority)
        chosen = tuple(sorted(rng.sample(range(nodes), count)))
        leader = count == 1 and rng.random() < 0.5
        return PlannedFault(start, duration, kind, chosen, target_leader=leader)
    shapes = list(Shape) if nodes >= 3 else [Shape.MAJORITY_MINORITY]
    shape = rng.choice(shapes)
    if shape is Shape.BRIDGE:
        order = rng.sample(range(nodes), nodes)
        half = (nodes - 1) // 2
        return PlannedFault(start, duration, kind, (order[0], *sorted(order[1 : 1 + half])), shape)
    if shape is Shape.MAJORITY_MINORITY:
        count = rng.randint(1, minority)
        chosen = tuple(sorted(rng.sample(range(nodes), count)))
        return PlannedFault(start, duration, kind, chosen, shape)
    fallback = (rng.randrange(nodes),)
    return PlannedFault(start, duration, kind, fallback, shape, target_leader=True)


def describe_schedule(plan: Sequence[PlannedFault]) -> str:
    return "\n".join(fault.describe() for fault in plan)


def partition_links(shape: Shape, nodes: int, side: Sequence[int]) -> frozenset[Link]:
    """The directed links to cut for a partition of `nodes` nodes.

    For a bridge, `side[0]` is the bridge node and `side[1:]` one half; otherwise
    `side` is cut off from everyone else.
    """
    everyone = range(nodes)
    if shape is Shape.BRIDGE:
        bridge, half = side[0], set(side[1:])
        other = set(everyone) - half - {bridge}
        return frozenset(
            (i, j)
            for i in everyone
            for j in everyone
            if (i in half and j in other) or (i in other and j in half)
        )
    minority = set(side)
    return frozenset(
        (i, j)
        for i in everyone
        for j in everyone
        if i != j and ((i in minority) != (j in minority))
    )


@dataclass(slots=True)
class FaultRecord:
    """A fault as it happened: times in seconds since the run started."""

    kind: str
    description: str
    nodes: list[int]
    start_s: float
    end_s: float | None = None
    links_cut: int = 0


class Target(Protocol):
    """What the nemesis needs from a cluster; `ChaosCluster` provides it."""

    @property
    def nodes(self) -> int: ...

    def kill(self, index: int) -> None: ...
    def start(self, index: int) -> None: ...
    def pause(self, index: int) -> None: ...
    def resume(self, index: int) -> None: ...
    def set_cut(self, links: frozenset[Link]) -> None: ...
    async def leader(self) -> int | None: ...


@dataclass
class Nemesis:
    """Walks a schedule against a running cluster, one fault at a time."""

    target: Target
    plan: Sequence[PlannedFault]
    clock: Callable[[], float]
    on_event: Callable[[str, FaultRecord], None]
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    records: list[FaultRecord] = field(default_factory=list)
    _undo: Callable[[], None] | None = None
    _active: FaultRecord | None = None

    @property
    def active(self) -> FaultRecord | None:
        return self._active

    async def run(self) -> None:
        for fault in self.plan:
            await self.sleep(max(0.0, fault.start_s - self.clock()))
            await self._inflict(fault)
            await self.sleep(max(0.0, fault.start_s + fault.duration_s - self.clock()))
            self.heal_all()

    def heal_all(self) -> None:
        """Ends the active fault at once: reconnect, resume, restart."""
        undo, self._undo = self._undo, None
        if undo is not None:
            undo()
        record, self._active = self._active, None
        if record is not None:
            record.end_s = self.clock()
            self.on_event("end", record)

    async def _inflict(self, fault: PlannedFault) -> None:
        nodes = list(fault.nodes)
        if fault.target_leader:
            nodes = await self._resolve(fault)
        record = FaultRecord(fault.kind.value, "", [n + 1 for n in nodes], self.clock())
        self._undo = self._apply(fault, nodes, record)
        record.description = _describe(fault, record, self.target.nodes)
        self.records.append(record)
        self._active = record
        self.on_event("start", record)

    async def _resolve(self, fault: PlannedFault) -> list[int]:
        leader = await self.target.leader()
        if leader is None:
            return list(fault.nodes)
        if fault.shape is Shape.ISOLATE_FOLLOWER:
            followers = [n for n in range(self.target.nodes) if n != leader]
            return [followers[fault.nodes[0] % len(followers)]]
        return [leader]

    def _apply(
        self, fault: PlannedFault, nodes: list[int], record: FaultRecord
    ) -> Callable[[], None]:
        target = self.target
        if fault.kind in (FaultKind.KILL, FaultKind.RESTART):
            for node in nodes:
                target.kill(node)

            def start_again() -> None:
                for node in nodes:
                    target.start(node)

            return start_again
        if fault.kind is FaultKind.PAUSE:
            for node in nodes:
                target.pause(node)

            def resume() -> None:
                for node in nodes:
                    target.resume(node)

            return resume
        assert fault.shape is not None
        links = partition_links(fault.shape, target.nodes, nodes)
        target.set_cut(links)
        record.links_cut = len(links)
        return lambda: target.set_cut(frozenset())


def _describe(fault: PlannedFault, record: FaultRecord, nodes: int) -> str:
    names = ", ".join(str(n) for n in record.nodes)
    if fault.kind is FaultKind.RESTART:
        return "whole-cluster crash and restart (SIGKILL all)"
    if fault.kind is FaultKind.KILL:
        return f"SIGKILL node {names}"
    if fault.kind is FaultKind.PAUSE:
        return f"SIGSTOP node {names}"
    assert fault.shape is not None
    if fault.shape is Shape.BRIDGE:
        half = set(record.nodes[1:])
        other = sorted(set(range(1, nodes + 1)) - half - {record.nodes[0]})
        return (
            f"bridge: nodes {sorted(half)} and {other} cut apart, "
            f"node {record.nodes[0]} talks to both"
        )
    if fault.shape is Shape.ISOLATE_LEADER:
        return f"isolate leader {names}"
    if fault.shape is Shape.ISOLATE_FOLLOWER:
        return f"isolate follower {names}"
    return f"partition: nodes {names} from the majority"
