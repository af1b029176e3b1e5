"""Prints a `LessonResult` as rich tables a learner can follow step by step.

Printing only: every fact shown comes from the result, so what the tests check is what
the learner reads. Colour repeats what the text says (a diverged row also says
"diverged"), so the lesson still reads well in a pipe or a log without colour.
"""

from __future__ import annotations

from collections.abc import Iterator

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from phalanx.examples.account import Outcome, format_cents
from phalanx.examples.lesson import DEFAULT_GROUP_SIZES, LessonResult, assess_group
from phalanx.examples.replicas import GroupRun, ReplicaStep, StepRecord, Verdict, VoteResult

#: Act 1 shows at most this many agreeing steps before the divergence.
SIDE_BY_SIDE_ROWS_MAX = 40
#: Acts 2 and 3 show this many steps before the first divergence; by then the learner
#: has seen in act 1 what agreeing replicas look like.
LEAD_ROWS = 4
#: Digest characters shown: enough to tell states apart at a glance.
DIGEST_CHARS_SHOWN = 8
#: Colours for the sides of a vote without a majority, one per distinct state.
_SPLIT_STYLES = ("yellow", "magenta", "cyan", "blue", "bright_yellow", "bright_magenta")

_OUTCOME_STYLES = {
    Outcome.APPLIED: "green",
    Outcome.REJECTED_OVERDRAFT: "yellow",
    Outcome.REJECTED_BALANCE_LIMIT: "yellow",
    Outcome.SKIPPED: "bold red",
}

# A gap stands for steps left out of a table: (first step, last step).
Gap = tuple[int, int]


def print_lesson(result: LessonResult, console: Console) -> None:
    """Print the introduction, the three acts and how to run the lesson again."""
    _print_intro(result, console)
    _print_side_by_side(result.side_by_side, console)
    _print_two_replicas(result.two_replicas, console)
    _print_majority_groups(result, console)
    _print_closing(result, console)


def _print_intro(result: LessonResult, console: Console) -> None:
    config = result.config
    text = Text()
    text.append("A bank account is a state machine. We want it to be:\n", style="bold")
    text.append("  definite", style="bold cyan")
    text.append("       one balance and one history at any moment, never two\n")
    text.append("  deterministic", style="bold cyan")
    text.append("  the next state follows from the current state and the input alone\n")
    text.append("  fault-tolerant", style="bold cyan")
    text.append(" copies fed the same inputs outvote a copy that goes wrong\n\n")
    text.append(
        f"seed {config.seed} · {config.inputs} inputs · a faulty account skips an input"
        f" with probability {config.skip_probability:g}"
    )
    console.print(Panel(text, title="Lesson: state machines", expand=False))


def _outcome_text(replica_step: ReplicaStep) -> Text:
    return Text(replica_step.outcome.value, style=_OUTCOME_STYLES[replica_step.outcome])


def _print_side_by_side(run: GroupRun, console: Console) -> None:
    console.rule("[bold]Act 1: a deterministic account and a faulty one, side by side")
    table = Table(show_lines=False, header_style="bold")
    for column in ("step", "input", "deterministic", "balance", "faulty", "balance"):
        table.add_column(column, justify="right" if column in ("step", "balance") else "left")
    table.add_column("same state?")
    hidden_steps = max(0, len(run.steps) - SIDE_BY_SIDE_ROWS_MAX - 1)
    if hidden_steps:
        gap_cells = [""] * 4
        table.add_row(
            "…",
            Text(f"steps 1 to {hidden_steps}", style="dim"),
            *gap_cells,
            Text("yes", style="dim"),
        )
    for record in run.steps[hidden_steps:]:
        deterministic, faulty = record.replicas
        same = deterministic.digest == faulty.digest
        table.add_row(
            str(record.step),
            record.command.describe(),
            _outcome_text(deterministic),
            format_cents(deterministic.balance_cents),
            _outcome_text(faulty),
            format_cents(faulty.balance_cents),
            Text("yes", style="green") if same else Text("NO ◀ diverged", style="bold red"),
            style=None if same else "on grey23",
        )
    console.print(table)
    console.print(_side_by_side_summary(run), soft_wrap=True)


