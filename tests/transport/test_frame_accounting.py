"""`FrameReader` accounting: what it holds between reads is exactly the unfinished
frame, it says how much, and it gives the memory back once that frame is whole (issue
11, item 5: partial frames of 300 connections took 570 MiB)."""

from __future__ import annotations

import tracemalloc

import pytest

from phalanx.transport.wire import (
    FRAME_HEADER,
    PROTOCOL_VERSION,
    FrameError,
    FrameReader,
    Hello,
    StatusRequest,
    decode_message,
    encode_frame,
)

BIG_PAYLOAD_BYTES = 4 * 1024 * 1024
CHUNK_BYTES = 64 * 1024


def header(length: int) -> bytes:
    return FRAME_HEADER.pack(length, PROTOCOL_VERSION)


def test_buffered_bytes_is_the_unfinished_frame() -> None:
    reader = FrameReader()
    frame = encode_frame(StatusRequest(7))
    assert reader.buffered_bytes == 0
    assert reader.feed(frame[:2]) == []  # not even a whole header yet
    assert reader.buffered_bytes == 2
    assert reader.feed(frame[2:-1]) == []
    assert reader.buffered_bytes == len(frame) - 1
    (payload,) = reader.feed(frame[-1:] + frame[:3])  # the next frame begins
    assert decode_message(payload) == StatusRequest(7)
    assert reader.buffered_bytes == 3
    assert reader.frames_read == 1


def test_frames_read_tells_a_new_frame_from_the_same_one() -> None:
    reader = FrameReader()
    frame = encode_frame(StatusRequest(1))
    reader.feed(frame[:3])
    reader.feed(frame[3:5])
    assert reader.frames_read == 0  # still the first frame
    reader.feed(frame[5:] + frame[:5])
    assert reader.frames_read == 1  # the first is whole; the partial one is the second
    assert reader.buffered_bytes == 5


def test_an_oversized_frame_is_refused_before_its_payload_is_buffered() -> None:
    reader = FrameReader(max_frame_bytes=1000)
    with pytest.raises(FrameError, match="exceeds this connection's limit of 1000 bytes"):
        reader.feed(header(1001))
    assert reader.buffered_bytes == FRAME_HEADER.size


def test_the_limit_may_rise_between_frames_of_one_read() -> None:
    """A client may send its Hello and a large command in one write: the Hello is taken
    under the small limit, the command under the one its Hello earned."""
    hello = encode_frame(Hello("phalanx", "client"))
    command = header(5000) + bytes(5000)
    reader = FrameReader(max_frame_bytes=100)
    (first,) = reader.feed(hello + command)  # stops short of the large frame
    assert decode_message(first) == Hello("phalanx", "client")
    assert reader.buffered_bytes == len(command)
    reader.max_frame_bytes = 10_000
    assert reader.take_payloads() == [bytes(5000)]
    assert reader.take_payloads() == []
    assert reader.buffered_bytes == 0


def test_a_bad_frame_after_good_ones_raises_once_they_are_taken() -> None:
    reader = FrameReader(max_frame_bytes=100)
    good = encode_frame(StatusRequest(1))
    assert len(reader.feed(good + good + header(101))) == 2
    with pytest.raises(FrameError, match="exceeds"):
        reader.take_payloads()


def test_clear_forgets_the_unfinished_frame() -> None:
    reader = FrameReader()
    reader.feed(header(100) + bytes(50))
    reader.clear()
    assert reader.buffered_bytes == 0
    (payload,) = reader.feed(encode_frame(StatusRequest(2)))
    assert decode_message(payload) == StatusRequest(2)


def test_memory_of_a_large_frame_is_given_back_once_it_is_whole() -> None:
    reader = FrameReader(max_frame_bytes=BIG_PAYLOAD_BYTES)
    stream = header(BIG_PAYLOAD_BYTES) + bytes(BIG_PAYLOAD_BYTES)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        payloads = []
        for start in range(0, len(stream), CHUNK_BYTES):
            payloads += reader.feed(stream[start : start + CHUNK_BYTES])
        assert [len(p) for p in payloads] == [BIG_PAYLOAD_BYTES]
        del payloads
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < CHUNK_BYTES, "the reader kept the large frame's buffer"
    # The buffered frame (with its growth slack) and the one copy handed out.
    assert peak - before < 2.5 * BIG_PAYLOAD_BYTES
