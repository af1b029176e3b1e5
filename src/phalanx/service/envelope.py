"""The records phalanx writes into the log for a hosted service.

Every `COMMAND` entry's data is one encoded `Envelope`. The leader stamps each with its
wall-clock time in milliseconds; the container turns those stamps into cluster time
(never running backwards), so that session expiry, and later timers, depend only on
the log and every replica and every replay decides them identically.

The user's command travels as `payload`: the bytes the client encoded, passed through
the log untouched and decoded once, by the container, on apply.
"""

from __future__ import annotations

import msgspec


class OpenSession(msgspec.Struct, frozen=True, tag="open", array_like=True, gc=False):
    time_ms: int


class CloseSession(msgspec.Struct, frozen=True, tag="close", array_like=True, gc=False):
    time_ms: int
    session_id: int


class KeepAlive(msgspec.Struct, frozen=True, tag="keepalive", array_like=True, gc=False):
    time_ms: int
    session_id: int


class Clock(msgspec.Struct, frozen=True, tag="clock", array_like=True, gc=False):
    """Only advances cluster time: the leader appends one when a timer is due and no
    other entry would carry the time forward."""

    time_ms: int


class Command(msgspec.Struct, frozen=True, tag="command", array_like=True, gc=False):
    time_ms: int
    session_id: int
    #: Per-session sequence number, from 1. A retry reuses it.
    seq: int
    #: The lowest sequence number whose reply the client has not yet received: replies
    #: below it may be forgotten (Raft thesis §6.3, RIFL's acknowledgement).
    first_incomplete: int
    payload: bytes


Envelope = OpenSession | CloseSession | KeepAlive | Command | Clock

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)


def encode_envelope(envelope: Envelope) -> bytes:
    return _encoder.encode(envelope)


def decode_envelope(data: bytes) -> Envelope:
    """Raises `msgspec.DecodeError` on bytes that are not an envelope."""
    envelope: Envelope = _decoder.decode(data)
    return envelope
