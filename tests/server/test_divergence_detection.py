"""The planted fault is named at the first checkpoint after it strikes, by feeding the
same log to two correct replicas and one `FaultyBank` (the cluster's code path: the
container's checkpoints and the node's majority vote)."""

from __future__ import annotations

import random

import msgspec

from phalanx.core.types import Entry, EntryKind, Index, NodeId, Term
from phalanx.examples.bank import Bank
from phalanx.examples.faulty import FaultyBank
from phalanx.server.divergence import DivergenceMonitor, VerdictKind
from phalanx.service.container import ContainerLimits, ServiceContainer
from phalanx.service.envelope import Command, OpenSession, encode_envelope

CHECKPOINT_EVERY = 50
ACCOUNTS = [f"a{i}" for i in range(5)]


def log_entries(count: int, seed: int) -> list[Entry]:
    rng = random.Random(seed)
    envelopes: list[object] = [OpenSession(0)]
    commands = [{"op": "open", "account": a} for a in ACCOUNTS]
    commands += [{"op": "deposit", "account": a, "amount": 10_000} for a in ACCOUNTS]
    while len(commands) < count:
        source, target = rng.sample(ACCOUNTS, 2)
        commands.append({"op": "transfer", "from": source, "to": target, "amount": 1})
    for seq, command in enumerate(commands, start=1):
        envelopes.append(Command(seq, 1, seq, seq, msgspec.msgpack.encode(command)))
    return [
        Entry(Term(1), Index(i + 1), EntryKind.COMMAND, encode_envelope(e))  # type: ignore[arg-type]
        for i, e in enumerate(envelopes)
    ]


def test_faulty_replica_is_named_at_the_first_checkpoint_after_its_fault() -> None:
    limits = ContainerLimits(checkpoint_every_entries=CHECKPOINT_EVERY)
    faulty_service = FaultyBank()
    containers = {
        NodeId(1): ServiceContainer(Bank(), limits),
        NodeId(2): ServiceContainer(Bank(), limits),
        NodeId(3): ServiceContainer(faulty_service, limits),
    }
    monitors = {n: DivergenceMonitor(n, tuple(containers)) for n in containers}
    first_skip: int | None = None
    verdicts = []
    for entry in log_entries(5000, seed=3):
        skipped_before = faulty_service.skipped
        for container in containers.values():
            container.apply(entry)
        if first_skip is None and faulty_service.skipped > skipped_before:
            first_skip = entry.index
        for node, container in containers.items():
            for checkpoint in container.new_checkpoints:
                for monitor in monitors.values():
                    verdict = monitor.record(
                        node, checkpoint.index, checkpoint.log_digest, checkpoint.state_digest
                    )
                    if verdict is not None and verdict.kind is not VerdictKind.AGREE:
                        verdicts.append((monitor.node_id, verdict))
            container.new_checkpoints.clear()
        if verdicts:
            break
    assert first_skip is not None, "the planted fault never struck"
    expected_index = -(-first_skip // CHECKPOINT_EVERY) * CHECKPOINT_EVERY
    assert {v.index for _, v in verdicts} == {expected_index}
    kinds = {node: v.kind for node, v in verdicts}
    assert kinds[NodeId(3)] is VerdictKind.SELF_DIVERGED
    assert all(v.faulty == (3,) for _, v in verdicts)


def test_correct_replicas_never_raise_an_alarm() -> None:
    limits = ContainerLimits(checkpoint_every_entries=CHECKPOINT_EVERY)
    containers = {NodeId(n): ServiceContainer(Bank(), limits) for n in (1, 2, 3)}
    monitor = DivergenceMonitor(NodeId(1), tuple(containers))
    for entry in log_entries(3000, seed=4):
        for container in containers.values():
            container.apply(entry)
    for node, container in containers.items():
        for checkpoint in container.new_checkpoints:
            verdict = monitor.record(
                node, checkpoint.index, checkpoint.log_digest, checkpoint.state_digest
            )
            assert verdict is None or verdict.kind is VerdictKind.AGREE
