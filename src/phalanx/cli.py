"""The `phalanx` command.

Each subcommand lives beside the code it drives: a module listed in `_COMMAND_MODULES`
exposes `register(subparsers)`, which adds its parser and sets `func` on it. `func`
receives the parsed arguments and returns the process exit code.

Every parser is a `CommandParser`, whose help names the default of every flag (see
`help_with_default`), so a module registering a subcommand gets that without asking.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from phalanx import __version__

_COMMAND_MODULES = (
    "phalanx.sim.cli",
    "phalanx.check.cli",
    "phalanx.bench.cli",
    "phalanx.examples.cli",
    "phalanx.server.cli",
    "phalanx.demo",
    "phalanx.chaos.cli",
)


def help_with_default(action: argparse.Action) -> str:
    """The help of `action` as `--help` shows it: an optional flag's help ends with its
    default unless the text already speaks of it (a flag without a default should say
    what leaving it out means, in words containing "default")."""
    text = action.help or ""
    if (
        text == argparse.SUPPRESS
        or not action.option_strings
        or action.required
        or action.default in (None, argparse.SUPPRESS)
        or "default" in text
    ):
        return text
    if isinstance(action.default, bool):
        shown = "on" if action.default else "off"
    else:
        shown = "%(default)s"
    return f"{text} (default: {shown})".lstrip()


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with `help_with_default` applied to every flag (also to a
    flag registered without help, which argparse would otherwise list bare)."""

    def add_argument(self, action: argparse.Action) -> None:
        if action.help != argparse.SUPPRESS:
            action = copy.copy(action)
            action.help = help_with_default(action)
        super().add_argument(action)


class RawDescriptionHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """`HelpFormatter` for a parser whose description is laid out by hand."""


class CommandParser(argparse.ArgumentParser):
    """The parser of `phalanx` and of each subcommand (subparsers inherit the class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="phalanx",
        description="Replicated state machines: Raft, simulation and verification.",
        epilog="Run `phalanx COMMAND --help` for a command's flags and their defaults.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        module = importlib.import_module(module_name)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    code: int = func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
