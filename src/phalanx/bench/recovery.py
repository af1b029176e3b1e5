"""`phalanx bench recovery`: restart nodes holding N log entries; time until they serve.

The nodes run with their default snapshot settings, so a restarted node loads its
newest snapshot and replays the write-ahead log after it (the report says which
snapshot it found); without a snapshot it would apply every entry to a fresh service.
The benchmark fills a 3-node cluster with N entries (100-byte puts from separate load
processes), stops the nodes cleanly and measures two restarts:

* the whole cluster: from starting the three processes until every node answers a
  status request (its log is loaded and it listens), until a client's put is answered
  (a leader was elected, committed its no-op and applied every earlier entry before
  this put), and until every node has applied all N entries;
* one follower, the others running: until it answers status, and until it has applied
  everything the leader has.

The same two restarts of the same cluster with an almost empty log, measured first, are
the baseline: they show what starting Python processes costs on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from phalanx.bench.clusters import BenchCluster, running_cluster
from phalanx.bench.loadgen import LoadSpec, spawn_loads
from phalanx.bench.results import (
    describe_machine,
    format_table,
    make_document,
    progress,
    write_document,
)
from phalanx.client import AsyncClient
from phalanx.transport.wire import NodeStatus

#: Bound on one restart, not an expectation.
RESTART_TIMEOUT_S = 600.0
FILL_PROCESSES = 2
POLL_INTERVAL_S = 0.02


def run_recovery(args: argparse.Namespace) -> int:
    if args.entries < 100 or args.in_flight < 1:
        print("phalanx bench recovery: --entries must be at least 100, --in-flight positive")
        return 2
    machine = describe_machine(args.out if args.out.exists() else None)
    with running_cluster() as cluster:
        progress("baseline: the same restarts with an (almost) empty log")
        baseline = asyncio.run(_restarts(cluster))
        fill = _fill(cluster, args.entries, args.in_flight)
        results = asyncio.run(_restarts(cluster))
    results["baseline"] = baseline
    results["fill"] = fill
    results["snapshots"] = results["snapshot_index"] > 0
    config = {"nodes": 3, "entries": args.entries, "value_bytes": 100}
    document = make_document("recovery", machine, config, results)
    path = write_document(args.out, document)
    print(recovery_table(results))
    if results["snapshots"]:
        replayed = results["log_entries"] - results["snapshot_index"]
        print(
            f"restarts loaded the snapshot at index {results['snapshot_index']:,} and "
            f"replayed the {replayed:,} entries after it (log kept from "
            f"{results['log_offset'] + 1:,})"
        )
    else:
        print("no snapshot was taken: every restart replayed the whole log")
    print(f"wrote {path}")
    return 0


def recovery_table(results: dict[str, Any]) -> str:
    rows: list[list[object]] = []
    for run in (results["baseline"], results):
        cluster = run["cluster_restart_s"]
        one = run["follower_restart_s"]
        rows += [
            ["whole cluster", run["log_entries"], run["wal_mib"], cluster["status"],
             cluster["serves"], cluster["applied_all"]],
            ["one follower", run["log_entries"], run["wal_mib"], one["status"], None,
             one["applied_all"]],
        ]  # fmt: skip
    header = ["restart", "log entries", "WAL MiB/node", "answers status s", "put answered s",
              "all applied s"]  # fmt: skip
    return format_table(header, rows)


def _fill(cluster: BenchCluster, entries: int, in_flight: int) -> dict[str, Any]:
    per_process = entries // FILL_PROCESSES
    progress(f"filling the log: {per_process * FILL_PROCESSES:,} puts from {FILL_PROCESSES} "
             f"processes, {in_flight} in flight each")  # fmt: skip
    started = time.monotonic()
    specs = [
        LoadSpec("phalanx", cluster.addresses, in_flight, key_prefix=f"f{c}-",
                 requests=per_process)
        for c in range(FILL_PROCESSES)
    ]  # fmt: skip
    spawn_loads(specs, timeout_s=RESTART_TIMEOUT_S + entries / 100)
    seconds = time.monotonic() - started
    progress(f"filled in {seconds:.1f}s ({per_process * FILL_PROCESSES / seconds:,.0f} puts/s)")
    return {"puts": per_process * FILL_PROCESSES, "seconds": round(seconds, 2)}


async def _restarts(cluster: BenchCluster) -> dict[str, Any]:
    statuses = await _all_applied(cluster, None)
    last_index = statuses[0].last_index
    wal_mib = round(_directory_bytes(cluster.configs[0].data_dir) / 2**20, 1)
    progress(
        f"every node holds {last_index:,} entries ({wal_mib} MiB on disk, preallocated "
        "segments included); stopping all"
    )
    cluster.stop_all()
    started = time.monotonic()
    cluster.start_all()
    answered = await _answering(cluster, range(len(cluster.processes)), started)
    async with AsyncClient(cluster.addresses, timeout=RESTART_TIMEOUT_S) as client:
        await client.call({"op": "put", "key": "recovered", "value": "yes"})
    serves = time.monotonic() - started
    await _all_applied(cluster, last_index)
    applied = time.monotonic() - started
    progress(f"whole cluster: status after {answered:.2f}s, put answered after {serves:.2f}s, "
             f"all applied after {applied:.2f}s")  # fmt: skip
    follower = (await cluster.wait_for_leader() + 1) % len(cluster.processes)
    cluster.stop(follower)
    started = time.monotonic()
    cluster.start(follower)
    one_answered = await _answering(cluster, [follower], started)
    await _all_applied(cluster, last_index)
    one_applied = time.monotonic() - started
    progress(f"one follower: status after {one_answered:.2f}s, all applied after "
             f"{one_applied:.2f}s")  # fmt: skip
    return {
        "log_entries": last_index,
        "snapshot_index": statuses[0].snapshot_index,
        "log_offset": statuses[0].log_offset,
        "wal_mib": wal_mib,
        "cluster_restart_s": {"status": round(answered, 3), "serves": round(serves, 3),
                              "applied_all": round(applied, 3)},
        "follower_restart_s": {"status": round(one_answered, 3),
                               "applied_all": round(one_applied, 3)},
    }  # fmt: skip


async def _answering(cluster: BenchCluster, indices: Any, started: float) -> float:
    deadline = started + RESTART_TIMEOUT_S
    while time.monotonic() < deadline:
        statuses = await cluster.statuses(attempt_timeout=0.2)
        if all(statuses[i] is not None for i in indices):
            return time.monotonic() - started
        await asyncio.sleep(POLL_INTERVAL_S)
    raise RuntimeError("restarted nodes did not answer in time")


async def _all_applied(cluster: BenchCluster, at_least: int | None) -> list[NodeStatus]:
    """Statuses once every node has applied one index (at least `at_least`)."""
    deadline = time.monotonic() + RESTART_TIMEOUT_S
    while time.monotonic() < deadline:
        statuses = await cluster.statuses()
        done = [s for s in statuses if s is not None]
        if len(done) == len(statuses):
            applied = {s.applied_index for s in done}
            if len(applied) == 1 and (at_least is None or min(applied) >= at_least):
                return done
        await asyncio.sleep(POLL_INTERVAL_S)
    raise RuntimeError("the nodes did not apply every entry in time")


def _directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
