"""`phalanx bench memory`: the resident memory of each node over a long run.

Client load processes keep `--in-flight` puts in flight each, cycling over a bounded set
of keys (so the service's own state stays small), while this process samples `VmRSS`
from /proc/PID/status of every node every `--interval` seconds. The run ends after
`--commands` committed entries (the leader's commit index) or `--seconds`, whichever
comes first. The nodes run with their default snapshot settings, so the in-memory log
is compacted behind each snapshot: RSS should level off, and growth per million entries
is the number to watch.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from phalanx.bench.clusters import BenchCluster, running_cluster
from phalanx.bench.plots import series_plot
from phalanx.bench.results import (
    describe_machine,
    format_table,
    make_document,
    parse_status_kib,
    progress,
    write_document,
)

#: Samples kept (one per interval); a run longer than this many intervals stops early.
SAMPLES_MAX = 100_000
PROGRESS_EVERY_S = 10.0


def rss_kib(pid: int) -> int:
    return parse_status_kib(Path(f"/proc/{pid}/status").read_text(), "VmRSS")


def run_memory(args: argparse.Namespace) -> int:
    if args.commands < 1 or args.seconds <= 0 or args.interval <= 0:
        print("phalanx bench memory: --commands, --seconds and --interval must be positive")
        return 2
    machine = describe_machine(args.out if args.out.exists() else None)
    with running_cluster() as cluster:
        names = list(cluster.watch())
        results = asyncio.run(_sample(cluster, args))
    results["nodes"] = names
    config = {
        "nodes": 3, "commands": args.commands, "seconds_max": args.seconds,
        "interval_s": args.interval, "clients": args.clients, "in_flight": args.in_flight,
        "snapshots": "none yet",
    }  # fmt: skip
    document = make_document("memory", machine, config, results)
    path = write_document(args.out, document)
    samples = results["samples"]
    series = {
        names[n]: ([s["commit_index"] / 1e6 for s in samples],
                          [s["rss_mib"][n] for s in samples])
        for n in range(len(cluster.processes))
    }  # fmt: skip
    plot = None if args.no_plot else series_plot(
        args.out / "memory.png", series, "phalanx node RSS (default snapshot settings)",
        "committed entries (millions)", "RSS (MiB)",
    )  # fmt: skip
    print(memory_table(results))
    print(f"wrote {path}" + (f" and {plot}" if plot else ""))
    return 0


def memory_table(results: dict[str, Any]) -> str:
    count = len(results["final_rss_mib"])
    names = results.get("nodes") or [f"node {n + 1}" for n in range(count)]
    rows = [
        [names[n], results["start_rss_mib"][n], results["final_rss_mib"][n],
         results["max_rss_mib"][n], results["mib_per_million_entries"][n]]
        for n in range(count)
    ]  # fmt: skip
    header = ["node", "start MiB", "final MiB", "max MiB", "MiB per 1M entries"]
    return format_table(header, rows) + f"\ncommitted entries: {results['commit_index']:,}"


async def _sample(cluster: BenchCluster, args: argparse.Namespace) -> dict[str, Any]:
    nodes = range(len(cluster.processes))
    pids = [cluster.pid(n) for n in nodes]
    start_rss = [rss_kib(pid) / 1024 for pid in pids]
    loads = _start_loads(cluster, args)
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    last_progress = started
    try:
        while len(samples) < SAMPLES_MAX:
            await asyncio.sleep(args.interval)
            statuses = await cluster.statuses(attempt_timeout=2.0)
            commit = max(s.commit_index for s in statuses if s is not None)
            elapsed = time.monotonic() - started
            rss = [round(rss_kib(pid) / 1024, 1) for pid in pids]
            samples.append({"seconds": round(elapsed, 2), "commit_index": commit, "rss_mib": rss})
            if time.monotonic() - last_progress >= PROGRESS_EVERY_S:
                last_progress = time.monotonic()
                progress(f"{elapsed:.0f}s: {commit:,} entries committed; RSS MiB {rss}")
            if commit >= args.commands or elapsed >= args.seconds:
                break
    finally:
        for load in loads:
            load.kill()
            load.wait()
    last = samples[-1]
    millions = max(last["commit_index"], 1) / 1e6
    return {
        "samples": samples,
        "commit_index": last["commit_index"],
        "seconds": last["seconds"],
        "start_rss_mib": [round(r, 1) for r in start_rss],
        "final_rss_mib": last["rss_mib"],
        "max_rss_mib": [max(s["rss_mib"][n] for s in samples) for n in nodes],
        "mib_per_million_entries": [
            round((last["rss_mib"][n] - start_rss[n]) / millions, 1) for n in nodes
        ],
    }


def _start_loads(cluster: BenchCluster, args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    """Load processes that run until killed (their window ends far in the future)."""
    import dataclasses
    import json

    from phalanx.bench.loadgen import LoadSpec

    far = time.time() + 10 * 365 * 86400.0
    specs = [
        LoadSpec("phalanx", cluster.addresses, args.in_flight, key_prefix=f"m{c}-",
                 start_at=far, end_at=far)
        for c in range(args.clients)
    ]  # fmt: skip
    return [
        subprocess.Popen(
            [sys.executable, "-m", "phalanx.bench.loadgen", json.dumps(dataclasses.asdict(s))],
            stdout=subprocess.DEVNULL,
        )
        for s in specs
    ]
