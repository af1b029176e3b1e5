"""`phalanx snapshot` when a member's service cannot take one: the node answers index 0
and a message starting "failed:"; the command prints that member's failure and exits 1
(it used to report success)."""

from __future__ import annotations

from pathlib import Path

import pytest

from phalanx.client import Client
from phalanx.server.cli import judge_snapshot_reply
from phalanx.transport.addresses import free_ports

from .helpers import PHALANX_MODULE, Processes, leader_position, run, wait_until

REPOSITORY = Path(__file__).parents[2]
CALL_TIMEOUT_S = 20.0


def test_a_reply_whose_message_starts_failed_is_a_failure() -> None:
    failed = judge_snapshot_reply("h:1", (0, 0, "failed: RuntimeError: snapshot is broken"))
    assert failed.failed
    assert failed.text == "failed: RuntimeError: snapshot is broken"
    taken = judge_snapshot_reply("h:1", (120, 3, "fork 1.5 ms"))
    assert not taken.failed
    assert taken.text == "snapshot at index 120 (term 3) fork 1.5 ms"
    # Not failures: nothing new to snapshot, a service without snapshots.
    for note in ("no new entries since the last snapshot", "service has no restore()"):
        assert not judge_snapshot_reply("h:1", (0, 0, note)).failed


@pytest.mark.slow
def test_phalanx_snapshot_exits_1_naming_a_member_whose_snapshot_failed(
    tmp_path: Path, processes: Processes
) -> None:
    address = f"127.0.0.1:{free_ports(1)[0]}"
    argv = [*PHALANX_MODULE, "node", "--id", "1", "--members", f"1={address}"]
    argv += ["--data", str(tmp_path / "data")]
    argv += ["--service", "tests.service.bad_services:FailingSnapshot"]
    node = processes.start(argv, cwd=REPOSITORY)
    wait_until(
        lambda: leader_position([address]) is not None,
        f"a leader at {address}",
        describe=lambda: processes.output(node),
    )
    with Client([address], timeout=CALL_TIMEOUT_S) as client:
        assert client.call({"op": "put", "key": "k", "value": 1}) == {"ok": True}
    result = run([*PHALANX_MODULE, "snapshot", "--members", address])
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout.startswith(f"{address}: failed: "), result.stdout
    assert "snapshot is broken in this service" in result.stdout
    assert result.stderr == f"phalanx snapshot: no snapshot taken by {address}\n"
    assert processes.stop(node) == 0
