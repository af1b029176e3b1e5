"""The `phalanx` command.

Each subcommand lives beside the code it drives: a module listed in `_COMMAND_MODULES`
exposes `register(subparsers)`, which adds its parser and sets `func` on it. `func`
receives the parsed arguments and returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

_COMMAND_MODULES = (
    "phalanx.sim.cli",
    "phalanx.check.cli",
    "phalanx.bench.cli",
    "phalanx.examples.cli",
    "phalanx.server.cli",
    "phalanx.demo",
    "phalanx.chaos.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phalanx",
        description="Replicated state machines: Raft, simulation and verification.",
    )
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
