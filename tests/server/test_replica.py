"""`Replica` on its own: the batch contract both drivers rely on, with no I/O at all.

Three replicas are wired by hand (messages moved between them by the test), so every
step of a batch is visible: what may leave before the sync, what only after it, and
that a client hears back only from an applied entry."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec

from phalanx.core.messages import (
    AppendRequest,
    AppendResponse,
    HeartbeatRequest,
    Message,
    VoteRequest,
    VoteResponse,
)
from phalanx.core.raft import Role
from phalanx.core.types import NodeId
from phalanx.server.config import NodeConfig
from phalanx.server.replica import Batch, Replica, split_messages
from phalanx.sim.services import SimKV
from phalanx.transport.wire import (
    ClientReply,
    CommandRequest,
    OpenSessionRequest,
    ReplyStatus,
)

IDS = (NodeId(1), NodeId(2), NodeId(3))


class FakeClock:
    def __init__(self) -> None:
        self.now_ms = 1_000_000

    def wall_ms(self) -> int:
        return self.now_ms

    def mono_ms(self) -> float:
        return float(self.now_ms)


def make_replica(node_id: NodeId, clock: FakeClock, **settings: object) -> Replica:
    config = NodeConfig(
        node_id=node_id,
        members={n: ("test", int(n)) for n in IDS},
        data_dir=Path("/nonexistent"),
        service="phalanx.sim.services:SimKV",
        election_timeout_ticks=10,
        heartbeat_interval_ticks=1,
        **settings,  # type: ignore[arg-type]
    )
    return Replica(config, SimKV(), clock=clock, rng=random.Random(int(node_id)))


class Wire:
    """Three replicas; batches carried out in full, messages delivered by hand."""

    def __init__(self, **settings: object) -> None:
        self.clock = FakeClock()
        self.replicas = {n: make_replica(n, self.clock, **settings) for n in IDS}
        self.in_flight: list[Message] = []
        self.batches: dict[NodeId, list[Batch]] = {n: [] for n in IDS}
        self.replies: list[tuple[object, ClientReply]] = []

    def drain(self, node: NodeId) -> None:
        replica = self.replicas[node]
        while (batch := replica.next_batch()) is not None:
            self.batches[node].append(batch)
            self.in_flight += batch.send_now + batch.send_after_sync
            replica.persisted(batch)
            self._outbox(node)
        self._outbox(node)

    def _outbox(self, node: NodeId) -> None:
        outbox = self.replicas[node].take_outbox()
        self.in_flight += outbox.to_peers
        self.replies += [
            (client, reply) for client, reply in outbox.to_clients if isinstance(reply, ClientReply)
        ]

    def deliver_all(self) -> None:
        while self.in_flight:
            message, *self.in_flight = self.in_flight
            self.replicas[message.to].on_peer_message(message)
            self.drain(message.to)

    def elect(self, node: NodeId) -> None:
        for _ in range(40):
            self.replicas[node].tick()
            self.drain(node)
            self.deliver_all()
            if self.replicas[node].role is Role.LEADER:
                return
        raise AssertionError(f"node {node} did not win")


def test_split_messages_lets_only_a_leaders_appends_leave_before_the_sync() -> None:
    append = AppendRequest(2, NodeId(1), NodeId(2), 0, 0, (), 0)
    heartbeat = HeartbeatRequest(2, NodeId(1), NodeId(2), 0)
    vote = VoteResponse(2, NodeId(2), NodeId(1), True, False)
    ack = AppendResponse(2, NodeId(2), NodeId(1), 5)
    ask = VoteRequest(2, NodeId(1), NodeId(2), 0, 0, False, False)
    now, snapshots, after = split_messages([append, vote, heartbeat, ack, ask])
    assert now == [append, heartbeat]
    assert snapshots == []
    assert after == [vote, ack, ask]


def test_votes_and_acknowledgements_wait_for_the_sync_and_the_sync_is_asked_for() -> None:
    wire = Wire()
    wire.elect(NodeId(1))
    for node in (NodeId(2), NodeId(3)):
        granting = [
            b
            for b in wire.batches[node]
            if any(
                isinstance(m, VoteResponse) and m.granted and not m.pre_vote
                for m in b.send_after_sync
            )
        ]
        assert granting, f"node {node} granted no vote"
        for batch in granting:
            # The vote is a promise about a durable term and vote: the batch syncs them.
            assert batch.sync and batch.hard_state is not None
            assert not any(isinstance(m, VoteResponse) for m in batch.send_now)
        for batch in wire.batches[node]:
            assert not any(isinstance(m, AppendResponse) for m in batch.send_now)


def test_a_client_is_answered_only_from_an_applied_entry() -> None:
    wire = Wire()
    wire.elect(NodeId(1))
    leader = wire.replicas[NodeId(1)]
    leader.on_client_request("client", OpenSessionRequest(1))
    batch = leader.next_batch()
    assert batch is not None and batch.entries  # the open-session entry, proposed
    assert leader.take_outbox().to_clients == []  # nothing said before it applies
    wire.in_flight += batch.send_now + batch.send_after_sync
    leader.persisted(batch)
    wire._outbox(NodeId(1))
    assert wire.replies == []  # persisted on the leader alone: not committed yet
    wire.deliver_all()
    (client, opened), *_ = wire.replies
    assert client == "client" and opened.status is ReplyStatus.OK
    session = opened.session_id
    payload = msgspec.msgpack.encode({"op": "put", "key": "k", "value": "v", "id": "1"})
    leader.on_client_request("client", CommandRequest(2, session, 1, 1, payload))
    wire.drain(NodeId(1))
    wire.deliver_all()
    put = [reply for _, reply in wire.replies if reply.request_id == 2]
    assert [r.status for r in put] == [ReplyStatus.OK]
    assert msgspec.msgpack.decode(put[0].payload) == {"ok": True}
    # A retry of the applied command is answered from the reply cache: no new entry.
    last = leader.raw.raft.log.last_index()
    leader.on_client_request("client", CommandRequest(3, session, 1, 1, payload))
    wire.drain(NodeId(1))
    assert leader.raw.raft.log.last_index() == last
    assert [r.status for _, r in wire.replies if r.request_id == 3] == [ReplyStatus.OK]


def test_a_follower_turns_clients_to_the_leader() -> None:
    wire = Wire()
    wire.elect(NodeId(1))
    follower = wire.replicas[NodeId(2)]
    follower.on_client_request("c", OpenSessionRequest(7))
    (client, reply), *_ = follower.take_outbox().to_clients
    assert isinstance(reply, ClientReply)
    assert (client, reply.status, reply.leader_hint) == ("c", ReplyStatus.NOT_LEADER, "test:1")
    assert follower.next_batch() is None  # nothing proposed


def test_admission_control_refuses_beyond_the_pending_bound() -> None:
    wire = Wire(max_pending_proposals=2)
    wire.elect(NodeId(1))
    leader = wire.replicas[NodeId(1)]
    for request_id in (1, 2, 3):
        leader.on_client_request("c", OpenSessionRequest(request_id))
    refused = [r for _, r in leader.take_outbox().to_clients if isinstance(r, ClientReply)]
    assert [(r.request_id, r.status) for r in refused] == [(3, ReplyStatus.RETRY)]
    assert "leader busy" in refused[0].message
    assert leader.refused_busy == 1


def test_a_snapshot_is_asked_for_and_compaction_follows_it() -> None:
    wire = Wire(snapshot_every_entries=3, snapshot_compaction_margin=0)
    wire.elect(NodeId(1))
    leader = wire.replicas[NodeId(1)]
    for request_id in range(1, 6):
        leader.on_client_request("c", OpenSessionRequest(request_id))
        batch = leader.next_batch()
        assert batch is not None
        wire.in_flight += batch.send_now + batch.send_after_sync
        leader.persisted(batch)
        outbox = leader.take_outbox()
        wire.in_flight += outbox.to_peers
        wire.deliver_all()
        if outbox.take_snapshot:
            break
    else:
        raise AssertionError("no snapshot asked for")
    meta = leader.snapshot_point()
    assert meta is not None and meta.index == leader.container.applied_index
    leader.snapshot_started()
    leader.snapshot_taken(meta)
    assert leader.snapshot_point() is None  # nothing new since
    leader.on_client_request("c", OpenSessionRequest(99))
    batch = leader.next_batch()
    assert batch is not None
    # Never past the previous snapshot (there was none): nothing to drop yet.
    assert batch.compact_log_to == 0
    leader.persisted(batch)
