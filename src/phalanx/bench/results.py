"""What every benchmark writes: a JSON document of one schema, and plain-text tables.

A document is `{"schema", "benchmark", "created_at", "machine", "config", "results"}`;
`validate_document` checks the shape the plots, the tables and the tests rely on.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCHEMA = "phalanx-bench/1"
BENCHMARKS = ("throughput", "latency", "failover", "recovery", "memory", "peers", "profile")
#: fdatasync calls timed to describe the disk.
FSYNC_PROBES = 200
#: A 1-minute load average above this when a benchmark starts earns a warning.
LOAD_AVERAGE_QUIET = 0.5
#: The latency summary every result carries (microseconds).
LATENCY_KEYS = ("p50", "p90", "p99", "p99.9", "max")


def describe_machine(probe_dir: Path | None = None) -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kib = 0
    with contextlib.suppress(OSError, ValueError):
        memory_kib = parse_status_kib(Path("/proc/meminfo").read_text(), "MemTotal")
    load_1m = round(os.getloadavg()[0], 2)
    if load_1m > LOAD_AVERAGE_QUIET:
        progress(f"warning: load average {load_1m} before starting: other work on this machine "
                 "will distort the numbers")  # fmt: skip
    return {
        "load_average_1m_at_start": load_1m,
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "fdatasync_ms_p50": fdatasync_ms_p50(probe_dir),
    }


def fdatasync_ms_p50(directory: Path | None) -> float:
    """The median time of one 4 KiB write + fdatasync in `directory` (the disk's speed)."""
    samples = []
    with tempfile.NamedTemporaryFile(dir=directory) as handle:
        for _ in range(FSYNC_PROBES):
            os.write(handle.fileno(), b"x" * 4096)
            started = time.perf_counter()
            os.fdatasync(handle.fileno())
            samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 3)


def describe_source() -> dict[str, Any]:
    """The commit of the phalanx checkout measured, and whether its source had edits."""
    import subprocess

    package = Path(__file__).resolve().parents[1]

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-C", str(package), *argv], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "edited": bool(git("status", "--porcelain",
                "--", "."))}  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "edited": None}


def parse_status_kib(text: str, field: str) -> int:
    """A `Name:   1234 kB` field of /proc/PID/status or /proc/meminfo, in KiB."""
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name == field:
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
                return int(parts[0])
            raise ValueError(f"{field} is not in kB: {value.strip()!r}")
    raise ValueError(f"no {field} field")


def parse_stat_cpu_ticks(text: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/PID/stat.

    The second field is the command name in parentheses and may itself hold spaces or
    parentheses, so fields are counted from the last ')'."""
    fields = text[text.rindex(")") + 2 :].split()
    # After the name: state is field 3 of the man page, utime 14 and stime 15.
    return int(fields[14 - 3]) + int(fields[15 - 3])


def cpu_seconds(pid: int) -> float:
    """CPU time used so far by process `pid` (0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    return parse_stat_cpu_ticks(text) / os.sysconf("SC_CLK_TCK")


def make_document(
    benchmark: str, machine: dict[str, Any], config: dict[str, Any], results: dict[str, Any]
) -> dict[str, Any]:
    document = {
        "schema": SCHEMA,
        "benchmark": benchmark,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "config": config,
        "results": results,
        "source": describe_source(),
    }
    validate_document(document)
    return document


def validate_document(document: dict[str, Any]) -> None:
    """Raises ValueError naming the first thing that does not fit the schema."""
    for key in ("schema", "benchmark", "created_at", "machine", "config", "results"):
        if key not in document:
            raise ValueError(f"missing {key!r}")
    if document["schema"] != SCHEMA:
        raise ValueError(f"schema {document['schema']!r} is not {SCHEMA!r}")
    if document["benchmark"] not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {document['benchmark']!r}")
    for key in ("machine", "config", "results"):
        if not isinstance(document[key], dict):
            raise ValueError(f"{key!r} is not an object")
    results = document["results"]
    for level in results.get("levels", []):
        for key in ("in_flight", "ops", "seconds", "ops_per_second", "latency_us"):
            if key not in level:
                raise ValueError(f"a throughput level lacks {key!r}")
        _check_latency(level["latency_us"])
    if "latency_us" in results:
        _check_latency(results["latency_us"])
    for system in results.get("systems", []):
        for key in ("system", "durability", "levels", "latency_us"):
            if key not in system:
                raise ValueError(f"a system lacks {key!r}")
        _check_latency(system["latency_us"])


def _check_latency(latency: Any) -> None:
    if not isinstance(latency, dict):
        raise ValueError("latency_us is not an object")
    for key in LATENCY_KEYS:
        value = latency.get(key)
        if not isinstance(value, int | float) or value < 0:
            raise ValueError(f"latency_us[{key!r}] is {value!r}")
    ordered = [latency[key] for key in LATENCY_KEYS]
    if ordered != sorted(ordered):
        raise ValueError(f"latency percentiles are not ordered: {ordered}")


def write_document(out_dir: Path, document: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{document['benchmark']}.json"
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return path


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, numbers right-aligned, readable as plain text too."""
    cells = [[_cell(value) for value in row] for row in rows]
    for row in cells:
        assert len(row) == len(header), (row, header)
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(header)]
    numeric = [
        bool(rows) and all(isinstance(row[i], int | float) for row in rows if row[i] is not None)
        for i in range(len(header))
    ]

    def line(values: Sequence[str]) -> str:
        padded = [
            v.rjust(w) if is_number else v.ljust(w)
            for v, w, is_number in zip(values, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|".join(
        "-" * (w + 1) + ":" if is_number else "-" * (w + 2)
        for w, is_number in zip(widths, numeric, strict=True)
    )
    return "\n".join([line(header), f"|{rule}|", *(line(row) for row in cells)])


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def ms(microseconds: float) -> float:
    return microseconds / 1000.0


def progress(message: str) -> None:
    """One line of progress for long runs, with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
