"""A connection that never says Hello is closed by the listener, and does not keep the
node from serving or from shutting down."""

from __future__ import annotations

import socket
import time

from phalanx.transport.tcp import HANDSHAKE_TIMEOUT_S

from .harness import LiveCluster


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
