"""A key-value store as a deterministic phalanx service (`phalanx.examples.kv:KeyValue`).

Theory of operation
-------------------
The store is one dict from string keys to plain-data values. `apply` first checks the
whole command (its shape, every argument, every limit) and only then changes the dict,
so a command that gets an error reply has changed nothing. Validation failures travel
as a private exception that `apply` turns into the reply: it never raises for bad input.

Reads (`get`) are commands like any other, so they go through the log and are
linearizable.

Values are compared strictly by type (`1`, `1.0` and `True` are three different
values): msgpack keeps them apart on the wire, and Python's `==` would let a `cas`
succeed against a value the client never wrote. Dict key order does not matter. NaN is
rejected because it is not equal to itself: a `cas` could never match it, and two
replicas holding it would compare their states unequal.

The store keeps its own copy of every value (decoded from the encoding it measured), so
a caller that mutates a value after `put` cannot reach into the state. Replies and
`state()` share the stored objects: treat them as read-only.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from phalanx.examples.commands import Rejected, check_fields
from phalanx.service import Service

#: Longest key, in bytes of UTF-8.
KEY_BYTES_MAX = 256
#: Largest value, in bytes of its msgpack encoding (the form it travels and is stored in).
VALUE_BYTES_MAX = 64 * 1024
#: Most lists and dicts one value may nest, counting the outermost; it also bounds the
#: recursion of the checks below.
VALUE_DEPTH_MAX = 32
#: Most keys the store holds; a write that would add one more is rejected with "full".
KEYS_MAX = 10_000

#: The fields each command must have, and may only have: a misspelt field is an error
#: rather than silently ignored.
_FIELDS: dict[str, frozenset[str]] = {
    "put": frozenset({"op", "key", "value"}),
    "get": frozenset({"op", "key"}),
    "cas": frozenset({"op", "key", "expected", "new"}),
    "append": frozenset({"op", "key", "value"}),
    "delete": frozenset({"op", "key"}),
}

_SCALAR_TYPES: frozenset[type] = frozenset({type(None), bool, int, str, bytes})


class KeyValue(Service):
    """A bounded key-value store. Commands and their replies:

    {"op": "put", "key": k, "value": v}              -> {"ok": True}
    {"op": "get", "key": k}                          -> {"value": v}  (None when absent)
    {"op": "cas", "key": k, "expected": a, "new": b} -> {"ok": bool, "value": current}
        Stores b if the value is a (an absent key reads as None, so expected None
        creates it). `current` is the value after the command: b on success, the
        unchanged value on failure.
    {"op": "append", "key": k, "value": s}           -> {"ok": True, "value": new}
        Appends the string s to a string value; an absent key counts as "".
    {"op": "delete", "key": k}                       -> {"ok": bool}  (True if it existed)

    Keys are strings of at most KEY_BYTES_MAX bytes (UTF-8). Values are plain data:
    None, bool, int (msgpack range), float (not NaN), str, bytes, and lists and dicts
    (with string keys) of them, at most VALUE_DEPTH_MAX deep and VALUE_BYTES_MAX bytes
    encoded. The store holds at most KEYS_MAX keys.

    A bad command gets an error reply {"ok": False, "error": code, "message": text} and
    changes nothing. Codes: "bad_command" (not a dict, or no "op"), "unknown_op",
    "bad_argument" (missing, extra or ill-typed field), "too_large" (past a limit),
    "full" (a new key past KEYS_MAX), "not_a_string" (append to a non-string value).
    """

    def __init__(self) -> None:
        self._store: dict[str, Any] = {}

    def apply(self, command: Any) -> dict[str, Any]:
        """Applies one command (see the class docstring) and returns its reply."""
        try:
            op = check_fields(command, _FIELDS, '{"op": "get", ...}')
            match op:
                case "put":
                    return self._put(command)
                case "get":
                    return {"value": self._store.get(_check_key(command["key"]))}
                case "cas":
                    return self._cas(command)
                case "append":
                    return self._append(command)
                case "delete":
                    return self._delete(command)
                case _:
                    raise AssertionError(f"_FIELDS admits op {op!r} that apply cannot run")
        except Rejected as rejected:
            return rejected.reply

    def state(self) -> dict[str, Any]:
        """The whole store, keys sorted."""
        return {key: self._store[key] for key in sorted(self._store)}

    def snapshot(self) -> dict[str, Any]:
        # Order does not matter to a snapshot: skip the sort that digests need.
        return self._store

    def restore(self, snapshot: Any) -> None:
        assert isinstance(snapshot, dict), "a KeyValue snapshot is a dict"
        self._store = dict(snapshot)

    def _put(self, command: dict[str, Any]) -> dict[str, Any]:
        key = _check_key(command["key"])
        value = _stored_copy(command["value"], "value")
        self._check_room_for(key)
        self._store[key] = value
        return {"ok": True}

    def _cas(self, command: dict[str, Any]) -> dict[str, Any]:
        key = _check_key(command["key"])
        # `expected` is checked like a value too: an argument is bounded even when the
        # only thing done with it is a comparison.
        _encode_value(command["expected"], "expected")
        new = _stored_copy(command["new"], "new")
        current = self._store.get(key)
        if not _same_value(current, command["expected"]):
            return {"ok": False, "value": current}
        self._check_room_for(key)
        self._store[key] = new
        return {"ok": True, "value": new}

    def _append(self, command: dict[str, Any]) -> dict[str, Any]:
        key = _check_key(command["key"])
        suffix = command["value"]
        if type(suffix) is not str:
            raise Rejected("bad_argument", f"append value must be a str, got {_kind(suffix)}")
        current = self._store.get(key, "")
        if type(current) is not str:
            raise Rejected(
                "not_a_string", f"cannot append to key {key!r}: it holds a {_kind(current)}"
            )
        new = current + suffix
        _encode_value(new, "value")  # the result, not just the suffix, must fit
        self._check_room_for(key)
        self._store[key] = new
        return {"ok": True, "value": new}

    def _delete(self, command: dict[str, Any]) -> dict[str, Any]:
        key = _check_key(command["key"])
        existed = key in self._store
        self._store.pop(key, None)
        return {"ok": existed}

    def _check_room_for(self, key: str) -> None:
        if key not in self._store and len(self._store) >= KEYS_MAX:
            raise Rejected(
                "full", f"the store holds its maximum of {KEYS_MAX} keys; delete some first"
            )


def _kind(value: object) -> str:
    return type(value).__name__


def _check_key(key: Any) -> str:
    if type(key) is not str:
        raise Rejected("bad_argument", f"key must be a str, got {_kind(key)}")
    try:
        key_bytes = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise Rejected("bad_argument", "key is not valid Unicode (lone surrogate)") from None
    if key_bytes > KEY_BYTES_MAX:
        raise Rejected(
            "too_large", f"key is {key_bytes} bytes of UTF-8; the maximum is {KEY_BYTES_MAX}"
        )
    return key


def _check_plain(value: Any, field: str, depth: int) -> None:
    kind = type(value)
    if kind in _SCALAR_TYPES:
        return
    if kind is float:
        if math.isnan(value):
            raise Rejected("bad_argument", f"{field} contains NaN, which cannot be compared")
        return
    if kind is not list and kind is not dict:
        raise Rejected(
            "bad_argument",
            f"{field} must be plain data (None, bool, int, float, str, bytes, list, dict), "
            f"found {kind.__name__}",
        )
    if depth >= VALUE_DEPTH_MAX:
        raise Rejected("too_large", f"{field} is nested deeper than {VALUE_DEPTH_MAX} levels")
    if kind is list:
        for item in value:
            _check_plain(item, field, depth + 1)
        return
    for item_key, item in value.items():
        if type(item_key) is not str:
            raise Rejected(
                "bad_argument", f"{field} has a dict key of type {_kind(item_key)}; use str"
            )
        _check_plain(item, field, depth + 1)


def _encode_value(value: Any, field: str) -> bytes:
    """The msgpack encoding of a checked value, within VALUE_BYTES_MAX."""
    _check_plain(value, field, depth=0)
    try:
        encoded = msgspec.msgpack.encode(value)
    except OverflowError:
        raise Rejected("bad_argument", f"{field} has an int outside msgpack's range") from None
    except UnicodeEncodeError:
        raise Rejected("bad_argument", f"{field} has a str that is not valid Unicode") from None
    if len(encoded) > VALUE_BYTES_MAX:
        raise Rejected(
            "too_large",
            f"{field} is {len(encoded)} bytes encoded; the maximum is {VALUE_BYTES_MAX}",
        )
    return encoded


def _stored_copy(value: Any, field: str) -> Any:
    """A checked value as the store keeps it: a private copy, decoded from its encoding."""
    if type(value) is str and value.isascii() and len(value) <= VALUE_BYTES_MAX - 5:
        return value  # immutable, and its encoding (at most 5 bytes more) fits
    return msgspec.msgpack.decode(_encode_value(value, field))


def _same_value(left: Any, right: Any) -> bool:
    """Equality that also requires equal types, all the way down (see the module doc)."""
    if type(left) is not type(right):
        return False
    if type(left) is list:
        return len(left) == len(right) and all(
            _same_value(a, b) for a, b in zip(left, right, strict=True)
        )
    if type(left) is dict:
        return left.keys() == right.keys() and all(
            _same_value(item, right[key]) for key, item in left.items()
        )
    return bool(left == right)
