"""Real fault runs: node processes, proxies, clients and a nemesis, judged end to end.

Each run is a `phalanx chaos` command run in this process (`phalanx.chaos.cli.run`).
The lin-kv and bank runs last about a minute each with kill, pause and partition
faults (and whole-cluster restarts for lin-kv); they must pass, and the summary must
show that the faults really happened. The last test breaks the cluster on purpose
(`--unsafe-local-reads`: nodes answer reads from local state) and the checker must
say the history is not linearizable.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from phalanx.chaos.cli import register

pytestmark = pytest.mark.slow


def chaos(out: Path, *argv: str) -> tuple[int, dict[str, Any]]:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["chaos", "--out", str(out), *argv])
    code: int = args.func(args)
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    if code == 3:
        pytest.fail(f"the run could not be carried out: {summary['error']}")
    assert (out / "history.jsonl").stat().st_size > 0
    assert (out / "report.html").read_text().count("<svg") == 2
    assert not list((out / "cluster").glob("node-*/")), "data dirs are removed"
    return code, summary


def check_statuses(summary: dict[str, Any]) -> dict[str, str]:
    return {check["name"]: check["status"] for check in summary["checks"]}


def assert_passed_under_faults(code: int, summary: dict[str, Any]) -> None:
    assert code == 0, json.dumps(summary["checks"], indent=2)
    assert set(check_statuses(summary).values()) == {"pass"}
    faults = summary["fault_counts"]
    assert faults["kill"] >= 1 and faults["pause"] >= 1 and faults["partition"] >= 1, faults
    # The faults were felt: operations with unknown outcomes, or new leaders.
    assert summary["ops"]["info"] > 0 or summary["leader_changes"] >= 1
    assert summary["ops"]["ok"] >= 300


def test_lin_kv_under_kill_pause_partition_and_restart(tmp_path: Path) -> None:
    code, summary = chaos(
        tmp_path / "lin-kv", "--workload", "lin-kv", "--time", "60", "--seed", "3",
        "--nemesis", "kill,pause,partition,restart",
    )  # fmt: skip
    assert_passed_under_faults(code, summary)
    assert summary["checker"]["verdict"] == "linearizable"
    assert summary["fault_counts"]["restart"] >= 1


def test_bank_under_kill_pause_and_partition(tmp_path: Path) -> None:
    code, summary = chaos(
        tmp_path / "bank", "--workload", "bank", "--time", "60", "--seed", "7",
        "--nemesis", "kill,pause,partition",
    )  # fmt: skip
    assert_passed_under_faults(code, summary)
    assert summary["ops_by_f"]["read"]["ok"] > 0
    assert summary["ops_by_f"]["transfer"]["ok"] > 0


def test_set_keeps_every_acknowledged_add(tmp_path: Path) -> None:
    code, summary = chaos(
        tmp_path / "set", "--workload", "set", "--time", "20", "--seed", "5",
        "--nemesis", "kill,partition",
    )  # fmt: skip
    assert code == 0, json.dumps(summary["checks"], indent=2)
    assert summary["set"]["lost"] == [] and summary["set"]["acknowledged"] > 300
    assert summary["fault_counts"]["kill"] + summary["fault_counts"]["partition"] >= 2


def test_the_checker_catches_a_cluster_that_serves_stale_local_reads(tmp_path: Path) -> None:
    # Every node answers reads from its own state; reads go to random nodes, and the
    # partitions leave a cut-off node serving old values while the majority moves on.
    code, summary = chaos(
        tmp_path / "broken", "--workload", "lin-kv", "--time", "12", "--seed", "3",
        "--nemesis", "partition", "--unsafe-local-reads",
    )  # fmt: skip
    assert code == 1
    assert check_statuses(summary)["history is linearizable"] == "fail"
    assert summary["checker"]["verdict"] == "not linearizable"
    assert "get" in summary["checker"]["failure"]
    assert summary["verdict"] == "fail"
