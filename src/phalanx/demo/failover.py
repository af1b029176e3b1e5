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
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from phalanx.client import AsyncClient
from phalanx.core.raft import Role
from phalanx.demo.bank import (
    ACCOUNTS,
    CALL_TIMEOUT_S,
    OPENING_BALANCE,
    SERVICE,
    Stats,
    expected_balances,
    open_accounts,
    transfer_until,
)
from phalanx.server.local import (
    LocalCluster,
    cluster_statuses,
    leader_of,
    temporary_directory,
    wait_for_leader,
)
from phalanx.transport.wire import NodeStatus

#: Fractions of the run time at which the leader is killed, and restarted.
KILL_AT = 0.3
RESTART_AT = 0.6
#: Polls (0.2 s apart) for every node to apply the same last entry before the verdict.
CONVERGE_POLLS_MAX = 100


def _table(statuses: list[NodeStatus | None], stats: Stats, phase: str, rate: float) -> Table:
    table = Table(title=f"phalanx demo: {phase}")
    for column in ("node", "role", "term", "last", "commit", "applied", "leader"):
        table.add_column(column)
    for index, status in enumerate(statuses):
        if status is None:
            table.add_row(str(index + 1), "[red]down[/red]", *["-"] * 5)
        else:
            role = status.role.value
            styled = f"[bold green]{role}[/bold green]" if status.role is Role.LEADER else role
            table.add_row(
                str(status.id), styled, str(status.term), str(status.last_index),
                str(status.commit_index), str(status.applied_index), str(status.leader),
            )  # fmt: skip
    table.caption = (
        f"acknowledged transfers {stats.acknowledged}  rejected {stats.rejected}  "
        f"unknown {stats.unknown}  throughput {rate:,.0f}/s"
    )
    return table


async def _scenario(cluster: LocalCluster, args: argparse.Namespace, console: Console) -> bool:
    cluster.start_all()
    await wait_for_leader(cluster)
    await open_accounts(cluster)
    stats = Stats()
    loop = asyncio.get_running_loop()
    started = loop.time()
    stop = started + args.seconds
    clients = [AsyncClient(cluster.addresses, timeout=CALL_TIMEOUT_S) for _ in range(args.clients)]
    rng = random.Random(args.seed)
    workers = [
        loop.create_task(transfer_until(client, random.Random(rng.random()), stats, stop))
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
            statuses = await cluster_statuses(cluster)
            elapsed = loop.time() - started
            if killed is None and elapsed > args.seconds * KILL_AT:
                killed = leader_of(statuses)
                if killed is not None:
                    cluster.kill(killed)
                    kill_time = time.monotonic()
            if killed is not None and not restarted and elapsed > args.seconds * RESTART_AT:
                cluster.start(killed)
                restarted = True
            now = time.monotonic()
            rate = (stats.acknowledged + stats.rejected - last_count) / (now - last_time)
            last_count, last_time = stats.acknowledged + stats.rejected, now
            live.update(_table(statuses, stats, _phase(killed, restarted), rate))
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


def _failover_ms(stats: Stats, kill_time: float) -> float | None:
    """From the kill to the first answer to a call made after it: replies the old
    leader sent just before dying, or calls already committed, do not count."""
    after = [answered for sent, answered in stats.completions if sent > kill_time]
    return (min(after) - kill_time) * 1000 if after else None


async def _converged(cluster: LocalCluster) -> list[NodeStatus] | None:
    for _ in range(CONVERGE_POLLS_MAX):
        statuses = await cluster_statuses(cluster)
        done = [s for s in statuses if s is not None]
        if len(done) == len(statuses):
            applied = {s.applied_index for s in done}
            if len(applied) == 1 and all(s.commit_index == s.applied_index for s in done):
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
        log_digests = {s.log_digest for s in statuses}
        state_digests = {s.state_digest for s in statuses}
        checks.append(
            (
                "same entries and same state on every node",
                len(log_digests) == 1 and len(state_digests) == 1,
                f"applied index {statuses[0].applied_index}, "
                f"state digest {next(iter(state_digests))[:12]}",
            )
        )
    async with AsyncClient(cluster.addresses, timeout=CALL_TIMEOUT_S) as client:
        total = await client.call({"op": "total"})
        balances = (await client.call({"op": "balances"}))["balances"]
    opening = OPENING_BALANCE * len(ACCOUNTS)
    conserved = total["total"] == total["deposited"] - total["withdrawn"] == opening
    checks.append(("money conserved", conserved, f"total {total['total']:,} of {opening:,}"))
    exact = balances == expected_balances(stats) and stats.unknown == 0
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


def run_failover(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or args.clients < 1 or args.in_flight < 1:
        print("phalanx demo: --seconds, --clients and --in-flight must be positive")
        return 2
    console = Console()
    with (
        temporary_directory("phalanx-demo-", keep=args.keep) as root,
        LocalCluster(root, services=SERVICE) as cluster,
    ):
        console.print(f"3-node bank cluster on {', '.join(cluster.addresses)}; data in {root}")
        ok = asyncio.run(_scenario(cluster, args, console))
    console.print(
        "[bold green]demo passed[/bold green]" if ok else "[bold red]demo FAILED[/bold red]"
    )
    return 0 if ok else 1
