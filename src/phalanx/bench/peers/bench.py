"""`phalanx bench peers`: the throughput and latency workloads on phalanx, PySyncObj and
etcd in one invocation, and one table with ratios.

Each system gets its best honest set-up on this machine, and its durability is printed:

* phalanx: 3 node processes, default settings (fsync on a majority before a reply),
  driven by `--clients` separate load processes through `AsyncClient`.
* PySyncObj: 3 node processes, log in memory and never fsynced; its load runs inside the
  leader's process (it has no network client). Throughput with its default batching,
  latency with batching off (its defaults wait for the 100 ms append period).
* etcd (Debian's etcd-server): 3 members, default settings (fsync on), driven by the
  same load processes as phalanx through the v3 JSON gateway (`/v3/kv/put`), one
  keep-alive HTTP/1.1 connection per request in flight, aimed at the leader so no
  follower forwards.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from phalanx.bench.clusters import running_cluster
from phalanx.bench.plots import latency_plot, throughput_plot
from phalanx.bench.results import (
    describe_machine,
    format_table,
    make_document,
    ms,
    progress,
    write_document,
)
from phalanx.bench.setup import ensure_etcd, ensure_plotting, ensure_python_package
from phalanx.bench.throughput import DURABILITY, in_flight_levels
from phalanx.bench.workloads import one_at_a_time, sweep

SYSTEMS = ("phalanx", "pysyncobj", "etcd")


def run_peers(args: argparse.Namespace) -> int:
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown or "phalanx" not in systems:
        print(f"phalanx bench peers: --systems must include phalanx; known: {SYSTEMS}")
        return 2
    levels = in_flight_levels(args.in_flight)
    etcd = _set_up(systems, args.no_plot)
    machine = describe_machine(args.out if args.out.exists() else None)
    root = Path(tempfile.mkdtemp(prefix="phalanx-bench-peers-"))
    measured: list[dict[str, Any]] = []
    try:
        measured.append(_phalanx(args, levels))
        if "pysyncobj" in systems:
            measured.append(_pysyncobj(args, levels, root / "pysyncobj"))
        if "etcd" in systems:
            assert etcd is not None
            measured.append(_etcd(args, levels, etcd, root / "etcd"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return _report(args, levels, machine, measured)


def _set_up(systems: list[str], no_plot: bool) -> str | None:
    progress("setting up: matplotlib, and the peers' software when missing")
    if not no_plot:
        ensure_plotting()
    if "pysyncobj" in systems:
        ensure_python_package("pysyncobj", "pysyncobj")
    return ensure_etcd() if "etcd" in systems else None


def _phalanx(args: argparse.Namespace, levels: list[int]) -> dict[str, Any]:
    progress("phalanx: 3 node processes, fsync on")
    with running_cluster() as cluster:
        sweep_levels = sweep(
            "phalanx", cluster.addresses, clients=args.clients, in_flight_levels=levels,
            warmup_s=args.warmup, measure_s=args.seconds, value_bytes=args.value_bytes,
            watch=cluster.watch(), term=cluster.current_term,
        )  # fmt: skip
        latency = one_at_a_time(
            "phalanx", cluster.addresses, requests=args.requests,
            warmup_requests=args.warmup_requests, value_bytes=args.value_bytes,
        )  # fmt: skip
    return _system("phalanx", DURABILITY, "AsyncClient, separate processes", sweep_levels, latency)


def _pysyncobj(args: argparse.Namespace, levels: list[int], root: Path) -> dict[str, Any]:
    """PySyncObj's best of two set-ups at each level: its default batching, and batching
    off (which also gives the one-at-a-time latency)."""
    from phalanx.bench.peers.clusters import PYSYNCOBJ_DURABILITY, run_pysyncobj

    totals = [args.clients * level for level in levels]
    workload = {"levels": totals, "warmup_s": args.warmup, "measure_s": args.seconds,
                "value_bytes": args.value_bytes}  # fmt: skip
    runs: dict[str, dict[str, Any]] = {}
    for batch in (True, False):
        name = "batching on" if batch else "batching off"
        progress(f"pysyncobj: 3 node processes, {name}, in-process load at {totals} in flight")
        extra = {} if batch else {"requests": args.requests,
                                  "warmup_requests": args.warmup_requests}  # fmt: skip
        runs[name] = run_pysyncobj(root, workload | extra, batch=batch)
        for level in runs[name]["levels"]:
            progress(f"pysyncobj ({name}): {level['in_flight']} in flight: "
                     f"{level['ops_per_second']:,.0f}/s")  # fmt: skip
    best = []
    for on, off in zip(runs["batching on"]["levels"], runs["batching off"]["levels"], strict=True):
        batched_wins = on["ops_per_second"] >= off["ops_per_second"]
        winner = dict(on if batched_wins else off)
        winner["setup"] = "batching on" if batched_wins else "batching off"
        best.append(winner)
    latency = runs["batching off"]["latency"]
    progress(f"pysyncobj: one at a time (batching off): p50 {ms(latency['latency_us']['p50']):.3f}"
             f" ms, p99 {ms(latency['latency_us']['p99']):.3f} ms")  # fmt: skip
    system = _system(
        "pysyncobj", PYSYNCOBJ_DURABILITY,
        "in the leader's process; best of batching on/off per level; latency batching off",
        best, latency,
    )  # fmt: skip
    system["runs"] = {name: run["levels"] for name, run in runs.items()}
    return system


def _etcd(args: argparse.Namespace, levels: list[int], etcd: str, root: Path) -> dict[str, Any]:
    from phalanx.bench.peers.clusters import ETCD_DURABILITY, EtcdCluster

    progress("etcd: 3 members, default settings (fsync on)")
    cluster = EtcdCluster(etcd, root)
    cluster.start()
    try:
        leader = cluster.leader_address()
        sweep_levels = sweep(
            "etcd", [leader], clients=args.clients, in_flight_levels=levels,
            warmup_s=args.warmup, measure_s=args.seconds, value_bytes=args.value_bytes,
            watch=cluster.watch(leader),
        )  # fmt: skip
        latency = one_at_a_time(
            "etcd", [leader], requests=args.requests,
            warmup_requests=args.warmup_requests, value_bytes=args.value_bytes,
        )  # fmt: skip
    finally:
        cluster.stop()
    return _system(
        "etcd", ETCD_DURABILITY, "JSON gateway, keep-alive HTTP/1.1, separate processes",
        sweep_levels, latency,
    )  # fmt: skip


def _system(
    name: str, durability: str, client: str, levels: list[dict[str, Any]], latency: dict[str, Any]
) -> dict[str, Any]:
    return {
        "system": name,
        "durability": durability,
        "client": client,
        "levels": levels,
        "latency_us": latency["latency_us"],
        "latency": latency,
    }


def peers_table(systems: list[dict[str, Any]]) -> str:
    """One row per system and one ratio row (phalanx / peer) per peer."""
    totals = [level["in_flight"] for level in systems[0]["levels"]]
    header = ["system", "durability", *(f"{t} in flight /s" for t in totals),
              "p50 ms", "p99 ms"]  # fmt: skip
    rows: list[list[object]] = []
    for system in systems:
        rows.append([system["system"], system["durability"], *_numbers(system)])
    phalanx = _numbers(systems[0])
    for system in systems[1:]:
        peer = _numbers(system)
        ratios = [round(p / q, 2) if q else None for p, q in zip(phalanx, peer, strict=True)]
        rows.append([f"phalanx / {system['system']}", "(ratio)", *ratios])
    return format_table(header, rows)


def _numbers(system: dict[str, Any]) -> list[float]:
    throughput = [float(level["ops_per_second"]) for level in system["levels"]]
    latency = system["latency_us"]
    return [*throughput, ms(latency["p50"]), ms(latency["p99"])]


def _report(
    args: argparse.Namespace, levels: list[int], machine: dict[str, Any],
    systems: list[dict[str, Any]],
) -> int:  # fmt: skip
    config = {
        "clients": args.clients, "in_flight_per_client": levels, "warmup_s": args.warmup,
        "measure_s": args.seconds, "value_bytes": args.value_bytes,
        "requests": args.requests, "warmup_requests": args.warmup_requests,
    }  # fmt: skip
    document = make_document("peers", machine, config, {"systems": systems})
    path = write_document(args.out, document)
    label = {s["system"]: f"{s['system']} ({s['durability']})" for s in systems}
    plots = (
        []
        if args.no_plot
        else [
            throughput_plot(
                args.out / "peers-throughput.png",
                {label[s["system"]]: s["levels"] for s in systems},
                f"3 nodes on 127.0.0.1, {args.value_bytes}-byte puts",
            ),
            latency_plot(
                args.out / "peers-latency.png",
                {label[s["system"]]: s["latency_us"] for s in systems},
                "one put at a time",
            ),
        ]
    )
    print()
    print(peers_table(systems))
    print("ratios are phalanx / peer: above 1 leads on throughput, below 1 leads on latency")
    print(f"wrote {', '.join(str(p) for p in [path, *plots])}")
    return 0
