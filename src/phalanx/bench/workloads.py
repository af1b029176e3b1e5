"""The two workloads every system runs: a sweep of in-flight levels, and one request at
a time. Both drive the system from load processes of their own (`loadgen`), so the
client's CPU is never the node's."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from phalanx.bench.loadgen import LoadSpec, merge_results, spawn_loads
from phalanx.bench.results import progress

#: Seconds a load process gets to start before the window opens; also the warm-up.
START_UP_S = 1.5
#: Beyond the window, how long the load processes may take to finish.
FINISH_GRACE_S = 60.0


def sweep(
    system: str,
    targets: list[str],
    *,
    clients: int,
    in_flight_levels: list[int],
    warmup_s: float,
    measure_s: float,
    value_bytes: int = 100,
    watch: dict[str, int] | None = None,
    term: Callable[[], int] | None = None,
    log_counts: Callable[[], tuple[int, int]] | None = None,
) -> list[dict[str, Any]]:
    """Committed puts/s at each in-flight level (per client process), one level at a time.

    `term`, when given, reads the cluster's current Raft term before and after each
    level: a level during which it moved had an election in it, which the level's
    record and progress line say, because its numbers then measure that too.
    `log_counts`, when given, reads (log entries, commands applied) around each level
    for its entries per applied command (1.0: no command was appended twice)."""
    levels = []
    for number, per_client in enumerate(in_flight_levels, start=1):
        term_before = term() if term is not None else None
        counts_before = log_counts() if log_counts is not None else None
        start_at = time.time() + START_UP_S + warmup_s
        specs = [
            LoadSpec(
                system=system,
                targets=targets,
                in_flight=per_client,
                value_bytes=value_bytes,
                key_prefix=f"c{c}-",
                start_at=start_at,
                end_at=start_at + measure_s,
            )
            for c in range(clients)
        ]
        loads, cpu = spawn_loads(
            specs, timeout_s=START_UP_S + warmup_s + measure_s + FINISH_GRACE_S, watch=watch
        )
        merged = merge_results(loads)
        level: dict[str, Any] = {
            "in_flight": clients * per_client,
            "clients": clients,
            "in_flight_per_client": per_client,
            "ops": merged.ops,
            "errors": merged.errors,
            "seconds": merged.seconds,
            "ops_per_second": round(merged.ops / merged.seconds, 1),
            "latency_us": merged.histogram.summary(),
            "cpu_percent": cpu,
            "cpu_us_per_op": cpu_us_per_op(cpu, merged.ops / merged.seconds),
        }
        if log_counts is not None and counts_before is not None:
            entries, applied = (a - b for a, b in zip(log_counts(), counts_before, strict=True))
            level["log_entries"] = entries
            level["commands_applied"] = applied
            level["entries_per_command"] = round(entries / applied, 3) if applied else None
        elections = ""
        if term is not None and term_before is not None:
            level["terms"] = [term_before, term()]
            if level["terms"][1] != term_before:
                elections = (
                    f"; ELECTION during this level (term {term_before} -> {level['terms'][1]})"
                )
        levels.append(level)
        progress(
            f"{system}: level {number}/{len(in_flight_levels)}: {level['in_flight']} in flight "
            f"({clients}x{per_client}): {level['ops_per_second']:,.0f} puts/s, "
            f"p50 {level['latency_us']['p50'] / 1000:.2f} ms, errors {merged.errors}; CPU % of "
            f"a core: {', '.join(f'{k} {v:.0f}' for k, v in cpu.items())}"
            + (
                f"; {level['entries_per_command']} log entries per command"
                if level.get("entries_per_command") is not None
                else ""
            )
            + elections
        )
    return levels


def cpu_us_per_op(cpu_percent: dict[str, float], ops_per_second: float) -> dict[str, float]:
    """CPU microseconds each process spent per completed request, and their total."""
    if ops_per_second <= 0:
        return {}
    per_op = {name: round(p / 100 * 1e6 / ops_per_second, 1) for name, p in cpu_percent.items()}
    per_op["total"] = round(sum(per_op.values()), 1)
    return per_op


def one_at_a_time(
    system: str, targets: list[str], *, requests: int, warmup_requests: int, value_bytes: int = 100
) -> dict[str, Any]:
    """Latency of sequential puts from one client process (one request in flight)."""
    progress(f"{system}: {requests:,} sequential puts after {warmup_requests:,} warm-up ones")
    spec = LoadSpec(
        system=system,
        targets=targets,
        in_flight=1,
        value_bytes=value_bytes,
        requests=requests,
        warmup_requests=warmup_requests,
    )
    result = spawn_loads([spec], timeout_s=FINISH_GRACE_S + requests * 0.5)[0][0]
    summary = result.histogram.summary()
    progress(
        f"{system}: p50 {summary['p50'] / 1000:.3f} ms, p99 {summary['p99'] / 1000:.3f} ms, "
        f"max {summary['max'] / 1000:.3f} ms"
    )
    return {
        "requests": result.ops,
        "seconds": result.seconds,
        "latency_us": summary,
        "histogram": result.histogram.to_json(),
    }
