"""`phalanx bench latency` end to end against a real 3-node cluster, for a few requests.

It checks the shape and sanity of the JSON written, never how fast anything was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from phalanx.bench.results import validate_document

REQUESTS = 20


@pytest.mark.slow
def test_bench_latency_writes_sane_json(tmp_path: Path) -> None:
    out = tmp_path / "results"
    completed = subprocess.run(
        [sys.executable, "-m", "phalanx", "bench", "latency", "--requests", str(REQUESTS),
         "--warmup-requests", "3", "--no-plot", "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    document = json.loads((out / "latency.json").read_text())
    validate_document(document)
    assert document["benchmark"] == "latency"
    assert document["config"]["requests"] == REQUESTS
    results = document["results"]
    assert results["requests"] == REQUESTS
    assert results["histogram"]["count"] == REQUESTS
    latency = results["latency_us"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    assert latency["count"] == REQUESTS
    assert document["machine"]["cpus"] >= 1
    assert "p50 ms" in completed.stdout
