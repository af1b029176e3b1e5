"""Majority vote over checkpoint digests names the faulty replica (the seed lesson)."""

from __future__ import annotations

from phalanx.core.types import Index, NodeId
from phalanx.server.divergence import DivergenceMonitor, VerdictKind

GOOD, BAD, LOG = b"good", b"bad", b"log"


def monitor(me: int, members: int) -> DivergenceMonitor:
    return DivergenceMonitor(NodeId(me), tuple(NodeId(i) for i in range(1, members + 1)))


def test_three_replicas_name_the_one_that_differs() -> None:
    healthy = monitor(1, 3)
    assert healthy.record(NodeId(1), Index(100), LOG, GOOD) is None  # alone: undecided
    assert healthy.record(NodeId(3), Index(100), LOG, BAD) is None  # 1 vs 1: undecided
    verdict = healthy.record(NodeId(2), Index(100), LOG, GOOD)
    assert verdict is not None and verdict.kind is VerdictKind.OTHERS_DIVERGED
    assert verdict.faulty == (3,)
    faulty = monitor(3, 3)
    faulty.record(NodeId(3), Index(100), LOG, BAD)
    faulty.record(NodeId(1), Index(100), LOG, GOOD)
    verdict = faulty.record(NodeId(2), Index(100), LOG, GOOD)
    assert verdict is not None and verdict.kind is VerdictKind.SELF_DIVERGED


def test_five_replicas_decide_as_soon_as_a_majority_agrees() -> None:
    node = monitor(1, 5)
    for member in (1, 2):
        node.record(NodeId(member), Index(7), LOG, GOOD)
    node.record(NodeId(4), Index(7), LOG, BAD)
    verdict = node.record(NodeId(3), Index(7), LOG, GOOD)
    assert verdict is not None and verdict.faulty == (4,)


def test_two_replicas_that_disagree_cannot_tell_which() -> None:
    node = monitor(1, 2)
    node.record(NodeId(1), Index(5), LOG, GOOD)
    verdict = node.record(NodeId(2), Index(5), LOG, BAD)
    assert verdict is not None and verdict.kind is VerdictKind.UNDECIDABLE
    assert "cannot tell which" in verdict.describe()


def test_agreement_is_reported_once_everyone_reported_and_only_once() -> None:
    node = monitor(2, 3)
    node.record(NodeId(1), Index(9), LOG, GOOD)
    assert node.record(NodeId(2), Index(9), LOG, GOOD) is None  # node 3 may still differ
    verdict = node.record(NodeId(3), Index(9), LOG, GOOD)
    assert verdict is not None and verdict.kind is VerdictKind.AGREE
    assert node.record(NodeId(3), Index(9), LOG, GOOD) is None  # nothing new


def test_a_repaired_replica_reporting_again_turns_the_verdict_around() -> None:
    node = monitor(3, 3)
    node.record(NodeId(1), Index(4), LOG, GOOD)
    node.record(NodeId(2), Index(4), LOG, GOOD)
    assert node.record(NodeId(3), Index(4), LOG, BAD) is not None
    verdict = node.record(NodeId(3), Index(4), LOG, GOOD)
    assert verdict is not None and verdict.kind is VerdictKind.AGREE


def test_differing_logs_are_flagged_as_a_bug_not_a_service_fault() -> None:
    node = monitor(1, 3)
    node.record(NodeId(1), Index(4), b"a", GOOD)
    node.record(NodeId(2), Index(4), b"a", GOOD)
    verdict = node.record(NodeId(3), Index(4), b"b", GOOD)
    assert verdict is not None and verdict.kind is VerdictKind.LOG_MISMATCH


def test_tracked_checkpoints_are_bounded() -> None:
    node = monitor(1, 3)
    for index in range(1, 100):
        node.record(NodeId(2), Index(index), LOG, GOOD)
    assert len(node.reports) <= 16
