"""One node of a 3-node PySyncObj key-value cluster, and its in-process load generator.

Run as `python -m phalanx.bench.peers.pysyncobj_node --self HOST:PORT --partners
HOST:PORT,HOST:PORT --result FILE --workload JSON`. Every node serves; the node that
becomes leader also runs the workload and writes the results to FILE as JSON.

PySyncObj has no network client for replicated commands: a command is a call on the
`SyncObj` object inside a member's process (it forwards to the leader when needed). So
its load runs in the leader's own process, the most favourable place for it (no client
hop, no client encoding), with `callback=` to keep many commands in flight, or
`sync=True` for one at a time.

Durability: the log is kept in memory (PySyncObj's default, no `journalFile`); even
with a journal file PySyncObj writes through mmap and never calls fsync or msync.
`--batch off` sets `appendEntriesUseBatch=False`, which sends each command at once
rather than on the next 100 ms append period: far better one-at-a-time latency.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import threading
import time
from typing import Any

from phalanx.bench.histogram import Histogram

KEYS = 1000
#: How long a node waits to be elected or see a leader before giving up.
READY_TIMEOUT_S = 60.0
#: Seconds to wait for commands still in flight at the end of a level.
DRAIN_TIMEOUT_S = 30.0


def make_store(pysyncobj: Any) -> Any:
    replicated = pysyncobj.replicated

    class Store(pysyncobj.SyncObj):  # type: ignore[misc]
        def __init__(self, self_address: str, partners: list[str], conf: Any) -> None:
            super().__init__(self_address, partners, conf)
            self.data: dict[str, str] = {}

        @replicated  # type: ignore[untyped-decorator]
        def put(self, key: str, value: str) -> bool:
            self.data[key] = value
            return True

    return Store


class _Level:
    """Keeps `in_flight` puts outstanding through callbacks (run on PySyncObj's thread)."""

    def __init__(self, store: Any, in_flight: int, value: str, start_at: float, end_at: float):
        self.store = store
        self.value = value
        self.start_at = start_at
        self.end_at = end_at
        self.in_flight = in_flight
        self.outstanding = 0
        self.ops = 0
        self.errors = 0
        self.histogram = Histogram()
        self.lock = threading.Lock()
        self.next_key = 0

    def send(self) -> None:
        with self.lock:
            key = f"k{self.next_key % KEYS}"
            self.next_key += 1
            self.outstanding += 1
        sent = time.perf_counter_ns()
        self.store.put(key, self.value, callback=lambda r, e: self.on_done(sent, r, e))

    def on_done(self, sent: int, result: Any, error: Any) -> None:
        now = time.time()
        with self.lock:
            self.outstanding -= 1
            if error != 0:
                self.errors += 1
            elif self.start_at <= now < self.end_at:
                self.ops += 1
                self.histogram.record((time.perf_counter_ns() - sent) // 1000)
        if now < self.end_at:
            self.send()

    def run(self) -> dict[str, Any]:
        for _ in range(self.in_flight):
            self.send()
        time.sleep(max(0.0, self.end_at - time.time()))
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while self.outstanding > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        seconds = self.end_at - self.start_at
        return {
            "in_flight": self.in_flight,
            "clients": 1,
            "in_flight_per_client": self.in_flight,
            "ops": self.ops,
            "errors": self.errors,
            "seconds": seconds,
            "ops_per_second": round(self.ops / seconds, 1),
            "latency_us": self.histogram.summary(),
        }


def run_workload(store: Any, workload: dict[str, Any]) -> dict[str, Any]:
    value = "v" * int(workload["value_bytes"])
    levels = []
    for in_flight in workload.get("levels", []):
        start_at = time.time() + float(workload["warmup_s"])
        level = _Level(store, in_flight, value, start_at, start_at + float(workload["measure_s"]))
        levels.append(level.run())
        print(f"pysyncobj level {in_flight}: {levels[-1]['ops_per_second']}/s", flush=True)
    result: dict[str, Any] = {"levels": levels}
    requests = int(workload.get("requests", 0))
    if requests:
        histogram = Histogram()
        for i in range(int(workload["warmup_requests"])):
            store.put(f"k{i % KEYS}", value, sync=True, timeout=30)
        started = time.perf_counter()
        for i in range(requests):
            sent = time.perf_counter_ns()
            store.put(f"k{i % KEYS}", value, sync=True, timeout=30)
            histogram.record((time.perf_counter_ns() - sent) // 1000)
        result["latency"] = {
            "requests": requests,
            "seconds": time.perf_counter() - started,
            "latency_us": histogram.summary(),
            "histogram": histogram.to_json(),
        }
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pysyncobj_node")
    parser.add_argument("--self", dest="self_address", required=True)
    parser.add_argument("--partners", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--workload", required=True, help="JSON")
    parser.add_argument("--batch", choices=("on", "off"), default="on")
    args = parser.parse_args(argv)
    pysyncobj = importlib.import_module("pysyncobj")
    conf = pysyncobj.SyncObjConf(appendEntriesUseBatch=args.batch == "on")
    store = make_store(pysyncobj)(args.self_address, args.partners.split(","), conf)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not (store.isReady() and store._getLeader() is not None):
        if time.monotonic() > deadline:
            print("no leader in time", file=sys.stderr)
            return 1
        time.sleep(0.05)
    if not store._isLeader():
        while True:  # a follower serves until the benchmark stops it
            time.sleep(3600)
    result = run_workload(store, json.loads(args.workload))
    temporary = args.result + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(result, handle)
    os.replace(temporary, args.result)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
