"""`phalanx learn LESSON`: runnable lessons. Today: `phalanx learn state-machines`.

Each lesson is a sub-subcommand of `learn`, so a new lesson adds one parser here and
leaves the main CLI alone.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console

from phalanx.examples.lesson import (
    DEFAULT_INPUTS,
    DEFAULT_SEED,
    DEFAULT_SKIP_PROBABILITY,
    INPUTS_MAX,
    LessonConfig,
    LessonConfigError,
    run_lesson,
)
from phalanx.examples.lesson_view import print_lesson
from phalanx.examples.replicas import REPLICAS_MAX

#: Width used when the output is not a terminal (a pipe, a file, a test): rich would pick
#: 80 columns and wrap the wide vote tables into something hard to read.
_PIPE_WIDTH_COLUMNS = 120
_STATE_MACHINES_COMMAND = "phalanx learn state-machines"


def register(subparsers: Any) -> None:
    """Add `learn` and its lessons to the `phalanx` command's subparsers.

    `subparsers` is the object `ArgumentParser.add_subparsers()` returns; argparse does not
    export its type, hence `Any`.
    """
    learn_parser: argparse.ArgumentParser = subparsers.add_parser(
        "learn",
        help="runnable lessons on replicated state machines",
        description="Runnable lessons: each one prints a story you can replay with its seed.",
    )
    learn_parser.set_defaults(func=lambda _args: _print_help_and_fail(learn_parser))
    lessons = learn_parser.add_subparsers(dest="lesson", metavar="LESSON")
    _register_state_machines(lessons)


def _print_help_and_fail(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _register_state_machines(lessons: Any) -> None:
    parser: argparse.ArgumentParser = lessons.add_parser(
        "state-machines",
        help="deterministic vs faulty accounts, and a majority vote that finds the fault",
        description=(
            "A deterministic bank account next to one that sometimes skips an input; then"
            " replicas that vote over state digests after every input."
        ),
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"the run's seed (default {DEFAULT_SEED})"
    )
    parser.add_argument(
        "--inputs",
        type=int,
        default=DEFAULT_INPUTS,
        metavar="N",
        help=f"inputs fed to every account, 1 to {INPUTS_MAX} (default {DEFAULT_INPUTS})",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=None,
        metavar="K",
        help=f"replicas in the act-3 group, 1 to {REPLICAS_MAX} (default: 3, then 5)",
    )
    parser.add_argument(
        "--faulty",
        type=int,
        default=1,
        metavar="F",
        help="faulty replicas in the act-3 group, at most --replicas (default 1)",
    )
    parser.add_argument(
        "--skip-probability",
        type=float,
        default=DEFAULT_SKIP_PROBABILITY,
        metavar="P",
        help=f"chance a faulty account skips an input, 0 to 1 (default {DEFAULT_SKIP_PROBABILITY})",
    )
    parser.set_defaults(func=run_state_machines_lesson)


def config_from_args(args: argparse.Namespace) -> LessonConfig:
    """The lesson configuration the options ask for; raises `LessonConfigError`."""
    options: dict[str, Any] = {
        "seed": args.seed,
        "inputs": args.inputs,
        "faulty": args.faulty,
        "skip_probability": args.skip_probability,
    }
    if args.replicas is not None:
        options["group_sizes"] = (args.replicas,)
    return LessonConfig(**options)


def run_state_machines_lesson(args: argparse.Namespace) -> int:
    """Run and print the lesson; exit code 2 (like argparse) for an invalid option."""
    try:
        config = config_from_args(args)
    except LessonConfigError as error:
        print(f"{_STATE_MACHINES_COMMAND}: error: {error}", file=sys.stderr)
        return 2
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=_PIPE_WIDTH_COLUMNS)
    print_lesson(run_lesson(config), console)
    return 0
