"""Divergence and repair in the simulator: one replica runs a service that is not
deterministic; the majority names it at a checkpoint, it asks the leader for a snapshot
(`auto_repair`) and rebuilds from it, while the healthy majority keeps agreeing. The
same `Replica` code paths as a live node (RepairWanted, a repair snapshot, restore and
re-apply), with seeds instead of processes."""

from __future__ import annotations

import random
from typing import Any

import pytest

from phalanx.core.types import NodeId
from phalanx.server.divergence import VerdictKind
from phalanx.service.context import ServiceContext
from phalanx.sim.clients import History, SimClient
from phalanx.sim.cluster import SimCluster, SimSettings
from phalanx.sim.services import SimKV

FAULTY = NodeId(3)


class FaultyKV(SimKV):
    """Stores every value of key "x" with a "!" appended: a replica that parts from
    the others at the first such write."""

    def on_message(self, ctx: ServiceContext, session_id: int, message: Any) -> Any:
        if isinstance(message, dict) and message.get("op") == "put" and message.get("key") == "x":
            message = {**message, "value": f"{message['value']}!"}
        return super().on_message(ctx, session_id, message)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_majority_names_the_faulty_replica_and_it_rebuilds_from_a_snapshot(seed: int) -> None:
    settings = SimSettings(checkpoint_every=5, snapshot_every=10, auto_repair=True)
    cluster = SimCluster(3, seed, settings=settings, faulty_services={FAULTY: FaultyKV})
    history = History()
    clients = [
        SimClient(c, cluster, history, random.Random(f"{seed}/{c}"), lanes=2, operations=60)
        for c in (1, 2)
    ]
    for client in clients:
        client.start()
    cluster.run_ticks(1500)
    assert sum(client.completed for client in clients) == 120

    healthy = [n for n in cluster.ids if n != FAULTY]
    named = [
        verdict
        for node in healthy
        for verdict in cluster.replica(node).divergence.decided.values()
        if verdict.kind is VerdictKind.OTHERS_DIVERGED
    ]
    assert named and all(verdict.faulty == (FAULTY,) for verdict in named)
    faulty = cluster.replica(FAULTY)
    assert faulty.repairs >= 1, "the faulty replica never rebuilt from the leader's snapshot"
    # The healthy majority agrees with itself throughout (the checker left only node 3
    # out), and ends at the same state.
    digests = {cluster.replica(n).container.state_digest() for n in healthy}
    assert len(digests) == 1
