"""One fault run, from the first process started to the last one stopped.

Theory of operation
-------------------
`execute` runs the phases in order and always cleans up, Ctrl-C included (asyncio
cancels the main task, the `finally` blocks stop the clients, heal and close the
proxies and stop every node process):

1. **start**: proxies, node configurations, node processes; wait for a leader; run
   the workload's setup commands (outside the history).
2. **run** for `time_s`: `clients` client loops, each with its own `AsyncClient`
   (one operation in flight per client; together many), a think time that holds
   the whole run near `rate` operations a second, and the nemesis walking its
   schedule. A live panel shows elapsed time, operations so far and the current
   fault. With `spread_reads` every read first points its client at a random node,
   so reads reach followers too (a correct node redirects them to the leader).
3. **heal**: end the active fault, reconnect every link, resume and restart every
   node; wait for a leader.
4. **final reads** through the log, recorded in the history.
5. **converge**: wait until every node has applied the same index, and take their
   statuses (digests) there.

The judging (`verdict.judge`) happens after the processes are gone, so the checker
has the machine to itself. Every collection is bounded: the history by
`ops_max`, the nemesis schedule by `nemesis.FAULTS_MAX`, the leader log by
`LEADERS_SEEN_MAX`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from phalanx.chaos.cluster import ChaosCluster, leader_of
from phalanx.chaos.nemesis import FaultKind, FaultRecord, Nemesis, plan_schedule
from phalanx.chaos.recorder import Recorder
from phalanx.chaos.workloads import Op, Workload, make_workload
from phalanx.client import (
    AsyncClient,
    ClientError,
    ClusterUnavailableError,
    OutcomeUnknownError,
    RequestRejectedError,
)
from phalanx.core.raft import Role
from phalanx.transport.wire import NodeStatus

LEADER_TIMEOUT_S = 30.0
STATUS_POLL_S = 1.0
PROGRESS_LINE_S = 10.0
LEADERS_SEEN_MAX = 10_000
SETUP_TIMEOUT_S = 30.0
#: Most unexpected node exits recorded (the run goes on restarting them).
EXITS_MAX = 1000
FINAL_READ_TIMEOUT_S = 20.0
RETARGET_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    out: Path
    nodes: int = 3
    workload: str = "lin-kv"
    nemesis: tuple[FaultKind, ...] = tuple(FaultKind)
    time_s: float = 60.0
    seed: int = 1
    unsafe_local_reads: bool = False
    clients: int = 6
    rate: float = 150.0
    #: None: the workload's own (`Workload.op_timeout_s`).
    op_timeout_s: float | None = None
    attempt_timeout_s: float = 0.5
    ops_max: int = 100_000
    check_seconds: float = 120.0
    recovery_s: float = 60.0
    spread_reads: bool = True
    keep_data: bool = False
    tick_ms: int | None = None
    election_timeout_ticks: int | None = None


class HarnessError(Exception):
    """The run could not be carried out (no leader, setup failed): no verdict."""


@dataclass
class RunData:
    """What a run leaves for judging."""

    options: ChaosOptions
    recorder: Recorder
    faults: list[FaultRecord]
    schedule: list[str]
    final_processes: set[int] = field(default_factory=set)
    final_reads_ok: bool = False
    recovered: bool = False
    statuses: list[NodeStatus | None] = field(default_factory=list)
    leaders_seen: set[tuple[int, int]] = field(default_factory=set)
    duration_s: float = 0.0
    #: Nodes that exited although neither the nemesis nor the harness stopped them.
    exits: list[FaultRecord] = field(default_factory=list)


class _Run:
    """The shared state of one run's tasks."""

    def __init__(self, options: ChaosOptions, cluster: ChaosCluster, console: Console) -> None:
        self.options = options
        self.cluster = cluster
        self.console = console
        self.workload: Workload = make_workload(options.workload)
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        self.recorder = Recorder(self.clock, events_max=2 * options.ops_max + 64)
        self.stopping = False
        self.statuses: list[NodeStatus | None] = [None] * options.nodes
        self.leaders_seen: set[tuple[int, int]] = set()
        self.exits: list[FaultRecord] = []
        plan = plan_schedule(options.seed, options.nemesis, options.time_s, options.nodes)
        self.nemesis = Nemesis(cluster, plan, self.clock, self.on_fault)

    def clock(self) -> float:
        return asyncio.get_running_loop().time() - self.started

    def on_fault(self, phase: str, record: FaultRecord) -> None:
        self.recorder.nemesis(f"{phase}-{record.kind}", record.description)
        verb = "[red]start[/red]" if phase == "start" else "[green]end[/green]"
        self.console.log(f"nemesis {verb} {record.description}")

    def restart_exited(self) -> None:
        """Records every node that exited on its own, and starts it again."""
        for index, code in self.cluster.reap_exited():
            now = self.clock()
            what = f"node {index + 1} exited on its own with code {code}"
            if len(self.exits) < EXITS_MAX:
                self.exits.append(FaultRecord("exit", what, [index + 1], now, now))
            self.recorder.nemesis("node-exited", what)
            self.console.log(f"[bold red]{what}[/]; see {self.cluster.log_path(index)}")
            self.cluster.start(index)

    def note_statuses(self, statuses: list[NodeStatus | None]) -> None:
        self.statuses = statuses
        for status in statuses:
            if status is None or status.role is not Role.LEADER:
                continue
            if len(self.leaders_seen) < LEADERS_SEEN_MAX:
                self.leaders_seen.add((status.term, status.id))