def _side_by_side_summary(run: GroupRun) -> Text:
    diverged_at_step = run.first_divergence_step
    if diverged_at_step is None:
        return Text(
            f"No divergence in {len(run.steps)} inputs: the faulty account never skipped."
            " Try another --seed, more --inputs or a higher --skip-probability.",
            style="yellow",
        )
    record = run.steps[diverged_at_step - 1]
    deterministic, faulty = record.replicas
    text = Text(f"They diverged at step {diverged_at_step}. ", style="bold red")
    text.append(
        f"Same inputs, in the same order, yet the deterministic account holds"
        f" {format_cents(deterministic.balance_cents)} after"
        f" {_transitions(deterministic.applied_count)} and the faulty one"
        f" {format_cents(faulty.balance_cents)} after {_transitions(faulty.applied_count)}:"
        f" it skipped {record.command.describe()}. From here on they are two different"
        " accounts: a machine that is not deterministic cannot be copied."
    )
    return text


def _transitions(count: int) -> str:
    return f"{count} transition" if count == 1 else f"{count} transitions"


def _print_two_replicas(run: GroupRun, console: Console) -> None:
    console.rule("[bold]Act 2: two replicas, one faulty — who is right?")
    console.print(
        "Each replica publishes a digest (a hash) of its state after every input."
        " Equal states give equal digests, so comparing digests finds a divergence.",
        soft_wrap=True,
    )
    _print_group_table(run, console)
    _print_group_verdict(run, console)
    if run.first_divergence_step is not None:
        console.print(
            "Each replica holds a different account, and nothing marks either one as the true one."
            " Two copies detect a fault but cannot locate it.",
            soft_wrap=True,
        )


def _print_majority_groups(result: LessonResult, console: Console) -> None:
    for run in result.majority_groups:
        faulty_count = len(run.faulty_replica_ids)
        console.rule(
            f"[bold]Act 3: {run.replica_count} replicas, {faulty_count} faulty — majority vote"
        )
        if run.replica_count == 1:
            console.print("A group of one: there is nobody to compare with.", style="yellow")
        elif 2 * faulty_count >= run.replica_count:
            console.print(
                f"{faulty_count} of {run.replica_count} replicas are faulty: they are not a"
                " minority, so the vote promises nothing. Watch what it does.",
                style="bold yellow",
                soft_wrap=True,
            )
        _print_group_table(run, console)
        _print_group_verdict(run, console)


def _print_group_verdict(run: GroupRun, console: Console) -> None:
    verdict = assess_group(run)
    if verdict.wrongly_named or verdict.unnamed_faulty:
        style = "bold red"
    elif verdict.no_majority_step is not None:
        style = "bold yellow"
    else:
        style = "bold green"
    console.print(
        Text("Verdict: ", style="bold").append(verdict.headline, style=style), soft_wrap=True
    )
    for replica_id, step in verdict.named_at_step.items():
        skipped_at_step = run.first_skip_step(replica_id)
        if skipped_at_step is not None and replica_id not in verdict.wrongly_named:
            console.print(
                f"  replica {replica_id} skipped its input at step {skipped_at_step};"
                f" the vote named it at step {step}.",
                soft_wrap=True,
            )


def _print_group_table(run: GroupRun, console: Console) -> None:
    table = Table(header_style="bold")
    # Only the vote column may wrap: a wrapped digest or input is hard to follow.
    table.add_column("step", justify="right", no_wrap=True)
    table.add_column("input", no_wrap=True)
    for replica_id in range(1, run.replica_count + 1):
        # The header tells the learner what the vote does not know: who was built faulty.
        faulty_mark = "\n(faulty)" if replica_id in run.faulty_replica_ids else ""
        table.add_column(f"replica {replica_id}{faulty_mark}", no_wrap=True)
    table.add_column("vote")
    for row in _visible_rows(run, LEAD_ROWS):
        if isinstance(row, tuple):
            first_step, last_step = row
            # Every step in a gap reached the same conclusion (a change would be shown).
            gap_vote = _vote_cell(run.steps[last_step - 1].vote)
            gap_vote.stylize("dim")
            gap_cells = [""] * run.replica_count
            table.add_row(
                "…", Text(f"steps {first_step} to {last_step}", style="dim"), *gap_cells, gap_vote
            )
            continue
        cells = [_digest_cell(row, replica_id) for replica_id in range(1, run.replica_count + 1)]
        table.add_row(str(row.step), row.command.describe(), *cells, _vote_cell(row.vote))
    console.print(table)
    console.print(
        Text(
            "Cells show the first characters of each replica's state digest;"
            ' "skipped" marks the planted fault, which the vote itself never sees.',
            style="dim",
        ),
        soft_wrap=True,
    )


