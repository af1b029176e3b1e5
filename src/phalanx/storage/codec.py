"""Byte formats of the data directory, as pure functions over bytes (no I/O).

The layout is drawn in `wal.py`. Everything here is little-endian and checksummed with
CRC32C (Castagnoli), the checksum etcd, RocksDB and Kafka use for their logs.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass

import msgspec
from crc32c import crc32c

from phalanx.core.errors import invariant
from phalanx.core.types import Entry, HardState, Index, Term
from phalanx.limits import (
    RECORD_PAYLOAD_BYTES_MAX,
    SMALL_FILE_BYTES_MAX,
)
from phalanx.storage.errors import StorageCorruptError, StorageError

#: Format version written into every segment header and small file.
FORMAT_VERSION = 1

SEGMENT_MAGIC = b"PXWL"
#: magic, format version, reserved (0), first index, CRC32C of the 16 bytes before it.
_SEGMENT_HEADER = struct.Struct("<4sHHQI")
SEGMENT_HEADER_BYTES = _SEGMENT_HEADER.size

#: payload length, CRC32C of the payload.
_RECORD_HEADER = struct.Struct("<II")
RECORD_HEADER_BYTES = _RECORD_HEADER.size

#: magic, format version, reserved (0), payload length, CRC32C of the payload.
_SMALL_FILE_HEADER = struct.Struct("<4sHHII")
HARD_STATE_MAGIC = b"PXHS"
META_MAGIC = b"PXMT"

_encoder = msgspec.msgpack.Encoder()
_entry_decoder = msgspec.msgpack.Decoder(Entry)
_hard_state_decoder = msgspec.msgpack.Decoder(HardState)


class Meta(msgspec.Struct, frozen=True):
    """Who owns a data directory, written once when the directory is first opened."""

    cluster_id: str
    node_id: int


_meta_decoder = msgspec.msgpack.Decoder(Meta)

#: Every encoded entry starts with this byte (a msgpack array of Entry's four fields);
#: the search for valid records after a damaged one only tries offsets that have it.
PAYLOAD_FIRST_BYTE = _encoder.encode(Entry(Term(0), Index(0)))[:1]


# -- segments --------------------------------------------------------------------------------


def encode_segment_header(first_index: int) -> bytes:
    invariant(first_index >= 1, "segment starting at index %d", first_index)
    head = struct.pack("<4sHHQ", SEGMENT_MAGIC, FORMAT_VERSION, 0, first_index)
    return head + struct.pack("<I", crc32c(head))


def decode_segment_header(data: bytes) -> tuple[int | None, str | None]:
    """The segment's first index, or the problem that prevents reading it."""
    if len(data) < SEGMENT_HEADER_BYTES:
        return None, f"segment header incomplete ({len(data)} of {SEGMENT_HEADER_BYTES} bytes)"
    magic, version, _, first_index, stored = _SEGMENT_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        return None, f"bad segment magic {magic!r} (expected {SEGMENT_MAGIC!r})"
    computed = crc32c(data[: SEGMENT_HEADER_BYTES - 4])
    if stored != computed:
        return (
            None,
            f"segment header CRC mismatch (stored {stored:#010x}, computed {computed:#010x})",
        )
    if version != FORMAT_VERSION:
        return (
            None,
            f"unsupported segment format version {version} (this build reads {FORMAT_VERSION})",
        )
    if first_index < 1:
        return None, "segment header names first index 0"
    return int(first_index), None


# -- records ---------------------------------------------------------------------------------


def encode_record(entry: Entry) -> bytes:
    """Length, CRC32C and payload of one entry; the entry is encoded exactly once."""
    payload = _encoder.encode(entry)
    if len(payload) > RECORD_PAYLOAD_BYTES_MAX:
        raise StorageError(
            f"entry {entry.index} encodes to {len(payload)} bytes, above the record "
            f"maximum of {RECORD_PAYLOAD_BYTES_MAX} bytes"
        )
    return _RECORD_HEADER.pack(len(payload), crc32c(payload)) + payload


@dataclass(slots=True)
class RecordRead:
    """One attempt to read a record: an entry, or the reason there is none."""

    entry: Entry | None
    end: int
    problem: str | None


def read_record(data: bytes, offset: int, path: str) -> RecordRead:
    """Reads the record at `offset`. A problem a torn write can cause is returned (the
    caller decides whether it is a torn tail); a record whose CRC matches but whose
    payload is not an Entry cannot come from a torn write, so it raises."""
    remaining = len(data) - offset
    if remaining < RECORD_HEADER_BYTES:
        return RecordRead(None, offset, f"incomplete record header ({remaining} of 8 bytes)")
    length, stored = _RECORD_HEADER.unpack_from(data, offset)
    if length == 0 or length > RECORD_PAYLOAD_BYTES_MAX:
        return RecordRead(
            None, offset, f"record length {length} outside 1..{RECORD_PAYLOAD_BYTES_MAX}"
        )
    start = offset + RECORD_HEADER_BYTES
    if length > len(data) - start:
        return RecordRead(
            None, offset, f"incomplete record payload ({len(data) - start} of {length} bytes)"
        )
    payload = memoryview(data)[start : start + length]
    computed = crc32c(payload)
    if computed != stored:
        return RecordRead(
            None, offset, f"record CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
        )
    try:
        entry = _entry_decoder.decode(payload)
    except (msgspec.DecodeError, ValueError) as error:
        raise StorageCorruptError(
            path, offset, f"record CRC matches but payload is not an entry: {error}"
        ) from None
    return RecordRead(entry, start + length, None)


