"""Addresses a newcomer may type (issue 11, item 7): a port already in use and a host
that does not resolve end in one line and exit 3 or 2, not a traceback; IPv6 works,
as [::1]:PORT or ::1:PORT (the last colon separates the port)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from phalanx.client import Client
from phalanx.core.errors import ConfigError
from phalanx.transport.addresses import format_address, free_ports, parse_address

from .helpers import PHALANX_MODULE, Processes, leader_position, run, wait_until

KV_SERVICE = "phalanx.examples.kv:KeyValue"
CALL_TIMEOUT_S = 20.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7101", ("127.0.0.1", 7101)),
        (" localhost:1 ", ("localhost", 1)),
        ("[::1]:7101", ("::1", 7101)),
        ("::1:7101", ("::1", 7101)),
        ("[fe80::1%lo]:7101", ("fe80::1%lo", 7101)),
    ],
)
def test_addresses_parse_ipv4_names_and_ipv6(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected
    assert parse_address(format_address(*expected)) == expected


@pytest.mark.parametrize(
    "text",
    ["127.0.0.1", "::1", "[::1]", "[::1]7101", "[127.0.0.1]:7101", "a:b:7101", "h:0", "h:"],
)
def test_malformed_addresses_are_refused_naming_the_setting(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid setting 'members'"):
        parse_address(text)


def test_ipv6_is_formatted_in_brackets() -> None:
    assert format_address("::1", 7101) == "[::1]:7101"
    assert format_address("127.0.0.1", 7101) == "127.0.0.1:7101"


def run_node(tmp_path: Path, members: str) -> tuple[int, str]:
    """Runs `phalanx node` as node 1 of `members`, expecting it to refuse to start."""
    data = tmp_path / "data"
    argv = [*PHALANX_MODULE, "node", "--id", "1", "--members", members, "--data", str(data)]
    result = run([*argv, "--service", KV_SERVICE])
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not data.exists(), "nothing may be created before the node can start"
    return result.returncode, result.stderr


def test_a_port_in_use_is_one_line_and_exit_3(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, err = run_node(tmp_path, f"1=127.0.0.1:{port}")
    assert code == 3, err
    assert err.startswith(f"phalanx node: cannot listen on 127.0.0.1:{port}: "), err
    assert "Address already in use" in err, err


def test_an_unresolvable_host_is_one_line_and_exit_2(tmp_path: Path) -> None:
    code, err = run_node(tmp_path, "1=no-such-host.invalid:7101")
    assert code == 2, err
    assert "'no-such-host.invalid' does not resolve" in err, err


def test_an_unbracketed_host_with_colons_is_one_line_and_exit_2(tmp_path: Path) -> None:
    code, err = run_node(tmp_path, "1=no:such:7101")
    assert code == 2, err
    assert "write IPv6 addresses in brackets" in err, err


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("form", ["[::1]:{port}", "::1:{port}"])
def test_a_node_on_ipv6_loopback_serves_or_says_why_not(
    tmp_path: Path, processes: Processes, form: str
) -> None:
    port = free_ports(1)[0]
    members = "1=" + form.format(port=port)
    if not ipv6_loopback():
        code, err = run_node(tmp_path, members)
        assert code == 3 and "cannot listen on [::1]" in err, err
        return
    argv = [*PHALANX_MODULE, "node", "--id", "1", "--members", members]
    node = processes.start([*argv, "--data", str(tmp_path / "data"), "--service", KV_SERVICE])
    address = f"[::1]:{port}"
    wait_until(
        lambda: leader_position([address]) is not None,
        f"a leader at {address}",
        describe=lambda: processes.output(node),
    )
    with Client([address], timeout=CALL_TIMEOUT_S) as client:
        assert client.call({"op": "put", "key": "v6", "value": "yes"}) == {"ok": True}
    assert processes.stop(node) == 0
