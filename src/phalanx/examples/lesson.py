"""The state-machine lesson as a library: three acts on one seeded input sequence.

Theory of operation
-------------------
One seed fixes everything: the inputs, when each faulty account skips, and where the
faulty replicas sit in each group. Each random stream is derived from the seed and a
label, so adding a replica to a group does not change the inputs, and the first faulty
account skips at the same steps in every act: the learner sees the same fault three ways.

- Act 1 feeds a deterministic and a faulty account side by side until their states part.
- Act 2 puts the same two in a group: the vote sees the split but has no majority.
- Act 3 votes in groups of three and five (or `--replicas K`) with `--faulty F` faulty
  members: a majority of equal digests names the odd one out.

The functions here only compute; `phalanx.examples.lesson_view` prints. Results are
frozen values, so tests assert on them and equal seeds give equal results.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from phalanx.examples.account import (
    Command,
    Deposit,
    DeterministicAccount,
    FaultyAccount,
    Withdraw,
)
from phalanx.examples.replicas import REPLICAS_MAX, GroupRun, ReplicaGroup, Verdict

#: Most inputs one lesson run feeds; each is kept in the result, so the result is bounded.
INPUTS_MAX = 10_000
#: A seed whose first fault comes after a few agreeing steps, which tells the story best.
DEFAULT_SEED = 3
DEFAULT_INPUTS = 24
DEFAULT_SKIP_PROBABILITY = 0.1
#: Act 3 runs these group sizes unless `--replicas` picks one.
DEFAULT_GROUP_SIZES = (3, 5)
#: Deposits and withdrawals move whole units of 5.00 up to this many units, so that some
#: withdrawals overdraw and get rejected: rejections are transitions too.
_AMOUNT_STEPS_MAX = 40
_AMOUNT_STEP_CENTS = 500
_DEPOSIT_PROBABILITY = 0.55


class LessonConfigError(ValueError):
    """A lesson option is out of range; the message names the option and the fix."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option}: {problem}")
        self.option = option
        self.problem = problem


@dataclass(frozen=True, slots=True)
class LessonConfig:
    """Everything that decides a lesson run. Validated on construction."""

    seed: int = DEFAULT_SEED
    inputs: int = DEFAULT_INPUTS
    group_sizes: tuple[int, ...] = DEFAULT_GROUP_SIZES
    faulty: int = 1
    skip_probability: float = DEFAULT_SKIP_PROBABILITY

    def __post_init__(self) -> None:
        if not 1 <= self.inputs <= INPUTS_MAX:
            raise LessonConfigError(
                "--inputs", f"must be between 1 and {INPUTS_MAX}, got {self.inputs}"
            )
        if not self.group_sizes:
            raise LessonConfigError("--replicas", "at least one group size is needed")
        for size in self.group_sizes:
            if not 1 <= size <= REPLICAS_MAX:
                raise LessonConfigError(
                    "--replicas", f"must be between 1 and {REPLICAS_MAX}, got {size}"
                )
        if self.faulty < 0:
            raise LessonConfigError("--faulty", f"must be 0 or more, got {self.faulty}")
        smallest_group = min(self.group_sizes)
        if self.faulty > smallest_group:
            raise LessonConfigError(
                "--faulty",
                f"{self.faulty} faulty replicas do not fit in a group of {smallest_group};"
                f" lower --faulty or raise --replicas",
            )
        if not 0.0 <= self.skip_probability <= 1.0:
            raise LessonConfigError(
                "--skip-probability",
                f"must be between 0 and 1, got {self.skip_probability}",
            )


def _rng(seed: int, label: str) -> random.Random:
    # A string seed is hashed with SHA-512 by `random.Random`: stable across runs and
    # machines, unlike `hash()`, and independent streams for independent labels.
    return random.Random(f"phalanx.examples.lesson:{seed}:{label}")


def generate_inputs(seed: int, count: int) -> tuple[Command, ...]:
    """The input sequence every account in the lesson receives, the same for a seed."""
    assert 0 <= count <= INPUTS_MAX, count
    rng = _rng(seed, "inputs")
    commands: list[Command] = []
    for _ in range(count):
        amount_cents = rng.randint(1, _AMOUNT_STEPS_MAX) * _AMOUNT_STEP_CENTS
        if rng.random() < _DEPOSIT_PROBABILITY:
            commands.append(Deposit(amount_cents))
        else:
            commands.append(Withdraw(amount_cents))
    return tuple(commands)


def make_faulty_account(config: LessonConfig, faulty_ordinal: int) -> FaultyAccount:
    """The `faulty_ordinal`-th faulty account; the same ordinal skips the same steps."""
    rng = _rng(config.seed, f"fault:{faulty_ordinal}")
    return FaultyAccount(rng, config.skip_probability)


def build_group(config: LessonConfig, replica_count: int, faulty_count: int) -> ReplicaGroup:
    """A group of `replica_count` replicas, `faulty_count` of them faulty at seeded places."""
    assert 0 <= faulty_count <= replica_count <= REPLICAS_MAX
    placement = _rng(config.seed, f"placement:{replica_count}")
    faulty_ids = sorted(placement.sample(range(1, replica_count + 1), faulty_count))
    replicas: list[DeterministicAccount] = []
    for replica_id in range(1, replica_count + 1):
        if replica_id in faulty_ids:
            replicas.append(make_faulty_account(config, faulty_ids.index(replica_id)))
        else:
            replicas.append(DeterministicAccount())
    return ReplicaGroup(replicas, faulty_ids)


