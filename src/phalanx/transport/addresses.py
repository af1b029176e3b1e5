"""Parsing member addresses, shared by node configuration and clients."""

from __future__ import annotations

import socket
from collections.abc import Sequence

from phalanx.core.errors import ConfigError


def parse_address(text: str, setting: str = "members") -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(setting, f"{text!r} is not HOST:PORT")
    return host, int(port)


def client_addresses(members: Sequence[str] | str) -> list[tuple[str, int]]:
    """Accepts `["h:p", ...]`, `"h:p,h:p"` or the node form `1=h:p,2=h:p`."""
    items = members.split(",") if isinstance(members, str) else list(members)
    addresses = []
    for item in filter(None, (i.strip() for i in items)):
        _, _, address = item.rpartition("=")
        addresses.append(parse_address(address))
    if not addresses:
        raise ConfigError("members", "no member addresses given")
    return addresses


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports the kernel reports free on `host` right now (the sockets
    are held open together so they differ); for local clusters, tests and benchmarks."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
