"""Services with bugs, for the tests that a bad command cannot stop or freeze a cluster.

Imported by node processes as `tests.service.bad_services:NAME` (the tests run from the
repository root, which `python -m phalanx` puts on the import path)."""

from __future__ import annotations

import random
from typing import Any

from phalanx.examples.kv import KeyValue


class Misbehaving(KeyValue):
    """A key-value store whose `op`s beyond KeyValue's misbehave on purpose."""

    def apply(self, command: Any) -> Any:
        op = command.get("op") if isinstance(command, dict) else None
        if op == "huge":
            return 2**80  # msgpack cannot encode it: OverflowError
        if op == "object":
            return object()  # nor this: TypeError
        if op == "exit":
            raise SystemExit(7)
        if op == "interrupt":
            raise KeyboardInterrupt
        if op == "raise":
            raise ValueError("the service's own bug")
        if op == "oom":
            raise MemoryError("pretend the process ran out of memory")
        return super().apply(command)


class UnencodableState(KeyValue):
    """`state()` returns something a digest cannot encode."""

    def state(self) -> Any:
        return {"data": dict(self._store), "lock": object()}


class FailingSnapshot(KeyValue):
    """`snapshot()` raises: snapshots are impossible, serving is not."""

    def snapshot(self) -> Any:
        raise RuntimeError("snapshot is broken in this service")


class RandomReply(KeyValue):
    """Its state is deterministic but one reply is random: only the outcome digest
    can see that replicas answered differently."""

    def apply(self, command: Any) -> Any:
        if isinstance(command, dict) and command.get("op") == "roll":
            return {"ok": True, "value": random.random()}
        return super().apply(command)


class DeepRecursion(KeyValue):
    """Recurses as deep as the command asks: near the stack limit, whether it raises
    must not depend on how deep the node's own call stack was."""

    def apply(self, command: Any) -> Any:
        if isinstance(command, dict) and command.get("op") == "recurse":
            return {"ok": True, "depth": _down(int(command["depth"]))}
        return super().apply(command)


def _down(depth: int) -> int:
    return 0 if depth == 0 else 1 + _down(depth - 1)


class RefusingRestore(KeyValue):
    """`restore()` refuses every snapshot: a node cannot take on such state."""

    def restore(self, snapshot: Any) -> None:
        raise RuntimeError("restore is broken in this service")


class AddressInMessage(KeyValue):
    """Raises with an object's default repr (its address) and a set's repr in the
    message: both differ between processes unless phalanx makes them not."""

    def apply(self, command: Any) -> Any:
        if isinstance(command, dict) and command.get("op") == "address":
            raise ValueError(object())
        if isinstance(command, dict) and command.get("op") == "set":
            raise KeyError(frozenset({"alpha", "beta", "gamma", "delta"}))
        return super().apply(command)
