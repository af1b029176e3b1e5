"""Swarm simulation: each seed picks its own fault mix, runs a cluster of the shipped
replicas through a fault phase with clients, heals everything, probes the cluster and
checks every invariant.

Swarm testing (Groce et al., 2012) varies which faults are enabled per run rather than
enabling all of them at once: a run with only one-way partitions and no drops reaches
states that a run drowning in every fault never does.

What each seed checks, beyond the checkers that run after every event (checkers.py):

* Exactly-Once: no replica's service ever applied one client operation twice.
* Money Conservation (bank seeds): every replica's accounts always hold the money
  they opened with.
* Durability: every operation a client was told succeeded is applied on every replica.
* Linearizability: the clients' history, judged by `phalanx.check`.
* Replay Equivalence: a replica rebuilt from any snapshot any node stored, plus the
  log, reaches the live replicas' log, outcome and state digests.
* Liveness: after healing, the cluster converges and every client operation ends.
* Disruption (PreVote): a follower cut off for several election timeouts, then let
  back, does not depose a healthy leader.
* CheckQuorum: a leader cut off from every follower steps down within two election
  timeouts.
* Message Economy: in a quiet, healthy cluster, a committed entry travels to each
  follower about once (a leader re-sending what followers hold is a bug).

Anything else that escapes the run (an assertion inside the core, the replica or the
container) fails the seed too, with the same reproduce command.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from phalanx.check.errors import CheckError
from phalanx.check.history import build_history
from phalanx.check.linearizability import Verdict, check_history
from phalanx.check.models import BankModel, KvModel
from phalanx.core.raft import Role
from phalanx.core.types import Index, NodeId
from phalanx.server.replica import container_limits_for
from phalanx.service.container import ServiceContainer
from phalanx.sim.checkers import InvariantViolation
from phalanx.sim.clients import History, SimClient
from phalanx.sim.cluster import TICK, NetworkFaults, SimCluster, SimSettings
from phalanx.sim.services import BANK_ACCOUNTS, SimBank, SimKV

#: Seeds whose fault mix is the leader-churn profile (`FaultMix.with_leader_churn`).
LEADER_CHURN_SEEDS = 0.5
#: No run may take longer than this to converge after healing.
HEAL_TICKS_MAX = 20_000
#: Seconds the linearizability search may take per seed before it says "unknown".
CHECK_BUDGET_S = 10.0
#: Election timeouts a follower stays cut off in the disruption probe.
DISRUPTION_ISOLATED_TIMEOUTS = 4
#: Operations one client runs in the message-economy probe, and ticks they may take.
PROBE_OPERATIONS = 10
PROBE_TICKS_MAX = 2000
#: The probe's fixed message delay (simulated ms): a FIFO network, as TCP is per link.
PROBE_DELAY = 2
#: Entries a quiet cluster may send per committed entry and follower (1 is ideal).
ENTRIES_SENT_PER_COMMIT_MAX = 2

NEMESIS_ACTIONS = (
    "partition-halves",
    "isolate-leader",
    "churn-leader",
    "one-way",
    "bridge",
    "crash",
    "crash-leader",
    "restart",
    "heal",
)


@dataclass(frozen=True)
class FaultMix:
    network: NetworkFaults
    actions: tuple[str, ...]
    nemesis_every_ticks: int
    crash_in_ready_rate: float
    crash_on_vote_rate: float
    crash_on_ack_rate: float
    crash_after_commit_rate: float
    pre_vote: bool
    broadcast_commit: bool
    election_timeout_ticks: int
    #: 1 byte means one entry per AppendEntries: commit points then fall between
    #: entries of different terms, where the Figure 8 rule matters.
    max_message_bytes: int
    max_inflight_messages: int
    snapshot_every: int
    compaction_margin: int
    checkpoint_every: int
    max_replies_per_session: int
    workload: str
    clients: int
    lanes: int
    client_drop_rate: float
    timer_rate: float
    snapshot_fail_rate: float

    @staticmethod
    def pick(rng: random.Random) -> FaultMix:
        network = NetworkFaults(
            drop_rate=rng.choice((0.0, 0.0, 0.01, 0.05, 0.2)),
            duplicate_rate=rng.choice((0.0, 0.02, 0.1)),
            long_delay_rate=rng.choice((0.0, 0.0, 0.02, 0.1)),
            delay_max=rng.choice((2, 5, 15)),
        )
        actions = tuple(a for a in NEMESIS_ACTIONS if rng.random() < 0.5) or ("heal",)
        mix = FaultMix(
            network=network,
            actions=actions,
            nemesis_every_ticks=rng.randint(5, 40),
            crash_in_ready_rate=rng.choice((0.0, 0.0, 0.001, 0.01, 0.03)),
            crash_on_vote_rate=rng.choice((0.0, 0.2, 0.5, 0.5)),
            crash_on_ack_rate=rng.choice((0.0, 0.0, 0.02, 0.1)),
            crash_after_commit_rate=rng.choice((0.0, 0.0, 0.05, 0.2)),
            pre_vote=rng.random() < 0.8,
            broadcast_commit=rng.random() < 0.3,
            election_timeout_ticks=rng.choice((5, 10, 10, 20)),
            max_message_bytes=rng.choice((1, 200, 64 * 1024)),
            max_inflight_messages=rng.choice((1, 4, 64)),
            snapshot_every=rng.choice((0, 5, 20, 50)),
            compaction_margin=rng.choice((0, 2, 10)),
            checkpoint_every=rng.choice((3, 10, 25)),
            max_replies_per_session=rng.choice((2, 4, 64)),
            workload=rng.choice(("kv", "kv", "bank")),
            clients=rng.randint(1, 4),
            lanes=rng.randint(1, 3),
            client_drop_rate=rng.choice((0.0, 0.0, 0.02, 0.1)),
            timer_rate=rng.choice((0.0, 0.1)),
            snapshot_fail_rate=rng.choice((0.0, 0.0, 0.2)),
        )
        if rng.random() < LEADER_CHURN_SEEDS:
            mix = mix.with_leader_churn(rng)
        return mix

    def with_leader_churn(self, rng: random.Random) -> FaultMix:
        """The history of the Raft paper's Figure 8, made common: leaders that come and
        go every few election timeouts (the cut moves onto each new one, or it
        crashes, often right after its commit index moved), each leaving entries of
        its own term on a few nodes, and one entry per AppendEntries, so that an older
        term's entry and the new leader's first entry reach followers separately. A
        uniform mix almost never builds that history in five nodes: 0 of 300 seeds
        caught `commit-old-term` before this profile existed."""
        return dataclasses.replace(
            self,
            actions=("churn-leader", "crash-leader"),
            nemesis_every_ticks=rng.randint(4, 6),
            # Crashes elsewhere in a batch break the history up before it completes.
            crash_in_ready_rate=0.0,
            crash_on_vote_rate=0.0,
            crash_on_ack_rate=0.0,
            max_message_bytes=1,
            election_timeout_ticks=5,
            crash_after_commit_rate=0.3,
            lanes=rng.randint(4, 6),
        )

    def describe(self) -> str:
        n = self.network
        return (
            f"drop={n.drop_rate} dup={n.duplicate_rate} long-delay={n.long_delay_rate} "
            f"delay<={n.delay_max} nemesis/{self.nemesis_every_ticks}t={','.join(self.actions)} "
            f"crash-in-ready={self.crash_in_ready_rate} crash-on-vote={self.crash_on_vote_rate} "
            f"crash-on-ack={self.crash_on_ack_rate} "
            f"crash-after-commit={self.crash_after_commit_rate} pre-vote={self.pre_vote} "
            f"broadcast-commit={self.broadcast_commit} "
            f"election-timeout={self.election_timeout_ticks}t msg-bytes={self.max_message_bytes} "
            f"inflight={self.max_inflight_messages} snapshot-every={self.snapshot_every} "
            f"margin={self.compaction_margin} checkpoint-every={self.checkpoint_every} "
            f"replies/session={self.max_replies_per_session} workload={self.workload} "
            f"clients={self.clients}x{self.lanes} client-drop={self.client_drop_rate} "
            f"timers={self.timer_rate} snapshot-fail={self.snapshot_fail_rate}"
        )


@dataclass(frozen=True)
class SeedResult:
    seed: int
    nodes: int
    violation: str | None
    trace_hash: str
    ticks: int
    events: int
    committed: int
    acknowledged: int
    mix: str
    snapshots: int = 0
    replays: int = 0
    operations: int = 0
    linearizable: str = ""
    skipped_probes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.violation is None


@dataclass
class _Run:
    cluster: SimCluster
    history: History
    clients: list[SimClient]
    mix: FaultMix
    replays: int = 0
    linearizable: str = ""
    #: Probes that found the cluster unfit to judge (counted, never silent).
    skipped: list[str] = dataclasses.field(default_factory=list)


def run_seed(seed: int, nodes: int, *, fault_ticks: int = 300, heal_ticks: int = 200) -> SeedResult:
    rng = random.Random(f"swarm/{seed}/{nodes}")
    mix = FaultMix.pick(rng)
    settings = SimSettings(
        pre_vote=mix.pre_vote,
        broadcast_commit=mix.broadcast_commit,
        election_timeout_ticks=mix.election_timeout_ticks,
        max_message_bytes=mix.max_message_bytes,
        max_inflight_messages=mix.max_inflight_messages,
        snapshot_every=mix.snapshot_every,
        compaction_margin=mix.compaction_margin,
        checkpoint_every=mix.checkpoint_every,
        max_replies_per_session=mix.max_replies_per_session,
        service=f"phalanx.sim.services:{'SimBank' if mix.workload == 'bank' else 'SimKV'}",
    )
    cluster = SimCluster(nodes, seed, faults=mix.network, settings=settings)
    cluster.crash_in_ready_rate = mix.crash_in_ready_rate
    cluster.crash_on_vote_rate = mix.crash_on_vote_rate
    cluster.crash_on_ack_rate = mix.crash_on_ack_rate
    cluster.crash_after_commit_rate = mix.crash_after_commit_rate
    cluster.client_drop_rate = mix.client_drop_rate
    cluster.snapshot_fail_rate = mix.snapshot_fail_rate
    history = History()
    clients = [
        SimClient(
            client_id,
            cluster,
            history,
            random.Random(f"swarm/{seed}/client/{client_id}"),
            workload=mix.workload,
            lanes=mix.lanes,
            operations=1_000_000,
            timer_rate=mix.timer_rate,
        )
        for client_id in range(1, mix.clients + 1)
    ]
    run = _Run(cluster, history, clients, mix)
    cluster.service_checks.append(_check_service)
    violation: str | None = None
    try:
        for client in clients:
            client.start()
        _fault_phase(cluster, rng, mix, fault_ticks)
        for client in clients:
            client.operations_left = 0  # finish what is in flight, start nothing new
        _heal_phase(run, heal_ticks)
        _probe_message_economy(run)
        _probe_disruption(run, rng)
        _probe_check_quorum(run, rng)
        cluster.check_log_matching()
        _check_durability(run)
        _check_replay(run)
        _check_linearizable(run)
    except InvariantViolation as error:
        violation = str(error)
    except Exception as error:  # an assertion inside the code under test is a finding
        where = traceback.extract_tb(error.__traceback__)[-1]
        violation = (
            f"Internal Error at t={cluster.time}: {type(error).__name__}: {error} "
            f"({where.filename.rsplit('/', 1)[-1]}:{where.lineno} in {where.name})"
        )
    leader = cluster.leader()
    committed = cluster.raw(leader).raft.log.committed if leader is not None else 0
    return SeedResult(
        seed=seed,
        nodes=nodes,
        violation=violation,
        trace_hash=cluster.trace_hash(),
        ticks=cluster.ticks,
        events=cluster.events,
        committed=committed,
        acknowledged=len(history.acknowledged),
        mix=mix.describe(),
        snapshots=cluster.snapshots_taken,
        replays=run.replays,
        operations=sum(client.completed for client in clients),
        linearizable=run.linearizable,
        skipped_probes=tuple(run.skipped),
    )


def _check_service(node: NodeId, service: object) -> None:
    """Service invariants, after every batch a replica applied."""
    if isinstance(service, SimKV | SimBank) and service.once.twice:
        raise InvariantViolation(
            "Exactly-Once",
            f"node {node} applied operation {service.once.twice[0]} twice",
            0,
        )
    if isinstance(service, SimBank):
        total = service.total()
        if total != sum(BANK_ACCOUNTS.values()):
            raise InvariantViolation(
                "Money Conservation", f"node {node}'s accounts hold {total}", 0
            )


def _fault_phase(cluster: SimCluster, rng: random.Random, mix: FaultMix, fault_ticks: int) -> None:
    for tick in range(fault_ticks):
        if tick and tick % mix.nemesis_every_ticks == 0:
            _nemesis(cluster, rng, rng.choice(mix.actions))
        cluster.run_ticks(1)


def _heal_phase(run: _Run, heal_ticks: int) -> None:
    """Heals every fault, then requires convergence: a leader, every committed entry
    applied on every node, every acknowledged raw proposal applied, and every client
    operation finished. A slow configuration (one entry per message) may take long to
    catch up, so the bound is on stalls: `heal_ticks` without any progress (see
    `_total_progress`) is a liveness failure, and so is not converging by the hard cap."""
    cluster = run.cluster
    cluster.heal()
    cluster.faults = NetworkFaults()
    cluster.crash_in_ready_rate = 0.0
    cluster.crash_on_vote_rate = 0.0
    cluster.crash_on_ack_rate = 0.0
    cluster.crash_after_commit_rate = 0.0
    cluster.client_drop_rate = 0.0
    for node_id in cluster.ids:
        cluster.restart(node_id)
    _converge(run, heal_ticks, "after healing")


def _converge(run: _Run, heal_ticks: int, when: str) -> None:
    cluster = run.cluster
    hard_cap = cluster.time + HEAL_TICKS_MAX * TICK
    last_progress_time = cluster.time
    # Catching up counts as progress only up to where the log stood now: new entries
    # that no operation finishes with (a client retrying forever) are a livelock.
    horizon = max(
        (n.raw.raft.log.last_index() for n in cluster.nodes.values() if n.raw is not None),
        default=0,
    )
    progress = _total_progress(run, horizon)
    while cluster.time < hard_cap and cluster.time - last_progress_time < heal_ticks * TICK:
        cluster.run_ticks(1)
        if _settled(run):
            return
        now = _total_progress(run, horizon)
        if now > progress:
            progress = now
            last_progress_time = cluster.time
    busy = [c.client_id for c in run.clients if c._busy_lanes]
    cluster.checker.fail(
        "Liveness",
        f"{when}, no convergence (leader={cluster.leader()}, missing acknowledged "
        f"entries={cluster.missing_acknowledged()[:5]}, clients still busy={busy}, "
        f"stalled for {(cluster.time - last_progress_time) // TICK} ticks)",
    )


def _settled(run: _Run) -> bool:
    cluster = run.cluster
    return (
        cluster.converged()
        and not cluster.missing_acknowledged()
        and not any(client._busy_lanes for client in run.clients)
    )


def _total_progress(run: _Run, horizon: int) -> int:
    """Grows whenever anything moves towards convergence: entries up to `horizon`
    applied, logs growing towards it, the leader learning that followers match more of
    it (a backlog may need many ticks of replication before the next commit), and
    client operations ending."""
    cluster = run.cluster
    total = sum(min(len(node.applied), horizon) for node in cluster.nodes.values())
    total += sum(client.completed for client in run.clients)
    for node in cluster.nodes.values():
        if node.raw is not None:
            total += min(node.raw.raft.log.last_index(), horizon)
            total += sum(min(p.match, horizon) for p in node.raw.raft.progress.values())
    return total


def _stable_leader(run: _Run) -> NodeId:
    cluster = run.cluster
    leader = cluster.leader()
    if leader is None:
        cluster.checker.fail("Liveness", "no leader after convergence")
    assert leader is not None
    return leader


def _probe_message_economy(run: _Run) -> None:
    """A quiet, healthy cluster: one client writes one command after another; each
    committed entry should reach each follower about once."""
    cluster = run.cluster
    if len(cluster.ids) < 2:
        return
    # Messages held back by the fault phase's long delays arrive late and out of order,
    # and a follower rightly rejects what they carry: let them drain first. Then a
    # network like TCP's: every message on a link in order (a fixed delay). A network
    # that reorders pipelined appends makes followers reject and leaders resend, which
    # is the price of reordering, not a bug.
    cluster.run_ticks(NetworkFaults().long_delay_max // TICK + 1)
    cluster.faults = NetworkFaults(delay_min=PROBE_DELAY, delay_max=PROBE_DELAY)
    leader = _stable_leader(run)
    before_sent = cluster.entries_sent
    before_commit = cluster.raw(leader).raft.log.committed
    client = run.clients[0]
    target = client.completed + PROBE_OPERATIONS
    client.operations_left = PROBE_OPERATIONS
    client.start()
    for _ in range(PROBE_TICKS_MAX):
        cluster.run_ticks(1)
        if client.completed >= target and _settled(run):
            break
    else:
        cluster.checker.fail(
            "Liveness",
            f"a quiet cluster did not finish {PROBE_OPERATIONS} operations of one client in "
            f"{PROBE_TICKS_MAX} ticks ({client.completed - target + PROBE_OPERATIONS} done)",
        )
    if cluster.leader() != leader:
        # Not quiet after all (the count means nothing across a change of leader).
        run.skipped.append("message-economy")
        cluster.faults = NetworkFaults()
        return
    cluster.faults = NetworkFaults()
    committed = cluster.raw(leader).raft.log.committed - before_commit
    sent = cluster.entries_sent - before_sent
    followers = len(cluster.ids) - 1
    allowed = ENTRIES_SENT_PER_COMMIT_MAX * followers * max(committed, 1) + 2 * followers
    if sent > allowed:
        cluster.checker.fail(
            "Message Economy",
            f"leader {leader} sent {sent} entries to {followers} followers for {committed} "
            f"commits in a quiet cluster (at most {allowed})",
        )


def _probe_disruption(run: _Run, rng: random.Random) -> None:
    """PreVote: a follower cut off for a while, then let back, must not depose a healthy
    leader (without PreVote it would come back with a higher term and force an
    election)."""
    cluster = run.cluster
    if len(cluster.ids) < 3 or not cluster.settings.pre_vote:
        return
    leader = _stable_leader(run)
    term = cluster.raw(leader).raft.term
    follower = rng.choice([n for n in cluster.ids if n != leader])
    timeout = cluster.settings.election_timeout_ticks
    cluster.disconnect(follower)
    cluster.run_ticks(DISRUPTION_ISOLATED_TIMEOUTS * 2 * timeout)
    cluster.connect(follower)
    cluster.run_ticks(4 * timeout)
    raw = cluster.raw(leader)
    if raw.raft.role is not Role.LEADER or raw.raft.term != term:
        cluster.checker.fail(
            "Disruption",
            f"node {follower}, cut off and let back, deposed healthy leader {leader} "
            f"(term {term} -> {raw.raft.term}, now {raw.raft.role.value})",
        )


def _probe_check_quorum(run: _Run, rng: random.Random) -> None:
    """CheckQuorum: a leader that hears from no follower steps down within two election
    timeouts (so clients stop waiting on a leader that cannot commit)."""
    cluster = run.cluster
    if len(cluster.ids) < 2 or not cluster.settings.check_quorum:
        return
    leader = _stable_leader(run)
    term = cluster.raw(leader).raft.term
    timeout = cluster.settings.election_timeout_ticks
    cluster.disconnect(leader)
    cluster.run_ticks(2 * timeout + 1)
    raw = cluster.raw(leader)
    if raw.raft.role is Role.LEADER and raw.raft.term == term:
        cluster.checker.fail(
            "CheckQuorum",
            f"leader {leader}, cut off from every follower, still leads term {term} "
            f"after {2 * timeout + 1} ticks",
        )
    cluster.heal()
    _converge(run, 200, "after the CheckQuorum probe")


def _check_durability(run: _Run) -> None:
    """Every operation a client was told succeeded is applied on every live replica."""
    cluster = run.cluster
    for node_id in cluster.alive():
        service = cluster.replica(node_id).service
        assert isinstance(service, SimKV | SimBank)
        applied = service.once.applied
        for op_id in run.history.acknowledged:
            if op_id not in applied:
                cluster.checker.fail(
                    "Durability",
                    f"operation {op_id} was acknowledged to its client, but node {node_id} "
                    "never applied it",
                )


def _check_replay(run: _Run) -> None:
    """Rebuilds a replica from every snapshot any node stored, plus the log, and
    compares its digests with a live replica's at the same index."""
    cluster = run.cluster
    live = cluster.replica(cluster.alive()[0])
    target = live.container.applied_index
    want = _digests(live.container)
    factory = type(live.service)
    limits = container_limits_for(live.config)
    archive = sorted(
        cluster.snapshot_archive.items(),
        key=lambda item: (item[0][0], item[0][1].index, item[0][1].term),
    )
    for (node_id, meta), data in archive:
        if meta.index > target:
            continue
        container = ServiceContainer(factory(), limits)
        container.restore(data)
        entries = [cluster.checker.applied[Index(i)] for i in range(meta.index + 1, target + 1)]
        container.apply_batch(entries)
        got = _digests(container)
        run.replays += 1
        if got != want:
            names = ("log", "outcome", "state")
            differ = [name for name, a, b in zip(names, got, want, strict=True) if a != b]
            cluster.checker.fail(
                "Replay Equivalence",
                f"node {node_id}'s snapshot at index {meta.index} plus the log rebuilds a "
                f"replica whose {', '.join(differ)} digest differs from the live ones' at "
                f"index {target}",
            )


