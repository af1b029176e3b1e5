"""The sequential specifications, one transition at a time."""

from __future__ import annotations

import pytest

from phalanx.check import (
    ILLEGAL,
    BankModel,
    CasRegisterModel,
    Event,
    EventType,
    KvModel,
    Operation,
    Outcome,
    RegisterModel,
)
from phalanx.check.history import Value, freeze


def op(
    f: str,
    argument: object = None,
    result: object = None,
    *,
    outcome: Outcome = Outcome.OK,
    key: Value = None,
    refused: bool = False,
) -> Operation:
    invoke = Event(1, EventType.INVOKE, f, key, freeze(argument), 1, "")
    return Operation(
        id=0,
        process=1,
        f=f,
        key=key,
        argument=freeze(argument),
        result=freeze(result),
        outcome=outcome,
        call=0,
        ret=None if outcome is Outcome.INFO else 1,
        invoke=invoke,
        completion=None,
        refused=refused,
    )


def test_register_read_and_write() -> None:
    model = RegisterModel()
    assert model.initial_state() is None
    assert model.transition(op("write", 3))(None) == 3
    assert model.transition(op("read", result=3))(3) == 3
    assert model.transition(op("read", result=3))(4) is ILLEGAL
    assert model.transition(op("read", result=None))(None) is None
    assert RegisterModel(initial=5).initial_state() == 5
    assert not model.has_effect(op("read")) and model.has_effect(op("write", 1))
    with pytest.raises(ValueError, match="model register has no operation 'cas'"):
        model.transition(op("cas", [1, 2]))


def test_cas_register_swapped_refused_and_unknown() -> None:
    model = CasRegisterModel()
    swapped = model.transition(op("cas", [1, 2]))
    assert swapped(1) == 2
    assert swapped(3) is ILLEGAL
    # Jepsen's `:fail :cas`: it ran and found a value other than the expected one.
    refused = model.transition(op("cas", [1, 2], refused=True))
    assert refused(3) == 3
    assert refused(1) is ILLEGAL
    # Unknown outcome: acts as it would have, never illegal.
    unknown = model.transition(op("cas", [1, 2], outcome=Outcome.INFO))
    assert unknown(1) == 2
    assert unknown(3) == 3
    with pytest.raises(ValueError, match=r"cas needs \[expected new\]"):
        model.transition(op("cas", 7))


def test_kv_per_key_operations() -> None:
    model = KvModel()
    assert model.initial_state() is None
    assert model.partition_key(op("get", key="a")) == "a"
    assert model.transition(op("put", "v", key="a"))(None) == "v"
    assert model.transition(op("append", "x", key="a"))(None) == "x"
    assert model.transition(op("append", "y", key="a"))("x") == "xy"
    assert model.transition(op("append", "y", key="a"))(5) is ILLEGAL
    assert model.transition(op("get", result="xy", key="a"))("xy") == "xy"
    assert model.transition(op("get", result="xy", key="a"))("x") is ILLEGAL
    assert model.transition(op("get", result=None, key="a"))(None) is None
    assert model.transition(op("delete", key="a"))("xy") is None
    assert model.transition(op("cas", ["xy", "z"], key="a"))("xy") == "z"
    assert model.transition(op("cas", ["xy", "z"], key="a"))("q") is ILLEGAL
    assert model.transition(op("read", result=1, key="a"))(1) == 1  # alias of get
    assert model.transition(op("write", 1, key="a"))(None) == 1  # alias of put
    with pytest.raises(ValueError, match="append needs a string"):
        model.transition(op("append", 3, key="a"))
    with pytest.raises(ValueError, match="model kv has no operation 'incr'"):
        model.transition(op("incr", 1, key="a"))


def test_kv_keys_start_empty_in_edn_histories() -> None:
    model = KvModel(absent="")
    assert model.initial_state() == ""
    assert model.transition(op("get", result="", key="k"))("") == ""
    assert model.transition(op("append", "x", key="k"))("") == "x"


def test_kv_whole_map_state() -> None:
    model = KvModel(per_key=False)
    state = model.initial_state()
    assert state == frozenset()
    assert model.partition_key(op("get", key="a")) is None
    state = model.transition(op("put", "1", key="a"))(state)
    state = model.transition(op("append", "2", key="b"))(state)
    assert state == frozenset({("a", "1"), ("b", "2")})
    assert model.transition(op("get", result="1", key="a"))(state) == state
    assert model.transition(op("get", result="2", key="a"))(state) is ILLEGAL
    state = model.transition(op("delete", key="a"))(state)
    assert state == frozenset({("b", "2")})
    # A deleted key and a never-written one are the same state.
    assert model.transition(op("delete", key="z"))(state) == state


def bank() -> BankModel:
    return BankModel({"a": 10, "b": 5})


def test_bank_transfers_and_reads() -> None:
    model = bank()
    state = model.initial_state()
    assert state == (10, 5) and model.total == 15
    transfer = model.transition(op("transfer", {"from": "a", "to": "b", "amount": 4}))
    state = transfer(state)
    assert state == (6, 9)
    assert model.transition(op("read", result={"a": 6, "b": 9}))(state) == state
    assert model.transition(op("read", result={"a": 10, "b": 5}))(state) is ILLEGAL
    # An acknowledged transfer cannot overdraw; an unknown one was refused by the bank.
    big = {"from": "b", "to": "a", "amount": 100}
    assert model.transition(op("transfer", big))(state) is ILLEGAL
    assert model.transition(op("transfer", big, outcome=Outcome.INFO))(state) == state
    assert model.transition(op("transfer", ["b", "a", 9]))(state) == (15, 0)


def test_bank_read_invariants_and_bad_operations() -> None:
    model = bank()
    assert model.violation(op("read", result={"a": 10, "b": 5})) is None
    assert model.violation(op("read", result={"a": 16, "b": -1})) == (
        "read shows account 'b' at -1, below zero"
    )
    assert model.violation(op("read", result={"a": 10, "b": 6})) == (
        "read shows balances summing to 16, expected 15"
    )
    assert model.violation(op("transfer", ["a", "b", 1])) is None
    with pytest.raises(ValueError, match="exactly the accounts"):
        model.violation(op("read", result={"a": 15}))
    with pytest.raises(ValueError, match="unknown accounts"):
        model.transition(op("transfer", ["a", "zz", 1]))
    with pytest.raises(ValueError, match="whole number"):
        model.transition(op("transfer", ["a", "b", -1]))
    with pytest.raises(ValueError, match="model bank has no operation 'write'"):
        model.transition(op("write", 1))
