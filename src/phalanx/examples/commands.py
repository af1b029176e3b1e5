"""Checking the shape of a dict command, shared by the example services.

A command is a dict with an "op" field naming one of the service's operations and
exactly the fields that operation takes. Every check runs before anything changes, and
every message is built deterministically (sorted, never from a set), because the
message is part of the reply and every replica must produce the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from phalanx.service import error_reply


class Rejected(Exception):
    """Carries an error reply from a check to `apply`, before anything has changed."""

    def __init__(self, error: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.reply = error_reply(error, message) | details


def check_fields(command: Any, fields_by_op: Mapping[str, frozenset[str]], example: str) -> str:
    """Returns the op of a command that has exactly the fields its op needs."""
    if type(command) is not dict:
        raise Rejected(
            "bad_command",
            f"a command is a dict such as {example}, got {type(command).__name__}",
        )
    if "op" not in command:
        raise Rejected("bad_command", 'a command needs an "op" field')
    op = command["op"]
    if type(op) is not str or op not in fields_by_op:
        known = ", ".join(sorted(fields_by_op))
        raise Rejected("unknown_op", f"unknown op {op!r}; known: {known}")
    fields = fields_by_op[op]
    if command.keys() == fields:
        return op  # the common case, checked without building the lists below
    missing = sorted(fields - command.keys())
    if missing:
        raise Rejected("bad_argument", f"{op} needs field(s) {', '.join(missing)}")
    extra = sorted(repr(field) for field in command if field not in fields)
    if extra:
        raise Rejected("bad_argument", f"{op} does not take field(s) {', '.join(extra)}")
    return op
