"""`phalanx bench ...`: benchmarks (never tests). Each reports ratios against a baseline
measured in the same invocation."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
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
    _register_cluster_benches(benches)


def _register_cluster_benches(benches: Any) -> None:
    """The benchmarks of real node processes; their modules load only when run."""
    throughput = benches.add_parser(
        "throughput", help="committed 100-byte puts/s on 3 nodes, a sweep of in-flight levels"
    )
    _options("add_load_options", throughput)
    _options("add_out_option", throughput)
    throughput.set_defaults(func=_lazy("phalanx.bench.throughput", "run_throughput"))

    latency = benches.add_parser("latency", help="one client, one put at a time: percentiles")
    _options("add_latency_options", latency)
    latency.add_argument("--value-bytes", type=int, default=100, help="bytes of each put's value")
    _options("add_out_option", latency)
    latency.set_defaults(func=_lazy("phalanx.bench.throughput", "run_latency"))

    failover = benches.add_parser("failover", help="SIGKILL the leader K times; time to serve")
    failover.add_argument("--kills", type=int, default=20, help="leaders killed (K)")
    _options("add_out_option", failover)
    failover.set_defaults(func=_lazy("phalanx.bench.failover", "run_failover"))

    recovery = benches.add_parser("recovery", help="restart nodes holding N log entries")
    recovery.add_argument("--entries", type=int, default=1_000_000, help="log entries (N)")
    recovery.add_argument("--in-flight", type=int, default=256, help="while filling the log")
    _options("add_out_option", recovery)
    recovery.set_defaults(func=_lazy("phalanx.bench.recovery", "run_recovery"))

    memory = benches.add_parser("memory", help="RSS of each node over a long run")
    memory.add_argument("--commands", type=int, default=5_000_000, help="stop after this many")
    memory.add_argument("--seconds", type=float, default=600.0, help="or after this long")
    memory.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    memory.add_argument("--in-flight", type=int, default=256, help="per client process")
    memory.add_argument("--clients", type=int, default=2, help="client processes")
    _options("add_out_option", memory)
    memory.set_defaults(func=_lazy("phalanx.bench.memory", "run_memory"))

    profile = benches.add_parser(
        "profile", help="py-spy samples of the leader and a follower under load, by layer"
    )
    profile.add_argument(
        "--mode",
        choices=("load", "sequential"),
        default="load",
        help="load: the throughput workload; sequential: one put at a time",
    )
    profile.add_argument("--seconds", type=float, default=15.0, help="sampling time")
    _options("add_out_option", profile)
    profile.set_defaults(func=_lazy("phalanx.bench.profile", "run_profile"))

    peers = benches.add_parser(
        "peers", help="the throughput and latency workloads on phalanx, PySyncObj and etcd"
    )
    _options("add_load_options", peers)
    _options("add_latency_options", peers)
    peers.add_argument(
        "--systems", default="phalanx,pysyncobj,etcd", help="which systems, comma-separated"
    )
    _options("add_out_option", peers)
    peers.set_defaults(func=_lazy("phalanx.bench.peers.bench", "run_peers"))


def _options(name: str, parser: argparse.ArgumentParser) -> None:
    from phalanx.bench import throughput

    getattr(throughput, name)(parser)


def _lazy(module_name: str, function: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        module = importlib.import_module(module_name)
        code: int = getattr(module, function)(args)
        return code

    return run


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
