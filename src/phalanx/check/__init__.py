"""Histories and a linearizability checker; imports nothing else of phalanx.

    from phalanx.check import CasRegisterModel, check_history, read_history

    result = check_history(read_history("history.log"), CasRegisterModel())
    result.verdict  # Verdict.LINEARIZABLE, NOT_LINEARIZABLE or UNKNOWN

See `linearizability` for the algorithm and `docs/checker.md` for the formats.
"""

from phalanx.check.errors import CheckError
from phalanx.check.formats import Format, detect_format, parse_history, read_history
from phalanx.check.history import (
    Event,
    EventType,
    History,
    Operation,
    Outcome,
    build_history,
)
from phalanx.check.linearizability import CheckResult, Failure, Verdict, check_history
from phalanx.check.models import (
    ILLEGAL,
    BankModel,
    CasRegisterModel,
    KvModel,
    Model,
    RegisterModel,
)

__all__ = [
    "ILLEGAL",
    "BankModel",
    "CasRegisterModel",
    "CheckError",
    "CheckResult",
    "Event",
    "EventType",
    "Failure",
    "Format",
    "History",
    "KvModel",
    "Model",
    "Operation",
    "Outcome",
    "RegisterModel",
    "Verdict",
    "build_history",
    "check_history",
    "detect_format",
    "parse_history",
    "read_history",
]