async def execute(
    options: ChaosOptions, console: Console, started: list[ChaosCluster] | None = None
) -> RunData:
    """Runs the cluster, clients and nemesis; returns the history and the final state.

    The cluster is appended to `started` before any process starts, so that a caller
    can stop its processes even if this coroutine is torn down without running its
    `finally` (a second Ctrl-C during cleanup).
    """
    root = options.out / "cluster"
    root.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {}
    if options.tick_ms is not None:
        settings["tick_ms"] = options.tick_ms
    if options.election_timeout_ticks is not None:
        settings["raft"] = {"election_timeout_ticks": options.election_timeout_ticks}
    service = make_workload(options.workload).service
    cluster = ChaosCluster(
        root, options.nodes, service, settings, unsafe_local_reads=options.unsafe_local_reads
    )
    if started is not None:
        started.append(cluster)
    try:
        await cluster.prepare()
        cluster.start_all()
        run = _Run(options, cluster, console)
        return await _phases(run)
    finally:
        cluster.close()
        await cluster.close_proxies()
        if not options.keep_data:
            for index in range(options.nodes):
                shutil.rmtree(root / f"node-{index + 1}", ignore_errors=True)


async def _phases(run: _Run) -> RunData:
    options, cluster = run.options, run.cluster
    if await _wait_for_leader(run, LEADER_TIMEOUT_S) is None:
        raise HarnessError(f"no leader within {LEADER_TIMEOUT_S}s\n{cluster.describe_logs()}")
    await _setup(run)
    run.started = asyncio.get_running_loop().time()
    data = RunData(options, run.recorder, run.nemesis.records, [])
    data.schedule = [fault.describe() for fault in run.nemesis.plan]
    await _run_clients(run)
    data.duration_s = run.clock()
    run.nemesis.heal_all()
    run.restart_exited()
    data.exits = run.exits
    cluster.heal_everything()
    run.console.log("healed every fault; waiting for the cluster to recover")
    data.recovered = await _wait_for_leader(run, options.recovery_s) is not None
    data.final_processes, data.final_reads_ok = await _final_reads(run)
    run.restart_exited()
    data.statuses = await _converged(run, options.recovery_s)
    data.leaders_seen = run.leaders_seen
    return data


