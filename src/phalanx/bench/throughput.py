"""`phalanx bench throughput` and `phalanx bench latency` against a 3-node phalanx cluster.

Both start three node processes on 127.0.0.1 (KeyValue service, fsync on, default
settings) and drive them from separate load processes with 100-byte puts.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from phalanx.bench.clusters import running_cluster
from phalanx.bench.plots import latency_plot, throughput_plot
from phalanx.bench.results import describe_machine, format_table, make_document, ms, write_document
from phalanx.bench.workloads import one_at_a_time, sweep

DURABILITY = "fsync on a majority before ack"


def add_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=2, help="client processes (N)")
    parser.add_argument(
        "--in-flight",
        default="1,4,16,64,256,1024",
        help="requests in flight per client (M), a sweep",
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds measured per level")
    parser.add_argument("--value-bytes", type=int, default=100)


def add_latency_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=5000, help="sequential puts measured")
    parser.add_argument("--warmup-requests", type=int, default=200)


def add_out_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="output dir")
    parser.add_argument("--no-plot", action="store_true", help="JSON only, no PNG plots")


def in_flight_levels(text: str) -> list[int]:
    levels = [int(part) for part in text.split(",") if part.strip()]
    if not levels or min(levels) < 1:
        raise ValueError("--in-flight needs positive integers, e.g. 1,4,16,64")
    return levels


def run_throughput(args: argparse.Namespace) -> int:
    levels = in_flight_levels(args.in_flight)
    machine = describe_machine(args.out if args.out.exists() else None)
    with running_cluster() as cluster:
        measured = sweep(
            "phalanx", cluster.addresses, clients=args.clients, in_flight_levels=levels,
            warmup_s=args.warmup, measure_s=args.seconds, value_bytes=args.value_bytes,
            watch=cluster.watch(), term=cluster.current_term,
            log_counts=cluster.log_counts,
        )  # fmt: skip
    config = _load_config(args, levels)
    document = make_document("throughput", machine, config, {"levels": measured})
    path = write_document(args.out, document)
    plot = None if args.no_plot else throughput_plot(
        args.out / "throughput.png", {"phalanx": measured},
        f"phalanx, 3 nodes, {args.value_bytes}-byte puts, {args.clients} client processes",
    )  # fmt: skip
    print(throughput_table(measured))
    print(f"wrote {path}" + (f" and {plot}" if plot else ""))
    return 0


def throughput_table(levels: list[dict[str, Any]]) -> str:
    """One row per level; `of peak` is goodput against the best level of this run, and
    a level whose term moved had an election in it."""
    peak = max((level["ops_per_second"] for level in levels), default=0.0)
    rows = []
    for level in levels:
        terms = level.get("terms")
        elections = terms[1] - terms[0] if terms else "?"
        per_command = level.get("entries_per_command")
        rows.append(
            [
                level["in_flight"],
                level["ops_per_second"],
                f"{level['ops_per_second'] / peak:.0%}" if peak else "-",
                ms(level["latency_us"]["p50"]),
                ms(level["latency_us"]["p99"]),
                level["errors"],
                elections,
                "-" if per_command is None else f"{per_command:.3f}",
            ]
        )
    return format_table(
        ["in flight", "puts/s", "of peak", "p50 ms", "p99 ms", "errors", "elections",
         "entries/command"],
        rows,
    )  # fmt: skip


def run_latency(args: argparse.Namespace) -> int:
    machine = describe_machine(args.out if args.out.exists() else None)
    with running_cluster() as cluster:
        measured = one_at_a_time(
            "phalanx", cluster.addresses, requests=args.requests,
            warmup_requests=args.warmup_requests, value_bytes=args.value_bytes,
        )  # fmt: skip
    config = {
        "nodes": 3, "durability": DURABILITY, "requests": args.requests,
        "warmup_requests": args.warmup_requests, "value_bytes": args.value_bytes,
    }  # fmt: skip
    document = make_document("latency", machine, config, measured)
    path = write_document(args.out, document)
    plot = None if args.no_plot else latency_plot(
        args.out / "latency.png", {"phalanx": measured["latency_us"]},
        f"phalanx, one put at a time ({measured['requests']:,} puts)",
    )  # fmt: skip
    print(latency_table({"phalanx": measured["latency_us"]}))
    print(f"wrote {path}" + (f" and {plot}" if plot else ""))
    return 0


def latency_table(series: dict[str, dict[str, float]]) -> str:
    keys = ("p50", "p90", "p99", "p99.9", "max")
    rows = [[name, *(ms(latency[k]) for k in keys)] for name, latency in series.items()]
    return format_table(["system", *(f"{k} ms" for k in keys)], rows)


def _load_config(args: argparse.Namespace, levels: list[int]) -> dict[str, Any]:
    return {
        "nodes": 3, "durability": DURABILITY, "clients": args.clients,
        "in_flight_per_client": levels, "warmup_s": args.warmup, "measure_s": args.seconds,
        "value_bytes": args.value_bytes,
    }  # fmt: skip
