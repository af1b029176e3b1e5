"""`phalanx demo faulty`: the first lesson in a real cluster.

Nodes 1 and 2 run `Bank`; node 3 runs `FaultyBank`, which now and then answers a
transfer without applying it. Every node compares state digests with the others at
checkpoints. The demo shows the majority naming node 3, node 3 refusing clients and
staying a follower, `repair` rebuilding node 3 from the leader's snapshot, and then
checks that clients only ever saw correct replies: the final balances equal the
opening balances plus exactly the acknowledged transfers, on every node.
"""

from __future__ import annotations

import argparse
import asyncio
import random

from rich.console import Console
from rich.table import Table

from phalanx.client import AsyncClient
from phalanx.core.raft import Role
from phalanx.demo.bank import (
    CALL_TIMEOUT_S,
    SERVICE,
    Stats,
    expected_balances,
    open_accounts,
    transfer_until,
)
from phalanx.server.local import (
    LocalCluster,
    cluster_statuses,
    temporary_directory,
    wait_for_leader,
)
from phalanx.transport.wire import (
    ClientReply,
    FrameReader,
    Hello,
    NodeStatus,
    OpenSessionRequest,
    ReplyStatus,
    decode_message,
    encode_frame,
)

FAULTY_SERVICE = "phalanx.examples.faulty:FaultyBank"
CHECKPOINT_EVERY = 200
FAULTY_NODE = 3
#: Rounds of (run clients, wait for detection) before the demo gives up.
DETECTION_ROUNDS_MAX = 60
REPAIR_ROUNDS_MAX = 5
#: Transfers in flight at once while waiting for the detection.
TRANSFERS_IN_FLIGHT = 16
#: How long the diverged node gets to answer the demo's direct request.
REFUSAL_WAIT_S = 5.0


def _table(statuses: list[NodeStatus | None], phase: str, stats: Stats) -> Table:
    table = Table(title=f"phalanx demo faulty: {phase}")
    for column in ("node", "service", "role", "applied", "state digest", "replica check"):
        table.add_column(column)
    for index, status in enumerate(statuses):
        service = "FaultyBank" if index + 1 == FAULTY_NODE else "Bank"
        if status is None:
            table.add_row(str(index + 1), service, "down", "-", "-", "-")
            continue
        check = status.diverged or status.replica_check or "-"
        style = "red" if status.diverged else ""
        table.add_row(
            str(status.id),
            service,
            status.role.value,
            str(status.applied_index),
            status.state_digest[:12],
            f"[{style}]{check}[/{style}]" if style else check,
        )
    table.caption = f"acknowledged transfers {stats.acknowledged}, rejected {stats.rejected}"
    return table