@dataclass(slots=True)
class SegmentScan:
    """What a segment holds up to its first unreadable record."""

    entries: list[Entry]
    #: Byte offset of each entry's record, parallel to `entries`.
    offsets: array[int]
    #: End of the last good record: the length the file is cut to if its tail is torn.
    good_end: int
    #: Why reading stopped before the end of the data (None: it did not).
    problem: str | None


def scan_records(data: bytes, first_index: int, last_term: int, path: str) -> SegmentScan:
    """Reads the records after a segment header. Entries must carry consecutive indices
    from `first_index` and never-decreasing terms (after `last_term`, the term of the
    entry before this segment); anything else is corruption, whatever its position."""
    entries: list[Entry] = []
    offsets: array[int] = array("Q")
    offset = SEGMENT_HEADER_BYTES
    while offset < len(data):
        read = read_record(data, offset, path)
        if read.entry is None:
            return SegmentScan(entries, offsets, offset, read.problem)
        entry = read.entry
        expected = first_index + len(entries)
        if entry.index != expected:
            raise StorageCorruptError(
                path, offset, f"record holds index {entry.index}, expected {expected} (index gap)"
            )
        if entry.term < last_term:
            raise StorageCorruptError(
                path, offset, f"entry {entry.index} has term {entry.term} after term {last_term}"
            )
        last_term = entry.term
        entries.append(entry)
        offsets.append(offset)
        offset = read.end
    return SegmentScan(entries, offsets, offset, None)


def find_valid_record_after(data: bytes, start: int, index_min: int, path: str) -> int | None:
    """The offset of a well-formed record (CRC matches, decodes, index >= `index_min`)
    after `start`, if there is one. A torn tail has nothing valid after the damage; a
    flipped bit in the middle of a segment does. Only offsets whose payload would start
    with `PAYLOAD_FIRST_BYTE` are tried, so the search is linear in the tail's size."""
    position = start + RECORD_HEADER_BYTES
    while True:
        position = data.find(PAYLOAD_FIRST_BYTE, position)
        if position < 0:
            return None
        candidate = position - RECORD_HEADER_BYTES
        position += 1
        try:
            read = read_record(data, candidate, path)
        except StorageCorruptError:
            continue
        if read.entry is not None and read.entry.index >= index_min:
            return candidate


# -- small files (hard state, meta) ------------------------------------------------------------


def encode_small_file(magic: bytes, payload: bytes) -> bytes:
    invariant(len(payload) <= SMALL_FILE_BYTES_MAX, "small file of %d bytes", len(payload))
    header = _SMALL_FILE_HEADER.pack(magic, FORMAT_VERSION, 0, len(payload), crc32c(payload))
    return header + payload


def decode_small_file(magic: bytes, data: bytes, path: str) -> bytes:
    """The payload of a hard-state or meta file. These files are replaced by an atomic
    rename, so a torn one is never legitimate: any problem is corruption."""
    if len(data) < _SMALL_FILE_HEADER.size:
        raise StorageCorruptError(path, 0, f"file too short ({len(data)} bytes)")
    found, version, _, length, stored = _SMALL_FILE_HEADER.unpack_from(data)
    if found != magic:
        raise StorageCorruptError(path, 0, f"bad magic {found!r} (expected {magic!r})")
    if version != FORMAT_VERSION:
        raise StorageCorruptError(path, 4, f"unsupported format version {version}")
    payload = data[_SMALL_FILE_HEADER.size :]
    if len(payload) != length:
        raise StorageCorruptError(path, 8, f"length field {length}, file holds {len(payload)}")
    if crc32c(payload) != stored:
        raise StorageCorruptError(path, _SMALL_FILE_HEADER.size, "CRC mismatch")
    return payload


def encode_hard_state(hard_state: HardState) -> bytes:
    return encode_small_file(HARD_STATE_MAGIC, _encoder.encode(hard_state))


def decode_hard_state(data: bytes, path: str) -> HardState:
    payload = decode_small_file(HARD_STATE_MAGIC, data, path)
    try:
        return _hard_state_decoder.decode(payload)
    except (msgspec.DecodeError, ValueError) as error:
        raise StorageCorruptError(path, 0, f"not a hard state: {error}") from None


def encode_meta(meta: Meta) -> bytes:
    return encode_small_file(META_MAGIC, _encoder.encode(meta))


def decode_meta(data: bytes, path: str) -> Meta:
    payload = decode_small_file(META_MAGIC, data, path)
    try:
        return _meta_decoder.decode(payload)
    except (msgspec.DecodeError, ValueError) as error:
        raise StorageCorruptError(path, 0, f"not a meta file: {error}") from None
