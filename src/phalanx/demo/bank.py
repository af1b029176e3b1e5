"""What both demos share: a bank of `ACCOUNTS`, each opened with `OPENING_BALANCE`, and
clients making random transfers between them while `Stats` records what they were told.

`Stats.deltas` holds the effect of every acknowledged transfer, so the balances a
correct cluster ends with are `expected_balances(stats)`: a lost transfer, or one
applied twice, makes them differ.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from phalanx.client import AsyncClient, ClientError
from phalanx.server.local import LocalCluster

ACCOUNTS = [f"acct-{i}" for i in range(8)]
OPENING_BALANCE = 1_000_000
SERVICE = "phalanx.examples.bank:Bank"
TRANSFER_AMOUNT_MAX = 5_000
#: Deadline of one client call; covers a leader failover.
CALL_TIMEOUT_S = 30.0


@dataclass
class Stats:
    acknowledged: int = 0
    rejected: int = 0
    unknown: int = 0
    deltas: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACCOUNTS, 0))
    #: (sent, answered) monotonic times of every answered call.
    completions: list[tuple[float, float]] = field(default_factory=list)


def expected_balances(stats: Stats) -> dict[str, int]:
    return {account: OPENING_BALANCE + stats.deltas[account] for account in ACCOUNTS}


async def open_accounts(cluster: LocalCluster) -> None:
    async with AsyncClient(cluster.addresses, timeout=CALL_TIMEOUT_S) as client:
        for account in ACCOUNTS:
            await client.call({"op": "open", "account": account})
            await client.call({"op": "deposit", "account": account, "amount": OPENING_BALANCE})


async def transfer_until(
    client: AsyncClient, rng: random.Random, stats: Stats, stop: float
) -> None:
    """Makes one transfer at a time until the loop's clock reaches `stop`."""
    loop = asyncio.get_running_loop()
    while loop.time() < stop:
        source, target = rng.sample(ACCOUNTS, 2)
        amount = rng.randint(1, TRANSFER_AMOUNT_MAX)
        command = {"op": "transfer", "from": source, "to": target, "amount": amount}
        sent = time.monotonic()
        try:
            reply = await client.call(command, timeout=CALL_TIMEOUT_S)
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
