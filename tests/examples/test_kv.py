"""The key-value service: its exact commands and replies, its limits, and its determinism."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.examples import KeyValue
from phalanx.examples.kv import KEY_BYTES_MAX, KEYS_MAX, VALUE_BYTES_MAX, VALUE_DEPTH_MAX
from phalanx.service import Service


def _error_code(reply: Any) -> str:
    """The code of an error reply, after checking it has the conventional shape."""
    assert isinstance(reply, dict)
    assert set(reply) == {"ok", "error", "message"}
    assert reply["ok"] is False
    assert isinstance(reply["message"], str)
    assert reply["message"]
    code = reply["error"]
    assert isinstance(code, str)
    return code


def _filled_store() -> KeyValue:
    store = KeyValue()
    store.apply({"op": "put", "key": "text", "value": "abc"})
    store.apply({"op": "put", "key": "number", "value": 7})
    store.apply({"op": "put", "key": "nested", "value": {"list": [1, 2.5, None, b"\x00"]}})
    return store


# --- the commands, reply for reply --------------------------------------------------------


def test_key_value_is_a_service() -> None:
    assert isinstance(KeyValue(), Service)


def test_put_then_get_returns_the_value() -> None:
    store = KeyValue()
    assert store.apply({"op": "put", "key": "x", "value": "1"}) == {"ok": True}
    assert store.apply({"op": "get", "key": "x"}) == {"value": "1"}
    assert store.state() == {"x": "1"}


def test_get_of_an_absent_key_is_none() -> None:
    assert KeyValue().apply({"op": "get", "key": "missing"}) == {"value": None}


def test_put_overwrites_and_keeps_plain_data_as_given() -> None:
    store = KeyValue()
    value = {"a": [1, 2.5, True, None, "s", b"raw", {"deep": []}], "b": -(2**63)}
    store.apply({"op": "put", "key": "k", "value": 1})
    assert store.apply({"op": "put", "key": "k", "value": value}) == {"ok": True}
    assert store.apply({"op": "get", "key": "k"}) == {"value": value}


def test_put_keeps_a_private_copy_of_the_value() -> None:
    # A caller mutating its own object later must not reach into the replicated state.
    store = KeyValue()
    value: dict[str, Any] = {"items": [1]}
    store.apply({"op": "put", "key": "k", "value": value})
    value["items"].append(2)
    assert store.state() == {"k": {"items": [1]}}


def test_cas_that_matches_stores_the_new_value() -> None:
    store = _filled_store()
    reply = store.apply({"op": "cas", "key": "number", "expected": 7, "new": 8})
    assert reply == {"ok": True, "value": 8}
    assert store.apply({"op": "get", "key": "number"}) == {"value": 8}


def test_cas_that_does_not_match_returns_the_current_value_and_changes_nothing() -> None:
    store = _filled_store()
    before = store.state()
    reply = store.apply({"op": "cas", "key": "number", "expected": 6, "new": 8})
    assert reply == {"ok": False, "value": 7}
    assert store.state() == before


def test_cas_on_an_absent_key_compares_against_none() -> None:
    store = KeyValue()
    assert store.apply({"op": "cas", "key": "k", "expected": 1, "new": 2}) == {
        "ok": False,
        "value": None,
    }
    assert store.state() == {}
    assert store.apply({"op": "cas", "key": "k", "expected": None, "new": 2}) == {
        "ok": True,
        "value": 2,
    }
    assert store.state() == {"k": 2}


@pytest.mark.parametrize(
    ("stored", "expected"),
    [(True, 1), (1, True), (1, 1.0), (1.0, 1), (0, False), ([1], [True]), ({"a": 1}, {"a": 1.0})],
)
def test_cas_compares_types_strictly(stored: Any, expected: Any) -> None:
    store = KeyValue()
    store.apply({"op": "put", "key": "k", "value": stored})
    reply = store.apply({"op": "cas", "key": "k", "expected": expected, "new": "changed"})
    assert reply == {"ok": False, "value": stored}


def test_cas_ignores_dict_key_order() -> None:
    store = KeyValue()
    store.apply({"op": "put", "key": "k", "value": {"a": 1, "b": [2]}})
    reply = store.apply({"op": "cas", "key": "k", "expected": {"b": [2], "a": 1}, "new": 0})
    assert reply == {"ok": True, "value": 0}


def test_append_extends_a_string() -> None:
    store = _filled_store()
    assert store.apply({"op": "append", "key": "text", "value": "de"}) == {
        "ok": True,
        "value": "abcde",
    }
    assert store.apply({"op": "get", "key": "text"}) == {"value": "abcde"}


def test_append_to_an_absent_key_starts_from_empty() -> None:
    store = KeyValue()
    assert store.apply({"op": "append", "key": "k", "value": "x"}) == {"ok": True, "value": "x"}
    assert store.apply({"op": "append", "key": "k", "value": ""}) == {"ok": True, "value": "x"}


def test_delete_reports_whether_the_key_existed() -> None:
    store = _filled_store()
    assert store.apply({"op": "delete", "key": "text"}) == {"ok": True}
    assert store.apply({"op": "delete", "key": "text"}) == {"ok": False}
    assert store.apply({"op": "get", "key": "text"}) == {"value": None}
    assert "text" not in store.state()


def test_state_is_sorted_by_key() -> None:
    store = KeyValue()
    for key in ["b", "c", "a"]:
        store.apply({"op": "put", "key": key, "value": key})
    assert list(store.state()) == ["a", "b", "c"]


def test_the_docstring_documents_every_command() -> None:
    doc = KeyValue.__doc__ or ""
    for op in ["put", "get", "cas", "append", "delete"]:
        assert f'"op": "{op}"' in doc


# --- every error path leaves the state unchanged -------------------------------------------

# VALUE_DEPTH_MAX + 1 lists, each inside the one before.
_DEEP: list[Any] = []
for _ in range(VALUE_DEPTH_MAX):
    _DEEP = [_DEEP]

_BAD_COMMANDS: list[tuple[str, Any, str]] = [
    ("not a dict", ["put", "k", 1], "bad_command"),
    ("None", None, "bad_command"),
    ("a string", "get k", "bad_command"),
    ("no op", {"key": "k"}, "bad_command"),
    ("unknown op", {"op": "increment", "key": "k"}, "unknown_op"),
    ("op not a string", {"op": 1, "key": "k"}, "unknown_op"),
    ("op unhashable", {"op": ["put"], "key": "k"}, "unknown_op"),
    ("put without value", {"op": "put", "key": "k"}, "bad_argument"),
    ("get without key", {"op": "get"}, "bad_argument"),
    ("cas without new", {"op": "cas", "key": "k", "expected": None}, "bad_argument"),
    ("extra field", {"op": "get", "key": "k", "vlaue": 1}, "bad_argument"),
    ("extra non-str field", {"op": "delete", "key": "k", 1: 2}, "bad_argument"),
    ("key not a string", {"op": "put", "key": 1, "value": 1}, "bad_argument"),
    ("key bytes", {"op": "get", "key": b"k"}, "bad_argument"),
    ("key lone surrogate", {"op": "get", "key": "\ud800"}, "bad_argument"),
    ("key too long", {"op": "put", "key": "k" * (KEY_BYTES_MAX + 1), "value": 1}, "too_large"),
    ("key too long in UTF-8", {"op": "get", "key": "é" * (KEY_BYTES_MAX // 2 + 1)}, "too_large"),
    ("value a tuple", {"op": "put", "key": "k", "value": (1, 2)}, "bad_argument"),
    ("value a set", {"op": "put", "key": "k", "value": {1}}, "bad_argument"),
    ("value an object", {"op": "put", "key": "k", "value": object()}, "bad_argument"),
    ("value nested tuple", {"op": "put", "key": "k", "value": [{"a": (1,)}]}, "bad_argument"),
    ("value int dict key", {"op": "put", "key": "k", "value": {1: "a"}}, "bad_argument"),
    ("value NaN", {"op": "put", "key": "k", "value": [float("nan")]}, "bad_argument"),
    ("value int too big", {"op": "put", "key": "k", "value": 2**64}, "bad_argument"),
    ("value int too small", {"op": "put", "key": "k", "value": -(2**63) - 1}, "bad_argument"),
    ("value lone surrogate", {"op": "put", "key": "k", "value": "\udfff"}, "bad_argument"),
    ("value too deep", {"op": "put", "key": "k", "value": _DEEP}, "too_large"),
    ("value too large", {"op": "put", "key": "k", "value": "x" * VALUE_BYTES_MAX}, "too_large"),
    ("cas bad expected", {"op": "cas", "key": "k", "expected": (), "new": 1}, "bad_argument"),
    ("cas bad new", {"op": "cas", "key": "text", "expected": "abc", "new": {2}}, "bad_argument"),
    (
        "cas new too large",
        {"op": "cas", "key": "text", "expected": "abc", "new": b"x" * VALUE_BYTES_MAX},
        "too_large",
    ),
    ("append a non-string", {"op": "append", "key": "text", "value": 1}, "bad_argument"),
    ("append bytes", {"op": "append", "key": "text", "value": b"x"}, "bad_argument"),
    ("append to a number", {"op": "append", "key": "number", "value": "x"}, "not_a_string"),
    ("append to a dict", {"op": "append", "key": "nested", "value": "x"}, "not_a_string"),
    (
        "append past the size limit",
        {"op": "append", "key": "text", "value": "x" * (VALUE_BYTES_MAX - 3)},
        "too_large",
    ),
    ("append lone surrogate", {"op": "append", "key": "text", "value": "\ud800"}, "bad_argument"),
    ("delete key not a string", {"op": "delete", "key": None}, "bad_argument"),
]


@pytest.mark.parametrize(
    ("command", "code"),
    [pytest.param(command, code, id=name) for name, command, code in _BAD_COMMANDS],
)
def test_a_bad_command_gets_an_error_reply_and_changes_nothing(command: Any, code: str) -> None:
    store = _filled_store()
    before = store.state()
    assert _error_code(store.apply(command)) == code
    assert store.state() == before


def test_error_messages_are_the_same_on_every_replica() -> None:
    # The message is part of the reply: extra fields are listed in a fixed order.
    command = {"op": "get", "key": "k", "zeta": 1, "alpha": 2, "mid": 3}
    message = KeyValue().apply(command)["message"]
    assert message == "get does not take field(s) 'alpha', 'mid', 'zeta'"


def test_the_largest_key_and_value_fit() -> None:
    store = KeyValue()
    key = "k" * KEY_BYTES_MAX
    # A str of n < 2**16 bytes takes a 3-byte msgpack header.
    value = "v" * (VALUE_BYTES_MAX - 3)
    assert store.apply({"op": "put", "key": key, "value": value}) == {"ok": True}
    assert store.apply({"op": "append", "key": key, "value": ""}) == {"ok": True, "value": value}
    assert _error_code(store.apply({"op": "append", "key": key, "value": "v"})) == "too_large"


def test_a_value_at_the_depth_limit_fits() -> None:
    value: Any = {"leaf": 1}
    for _ in range(VALUE_DEPTH_MAX - 1):
        value = [value]
    store = KeyValue()
    assert store.apply({"op": "put", "key": "k", "value": value}) == {"ok": True}


def test_a_full_store_rejects_new_keys_but_not_old_ones() -> None:
    store = KeyValue()
    for number in range(KEYS_MAX):
        assert store.apply({"op": "put", "key": f"k{number}", "value": number}) == {"ok": True}
    before = store.state()
    for command in [
        {"op": "put", "key": "new", "value": 1},
        {"op": "cas", "key": "new", "expected": None, "new": 1},
        {"op": "append", "key": "new", "value": "x"},
    ]:
        assert _error_code(store.apply(command)) == "full"
        assert store.state() == before
    # Writing keys that exist, and reads, still work; a delete makes room again.
    assert store.apply({"op": "put", "key": "k0", "value": "x"}) == {"ok": True}
    assert store.apply({"op": "append", "key": "k0", "value": "y"}) == {"ok": True, "value": "xy"}
    assert store.apply({"op": "get", "key": "new"}) == {"value": None}
    assert store.apply({"op": "delete", "key": "k1"}) == {"ok": True}
    assert store.apply({"op": "put", "key": "new", "value": 1}) == {"ok": True}
    assert len(store.state()) == KEYS_MAX


# --- determinism -------------------------------------------------------------------------


def _random_value(rng: random.Random) -> Any:
    choice = rng.randrange(6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.randrange(-5, 5)
    if choice == 2:
        return rng.choice(["", "a", "bc"])
    if choice == 3:
        return [rng.randrange(3) for _ in range(rng.randrange(3))]
    if choice == 4:
        return {"n": rng.randrange(3)}
    return rng.choice([True, 1.5, b"b"])


def _random_command(rng: random.Random) -> Any:
    key = rng.choice(["a", "b", "c", "d"])
    op = rng.choice(["put", "get", "cas", "append", "delete", "bogus"])
    if op == "put":
        return {"op": op, "key": key, "value": _random_value(rng)}
    if op == "cas":
        return {"op": op, "key": key, "expected": _random_value(rng), "new": _random_value(rng)}
    if op == "append":
        return {"op": op, "key": key, "value": rng.choice(["x", "yz", 3])}
    if op == "bogus":
        return rng.choice([None, {"op": "bogus"}, {"op": "get"}])
    return {"op": op, "key": key}


@pytest.mark.parametrize("seed", range(5))
def test_two_stores_fed_the_same_commands_agree(seed: int) -> None:
    rng = random.Random(seed)
    commands = [_random_command(rng) for _ in range(2_000)]
    first, second = KeyValue(), KeyValue()
    for command in commands:
        assert first.apply(command) == second.apply(command), f"seed {seed}: {command}"
    assert first.state() == second.state()


# --- model equivalence -------------------------------------------------------------------

_keys = st.sampled_from(["a", "b", "c"])
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.lists(st.integers(min_value=-3, max_value=3), max_size=3),
)
_commands = st.one_of(
    st.builds(lambda k, v: {"op": "put", "key": k, "value": v}, _keys, _values),
    st.builds(lambda k: {"op": "get", "key": k}, _keys),
    st.builds(
        lambda k, a, b: {"op": "cas", "key": k, "expected": a, "new": b}, _keys, _values, _values
    ),
    st.builds(lambda k, s: {"op": "append", "key": k, "value": s}, _keys, st.text(max_size=3)),
    st.builds(lambda k: {"op": "delete", "key": k}, _keys),
)


def _model_apply(model: dict[str, Any], command: dict[str, Any]) -> dict[str, Any]:
    """What a plain dict does with the command; values above compare safely by type + ==."""
    key = command["key"]
    op = command["op"]
    if op == "put":
        model[key] = command["value"]
        return {"ok": True}
    if op == "get":
        return {"value": model.get(key)}
    if op == "cas":
        current = model.get(key)
        expected = command["expected"]
        if type(current) is not type(expected) or current != expected:
            return {"ok": False, "value": current}
        model[key] = command["new"]
        return {"ok": True, "value": command["new"]}
    if op == "append":
        current = model.get(key, "")
        if not isinstance(current, str):
            return {"ok": False, "error": "not_a_string"}
        model[key] = current + command["value"]
        return {"ok": True, "value": model[key]}
    existed = key in model
    model.pop(key, None)
    return {"ok": existed}


@settings(max_examples=200, deadline=None)
@given(st.lists(_commands, max_size=40))
def test_the_store_behaves_like_a_dict(commands: list[dict[str, Any]]) -> None:
    store = KeyValue()
    model: dict[str, Any] = {}
    for command in commands:
        reply = store.apply(command)
        expected = _model_apply(model, command)
        if expected.get("error"):
            assert _error_code(reply) == expected["error"]
        else:
            assert reply == expected
            # Strict equality of types too: `1 == True` must not hide a wrong reply.
            assert type(reply.get("value")) is type(expected.get("value"))
        assert store.state() == dict(sorted(model.items()))
