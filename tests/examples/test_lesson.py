"""The state-machine lesson: the vote, the three acts, and `phalanx learn state-machines`."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import phalanx.cli
from phalanx.examples.account import DeterministicAccount, FaultyAccount, Outcome
from phalanx.examples.lesson import (
    LessonConfig,
    LessonConfigError,
    assess_group,
    generate_inputs,
    make_faulty_account,
    run_group,
    run_lesson,
    run_side_by_side,
)
from phalanx.examples.replicas import ReplicaGroup, Verdict, majority_vote

# --- the vote ---------------------------------------------------------------------------


def test_equal_digests_are_unanimous() -> None:
    vote = majority_vote(["a", "a", "a"])
    assert vote.verdict is Verdict.UNANIMOUS
    assert vote.majority_digest == "a"
    assert vote.outvoted_replica_ids == ()


def test_a_single_replica_always_agrees_with_itself() -> None:
    assert majority_vote(["x"]).verdict is Verdict.UNANIMOUS


def test_the_majority_names_the_odd_one_out() -> None:
    vote = majority_vote(["a", "b", "a"])
    assert vote.verdict is Verdict.MAJORITY
    assert vote.majority_digest == "a"
    assert vote.outvoted_replica_ids == (2,)
    assert [(tally.digest, tally.replica_ids) for tally in vote.tallies] == [
        ("a", (1, 3)),
        ("b", (2,)),
    ]


def test_a_majority_counts_against_the_whole_group() -> None:
    # 2 of 5 is the largest group but not a majority of five.
    vote = majority_vote(["a", "a", "b", "c", "d"])
    assert vote.verdict is Verdict.NO_MAJORITY
    assert vote.outvoted_replica_ids == ()
    # 3 of 5 is, and it names both others.
    assert majority_vote(["a", "b", "a", "c", "a"]).outvoted_replica_ids == (2, 4)


@pytest.mark.parametrize("digests", [["a", "b"], ["a", "b", "b", "a"]])
def test_an_even_split_has_no_majority(digests: list[str]) -> None:
    vote = majority_vote(digests)
    assert vote.verdict is Verdict.NO_MAJORITY
    assert vote.verdict.value == "diverged, cannot tell which"
    assert vote.majority_digest is None


# --- the acts ---------------------------------------------------------------------------


def _first_skip_of_faulty_account(config: LessonConfig, faulty_ordinal: int = 0) -> int | None:
    """Ground truth computed apart from the replica group: when the account first skips."""
    account = make_faulty_account(config, faulty_ordinal)
    for step, command in enumerate(generate_inputs(config.seed, config.inputs), start=1):
        if account.apply(command) is Outcome.SKIPPED:
            return step
    return None


def test_same_seed_gives_the_same_run() -> None:
    config = LessonConfig(seed=11, inputs=60, faulty=2)
    assert run_lesson(config) == run_lesson(config)


def test_another_seed_gives_other_inputs() -> None:
    assert generate_inputs(1, 30) != generate_inputs(2, 30)


def test_inputs_include_rejected_withdrawals() -> None:
    account = DeterministicAccount()
    outcomes = {account.apply(command) for command in generate_inputs(3, 100)}
    assert outcomes == {Outcome.APPLIED, Outcome.REJECTED_OVERDRAFT}


def test_side_by_side_diverges_at_the_first_skip_and_stops_there() -> None:
    config = LessonConfig(seed=3, inputs=24)
    run = run_side_by_side(config, generate_inputs(config.seed, config.inputs))
    assert run.first_divergence_step == 10
    assert _first_skip_of_faulty_account(config) == 10
    assert len(run.steps) == 10
    deterministic, faulty = run.steps[-1].replicas
    assert deterministic.outcome is Outcome.APPLIED
    assert faulty.outcome is Outcome.SKIPPED
    assert deterministic.balance_cents != faulty.balance_cents
    assert all(record.vote.verdict is Verdict.UNANIMOUS for record in run.steps[:-1])


@pytest.mark.parametrize("seed", range(20))
def test_side_by_side_reports_the_divergence_step_for_any_seed(seed: int) -> None:
    config = LessonConfig(seed=seed, inputs=80)
    run = run_side_by_side(config, generate_inputs(seed, config.inputs))
    assert run.first_divergence_step == _first_skip_of_faulty_account(config)


def test_side_by_side_without_a_skip_runs_to_the_end() -> None:
    config = LessonConfig(seed=3, inputs=50, skip_probability=0.0)
    run = run_side_by_side(config, generate_inputs(config.seed, config.inputs))
    assert run.first_divergence_step is None
    assert len(run.steps) == 50


def test_two_replicas_detect_the_divergence_but_cannot_tell_which() -> None:
    config = LessonConfig(seed=3, inputs=24)
    run = run_lesson(config).two_replicas
    assert run.replica_count == 2
    assert run.first_divergence_step == 10
    assert run.first_no_majority_step == 10
    assert run.named_replica_ids == ()
    verdict = assess_group(run)
    assert "diverged, cannot tell which" in verdict.headline
    assert verdict.named_at_step == {}
    assert not verdict.detected_correctly


@pytest.mark.parametrize("replica_count", [3, 5])
@pytest.mark.parametrize("seed", range(25))
def test_one_faulty_replica_is_named_at_its_first_skip(replica_count: int, seed: int) -> None:
    config = LessonConfig(seed=seed, inputs=60, group_sizes=(replica_count,))
    run = run_group(config, generate_inputs(seed, 60), replica_count, faulty_count=1)
    (faulty_id,) = run.faulty_replica_ids
    skip_step = _first_skip_of_faulty_account(config)
    assert skip_step is not None, "pick seeds whose faulty account skips within 60 inputs"
    assert run.first_divergence_step == skip_step
    verdict = assess_group(run)
    assert verdict.named_at_step == {faulty_id: skip_step}
    assert verdict.detected_correctly
    assert verdict.headline == f"named replica {faulty_id} faulty at step {skip_step}"
    # From its fault on, the vote names it after every input, with everyone else agreeing.
    for record in run.steps[skip_step - 1 :]:
        assert record.vote.outvoted_replica_ids == (faulty_id,)
        assert len(record.vote.tallies[0].replica_ids) == replica_count - 1


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    replica_count=st.sampled_from([3, 4, 5, 7, 9]),
)
def test_a_lone_faulty_replica_is_always_named_first_at_its_skip(
    seed: int, replica_count: int
) -> None:
    config = LessonConfig(seed=seed, inputs=40, group_sizes=(replica_count,), skip_probability=0.2)
    run = run_group(config, generate_inputs(seed, 40), replica_count, faulty_count=1)
    (faulty_id,) = run.faulty_replica_ids
    skip_step = _first_skip_of_faulty_account(config)
    expected = {} if skip_step is None else {faulty_id: skip_step}
    assert assess_group(run).named_at_step == expected


@pytest.mark.parametrize("replica_count", [1, 2, 3, 5, 9])
def test_no_false_alarm_with_only_deterministic_replicas(replica_count: int) -> None:
    config = LessonConfig(seed=99, inputs=3000, group_sizes=(replica_count,), faulty=0)
    run = run_group(config, generate_inputs(config.seed, config.inputs), replica_count, 0)
    assert all(record.vote.verdict is Verdict.UNANIMOUS for record in run.steps)
    verdict = assess_group(run)
    assert verdict.detected_correctly
    assert verdict.headline == (
        f"no divergence: all {replica_count} replicas agreed after every input"
    )


def test_faulty_replicas_that_are_not_a_minority_leave_no_majority() -> None:
    config = LessonConfig(seed=3, inputs=30, group_sizes=(3,), faulty=2)
    run = run_group(config, generate_inputs(config.seed, config.inputs), 3, 2)
    verdict = assess_group(run)
    assert verdict.no_majority_step == 13
    assert "step 13: diverged, cannot tell which" in verdict.headline
    assert not verdict.detected_correctly


def test_faulty_replicas_that_fail_alike_outvote_the_right_one() -> None:
    # Two faulty replicas with the same fault schedule make the same mistake together.
    def twin() -> FaultyAccount:
        return FaultyAccount(random.Random("twin"), skip_probability=0.3)

    group = ReplicaGroup([twin(), DeterministicAccount(), twin()], faulty_replica_ids=(1, 3))
    run = group.run(generate_inputs(5, 40))
    verdict = assess_group(run)
    assert verdict.wrongly_named == (2,)
    assert "WRONG: replica 2 had the correct state" in verdict.headline
    assert "not a minority" in verdict.headline


def test_a_lone_faulty_replica_goes_unnoticed() -> None:
    config = LessonConfig(seed=3, inputs=24, group_sizes=(1,))
    run = run_group(config, generate_inputs(config.seed, config.inputs), 1, 1)
    verdict = assess_group(run)
    assert run.first_skip_step(1) == 10
    assert verdict.unnamed_faulty == (1,)
    assert "went unnoticed: a lone replica has nobody to compare its state with" in (
        verdict.headline
    )


def test_the_same_fault_shows_in_every_act() -> None:
    result = run_lesson(LessonConfig(seed=3, inputs=24))
    assert result.side_by_side.first_divergence_step == 10
    assert result.two_replicas.first_divergence_step == 10
    assert [run.replica_count for run in result.majority_groups] == [3, 5]
    for run in result.majority_groups:
        (faulty_id,) = run.faulty_replica_ids
        assert run.first_named_step(faulty_id) == 10


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"inputs": 0}, "--inputs: must be between 1 and 10000, got 0"),
        ({"group_sizes": (0,)}, "--replicas: must be between 1 and 9, got 0"),
        ({"group_sizes": (10,)}, "--replicas: must be between 1 and 9, got 10"),
        ({"faulty": -1}, "--faulty: must be 0 or more, got -1"),
        ({"faulty": 4}, "--faulty: 4 faulty replicas do not fit in a group of 3"),
        ({"skip_probability": 1.5}, "--skip-probability: must be between 0 and 1, got 1.5"),
    ],
)
def test_invalid_configs_are_rejected_with_the_option_named(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(LessonConfigError) as raised:
        LessonConfig(**options)  # type: ignore[arg-type]
    assert str(raised.value).startswith(message)


# --- the command ------------------------------------------------------------------------


@pytest.fixture
def phalanx_main() -> Callable[[Sequence[str]], int]:
    """The real `phalanx` command entry point."""
    return phalanx.cli.main


def test_cli_runs_the_lesson_and_prints_the_verdicts(
    phalanx_main: Callable[[Sequence[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = phalanx_main(["learn", "state-machines", "--seed", "7", "--inputs", "30"])
    out = capsys.readouterr().out
    assert exit_code == 0
    expected = run_lesson(LessonConfig(seed=7, inputs=30))
    skip_step = expected.side_by_side.first_divergence_step
    assert skip_step == 8
    assert f"They diverged at step {skip_step}." in out
    assert f"Verdict: step {skip_step}: diverged, cannot tell which replica is right" in out
    for run in expected.majority_groups:
        (faulty_id,) = run.faulty_replica_ids
        assert f"Verdict: named replica {faulty_id} faulty at step {skip_step}" in out
    assert "Act 3: 5 replicas, 1 faulty" in out
    # Not a terminal: no colour codes, just text a learner (or a log) can read.
    assert "\x1b[" not in out


def test_cli_honours_replicas_and_faulty(
    phalanx_main: Callable[[Sequence[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["learn", "state-machines", "--seed", "3", "--replicas", "3", "--faulty", "2"]
    assert phalanx_main([*argv, "--inputs", "30"]) == 0
    out = capsys.readouterr().out
    assert "Act 3: 3 replicas, 2 faulty" in out
    assert "they are not a minority" in out
    assert "step 13: diverged, cannot tell which replica is right" in out
    assert "Act 3: 5 replicas" not in out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--replicas", "0"], "--replicas: must be between 1 and 9, got 0"),
        (["--replicas", "3", "--faulty", "4"], "--faulty: 4 faulty replicas do not fit"),
        (["--faulty", "4"], "--faulty: 4 faulty replicas do not fit in a group of 3"),
        (["--inputs", "0"], "--inputs: must be between 1 and 10000"),
        (["--skip-probability", "-1"], "--skip-probability: must be between 0 and 1"),
    ],
)
def test_cli_rejects_invalid_options_with_exit_code_2(
    phalanx_main: Callable[[Sequence[str]], int],
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    message: str,
) -> None:
    assert phalanx_main(["learn", "state-machines", *options]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"phalanx learn state-machines: error: {message}")


def test_cli_learn_without_a_lesson_lists_the_lessons(
    phalanx_main: Callable[[Sequence[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert phalanx_main(["learn"]) == 2
    assert "state-machines" in capsys.readouterr().out
