"""The linearizability search on small hand-made histories.

Each classic anomaly gets a history that shows it (Herlihy & Wing 1990 define the
condition; Wing & Gong 1993 and Lowe 2017 the search): stale read, lost write,
duplicated write, read of a value never written; plus the meaning of `info` (may
take effect later, or never) and `fail` (never took effect).
"""

from __future__ import annotations

import json

from phalanx.check import (
    BankModel,
    CasRegisterModel,
    Format,
    History,
    KvModel,
    Model,
    RegisterModel,
    Verdict,
    check_history,
    parse_history,
)
from phalanx.check.report import format_result

Step = tuple[object, ...]


def history(*steps: Step) -> History:
    """Events as (type, process, f, value) or (type, process, f, value, key)."""
    lines = []
    for step in steps:
        kind, process, f, value, *key = step
        event = {"process": process, "type": kind, "f": f, "value": value}
        if key:
            event["key"] = key[0]
        lines.append(json.dumps(event))
    return parse_history("\n".join(lines), "hand-made.jsonl", Format.JSONL)


def verdict(model: Model, *steps: Step) -> Verdict:
    return check_history(history(*steps), model).verdict


LINEARIZABLE = Verdict.LINEARIZABLE
NOT = Verdict.NOT_LINEARIZABLE


def test_empty_and_sequential_histories_are_linearizable() -> None:
    assert verdict(RegisterModel()) is LINEARIZABLE
    assert (
        verdict(
            RegisterModel(),
            ("invoke", 1, "write", 1),
            ("ok", 1, "write", 1),
            ("invoke", 1, "read", None),
            ("ok", 1, "read", 1),
        )
        is LINEARIZABLE
    )


def test_stale_read_is_caught_and_reported() -> None:
    steps = (
        ("invoke", 1, "write", 1),
        ("ok", 1, "write", 1),
        ("invoke", 1, "write", 2),
        ("ok", 1, "write", 2),
        ("invoke", 2, "read", None),
        ("ok", 2, "read", 1),
    )
    result = check_history(history(*steps), RegisterModel())
    assert result.verdict is NOT
    assert result.failure is not None
    stale = result.failure.operation
    assert (stale.f, stale.result, stale.invoke.line) == ("read", 1, 5)
    assert result.failure.states == ("2",)
    assert stale in result.failure.excerpt
    report = format_result(result, "hand-made.jsonl")
    assert "not linearizable" in report and "process 2 read -> 1, lines 5-6" in report
    assert "> 6  " in report


def test_concurrent_read_may_see_either_value() -> None:
    for seen in (None, 1):
        assert (
            verdict(
                RegisterModel(),
                ("invoke", 1, "write", 1),
                ("invoke", 2, "read", None),
                ("ok", 2, "read", seen),
                ("ok", 1, "write", 1),
            )
            is LINEARIZABLE
        )


def test_real_time_order_binds_non_overlapping_operations() -> None:
    # Reads that do not overlap cannot see the writes in the opposite order.
    assert (
        verdict(
            RegisterModel(),
            ("invoke", 1, "write", 1),
            ("invoke", 2, "write", 2),
            ("ok", 1, "write", 1),
            ("ok", 2, "write", 2),
            ("invoke", 3, "read", None),
            ("ok", 3, "read", 2),
            ("invoke", 3, "read", None),
            ("ok", 3, "read", 1),
        )
        is NOT
    )


def test_read_of_a_value_never_written() -> None:
    assert verdict(RegisterModel(), ("invoke", 1, "read", None), ("ok", 1, "read", 9)) is NOT


def test_lost_write() -> None:
    steps = (
        ("invoke", 1, "append", "x", "k"),
        ("ok", 1, "append", "x", "k"),
        ("invoke", 2, "append", "y", "k"),
        ("ok", 2, "append", "y", "k"),
        ("invoke", 3, "get", None, "k"),
        ("ok", 3, "get", "y", "k"),
    )
    assert verdict(KvModel(), *steps) is NOT


def test_duplicated_write() -> None:
    steps = (
        ("invoke", 1, "append", "x", "k"),
        ("ok", 1, "append", "x", "k"),
        ("invoke", 3, "get", None, "k"),
        ("ok", 3, "get", "xx", "k"),
    )
    assert verdict(KvModel(), *steps) is NOT


def test_info_write_may_take_effect_late() -> None:
    timed_out = (("invoke", 1, "write", 1), ("info", 1, "write", 1))
    read_none = (("invoke", 2, "read", None), ("ok", 2, "read", None))
    read_one = (("invoke", 2, "read", None), ("ok", 2, "read", 1))
    assert verdict(RegisterModel(), *timed_out, *read_none, *read_one) is LINEARIZABLE
    # ... or never.
    assert verdict(RegisterModel(), *timed_out, *read_none, *read_none) is LINEARIZABLE
    # ... but only once, and only after it was invoked.
    assert verdict(RegisterModel(), *timed_out, *read_one, *read_none) is NOT
    assert verdict(RegisterModel(), *read_one, *timed_out) is NOT


def test_unfinished_invocation_counts_as_info() -> None:
    assert (
        verdict(
            RegisterModel(),
            ("invoke", 1, "write", 1),
            ("invoke", 2, "read", None),
            ("ok", 2, "read", 1),
        )
        is LINEARIZABLE
    )