async def _wait_for_leader(run: _Run, timeout_s: float) -> int | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        statuses = await run.cluster.statuses()
        run.note_statuses(statuses)
        leader = leader_of(statuses)
        if leader is not None:
            return leader
        if not any(run.cluster.running(index) for index in range(run.cluster.nodes)):
            return None  # every node has exited (a node that cannot start): give up now
        await asyncio.sleep(0.2)
    return None


async def _setup(run: _Run) -> None:
    commands = run.workload.setup_commands()
    if not commands:
        return
    async with AsyncClient(run.cluster.client_addresses, timeout=SETUP_TIMEOUT_S) as client:
        for command in commands:
            try:
                reply = await client.call(command)
            except ClientError as error:
                raise HarnessError(f"setup command {command} failed: {error}") from error
            if isinstance(reply, dict) and reply.get("ok") is False:
                raise HarnessError(f"setup command {command} was refused: {reply}")


async def _run_clients(run: _Run) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(run.options.seed)
    workers = [
        loop.create_task(_client_loop(run, lane, random.Random(rng.random())))
        for lane in range(run.options.clients)
    ]
    nemesis = loop.create_task(run.nemesis.run())
    try:
        await _progress(run, workers)
    finally:
        run.stopping = True
        nemesis.cancel()
        await asyncio.gather(nemesis, return_exceptions=True)
        results = await asyncio.gather(*workers, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


async def _client_loop(run: _Run, lane: int, rng: random.Random) -> None:
    options, recorder = run.options, run.recorder
    addresses = run.cluster.client_addresses
    shift = lane % len(addresses)
    op_timeout_s = options.op_timeout_s or run.workload.op_timeout_s
    client = AsyncClient(
        addresses[shift:] + addresses[:shift],
        timeout=op_timeout_s,
        attempt_timeout=options.attempt_timeout_s,
    )
    think_s = options.clients / options.rate
    process = recorder.new_process()
    try:
        while not run.stopping and not recorder.full:
            op = run.workload.next_op(rng)
            if op is None:
                return
            if op.is_read and options.spread_reads:
                await _retarget(client, rng.randrange(len(addresses)))
            pending = recorder.invoke(process, lane, op.f, op.key, op.value)
            kind, value, error = await _perform(run.workload, client, op, op_timeout_s)
            recorder.complete(pending, kind, value, error)
            if kind == "info":
                process = recorder.new_process()
            await asyncio.sleep(rng.uniform(0, 2 * think_s))
    finally:
        await client.close()


async def _retarget(client: AsyncClient, index: int) -> None:
    """Points `client` at member `index` (or the next one that answers)."""
    # Exception, not just ClientError: status() can leak the client's private
    # _ConnectionLost when the node dies mid-request (tests/chaos/test_found_bugs.py).
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.status(address_index=index), RETARGET_TIMEOUT_S)


async def _perform(
    workload: Workload, client: AsyncClient, op: Op, timeout_s: float
) -> tuple[str, Any, str]:
    """(ok | fail | info, value, error text) for one operation."""
    try:
        reply = await client.call(op.command, timeout=timeout_s)
    except OutcomeUnknownError as error:
        return "info", None, f"{type(error).__name__}: {error}"
    except (ClusterUnavailableError, RequestRejectedError) as error:
        return "fail", None, f"{type(error).__name__}: {error}"
    except (ClientError, OSError, TimeoutError) as error:
        # Anything else leaves the outcome open; claiming "fail" could be a lie.
        return "info", None, f"{type(error).__name__}: {error}"
    kind, value = workload.completion(op, reply)
    refusal = ""
    if kind == "fail" and isinstance(reply, dict):
        refusal = str(reply.get("error") or f"refused: {reply}")[:200]
    return kind, value, refusal


