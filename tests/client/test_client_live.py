"""The client against real node processes (issue 11, item 6): it finds the leader from
any one member, says at once why a cluster refused it, and refuses a command too large
to send without waiting for the deadline."""

from __future__ import annotations

import time

import pytest

from cluster.harness import LiveCluster
from phalanx.client import Client, HandshakeRefusedError, RequestRejectedError

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
#: A behaviour bound, not a speed claim: the calls below have a 10 s deadline, and
#: "at once" must be far below it.
FAST_S = 3.0
TIMEOUT_S = 10.0


def test_a_client_given_only_a_follower_finds_the_leader_through_its_hint(
    cluster: LiveCluster,
) -> None:
    leader = cluster.wait_for_leader()
    follower = cluster.addresses[(leader + 1) % cluster.size]
    with Client([follower], cluster_id=cluster.cluster_id, timeout=TIMEOUT_S) as client:
        cluster.put_and_check(client, "found", "through the hint")
        assert len(client._async.addresses) == 2  # the follower, and the leader it named


def test_a_wrong_cluster_id_fails_at_once_with_the_nodes_reason(cluster: LiveCluster) -> None:
    started = time.monotonic()
    with (
        pytest.raises(HandshakeRefusedError) as refused,
        cluster.client(cluster_id="elsewhere", timeout=TIMEOUT_S) as stranger,
    ):
        stranger.call({"op": "get", "key": "k"})
    assert time.monotonic() - started < FAST_S
    assert "cluster id 'elsewhere' is not this cluster's ('phalanx')" in str(refused.value)
    for address in cluster.addresses:
        assert address in str(refused.value)


def test_a_command_too_large_for_a_frame_is_refused_before_it_is_sent(
    cluster: LiveCluster,
) -> None:
    with cluster.client(timeout=TIMEOUT_S) as client:
        started = time.monotonic()
        with pytest.raises(RequestRejectedError, match="max_command_bytes"):
            # Larger than the node's frames: sent, it would only close the connection.
            client.call({"op": "put", "key": "big", "value": "x" * (3 * MIB)})
        assert time.monotonic() - started < FAST_S
        cluster.put_and_check(client, "small", "still fine")
    # The put and the get of put_and_check, and nothing else.
    assert all(s["commands_applied"] == 2 for s in cluster.wait_converged())


def test_a_command_the_node_refuses_for_size_fails_on_its_first_answer(
    cluster: LiveCluster,
) -> None:
    # A client told a larger limit than the cluster's sends it; the node refuses it.
    with cluster.client(timeout=TIMEOUT_S, max_command_bytes=2 * MIB) as client:
        client.call({"op": "get", "key": "big"})  # finds the leader
        retries = client._async.retries
        started = time.monotonic()
        with pytest.raises(RequestRejectedError, match=f"max_command_bytes={MIB}"):
            client.call({"op": "put", "key": "big", "value": "x" * (MIB + MIB // 2)})
        assert time.monotonic() - started < FAST_S
        assert client._async.retries == retries  # refused on the first answer
