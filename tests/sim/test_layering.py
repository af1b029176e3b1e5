"""The shape the simulator depends on: `Replica` performs no I/O, and the simulator
drives that class (an import, not a copy) and never the asyncio `Node`."""

from __future__ import annotations

import ast
from pathlib import Path

import phalanx.server.replica
import phalanx.sim.cluster
from phalanx.server.replica import Replica

SOURCE = Path(phalanx.server.replica.__file__).parents[1]
#: What a decision-making module may not touch: sockets, clocks, files, threads, loops.
IO_MODULES = {"asyncio", "socket", "time", "os", "threading", "subprocess", "selectors"}
#: The node's I/O shell and the real disk/network, which the simulator replaces.
SHELL_MODULES = {
    "phalanx.server.node",
    "phalanx.server.snapshots",
    "phalanx.server.local",
    "phalanx.transport.tcp",
    "phalanx.storage.wal",
}


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_replica_imports_no_io() -> None:
    found = imported(SOURCE / "server" / "replica.py")
    assert not {name.split(".")[0] for name in found} & IO_MODULES
    assert not found & SHELL_MODULES


def test_the_simulator_drives_the_shipped_replica_and_not_the_node() -> None:
    assert phalanx.sim.cluster.Replica is Replica
    for path in sorted((SOURCE / "sim").glob("*.py")):
        assert not imported(path) & SHELL_MODULES, path.name
