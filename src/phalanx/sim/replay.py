"""Replay equivalence, checked on seeded histories of the service container.

The rule: a replica rebuilt from any snapshot plus the log after it reaches the same
outcomes and digests as one that applied the whole log live. A violation is how a
restarted node comes to answer differently from the others (issue 11, item 1: the
reply cache forgot replies in the order they were cached, which a snapshot does not
keep).

Each seed generates a log the way a busy cluster writes one: sessions opened and
evicted, commands retried late and out of order, acknowledgements that jump, time that
moves and stalls so sessions expire, keepalives, clock entries, sessions the log never
opened. The real `ServiceContainer` (the code nodes run) applies it once live, taking
a snapshot before every `every`-th entry; each snapshot is then restored into a fresh
container and the rest of the log replayed. Every outcome (status, reply bytes,
duplicate flag) and the final log, state and outcome digests must match the live run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import msgspec

from phalanx.core.types import Entry, EntryKind, Index, Term
from phalanx.service.base import Service
from phalanx.service.container import (
    ApplyResult,
    ApplyStatus,
    ContainerLimits,
    ServiceContainer,
)
from phalanx.service.envelope import Clock, Command, KeepAlive, OpenSession, encode_envelope
from phalanx.sim.checkers import InvariantViolation

_encode = msgspec.msgpack.encode

#: Entries in one seed's history, and every how many entries a snapshot is rebuilt.
HISTORY_ENTRIES = 300
REBUILD_EVERY = 7


@dataclass(frozen=True)
class ReplayReport:
    seed: int
    entries: int
    rebuilds: int
    #: Outcome kinds the history reached (a history that reaches none proves little).
    statuses: frozenset[ApplyStatus]
    duplicates: int


class Registers(Service):
    """A minimal key-value service (sim imports no examples): put and get."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def apply(self, command: Any) -> Any:
        if command.get("op") == "put":
            self.values[command["key"]] = command["value"]
            return {"ok": True}
        return {"value": self.values.get(command["key"])}

    def state(self) -> Any:
        return sorted(self.values.items())

    def snapshot(self) -> Any:
        return self.values

    def restore(self, snapshot: Any) -> None:
        self.values = dict(snapshot)


def random_history(rng: random.Random, length: int) -> list[Any]:
    """Envelopes as a busy cluster's log holds them (see the module docstring)."""
    envelopes: list[Any] = []
    sessions: list[int] = []
    next_seq: dict[int, int] = {}
    time_ms = 0
    for _ in range(length):
        index = len(envelopes) + 1
        if rng.random() < 0.3:
            time_ms += rng.choice((0, 0, 5, 50, 400))
        roll = rng.random()
        if not sessions or roll < 0.04:
            envelopes.append(OpenSession(time_ms))
            sessions.append(index)
            next_seq[index] = 1
        elif roll < 0.07:
            envelopes.append(KeepAlive(time_ms, rng.choice(sessions)))
        elif roll < 0.09:
            envelopes.append(Clock(time_ms))
        elif roll < 0.1:  # a session this log never opened (or long forgotten)
            envelopes.append(Command(time_ms, index + 7, 1, 1, _encode({"op": "get", "key": "k"})))
        else:
            envelopes.append(_command(rng, time_ms, rng.choice(sessions), next_seq, index))
    return envelopes


def _command(
    rng: random.Random, time_ms: int, session: int, next_seq: dict[int, int], index: int
) -> Command:
    top = next_seq[session]
    if rng.random() < 0.35 and top > 1:
        seq = rng.randint(max(1, top - 12), top - 1)  # a late retry
    else:
        seq = top
        next_seq[session] = top + 1
    first_incomplete = rng.randint(max(1, seq - 10), seq)
    key = f"k{rng.randint(0, 20)}"
    command = (
        {"op": "put", "key": key, "value": index}
        if rng.random() < 0.7
        else {"op": "get", "key": key}
    )
    return Command(time_ms, session, seq, first_incomplete, _encode(command))


def limits_for(rng: random.Random) -> ContainerLimits:
    """Small bounds, so that they decide outcomes often."""
    return ContainerLimits(
        max_replies_per_session=rng.choice((2, 3, 5)),
        max_sessions=rng.choice((3, 5, 50)),
        session_timeout_ms=rng.choice((300, 1000, 60_000)),
    )


def entries_of(envelopes: list[Any]) -> list[Entry]:
    return [
        Entry(Term(1), Index(i + 1), EntryKind.COMMAND, encode_envelope(envelope))
        for i, envelope in enumerate(envelopes)
    ]


def outcome(result: ApplyResult | None) -> Any:
    if result is None:
        return None
    return (result.status, result.reply, result.session_id, result.seq, result.duplicate)


def digests(container: ServiceContainer) -> tuple[str, str, str, int]:
    return (
        container.log_digest(),
        container.state_digest(),
        container.outcome_digest(),
        len(container.sessions),
    )


def check_replay(
    seed: int, entries: int = HISTORY_ENTRIES, every: int = REBUILD_EVERY
) -> ReplayReport:
    """Raises `InvariantViolation` ("Replay Equivalence", at the log index where the
    rebuilt container first answered differently) or returns what the seed covered."""
    rng = random.Random(f"replay/{seed}")
    limits = limits_for(rng)
    log = entries_of(random_history(rng, entries))
    live = ServiceContainer(Registers(), limits)
    snapshots: list[tuple[int, bytes]] = []
    live_outcomes = []
    for position, entry in enumerate(log):
        if position % every == 0:
            snapshots.append((position, live.snapshot_bytes()))  # the state before `entry`
        live_outcomes.append(outcome(live.apply(entry)))
    for start, data in snapshots:
        rebuilt = ServiceContainer(Registers(), limits)
        rebuilt.restore(data)
        for position in range(start, len(log)):
            if outcome(rebuilt.apply(log[position])) != live_outcomes[position]:
                raise InvariantViolation(
                    "Replay Equivalence",
                    f"seed {seed}: a container rebuilt from the snapshot before entry "
                    f"{start + 1} answered entry {position + 1} differently from the live one",
                    position + 1,
                )
        if digests(rebuilt) != digests(live):
            raise InvariantViolation(
                "Replay Equivalence",
                f"seed {seed}: rebuilt from the snapshot before entry {start + 1}, the "
                f"digests differ from the live ones: {digests(rebuilt)} != {digests(live)}",
                len(log),
            )
    return ReplayReport(
        seed,
        len(log),
        len(snapshots),
        frozenset(o[0] for o in live_outcomes if o is not None),
        sum(1 for o in live_outcomes if o is not None and o[4]),
    )
