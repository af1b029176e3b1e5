"""The service container: cluster time, sessions, exactly-once (Raft thesis §6.3)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from phalanx.core.types import Entry, EntryKind, Index, Term
from phalanx.examples.kv import KeyValue
from phalanx.service import Service
from phalanx.service.container import ApplyStatus, ContainerLimits, ServiceContainer
from phalanx.service.envelope import (
    CloseSession,
    Command,
    Envelope,
    KeepAlive,
    OpenSession,
    encode_envelope,
)

encode = msgspec.msgpack.encode
decode = msgspec.msgpack.decode


class Feeder:
    """Feeds envelopes to a container as consecutive log entries."""

    def __init__(self, container: ServiceContainer) -> None:
        self.container = container
        self.index = 0

    def entry(self, envelope: Envelope | bytes, kind: EntryKind = EntryKind.COMMAND) -> Any:
        self.index += 1
        data = envelope if isinstance(envelope, bytes) else encode_envelope(envelope)
        return self.container.apply(Entry(Term(1), Index(self.index), kind, data))

    def open(self, time_ms: int = 0) -> int:
        result = self.entry(OpenSession(time_ms))
        assert result.status is ApplyStatus.OK
        return int(result.session_id)

    def command(
        self, session: int, seq: int, command: Any, time_ms: int = 0, first: int = 1
    ) -> Any:
        return self.entry(Command(time_ms, session, seq, first, encode(command)))


def kv_feeder(**limits: int) -> Feeder:
    return Feeder(ServiceContainer(KeyValue(), ContainerLimits(**limits)))


def test_session_id_is_the_log_index_of_its_open_entry() -> None:
    feeder = kv_feeder()
    feeder.entry(b"", EntryKind.NOOP)
    assert feeder.open() == 2


def test_retry_with_same_sequence_number_returns_cached_reply_and_applies_once() -> None:
    feeder = kv_feeder()
    session = feeder.open()
    first = feeder.command(session, 1, {"op": "append", "key": "k", "value": "a"})
    again = feeder.command(session, 1, {"op": "append", "key": "k", "value": "a"})
    assert decode(first.reply) == {"ok": True, "value": "a"}
    assert again.reply == first.reply and again.duplicate
    assert feeder.container.service.state() == {"k": "a"}
    assert feeder.container.duplicates_suppressed == 1


def test_out_of_order_sequence_numbers_each_apply_once() -> None:
    # Pipelined clients: seq 2 may commit before a retried seq 1.
    feeder = kv_feeder()
    session = feeder.open()
    feeder.command(session, 2, {"op": "append", "key": "k", "value": "b"})
    feeder.command(session, 1, {"op": "append", "key": "k", "value": "a"})
    feeder.command(session, 2, {"op": "append", "key": "k", "value": "b"})
    assert feeder.container.service.state() == {"k": "ba"}


def test_acknowledged_replies_are_forgotten_and_stale_duplicates_refused() -> None:
    feeder = kv_feeder()
    session = feeder.open()
    feeder.command(session, 1, {"op": "put", "key": "k", "value": 1})
    feeder.command(session, 2, {"op": "put", "key": "k", "value": 2}, first=2)
    stale = feeder.command(session, 1, {"op": "put", "key": "k", "value": 1}, first=2)
    assert stale.status is ApplyStatus.STALE
    assert feeder.container.service.state() == {"k": 2}


def test_sessions_expire_by_cluster_time_not_wall_clock() -> None:
    feeder = kv_feeder(session_timeout_ms=1000)
    session = feeder.open(time_ms=10_000)
    feeder.entry(KeepAlive(10_900, session))
    assert feeder.command(session, 1, {"op": "get", "key": "x"}, time_ms=11_800).status is (
        ApplyStatus.OK
    )
    other = feeder.open(time_ms=11_800)
    result = feeder.command(session, 2, {"op": "get", "key": "x"}, time_ms=12_801)
    assert result.status is ApplyStatus.SESSION_UNKNOWN
    assert other not in feeder.container.sessions  # idle since 11_800 too


def test_cluster_time_never_runs_backwards() -> None:
    feeder = kv_feeder()
    feeder.open(time_ms=5000)
    feeder.open(time_ms=3000)  # a new leader with a slower clock
    assert feeder.container.cluster_time_ms == 5000


def test_session_count_is_bounded_by_evicting_least_recently_active() -> None:
    feeder = kv_feeder(max_sessions=2)
    first, second = feeder.open(), feeder.open()
    feeder.entry(KeepAlive(0, first))
    third = feeder.open()
    assert list(feeder.container.sessions) == [first, third]
    assert second not in feeder.container.sessions


def test_replies_cached_per_session_are_bounded() -> None:
    feeder = kv_feeder(max_replies_per_session=2)
    session = feeder.open()
    feeder.command(session, 1, {"op": "get", "key": "a"})
    feeder.command(session, 2, {"op": "get", "key": "a"})
    result = feeder.command(session, 3, {"op": "get", "key": "a"})
    assert result.status is ApplyStatus.TOO_MANY_INFLIGHT


def test_close_session() -> None:
    feeder = kv_feeder()
    session = feeder.open()
    assert feeder.entry(CloseSession(0, session)).status is ApplyStatus.OK
    assert feeder.entry(CloseSession(0, session)).status is ApplyStatus.SESSION_UNKNOWN


def test_malformed_entries_and_commands_are_error_replies_not_crashes() -> None:
    feeder = kv_feeder()
    assert feeder.entry(b"\xc1garbage").status is ApplyStatus.MALFORMED
    session = feeder.open()
    result = feeder.entry(Command(0, session, 1, 1, b"\xc1"))
    assert decode(result.reply)["error"] == "malformed_command"
    result = feeder.command(session, 2, {"op": "launch"})
    assert decode(result.reply)["error"] == "unknown_op"


class Exploding(Service):
    def apply(self, command: Any) -> Any:
        raise RuntimeError(f"cannot {command}")

    def state(self) -> Any:
        return None


def test_service_exception_becomes_the_same_error_reply_everywhere() -> None:
    replies = []
    for _ in range(2):
        feeder = Feeder(ServiceContainer(Exploding()))
        session = feeder.open()
        replies.append(feeder.command(session, 1, "fly").reply)
    assert replies[0] == replies[1]
    assert decode(replies[0])["error"] == "service_exception"


def test_digests_agree_for_equal_histories_and_differ_otherwise() -> None:
    def run(value: str) -> ServiceContainer:
        feeder = kv_feeder()
        session = feeder.open()
        feeder.command(session, 1, {"op": "put", "key": "k", "value": value})
        return feeder.container

    a, b, c = run("x"), run("x"), run("y")
    assert a.log_digest() == b.log_digest() != c.log_digest()
    assert a.state_digest() == b.state_digest() != c.state_digest()


def test_entries_must_be_applied_in_order() -> None:
    container = ServiceContainer(KeyValue())
    with pytest.raises(AssertionError):
        container.apply(Entry(Term(1), Index(2), EntryKind.NOOP, b""))


def test_invalid_utf8_in_a_client_payload_is_an_error_reply() -> None:
    # msgspec raises UnicodeDecodeError (not DecodeError) for a bad str: found by the
    # wire fuzz test. An exception here would stop every replica at the same entry.
    feeder = kv_feeder()
    session = feeder.open()
    bad_string = b"\x81\xa2op\xa2\xff\xfe"  # {"op": <invalid UTF-8>}
    result = feeder.entry(Command(0, session, 1, 1, bad_string))
    assert decode(result.reply)["error"] == "malformed_command"


def test_snapshot_restores_service_sessions_time_and_digests() -> None:
    feeder = kv_feeder()
    session = feeder.open(time_ms=1000)
    feeder.command(session, 1, {"op": "append", "key": "k", "value": "a"}, time_ms=2000)
    data = feeder.container.snapshot_bytes()
    copy = ServiceContainer(KeyValue())
    copy.restore(data)
    assert copy.applied_index == feeder.container.applied_index
    assert copy.log_digest() == feeder.container.log_digest()
    assert copy.state_digest() == feeder.container.state_digest()
    assert copy.cluster_time_ms == 2000
    # The restored session still recognises a retry, and both go on identically.
    clone = Feeder(copy)
    clone.index = feeder.index
    retry = clone.command(session, 1, {"op": "append", "key": "k", "value": "a"})
    assert retry.duplicate and decode(retry.reply) == {"ok": True, "value": "a"}
    original = feeder.command(session, 1, {"op": "append", "key": "k", "value": "a"})
    assert original.reply == retry.reply
    assert copy.log_digest() == feeder.container.log_digest()


def test_foreign_bytes_are_not_a_snapshot() -> None:
    from phalanx.service.container import SnapshotFormatError

    with pytest.raises(SnapshotFormatError):
        ServiceContainer(KeyValue()).restore(encode({"format": 99}))


def test_services_without_restore_say_so() -> None:
    from phalanx.examples.bank import Bank
    from phalanx.service.base import SnapshotUnsupportedError

    assert KeyValue.supports_snapshots() and Bank.supports_snapshots()
    assert not Exploding.supports_snapshots()
    with pytest.raises(SnapshotUnsupportedError, match="restore"):
        Exploding().restore(None)
