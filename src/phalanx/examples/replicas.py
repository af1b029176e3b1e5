"""A group of account replicas fed the same inputs, with a majority vote after each one.

Theory of operation
-------------------
Deterministic replicas that start equal and apply the same inputs in the same order stay
equal, so after every input each replica's state digest should match the others'. The
group feeds one input to every replica, then votes over the digests:

- every digest equal: the replicas agree (`Verdict.UNANIMOUS`);
- one digest held by more than half of the group: that is taken as the correct state,
  and every replica holding another digest is named faulty (`Verdict.MAJORITY`);
- no digest held by more than half: the replicas diverged, but nothing says which side
  is right (`Verdict.NO_MAJORITY`). Two replicas that disagree always end here, which is
  why fault detection needs at least three.

The vote counts against the whole group, not against the replicas that still agree: a
majority is more than half of all replicas. It trusts the majority blindly, so when
faulty replicas are not a minority it can fail to decide, or even name a healthy replica.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from phalanx.examples.account import Account, Command, Outcome, state_digest

#: Largest group the lesson builds; past this the step table no longer fits a terminal.
REPLICAS_MAX = 9


class Verdict(enum.Enum):
    """What the vote after one input concluded."""

    UNANIMOUS = "all agree"
    MAJORITY = "majority names the odd one out"
    NO_MAJORITY = "diverged, cannot tell which"


@dataclass(frozen=True, slots=True)
class DigestTally:
    """The replicas (1-based ids) whose state has `digest`."""

    digest: str
    replica_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class VoteResult:
    """The vote over one round of digests."""

    verdict: Verdict
    #: One tally per distinct digest, the largest group first (ties: lowest replica id).
    tallies: tuple[DigestTally, ...]
    majority_digest: str | None
    #: Replicas whose digest differs from the majority's; empty without a majority.
    outvoted_replica_ids: tuple[int, ...]


def majority_vote(digests: Sequence[str]) -> VoteResult:
    """Vote over `digests`, where `digests[i]` belongs to replica `i + 1`."""
    assert len(digests) >= 1, "a vote needs at least one replica"
    replica_ids_by_digest: dict[str, list[int]] = {}
    for replica_id, digest in enumerate(digests, start=1):
        replica_ids_by_digest.setdefault(digest, []).append(replica_id)
    tallies = tuple(
        sorted(
            (DigestTally(digest, tuple(ids)) for digest, ids in replica_ids_by_digest.items()),
            key=lambda tally: (-len(tally.replica_ids), tally.replica_ids[0]),
        )
    )
    if len(tallies) == 1:
        return VoteResult(Verdict.UNANIMOUS, tallies, tallies[0].digest, ())
    largest = tallies[0]
    # Strictly more than half of the whole group: with an even split there is no majority.
    if 2 * len(largest.replica_ids) > len(digests):
        outvoted = tuple(
            sorted(replica_id for tally in tallies[1:] for replica_id in tally.replica_ids)
        )
        return VoteResult(Verdict.MAJORITY, tallies, largest.digest, outvoted)
    return VoteResult(Verdict.NO_MAJORITY, tallies, None, ())


@dataclass(frozen=True, slots=True)
class ReplicaStep:
    """One replica after one input."""

    outcome: Outcome
    balance_cents: int
    applied_count: int
    digest: str


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One input fed to the whole group, what each replica did, and the vote."""

    step: int
    command: Command
    replicas: tuple[ReplicaStep, ...]
    vote: VoteResult


@dataclass(frozen=True, slots=True)
class GroupRun:
    """A whole run of a group: the record of every step, for tests and for printing."""

    replica_count: int
    #: The replicas built faulty. Ground truth for the report only: the vote never sees it.
    faulty_replica_ids: tuple[int, ...]
    steps: tuple[StepRecord, ...]

    @property
    def first_divergence_step(self) -> int | None:
        """The first step after which the replicas did not all agree."""
        for record in self.steps:
            if record.vote.verdict is not Verdict.UNANIMOUS:
                return record.step
        return None

    @property
    def first_no_majority_step(self) -> int | None:
        for record in self.steps:
            if record.vote.verdict is Verdict.NO_MAJORITY:
                return record.step
        return None

    def first_named_step(self, replica_id: int) -> int | None:
        """The first step at which the vote named `replica_id` faulty."""
        for record in self.steps:
            if replica_id in record.vote.outvoted_replica_ids:
                return record.step
        return None

    def first_skip_step(self, replica_id: int) -> int | None:
        """The first step at which `replica_id` skipped its input (the planted fault)."""
        for record in self.steps:
            if record.replicas[replica_id - 1].outcome is Outcome.SKIPPED:
                return record.step
        return None

    @property
    def named_replica_ids(self) -> tuple[int, ...]:
        """Every replica the vote named faulty at least once, in the order it was named."""
        named: dict[int, None] = {}
        for record in self.steps:
            for replica_id in record.vote.outvoted_replica_ids:
                named.setdefault(replica_id, None)
        return tuple(named)


class ReplicaGroup:
    """K replicas that receive every input in the same order, and vote after each."""

    def __init__(self, replicas: Sequence[Account], faulty_replica_ids: Iterable[int] = ()) -> None:
        assert 1 <= len(replicas) <= REPLICAS_MAX, len(replicas)
        self._replicas = tuple(replicas)
        self._faulty_replica_ids = tuple(sorted(faulty_replica_ids))
        assert all(1 <= replica_id <= len(replicas) for replica_id in self._faulty_replica_ids)
        self._steps_fed = 0

    @property
    def replica_count(self) -> int:
        return len(self._replicas)

    def feed(self, command: Command) -> StepRecord:
        """Apply `command` on every replica, then vote over their state digests."""
        self._steps_fed += 1
        replica_steps = []
        for replica in self._replicas:
            outcome = replica.apply(command)
            state = replica.state
            replica_steps.append(
                ReplicaStep(outcome, state.balance_cents, state.applied_count, state_digest(state))
            )
        vote = majority_vote([replica_step.digest for replica_step in replica_steps])
        return StepRecord(self._steps_fed, command, tuple(replica_steps), vote)

    def run(self, commands: Iterable[Command]) -> GroupRun:
        steps = tuple(self.feed(command) for command in commands)
        return GroupRun(self.replica_count, self._faulty_replica_ids, steps)
