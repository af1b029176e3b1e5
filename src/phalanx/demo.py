"""`phalanx demo`: a 3-node bank cluster on this machine, a leader killed mid-run, and
a verdict on what clients saw.

The demo starts three node processes on free ports of 127.0.0.1 with their data in a
temporary directory, opens accounts, runs concurrent clients that make transfers, kills
the leader with SIGKILL partway, restarts it later, and then checks:

* every node applied the same entries (equal rolling log digests) and reached the same
  state (equal state digests);
* money was conserved (sum of balances == deposited - withdrawn == what was deposited);
* every acknowledged transfer is in the final balances, and no command applied twice:
  the final balances equal the opening balances plus exactly the effects of the
  acknowledged transfers (a lost transfer or a double apply would change them).

It exits 0 only if all of that holds, and removes its processes and files.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from phalanx.client import AsyncClient, ClientError
from phalanx.client.admin import gather_statuses
from phalanx.server.cli import node_command
from phalanx.server.config import build_config
from phalanx.transport.addresses import free_ports

ACCOUNTS = [f"acct-{i}" for i in range(8)]
OPENING_BALANCE = 1_000_000
SERVICE = "phalanx.examples.bank:Bank"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a 3-node bank cluster through a failover, or (faulty) catch a faulty replica",
    )
    parser.add_argument(
        "scenario",
        nargs="?",
        default="failover",
        choices=("failover", "faulty"),
        help="failover (default): kill the leader; faulty: one node's service skips transfers",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="client run time")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client sessions")
    parser.add_argument("--in-flight", type=int, default=16, help="requests in flight per client")
    parser.add_argument("--seed", type=int, default=1, help="seed of the clients' transfers")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.set_defaults(func=run)


@dataclass
class Stats:
    acknowledged: int = 0
    rejected: int = 0
    unknown: int = 0
    deltas: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACCOUNTS, 0))
    #: (sent, answered) monotonic times of every answered call.
    completions: list[tuple[float, float]] = field(default_factory=list)


class LocalCluster:
    """Node processes on free ports of 127.0.0.1; `services` may give each node its own
    service, and `settings` adds node settings (all passed through a TOML file)."""

    def __init__(
        self,
        root: Path,
        nodes: int = 3,
        services: list[str] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        ports = free_ports(nodes)
        self.root = root
        self.addresses = [f"127.0.0.1:{port}" for port in ports]
        self.members = ",".join(f"{i + 1}={a}" for i, a in enumerate(self.addresses))
        services = services or [SERVICE] * nodes
        self.configs = [
            build_config(
                {
                    "id": i + 1,
                    "members": self.members,
                    "data": str(root / f"node-{i + 1}"),
                    "service": services[i],
                    **(settings or {}),
                }
            )
            for i in range(nodes)
        ]
        self.logs = [root / f"node-{i + 1}.log" for i in range(nodes)]
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * nodes

    def start(self, index: int) -> None:
        with self.logs[index].open("ab") as log_file:
            command = node_command(self.configs[index], self.root / f"node-{index + 1}.toml")
            self.processes[index] = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT
            )

    def kill(self, index: int) -> None:
        process = self.processes[index]
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            self.processes[index] = None

    def stop_all(self) -> None:
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for index, process in enumerate(self.processes):
            if process is None:
                continue
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self.processes[index] = None


async def _statuses(cluster: LocalCluster) -> list[dict[str, Any] | None]:
    return await gather_statuses(cluster.addresses, attempt_timeout=0.5)


async def _worker(client: AsyncClient, rng: random.Random, stats: Stats, stop: float) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < stop:
        source, target = rng.sample(ACCOUNTS, 2)
        amount = rng.randint(1, 5_000)
        command = {"op": "transfer", "from": source, "to": target, "amount": amount}
        sent = time.monotonic()
        try:
            reply = await client.call(command, timeout=30)
        except ClientError:
            stats.unknown += 1
            continue
        stats.completions.append((sent, time.monotonic()))
        if reply.get("ok"):
            stats.acknowledged += 1
            stats.deltas[source] -= amount
            stats.deltas[target] += amount
        else:
            stats.rejected += 1


def _table(statuses: list[dict[str, Any] | None], stats: Stats, phase: str, rate: float) -> Table:
    table = Table(title=f"phalanx demo: {phase}")
    for column in ("node", "role", "term", "last", "commit", "applied", "leader"):
        table.add_column(column)
    for index, status in enumerate(statuses):
        if status is None:
            table.add_row(str(index + 1), "[red]down[/red]", *["-"] * 5)
        else:
            role = status["role"]
            styled = f"[bold green]{role}[/bold green]" if role == "leader" else role
            table.add_row(
                str(status["id"]), styled, str(status["term"]), str(status["last_index"]),
                str(status["commit_index"]), str(status["applied_index"]), str(status["leader"]),
            )  # fmt: skip
    table.caption = (
        f"acknowledged transfers {stats.acknowledged}  rejected {stats.rejected}  "
        f"unknown {stats.unknown}  throughput {rate:,.0f}/s"
    )
    return table


async def _setup(cluster: LocalCluster) -> None:
    async with AsyncClient(cluster.addresses, timeout=30) as client:
        for account in ACCOUNTS:
            await client.call({"op": "open", "account": account})
            await client.call({"op": "deposit", "account": account, "amount": OPENING_BALANCE})


async def _scenario(cluster: LocalCluster, args: argparse.Namespace, console: Console) -> bool:
    for index in range(len(cluster.configs)):
        cluster.start(index)
    await _setup(cluster)
    stats = Stats()
    loop = asyncio.get_running_loop()
    started = loop.time()
    stop = started + args.seconds
    clients = [AsyncClient(cluster.addresses, timeout=30) for _ in range(args.clients)]
    rng = random.Random(args.seed)
    workers = [
        loop.create_task(_worker(client, random.Random(rng.random()), stats, stop))
        for client in clients
        for _ in range(args.in_flight)
    ]
    killed: int | None = None
    kill_time = 0.0
    restarted = False
    last_count, last_time = 0, time.monotonic()
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while any(not w.done() for w in workers):
            await asyncio.sleep(0.5)
            statuses = await _statuses(cluster)
            elapsed = loop.time() - started
            if killed is None and elapsed > args.seconds * 0.3:
                killed = _leader_index(statuses)
                if killed is not None:
                    cluster.kill(killed)
                    kill_time = time.monotonic()
            if killed is not None and not restarted and elapsed > args.seconds * 0.6:
                cluster.start(killed)
                restarted = True
            now = time.monotonic()
            rate = (stats.acknowledged + stats.rejected - last_count) / (now - last_time)
            last_count, last_time = stats.acknowledged + stats.rejected, now
            phase = _phase(killed, restarted)
            live.update(_table(statuses, stats, phase, rate))
    console.print()
    for client in clients:
        await client.close()
    total_seconds = loop.time() - started
    failover = _failover_ms(stats, kill_time) if killed is not None else None
    return await _verify(cluster, stats, console, total_seconds, failover, killed)


def _phase(killed: int | None, restarted: bool) -> str:
    if killed is None:
        return "running"
    if not restarted:
        return f"node {killed + 1} (the leader) killed with SIGKILL"
    return f"node {killed + 1} restarted, catching up"


def _leader_index(statuses: list[dict[str, Any] | None]) -> int | None:
    for index, status in enumerate(statuses):
        if status is not None and status["role"] == "leader":
            return index
    return None


def _failover_ms(stats: Stats, kill_time: float) -> float | None:
    """From the kill to the first answer to a call made after it: replies the old
    leader sent just before dying, or calls already committed, do not count."""
    after = [answered for sent, answered in stats.completions if sent > kill_time]
    return (min(after) - kill_time) * 1000 if after else None


async def _converged(cluster: LocalCluster) -> list[dict[str, Any]] | None:
    for _ in range(100):
        statuses = await _statuses(cluster)
        if all(statuses):
            done = [s for s in statuses if s is not None]
            applied = {s["applied_index"] for s in done}
            if len(applied) == 1 and all(s["commit_index"] == s["applied_index"] for s in done):
                return done
        await asyncio.sleep(0.2)
    return None


async def _verify(
    cluster: LocalCluster,
    stats: Stats,
    console: Console,
    seconds: float,
    failover_ms: float | None,
    killed: int | None,
) -> bool:
    statuses = await _converged(cluster)
    checks: list[tuple[str, bool, str]] = []
    if statuses is None:
        checks.append(("all nodes converged", False, "nodes did not reach one applied index"))
    else:
        log_digests = {s["log_digest"] for s in statuses}
        state_digests = {s["state_digest"] for s in statuses}
        checks.append(
            (
                "same entries and same state on every node",
                len(log_digests) == 1 and len(state_digests) == 1,
                f"applied index {statuses[0]['applied_index']}, "
                f"state digest {next(iter(state_digests))[:12]}",
            )
        )
    async with AsyncClient(cluster.addresses, timeout=30) as client:
        total = await client.call({"op": "total"})
        balances = (await client.call({"op": "balances"}))["balances"]
    opening = OPENING_BALANCE * len(ACCOUNTS)
    conserved = total["total"] == total["deposited"] - total["withdrawn"] == opening
    checks.append(("money conserved", conserved, f"total {total['total']:,} of {opening:,}"))
    expected = {a: OPENING_BALANCE + stats.deltas[a] for a in ACCOUNTS}
    exact = balances == expected and stats.unknown == 0
    checks.append(
        (
            "every acknowledged transfer applied exactly once",
            exact,
            f"{stats.acknowledged} acknowledged, {stats.rejected} rejected (insufficient "
            f"funds), {stats.unknown} with unknown outcome",
        )
    )
    checks.append(("the leader was killed and restarted", killed is not None, ""))
    _print_verdict(console, checks, stats, seconds, failover_ms)
    return all(ok for _, ok, _ in checks)


def _print_verdict(
    console: Console,
    checks: list[tuple[str, bool, str]],
    stats: Stats,
    seconds: float,
    failover_ms: float | None,
) -> None:
    for name, ok, detail in checks:
        mark = "[green]PASS[/green]" if ok else "[red]FAIL[/red]"
        console.print(f"{mark} {name}" + (f": {detail}" if detail else ""))
    done = stats.acknowledged + stats.rejected
    console.print(f"throughput: {done / seconds:,.0f} transfers/s over {seconds:.1f}s")
    if failover_ms is not None:
        console.print(f"failover: first reply {failover_ms:,.0f} ms after the leader was killed")


def run(args: argparse.Namespace) -> int:
    if args.scenario == "faulty":
        from phalanx.demo_faulty import run_faulty

        return run_faulty(args)
    if args.seconds <= 0 or args.clients < 1 or args.in_flight < 1:
        print("phalanx demo: --seconds, --clients and --in-flight must be positive")
        return 2
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="phalanx-demo-"))
    cluster = LocalCluster(root)
    console.print(f"3-node bank cluster on {', '.join(cluster.addresses)}; data in {root}")
    try:
        ok = asyncio.run(_scenario(cluster, args, console))
    finally:
        cluster.stop_all()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    console.print(
        "[bold green]demo passed[/bold green]" if ok else "[bold red]demo FAILED[/bold red]"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(
        run(
            argparse.Namespace(
                scenario="failover", seconds=20.0, clients=4, in_flight=16, seed=1, keep=False
            )
        )
    )
