"""The client side of the throughput and latency benchmarks, run in its own process.

`python -m phalanx.bench.loadgen SPEC_JSON` drives one system with `in_flight` requests
in flight (one asyncio task each) and prints one JSON line: the requests that completed
inside the measuring window and a latency histogram (microseconds) of those requests.

Theory of operation
-------------------
The benchmark starts several of these processes at once and gives them all the same
window on the wall clock (`start_at`..`end_at`, from `time.time()`): requests that
finish before `start_at` warm up connections, sessions and caches and are not counted,
so process start-up and connection set-up never count against a system. A request is
counted when it completes inside the window; its latency is measured with
`perf_counter_ns`. With `requests` set instead, the process sends exactly that many
(after `warmup_requests` uncounted ones), `in_flight` at a time, and reports how long
they took: with one in flight, the latency benchmark's one-at-a-time mode.

Two drivers: phalanx through its `AsyncClient` (sessions, exactly-once), and etcd through
its v3 gRPC-gateway JSON API (`POST /v3/kv/put`, base64 key and value) over raw
keep-alive HTTP/1.1 connections, one per task (Go's HTTP server answers one request per
connection at a time, so a pipelined connection would add no parallelism).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from phalanx.bench.histogram import Histogram

#: Keys each client process cycles through (the KV example holds at most 10,000).
KEYS_PER_CLIENT = 1000
#: Load processes run at this niceness: on one machine they would otherwise take CPU the
#: nodes under test need (in production clients run elsewhere), and a node kept from
#: the CPU misses heartbeats. Every system benchmarked gets the same.
LOAD_NICENESS = 10
#: Allocations between the load process's young-generation GC passes (default 700).
GC_THRESHOLD_ALLOCATIONS = 200_000
#: Largest HTTP response header block accepted from etcd.
HTTP_HEADER_BYTES_MAX = 64 * 1024

Put = Callable[[str, str], Awaitable[None]]


@dataclass
class LoadSpec:
    system: str  # "phalanx" or "etcd"
    targets: list[str]  # phalanx: HOST:PORT of every member; etcd: the leader's HOST:PORT
    in_flight: int
    value_bytes: int = 100
    key_prefix: str = "c0-"
    start_at: float = 0.0
    end_at: float = 0.0
    requests: int = 0  # > 0: count-limited (latency mode) instead of the window
    warmup_requests: int = 0


@dataclass
class LoadResult:
    ops: int
    errors: int
    seconds: float
    histogram: Histogram

    def to_json(self) -> dict[str, Any]:
        return {
            "ops": self.ops,
            "errors": self.errors,
            "seconds": self.seconds,
            "histogram": self.histogram.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadResult:
        return cls(
            int(data["ops"]),
            int(data["errors"]),
            float(data["seconds"]),
            Histogram.from_json(data["histogram"]),
        )


# -- drivers -------------------------------------------------------------------------------


class _PhalanxDriver:
    def __init__(self, targets: list[str]) -> None:
        from phalanx.client import AsyncClient

        self.client = AsyncClient(targets, timeout=30.0)

    async def put(self, key: str, value: str) -> None:
        reply = await self.client.call({"op": "put", "key": key, "value": value})
        if reply != {"ok": True}:
            raise RuntimeError(f"unexpected reply {reply!r}")

    def connection_for_task(self) -> _PhalanxDriver:
        return self  # all tasks share the client's one connection

    async def close(self) -> None:
        await self.client.close()


class EtcdConnection:
    """One keep-alive HTTP/1.1 connection to an etcd member's gRPC gateway."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.host = host
        self.port = int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def put(self, key: str, value: str) -> None:
        body = json.dumps(
            {
                "key": base64.b64encode(key.encode()).decode(),
                "value": base64.b64encode(value.encode()).decode(),
            }
        ).encode()
        status, payload = await self.post("/v3/kv/put", body)
        if status != 200:
            raise RuntimeError(f"etcd answered {status}: {payload[:200]!r}")

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        return await read_http_response(self.reader)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def read_http_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > HTTP_HEADER_BYTES_MAX:
        raise RuntimeError("HTTP response headers too large")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(chunk[:-2])
        return status, b"".join(chunks)
    return status, await reader.readexactly(int(headers.get("content-length", "0")))


class _EtcdDriver:
    def __init__(self, targets: list[str]) -> None:
        self.target = targets[0]
        self.connections: list[EtcdConnection] = []

    def connection_for_task(self) -> EtcdConnection:
        connection = EtcdConnection(self.target)
        self.connections.append(connection)
        return connection

    async def close(self) -> None:
        for connection in self.connections:
            await connection.close()


# -- the load ------------------------------------------------------------------------------


