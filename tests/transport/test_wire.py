"""Framing: length-prefixed, versioned, size-limited; bad bytes are refused."""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from phalanx.core import AppendRequest, Entry, Role, VoteRequest
from phalanx.core.types import Index, NodeId, Term
from phalanx.transport.wire import (
    FRAME_HEADER,
    CommandRequest,
    FrameError,
    FrameReader,
    Hello,
    NodeStatus,
    StatusReply,
    decode_message,
    encode_frame,
)


def node_status(node: int = 1, role: Role = Role.FOLLOWER, **changes: Any) -> NodeStatus:
    """A plausible status of node `node` at index 2000 of term 4 (node 1 leads), with
    `changes` applied: for tests that need a `NodeStatus` without a live node."""
    status = NodeStatus(
        id=NodeId(node),
        role=role,
        term=Term(4),
        leader=NodeId(1),
        leader_address="127.0.0.1:7101",
        last_index=Index(2000),
        commit_index=Index(2000),
        applied_index=Index(2000),
        log_digest="b" * 32,
        state_digest="a" * 32,
        outcome_digest="c" * 32,
        state_digest_error=None,
        service_errors=0,
        callback_errors=0,
        snapshot_error=None,
        commands_applied=1990,
        duplicates_suppressed=3,
        sessions=10,
        syncs=700,
        pending_requests=0,
        refused_busy=0,
        loop_stalls=0,
        retries_joined=0,
        retries_answered_from_cache=0,
        snapshot_index=Index(1000),
        log_offset=Index(900),
        snapshots_taken=2,
        snapshots_sent=0,
        snapshots_received=0,
        snapshot_fork_ms_max=1.25,
        diverged=None,
        replica_check="at index 2000: agree",
        repairs=0,
        timers=0,
        timers_fired=0,
    )
    return msgspec.structs.replace(status, **changes)


MESSAGES = [
    Hello("phalanx", "peer", 2),
    VoteRequest(Term(3), NodeId(1), NodeId(2), Index(10), Term(2), True, False),
    AppendRequest(
        Term(3), NodeId(1), NodeId(2), Index(4), Term(2), (Entry(Term(3), Index(5)),), Index(4)
    ),
    CommandRequest(7, 12, 3, 1, b"\x81\xa2op\xa3get"),
    StatusReply(9, node_status(2, diverged="at index 2000: self-diverged: node(s) 2")),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: object) -> None:
    (payload,) = FrameReader().feed(encode_frame(message))  # type: ignore[arg-type]
    assert decode_message(payload) == message


@given(st.lists(st.integers(1, 40), min_size=1, max_size=20))
def test_frames_survive_arbitrary_chunking(cuts: list[int]) -> None:
    stream = b"".join(encode_frame(m) for m in MESSAGES)  # type: ignore[arg-type]
    reader = FrameReader()
    payloads = []
    position = 0
    for cut in cuts * 50:
        payloads += reader.feed(stream[position : position + cut])
        position += cut
        if position >= len(stream):
            break
    payloads += reader.feed(stream[position:])
    assert [decode_message(p) for p in payloads] == MESSAGES


def test_oversized_frame_is_refused_before_reading_it() -> None:
    reader = FrameReader(max_frame_bytes=100)
    with pytest.raises(FrameError, match="exceeds"):
        reader.feed(FRAME_HEADER.pack(101, 1))


def test_unknown_version_is_refused() -> None:
    with pytest.raises(FrameError, match="version"):
        FrameReader().feed(FRAME_HEADER.pack(3, 9) + b"abc")


@given(st.binary(max_size=200))
def test_garbage_payload_raises_frame_error_only(payload: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_message(payload)


#: The keys of the dict nodes sent as their status before `NodeStatus`, in its order:
#: what `phalanx status --json` and summary files have always shown.
STATUS_KEYS_BEFORE_NODE_STATUS = [
    "id",
    "role",
    "term",
    "leader",
    "leader_address",
    "last_index",
    "commit_index",
    "applied_index",
    "log_digest",
    "state_digest",
    "outcome_digest",
    "state_digest_error",
    "service_errors",
    "callback_errors",
    "snapshot_error",
    "commands_applied",
    "duplicates_suppressed",
    "sessions",
    "syncs",
    "pending_requests",
    "refused_busy",
    "loop_stalls",
    "retries_joined",
    "retries_answered_from_cache",
    "snapshot_index",
    "log_offset",
    "snapshots_taken",
    "snapshots_sent",
    "snapshots_received",
    "snapshot_fork_ms_max",
    "diverged",
    "replica_check",
    "repairs",
    "timers",
    "timers_fired",
]


def test_a_status_reply_decodes_typed() -> None:
    sent = StatusReply(3, node_status(1, Role.LEADER, snapshot_error="snapshot at index 9: x"))
    (payload,) = FrameReader().feed(encode_frame(sent))
    received = decode_message(payload)
    assert received == sent
    assert isinstance(received, StatusReply)
    assert received.status.role is Role.LEADER
    assert received.status.state_digest_error is None
    assert received.status.snapshot_error == "snapshot at index 9: x"


def test_a_status_is_the_map_of_the_same_keys_nodes_sent_before() -> None:
    """Why `PROTOCOL_VERSION` did not change: a NodeStatus travels as the dict it
    replaced, so a reply from a node that still sends that dict decodes, and keys a
    newer node adds are ignored."""
    status = node_status(3)
    as_dict = msgspec.to_builtins(status)
    assert list(as_dict) == STATUS_KEYS_BEFORE_NODE_STATUS
    assert as_dict["role"] == "follower"
    assert msgspec.msgpack.encode(status) == msgspec.msgpack.encode(as_dict)

    class DictStatusReply(msgspec.Struct, tag="StatusReply", array_like=True):
        request_id: int
        status: dict[str, object]

    older = msgspec.msgpack.encode(DictStatusReply(4, {**as_dict, "added_later": [1, 2]}))
    assert decode_message(older) == StatusReply(4, status)


def test_a_status_missing_a_field_is_a_frame_error() -> None:
    """A status without a field the reader needs is refused as a bad message, not
    handed on with the field missing."""
    partial = msgspec.to_builtins(node_status())
    del partial["applied_index"]
    payload = msgspec.msgpack.encode(["StatusReply", 5, partial])
    with pytest.raises(FrameError, match="applied_index"):
        decode_message(payload)
