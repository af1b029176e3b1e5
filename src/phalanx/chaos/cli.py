"""`phalanx chaos`: a fault run of real node processes, judged.

    phalanx chaos --nodes 3 --workload lin-kv --nemesis kill,pause,partition,restart \\
        --time 60 --out DIR [--seed S] [--unsafe-local-reads]

Writes `DIR/history.jsonl` (the checker's JSON-lines format; `phalanx check
DIR/history.jsonl --model kv` repeats the lin-kv check), `DIR/summary.json`,
`DIR/report.html` and the nodes' logs under `DIR/cluster/`. Exit codes: 0 every
check passed; 1 a check failed; 2 no check failed but one is unknown (the checker's
budget ran out); 3 the run could not be carried out (bad arguments, no leader);
130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from phalanx.chaos.cluster import ChaosCluster
from phalanx.chaos.nemesis import parse_kinds
from phalanx.chaos.report import write_report
from phalanx.chaos.runner import ChaosOptions, HarnessError, RunData, execute
from phalanx.chaos.verdict import exit_code, judge, summarize
from phalanx.chaos.workloads import WORKLOADS
from phalanx.core.errors import ConfigError

#: The longest run the command accepts, in seconds.
TIME_MAX_S = 24 * 3600
#: The most operations one run may record.
OPS_MAX = 1_000_000


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "chaos", help="run real nodes under faults (kill, pause, partition) and check them"
    )
    parser.add_argument("--nodes", type=int, choices=(3, 5), default=3, help="cluster size")
    parser.add_argument(
        "--workload", choices=WORKLOADS, default="lin-kv", help="what the clients do"
    )
    parser.add_argument(
        "--nemesis", default="kill,pause,partition,restart",
        help="comma-separated: kill, pause, partition, restart (or none)",
    )  # fmt: skip
    parser.add_argument("--time", type=float, default=60.0, help="seconds of client load")
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the fault plan and the clients' choices"
    )
    parser.add_argument(
        "--unsafe-local-reads", action="store_true",
        help="BROKEN ON PURPOSE: nodes answer reads from local state (the checker must object)",
    )  # fmt: skip
    parser.add_argument("--clients", type=int, default=6, help="concurrent clients")
    parser.add_argument("--rate", type=float, default=150.0, help="target operations a second")
    parser.add_argument(
        "--op-timeout",
        type=float,
        default=None,
        help="seconds per operation before it counts as unknown (default: 2; bank: 5)",
    )
    parser.add_argument("--max-ops", type=int, default=100_000, help="most operations recorded")
    parser.add_argument("--check-seconds", type=float, default=120.0, help="checker budget")
    parser.add_argument(
        "--reads-to-leader", action="store_true",
        help="let reads follow redirects to the leader instead of starting at a random node",
    )  # fmt: skip
    parser.add_argument("--keep-data", action="store_true", help="keep the nodes' data dirs")
    parser.set_defaults(func=run)


def options_from(args: argparse.Namespace) -> ChaosOptions:
    """Validated options; ValueError with a message for a bad argument."""
    if not 0 < args.time <= TIME_MAX_S:
        raise ValueError(f"--time must be in (0, {TIME_MAX_S}]")
    if not 1 <= args.clients <= 64:
        raise ValueError("--clients must be 1 to 64")
    if not 1 <= args.max_ops <= OPS_MAX:
        raise ValueError(f"--max-ops must be 1 to {OPS_MAX}")
    if args.op_timeout is not None and args.op_timeout <= 0:
        raise ValueError("--op-timeout must be positive")
    if args.rate <= 0 or args.check_seconds <= 0:
        raise ValueError("--rate, --op-timeout and --check-seconds must be positive")
    return ChaosOptions(
        out=args.out,
        nodes=args.nodes,
        workload=args.workload,
        nemesis=parse_kinds(args.nemesis),
        time_s=args.time,
        seed=args.seed,
        unsafe_local_reads=args.unsafe_local_reads,
        clients=args.clients,
        rate=args.rate,
        op_timeout_s=args.op_timeout,
        ops_max=args.max_ops,
        check_seconds=args.check_seconds,
        keep_data=args.keep_data,
        spread_reads=not args.reads_to_leader,
    )


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        options = options_from(args)
    except ValueError as error:
        console.print(f"phalanx chaos: {error}")
        return 3
    options.out.mkdir(parents=True, exist_ok=True)
    console.print(
        f"phalanx chaos: {options.workload} on {options.nodes} nodes for {options.time_s:g}s, "
        f"nemesis {','.join(k.value for k in options.nemesis) or 'none'}, seed {options.seed}"
        + (" [bold red](unsafe local reads: broken on purpose)[/bold red]"
           if options.unsafe_local_reads else "")
    )  # fmt: skip
    started: list[ChaosCluster] = []
    try:
        data = asyncio.run(execute(options, console, started))
    except (HarnessError, ConfigError) as error:
        console.print(f"[bold red]phalanx chaos: the run could not be carried out:[/] {error}")
        failed = {"verdict": "error", "exit_code": 3, "error": str(error)}
        (options.out / "summary.json").write_text(json.dumps(failed, indent=2) + "\n")
        return 3
    except KeyboardInterrupt:
        console.print("phalanx chaos: interrupted; every node process and proxy is stopped")
        return 130
    finally:
        for cluster in started:
            cluster.close()  # a no-op unless the run's own cleanup was cut short
    return finish(data, console)


def finish(data: RunData, console: Console) -> int:
    """Writes the history, judges it, writes the summary and report, prints the verdict."""
    out = data.options.out
    history_path = out / "history.jsonl"
    data.recorder.write(history_path)
    console.log("checking the history")
    checks, found = judge(data, history_path)
    code = exit_code(checks)
    summary = summarize(data, checks, found, code)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    shaded = sorted([*data.faults, *data.exits], key=lambda record: record.start_s)
    write_report(
        out / "report.html", summary, data.recorder.events, shaded, data.options.clients + 1
    )
    _print_verdict(console, summary)
    return code


def _print_verdict(console: Console, summary: dict[str, Any]) -> None:
    ops = summary["ops"]
    console.print(
        f"{ops['total']} operations (ok {ops['ok']}, fail {ops['fail']}, info {ops['info']}); "
        f"faults {summary['fault_counts']}; leader changes seen {summary['leader_changes']}"
    )
    marks = {
        "pass": "[green]PASS[/green]",
        "fail": "[red]FAIL[/red]",
        "unknown": "[yellow]UNKNOWN[/]",
    }
    for check in summary["checks"]:
        console.print(f"{marks[check['status']]} {check['name']}")
        if check["status"] != "pass" or "\n" not in check["detail"]:
            for line in check["detail"].splitlines()[:40]:
                console.print(f"    {line}", markup=False, highlight=False, soft_wrap=True)
    colour = {"pass": "green", "fail": "red"}.get(summary["verdict"], "yellow")
    console.print(
        f"[bold {colour}]verdict: {summary['verdict'].upper()}[/] "
        f"(exit {summary['exit_code']}); report in {summary['out']}/report.html"
    )