async def run_load(spec: LoadSpec) -> LoadResult:
    driver: _PhalanxDriver | _EtcdDriver
    driver = _PhalanxDriver(spec.targets) if spec.system == "phalanx" else _EtcdDriver(spec.targets)
    try:
        puts: list[Put] = [driver.connection_for_task().put for _ in range(spec.in_flight)]
        if spec.requests > 0:
            return await _count_limited(spec, puts)
        return await _windowed(spec, puts)
    finally:
        await driver.close()


async def _count_limited(spec: LoadSpec, puts: list[Put]) -> LoadResult:
    """Exactly `requests` puts (after `warmup_requests`), `len(puts)` at a time."""
    value = "v" * spec.value_bytes
    histogram = Histogram()
    for i in range(spec.warmup_requests):
        await puts[0](f"{spec.key_prefix}{i % KEYS_PER_CLIENT}", value)
    next_request = iter(range(spec.requests))

    async def worker(put: Put) -> None:
        for i in next_request:
            key = f"{spec.key_prefix}{i % KEYS_PER_CLIENT}"
            sent = time.perf_counter_ns()
            await put(key, value)
            histogram.record((time.perf_counter_ns() - sent) // 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker(put) for put in puts))
    return LoadResult(spec.requests, 0, time.perf_counter() - started, histogram)


async def _windowed(spec: LoadSpec, puts: list[Put]) -> LoadResult:
    value = "v" * spec.value_bytes
    histogram = Histogram()
    counters = {"ops": 0, "errors": 0}

    async def worker(number: int, put: Put) -> None:
        i = number
        while True:
            key = f"{spec.key_prefix}{i % KEYS_PER_CLIENT}"
            i += spec.in_flight
            sent = time.perf_counter_ns()
            try:
                await put(key, value)
            except Exception:  # counted, not fatal: a benchmark reports what failed
                counters["errors"] += 1
                await asyncio.sleep(0.01)
                continue
            now = time.time()
            if now >= spec.end_at:
                return
            if now >= spec.start_at:
                counters["ops"] += 1
                histogram.record((time.perf_counter_ns() - sent) // 1000)

    await asyncio.gather(*(worker(n, put) for n, put in enumerate(puts)))
    return LoadResult(counters["ops"], counters["errors"], spec.end_at - spec.start_at, histogram)


def main(argv: list[str]) -> int:
    spec = LoadSpec(**json.loads(argv[0]))
    os.nice(LOAD_NICENESS)
    # Tens of thousands of waiting tasks make every cyclic-GC pass long, and Python
    # starts one every 700 allocations by default: measured, most of a load process's
    # CPU went there at 25,000 in flight. Its garbage is not cyclic; collect rarely.
    gc.set_threshold(GC_THRESHOLD_ALLOCATIONS, 50, 1000)
    result = asyncio.run(run_load(spec))
    print(json.dumps(result.to_json()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# -- the parent's side ---------------------------------------------------------------------


def spawn_loads(
    specs: list[LoadSpec], timeout_s: float, watch: dict[str, int] | None = None
) -> tuple[list[LoadResult], dict[str, float]]:
    """Runs one load process per spec, all at once, and returns their results and the
    CPU each process in `watch` (name -> pid) and the load processes together used during
    the window, in percent of one core."""
    import dataclasses
    import subprocess
    import threading

    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "phalanx.bench.loadgen", json.dumps(dataclasses.asdict(s))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for s in specs
    ]
    cpu: dict[str, float] = {}
    sampler = threading.Thread(
        target=_sample_cpu,
        args=(specs[0], dict(watch or {}), [p.pid for p in processes], cpu),
        daemon=True,
    )
    if specs[0].requests == 0:
        sampler.start()
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=timeout_s)
            if process.returncode != 0:
                raise RuntimeError(f"load process failed: {err.decode()[-2000:]}")
            results.append(LoadResult.from_json(json.loads(out.decode().splitlines()[-1])))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    if specs[0].requests == 0:
        sampler.join()
    return results, cpu


def _sample_cpu(
    spec: LoadSpec, watch: dict[str, int], load_pids: list[int], into: dict[str, float]
) -> None:
    from phalanx.bench.results import cpu_seconds

    time.sleep(max(0.0, spec.start_at - time.time()))
    before = {name: cpu_seconds(pid) for name, pid in watch.items()}
    load_before = sum(cpu_seconds(pid) for pid in load_pids)
    started = time.monotonic()
    time.sleep(max(0.0, spec.end_at - time.time()))
    seconds = time.monotonic() - started
    for name, pid in watch.items():
        into[name] = round(100 * (cpu_seconds(pid) - before[name]) / seconds, 1)
    load = sum(cpu_seconds(pid) for pid in load_pids) - load_before
    into["clients"] = round(100 * load / seconds, 1)


def merge_results(results: list[LoadResult]) -> LoadResult:
    histogram = Histogram()
    for result in results:
        histogram.merge(result.histogram)
    return LoadResult(
        sum(r.ops for r in results),
        sum(r.errors for r in results),
        max(r.seconds for r in results),
        histogram,
    )
