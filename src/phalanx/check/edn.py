"""A small reader for the EDN values that appear in Jepsen histories.

It reads nil, booleans, integers, floats, strings, keywords (kept as strings that
start with ':'), symbols (as plain strings), vectors and lists (as tuples), sets (as
frozensets) and maps (as dicts, so that callers can look fields up; freeze them
before hashing). Tags, characters and comments do not occur in histories and are
refused. Commas are whitespace, as in EDN. Anything else is a
`ValueError` with the column, which the format readers turn into a `CheckError`
naming file and line.
"""

from __future__ import annotations

import re

from phalanx.check import limits

_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?([eE][+-]?\d+)?N?M?")
_TOKEN = re.compile(r"[^\s,\[\]{}()\"#;]+")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
_CLOSERS = {"[": "]", "(": ")", "{": "}"}


class Keyword(str):
    """An EDN keyword such as `:ok`; a str so it compares with plain text."""

    __slots__ = ()


def read_edn(text: str) -> object:
    """Read exactly one EDN value from `text`."""
    reader = _Reader(text)
    value = reader.value(0)
    reader.skip_space()
    if reader.at < len(text):
        raise ValueError(f"unexpected text after the value at column {reader.at + 1}")
    return value


def read_edn_prefix(text: str) -> tuple[object, str]:
    """Read one EDN value from the start of `text`; return it and the rest."""
    reader = _Reader(text)
    value = reader.value(0)
    return value, text[reader.at :]


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def skip_space(self) -> None:
        text = self.text
        while self.at < len(text) and (text[self.at].isspace() or text[self.at] == ","):
            self.at += 1

    def fail(self, message: str) -> ValueError:
        return ValueError(f"{message} at column {self.at + 1}")

    def value(self, depth: int) -> object:
        if depth > limits.edn_nesting_depth_max:
            raise self.fail(f"values nested deeper than {limits.edn_nesting_depth_max}")
        self.skip_space()
        if self.at >= len(self.text):
            raise self.fail("missing value")
        char = self.text[self.at]
        if char == '"':
            return self.string()
        if char in _CLOSERS:
            self.at += 1
            items = self.sequence(_CLOSERS[char], depth)
            return _as_map(items, self) if char == "{" else tuple(items)
        if char == "#" and self.text.startswith("#{", self.at):
            self.at += 2
            return frozenset(self.sequence("}", depth))
        return self.atom()

    def sequence(self, closer: str, depth: int) -> list[object]:
        items: list[object] = []
        while True:
            self.skip_space()
            if self.at >= len(self.text):
                raise self.fail(f"missing {closer!r}")
            if self.text[self.at] == closer:
                self.at += 1
                return items
            items.append(self.value(depth + 1))

    def string(self) -> str:
        text = self.text
        self.at += 1
        parts: list[str] = []
        while self.at < len(text):
            char = text[self.at]
            if char == '"':
                self.at += 1
                return "".join(parts)
            if char == "\\":
                escaped = text[self.at + 1 : self.at + 2]
                if escaped not in _ESCAPES:
                    raise self.fail(f"unknown escape \\{escaped}")
                parts.append(_ESCAPES[escaped])
                self.at += 2
                continue
            parts.append(char)
            self.at += 1
        raise self.fail("unterminated string")

    def atom(self) -> object:
        match = _TOKEN.match(self.text, self.at)
        if match is None:
            raise self.fail(f"unexpected {self.text[self.at]!r}")
        token = match.group()
        self.at = match.end()
        if token == "nil":
            return None
        if token in ("true", "false"):
            return token == "true"
        if token.startswith(":"):
            return Keyword(token)
        if _NUMBER.fullmatch(token):
            return _number(token)
        return token


def _number(token: str) -> int | float:
    digits = token.rstrip("NM")
    if any(mark in digits for mark in ".eE"):
        return float(digits)
    return int(digits)


def _as_map(items: list[object], reader: _Reader) -> dict[object, object]:
    if len(items) % 2:
        raise reader.fail("a map needs an even number of forms")
    result: dict[object, object] = {}
    for index in range(0, len(items), 2):
        key = items[index]
        if not _hashable(key):
            raise reader.fail("a map key must be a simple value")
        result[key] = items[index + 1]
    return result


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
