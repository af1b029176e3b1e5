"""Framing: length-prefixed, versioned, size-limited; bad bytes are refused."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phalanx.core import AppendRequest, Entry, VoteRequest
from phalanx.core.types import Index, NodeId, Term
from phalanx.transport.wire import (
    FRAME_HEADER,
    CommandRequest,
    FrameError,
    FrameReader,
    Hello,
    decode_message,
    encode_frame,
)

MESSAGES = [
    Hello("phalanx", "peer", 2),
    VoteRequest(Term(3), NodeId(1), NodeId(2), Index(10), Term(2), True, False),
    AppendRequest(
        Term(3), NodeId(1), NodeId(2), Index(4), Term(2), (Entry(Term(3), Index(5)),), Index(4)
    ),
    CommandRequest(7, 12, 3, 1, b"\x81\xa2op\xa3get"),
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
