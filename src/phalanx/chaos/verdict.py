"""Judging a finished run: the checks, the summary and the exit code.

Theory of operation
-------------------
Each check ends `pass`, `fail` or `unknown`:

- **linearizable** (lin-kv, bank): the history file, read back exactly as
  `phalanx check` reads it, goes through the checker with the workload's model and
  a time budget. A budget that runs out is `unknown`, never a pass.
- **no acknowledged write lost**: lin-kv and bank end with reads through the log
  after healing, and those reads are part of the checked history. A lost write
  shows as a final read that no order explains, so this check fails when the
  checker's first unplaceable operation is a final read (or a final read did not
  complete); it passes with a linearizable history, and says `unknown` when the
  history failed earlier (the final reads were never reached) or the checker ran
  out of budget. For the set workload it is Jepsen's set check: no acknowledged add
  missing from the final read.
- **no unexpected or duplicated element** (set): every element read was attempted,
  none that definitely failed is present, and none appears twice.
- **recovered**: after healing, a leader was elected and the final reads completed.
- **replicas agree**: every node answered and all have applied the same index with
  the same log digest and the same state digest.

Exit code: 0 when every check passes; 1 when any check fails; 2 when none fails but
one is unknown (a pass was not shown, so the run does not pass); 3 when the harness
could not run at all (see `cli`).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec

from phalanx.chaos.nemesis import FaultKind
from phalanx.chaos.recorder import HistoryEvent, load_for_checker
from phalanx.chaos.runner import RunData
from phalanx.chaos.workloads import make_workload
from phalanx.check import (
    BankModel,
    CheckResult,
    History,
    Operation,
    Outcome,
    Verdict,
    check_history,
)
from phalanx.check.report import format_result

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str
    detail: str


def exit_code(checks: list[Check]) -> int:
    statuses = {check.status for check in checks}
    if FAIL in statuses:
        return 1
    if UNKNOWN in statuses:
        return 2
    return 0


def judge(data: RunData, history_path: Path) -> tuple[list[Check], dict[str, Any]]:
    """The checks of a run, and what the checker found (for the summary)."""
    workload = make_workload(data.options.workload)
    events = data.recorder.client_events()
    checks: list[Check] = []
    found: dict[str, Any] = {}
    model = workload.model()
    if model is not None:
        history = load_for_checker(history_path)
        if isinstance(model, BankModel):
            checks.append(_bank_reads(history, model))
        result = check_history(history, model, budget_seconds=data.options.check_seconds)
        checks.append(_linearizable(result))
        checks.append(_no_lost_write(result, data))
        found["checker"] = _checker_summary(result)
    else:
        found["set"] = set_findings = workload.judge(events)
        checks.extend(_set_checks(set_findings))
    checks.append(_no_unexpected_exit(data))
    checks.append(_recovered(data))
    checks.append(_replicas_agree(data))
    return checks, found


def _bank_reads(history: History, model: BankModel) -> Check:
    """Every ok read on its own: the total is conserved and no balance is negative."""
    reads = [op for op in history.operations if op.f == "read" and op.outcome is Outcome.OK]
    for op in reads:
        problem = model.violation(op)
        if problem is not None:
            where = f"{op.describe()} ({op.lines()})"
            return Check("every read sums to the total, none negative", FAIL, f"{problem}: {where}")
    detail = f"{len(reads)} reads, each summing to {model.total}"
    return Check("every read sums to the total, none negative", PASS, detail)


def _linearizable(result: CheckResult) -> Check:
    text = format_result(result, "history.jsonl")
    if result.verdict is Verdict.LINEARIZABLE:
        return Check("history is linearizable", PASS, text)
    if result.verdict is Verdict.NOT_LINEARIZABLE:
        return Check("history is linearizable", FAIL, text)
    return Check("history is linearizable", UNKNOWN, text)


def _no_lost_write(result: CheckResult, data: RunData) -> Check:
    name = "no acknowledged write lost"
    if not data.final_reads_ok:
        return Check(name, FAIL, "the final reads after healing did not all complete")
    if result.verdict is Verdict.LINEARIZABLE:
        return Check(name, PASS, "the final reads linearize with every acknowledged write")
    if result.verdict is Verdict.UNKNOWN:
        return Check(name, UNKNOWN, "the checker ran out of budget before the final reads")
    assert result.failure is not None
    culprit = result.failure.operation
    if culprit.process in data.final_processes:
        return Check(name, FAIL, f"a final read no order explains: {culprit.describe()}")
    return Check(
        name, UNKNOWN, "not judged: the history is not linearizable before the final reads"
    )


def _checker_summary(result: CheckResult) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "verdict": result.verdict.value,
        "seconds": round(result.seconds, 3),
        "steps": result.steps,
        "partitions": result.partitions,
    }
    if result.reason:
        summary["reason"] = result.reason
    if result.failure is not None:
        summary["failure"] = format_result(result, "history.jsonl")
        summary["failure_time_s"] = _time_of(result.failure.operation)
    return summary


def _time_of(op: Operation) -> float | None:
    """When `op` completed (or was invoked), from the `time` field of its line."""
    event = op.completion or op.invoke
    try:
        time = json.loads(event.text).get("time")
    except ValueError:
        return None
    return float(time) if isinstance(time, int | float) else None


def _set_checks(findings: dict[str, Any]) -> list[Check]:
    lost, unexpected, duplicated = findings["lost"], findings["unexpected"], findings["duplicated"]
    counts = (
        f"{findings['acknowledged']} acknowledged adds of {findings['attempted']} attempted; "
        f"{findings['present']} elements read, {findings['recovered']} of them unacknowledged"
    )
    lost_status = PASS if not lost and findings["final_reads_ok"] else FAIL
    lost_detail = f"lost {_few(lost)}; {counts}" if lost else counts
    if not findings["final_reads_ok"]:
        lost_detail = "the final reads did not all complete; " + counts
    odd = unexpected or duplicated
    odd_detail = f"unexpected {_few(unexpected)}, duplicated {_few(duplicated)}" if odd else counts
    return [
        Check("no acknowledged write lost (every acknowledged add read)", lost_status, lost_detail),
        Check("no unexpected or duplicated element", FAIL if odd else PASS, odd_detail),
    ]


def _few(items: list[int]) -> str:
    shown = ", ".join(map(str, items[:20]))
    return f"{len(items)} [{shown}{', ...' if len(items) > 20 else ''}]"


def _no_unexpected_exit(data: RunData) -> Check:
    name = "no node exited on its own"
    if not data.exits:
        return Check(name, PASS, "every node ran until the nemesis or the harness stopped it")
    shown = "; ".join(f"{exit.description} at {exit.start_s:.1f}s" for exit in data.exits[:10])
    return Check(name, FAIL, f"{len(data.exits)} exits: {shown} (see cluster/node-N.log)")


def _recovered(data: RunData) -> Check:
    name = "cluster recovered after healing"
    if not data.recovered:
        return Check(name, FAIL, f"no leader within {data.options.recovery_s:g}s of healing")
    if not data.final_reads_ok:
        return Check(name, FAIL, "a leader was elected, but the final reads did not complete")
    return Check(name, PASS, "a leader was elected and the final reads completed")


def _replicas_agree(data: RunData) -> Check:
    name = "every replica has the same log and state"
    statuses = data.statuses
    missing = [index + 1 for index, status in enumerate(statuses) if status is None]
    if not statuses or missing:
        return Check(name, FAIL, f"nodes {missing} did not answer after healing")
    present = [status for status in statuses if status is not None]
    applied = {s.applied_index for s in present}
    if len(applied) != 1:
        return Check(name, FAIL, f"nodes stopped at different applied indices {sorted(applied)}")
    logs = {s.log_digest for s in present}
    states = {s.state_digest for s in present}
    detail = (
        f"applied index {applied.pop()}, log digest {sorted(logs)[0][:12]}, "
        f"state digest {sorted(states)[0][:12]}"
    )
    if len(logs) != 1 or len(states) != 1:
        return Check(name, FAIL, f"digests differ: logs {sorted(logs)}, states {sorted(states)}")
    return Check(name, PASS, detail)


def summarize(
    data: RunData, checks: list[Check], found: dict[str, Any], code: int
) -> dict[str, Any]:
    """Everything `summary.json` holds."""
    options = data.options
    events = data.recorder.client_events()
    kinds = Counter(record.kind for record in data.faults)
    return {
        "workload": options.workload,
        "out": str(options.out),
        "nodes": options.nodes,
        "nemesis": [kind.value for kind in options.nemesis],
        "seed": options.seed,
        "time_s": options.time_s,
        "duration_s": round(data.duration_s, 3),
        "unsafe_local_reads": options.unsafe_local_reads,
        "ops": {**data.recorder.counts, "total": data.recorder.completed},
        "ops_by_f": _by_function(events),
        "latency_ms": _latency(events),
        "faults": [asdict(record) for record in data.faults],
        "unexpected_exits": [asdict(record) for record in data.exits],
        "fault_counts": {kind.value: kinds.get(kind.value, 0) for kind in FaultKind},
        "schedule": data.schedule,
        "leaders_seen": sorted([term, node] for term, node in data.leaders_seen),
        "leader_changes": max(0, len(data.leaders_seen) - 1),
        "final_statuses": [None if s is None else msgspec.to_builtins(s) for s in data.statuses],
        "checks": [asdict(check) for check in checks],
        **found,
        "verdict": {0: "pass", 1: "fail", 2: "unknown"}.get(code, "error"),
        "exit_code": code,
    }


def _by_function(events: list[HistoryEvent]) -> dict[str, dict[str, int]]:
    invoked: dict[int | str, str] = {}
    table: dict[str, Counter[str]] = {}
    for event in events:
        if event.type == "invoke":
            invoked[event.process] = event.f
        else:
            table.setdefault(invoked.get(event.process, event.f), Counter())[event.type] += 1
    return {f: dict(counts) for f, counts in sorted(table.items())}


def _latency(events: list[HistoryEvent]) -> dict[str, float]:
    started: dict[int | str, float] = {}
    latencies: list[float] = []
    for event in events:
        if event.type == "invoke":
            started[event.process] = event.time
        elif event.type == "ok" and event.process in started:
            latencies.append((event.time - started.pop(event.process)) * 1000)
    if len(latencies) < 2:
        return {}
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "p50": round(cuts[49], 2),
        "p99": round(cuts[98], 2),
        "max": round(max(latencies), 2),
    }