async def _run_clients(cluster: LocalCluster, stats: Stats, seconds: float, seed: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds
    rng = random.Random(seed)
    healthy = cluster.addresses[: FAULTY_NODE - 1]
    async with AsyncClient(healthy, timeout=CALL_TIMEOUT_S) as client:
        workers = [
            transfer_until(client, random.Random(rng.random()), stats, stop)
            for _ in range(TRANSFERS_IN_FLIGHT)
        ]
        await asyncio.gather(*workers)


async def _detect(cluster: LocalCluster, stats: Stats, console: Console) -> bool:
    for round_number in range(DETECTION_ROUNDS_MAX):
        await _run_clients(cluster, stats, 0.5, round_number)
        statuses = await cluster_statuses(cluster)
        faulty = statuses[FAULTY_NODE - 1]
        if faulty is not None and faulty.diverged:
            return await _named_and_isolated(cluster, stats, console)
    return False


async def _named_and_isolated(cluster: LocalCluster, stats: Stats, console: Console) -> bool:
    """Node 3 found itself out; wait (bounded) until the healthy nodes' own checks name
    it too and it no longer leads (a hand-over may still be under way)."""
    for _ in range(50):
        statuses = await cluster_statuses(cluster)
        faulty = statuses[FAULTY_NODE - 1]
        healthy = [s for s in statuses[: FAULTY_NODE - 1] if s is not None]
        named = len(healthy) == FAULTY_NODE - 1 and all(
            f"node(s) {FAULTY_NODE}" in (s.replica_check or "") for s in healthy
        )
        if faulty is not None and named and faulty.role is not Role.LEADER:
            console.print(_table(statuses, "divergence detected", stats))
            return True
        await asyncio.sleep(0.2)
    console.print(_table(await cluster_statuses(cluster), "divergence not confirmed", stats))
    return False


async def _refuses_clients(cluster: LocalCluster) -> bool:
    """Asks the diverged node itself, on the wire, to open a session: it must refuse
    (a client would follow its hint to the leader, which is what clients should do)."""
    host, _, port = cluster.addresses[FAULTY_NODE - 1].rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(encode_frame(Hello("phalanx", "client")))
        writer.write(encode_frame(OpenSessionRequest(1)))
        await writer.drain()
        frames = FrameReader()
        while True:
            data = await asyncio.wait_for(reader.read(65536), REFUSAL_WAIT_S)
            if not data:
                return True  # closed on us: not an answer either
            for payload in frames.feed(data):
                message = decode_message(payload)
                if isinstance(message, ClientReply):
                    return message.status is not ReplyStatus.OK and "diverged" in message.message
    except (OSError, TimeoutError):
        return True
    finally:
        writer.close()


async def _repair(cluster: LocalCluster, console: Console) -> NodeStatus | None:
    for _ in range(REPAIR_ROUNDS_MAX):
        # What `phalanx repair --members ... --node 3` does.
        async with AsyncClient([cluster.addresses[FAULTY_NODE - 1]]) as client:
            _, _, note = await client.repair()
        console.print(f"phalanx repair --node {FAULTY_NODE}: {note}")
        for _ in range(50):
            await asyncio.sleep(0.2)
            statuses = await cluster_statuses(cluster)
            answered = [s for s in statuses if s is not None]
            if len(answered) != len(statuses):
                continue
            digests = {s.state_digest for s in answered}
            applied = {s.applied_index for s in answered}
            faulty = answered[FAULTY_NODE - 1]
            if faulty.repairs and len(digests) == 1 and len(applied) == 1:
                console.print(_table(statuses, "repaired", Stats()))
                return faulty
    return None


async def _scenario(cluster: LocalCluster, console: Console) -> bool:
    healthy = list(range(FAULTY_NODE - 1))
    for index in healthy:
        cluster.start(index)
    await wait_for_leader(cluster, healthy)
    await open_accounts(cluster)  # nodes 1 and 2 elect a leader between them
    cluster.start(FAULTY_NODE - 1)
    stats = Stats()
    detected = await _detect(cluster, stats, console)
    refuses = detected and await _refuses_clients(cluster)
    repaired = await _repair(cluster, console) if detected else None
    async with AsyncClient(cluster.addresses[: FAULTY_NODE - 1], timeout=CALL_TIMEOUT_S) as client:
        balances = (await client.call({"op": "balances"}))["balances"]
    checks = [
        ("the majority named node 3, which is not leading", detected),
        ("node 3 refuses clients while diverged", refuses),
        ("repair gave node 3 the majority's state digest", repaired is not None),
        (
            "clients saw only correct replies (balances = opening + acknowledged transfers)",
            balances == expected_balances(stats) and stats.unknown == 0,
        ),
    ]
    for name, ok in checks:
        console.print(("[green]PASS[/green] " if ok else "[red]FAIL[/red] ") + name)
    return all(ok for _, ok in checks)


def run_faulty(args: argparse.Namespace) -> int:
    console = Console()
    settings = {"checkpoint_every_entries": CHECKPOINT_EVERY, "snapshot_every_entries": 0}
    with (
        temporary_directory("phalanx-demo-faulty-", keep=args.keep) as root,
        LocalCluster(
            root, services=[SERVICE, SERVICE, FAULTY_SERVICE], settings=settings
        ) as cluster,
    ):
        console.print(
            f"nodes 1-2 run Bank, node 3 runs FaultyBank (skips a transfer now and then); "
            f"digests compared every {CHECKPOINT_EVERY} entries; data in {root}"
        )
        ok = asyncio.run(_scenario(cluster, console))
    console.print(
        "[bold green]demo passed[/bold green]" if ok else "[bold red]demo FAILED[/bold red]"
    )
    return 0 if ok else 1
