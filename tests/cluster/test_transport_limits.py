"""What a misbehaving connection can make a node hold, checked against real node
processes (issue 11, item 5, "A few connections can take the node's memory"): a
connection that never says Hello is closed after the handshake timeout; unfinished
frames are bounded per connection and in total; a frame that stalls closes its
connection; a client connection opens a bounded number of sessions; a client that does
not read its replies is paused, then closed. Each time the node keeps serving ordinary
clients. docs/limits.md lists these limits."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest

from phalanx.bench.results import parse_status_kib
from phalanx.transport.tcp import (
    CLIENT_READ_PAUSE_TIMEOUT_S,
    FRAME_STALL_TIMEOUT_S,
    HANDSHAKE_TIMEOUT_S,
    PARTIAL_FRAME_BYTES_TOTAL_MAX,
    SESSIONS_PER_CONNECTION_MAX,
)
from phalanx.transport.wire import (
    FRAME_HEADER,
    PROTOCOL_VERSION,
    ClientReply,
    Hello,
    OpenSessionRequest,
    ReplyStatus,
    StatusRequest,
    Welcome,
    encode_frame,
)

from .harness import LiveCluster, RawConnection

#: The attack that found the problem: 300 connections, each sending all but the last
#: byte of a 2 MB frame (under the node's frame limit of 2 MiB + 64 KiB, so only the
#: budget on unfinished frames stops them). Before the fix the node grew by 574 MiB.
PARTIAL_CONNECTIONS = 300
PARTIAL_FRAME_BYTES = 2_000_000
#: What the node's peak RSS may grow by: the budget, plus as much again for the
#: interpreter's slack (buffers being read, allocator fragmentation).
RSS_GROWTH_BYTES_MAX = 2 * PARTIAL_FRAME_BYTES_TOTAL_MAX
#: Bounds on waiting, not expectations.
UNREAD_TIMEOUT_S = 30.0
SESSION_BURST = 3 * SESSIONS_PER_CONNECTION_MAX
#: The attack that found the write side: one client connection sends StatusRequests (25
#: bytes each) and never reads the replies (hundreds of bytes each). 200,000 of them
#: raised a node's RSS from 33 to 122 MiB; 300,000 raised it from 34 to 234 MiB.
GREEDY_REQUESTS = 300_000
#: What the node's peak RSS may grow by meanwhile: what the node holds for the
#: connection is a few MiB (CLIENT_REPLY_BYTES_HIGH and one read's requests); the rest
#: is slack for the interpreter and its allocator.
GREEDY_RSS_GROWTH_BYTES_MAX = 64 * 1024 * 1024
#: Bound on waiting for the node to close that connection, not an expectation.
GREEDY_CLOSE_TIMEOUT_S = CLIENT_READ_PAUSE_TIMEOUT_S * 2
TCP_ESTABLISHED = "01"


def test_silent_connection_is_closed_after_the_handshake_timeout(cluster: LiveCluster) -> None:
    host, port = cluster.addresses[0].split(":")
    with socket.create_connection((host, int(port)), timeout=HANDSHAKE_TIMEOUT_S * 3) as silent:
        started = time.monotonic()
        assert silent.recv(1) == b""  # the node closed it
        waited = time.monotonic() - started
    assert waited >= HANDSHAKE_TIMEOUT_S * 0.5
    with cluster.client() as client:
        cluster.put_and_check(client, "still", "serving")
    assert cluster.terminate(0) == 0


def status_bytes(pid: int, field: str) -> int:
    return parse_status_kib(Path(f"/proc/{pid}/status").read_text(), field) * 1024


def unread_bytes(port: int) -> int:
    """Bytes sent to the listener on `port` that it has not read yet (the receive queues
    of its established connections, from /proc/net/tcp)."""
    unread = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rpartition(":")[2], 16)
        if local_port == port and fields[3] == TCP_ESTABLISHED:
            unread += int(fields[4].partition(":")[2], 16)
    return unread


def hello_for(role: str, cluster: LiveCluster, target: int) -> Hello | None:
    if role == "stranger":
        return None  # sends its frame before any Hello
    node_id = next(i + 1 for i in range(cluster.size) if i != target) if role == "peer" else 0
    return Hello(cluster.cluster_id, role, node_id)


def open_partial_frame(cluster: LiveCluster, target: int, hello: Hello | None) -> RawConnection:
    raw = RawConnection(cluster.addresses[target])
    if hello is not None:
        raw.send(hello)
        assert isinstance(raw.receive(), Welcome)
    unfinished = FRAME_HEADER.pack(PARTIAL_FRAME_BYTES, PROTOCOL_VERSION) + bytes(
        PARTIAL_FRAME_BYTES - 1
    )
    # The node may close it before it has read it all: that is the point.
    with contextlib.suppress(OSError):
        raw.send_bytes(unfinished)
    return raw


@pytest.mark.parametrize("role", ["client", "peer", "stranger"])
def test_partial_frames_of_many_connections_do_not_take_the_nodes_memory(
    cluster: LiveCluster, role: str
) -> None:
    target = cluster.wait_for_leader()
    pid = cluster.processes[target].pid  # type: ignore[union-attr]
    before = status_bytes(pid, "VmRSS")
    hello = hello_for(role, cluster, target)
    connections: list[RawConnection] = []
    try:
        for _ in range(PARTIAL_CONNECTIONS):
            connections.append(open_partial_frame(cluster, target, hello))
        cluster.wait_until(
            lambda: unread_bytes(cluster.port(target)) == 0,
            "the node to read what was sent",
            UNREAD_TIMEOUT_S,
            must_run=[target],
        )
        growth = status_bytes(pid, "VmHWM") - before
        assert growth <= RSS_GROWTH_BYTES_MAX, (
            f"the node's peak RSS grew by {growth >> 20} MiB (bound {RSS_GROWTH_BYTES_MAX >> 20})"
        )
        expected = "exceeds this connection's limit" if role == "stranger" else "over the budget"
        cluster.wait_for_log_line(target, expected)
        with cluster.client() as client:
            cluster.put_and_check(client, f"after {role}s", "still serving")
    finally:
        for raw in connections:
            raw.close()
    cluster.assert_same_digests(cluster.wait_converged())


def test_a_stalled_frame_closes_its_connection(cluster: LiveCluster) -> None:
    target = cluster.wait_for_leader()
    with RawConnection(cluster.addresses[target], timeout=FRAME_STALL_TIMEOUT_S * 3) as raw:
        port = raw.socket.getsockname()[1]
        raw.send(Hello(cluster.cluster_id, "client"))
        assert isinstance(raw.receive(), Welcome)
        raw.send_bytes(encode_frame(OpenSessionRequest(1))[:-1])  # all but its last byte
        started = time.monotonic()
        assert raw.closed_by_peer()
        waited = time.monotonic() - started
    assert waited >= FRAME_STALL_TIMEOUT_S * 0.9
    line = cluster.wait_for_log_line(target, f"127.0.0.1:{port}")
    assert "a frame stalled" in line, line
    with cluster.client() as client:
        cluster.put_and_check(client, "after a stall", "still serving")


def test_a_client_connection_opens_a_bounded_number_of_sessions(cluster: LiveCluster) -> None:
    target = cluster.wait_for_leader()
    with RawConnection(cluster.addresses[target], timeout=20.0) as raw:
        raw.send(Hello(cluster.cluster_id, "client"))
        assert isinstance(raw.receive(), Welcome)
        raw.send_bytes(b"".join(encode_frame(OpenSessionRequest(i)) for i in range(SESSION_BURST)))
        replies = [raw.receive() for _ in range(SESSION_BURST)]
    assert all(isinstance(reply, ClientReply) for reply in replies), replies
    statuses = [reply.status for reply in replies if isinstance(reply, ClientReply)]
    assert statuses.count(ReplyStatus.OK) == SESSIONS_PER_CONNECTION_MAX
    assert statuses.count(ReplyStatus.REJECTED) == SESSION_BURST - SESSIONS_PER_CONNECTION_MAX
    refusal = next(r.message for r in replies if isinstance(r, ClientReply) and r.message)
    assert "SESSIONS_PER_CONNECTION_MAX" in refusal, refusal
    cluster.wait_for_log_line(target, "SESSIONS_PER_CONNECTION_MAX")
    with cluster.client() as client:  # a new connection opens its own session
        cluster.put_and_check(client, "after a session burst", "still serving")


def send_until_closed(raw: RawConnection, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the node closed it: that is the point
        raw.send_bytes(data)


def test_a_client_that_never_reads_its_replies_does_not_take_the_nodes_memory(
    cluster: LiveCluster,
) -> None:
    target = cluster.wait_for_leader()
    pid = cluster.processes[target].pid  # type: ignore[union-attr]
    before = status_bytes(pid, "VmRSS")
    greedy = RawConnection(cluster.addresses[target], timeout=GREEDY_CLOSE_TIMEOUT_S)
    remote = f"127.0.0.1:{greedy.socket.getsockname()[1]}"
    greedy.send(Hello(cluster.cluster_id, "client"))
    assert isinstance(greedy.receive(), Welcome)
    requests = b"".join(encode_frame(StatusRequest(i)) for i in range(GREEDY_REQUESTS))
    sender = threading.Thread(target=send_until_closed, args=(greedy, requests), daemon=True)
    sender.start()

    def settled() -> str | None:
        """The node's line closing the connection, or (before the fix) a note that it
        read every request, answering each."""
        for line in cluster.log_text(target).splitlines():
            if f"closing connection from {remote}" in line:
                return line
        if not sender.is_alive() and unread_bytes(cluster.port(target)) == 0:
            return "the node read every request"
        return None

    try:
        with cluster.client() as client:
            cluster.put_and_check(client, "while a client does not read", "still serving")
        outcome = cluster.wait_until(
            settled, "the greedy connection to settle", GREEDY_CLOSE_TIMEOUT_S, must_run=[target]
        )
        growth = status_bytes(pid, "VmHWM") - before
        assert growth <= GREEDY_RSS_GROWTH_BYTES_MAX, (
            f"the node's peak RSS grew by {growth >> 20} MiB "
            f"(bound {GREEDY_RSS_GROWTH_BYTES_MAX >> 20}); {outcome}"
        )
        assert "CLIENT_READ_PAUSE_TIMEOUT_S" in outcome, outcome
        assert "bytes of replies it has not read" in outcome, outcome
        with cluster.client() as client:
            cluster.put_and_check(client, "after a client did not read", "still serving")
    finally:
        greedy.close()
        sender.join(GREEDY_CLOSE_TIMEOUT_S)
    cluster.assert_same_digests(cluster.wait_converged())
