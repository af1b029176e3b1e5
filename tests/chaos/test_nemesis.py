"""The nemesis schedule is seeded and repeatable, and the nemesis undoes what it does."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from phalanx.chaos.nemesis import (
    FAULT_S,
    FaultKind,
    FaultRecord,
    Nemesis,
    PlannedFault,
    Shape,
    describe_schedule,
    parse_kinds,
    plan_schedule,
)
from phalanx.chaos.proxy import Link

ALL = tuple(FaultKind)


def test_the_same_seed_gives_the_same_schedule() -> None:
    first = plan_schedule(42, ALL, 120.0, 5)
    again = plan_schedule(42, ALL, 120.0, 5)
    assert first == again
    assert describe_schedule(first) == describe_schedule(again)
    assert first != plan_schedule(43, ALL, 120.0, 5)


@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize("seed", range(20))
def test_schedules_keep_faults_apart_inside_the_run_and_hit_a_minority(
    seed: int, nodes: int
) -> None:
    run_s = 60.0
    plan = plan_schedule(seed, ALL, run_s, nodes)
    assert plan
    for fault in plan:
        assert fault.start_s > 0 and fault.start_s + fault.duration_s <= run_s + 1e-6
        assert all(0 <= node < nodes for node in fault.nodes)
        if fault.kind in (FaultKind.KILL, FaultKind.PAUSE):
            assert 1 <= len(fault.nodes) <= (nodes - 1) // 2
        if fault.kind is FaultKind.RESTART:
            assert fault.nodes == tuple(range(nodes))
        if fault.kind is FaultKind.PARTITION:
            assert fault.shape is not None
    for before, after in itertools.pairwise(plan):
        assert before.start_s + before.duration_s < after.start_s


def test_one_round_deals_every_kind_once() -> None:
    for seed in range(10):
        plan = plan_schedule(seed, ALL, 60.0, 3)
        assert {fault.kind for fault in plan[:4]} == set(ALL)


def test_no_kinds_no_faults_and_short_runs_fit() -> None:
    assert plan_schedule(1, (), 60.0, 3) == []
    assert plan_schedule(1, ALL, 1.0, 3) == []
    short = plan_schedule(1, (FaultKind.PARTITION,), 10.0, 3)
    assert short and all(fault.duration_s >= FAULT_S[0] - 1e-6 for fault in short[:-1])


def test_parse_kinds() -> None:
    assert parse_kinds("kill,pause, partition,restart") == ALL
    assert parse_kinds("none") == ()
    assert parse_kinds("pause,pause") == (FaultKind.PAUSE,)
    with pytest.raises(ValueError, match="unknown nemesis 'crash'"):
        parse_kinds("kill,crash")


class FakeCluster:
    """Records what the nemesis does, in order."""

    def __init__(self, nodes: int, leader: int | None) -> None:
        self._nodes = nodes
        self._leader = leader
        self.actions: list[tuple[str, object]] = []

    @property
    def nodes(self) -> int:
        return self._nodes

    def kill(self, index: int) -> None:
        self.actions.append(("kill", index))

    def start(self, index: int) -> None:
        self.actions.append(("start", index))

    def pause(self, index: int) -> None:
        self.actions.append(("pause", index))

    def resume(self, index: int) -> None:
        self.actions.append(("resume", index))

    def set_cut(self, links: frozenset[Link]) -> None:
        self.actions.append(("cut", frozenset(links)))

    async def leader(self) -> int | None:
        return self._leader


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def run_nemesis(cluster: FakeCluster, plan: list[PlannedFault]) -> list[tuple[str, FaultRecord]]:
    time = FakeTime()
    events: list[tuple[str, FaultRecord]] = []
    nemesis = Nemesis(
        cluster, plan, time.clock, lambda phase, record: events.append((phase, record)),
        sleep=time.sleep,
    )  # fmt: skip
    asyncio.run(nemesis.run())
    assert nemesis.active is None
    assert [record for _, record in events[::2]] == nemesis.records
    return events


def test_the_nemesis_inflicts_each_fault_and_undoes_it() -> None:
    cluster = FakeCluster(3, leader=2)
    plan = [
        PlannedFault(1.0, 2.0, FaultKind.KILL, (0,), target_leader=True),
        PlannedFault(4.0, 2.0, FaultKind.PAUSE, (1,)),
        PlannedFault(7.0, 2.0, FaultKind.PARTITION, (0,), Shape.ISOLATE_FOLLOWER, True),
        PlannedFault(10.0, 1.0, FaultKind.RESTART, (0, 1, 2)),
    ]
    events = run_nemesis(cluster, plan)
    isolated_0 = frozenset({(0, 1), (1, 0), (0, 2), (2, 0)})
    assert cluster.actions == [
        ("kill", 2), ("start", 2),  # "the leader" resolved to node index 2
        ("pause", 1), ("resume", 1),
        ("cut", isolated_0), ("cut", frozenset()),  # a follower, not the leader
        ("kill", 0), ("kill", 1), ("kill", 2), ("start", 0), ("start", 1), ("start", 2),
    ]  # fmt: skip
    records = [record for phase, record in events if phase == "end"]
    assert [(r.kind, r.start_s, r.end_s) for r in records] == [
        ("kill", 1.0, 3.0), ("pause", 4.0, 6.0), ("partition", 7.0, 9.0), ("restart", 10.0, 11.0),
    ]  # fmt: skip
    assert records[0].description == "SIGKILL node 3"
    assert records[2].links_cut == 4


def test_without_a_known_leader_the_planned_node_is_the_target() -> None:
    cluster = FakeCluster(3, leader=None)
    run_nemesis(cluster, [PlannedFault(0.5, 1.0, FaultKind.PAUSE, (1,), target_leader=True)])
    assert cluster.actions == [("pause", 1), ("resume", 1)]
