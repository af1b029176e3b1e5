"""`phalanx status` tells a newcomer whether the cluster is well (issue 11, item 7):
state and log digests and the replica check on show, `--json`, tables that fold to a
terminal and plain whole lines into a pipe, and exit 1 naming the trouble when no
member leads or a replica diverged."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from rich.console import Console
from tests.cluster.harness import LiveCluster
from tests.transport.test_wire import node_status

from phalanx.cli import main
from phalanx.client.admin import judge_statuses
from phalanx.core import Role
from phalanx.server import cli as server_cli
from phalanx.server.cli import print_status
from phalanx.transport.wire import NodeStatus

from .helpers import PHALANX_MODULE, run, statuses, wait_until

#: State and log digests are both 16 bytes, in hex.
DIGEST = re.compile(r"\b[0-9a-f]{32}\b")


LEADER = Role.LEADER
HEALTHY: list[NodeStatus | None] = [node_status(1, LEADER), node_status(2), node_status(3)]
ADDRESSES = ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]


def test_a_cluster_with_one_leader_and_agreeing_replicas_is_healthy() -> None:
    assert judge_statuses(HEALTHY).problems == ()
    assert judge_statuses(HEALTHY).leader == 1
    # A deposed leader of an older term that has not heard yet does not count.
    stale = [node_status(1, LEADER), node_status(2, LEADER, term=3), None]
    assert judge_statuses(stale).leader == 1


@pytest.mark.parametrize(
    ("replies", "expected"),
    [
        ([None, None, None], "no member answered"),
        (
            [node_status(2, Role.CANDIDATE, leader=0), node_status(3, leader=1), None],
            "no leader among the 2 of 3 members that answered; they name node(s) 1",
        ),
        (
            [node_status(1, LEADER), node_status(2), node_status(3, diverged="at index 2000")],
            "node 3 found its own service diverged from the majority at index 2000",
        ),
        (
            [
                node_status(1, LEADER, replica_check="at index 2000: others-diverged: node(s) 3"),
                node_status(2, replica_check="at index 2000: others-diverged: node(s) 3"),
            ],
            "replica check at index 2000: others-diverged: node(s) 3 (reported by node(s) 1, 2)",
        ),
        (
            [node_status(1, LEADER), node_status(2, state_digest="c" * 32)],
            "nodes 1, 2 applied up to index 2000 but their state digests differ",
        ),
    ],
)
def test_each_trouble_is_named(replies: list[NodeStatus | None], expected: str) -> None:
    problems = judge_statuses(replies).problems
    assert any(problem.startswith(expected) for problem in problems), problems


def fake_statuses(monkeypatch: pytest.MonkeyPatch, replies: list[NodeStatus | None]) -> None:
    async def gather(addresses: list[str], **_: Any) -> list[NodeStatus | None]:
        assert len(addresses) == len(replies)
        return replies

    monkeypatch.setattr(server_cli, "gather_statuses", gather)


def test_status_exits_1_naming_a_diverged_replica(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    diverged = "at index 2000: self-diverged: node(s) 3"
    fake_statuses(monkeypatch, [*HEALTHY[:2], node_status(3, diverged=diverged)])
    assert main(["status", "--members", ",".join(ADDRESSES)]) == 1
    captured = capsys.readouterr()
    assert "phalanx status: node 3 found its own service diverged" in captured.err
    assert f"THIS NODE DIVERGED {diverged}" in captured.out

    assert main(["status", "--json", "--members", ",".join(ADDRESSES)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["healthy"] is False and report["leader"] == 1
    assert report["members"][2]["status"]["diverged"] == diverged
    assert report["members"][0]["status"] == msgspec.to_builtins(HEALTHY[0])


def test_status_piped_prints_one_plain_line_per_member() -> None:
    replies = [*HEALTHY[:2], None]
    output = io.StringIO()
    print_status(ADDRESSES, replies, judge_statuses(replies), Console(file=output))
    lines = output.getvalue().splitlines()
    assert lines[:5] == [
        "members:",
        "address        | id | role     | term | last index | commit index | applied index"
        " | leader | reachable",
        "127.0.0.1:7101 | 1  | leader   | 4    | 2000       | 2000         | 2000          | 1"
        "      | yes",
        "127.0.0.1:7102 | 2  | follower | 4    | 2000       | 2000         | 2000          | 1"
        "      | yes",
        "127.0.0.1:7103 | -  | -        | -    | -          | -            | -             | -"
        "      | no",
    ], output.getvalue()


def test_status_folds_its_tables_to_the_terminal_width() -> None:
    replies = [*HEALTHY[:2], None]
    output = io.StringIO()
    console = Console(file=output, width=60, force_terminal=True, color_system=None)
    print_status(ADDRESSES, replies, judge_statuses(replies), console)
    lines = output.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 60, output.getvalue()
    assert any("state" in line for line in lines) and any("replica" in line for line in lines)


@pytest.mark.slow
def test_status_exits_1_without_a_leader_and_shows_digests_whole_when_piped(
    tmp_path: Path,
) -> None:
    cluster = LiveCluster(tmp_path, 3)
    status_argv = [*PHALANX_MODULE, "status", "--members", cluster.members]
    try:
        cluster.start(0)  # one of three: no quorum, no leader
        wait_until(lambda: statuses(cluster.addresses[:1])[0], "node 1 to answer")
        alone = run(status_argv)
        assert alone.returncode == 1, alone.stdout + alone.stderr
        assert "phalanx status: no leader among the 1 of 3 members that answered" in alone.stderr

        cluster.start(1)
        cluster.start(2)
        leader = cluster.wait_for_leader()
        with cluster.client() as client:
            cluster.put_and_check(client, "k", "v")
        cluster.wait_converged()

        # Piped, nothing is cut to the terminal width, however narrow it claims to be.
        piped = run(status_argv, env={**os.environ, "COLUMNS": "40"})
        assert piped.returncode == 0, piped.stdout + piped.stderr
        rows = [line for line in piped.stdout.splitlines() if len(DIGEST.findall(line)) == 2]
        assert len(rows) == 3, piped.stdout
        assert f"leader: node {leader + 1}" in piped.stdout

        as_json = run([*status_argv, "--json"])
        assert as_json.returncode == 0, as_json.stderr
        report = json.loads(as_json.stdout)
        assert report["healthy"] is True and report["leader"] == leader + 1
        assert [m["address"] for m in report["members"]] == cluster.addresses
        for member in report["members"]:
            assert DIGEST.fullmatch(member["status"]["state_digest"])
            assert DIGEST.fullmatch(member["status"]["log_digest"])
    finally:
        cluster.close()
