"""A hand-driven cluster of `Raft` objects for message-level unit tests.

Unlike the simulator, nothing is delivered unless the test says so: the test owns the
order of every message, which is what unit tests that cite paper rules need.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from phalanx.core import Message, Raft, RaftConfig, Role
from phalanx.core.types import NodeId


class Harness:
    def __init__(self, nodes: int = 3, **config: object) -> None:
        self.ids = tuple(NodeId(i) for i in range(1, nodes + 1))
        self.nodes: dict[NodeId, Raft] = {
            node_id: Raft(
                RaftConfig(node_id=node_id, voters=self.ids, **config),  # type: ignore[arg-type]
                random.Random(node_id),
            )
            for node_id in self.ids
        }
        self.dropped: set[NodeId] = set()

    def __getitem__(self, node_id: int) -> Raft:
        return self.nodes[NodeId(node_id)]

    def persist_all(self) -> None:
        """What a caller does with a Ready: entries become durable."""
        for raft in self.nodes.values():
            raft.log.stable_to(raft.log.last_index(), raft.log.last_term())
            raft.on_persisted(raft.log.stable)

    def take(self, node_id: int) -> list[Message]:
        raft = self[node_id]
        messages, raft.messages = raft.messages, []
        return messages

    def deliver(self, keep: Callable[[Message], bool] = lambda m: True, rounds: int = 50) -> int:
        """Persists and delivers until quiet; returns how many messages were delivered."""
        delivered = 0
        for _ in range(rounds):
            self.persist_all()
            pending = [m for node_id in self.ids for m in self.take(node_id)]
            if not pending:
                return delivered
            for message in pending:
                if message.to in self.dropped or message.from_id in self.dropped:
                    continue
                if keep(message):
                    self.nodes[message.to].step(message)
                    delivered += 1
        raise AssertionError("cluster did not quiesce")

    def elect(self, node_id: int) -> None:
        self[node_id].campaign()
        self.deliver()
        assert self[node_id].role is Role.LEADER
