"""Parsing member addresses, shared by node configuration and clients.

An address is HOST:PORT. IPv6 is supported: write the host in brackets as in URLs
(`[::1]:7101`); without brackets (`::1:7101`, which is what `f"{host}:{port}"` gives)
the last colon separates the port. A host with colons that is not an IPv6 address is
refused here, so a typo never reaches the resolver as a mystery host name.

Parsing does not resolve names: `resolve` does, for the process that is about to
listen on an address or wants to say early that a peer's name is unknown.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from phalanx.core.errors import ConfigError


def parse_address(text: str, setting: str = "members") -> tuple[str, int]:
    stripped = text.strip()
    if stripped.startswith("["):
        host, sep, port = stripped[1:].partition("]:")
        if not sep or not _is_ipv6(host):
            raise ConfigError(setting, f"{text!r} is not [IPV6-ADDRESS]:PORT")
    else:
        host, sep, port = stripped.rpartition(":")
        if ":" in host and not _is_ipv6(host):
            raise ConfigError(
                setting,
                f"{text!r}: {host!r} is neither a host name nor an IPv6 address "
                "(write IPv6 addresses in brackets, as in [::1]:7101)",
            )
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(setting, f"{text!r} is not HOST:PORT")
    return host, int(port)


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def format_address(host: str, port: int) -> str:
    """HOST:PORT, with an IPv6 host in brackets (what `parse_address` reads back)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve(host: str, port: int, setting: str = "members") -> None:
    """Raises `ConfigError` if `host` has no address this machine can find."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        reason = error.strerror if isinstance(error, socket.gaierror) else str(error)
        raise ConfigError(setting, f"host {host!r} does not resolve: {reason}") from None


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
