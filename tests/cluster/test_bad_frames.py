"""Bytes from a raw socket that break the protocol close that one connection, with a log
line; the node keeps running and the cluster keeps committing (issue 3, "Transport":
"A malformed, oversized or unexpected frame closes that connection and is logged; the
node keeps running", and the handshake's refusals)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from phalanx.core.messages import HeartbeatRequest
from phalanx.core.types import Index, NodeId, Term
from phalanx.transport.wire import (
    FRAME_HEADER,
    MAX_FRAME_BYTES_DEFAULT,
    PROTOCOL_VERSION,
    Hello,
    OpenSessionRequest,
    Refused,
    StatusRequest,
    Welcome,
    encode_frame,
)

from .harness import LiveCluster, RawConnection

pytestmark = pytest.mark.slow

CLUSTER_ID = "phalanx"


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCluster]:
    """One cluster for every case: each case must leave it healthy for the next."""
    root: Path = tmp_path_factory.mktemp("bad-frames")
    cluster = LiveCluster(root, 3)
    try:
        cluster.start_all()
        cluster.wait_for_leader()
        yield cluster
    finally:
        cluster.close()


@dataclass(frozen=True)
class Case:
    #: Sends the bad input on a fresh connection to `target` (a position).
    send: Callable[[RawConnection, LiveCluster, int], None]
    #: Part of the node's log line about this connection.
    logged: str
    #: The reason a Refused frame must carry before the close, if one is expected.
    refused: str | None = None


def frame(message_bytes: bytes, version: int = PROTOCOL_VERSION) -> bytes:
    return FRAME_HEADER.pack(len(message_bytes), version) + message_bytes


def hello_bytes(role: str = "client", node_id: int = 0, cluster_id: str = CLUSTER_ID) -> bytes:
    return msgspec.msgpack.encode(Hello(cluster_id, role, node_id))


def other_member(cluster: LiveCluster, target: int, skip: int = 0) -> int:
    """The id of a member other than the target (and other than `skip`)."""
    return next(i + 1 for i in range(cluster.size) if i != target and i + 1 != skip)


def peer_hello_then(
    make: Callable[[int, int, int], HeartbeatRequest],
) -> Callable[[RawConnection, LiveCluster, int], None]:
    """A valid peer handshake as member `claimed`, then the message `make` builds."""

    def send(raw: RawConnection, cluster: LiveCluster, target: int) -> None:
        claimed = other_member(cluster, target)
        raw.send(Hello(CLUSTER_ID, "peer", claimed))
        welcome = raw.receive()
        assert welcome == Welcome(target + 1)
        third = other_member(cluster, target, skip=claimed)
        raw.send(make(claimed, third, target + 1))

    return send


def client_hello_then(data: bytes) -> Callable[[RawConnection, LiveCluster, int], None]:
    def send(raw: RawConnection, cluster: LiveCluster, target: int) -> None:
        raw.send(Hello(CLUSTER_ID, "client"))
        assert isinstance(raw.receive(), Welcome)
        raw.send_bytes(data)

    return send


def just(data: bytes) -> Callable[[RawConnection, LiveCluster, int], None]:
    return lambda raw, cluster, target: raw.send_bytes(data)


CASES = {
    "garbage bytes": Case(just(b"GET / HTTP/1.1\r\nHost: phalanx\r\n\r\n"), "unsupported frame"),
    "undecodable payload": Case(just(frame(b"\xc1\xc1\xc1\xc1\xc1\xc1")), "undecodable message"),
    "wrong version byte": Case(just(frame(hello_bytes(), version=PROTOCOL_VERSION + 1)), "version"),
    "length above the maximum": Case(
        just(FRAME_HEADER.pack(MAX_FRAME_BYTES_DEFAULT + 1, PROTOCOL_VERSION)), "exceeds"
    ),
    "length of 4 GiB": Case(just(FRAME_HEADER.pack(0xFFFFFFFF, PROTOCOL_VERSION)), "exceeds"),
    "request before hello": Case(just(encode_frame(StatusRequest(1))), "expected Hello"),
    "hello naming another cluster": Case(
        just(frame(hello_bytes(cluster_id="another-cluster"))),
        "another-cluster",
        refused="another-cluster",
    ),
    "hello naming an unknown node": Case(
        just(frame(hello_bytes("peer", 99))), "node id 99", refused="node id 99"
    ),
    "hello with an unknown role": Case(
        just(frame(hello_bytes("admin"))), "unknown role", refused="unknown role"
    ),
    "peer message claiming another sender": Case(
        peer_hello_then(
            lambda claimed, third, target: HeartbeatRequest(
                Term(0), NodeId(third), NodeId(target), Index(0)
            )
        ),
        "message claims",
    ),
    "peer message addressed to another node": Case(
        peer_hello_then(
            lambda claimed, third, target: HeartbeatRequest(
                Term(0), NodeId(claimed), NodeId(third), Index(0)
            )
        ),
        "message claims",
    ),
    "client sending a raft message": Case(
        client_hello_then(encode_frame(HeartbeatRequest(Term(0), NodeId(1), NodeId(2), Index(0)))),
        "from a client",
    ),
    "client sending a second hello": Case(
        client_hello_then(frame(hello_bytes())), "unexpected Hello from a client"
    ),
}


def assert_closed_by_node(raw: RawConnection) -> None:
    try:
        raw.closed_by_peer()
    except TimeoutError:
        raise AssertionError("the node kept the connection open") from None


def assert_healthy(cluster: LiveCluster, target: int, key: str) -> None:
    assert cluster.running(target)
    assert cluster.status(target) is not None, "the node stopped answering status"
    with cluster.client() as client:
        cluster.put_and_check(client, key, "still committing")
    cluster.assert_same_digests(cluster.wait_converged())


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_bad_frame_closes_only_that_connection(shared_cluster: LiveCluster, name: str) -> None:
    cluster = shared_cluster
    case = CASES[name]
    target = cluster.wait_for_leader()  # the node with the most to lose
    with cluster.client() as bystander:  # a healthy connection that must survive
        bystander.call({"op": "put", "key": "bystander", "value": "before"})
        with RawConnection(cluster.addresses[target]) as raw:
            port = raw.socket.getsockname()[1]
            # The node may close before it has read everything.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                case.send(raw, cluster, target)
            if case.refused is not None:
                refused = raw.receive()
                assert isinstance(refused, Refused), refused
                assert case.refused in refused.reason
            assert_closed_by_node(raw)
        line = cluster.wait_for_log_line(target, f"127.0.0.1:{port}")
        assert case.logged in line, line
        assert bystander.call({"op": "get", "key": "bystander"}) == {"value": "before"}
    assert_healthy(cluster, target, name)
    cluster.assert_election_safety()


def test_a_frame_cut_short_by_a_hang_up_is_forgotten(shared_cluster: LiveCluster) -> None:
    cluster = shared_cluster
    target = cluster.wait_for_leader()
    with RawConnection(cluster.addresses[target]) as raw:
        raw.send(Hello(CLUSTER_ID, "client"))
        assert isinstance(raw.receive(), Welcome)
        whole = encode_frame(OpenSessionRequest(7))
        raw.send_bytes(whole[: len(whole) // 2])
        raw.socket.shutdown(socket.SHUT_WR)
        assert_closed_by_node(raw)
    assert_healthy(cluster, target, "cut short")


def test_many_connections_opened_and_dropped_leave_the_node_serving(
    shared_cluster: LiveCluster,
) -> None:
    cluster = shared_cluster
    target = cluster.wait_for_leader()
    for _ in range(50):
        with RawConnection(cluster.addresses[target]) as raw:
            raw.send_bytes(frame(hello_bytes())[:3])
    assert_healthy(cluster, target, "churn")
