"""A node hashes strings as every other replica does (server/determinism.py): whether
started as `phalanx node` by hand (it re-executes itself) or by `phalanx cluster`, its
service runs with PYTHONHASHSEED=0 and hash randomization off, even when the caller's
environment asks for random hashing."""

from __future__ import annotations

from pathlib import Path

import pytest

from phalanx.client import Client
from phalanx.transport.addresses import free_ports

from .helpers import PHALANX_MODULE, Processes, leader_position, wait_until

CALL_TIMEOUT_S = 20.0
SERVICE_MODULE = """
import os
import sys

from phalanx.examples.kv import KeyValue


class SeedReporter(KeyValue):
    def apply(self, command):
        if command == {"op": "hash seed"}:
            seed = os.environ.get("PYTHONHASHSEED")
            return {"seed": seed, "randomization": sys.flags.hash_randomization}
        return super().apply(command)
"""

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("command", ["node", "cluster"])
def test_the_service_runs_with_a_fixed_hash_seed(
    command: str, tmp_path: Path, processes: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONHASHSEED", "random")
    (tmp_path / "seed_service.py").write_text(SERVICE_MODULE)
    port = free_ports(1)[0]
    address = f"127.0.0.1:{port}"
    if command == "node":
        argv = [*PHALANX_MODULE, "node", "--id", "1", "--members", f"1={address}"]
    else:
        argv = [*PHALANX_MODULE, "cluster", "--nodes", "1", "--base-port", str(port)]
    process = processes.start(
        [*argv, "--data", "data", "--service", "seed_service:SeedReporter"], cwd=tmp_path
    )
    wait_until(
        lambda: leader_position([address]) is not None,
        f"a leader at {address}",
        describe=lambda: processes.output(process),
    )
    with Client([address], timeout=CALL_TIMEOUT_S) as client:
        assert client.call({"op": "hash seed"}) == {"seed": "0", "randomization": 0}
    assert processes.stop(process) == 0
