"""Invariants that guard replicated state stay on under `python -O` (STYLE.md, habit 11;
TigerBeetle: assertions stay on in production). `-O` strips every `assert`, so the
container and the storage check theirs explicitly and raise `InvariantError`."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import phalanx
from phalanx.core.errors import InvariantError, PhalanxError, invariant

#: A container applies entry 1, then is handed entry 3: the replica would skip entry 2
#: and answer from a state no other replica has. Then the in-memory log is asked to
#: store a write that leaves a gap after what it holds.
SCENARIO = textwrap.dedent(
    """
    import sys

    from phalanx.core.errors import InvariantError
    from phalanx.core.types import Entry, EntryKind, Index, Term
    from phalanx.examples.kv import KeyValue
    from phalanx.service.container import ServiceContainer
    from phalanx.service.envelope import OpenSession, encode_envelope
    from phalanx.storage import MemoryStorage

    assert False, "asserts are stripped: this line must do nothing under -O"
    print("optimize", sys.flags.optimize)
    container = ServiceContainer(KeyValue())
    opened = encode_envelope(OpenSession(0))
    container.apply(Entry(Term(1), Index(1), EntryKind.COMMAND, opened))
    try:
        container.apply(Entry(Term(1), Index(3), EntryKind.COMMAND, opened))
    except InvariantError as error:
        print("container:", error)
    print("applied", container.applied_index)

    storage = MemoryStorage()
    storage.load()
    storage.write([Entry(Term(1), Index(1), EntryKind.COMMAND, b"")], None)
    try:
        storage.write([Entry(Term(1), Index(3), EntryKind.COMMAND, b"")], None)
    except InvariantError as error:
        print("storage:", error)
    """
)


def test_invariant_checks_still_fire_under_python_optimize() -> None:
    result = subprocess.run(
        [sys.executable, "-O", "-c", SCENARIO],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "optimize 1"
    assert lines[1] == (
        "container: entry 3 applied after 1: committed entries are applied once each, in log order"
    )
    assert lines[2] == "applied 1"  # refused before anything changed
    assert lines[3].startswith("storage: write at index 3 leaves a gap after the stored log 1..1")


def test_invariant_error_is_a_bug_not_an_expected_failure() -> None:
    """Handlers of expected failures (`PhalanxError`) must never swallow a broken
    invariant; handlers of bugs (`AssertionError`: stop, exit 6) treat it as before."""
    assert issubclass(InvariantError, AssertionError)
    assert not issubclass(InvariantError, PhalanxError)
    invariant(True, "never formatted %d", "not a number")
    with pytest.raises(InvariantError, match=r"^entry 7 is wrong$"):
        invariant(False, "entry %d is wrong", 7)


def test_no_assert_is_left_in_the_container_or_the_storage() -> None:
    source = Path(phalanx.__file__).parent
    paths = [source / "service" / "container.py", *sorted((source / "storage").glob("*.py"))]
    found = [
        f"{path.name}:{node.lineno}"
        for path in paths
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Assert)
    ]
    assert not found, f"use invariant() or an explicit check (asserts vanish under -O): {found}"
