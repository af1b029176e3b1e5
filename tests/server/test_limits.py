"""Every hard limit has a name in one place (STYLE.md: "a limit on everything"):
`phalanx.limits`, each constant with a comment saying why, all of them listed in
docs/limits.md, and no maximum defined anywhere else in the node's packages."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import phalanx
import phalanx.limits
from phalanx.server import config, divergence, identity, replay, replica
from phalanx.server import node as node_module
from phalanx.service import container, context
from phalanx.storage import codec, snapshots, wal
from phalanx.transport import tcp

SOURCE = Path(phalanx.__file__).parent
LIMITS_SOURCE = SOURCE / "limits.py"
LIMITS_DOC = Path(__file__).parents[2] / "docs" / "limits.md"
#: The packages a node and its clients are made of. The tools (sim, chaos, bench,
#: check, demo) and the example services keep their own bounds: a simulator's or a
#: checker's threshold is not a limit a node enforces.
NODE_PACKAGES = ("core", "server", "service", "storage", "transport", "client")
#: Maxima still defined where they are used, in modules others were rewriting when
#: limits.py was made (server/node.py and what it is split into, server/cli.py,
#: server/snapshots.py, transport/wire.py, client/); each should move to
#: limits.py and leave this list.
NOT_YET_MOVED = {
    "MAX_LOCAL_NODES",
    "NODES_MAX",
    "SNAPSHOT_ERROR_BYTES_MAX",
    "MAX_FRAME_BYTES_DEFAULT",
    "BACKOFF_MAX_S",
    "RESUBSCRIBE_BACKOFF_MAX_S",
    "MAX_LEARNED_ADDRESSES",
    "MAX_COMMAND_BYTES_DEFAULT",
    "MAX_IN_FLIGHT_DEFAULT",
    "MAX_QUEUED_PUSHED",
}


def limit_names() -> list[str]:
    return [name for name in vars(phalanx.limits) if name.isupper()]


def test_every_limit_has_a_comment_saying_why() -> None:
    lines = LIMITS_SOURCE.read_text().splitlines()
    tree = ast.parse(LIMITS_SOURCE.read_text())
    assigned = [node for node in tree.body if isinstance(node, ast.Assign)]
    names = [
        target.id for node in assigned for target in node.targets if isinstance(target, ast.Name)
    ]
    assert sorted(names) == sorted(limit_names())
    for node in assigned:
        assert lines[node.lineno - 2].startswith("#: "), f"limits.py:{node.lineno} has no comment"


def test_limits_imports_nothing_so_every_layer_may_import_it() -> None:
    tree = ast.parse(LIMITS_SOURCE.read_text())
    imports = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    assert [ast.unparse(node) for node in imports] == ["from __future__ import annotations"]


def test_every_limit_is_listed_in_docs_limits() -> None:
    doc = LIMITS_DOC.read_text()
    table = doc.split("## Every hard limit", 1)[1]
    listed = re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE)
    assert sorted(listed) == sorted(limit_names())


def test_the_old_names_still_import_from_the_modules_that_use_them() -> None:
    users = (
        config, divergence, identity, node_module, replay, replica, container, context, codec,
        snapshots, wal, tcp,
    )  # fmt: skip
    found = {name for module in users for name in vars(module) if name in limit_names()}
    assert found == set(limit_names())
    for module in users:
        for name in set(vars(module)) & set(limit_names()):
            assert getattr(module, name) == getattr(phalanx.limits, name), (module, name)


def test_no_maximum_is_defined_outside_limits_py() -> None:
    pattern = re.compile(r"^_?[A-Z][A-Z0-9_]*(?:: [^=]+)? = ", re.MULTILINE)
    scattered = []
    for package in NODE_PACKAGES:
        for path in sorted((SOURCE / package).rglob("*.py")):
            relative = path.relative_to(SOURCE).as_posix()
            for match in pattern.finditer(path.read_text()):
                name = match.group(0).split(" ")[0].rstrip(":")
                if re.search("MAX|LIMIT", name) and name not in NOT_YET_MOVED:
                    scattered.append(f"{relative}: {name}")
    assert not scattered, f"move these to src/phalanx/limits.py: {scattered}"