def run_side_by_side(config: LessonConfig, inputs: tuple[Command, ...]) -> GroupRun:
    """Act 1: a deterministic account (replica 1) and a faulty one (replica 2).

    Stops after the first step where their states differ: from there on the two are
    different accounts, and the act has made its point.
    """
    group = ReplicaGroup([DeterministicAccount(), make_faulty_account(config, 0)], (2,))
    steps = []
    for command in inputs:
        record = group.feed(command)
        steps.append(record)
        if record.vote.verdict is not Verdict.UNANIMOUS:
            break
    return GroupRun(group.replica_count, (2,), tuple(steps))


def run_group(
    config: LessonConfig, inputs: tuple[Command, ...], replica_count: int, faulty_count: int
) -> GroupRun:
    """Acts 2 and 3: feed every input to a group and vote after each one."""
    return build_group(config, replica_count, faulty_count).run(inputs)


@dataclass(frozen=True, slots=True)
class GroupVerdict:
    """What a whole group run amounts to, measured against the planted faults."""

    headline: str
    #: Replica -> first step the vote named it faulty.
    named_at_step: dict[int, int]
    #: Replicas the vote named while their state was correct (they had not skipped yet).
    wrongly_named: tuple[int, ...]
    #: Faulty replicas that skipped an input yet were never named.
    unnamed_faulty: tuple[int, ...]
    no_majority_step: int | None

    @property
    def detected_correctly(self) -> bool:
        """Every fault that happened was named, and nobody healthy was."""
        return not self.wrongly_named and not self.unnamed_faulty and self.no_majority_step is None


def assess_group(run: GroupRun) -> GroupVerdict:
    """Compare what the vote concluded with what was planted, in one honest headline."""
    named_at_step = {
        replica_id: step
        for replica_id in run.named_replica_ids
        if (step := run.first_named_step(replica_id)) is not None
    }
    # Wrongly named: the replica had not skipped anything yet when the vote named it, so
    # its state was the correct one (a replica built faulty can be right until it skips).
    wrongly_named = tuple(
        replica_id
        for replica_id, step in named_at_step.items()
        if (skip_step := run.first_skip_step(replica_id)) is None or skip_step > step
    )
    unnamed_faulty = tuple(
        rid
        for rid in run.faulty_replica_ids
        if run.first_skip_step(rid) is not None and rid not in named_at_step
    )
    no_majority_step = run.first_no_majority_step
    headline = _headline(run, named_at_step, wrongly_named, unnamed_faulty, no_majority_step)
    return GroupVerdict(headline, named_at_step, wrongly_named, unnamed_faulty, no_majority_step)


def _headline(
    run: GroupRun,
    named_at_step: dict[int, int],
    wrongly_named: tuple[int, ...],
    unnamed_faulty: tuple[int, ...],
    no_majority_step: int | None,
) -> str:
    """Tell the run's story in order: who was named, when the majority was lost, and
    whatever the vote missed. Each part is there only if it happened."""
    replica_ids_by_step: dict[int, list[int]] = {}
    for replica_id, step in named_at_step.items():
        replica_ids_by_step.setdefault(step, []).append(replica_id)
    parts = []
    for step, replica_ids in replica_ids_by_step.items():
        part = f"named {_replicas(replica_ids)} faulty at step {step}"
        wrong_ids = [replica_id for replica_id in replica_ids if replica_id in wrongly_named]
        if wrong_ids:
            part += f" (WRONG: {_replicas(wrong_ids)} had the correct state)"
        parts.append(part)
    if no_majority_step is not None:
        split = " vs ".join(
            str(len(tally.replica_ids)) for tally in run.steps[no_majority_step - 1].vote.tallies
        )
        parts.append(
            f"step {no_majority_step}: diverged, cannot tell which replica is right"
            f" (the states split {split}, and no state is held by a majority)"
        )
    elif unnamed_faulty:
        reason = (
            "a lone replica has nobody to compare its state with"
            if run.replica_count == 1
            else "the faulty replicas made the same mistake together"
        )
        parts.append(f"the fault of {_replicas(unnamed_faulty)} went unnoticed: {reason}")
    if wrongly_named:
        return (
            "; then ".join(parts) + ". The faulty replicas were not a minority, made the same"
            " mistake, and outvoted the replica that was right: a majority vote trusts"
            " whoever is in the majority"
        )
    if parts:
        return "; then ".join(parts)
    if run.faulty_replica_ids:
        return (
            f"no divergence in {len(run.steps)} inputs: the faulty replicas never skipped;"
            " try another --seed, more --inputs or a higher --skip-probability"
        )
    return f"no divergence: all {run.replica_count} replicas agreed after every input"


def _replicas(replica_ids: Sequence[int]) -> str:
    """`[3]` -> "replica 3", `[2, 3]` -> "replicas 2, 3"."""
    noun = "replica" if len(replica_ids) == 1 else "replicas"
    return f"{noun} {', '.join(str(replica_id) for replica_id in replica_ids)}"


@dataclass(frozen=True, slots=True)
class LessonResult:
    """The three acts of one lesson run."""

    config: LessonConfig
    inputs: tuple[Command, ...]
    side_by_side: GroupRun
    two_replicas: GroupRun
    majority_groups: tuple[GroupRun, ...]


def run_lesson(config: LessonConfig) -> LessonResult:
    """Run all three acts on one input sequence."""
    inputs = generate_inputs(config.seed, config.inputs)
    return LessonResult(
        config=config,
        inputs=inputs,
        side_by_side=run_side_by_side(config, inputs),
        two_replicas=run_group(config, inputs, replica_count=2, faulty_count=1),
        majority_groups=tuple(
            run_group(config, inputs, size, config.faulty) for size in config.group_sizes
        ),
    )
