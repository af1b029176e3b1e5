"""Services that ship with phalanx, and the lessons built on them.

Today: a bank account as a deterministic state machine, a faulty twin of it, a replica
group that votes over state digests, and the lesson `phalanx learn state-machines` that
puts them side by side; and `KeyValue` and `Bank`, services for a cluster
(`--service phalanx.examples.kv:KeyValue`, `--service phalanx.examples.bank:Bank`).
Printing lives in `lesson_view`, the command in `cli`; the names below are the library.
"""

from phalanx.examples.account import (
    AccountError,
    AccountState,
    Command,
    Deposit,
    DeterministicAccount,
    FaultyAccount,
    InvalidAmountError,
    Outcome,
    Withdraw,
    state_digest,
    transition,
)
from phalanx.examples.bank import Bank
from phalanx.examples.kv import KeyValue
from phalanx.examples.lesson import (
    GroupVerdict,
    LessonConfig,
    LessonConfigError,
    LessonResult,
    assess_group,
    run_lesson,
)
from phalanx.examples.replicas import GroupRun, ReplicaGroup, Verdict, VoteResult, majority_vote

__all__ = [
    "AccountError",
    "AccountState",
    "Bank",
    "Command",
    "Deposit",
    "DeterministicAccount",
    "FaultyAccount",
    "GroupRun",
    "GroupVerdict",
    "InvalidAmountError",
    "KeyValue",
    "LessonConfig",
    "LessonConfigError",
    "LessonResult",
    "Outcome",
    "ReplicaGroup",
    "Verdict",
    "VoteResult",
    "Withdraw",
    "assess_group",
    "majority_vote",
    "run_lesson",
    "state_digest",
    "transition",
]
