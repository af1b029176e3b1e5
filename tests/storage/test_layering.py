"""`phalanx.storage` imports only `phalanx.core`, `phalanx.limits` (constants, importing
nothing), msgspec, crc32c and the standard library (ARCHITECTURE.md, "Layers")."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import phalanx.storage

ALLOWED_THIRD_PARTY = {"msgspec", "crc32c"}


def test_storage_imports_only_core_and_its_dependencies() -> None:
    problems = []
    for path in sorted(Path(phalanx.storage.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top == "phalanx":
                    ok = (
                        module.startswith(("phalanx.core", "phalanx.storage"))
                        or module == "phalanx.limits"
                    )
                else:
                    ok = top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY
                if not ok:
                    problems.append(f"{path.name}:{node.lineno} imports {module}")
    assert not problems, problems
