"""`phalanx bench failover`: SIGKILL the leader K times; how long until a client's next
command succeeds.

Theory of operation
-------------------
One client (in this process) makes puts one at a time. Before each kill the cluster is
whole: three nodes running, one leader that all agree on, the client's last put answered.
Then the client itself kills the leader with SIGKILL and at once sends its next put; the
time from the signal to that put's reply is one failover. It covers everything a user
waits for: the followers' election timeout, the election, the new leader's no-op commit,
and the client's own discovery of the new leader (its connection breaks, it retries the
next member with capped backoff and follows redirects). The killed node is restarted and
allowed to catch up before the next kill, so each kill starts from the same state.
The nodes run with their default timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from phalanx.bench.clusters import BenchCluster, running_cluster
from phalanx.bench.plots import series_plot
from phalanx.bench.results import (
    describe_machine,
    format_table,
    make_document,
    progress,
    write_document,
)
from phalanx.client import AsyncClient

#: Deadline of the put after a kill: far beyond any failover worth reporting.
CALL_TIMEOUT_S = 30.0
#: Bound on waiting for the restarted node to catch up.
CATCH_UP_TIMEOUT_S = 60.0


def run_failover(args: argparse.Namespace) -> int:
    if args.kills < 1:
        print("phalanx bench failover: --kills must be positive")
        return 2
    machine = describe_machine(args.out if args.out.exists() else None)
    with running_cluster() as cluster:
        failovers_ms = asyncio.run(_kills(cluster, args.kills))
    results = {
        "failovers_ms": failovers_ms,
        "median_ms": round(statistics.median(failovers_ms), 1),
        "worst_ms": round(max(failovers_ms), 1),
        "best_ms": round(min(failovers_ms), 1),
    }
    config = {"nodes": 3, "kills": args.kills, "timeouts": "node defaults"}
    document = make_document("failover", machine, config, results)
    path = write_document(args.out, document)
    plot = None if args.no_plot else series_plot(
        args.out / "failover.png",
        {"kill -> next put answered": (list(range(1, len(failovers_ms) + 1)), failovers_ms)},
        f"phalanx failover, {args.kills} SIGKILLs of the leader (median "
        f"{results['median_ms']:.0f} ms, worst {results['worst_ms']:.0f} ms)",
        "kill number", "ms", marker="o", integer_x=True,
    )  # fmt: skip
    print(failover_table(results))
    print(f"wrote {path}" + (f" and {plot}" if plot else ""))
    return 0


def failover_table(results: dict[str, Any]) -> str:
    rows = [[len(results["failovers_ms"]), results["best_ms"], results["median_ms"],
             results["worst_ms"]]]  # fmt: skip
    return format_table(["kills", "best ms", "median ms", "worst ms"], rows)


async def _kills(cluster: BenchCluster, kills: int) -> list[float]:
    failovers: list[float] = []
    async with AsyncClient(cluster.addresses, timeout=CALL_TIMEOUT_S) as client:
        value = "v" * 100
        for number in range(1, kills + 1):
            leader = await cluster.wait_for_leader()
            await client.call({"op": "put", "key": "failover", "value": value})
            killed_at = time.monotonic()
            cluster.kill(leader)
            await client.call({"op": "put", "key": "failover", "value": value})
            failovers.append(round((time.monotonic() - killed_at) * 1000, 1))
            progress(f"kill {number}/{kills}: node {leader + 1} killed; next put answered "
                     f"after {failovers[-1]:.0f} ms")  # fmt: skip
            cluster.start(leader)
            await _caught_up(cluster)
    return failovers


async def _caught_up(cluster: BenchCluster) -> None:
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    while time.monotonic() < deadline:
        statuses = await cluster.statuses()
        if all(statuses):
            applied = {s.applied_index for s in statuses if s is not None}
            leaders = {s.leader for s in statuses if s is not None}
            if len(applied) == 1 and len(leaders) == 1 and 0 not in leaders:
                return
        await asyncio.sleep(0.05)
    raise RuntimeError("the restarted node did not catch up in time")
