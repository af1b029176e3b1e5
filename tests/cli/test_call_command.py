"""`phalanx call` (issue 11, item 7): an error reply exits 1 and says so; whatever the
service replies, the output is strict JSON (no NaN or Infinity, bytes in base64)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from tests.cluster.harness import LiveCluster

from phalanx.server.cli import to_json

from .helpers import PHALANX_MODULE, run


def strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"not JSON: {constant} in {text!r}")

    return json.loads(text, parse_constant=refuse)


def test_replies_become_strict_json() -> None:
    reply = {
        "inf": math.inf,
        "values": [-math.inf, math.nan, 1.5, (1, 2)],
        "raw": b"\x00\xff",
        1: "an int key",
    }
    assert strict_json(to_json(reply)) == {
        "1": "an int key",
        "inf": "Infinity",
        "raw": {"base64": "AP8="},
        "values": ["-Infinity", "NaN", 1.5, [1, 2]],
    }


@pytest.mark.slow
def test_call_exits_1_on_an_error_reply_and_prints_strict_json(tmp_path: Path) -> None:
    cluster = LiveCluster(tmp_path, 1)
    call_argv = [*PHALANX_MODULE, "call", "--members", cluster.members]
    try:
        cluster.start_all()
        cluster.wait_for_leader()

        put = run([*call_argv, '{"op": "put", "key": "far", "value": [Infinity, -1.5]}'])
        assert put.returncode == 0, put.stderr
        assert strict_json(put.stdout) == {"ok": True}
        get = run([*call_argv, '{"op": "get", "key": "far"}'])
        assert get.returncode == 0, get.stderr
        assert strict_json(get.stdout) == {"value": ["Infinity", -1.5]}

        refused = run([*call_argv, '{"op": "nope"}'])
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert strict_json(refused.stdout)["ok"] is False
        assert refused.stderr.startswith("phalanx call: the service replied with an error: ")
        assert "unknown_op" in refused.stderr
    finally:
        cluster.close()
