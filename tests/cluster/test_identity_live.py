"""What a hostile new user found after issue 11's first pass, with real processes: a
data directory without `cluster.json`, nodes started for different clusters on the
same addresses, a client window wider than the cluster's reply cache, a service whose
`snapshot()` fails on request, and a connection flood under a low open-file limit."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Callable

from phalanx.client import AsyncClient
from phalanx.server.identity import IDENTITY_FILE
from phalanx.server.local import node_command
from phalanx.transport.wire import Hello, encode_frame

from .harness import CALL_TIMEOUT_S, LiveCluster

BAD = "tests.service.bad_services"


def test_a_log_without_cluster_json_is_refused_unless_adopted(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_for_leader()
    with cluster.client() as client:
        cluster.put_and_check(client, "before", "1")
    assert cluster.terminate(0) == 0
    (cluster.data_dir(0) / IDENTITY_FILE).unlink()  # an older phalanx's directory
    real = cluster.configs[0]
    cluster.configs[0] = dataclasses.replace(real, members={1: real.members[1]})
    text = cluster.start_expecting_refusal(0, 2)
    assert "holds a log" in text and "adopt_identity" in text
    assert not (cluster.data_dir(0) / IDENTITY_FILE).exists()
    # Adopted with the members it was written with, it rejoins and has every write.
    cluster.configs[0] = dataclasses.replace(real, adopt_identity=True)
    cluster.start(0)
    cluster.assert_same_digests(cluster.wait_converged())
    assert (cluster.data_dir(0) / IDENTITY_FILE).exists()


def test_nodes_started_for_different_clusters_refuse_each_other(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    """Node 3 wiped and restarted with settings that decide outcomes differently: the
    others must not replicate their log into it, nor it into them."""
    cluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_for_leader()
    with cluster.client() as client:
        cluster.put_and_check(client, "k", "v")
    assert cluster.terminate(2) == 0
    for path in sorted(cluster.data_dir(2).rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    cluster.configs[2] = dataclasses.replace(cluster.configs[2], session_timeout_ms=5_000)
    cluster.start(2)
    cluster.wait_for_log_line(2, "was started for another cluster")
    status = cluster.status(2)
    assert status is not None and status["applied_index"] == 0, status
    with cluster.client() as client:
        cluster.put_and_check(client, "still", "served")  # the other two go on


def test_the_client_window_follows_the_clusters_reply_cache(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    """A cluster that caches 32 replies per session tells clients so: a client with
    the default window then never sends what would be refused through the log."""
    cluster = make_cluster(3)
    cluster.configs = [dataclasses.replace(c, max_replies_per_session=32) for c in cluster.configs]
    cluster.start_all()
    cluster.wait_for_leader()
    before = cluster.wait_converged()[0]

    async def burst() -> int:
        async with AsyncClient(cluster.addresses, timeout=CALL_TIMEOUT_S) as client:
            replies = await asyncio.gather(
                *(client.call({"op": "put", "key": f"k{i}", "value": i}) for i in range(400))
            )
            assert all(reply == {"ok": True} for reply in replies)
            return client.max_in_flight

    assert asyncio.run(burst()) == 32
    after = cluster.wait_converged()[0]
    entries = after["last_index"] - before["last_index"]
    assert entries <= 400 + 5, entries  # one per command, the session's open and no more


def test_a_snapshot_request_that_fails_says_so(make_cluster: Callable[..., LiveCluster]) -> None:
    cluster = make_cluster(3, service=f"{BAD}:FailingSnapshot")
    cluster.start_all()
    cluster.wait_for_leader()
    with cluster.client() as client:
        cluster.put_and_check(client, "k", "v")

    async def ask() -> tuple[int, int, str]:
        async with AsyncClient([cluster.addresses[0]]) as client:
            return await client.snapshot()

    index, _, note = asyncio.run(ask())
    assert index == 0
    assert note.startswith("failed:") and "snapshot is broken in this service" in note, note


def test_a_connection_flood_under_a_low_open_file_limit_is_refused_at_the_door(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    cluster = make_cluster(1)
    limit = 400

    # util-linux's prlimit: the node starts with soft = hard = `limit` open files.
    cluster.start(0, ["prlimit", f"--nofile={limit}:{limit}", *node_command(cluster.configs[0])])
    cluster.wait_for_leader()
    host, port = cluster.configs[0].address
    flood = []
    try:
        for _ in range(limit + 200):
            sock = socket.create_connection((host, port), timeout=5)
            sock.sendall(encode_frame(Hello("phalanx", "client")))
            flood.append(sock)
        # Beyond its limit the node turns connections away; it does not fall over.
        cluster.wait_for_log_line(0, "too many connections")
        assert cluster.running(0)
    finally:
        for sock in flood:
            sock.close()
    with cluster.client() as client:  # and serves as soon as the flood is gone
        cluster.put_and_check(client, "after", "flood")
    assert cluster.running(0)
    assert f"open-file limit {limit}" in cluster.log_text(0)


def test_exception_messages_are_the_same_bytes_on_every_replica(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    """A set's repr follows the hash seed, an object's holds its address: nodes run
    with one hash seed and error replies drop addresses, so replicas agree."""
    cluster = make_cluster(3, service=f"{BAD}:AddressInMessage")
    cluster.start_all()
    cluster.wait_for_leader()
    with cluster.client() as client:
        for op in ("set", "address", "set"):
            assert client.call({"op": op})["ok"] is False
    statuses = cluster.wait_converged()
    assert len({s["outcome_digest"] for s in statuses}) == 1, statuses


def test_a_restore_that_raises_stops_the_node_at_start_with_one_line(
    make_cluster: Callable[..., LiveCluster],
) -> None:
    cluster = make_cluster(3, service=f"{BAD}:RefusingRestore")
    cluster.configs = [dataclasses.replace(c, snapshot_every_entries=20) for c in cluster.configs]
    cluster.start_all()
    cluster.wait_for_leader()
    with cluster.client() as client:
        for i in range(30):
            cluster.put_and_check(client, f"k{i}", str(i))
    cluster.wait_until(
        lambda: (cluster.status(0) or {}).get("snapshots_taken", 0) >= 1, "a snapshot", 30.0
    )
    assert cluster.terminate(0) == 0
    text = cluster.start_expecting_refusal(0, 5)
    assert "refusing to start: service RefusingRestore failed in restore()" in text
    assert "Traceback" not in text