def test_failed_write_never_took_effect() -> None:
    assert (
        verdict(
            RegisterModel(),
            ("invoke", 1, "write", 1),
            ("fail", 1, "write", 1),
            ("invoke", 2, "read", None),
            ("ok", 2, "read", 1),
        )
        is NOT
    )


def test_refused_cas_from_a_jepsen_log() -> None:
    log = "1 :invoke :write 1\n1 :ok :write 1\n2 :invoke :cas [1 2]\n2 :fail :cas [1 2]\n"
    # The cas ran and found a value other than 1, but the register held 1.
    result = check_history(parse_history(log, "etcd.log"), CasRegisterModel())
    assert result.verdict is NOT
    fine = log.replace("[1 2]", "[3 2]")
    assert check_history(parse_history(fine, "etcd.log"), CasRegisterModel()).verdict is (
        LINEARIZABLE
    )


def test_cas_chain_with_unknown_cas() -> None:
    steps = (
        ("invoke", 1, "write", 0),
        ("ok", 1, "write", 0),
        ("invoke", 2, "cas", [0, 5]),
        ("info", 2, "cas", [0, 5]),
        ("invoke", 3, "cas", [5, 6]),
        ("ok", 3, "cas", [5, 6]),
        ("invoke", 4, "read", None),
        ("ok", 4, "read", 6),
    )
    assert verdict(CasRegisterModel(), *steps) is LINEARIZABLE


def test_keys_are_checked_apart() -> None:
    steps = (
        ("invoke", 1, "put", "1", "a"),
        ("ok", 1, "put", "1", "a"),
        ("invoke", 2, "put", "2", "b"),
        ("ok", 2, "put", "2", "b"),
        ("invoke", 3, "get", None, "a"),
        ("ok", 3, "get", "1", "a"),
        ("invoke", 3, "get", None, "b"),
        ("ok", 3, "get", "1", "b"),
    )
    result = check_history(history(*steps), KvModel())
    assert result.verdict is NOT and result.partitions == 2
    assert result.failure is not None and result.failure.operation.key == "b"
    whole = check_history(history(*steps), KvModel(per_key=False))
    assert whole.verdict is NOT and whole.partitions == 1


def transfer(process: int, kind: str, source: str, target: str, amount: int) -> Step:
    return (kind, process, "transfer", {"from": source, "to": target, "amount": amount})


def read_bank(process: int, kind: str, a: int | None = None, b: int | None = None) -> Step:
    return (kind, process, "read", None if a is None else {"a": a, "b": b})


def test_bank_history() -> None:
    model = BankModel({"a": 10, "b": 10})
    moved = (transfer(1, "invoke", "a", "b", 3), transfer(1, "ok", "a", "b", 3))
    assert verdict(model, *moved, read_bank(2, "invoke"), read_bank(2, "ok", 7, 13)) is LINEARIZABLE
    # The right total, but a state the bank never was in.
    assert verdict(model, *moved, read_bank(2, "invoke"), read_bank(2, "ok", 10, 10)) is NOT
    # Money created: caught by the invariant before any search.
    result = check_history(
        history(*moved, read_bank(2, "invoke"), read_bank(2, "ok", 7, 14)), model
    )
    assert result.verdict is NOT and result.failure is not None
    assert result.failure.reason == "read shows balances summing to 21, expected 20"
    # An acknowledged overdraft.
    overdraft = (transfer(1, "invoke", "a", "b", 11), transfer(1, "ok", "a", "b", 11))
    assert verdict(model, *overdraft) is NOT


def contended_writes(writers: int) -> History:
    """Many overlapping writes and a read of a value none of them wrote: only an
    exhaustive search can say no, and it has 2**writers sets to go through."""
    steps: list[Step] = [("invoke", p, "write", p) for p in range(writers)]
    steps += [("ok", p, "write", p) for p in range(writers)]
    steps += [("invoke", writers, "read", None), ("ok", writers, "read", -1)]
    return history(*steps)


def test_budget_gives_unknown_never_a_guess() -> None:
    hard = contended_writes(18)
    result = check_history(hard, RegisterModel(), budget_seconds=0.0)
    assert result.verdict is Verdict.UNKNOWN
    assert result.reason == "the time budget ran out"
    assert check_history(hard, RegisterModel(), steps_max=10_000).reason == (
        "the step budget ran out"
    )
    by_cache = check_history(hard, RegisterModel(), cache_bytes_max=100_000)
    assert by_cache.verdict is Verdict.UNKNOWN and "memory passed" in by_cache.reason
    assert "search stopped before an answer" in format_result(result, "x")
    small = contended_writes(6)
    assert check_history(small, RegisterModel()).verdict is NOT


def test_true_is_not_one() -> None:
    wrote_true = (("invoke", 1, "write", True), ("ok", 1, "write", True))
    assert verdict(
        RegisterModel(), *wrote_true, ("invoke", 2, "read", None), ("ok", 2, "read", 1)
    ) is (NOT)
    assert (
        verdict(RegisterModel(), *wrote_true, ("invoke", 2, "read", None), ("ok", 2, "read", True))
        is LINEARIZABLE
    )
