"""Service code is untrusted: what it raises or returns becomes a deterministic error
reply for that command, the same bytes on every replica, and the container goes on
(issue 11, item 2). Only `MemoryError`, which says nothing about the command, stops."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from phalanx.core.types import Entry, EntryKind, Index, Term
from phalanx.service.container import ApplyStatus, ServiceContainer, ServiceFault
from phalanx.service.envelope import Command, OpenSession, encode_envelope

from .bad_services import FailingSnapshot, Misbehaving, UnencodableState

encode = msgspec.msgpack.encode
decode = msgspec.msgpack.decode


def run(container: ServiceContainer, commands: list[Any]) -> list[Any]:
    session = container.applied_index + 1
    entries = [OpenSession(0)] + [
        Command(0, session, seq, seq, encode(command)) for seq, command in enumerate(commands, 1)
    ]
    replies = []
    for index, envelope in enumerate(entries, session):
        entry = Entry(Term(1), Index(index), EntryKind.COMMAND, encode_envelope(envelope))
        result = container.apply(entry)
        assert result is not None and result.status is ApplyStatus.OK
        replies.append(result.reply)
    return replies[1:]


@pytest.mark.parametrize(
    ("op", "error", "type_name"),
    [
        ("huge", "unencodable_reply", "OverflowError"),
        ("object", "unencodable_reply", "TypeError"),
        ("exit", "service_exception", "SystemExit"),
        ("interrupt", "service_exception", "KeyboardInterrupt"),
        ("raise", "service_exception", "ValueError"),
    ],
)
def test_a_failing_command_gets_the_same_error_reply_on_every_replica(
    op: str, error: str, type_name: str
) -> None:
    commands = [{"op": op}, {"op": "put", "key": "after", "value": 1}]
    first = run(ServiceContainer(Misbehaving()), commands)
    second = run(ServiceContainer(Misbehaving()), commands)
    assert first == second  # byte for byte: no object ids, nothing process-specific
    reply = decode(first[0])
    assert reply["ok"] is False and reply["error"] == error
    assert reply["message"].startswith(type_name)
    assert decode(first[1]) == {"ok": True}  # and the next command applies as usual


def test_memory_error_stops_the_replica_naming_the_entry_and_the_service() -> None:
    with pytest.raises(ServiceFault, match=r"service Misbehaving failed on log entry 2"):
        run(ServiceContainer(Misbehaving()), [{"op": "oom"}])


def test_a_state_that_cannot_be_encoded_gives_a_digest_of_the_error() -> None:
    one, two = ServiceContainer(UnencodableState()), ServiceContainer(UnencodableState())
    run(one, [{"op": "put", "key": "k", "value": 1}])
    run(two, [{"op": "put", "key": "k", "value": 1}])
    assert one.state_digest() == two.state_digest()
    assert one.state_digest_error is not None
    assert "TypeError" in one.state_digest_error


def test_checkpoints_keep_coming_when_state_cannot_be_digested() -> None:
    from phalanx.service.container import ContainerLimits

    container = ServiceContainer(UnencodableState(), ContainerLimits(checkpoint_every_entries=2))
    run(container, [{"op": "put", "key": str(i), "value": i} for i in range(5)])
    assert [c.index for c in container.new_checkpoints] == [2, 4, 6]


def test_a_snapshot_that_raises_raises_to_the_caller_only() -> None:
    container = ServiceContainer(FailingSnapshot())
    run(container, [{"op": "put", "key": "k", "value": 1}])
    with pytest.raises(RuntimeError, match="snapshot is broken"):
        container.snapshot_bytes()
    assert decode(run(container, [{"op": "get", "key": "k"}])[0])["value"] == 1


def test_recursion_near_the_limit_fails_or_not_alike_at_any_caller_depth() -> None:
    """Nodes reach the container from different depths (a peer's read or the ready
    loop): RecursionError must depend on the command, not on the caller's stack."""
    from phalanx.core.types import Entry, EntryKind, Index, Term
    from phalanx.service.container import SERVICE_STACK_FRAMES
    from phalanx.service.envelope import Command, OpenSession, encode_envelope

    from .bad_services import DeepRecursion

    # 950: under Python's default limit of 1,000 frames, whether this one fails would
    # depend on how deep the caller already was.
    depths = [SERVICE_STACK_FRAMES - 40, 950, SERVICE_STACK_FRAMES + 20]
    envelopes = [OpenSession(0)] + [
        Command(0, 1, seq, seq, encode({"op": "recurse", "depth": depth}))
        for seq, depth in enumerate(depths, 1)
    ]
    entries = [
        Entry(Term(1), Index(i), EntryKind.COMMAND, encode_envelope(e))
        for i, e in enumerate(envelopes, 1)
    ]

    def from_depth(extra: int) -> list[bytes]:
        if extra:
            return from_depth(extra - 1)
        container = ServiceContainer(DeepRecursion())
        return [r.reply for r in container.apply_batch(entries) if r is not None]

    shallow, deep = from_depth(0), from_depth(60)
    assert shallow == deep
    outcomes = [decode(reply) for reply in shallow[1:]]
    assert outcomes[0] == {"ok": True, "depth": depths[0]}
    assert outcomes[-1]["error"] == "service_exception"
    assert outcomes[-1]["message"].startswith("RecursionError")


def test_error_replies_carry_no_object_address() -> None:
    from .bad_services import AddressInMessage

    replies = run(ServiceContainer(AddressInMessage()), [{"op": "address"}])
    message = decode(replies[0])["message"]
    assert message.startswith("ValueError: <object object at 0x...>"), message


def test_a_restore_that_raises_is_a_service_fault_naming_the_snapshot() -> None:
    from .bad_services import RefusingRestore

    source = ServiceContainer(RefusingRestore())
    run(source, [{"op": "put", "key": "k", "value": 1}])
    with pytest.raises(ServiceFault, match=r"failed in restore\(\) of the snapshot at log entry 2"):
        ServiceContainer(RefusingRestore()).restore(source.snapshot_bytes())
