"""Raft consensus as a pure state machine.

Theory of operation
-------------------
`Raft` holds one node's consensus state and changes it only in response to three
inputs: `tick()` (one unit of logical time), `step(message)` (a message from a peer)
and `propose(data)` (a command from a client). It never performs I/O: messages to
send go to `self.messages`, entries to persist stay "unstable" in `self.log`, and
`RawNode` (rawnode.py) packages both into a `Ready` for the caller, who persists,
sends and applies in that order.

The design follows the Raft paper (Ongaro & Ousterhout, 2014) and Ongaro's thesis
(2014), with the structure of etcd-io/raft:

* Roles are swapped step and tick functions (`become_leader` installs
  `_step_leader` and `_tick_heartbeat`), so each role's rules sit together.
* Elections (§5.2) use randomised timeouts drawn from an injected `random.Random`.
  PreVote (thesis §9.6) makes a node first ask whether it could win, so a node that
  was cut off cannot disrupt a healthy leader by inflating terms when it returns.
  CheckQuorum (thesis §6.2) makes a leader step down when it has not heard from a
  majority within an election timeout, and lets followers that hear from a leader
  ignore vote requests during that time (the leader lease of thesis §4.2.3).
* A new leader appends a no-op entry (§8): committing it commits every earlier
  entry, because a leader only counts replicas for entries of its own term (§5.4.2,
  the "Figure 8" rule).
* Replication (§5.3) probes a follower one message at a time until the logs match,
  then pipelines up to `max_inflight_messages` batched AppendEntries; rejections
  carry a hint that lets the leader skip a whole conflicting term at once.
* Leadership transfer (thesis §3.10): the leader stops taking proposals, brings the
  target up to date and sends TimeoutNow; the target campaigns at once.

Every collection that grows with input has a bound: the in-flight window per
follower, the bytes per AppendEntries, and the uncommitted bytes at the leader.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from phalanx.core.errors import ConfigError, NotLeaderError, ProposalDroppedError
from phalanx.core.log import RaftLog
from phalanx.core.messages import (
    AppendRequest,
    AppendResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from phalanx.core.progress import Progress, ProgressState
from phalanx.core.quorum import VoteResult, committed_index, vote_result
from phalanx.core.types import (
    ENTRY_OVERHEAD_BYTES,
    NO_NODE,
    Entry,
    EntryKind,
    HardState,
    Index,
    NodeId,
    SnapshotMeta,
    Term,
    entry_size_bytes,
)

if TYPE_CHECKING:
    import random  # only the type of the injected generator


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class RaftConfig:
    node_id: NodeId
    voters: tuple[NodeId, ...]
    #: A follower campaigns after a random timeout in [this, 2 x this) ticks of silence.
    election_timeout_ticks: int = 10
    heartbeat_interval_ticks: int = 1
    #: Unanswered AppendEntries per follower (the pipeline depth).
    max_inflight_messages: int = 256
    max_inflight_bytes: int = 32 * 1024 * 1024
    #: Payload bytes per AppendEntries (a single larger entry is still sent alone).
    max_message_bytes: int = 1024 * 1024
    #: Proposals are refused while the leader holds this many uncommitted bytes.
    max_uncommitted_bytes: int = 64 * 1024 * 1024
    #: Committed entry bytes handed to the service per Ready: bounds how long one
    #: Ready keeps the caller busy (a restart replaying a long log stays responsive).
    max_apply_bytes: int = 1024 * 1024
    #: Heartbeat rounds with appends outstanding and no ack before the leader assumes
    #: they were lost and resends from the follower's last known match.
    replication_stall_heartbeats: int = 3
    #: Heartbeat rounds an unanswered InstallSnapshot may take before the leader gives
    #: up on it and sends a fresh one (the server also reports failures at once).
    snapshot_stall_heartbeats: int = 200
    pre_vote: bool = True
    check_quorum: bool = True
    #: Tell followers of a new commit index at once, with an empty AppendEntries each
    #: (etcd-io/raft's behaviour). Off, the index rides on the next append or
    #: heartbeat: a follower applies up to a heartbeat later, and an idle cluster sends
    #: two fewer messages (and two fewer acknowledgements) per committed command.
    broadcast_commit: bool = False

    def validate(self) -> None:
        if self.node_id <= 0:
            raise ConfigError("node_id", f"must be a positive integer, got {self.node_id}")
        if len(set(self.voters)) != len(self.voters) or any(v <= 0 for v in self.voters):
            raise ConfigError("voters", f"must be distinct positive ids, got {self.voters}")
        if self.node_id not in self.voters:
            raise ConfigError("voters", f"must include this node's id {self.node_id}")
        if self.heartbeat_interval_ticks < 1:
            raise ConfigError("heartbeat_interval_ticks", "must be at least 1")
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks:
            raise ConfigError(
                "election_timeout_ticks",
                f"must exceed heartbeat_interval_ticks ({self.heartbeat_interval_ticks})",
            )
        for name in (
            "max_inflight_messages",
            "max_inflight_bytes",
            "max_message_bytes",
            "max_uncommitted_bytes",
            "max_apply_bytes",
            "replication_stall_heartbeats",
            "snapshot_stall_heartbeats",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(name, "must be at least 1")


class Raft:
    """One node's Raft state. See the module docstring for the theory of operation."""

    def __init__(
        self,
        config: RaftConfig,
        rng: random.Random,
        *,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: SnapshotMeta | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.id = config.node_id
        self.voters = tuple(sorted(config.voters))
        self.peers = tuple(v for v in self.voters if v != self.id)
        self.rng = rng
        hard_state = hard_state or HardState()
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.log = RaftLog(entries, committed=hard_state.commit, snapshot=snapshot)
        #: The newest snapshot the caller holds (what a lagging follower is sent).
        self.snapshot_meta = snapshot or SnapshotMeta()
        #: A snapshot received from the leader, for the caller to install (next Ready).
        self.pending_snapshot: SnapshotMeta | None = None
        self.messages: list[Message] = []
        self.role = Role.FOLLOWER
        self.leader_id = NO_NODE
        self.votes: dict[NodeId, bool] = {}
        self.progress: dict[NodeId, Progress] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_timeout_ticks
        self.transfer_target = NO_NODE
        self.uncommitted_bytes = 0
        #: False keeps this node from campaigning (it still votes and replicates): for
        #: a node whose service was found to diverge from the majority.
        self.promotable = True
        self._step_role: Callable[[Message], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election
        self.become_follower(self.term, NO_NODE)

    # -- inputs --------------------------------------------------------------------

    def tick(self) -> None:
        self._tick()

    def step(self, message: Message) -> None:
        assert message.to == self.id, f"message for {message.to} delivered to {self.id}"
        if message.from_id not in self.peers:
            return  # not a member: the transport should have refused it; never trust it
        if message.term > self.term:
            if not self._accept_higher_term(message):
                return
        elif message.term < self.term:
            self._answer_stale(message)
            return
        if isinstance(message, VoteRequest):
            self._on_vote_request(message)
        else:
            self._step_role(message)

    def propose(self, commands: Sequence[bytes]) -> tuple[Index, Index]:
        """Appends commands to the leader's log; returns the (first, last) index used.

        The caller learns the outcome when an entry with that index and this term is
        committed; if a different entry lands there, the proposal was lost."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if self.transfer_target != NO_NODE:
            raise ProposalDroppedError(
                f"leadership transfer to node {self.transfer_target} is in progress"
            )
        assert commands, "propose() needs at least one command"
        size = sum(len(c) for c in commands) + ENTRY_OVERHEAD_BYTES * len(commands)
        limit = self.config.max_uncommitted_bytes
        if self.uncommitted_bytes and self.uncommitted_bytes + size > limit:
            raise ProposalDroppedError(
                f"{self.uncommitted_bytes} uncommitted bytes at the leader "
                f"(limit {self.config.max_uncommitted_bytes}); retry after commits catch up"
            )
        first = self.log.last_index() + 1
        term = self.term
        entries = [
            Entry(term, Index(first + offset), EntryKind.COMMAND, command)
            for offset, command in enumerate(commands)
        ]
        self.log.append(entries)
        self.uncommitted_bytes += size
        self._broadcast_append()
        return Index(first), Index(first + len(entries) - 1)

    def transfer_leadership(self, target: NodeId) -> None:
        """Hands leadership to `target` (thesis §3.10). Proposals are refused meanwhile;
        the attempt is abandoned after one election timeout."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if target not in self.peers:
            raise ConfigError("target", f"node {target} is not another voter of this cluster")
        self.transfer_target = target
        self.election_elapsed = 0
        if self.progress[target].match == self.log.last_index():
            self._send(TimeoutNow(self.term, self.id, target))
        else:
            self._send_append(target)

    def report_unreachable(self, peer: NodeId) -> None:
        """The transport lost the connection to `peer`: what was in flight may be lost,
        so replication to it restarts by probing from its last known match."""
        if self.role is Role.LEADER and peer in self.peers:
            progress = self.progress[peer]
            if progress.state is ProgressState.REPLICATE:
                progress.become_probe()

    def report_snapshot(self, peer: NodeId, *, succeeded: bool) -> None:
        """The server finished (or failed) streaming a snapshot's bytes to `peer`."""
        if self.role is not Role.LEADER or peer not in self.peers:
            return
        progress = self.progress[peer]
        if progress.state is ProgressState.SNAPSHOT and not succeeded:
            progress.become_probe()
            progress.probe_sent = True  # wait for a heartbeat answer before retrying

    def snapshot_taken(self, snapshot: SnapshotMeta, compact_to: Index) -> None:
        """The caller durably stored a snapshot of the state at `snapshot.index`; log
        entries up to `compact_to` (at most that index) may now be dropped (§7)."""
        assert snapshot.index <= self.log.applied, "snapshot of unapplied state"
        assert self.log.term(snapshot.index) in (snapshot.term, None)
        if snapshot.index > self.snapshot_meta.index:
            self.snapshot_meta = snapshot
        self.log.compact_to(min(compact_to, self.snapshot_meta.index))

    def campaign(self) -> None:
        """Starts an election now, as if the election timeout had elapsed."""
        self._campaign(pre_vote=self.config.pre_vote, transfer=False)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    # -- role changes ----------------------------------------------------------------

    def become_follower(self, term: Term, leader_id: NodeId) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader_id = leader_id
        self._step_role = self._step_follower
        self._tick = self._tick_election

    def _become_pre_candidate(self) -> None:
        # A pre-candidate keeps its term and vote: a poll must change nothing (§9.6).
        self._step_role = self._step_candidate
        self._tick = self._tick_election
        self.votes = {}
        self.role = Role.PRE_CANDIDATE
        self.leader_id = NO_NODE

    def _become_candidate(self) -> None:
        assert self.role is not Role.LEADER, "a leader does not campaign"
        self._reset(Term(self.term + 1))
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._step_role = self._step_candidate
        self._tick = self._tick_election

    def _become_leader(self) -> None:
        assert self.role is Role.CANDIDATE, "only a candidate becomes leader"
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader_id = self.id
        self._step_role = self._step_leader
        self._tick = self._tick_heartbeat
        last = self.log.last_index()
        for peer in self.peers:
            self.progress[peer] = Progress(
                Index(last + 1), self.config.max_inflight_messages, self.config.max_inflight_bytes
            )
        own = Progress(Index(last + 1), 1, 1)
        own.match = self.log.stable
        own.state = ProgressState.REPLICATE
        self.progress[self.id] = own
        # The no-op of §8: it commits everything before it once a majority holds it.
        self.log.append([Entry(self.term, Index(last + 1), EntryKind.NOOP, b"")])
        self._broadcast_append()

    def _reset(self, term: Term) -> None:
        if term != self.term:
            self.term = term
            self.vote = NO_NODE
        self.leader_id = NO_NODE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        timeout = self.config.election_timeout_ticks
        self.randomized_election_timeout = timeout + self.rng.randrange(timeout)
        self.votes = {}
        self.progress = {}
        self.transfer_target = NO_NODE
        self.uncommitted_bytes = 0

    # -- elections -------------------------------------------------------------------

    def _campaign(self, *, pre_vote: bool, transfer: bool) -> None:
        if pre_vote:
            self._become_pre_candidate()
            vote_term = Term(self.term + 1)
        else:
            self._become_candidate()
            vote_term = self.term
        if self._record_vote(self.id, granted=True) is VoteResult.WON:
            self._on_election_won(pre_vote)
            return
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for peer in self.peers:
            self._send(
                VoteRequest(vote_term, self.id, peer, last_index, last_term, pre_vote, transfer)
            )

    def _record_vote(self, voter: NodeId, *, granted: bool) -> VoteResult:
        self.votes.setdefault(voter, granted)
        return vote_result(self.voters, self.votes)

    def _on_election_won(self, pre_vote: bool) -> None:
        if pre_vote:
            self._campaign(pre_vote=False, transfer=False)
        else:
            self._become_leader()

    def _in_lease(self) -> bool:
        """We heard from a live leader within the election timeout (thesis §4.2.3)."""
        return (
            self.config.check_quorum
            and self.leader_id != NO_NODE
            and self.election_elapsed < self.config.election_timeout_ticks
        )

    def _accept_higher_term(self, message: Message) -> bool:
        """Handles a message from a higher term; False when it must be dropped."""
        if isinstance(message, VoteRequest):
            if not message.transfer and self._in_lease():
                return False  # a live leader exists; this candidate would only disrupt
            if message.pre_vote:
                return True  # a poll never changes our term
        if isinstance(message, VoteResponse) and message.pre_vote and message.granted:
            return True  # a granted poll carries the term we would campaign in
        if isinstance(message, AppendRequest | HeartbeatRequest | InstallSnapshot):
            self.become_follower(message.term, message.from_id)
        else:
            self.become_follower(message.term, NO_NODE)
        return True

    def _answer_stale(self, message: Message) -> None:
        if isinstance(message, AppendRequest | HeartbeatRequest | InstallSnapshot):
            # Tell a deposed leader about the newer term. Without this, a node whose
            # term was raised by a failed PreVote-less campaign, or a leader cut off
            # under CheckQuorum, could leave the cluster without progress.
            self._send(AppendResponse(self.term, self.id, message.from_id, Index(0)))
        elif isinstance(message, VoteRequest) and message.pre_vote:
            self._send(VoteResponse(self.term, self.id, message.from_id, False, True))

    def _on_vote_request(self, message: VoteRequest) -> None:
        can_vote = (
            self.vote == message.from_id
            or (self.vote == NO_NODE and self.leader_id == NO_NODE)
            or (message.pre_vote and message.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(message.last_log_index, message.last_log_term):
            self._send(VoteResponse(message.term, self.id, message.from_id, True, message.pre_vote))
            if not message.pre_vote:
                self.election_elapsed = 0
                self.vote = message.from_id
        else:
            self._send(VoteResponse(self.term, self.id, message.from_id, False, message.pre_vote))

    # -- ticks -------------------------------------------------------------------------

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            if self.promotable:
                self._campaign(pre_vote=self.config.pre_vote, transfer=False)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_timeout_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum and not self._quorum_active():
                self.become_follower(self.term, NO_NODE)
                return
            self.transfer_target = NO_NODE  # a transfer that took this long has failed
        if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _quorum_active(self) -> bool:
        """CheckQuorum (thesis §6.2): heard from a majority since the last check."""
        active = {self.id}
        for peer in self.peers:
            progress = self.progress[peer]
            if progress.recent_active:
                active.add(peer)
            progress.recent_active = False
        return len(active) * 2 > len(self.voters)

    # -- role step functions -------------------------------------------------------------

    def _step_follower(self, message: Message) -> None:
        if isinstance(message, AppendRequest):
            self.election_elapsed = 0
            self.leader_id = message.from_id
            self._on_append_request(message)
        elif isinstance(message, HeartbeatRequest):
            self.election_elapsed = 0
            self.leader_id = message.from_id
            # The leader sends min(our match, its commit), which we hold unless our
            # disk lost data; the commit index is a hint, so clamp rather than trust.
            self.log.commit_to(min(message.commit, self.log.last_index()))
            self._send(
                HeartbeatResponse(self.term, self.id, message.from_id, self.log.last_index())
            )
        elif isinstance(message, InstallSnapshot):
            self.election_elapsed = 0
            self.leader_id = message.from_id
            self._on_install_snapshot(message)
        elif isinstance(message, TimeoutNow) and self.promotable:
            self._campaign(pre_vote=False, transfer=True)

    def _step_candidate(self, message: Message) -> None:
        if isinstance(message, AppendRequest | HeartbeatRequest | InstallSnapshot):
            # Someone won this term (§5.2): follow it.
            self.become_follower(self.term, message.from_id)
            self._step_follower(message)
        elif isinstance(message, VoteResponse):
            if message.pre_vote != (self.role is Role.PRE_CANDIDATE):
                return  # an answer to an earlier campaign of the other kind
            result = self._record_vote(message.from_id, granted=message.granted)
            if result is VoteResult.WON:
                self._on_election_won(message.pre_vote)
            elif result is VoteResult.LOST:
                self.become_follower(self.term, NO_NODE)

    def _step_leader(self, message: Message) -> None:
        if isinstance(message, AppendResponse):
            progress = self.progress[message.from_id]
            progress.recent_active = True
            if message.reject:
                self._on_append_rejected(message, progress)
            else:
                self._on_append_accepted(message, progress)
        elif isinstance(message, HeartbeatResponse):
            progress = self.progress[message.from_id]
            progress.recent_active = True
            if message.last_index < progress.match and progress.state is not ProgressState.SNAPSHOT:
                # The follower holds less than it acknowledged (a wiped or damaged disk;
                # or a reordered old answer, which costs only a probe). Lowering match
                # only under-counts replicas, which is safe.
                progress.match = message.last_index
                progress.become_probe()
            progress.on_heartbeat_response(
                self.config.replication_stall_heartbeats, self.config.snapshot_stall_heartbeats
            )
            if progress.match < self.log.last_index():
                self._send_append(message.from_id)

    # -- replication: follower side ----------------------------------------------------

    def _on_append_request(self, message: AppendRequest) -> None:
        log = self.log
        if message.prev_log_index < log.committed:
            # Everything up to our commit index is already settled: say where we are.
            self._send(AppendResponse(self.term, self.id, message.from_id, log.committed))
            return
        last_new = log.maybe_append(
            message.prev_log_index, message.prev_log_term, message.leader_commit, message.entries
        )
        if last_new is not None:
            self._send(AppendResponse(self.term, self.id, message.from_id, last_new))
            return
        hint_index, hint_term = log.find_conflict_by_term(
            min(message.prev_log_index, log.last_index()), message.prev_log_term
        )
        self._send(
            AppendResponse(
                self.term,
                self.id,
                message.from_id,
                message.prev_log_index,
                reject=True,
                reject_hint=hint_index,
                hint_term=hint_term,
            )
        )

    def _on_install_snapshot(self, message: InstallSnapshot) -> None:
        snapshot = message.snapshot
        log = self.log
        if snapshot.index <= log.committed:
            # We already hold (and applied, or will apply) everything it covers.
            self._send(AppendResponse(self.term, self.id, message.from_id, log.committed))
            return
        if log.match_term(snapshot.index, snapshot.term):
            # Our log already has its last entry, hence (Log Matching) all before it:
            # only the commit index moves; keep the entries after it.
            log.commit_to(snapshot.index)
            self._send(AppendResponse(self.term, self.id, message.from_id, snapshot.index))
            return
        log.restore(snapshot)
        self.snapshot_meta = snapshot
        self.pending_snapshot = snapshot
        # Sent with the Ready that carries the snapshot, so only after it is installed.
        self._send(AppendResponse(self.term, self.id, message.from_id, snapshot.index))

    # -- replication: leader side --------------------------------------------------------

    def _on_append_rejected(self, message: AppendResponse, progress: Progress) -> None:
        next_probe = message.reject_hint
        if message.hint_term > 0:
            # Skip every entry of ours whose term cannot match the follower's hint.
            next_probe, _ = self.log.find_conflict_by_term(message.reject_hint, message.hint_term)
        if progress.maybe_decrease_to(message.index, next_probe):
            if progress.state is ProgressState.REPLICATE:
                progress.become_probe()
            self._send_append(message.from_id)

    def _on_append_accepted(self, message: AppendResponse, progress: Progress) -> None:
        was_paused = progress.is_paused()
        if not progress.maybe_update(message.index):
            return
        if progress.state is ProgressState.PROBE:
            progress.become_replicate()
        elif progress.state is ProgressState.SNAPSHOT:
            if progress.match >= progress.pending_snapshot:
                progress.become_replicate()
        else:
            progress.inflights.free_to(message.index)
        if self._maybe_commit():
            self._on_commit_advanced()
        elif was_paused:
            self._send_append(message.from_id)
        self._send_pending(message.from_id)
        if message.from_id == self.transfer_target and progress.match == self.log.last_index():
            self._send(TimeoutNow(self.term, self.id, message.from_id))

    def on_persisted(self, index: Index) -> None:
        """The caller made the leader's own entries durable up to `index`: the leader
        counts itself for commitment only now (it acknowledges only what it synced)."""
        if (
            self.role is Role.LEADER
            and self.progress[self.id].maybe_update(index)
            and self._maybe_commit()
        ):
            self._on_commit_advanced()

    def _on_commit_advanced(self) -> None:
        if self.config.broadcast_commit:
            self._broadcast_append()
        else:
            for peer in self.peers:
                self._send_pending(peer)

    def _maybe_commit(self) -> bool:
        match = {voter: self.progress[voter].match for voter in self.voters}
        candidate = committed_index(self.voters, match)
        if candidate <= self.log.committed or self.log.term(candidate) != self.term:
            return False  # §5.4.2: never commit an older term's entry by counting replicas
        old = self.log.committed
        self.log.commit_to(candidate)
        released = sum(entry_size_bytes(self.log.entry(i)) for i in range(old + 1, candidate + 1))
        self.uncommitted_bytes = max(0, self.uncommitted_bytes - released)
        return True

    def _broadcast_append(self) -> None:
        for peer in self.peers:
            self._send_append(peer)
            self._send_pending(peer)

    def _broadcast_heartbeat(self) -> None:
        committed = self.log.committed
        for peer in self.peers:
            commit = min(self.progress[peer].match, committed)
            self._send(HeartbeatRequest(self.term, self.id, peer, Index(commit)))

    def _send_pending(self, peer: NodeId) -> None:
        """Fills the follower's pipeline with whatever entries it lacks."""
        while self._send_append(peer, send_if_empty=False):
            pass

    def _send_append(self, peer: NodeId, *, send_if_empty: bool = True) -> bool:
        progress = self.progress[peer]
        if progress.is_paused():
            return False
        log = self.log
        last = log.last_index()
        prev_index = Index(progress.next - 1)
        prev_term = log.term(prev_index)
        if prev_term is None:
            # What this follower needs was compacted away (§7).
            self._send(InstallSnapshot(self.term, self.id, peer, self.snapshot_meta))
            progress.become_snapshot(self.snapshot_meta.index)
            return True
        entries: list[Entry] = []
        if progress.next <= last:
            entries = log.slice(progress.next, last + 1, self.config.max_message_bytes)
        elif not send_if_empty:
            return False
        self._send(
            AppendRequest(
                self.term, self.id, peer, prev_index, prev_term, tuple(entries), log.committed
            )
        )
        if progress.state is ProgressState.REPLICATE:
            if entries:
                last_sent = entries[-1].index
                progress.inflights.add(last_sent, sum(entry_size_bytes(e) for e in entries))
                progress.next = Index(last_sent + 1)
        else:
            progress.probe_sent = True
        return True

    def _send(self, message: Message) -> None:
        self.messages.append(message)
