"""Issue 11 with real node processes: replicas rebuilt from every snapshot reach the
live digests (item 1), bad commands cannot stop or freeze the cluster (item 2), and
a node refuses to start with other members than its data was written with (item 3)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from phalanx.client import AsyncClient, ClientError
from phalanx.server.identity import IDENTITY_FILE
from phalanx.server.replay import rebuild_all
from phalanx.transport.wire import (
    ClientReply,
    CommandRequest,
    Hello,
    OpenSessionRequest,
    ReplyStatus,
    Welcome,
)

from .harness import CALL_TIMEOUT_S, DEFAULT_CLUSTER_ID, LiveCluster, RawConnection

BAD = "tests.service.bad_services"


def configure(cluster: LiveCluster, **settings: Any) -> None:
    cluster.configs = [dataclasses.replace(c, **settings) for c in cluster.configs]


async def retrying_load(
    members: list[str], seconds: float, clients: int, in_flight: int, seed: int
) -> tuple[int, int]:
    """Many commands in flight with an attempt timeout far below a commit under load,
    so retries of the same sequence numbers land in the log late and out of order.
    Returns (commands answered, attempts the clients retried)."""
    rng = random.Random(seed)
    done = errors = 0
    stop_at = time.monotonic() + seconds

    async def worker(client: AsyncClient, prefix: str) -> None:
        nonlocal done, errors
        while time.monotonic() < stop_at:
            key = f"{prefix}{rng.randint(0, 50)}"
            command: dict[str, Any] = (
                {"op": "append", "key": key, "value": rng.randint(0, 9)}
                if rng.random() < 0.5
                else {"op": "put", "key": key, "value": rng.randint(0, 999)}
            )
            try:
                await client.call(command, timeout=CALL_TIMEOUT_S)
                done += 1
            except ClientError:
                errors += 1

    opened = [AsyncClient(members, attempt_timeout=rng.choice((0.1, 0.2))) for _ in range(clients)]
    try:
        async with asyncio.TaskGroup() as group:
            for number, client in enumerate(opened):
                for _ in range(in_flight):
                    group.create_task(worker(client, f"c{number}-"))
    finally:
        for client in opened:
            await client.close()
    return done, sum(client.retries for client in opened)


def pause_then_kill_leaders(cluster: LiveCluster) -> None:
    """While the load runs: the leader paused past the clients' attempt timeouts (they
    retry elsewhere while its entries may still commit), then a leader killed with
    commands in flight, and restarted."""
    time.sleep(1.5)
    leader = cluster.wait_for_leader()
    process = cluster.processes[leader]
    assert process is not None
    process.send_signal(signal.SIGSTOP)
    time.sleep(0.6)
    process.send_signal(signal.SIGCONT)
    time.sleep(1.5)
    leader = cluster.wait_for_leader()
    cluster.kill(leader)
    time.sleep(0.5)
    cluster.start(leader)


def test_replicas_rebuilt_from_every_snapshot_reach_the_live_digests(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    cluster = make_cluster(3)
    configure(
        cluster,
        # Every snapshot is rebuilt and replayed to the end: cost grows as snapshots
        # times log length, so not too many.
        snapshot_every_entries=1000,
        snapshots_keep=1000,
        snapshot_compaction_margin=10**9,  # keep the whole log, so every snapshot replays
        max_replies_per_session=16,  # small: the cache bound decides outcomes often
        checkpoint_every_entries=200,
    )
    cluster.start_all()
    cluster.wait_for_leader()
    nemesis = threading.Thread(target=pause_then_kill_leaders, args=(cluster,))
    nemesis.start()
    try:
        done, retries = asyncio.run(
            retrying_load(cluster.addresses, 8.0, clients=8, in_flight=10, seed=1)
        )
    finally:
        nemesis.join()
    statuses = cluster.wait_converged()
    print(f"load: {done} commands answered; statuses {statuses}", file=sys.stderr)
    assert done > 300
    # The pause and the kill made the clients retry: some retries reach the log late
    # and out of order (how many depends on timing; the clients count them).
    assert retries > 0
    cluster.assert_same_digests(statuses)
    for status in statuses:
        assert status["diverged"] is None, status
    for index in range(3):
        assert cluster.terminate(index) == 0
    rebuilt_total = 0
    for index, status in enumerate(statuses):
        live = (status["log_digest"], status["state_digest"], status["outcome_digest"])
        rebuilds = rebuild_all(cluster.data_dir(index), up_to=status["applied_index"])
        assert len(rebuilds) >= 3, f"node {index + 1} took too few snapshots to prove much"
        for rebuilt in rebuilds:
            assert rebuilt.digests() == live, (
                f"node {index + 1} rebuilt from snapshot {rebuilt.start} differs from live"
            )
        rebuilt_total += len(rebuilds)
    print(
        f"replay check: {rebuilt_total} rebuilds from snapshots over 3 nodes, each replayed to "
        f"index {statuses[0]['applied_index']}, all digests equal to the live ones",
        file=sys.stderr,
    )


def test_bad_commands_get_error_replies_and_the_cluster_keeps_serving(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    cluster = make_cluster(3, service=f"{BAD}:Misbehaving")
    cluster.start_all()
    cluster.wait_for_leader()
    with cluster.client(timeout=CALL_TIMEOUT_S) as client:
        for op, error in (
            ("huge", "unencodable_reply"),
            ("object", "unencodable_reply"),
            ("exit", "service_exception"),
            ("interrupt", "service_exception"),
        ):
            reply = client.call({"op": op})
            assert reply["ok"] is False and reply["error"] == error, reply
            cluster.put_and_check(client, f"after-{op}", op)
    statuses = cluster.wait_converged()
    cluster.assert_same_digests(statuses)
    assert all(cluster.running(index) for index in range(3))
    # A restart replays the bad commands to the same error replies: no freeze, no exit.
    for index in range(3):
        assert cluster.terminate(index) == 0
    cluster.start_all()
    cluster.wait_for_leader()
    with cluster.client(timeout=CALL_TIMEOUT_S) as client:
        assert client.call({"op": "get", "key": "after-exit"})["value"] == "exit"
    cluster.assert_same_digests(cluster.wait_converged())


def test_out_of_memory_in_the_service_stops_the_node_naming_the_entry(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    cluster = make_cluster(3, service=f"{BAD}:Misbehaving")
    cluster.start_all()
    cluster.wait_for_leader()
    # Every replica stops at that entry: nobody is left to answer.
    with cluster.client(timeout=3.0) as client, contextlib.suppress(ClientError):
        client.call({"op": "oom"})

    # Every node that applies the entry stops (one may never learn it committed).
    def majority_stopped() -> list[int] | None:
        stopped = [i for i in range(3) if not cluster.running(i)]
        return stopped if len(stopped) >= 2 else None

    stopped = cluster.wait_until(majority_stopped, "a majority stops", 30.0)
    for index in stopped:
        process = cluster.processes[index]
        assert process is not None and process.returncode == 5
        text = cluster.log_text(index)
        assert "service Misbehaving failed on log entry" in text
        assert "MemoryError" in text


def test_a_state_that_cannot_be_digested_and_a_snapshot_that_fails_do_not_stop_serving(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    for service in ("UnencodableState", "FailingSnapshot"):
        cluster = make_cluster(3, service=f"{BAD}:{service}")
        configure(cluster, checkpoint_every_entries=10, snapshot_every_entries=20)
        cluster.start_all()
        cluster.wait_for_leader()
        with cluster.client(timeout=CALL_TIMEOUT_S) as client:
            for i in range(60):
                cluster.put_and_check(client, f"k{i}", i)
        statuses = cluster.wait_converged()
        assert all(cluster.running(index) for index in range(3))
        if service == "UnencodableState":
            assert all("TypeError" in (s["state_digest_error"] or "") for s in statuses)
            assert "cannot be digested" in cluster.log_text(0)
        else:
            assert all(s["snapshot_error"] for s in statuses)
            assert all(s["snapshots_taken"] == 0 for s in statuses)
            assert "snapshot is broken in this service" in cluster.log_text(0)


def test_a_node_refuses_to_start_with_other_members_than_its_data(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_for_leader()
    with cluster.client(timeout=CALL_TIMEOUT_S) as client:
        cluster.put_and_check(client, "before", 1)
    assert cluster.terminate(0) == 0
    assert (cluster.data_dir(0) / IDENTITY_FILE).exists()
    real = cluster.configs[0]
    alone = {real.node_id: real.members[real.node_id]}  # the typo: only itself
    cluster.configs[0] = dataclasses.replace(real, members=alone)
    text = cluster.start_expecting_refusal(0, 2)
    assert "invalid setting 'members'" in text
    assert cluster.members in text  # the recorded members, named in full
    assert "is now leader" not in text
    # The same node with the right members rejoins and has every write.
    cluster.configs[0] = real
    cluster.start(0)
    statuses = cluster.wait_converged()
    cluster.assert_same_digests(statuses)


def test_the_issues_reply_cache_case_replays_identically_from_a_snapshot_between(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    """Issue 11's reproduction, on real nodes: a session caching 3 replies gets seqs
    2, 1, 3 in that order, every node takes a snapshot, then seq 4 acknowledges 1.
    Forgetting "from the front of the dict" kept reply 1 live (seq 4 refused: too many
    in flight) but not in a node rebuilt from that snapshot (seq 4 applied)."""
    cluster = make_cluster(3)
    configure(cluster, max_replies_per_session=3, snapshot_every_entries=0)
    cluster.start_all()
    leader = cluster.wait_for_leader()
    put = msgspec.msgpack.encode({"op": "append", "key": "k", "value": "x"})
    with RawConnection(cluster.addresses[leader]) as raw:
        raw.send(Hello(DEFAULT_CLUSTER_ID, "client"))
        assert isinstance(raw.receive(), Welcome)
        raw.send(OpenSessionRequest(1))
        opened = raw.receive()
        assert isinstance(opened, ClientReply) and opened.status is ReplyStatus.OK
        session = opened.session_id
        for request_id, seq in enumerate((2, 1, 3), start=2):
            raw.send(CommandRequest(request_id, session, seq, 1, put))
            reply = raw.receive()
            assert isinstance(reply, ClientReply) and reply.status is ReplyStatus.OK, reply
        cluster.wait_converged()

        async def snapshot_everywhere() -> None:
            for address in cluster.addresses:
                async with AsyncClient([address]) as client:
                    index, _, note = await client.snapshot()
                    assert index > 0, note

        asyncio.run(snapshot_everywhere())
        raw.send(CommandRequest(9, session, 4, 2, put))  # acknowledges reply 1
        fourth = raw.receive()
        assert isinstance(fourth, ClientReply)
        assert fourth.status is ReplyStatus.OK, fourth  # reply 1 forgotten: room for 4
    statuses = cluster.wait_converged()
    for index in range(3):
        assert cluster.terminate(index) == 0
    for index, status in enumerate(statuses):
        live = (status["log_digest"], status["state_digest"], status["outcome_digest"])
        rebuilds = rebuild_all(cluster.data_dir(index), up_to=status["applied_index"])
        assert any(r.start.index > 0 for r in rebuilds), "no snapshot was rebuilt from"
        for rebuilt in rebuilds:
            assert rebuilt.digests() == live, f"node {index + 1} from {rebuilt.start}"


def test_a_snapshot_from_the_leader_that_the_service_cannot_restore_stops_the_node(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    """The restore happens while the replica prepares a batch (before any of it is
    carried out); what escapes there stops the node as a batch would (exit 5), rather
    than leaving it half-running, unable to take another batch."""
    cluster = make_cluster(3, service=f"{BAD}:RefusingRestore")
    configure(cluster, snapshot_every_entries=20, snapshot_compaction_margin=2)
    cluster.start_all()
    cluster.wait_for_leader()
    laggard = 2
    cluster.kill(laggard)
    with cluster.client(timeout=CALL_TIMEOUT_S) as client:
        for i in range(80):
            cluster.put_and_check(client, f"k{i}", i)
    cluster.start(laggard)  # behind the leader's compacted log: InstallSnapshot

    def stopped() -> bool | None:
        return True if not cluster.running(laggard) else None

    cluster.wait_until(stopped, "the laggard stops", 30.0)
    process = cluster.processes[laggard]
    assert process is not None and process.returncode == 5
    text = cluster.log_text(laggard)
    assert "restore()" in text and "restore is broken in this service" in text
    assert all(cluster.running(index) for index in range(3) if index != laggard)
