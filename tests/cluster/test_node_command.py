"""`phalanx node`'s settings: a bad one is refused before anything starts, naming the
setting; a TOML file works like the flags; SIGTERM and SIGINT stop a node gracefully
(issue 3, "Node and command line")."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from phalanx.cli import main
from phalanx.client import Client, ClusterUnavailableError
from phalanx.transport.wire import Hello, Welcome

from .harness import (
    CALL_TIMEOUT_S,
    EXIT_TIMEOUT_S,
    KV_SERVICE,
    LEADER_TIMEOUT_S,
    POLL_INTERVAL_S,
    LiveCluster,
    RawConnection,
    free_consecutive_ports,
    free_ports,
    gather_statuses,
)

pytestmark = pytest.mark.slow


def node_argv(data: Path, **flags: str) -> list[str]:
    """`phalanx node` arguments for a valid 3-member node 1, with `flags` replaced."""
    ports = free_ports(3)
    settings = {
        "--id": "1",
        "--members": ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(ports)),
        "--data": str(data),
        "--service": KV_SERVICE,
    }
    settings.update({f"--{name.replace('_', '-')}": value for name, value in flags.items()})
    argv = ["node"]
    for flag, value in settings.items():
        argv += [flag, value]
    return argv


BAD_FLAGS = {
    "unknown service module": ({"service": "no_such_module:Thing"}, "'service'"),
    "service without a class": ({"service": "phalanx.examples.kv"}, "'service'"),
    "service that is not a Service": ({"service": "phalanx.examples.kv:KEYS_MAX"}, "'service'"),
    "id not in members": ({"id": "4"}, "'id'"),
    "id zero": ({"id": "0"}, "'id'"),
    "member without a port": ({"members": "1=127.0.0.1"}, "'members'"),
    "member id not a number": ({"members": "one=127.0.0.1:7101"}, "'members'"),
    "member port out of range": ({"members": "1=127.0.0.1:70000"}, "'members'"),
    "member repeated": ({"members": "1=127.0.0.1:7101,1=127.0.0.1:7102"}, "'members'"),
    "members sharing an address": (
        {"members": "1=127.0.0.1:7101,2=127.0.0.1:7101"},
        "'members'",
    ),
    "empty members": ({"members": ","}, "'members'"),
    "tick of zero": ({"tick_ms": "0"}, "'tick_ms'"),
    "empty cluster id": ({"cluster_id": ""}, "'cluster_id'"),
}


@pytest.mark.parametrize("name", sorted(BAD_FLAGS))
def test_a_bad_flag_is_refused_with_exit_2_naming_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    flags, setting = BAD_FLAGS[name]
    data = tmp_path / "data"
    assert main(node_argv(data, **flags)) == 2
    err = capsys.readouterr().err
    assert err.startswith("phalanx node: invalid setting"), err
    assert setting in err, err
    assert not data.exists(), "nothing may be created before the settings are valid"


def test_a_missing_required_flag_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = node_argv(tmp_path / "data")
    without_data = argv[: argv.index("--data")] + argv[argv.index("--data") + 2 :]
    assert main(without_data) == 2
    assert "data" in capsys.readouterr().err


def test_a_non_integer_id_is_refused_by_the_parser(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(node_argv(tmp_path / "data", id="abc"))
    assert exit_info.value.code == 2
    assert "--id" in capsys.readouterr().err


TOML_MEMBERS = 'members = "1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103"\n'
BAD_TOML = {
    "unknown key": (TOML_MEMBERS + "tick = 5\n", "'tick'"),
    "wrong type": (TOML_MEMBERS + 'tick_ms = "fast"\n', "'tick_ms'"),
    "not TOML": ("members = [unclosed\n", "'config'"),
    "bad member address": ('members = { 1 = "127.0.0.1" }\n', "'members'"),
    "bad election timeout": (
        TOML_MEMBERS + "[raft]\nelection_timeout_ticks = 2\nheartbeat_interval_ticks = 2\n",
        "'raft.election_timeout_ticks'",
    ),
    "unknown key in [raft]": (TOML_MEMBERS + "[raft]\nprevote = true\n", "'raft.prevote'"),
}


@pytest.mark.parametrize("name", sorted(BAD_TOML))
def test_a_bad_config_file_is_refused_with_exit_2_naming_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    text, setting = BAD_TOML[name]
    data = tmp_path / "data"
    config = tmp_path / "node.toml"
    config.write_text(f'id = 1\ndata = "{data}"\nservice = "{KV_SERVICE}"\n' + text)
    assert main(["node", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert setting in err, err
    assert not data.exists()


def test_a_missing_config_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["node", "--config", str(tmp_path / "absent.toml")]) == 2
    err = capsys.readouterr().err
    assert "'config'" in err and "absent.toml" in err, err


def test_the_real_process_exits_2_on_a_bad_setting_before_listening(tmp_path: Path) -> None:
    data = tmp_path / "data"
    argv = node_argv(data, service="no_such_module:Thing")
    result = subprocess.run(
        [sys.executable, "-m", "phalanx", *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "invalid setting 'service'" in result.stderr
    assert "no_such_module" in result.stderr
    assert "Traceback" not in result.stderr
    assert not data.exists()


def toml_text(cluster: LiveCluster, index: int, members_as_table: bool) -> str:
    config = cluster.configs[index]
    if members_as_table:
        members = "[members]\n" + "".join(
            f'{i + 1} = "{address}"\n' for i, address in enumerate(cluster.addresses)
        )
    else:
        members = f'members = "{cluster.members}"\n'
    # Top-level keys first: after [members] every key would belong to that table.
    return (
        f"id = {index + 1}\n"
        f'data = "{config.data_dir}"\n'
        f'service = "{config.service}"\n'
        f'cluster_id = "{cluster.cluster_id}"\n'
        "tick_ms = 20\n" + members
    )


def test_a_cluster_configured_by_toml_files_serves(
    make_cluster: Callable[..., LiveCluster],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = make_cluster(3, cluster_id="toml-cluster")
    for index in range(cluster.size):
        path = cluster.root / f"node-{index + 1}.toml"
        path.write_text(toml_text(cluster, index, members_as_table=index != 1))
        argv = [sys.executable, "-m", "phalanx", "node", "--config", str(path)]
        if index == 2:
            # Flags override the file.
            path.write_text(toml_text(cluster, index, True).replace("id = 3", "id = 1", 1))
            argv += ["--id", "3"]
        cluster.start(index, argv)
    leader = cluster.wait_for_leader()
    with cluster.client() as client:
        cluster.put_and_check(client, "configured", "by toml")
    cluster.assert_same_digests(cluster.wait_converged())

    # The cluster id came from the file: a client of another cluster is refused.
    with RawConnection(cluster.addresses[leader]) as raw:
        raw.send(Hello("phalanx", "client"))
        assert not isinstance(raw.receive(), Welcome)
    with (
        pytest.raises(ClusterUnavailableError),
        cluster.client(cluster_id="phalanx", timeout=1.0) as stranger,
    ):
        stranger.call({"op": "get", "key": "configured"})

    monkeypatch.setenv("COLUMNS", "200")
    capsys.readouterr()
    status_argv = ["status", "--members", cluster.members, "--cluster-id", "toml-cluster"]
    assert main(status_argv) == 0
    out = capsys.readouterr().out
    assert out.count("leader") >= 2 and out.count("follower") == 2, out  # header + roles
    line = cluster.wait_for_log_line(leader, "is not this cluster's ('toml-cluster')")
    assert "refusing client" in line, line
    for index in range(cluster.size):
        assert cluster.terminate(index) == 0


def test_a_node_with_open_connections_stops_promptly_on_sigterm(cluster: LiveCluster) -> None:
    leader = cluster.wait_for_leader()
    with cluster.client() as client:
        cluster.put_and_check(client, "k", "v")
        # A client connection in use, and one that never finished its handshake.
        with RawConnection(cluster.addresses[leader]) as silent:
            silent.send_bytes(b"\x00\x00")
            assert cluster.terminate(leader, signal.SIGTERM) == 0
            silent.closed_by_peer()
        cluster.wait_for_leader()
        cluster.put_and_check(client, "k", "after")
    assert "stopped" in cluster.log_text(leader)


def test_phalanx_cluster_runs_a_local_cluster_until_interrupted(tmp_path: Path) -> None:
    base = free_consecutive_ports(3)
    addresses = [f"127.0.0.1:{base + i}" for i in range(3)]
    argv = [sys.executable, "-m", "phalanx", "cluster", "--nodes", "3"]
    argv += ["--data", str(tmp_path / "data"), "--base-port", str(base), "--host", "127.0.0.1"]
    with (tmp_path / "cluster.log").open("wb") as log_file:
        # Its own process group, so that teardown can reach the nodes it starts.
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + LEADER_TIMEOUT_S
        while True:
            statuses = asyncio.run(gather_statuses(addresses, "phalanx"))
            roles = sorted(str(s["role"]) for s in statuses if s is not None)
            if roles == ["follower", "follower", "leader"]:
                break
            assert process.poll() is None, (tmp_path / "cluster.log").read_text()
            assert time.monotonic() < deadline, f"no leader: {statuses}"
            time.sleep(POLL_INTERVAL_S)
        with Client(addresses, timeout=CALL_TIMEOUT_S) as client:
            assert client.call({"op": "put", "key": "k", "value": "v"}) == {"ok": True}
            assert client.call({"op": "get", "key": "k"}) == {"value": "v"}

        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert process.wait(timeout=EXIT_TIMEOUT_S * 2) == 0
        # It stopped its nodes: nobody listens any more.
        assert asyncio.run(gather_statuses(addresses, "phalanx")) == [None, None, None]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # any node it left behind
    for node in range(1, 4):
        assert (tmp_path / "data" / f"node-{node}" / "meta").exists()
