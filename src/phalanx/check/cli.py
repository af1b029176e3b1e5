"""`phalanx check FILE --model M`: is this history linearizable?

Exit codes: 0 linearizable, 1 not linearizable (the report shows the first operation
that cannot be placed and an excerpt around it), 2 unknown (the budget ran out
before an answer), 3 the input could not be used (unreadable file, malformed line,
an operation the model does not know, bad options). argparse's own usage errors
also exit 2, before any checking starts.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Final

import msgspec

from phalanx.check import limits
from phalanx.check.errors import CheckError
from phalanx.check.formats import Format, load_history
from phalanx.check.history import Value, freeze
from phalanx.check.linearizability import Verdict, check_history
from phalanx.check.models import BankModel, CasRegisterModel, KvModel, Model, RegisterModel
from phalanx.check.report import format_result

EXIT_LINEARIZABLE: Final = 0
EXIT_NOT_LINEARIZABLE: Final = 1
EXIT_UNKNOWN: Final = 2
EXIT_BAD_INPUT: Final = 3

MODELS: Final = ("register", "cas-register", "kv", "bank")
_EXIT_CODES: Final = {
    Verdict.LINEARIZABLE: EXIT_LINEARIZABLE,
    Verdict.NOT_LINEARIZABLE: EXIT_NOT_LINEARIZABLE,
    Verdict.UNKNOWN: EXIT_UNKNOWN,
}


def register(subparsers: Any) -> None:
    """Add the `check` subcommand to the `phalanx` command's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check",
        help="check that a recorded history is linearizable",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", help="the history: Jepsen log, EDN lines or JSON lines")
    parser.add_argument(
        "--model", required=True, choices=MODELS, help="the sequential specification"
    )
    parser.add_argument(
        "--format",
        choices=[item.value for item in Format],
        help="the history's format (default: told from its first line)",
    )
    parser.add_argument(
        "--budget-seconds",
        type=float,
        metavar="SECONDS",
        default=limits.search_budget_seconds_default,
        help="give up with 'unknown' after this long (default: %(default)s)",
    )
    parser.add_argument(
        "--initial",
        metavar="JSON",
        help="the state before the history: the register's value (default null), "
        'the value of every unwritten key (default null; "" for EDN histories), '
        'or the bank\'s balances, e.g. {"a": 50, "b": 50} (required for bank)',
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check `args.file`; print the verdict; return the exit code."""
    try:
        if args.budget_seconds < 0:
            raise CheckError("--budget-seconds must not be negative")
        chosen = Format(args.format) if args.format else None
        history, history_format = load_history(args.file, chosen)
        model = build_model(args.model, history_format, args.initial)
        result = check_history(history, model, budget_seconds=args.budget_seconds)
    except CheckError as error:
        print(f"phalanx check: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_result(result, args.file))
    return _EXIT_CODES[result.verdict]


def build_model(name: str, history_format: Format, initial_json: str | None) -> Model:
    """The model called `name`, starting from `initial_json` when given."""
    initial = _initial(initial_json)
    if name == "register":
        return RegisterModel(initial)
    if name == "cas-register":
        return CasRegisterModel(initial)
    if name == "kv":
        if initial_json is None and history_format is Format.EDN:
            # In the EDN key-value histories every key starts as the empty string.
            initial = ""
        return KvModel(absent=initial)
    if name == "bank":
        return BankModel(_balances(initial))
    raise CheckError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def _initial(initial_json: str | None) -> Value:
    if initial_json is None:
        return None
    try:
        return freeze(msgspec.json.decode(initial_json))
    except msgspec.DecodeError as error:
        raise CheckError(f"--initial is not JSON: {error}") from error


def _balances(initial: Value) -> dict[str, int]:
    if not isinstance(initial, frozenset) or not initial:
        raise CheckError('the bank model needs --initial balances, e.g. {"a": 50, "b": 50}')
    balances = dict(initial)
    for account, balance in balances.items():
        if not isinstance(balance, int) or isinstance(balance, bool):
            raise CheckError(f"--initial: balance of {account!r} must be an integer")
    return {str(account): balance for account, balance in balances.items()}
