"""Recording what clients asked and what they were told, in real-time order.

Theory of operation
-------------------
Every client operation is two events: an invocation, recorded just before the
request leaves, and a completion, recorded as soon as the answer (or the error)
arrives. All clients run on one event loop, so appending to one list in the order
the events happen *is* the real-time order; the real interval of each operation
contains the moment the cluster acted on it, which is all a linearizability
checker needs.

Completions are `ok` (the answer), `fail` (the client knows the command did not take
effect: no leader was reachable, the request was refused, or the service answered
that it changed nothing) or `info` (the outcome is unknown: the deadline passed).
As in Jepsen, a process whose operation ended in `info` retires: its client goes on
under a fresh process id, since the old operation may still take effect later and
the checker must treat it as concurrent with everything after it.

The events are written in the checker's JSON-lines format (`phalanx.check.formats`):
`{"process", "type", "f", "key"?, "value"}` plus fields the checker ignores:
`time` (seconds since the run started), `client` (the client lane, for the report)
and `error`. Fault events are recorded under process "nemesis", which the checker
skips. At most `events_max` events are kept; `full` tells the clients to stop.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from phalanx.check import History, parse_history
from phalanx.check.formats import Format


class HistoryEvent(msgspec.Struct, omit_defaults=True):
    process: int | str
    type: str
    f: str
    value: Any = None
    key: str | None = None
    time: float = 0.0
    client: int | None = None
    error: str | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(HistoryEvent)


@dataclass(frozen=True, slots=True)
class Pending:
    """An operation in flight: what the completion must repeat."""

    process: int
    client: int
    f: str
    key: str | None
    start_s: float


class Recorder:
    """The history of one run, bounded by `events_max` events."""

    def __init__(self, clock: Callable[[], float], events_max: int) -> None:
        assert events_max >= 2
        self.clock = clock
        self.events_max = events_max
        self.events: list[HistoryEvent] = []
        self.counts = {"ok": 0, "fail": 0, "info": 0}
        self._in_flight: dict[int, Pending] = {}
        self._process_ids = itertools.count()

    @property
    def full(self) -> bool:
        # Room is kept for the completion of everything in flight: full means one more
        # invocation and its completion would not fit.
        return len(self.events) + len(self._in_flight) + 2 > self.events_max

    @property
    def completed(self) -> int:
        return sum(self.counts.values())

    def new_process(self) -> int:
        return next(self._process_ids)

    def invoke(self, process: int, client: int, f: str, key: str | None, value: Any) -> Pending:
        assert process not in self._in_flight, f"process {process} already has one in flight"
        assert not self.full, "invoke() after the history filled up"
        now = self.clock()
        pending = Pending(process, client, f, key, now)
        self._in_flight[process] = pending
        self.events.append(HistoryEvent(process, "invoke", f, value, key, _round(now), client))
        return pending

    def complete(self, pending: Pending, kind: str, value: Any = None, error: str = "") -> float:
        """Records the completion and returns the operation's latency in seconds."""
        assert kind in self.counts, kind
        assert self._in_flight.pop(pending.process) is pending
        now = self.clock()
        self.counts[kind] += 1
        self.events.append(
            HistoryEvent(
                pending.process,
                kind,
                pending.f,
                value,
                pending.key,
                _round(now),
                pending.client,
                error or None,
            )
        )
        return now - pending.start_s

    def nemesis(self, f: str, value: Any) -> None:
        """A fault event (skipped by the checker, drawn by the report)."""
        if len(self.events) + len(self._in_flight) < self.events_max:
            self.events.append(HistoryEvent("nemesis", "info", f, value, time=_round(self.clock())))

    def client_events(self) -> list[HistoryEvent]:
        return [event for event in self.events if event.process != "nemesis"]

    def write(self, path: Path) -> None:
        write_events(self.events, path)


def _round(seconds: float) -> float:
    return round(seconds, 6)


def write_events(events: Iterable[HistoryEvent], path: Path) -> None:
    with path.open("wb") as out:
        for event in events:
            out.write(_encoder.encode(event))
            out.write(b"\n")


def read_events(path: Path) -> list[HistoryEvent]:
    return [_decoder.decode(line) for line in path.read_bytes().splitlines() if line.strip()]


def load_for_checker(path: Path) -> History:
    """The history file exactly as `phalanx check` would read it."""
    return parse_history(path.read_text(encoding="utf-8"), str(path), Format.JSONL)
