"""`phalanx.core` is pure: no I/O, no clock, no global randomness (ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import phalanx.core

FORBIDDEN = {"asyncio", "socket", "time", "random", "os", "threading", "selectors", "subprocess"}


def _runtime_imports(path: Path) -> list[tuple[str, int]]:
    """Imports that execute at run time (those under `if TYPE_CHECKING:` do not)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_core_imports_no_io_and_nothing_else_of_phalanx() -> None:
    core_dir = Path(phalanx.core.__file__).parent
    problems = []
    for path in sorted(core_dir.glob("*.py")):
        for module, line in _runtime_imports(path):
            top = module.split(".")[0]
            if top in FORBIDDEN:
                problems.append(f"{path.name}:{line} imports {module}")
            if top == "phalanx" and not module.startswith("phalanx.core"):
                problems.append(f"{path.name}:{line} imports {module}")
    assert not problems, problems


def test_scanner_catches_forbidden_imports_and_ignores_type_checking(tmp_path: Path) -> None:
    source = (
        "import time\nfrom os import path\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import random\n"
        "def f():\n    import socket\n"
    )
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    assert [m for m, _ in _runtime_imports(bad)] == ["time", "os", "typing", "socket"]
