"""Recording histories, reading them back as the checker does, and judging them."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tests.transport.test_wire import node_status

from phalanx.chaos.cluster import ChaosCluster
from phalanx.chaos.nemesis import FaultRecord
from phalanx.chaos.recorder import Recorder, load_for_checker, read_events
from phalanx.chaos.report import pair_operations, render
from phalanx.chaos.runner import ChaosOptions, RunData
from phalanx.chaos.verdict import exit_code, judge, summarize
from phalanx.chaos.workloads import SET_KEYS, Bank, LinKv, SetWorkload, judge_set
from phalanx.check import Verdict


class Ticks:
    """A clock that moves one millisecond per reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def test_events_are_kept_in_real_time_order_with_their_process() -> None:
    recorder = Recorder(Ticks(), events_max=100)
    a = recorder.invoke(recorder.new_process(), 0, "put", "k", 1)
    b = recorder.invoke(recorder.new_process(), 1, "get", "k", None)
    recorder.complete(b, "ok", 1)
    recorder.nemesis("start-kill", "SIGKILL node 1")
    recorder.complete(a, "info", error="timed out")
    kinds = [(e.process, e.type, e.f) for e in recorder.events]
    assert kinds == [
        (0, "invoke", "put"), (1, "invoke", "get"), (1, "ok", "get"),
        ("nemesis", "info", "start-kill"), (0, "info", "put"),
    ]  # fmt: skip
    times = [e.time for e in recorder.events]
    assert times == sorted(times)
    assert recorder.counts == {"ok": 1, "fail": 0, "info": 1}
    assert len(recorder.client_events()) == 4


def test_a_process_has_one_operation_in_flight() -> None:
    recorder = Recorder(Ticks(), events_max=100)
    recorder.invoke(0, 0, "put", "k", 1)
    with pytest.raises(AssertionError):
        recorder.invoke(0, 0, "put", "k", 2)


def test_the_history_is_bounded_with_room_for_completions() -> None:
    recorder = Recorder(Ticks(), events_max=5)
    first = recorder.invoke(0, 0, "put", "k", 1)
    assert not recorder.full
    second = recorder.invoke(1, 1, "put", "k", 2)
    assert recorder.full  # a third operation would need events 5 and 6
    recorder.complete(first, "ok", 1)
    recorder.complete(second, "ok", 2)
    assert recorder.full
    assert len(recorder.events) == 4
    with pytest.raises(AssertionError):
        recorder.invoke(2, 2, "get", "k", None)