async def _progress(run: _Run, workers: Sequence[asyncio.Task[None]]) -> None:
    options = run.options
    loop = asyncio.get_running_loop()
    next_poll = next_line = 0.0
    with Live(_panel(run), console=run.console, refresh_per_second=4, transient=True) as live:
        while run.clock() < options.time_s and not all(w.done() for w in workers):
            if loop.time() >= next_poll:
                next_poll = loop.time() + STATUS_POLL_S
                run.restart_exited()
                run.note_statuses(await run.cluster.statuses())
            if not run.console.is_terminal and loop.time() >= next_line:
                # No live panel without a terminal (CI logs): a line now and then.
                next_line = loop.time() + PROGRESS_LINE_S
                active = run.nemesis.active
                fault = active.description if active is not None else "none"
                run.console.log(f"{_progress_line(run)}; current fault: {fault}")
            live.update(_panel(run))
            await asyncio.sleep(0.25)
    run.console.log(_progress_line(run))


def _progress_line(run: _Run) -> str:
    counts = run.recorder.counts
    return (
        f"{run.clock():5.1f}s of {run.options.time_s:g}s: {run.recorder.completed} ops "
        f"(ok {counts['ok']}, fail {counts['fail']}, info {counts['info']}), "
        f"{len(run.nemesis.records)} faults"
    )


def _panel(run: _Run) -> Table:
    active = run.nemesis.active
    fault = active.description if active is not None else "none"
    table = Table(title=f"phalanx chaos: {run.options.workload}", caption=_progress_line(run))
    table.add_column("node")
    table.add_column("process")
    table.add_column("role")
    table.add_column("term")
    table.add_column("applied")
    for index, status in enumerate(run.statuses):
        state = "paused" if index in run.cluster.paused else "running"
        if not run.cluster.running(index):
            state = "[red]killed[/red]"
        if status is None:
            table.add_row(str(index + 1), state, "-", "-", "-")
            continue
        role = status.role.value
        table.add_row(
            str(index + 1),
            state,
            f"[bold green]{role}[/bold green]" if status.role is Role.LEADER else role,
            str(status.term),
            str(status.applied_index),
        )
    table.add_section()
    table.add_row("fault", fault, "", "", "")
    return table


async def _final_reads(run: _Run) -> tuple[set[int], bool]:
    """Reads through the log after healing; recorded like every other operation."""
    recorder = run.recorder
    processes: set[int] = set()
    all_ok = True
    lane = run.options.clients  # the reads get a lane of their own in the report
    async with AsyncClient(run.cluster.client_addresses, timeout=FINAL_READ_TIMEOUT_S) as client:
        for op in run.workload.final_reads():
            if recorder.full:
                return processes, False
            process = recorder.new_process()
            processes.add(process)
            pending = recorder.invoke(process, lane, op.f, op.key, op.value)
            kind, value, error = await _perform(run.workload, client, op, FINAL_READ_TIMEOUT_S)
            recorder.complete(pending, kind, value, error)
            all_ok = all_ok and kind == "ok"
    return processes, all_ok


async def _converged(run: _Run, timeout_s: float) -> list[NodeStatus | None]:
    """Statuses once every node has applied the same index (or the last ones seen)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    statuses: list[NodeStatus | None] = []
    while loop.time() < deadline:
        statuses = await run.cluster.statuses()
        run.note_statuses(statuses)
        present = [s for s in statuses if s is not None]
        if len(present) == len(statuses) and _same_point(present):
            # Settled: ask once more to see that nothing is still moving.
            await asyncio.sleep(0.3)
            again = await run.cluster.statuses()
            if [_point(s) for s in again] == [_point(s) for s in statuses]:
                return statuses
            continue
        await asyncio.sleep(0.2)
    return statuses


def _same_point(statuses: Sequence[NodeStatus]) -> bool:
    applied = {s.applied_index for s in statuses}
    return len(applied) == 1 and all(s.commit_index == s.applied_index for s in statuses)


def _point(status: NodeStatus | None) -> tuple[object, ...] | None:
    if status is None:
        return None
    return (status.applied_index, status.log_digest, status.state_digest)
