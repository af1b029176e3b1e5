"""`phalanx bench ...`: benchmarks (never tests). Each reports ratios against a baseline
measured in the same invocation."""

from __future__ import annotations

import argparse
from typing import Any

from phalanx.bench.core import bench_core, bench_simulator

#: The core must commit at least this many entries/s (issue: the core never limits).
CORE_TARGET_ENTRIES_PER_SECOND = 300_000


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks (ratios against a same-run baseline)")
    benches = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    core = benches.add_parser(
        "core", help="entries/s through a 3-node in-memory cluster of the pure Raft core"
    )
    core.add_argument("--entries", type=int, default=500_000, help="entries to commit")
    core.add_argument("--batch", type=int, default=256, help="proposals per batch")
    core.set_defaults(func=run_core)


def run_core(args: argparse.Namespace) -> int:
    if args.entries < 1 or args.batch < 1:
        print("phalanx bench core: --entries and --batch must be positive")
        return 2
    baseline = bench_core(1, max(1, args.entries // 50))
    batched = bench_core(args.batch, args.entries)
    ticks, seconds = bench_simulator()
    print("phalanx bench core: 3 nodes, in memory, no faults, one Python thread")
    print(f"{'batch':>8} {'entries':>10} {'seconds':>8} {'entries/s':>12} {'msgs/entry':>11}")
    for result in (baseline, batched):
        print(
            f"{result.batch_size:>8} {result.entries:>10} {result.seconds:>8.2f} "
            f"{result.entries_per_second:>12,.0f} {result.messages / result.entries:>11.3f}"
        )
    ratio = batched.entries_per_second / baseline.entries_per_second
    target = batched.entries_per_second / CORE_TARGET_ENTRIES_PER_SECOND
    print(f"batch {args.batch} vs batch 1: {ratio:.1f}x")
    print(f"vs target {CORE_TARGET_ENTRIES_PER_SECOND:,} entries/s: {target:.2f}x")
    print(f"simulator: {ticks} node-ticks in {seconds:.2f}s = {ticks / seconds:,.0f} node-ticks/s")
    return 0
