"""Parsing member addresses, shared by node configuration and clients."""

from __future__ import annotations

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