def test_the_file_is_the_checkers_format(tmp_path: Path) -> None:
    recorder = Recorder(Ticks(), events_max=100)
    put = recorder.invoke(0, 0, "put", "k0", 3)
    recorder.complete(put, "ok", 3)
    cas = recorder.invoke(1, 1, "cas", "k0", [3, 4])
    recorder.complete(cas, "fail", error="refused")
    get = recorder.invoke(2, 2, "get", "k0", None)
    recorder.complete(get, "ok", 3)
    recorder.nemesis("start-partition", "isolate leader 1")
    path = tmp_path / "history.jsonl"
    recorder.write(path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {
        "process": 0, "type": "invoke", "f": "put", "value": 3, "key": "k0",
        "time": lines[0]["time"], "client": 0,
    }  # fmt: skip
    assert read_events(path) == recorder.events
    history = load_for_checker(path)
    assert [(op.f, op.outcome.value) for op in history.operations] == [
        ("put", "ok"), ("cas", "fail"), ("get", "ok"),
    ]  # fmt: skip


def test_workloads_turn_replies_into_completions() -> None:
    kv = LinKv()
    rng = random.Random(1)
    ops = [kv.next_op(rng) for _ in range(200)]
    assert {op.f for op in ops if op} == {"get", "put", "cas"}
    get = next(op for op in ops if op and op.f == "get")
    cas = next(op for op in ops if op and op.f == "cas")
    assert kv.completion(get, {"value": 2}) == ("ok", 2)
    assert kv.completion(cas, {"ok": False, "value": 9}) == ("fail", None)
    assert kv.completion(cas, {"ok": True, "value": cas.value[1]}) == ("ok", cas.value)
    assert kv.completion(get, {"ok": False, "error": "bad_argument"}) == ("fail", None)
    bank = Bank()
    read = bank.final_reads()[0]
    assert bank.completion(read, {"ok": True, "balances": {"a0": 1}}) == ("ok", {"a0": 1})
    transfer = next(op for op in iter(lambda: bank.next_op(rng), None) if op.f == "transfer")
    refused = {"ok": False, "error": "insufficient_funds", "balance": 0}
    assert bank.completion(transfer, refused) == ("fail", None)
    adds = SetWorkload()
    first, second = adds.next_op(rng), adds.next_op(rng)
    assert first and second and (first.value, second.value) == (0, 1)
    assert first.command == {"op": "append", "key": SET_KEYS[0], "value": "0 "}
    assert adds.completion(adds.final_reads()[0], {"value": "0 4 "}) == ("ok", "0 4 ")


def set_history(reads: list[str]) -> Recorder:
    recorder = Recorder(Ticks(), events_max=100)
    for element, outcome in enumerate(["ok", "ok", "info", "fail", "ok"]):
        pending = recorder.invoke(element, 0, "add", None, element)
        recorder.complete(pending, outcome, element if outcome == "ok" else None)
    for key, value in zip(SET_KEYS, reads, strict=False):
        pending = recorder.invoke(10, 1, "read", key, None)
        recorder.complete(pending, "ok", value)
    return recorder


def test_the_set_check_finds_lost_unexpected_and_duplicated_elements() -> None:
    fine = judge_set(set_history(["0 4 ", "1 2 ", "", ""]).events)
    assert fine["lost"] == [] and fine["unexpected"] == [] and fine["duplicated"] == []
    assert fine["recovered"] == 1 and fine["final_reads_ok"]
    broken = judge_set(set_history(["0 3 7 ", "0 ", "", ""]).events)
    assert broken["lost"] == [1, 4]
    assert broken["unexpected"] == [3, 7]  # 3 definitely failed, 7 was never added
    assert broken["duplicated"] == [0]


def run_data(tmp_path: Path, recorder: Recorder, workload: str = "lin-kv") -> RunData:
    data = RunData(ChaosOptions(out=tmp_path, workload=workload), recorder, [], [])
    data.recovered = data.final_reads_ok = True
    data.statuses = [
        node_status(node, applied_index=9, commit_index=9, log_digest="ab", state_digest="cd")
        for node in (1, 2, 3)
    ]
    return data


def stale_read_history() -> Recorder:
    recorder = Recorder(Ticks(), events_max=100)
    put = recorder.invoke(0, 0, "put", "k0", 1)
    recorder.complete(put, "ok", 1)
    put = recorder.invoke(0, 0, "put", "k0", 2)
    recorder.complete(put, "ok", 2)
    get = recorder.invoke(1, 1, "get", "k0", None)
    recorder.complete(get, "ok", 1)  # stale: 2 was acknowledged before this read began
    return recorder


def test_a_stale_read_fails_the_verdict(tmp_path: Path) -> None:
    recorder = stale_read_history()
    path = tmp_path / "history.jsonl"
    recorder.write(path)
    data = run_data(tmp_path, recorder)
    checks, found = judge(data, path)
    statuses = {check.name: check.status for check in checks}
    assert statuses["history is linearizable"] == "fail"
    assert statuses["every replica has the same log and state"] == "pass"
    assert found["checker"]["verdict"] == Verdict.NOT_LINEARIZABLE.value
    assert exit_code(checks) == 1
    summary = summarize(data, checks, found, exit_code(checks))
    assert summary["verdict"] == "fail"
    assert json.loads(json.dumps(summary["final_statuses"]))[2]["state_digest"] == "cd"
    assert summary["checker"]["failure_time_s"] == recorder.events[-1].time
    page = render(summary, recorder.events, [], lanes=3)
    assert "Checker report" in page and "not linearizable" in page
    assert "first operation that cannot be placed</text>" in page


def test_diverged_replicas_fail_and_unknown_is_not_a_pass(tmp_path: Path) -> None:
    recorder = Recorder(Ticks(), events_max=100)
    put = recorder.invoke(0, 0, "put", "k0", 1)
    recorder.complete(put, "ok", 1)
    path = tmp_path / "history.jsonl"
    recorder.write(path)
    data = run_data(tmp_path, recorder)
    third = data.statuses[2]
    assert third is not None
    data.statuses[2] = msgspec.structs.replace(third, state_digest="ff")
    checks, _ = judge(data, path)
    assert [c.status for c in checks if c.name.startswith("every replica")] == ["fail"]
    assert exit_code(checks) == 1
    unknown = [check for check in checks if check.status == "pass"]
    assert exit_code(unknown) == 0
    from phalanx.chaos.verdict import Check

    assert exit_code([*unknown, Check("history is linearizable", "unknown", "")]) == 2


def test_the_report_is_self_contained(tmp_path: Path) -> None:
    recorder = stale_read_history()
    open_op = recorder.invoke(5, 2, "put", "k1", 4)
    assert open_op.process == 5
    path = tmp_path / "history.jsonl"
    recorder.write(path)
    data = run_data(tmp_path, recorder)
    checks, found = judge(data, path)
    summary: dict[str, Any] = summarize(data, checks, found, exit_code(checks))
    page = render(summary, recorder.events, [], lanes=3)
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 2
    for external in ("http://", "https://", "<script", "<link", "src="):
        assert external not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    ops = pair_operations(recorder.events, end_s=1.0)
    assert [op.outcome for op in ops] == ["ok", "ok", "ok", "open"]
    assert ops[-1].end_s == 1.0


def test_a_bank_read_that_loses_money_fails_on_its_own(tmp_path: Path) -> None:
    recorder = Recorder(Ticks(), events_max=100)
    read = recorder.invoke(0, 0, "read", None, None)
    balances = {"a0": 100, "a1": 100, "a2": 100, "a3": 100, "a4": 99}
    recorder.complete(read, "ok", balances)
    path = tmp_path / "history.jsonl"
    recorder.write(path)
    checks, _ = judge(run_data(tmp_path, recorder, "bank"), path)
    statuses = {check.name: check for check in checks}
    money = statuses["every read sums to the total, none negative"]
    assert money.status == "fail" and "summing to 499, expected 500" in money.detail
    assert statuses["history is linearizable"].status == "fail"


def test_a_node_that_exits_on_its_own_is_found_and_fails_the_run(tmp_path: Path) -> None:
    cluster = ChaosCluster(tmp_path, 3, "phalanx.examples.kv:KeyValue", {})
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    process.wait()
    cluster.processes[1] = process
    assert cluster.reap_exited() == [(1, 7)]
    assert cluster.processes[1] is None and cluster.reap_exited() == []
    recorder = stale_read_history()
    data = run_data(tmp_path, recorder)
    data.exits = [FaultRecord("exit", "node 2 exited on its own with code 7", [2], 3.0, 3.0)]
    path = tmp_path / "history.jsonl"
    recorder.write(path)
    checks, _ = judge(data, path)
    exits = next(check for check in checks if check.name == "no node exited on its own")
    assert exits.status == "fail" and "code 7 at 3.0s" in exits.detail
