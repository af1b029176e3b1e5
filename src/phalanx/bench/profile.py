"""`phalanx bench profile`: where a node's time goes, sampled with py-spy under load.

Starts a 3-node cluster, drives it from separate load processes (`--mode load`: the
throughput workload; `--mode sequential`: one put at a time), and samples the leader and
one follower with `py-spy record --idle --format raw` (py-spy is installed with pip if
missing). Each sample is one stack; the report attributes the event-loop thread's samples
to a layer by the innermost frame's module (idle = waiting in epoll; the fdatasync wait
is its own layer, since a node syncs on its loop thread), reports how many samples
other threads (snapshot writers) took, and lists the hottest innermost frames.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from phalanx.bench.clusters import running_cluster
from phalanx.bench.loadgen import LoadSpec
from phalanx.bench.results import (
    describe_machine,
    format_table,
    make_document,
    progress,
    write_document,
)
from phalanx.bench.setup import ensure_executable

#: Layers by a substring of the innermost frame, first match wins.
LAYERS = (
    ("idle (epoll wait)", ("EpollSelector.select",)),
    ("fdatasync (waiting for the disk)", ("WalStorage._sync",)),
    ("encode/decode (msgspec, wire, codec)", ("msgspec", "codec.py", "wire.py", "envelope.py")),
    ("WAL write", ("storage/", "wal.py", "files.py")),
    ("raft core", ("phalanx/core/", "raft.py", "rawnode.py", "log.py", "progress.py")),
    ("container + service apply", ("container.py", "examples/", "service/")),
    ("transport (tcp.py)", ("tcp.py",)),
    ("socket syscalls (asyncio transports)", ("selector_events.py", "socket")),
    ("node (node.py)", ("node.py",)),
    ("asyncio / executor overhead", ("asyncio/", "concurrent/futures", "threading.py")),
)
SAMPLE_RATE_HZ = 250
TOP_FRAMES = 12


def run_profile(args: argparse.Namespace) -> int:
    py_spy = ensure_executable("py-spy", "py-spy")
    machine = describe_machine(args.out if args.out.exists() else None)
    args.out.mkdir(parents=True, exist_ok=True)
    with running_cluster() as cluster:
        leader = cluster.leader_index
        assert leader is not None
        follower = (leader + 1) % len(cluster.processes)
        targets = {"leader": cluster.pid(leader), "follower": cluster.pid(follower)}
        loads = _start_load(cluster.addresses, args.mode, args.seconds)
        try:
            time.sleep(2.0)  # the load processes start and warm up
            progress(f"sampling the leader and a follower for {args.seconds:.0f}s ({args.mode})")
            raw = _record(py_spy, targets, args.seconds, args.out, args.mode)
        finally:
            for load in loads:
                load.kill()
                load.wait()
    results = {role: summarise(path.read_text()) for role, path in raw.items()}
    config = {"mode": args.mode, "seconds": args.seconds, "rate_hz": SAMPLE_RATE_HZ}
    path = write_document(args.out, make_document("profile", machine, config, results))
    for role, summary in results.items():
        print(f"\n{role}: {summary['loop_samples']} event-loop samples; "
              f"{summary['other_thread_samples']} in other threads")  # fmt: skip
        print(format_table(["layer", "% of loop"], list(summary["layers"].items())))
        print(format_table(["innermost frame", "% of loop"], list(summary["frames"].items())))
    print(f"\nwrote {path} and the raw stacks beside it (not for committing)")
    return 0


def _start_load(addresses: list[str], mode: str, seconds: float) -> list[subprocess.Popen[bytes]]:
    import dataclasses
    import json

    end = time.time() + seconds + 30
    if mode == "sequential":
        specs = [LoadSpec("phalanx", addresses, 1, requests=10_000_000)]
    else:
        specs = [
            LoadSpec("phalanx", addresses, 256, key_prefix=f"p{c}-", start_at=end, end_at=end)
            for c in range(2)
        ]
    return [
        subprocess.Popen(
            [sys.executable, "-m", "phalanx.bench.loadgen", json.dumps(dataclasses.asdict(s))],
            stdout=subprocess.DEVNULL,
        )
        for s in specs
    ]


def _record(
    py_spy: str, targets: dict[str, int], seconds: float, out: Path, mode: str
) -> dict[str, Path]:
    paths = {role: out / f"profile-{mode}-{role}.txt" for role in targets}
    spies = [
        subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
             "--rate", str(SAMPLE_RATE_HZ), "--idle", "--nonblocking", "--format", "raw",
             "-o", str(paths[role])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for role, pid in targets.items()
    ]  # fmt: skip
    for spy in spies:
        _, err = spy.communicate(timeout=seconds + 60)
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {err.decode()[-500:]}")
    return paths


def summarise(raw: str) -> dict[str, Any]:
    """Layer shares of the event-loop thread; other threads' samples counted apart."""
    layers: collections.Counter[str] = collections.Counter()
    frames: collections.Counter[str] = collections.Counter()
    loop_samples = other_samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        stack_frames = stack.split(";")
        innermost = stack_frames[-1]
        if any("threading.py" in frame for frame in stack_frames):
            other_samples += count
            continue
        loop_samples += count
        layers[layer_of(innermost)] += count
        frames[innermost] += count
    total = max(1, loop_samples)
    return {
        "loop_samples": loop_samples,
        "layers": {name: round(100 * n / total, 1) for name, n in layers.most_common()},
        "frames": {name: round(100 * n / total, 1) for name, n in frames.most_common(TOP_FRAMES)},
        "other_thread_samples": other_samples,
    }


def layer_of(frame: str) -> str:
    for name, needles in LAYERS:
        if any(needle in frame for needle in needles):
            return name
    return "other"