def _digests(container: ServiceContainer) -> tuple[str, str, str]:
    return container.log_digest(), container.outcome_digest(), container.state_digest()


def _check_linearizable(run: _Run) -> None:
    history = build_history(run.history.events, "swarm")
    model = BankModel(dict(BANK_ACCOUNTS)) if run.mix.workload == "bank" else KvModel()
    try:
        result = check_history(history, model, budget_seconds=CHECK_BUDGET_S)
    except CheckError as error:  # an answer no correct cluster gives (a read of nothing)
        run.cluster.checker.fail(
            "Linearizability", f"the clients saw an impossible answer: {error}"
        )
        return
    run.linearizable = result.verdict.value
    if result.verdict is Verdict.NOT_LINEARIZABLE:
        failure = result.failure
        detail = failure.operation.describe() if failure is not None else ""
        run.cluster.checker.fail(
            "Linearizability",
            f"the clients' history ({len(history.operations)} operations) is not "
            f"linearizable: {detail}",
        )


def _nemesis(cluster: SimCluster, rng: random.Random, action: str) -> None:
    ids = list(cluster.ids)
    leader = cluster.leader()
    if action == "partition-halves":
        rng.shuffle(ids)
        cut = rng.randint(1, len(ids) - 1) if len(ids) > 1 else 1
        cluster.partition(ids[:cut], ids[cut:])
    elif action == "isolate-leader" and leader is not None:
        cluster.disconnect(leader)
    elif action == "churn-leader":
        # Moves the cut onto whoever leads now (or lifts it when nobody does): with a
        # short nemesis period, leaders come and go every few timeouts, each leaving
        # entries on a few nodes only (the history of Figure 8 in the Raft paper).
        cluster.heal()
        if leader is not None:
            cluster.disconnect(leader)
    elif action == "one-way":
        for _ in range(rng.randint(1, len(ids))):
            src, dst = rng.sample(ids, 2) if len(ids) > 1 else (ids[0], ids[0])
            if src != dst:
                cluster.block_one_way(src, dst)
    elif action == "bridge" and len(ids) >= 3:
        rng.shuffle(ids)
        middle = len(ids) // 2
        left, bridge, right = ids[:middle], ids[middle], ids[middle + 1 :]
        cluster.partition([*left, bridge], right)
        for node in right:
            cluster.blocked.discard((node, bridge))
            cluster.blocked.discard((bridge, node))
    elif action == "crash":
        alive = cluster.alive()
        if alive:
            victim = rng.choice(alive)
            cluster.crash(victim)
            cluster.restart(victim, after_ticks=rng.randint(1, 60))
    elif action == "crash-leader" and leader is not None:
        cluster.crash(leader)
        cluster.restart(leader, after_ticks=rng.randint(1, 60))
    elif action == "restart":
        for node_id in ids:
            cluster.restart(NodeId(node_id))
    elif action == "heal":
        cluster.heal()


@dataclass(frozen=True)
class SwarmSummary:
    results: list[SeedResult]
    seconds: float

    @property
    def failures(self) -> list[SeedResult]:
        return [r for r in self.results if not r.ok]

    @property
    def ticks(self) -> int:
        return sum(r.ticks for r in self.results)

    def combined_hash(self) -> str:
        digest = hashlib.blake2b(digest_size=16)
        for result in self.results:
            digest.update(result.trace_hash.encode())
        return digest.hexdigest()


def run_swarm(
    seeds: list[int],
    nodes: int,
    *,
    on_result: Callable[[SeedResult], None] | None = None,
    fault_ticks: int = 300,
) -> SwarmSummary:
    started = time.perf_counter()
    results = []
    for seed in seeds:
        result = run_seed(seed, nodes, fault_ticks=fault_ticks)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return SwarmSummary(results, time.perf_counter() - started)