def _digest_cell(record: StepRecord, replica_id: int) -> Text:
    replica_step = record.replicas[replica_id - 1]
    text = Text(replica_step.digest[:DIGEST_CHARS_SHOWN], style=_digest_style(record, replica_id))
    if replica_step.outcome is Outcome.SKIPPED:
        text.append(" skipped", style="bold red")
    return text


def _digest_style(record: StepRecord, replica_id: int) -> str:
    vote = record.vote
    if vote.verdict is Verdict.UNANIMOUS:
        return "green"
    if vote.verdict is Verdict.MAJORITY:
        return "bold red" if replica_id in vote.outvoted_replica_ids else "green"
    for index, tally in enumerate(vote.tallies):
        if replica_id in tally.replica_ids:
            return _SPLIT_STYLES[index % len(_SPLIT_STYLES)]
    raise AssertionError(f"replica {replica_id} is missing from the vote {vote}")


def _vote_cell(vote: VoteResult) -> Text:
    replica_count = sum(len(tally.replica_ids) for tally in vote.tallies)
    if vote.verdict is Verdict.UNANIMOUS:
        return Text(Verdict.UNANIMOUS.value, style="green")
    if vote.verdict is Verdict.MAJORITY:
        agreeing = len(vote.tallies[0].replica_ids)
        outvoted = ", ".join(str(replica_id) for replica_id in vote.outvoted_replica_ids)
        noun = "replica" if len(vote.outvoted_replica_ids) == 1 else "replicas"
        return Text(
            f"{noun} {outvoted} faulty ({agreeing} of {replica_count} agree)", style="bold red"
        )
    split = " vs ".join(str(len(tally.replica_ids)) for tally in vote.tallies)
    return Text(f"{Verdict.NO_MAJORITY.value} ({split})", style="bold yellow")


def _visible_rows(run: GroupRun, lead_rows: int) -> Iterator[StepRecord | Gap]:
    """The steps worth a row, with gaps for runs of steps where nothing new happened.

    Shown: a few steps before the first divergence and the divergence itself, every step
    where the vote's conclusion changes, each replica's first planted skip, the last step.
    """
    step_count = len(run.steps)
    if step_count == 0:
        return
    first_divergence_step = run.first_divergence_step
    if first_divergence_step is None:
        shown = set(range(1, min(lead_rows, step_count) + 1))
    else:
        shown = set(range(max(1, first_divergence_step - lead_rows), first_divergence_step + 1))
    shown.add(step_count)
    shown.update(_steps_with_news(run))
    previous_step = 0
    for step in sorted(shown):
        if step == previous_step + 2:
            # A gap row for one step takes as much room as the step itself.
            yield run.steps[step - 2]
        elif step > previous_step + 2:
            yield (previous_step + 1, step - 1)
        yield run.steps[step - 1]
        previous_step = step


def _steps_with_news(run: GroupRun) -> Iterator[int]:
    previous_conclusion: tuple[Verdict, tuple[int, ...]] | None = None
    skipped_before: set[int] = set()
    for record in run.steps:
        conclusion = (record.vote.verdict, record.vote.outvoted_replica_ids)
        if previous_conclusion is not None and conclusion != previous_conclusion:
            yield record.step
        previous_conclusion = conclusion
        for replica_id, replica_step in enumerate(record.replicas, start=1):
            if replica_step.outcome is Outcome.SKIPPED and replica_id not in skipped_before:
                skipped_before.add(replica_id)
                yield record.step


def _print_closing(result: LessonResult, console: Console) -> None:
    config = result.config
    replicas_option = (
        "" if config.group_sizes == DEFAULT_GROUP_SIZES else f" --replicas {config.group_sizes[0]}"
    )
    console.rule("[bold]What to take away")
    console.print(
        "Replicas of a deterministic machine stay equal, so a difference is a fault."
        " Two replicas can only see that they differ; three or more can outvote the odd one"
        " out, as long as the faulty replicas are fewer than half.",
        soft_wrap=True,
    )
    console.print(
        f"Same seed, same run: phalanx learn state-machines --seed {config.seed}"
        f" --inputs {config.inputs}{replicas_option} --faulty {config.faulty}"
        f" --skip-probability {config.skip_probability:g}"
        + ("" if config.faulty > 1 else " (try --faulty 2 to see a vote without a majority)"),
        style="dim",
        soft_wrap=True,
    )
