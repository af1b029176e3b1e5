"""What travels over a phalanx TCP connection, and how it is framed.

Frame layout (big-endian)::

    +----------------+---------+---------------------------+
    | length: u32    | version | payload (length bytes)    |
    +----------------+---------+---------------------------+

`length` counts the payload only and may not exceed the connection's maximum frame
size; the version byte lets a future format be refused with a clear message instead
of misread. The payload is one msgpack-encoded `WireMessage`.

Every connection opens with a `Hello` from the side that connected: a peer names its
cluster id and node id; a client names the cluster id. The listener answers `Welcome`
or `Refused` (and closes). After that, a peer connection carries Raft messages one way
(each node dials every other node, so each direction has its own connection), and a
client connection carries requests and replies.
"""

from __future__ import annotations

import enum
import struct

import msgspec

from phalanx.core.messages import (
    AppendRequest,
    AppendResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from phalanx.core.raft import Role
from phalanx.core.types import Index, NodeId, SnapshotMeta, Term

PROTOCOL_VERSION = 1
FRAME_HEADER = struct.Struct(">IB")
#: Default largest payload a connection accepts (an AppendEntries batch is bounded
#: well below this by the core's max_message_bytes).
MAX_FRAME_BYTES_DEFAULT = 16 * 1024 * 1024


class FrameError(Exception):
    """The peer sent bytes that are not a valid frame; the connection must close."""


class PeerRole(enum.Enum):
    PEER = "peer"
    CLIENT = "client"


class Hello(msgspec.Struct, frozen=True, tag=True, array_like=True):
    cluster_id: str
    role: str
    node_id: int = 0
    #: A peer's description of the cluster it was started for (members, service, the
    #: settings that decide outcomes): nodes that disagree refuse each other rather
    #: than replicate one cluster's log into another's. Empty from clients.
    identity: str = ""


class Welcome(msgspec.Struct, frozen=True, tag=True, array_like=True):
    node_id: int
    #: Commands a client may have in flight on one session (the node's
    #: max_replies_per_session); 0 from peers. Clients cap their window to it.
    max_in_flight: int = 0


class Refused(msgspec.Struct, frozen=True, tag=True, array_like=True):
    reason: str


class OpenSessionRequest(msgspec.Struct, frozen=True, tag=True, array_like=True):
    request_id: int


class CommandRequest(msgspec.Struct, frozen=True, tag=True, array_like=True):
    request_id: int
    session_id: int
    seq: int
    first_incomplete: int
    payload: bytes


class KeepAliveRequest(msgspec.Struct, frozen=True, tag=True, array_like=True):
    request_id: int
    session_id: int


class StatusRequest(msgspec.Struct, frozen=True, tag=True, array_like=True):
    request_id: int


class SnapshotOffer(Message, frozen=True, tag=True, array_like=True, gc=False):
    """Leader to follower: a snapshot of `length` bytes is available for `snapshot`."""

    snapshot: SnapshotMeta
    length: int
    #: A repair: install it over a diverged service even though the log has it all.
    repair: bool = False


class SnapshotResume(Message, frozen=True, tag=True, array_like=True, gc=False):
    """Follower to leader: send that snapshot's bytes from `offset` (what it already has)."""

    snapshot: SnapshotMeta
    offset: int


class SnapshotChunk(Message, frozen=True, tag=True, array_like=True, gc=False):
    snapshot: SnapshotMeta
    offset: int
    data: bytes


class CheckpointReport(Message, frozen=True, tag=True, array_like=True, gc=False):
    """A node's digests after applying `index` entries, sent to every peer."""

    index: int
    log_digest: bytes
    state_digest: bytes


class RepairWanted(Message, frozen=True, tag=True, array_like=True, gc=False):
    """A follower whose service diverged asks the leader for a fresh snapshot."""


class Subscribe(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Client to leader: push this session's messages numbered above `after_seq` on
    this connection, then every new one."""

    request_id: int
    session_id: int
    after_seq: int


class PushedMessage(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Node to client: a message the service sent with `ctx.send`. `gap` says messages
    before this one were forgotten before the client came back for them."""

    session_id: int
    seq: int
    payload: bytes
    gap: bool = False


class RepairRequest(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Client to node: rebuild your service state from the leader's snapshot."""

    request_id: int


class SnapshotRequest(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Client to node: take a snapshot now."""

    request_id: int


class SnapshotReply(msgspec.Struct, frozen=True, tag=True, array_like=True):
    request_id: int
    index: int
    term: int
    message: str = ""


class ReplyStatus(enum.IntEnum):
    OK = 0
    #: This node does not lead; `leader_hint` is the leader's "host:port" if known.
    NOT_LEADER = 1
    #: The outcome is not known here (leadership changed, proposal dropped): retry
    #: with the same session and sequence number; exactly-once makes that safe.
    RETRY = 2
    SESSION_UNKNOWN = 3
    #: The request itself is wrong (message says why); retrying will not help.
    REJECTED = 4


class ClientReply(msgspec.Struct, frozen=True, tag=True, array_like=True):
    request_id: int
    status: ReplyStatus
    payload: bytes = b""
    leader_hint: str = ""
    message: str = ""
    session_id: int = 0


class NodeStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One node's answer to `StatusRequest`, as `phalanx status` and the clients see it.

    Encoded as a map keyed by field name, not `array_like` like the messages around it:
    the bytes are those of the dict of the same keys that nodes sent before this type
    existed (so `PROTOCOL_VERSION` stays 1), a reader ignores keys it does not know,
    and `msgspec.to_builtins` gives `phalanx status --json` the same keys as before.
    """

    #: Who this node is and whom it follows.
    id: NodeId
    role: Role
    term: Term
    #: The leader's node id; 0 when this node knows of none.
    leader: NodeId
    #: The leader's client address ("host:port"); "" when unknown.
    leader_address: str

    #: How far the log reaches, is committed, and is applied to the service.
    last_index: Index
    commit_index: Index
    applied_index: Index

    #: Chained digests (hex) of the entries, the service state and the outcomes applied
    #: so far: equal on every replica at equal `applied_index`.
    log_digest: str
    state_digest: str
    outcome_digest: str

    #: Faults caught and survived: why `state()` could not be digested, errors raised by
    #: the service and its callbacks, why the last snapshot failed (None: no fault).
    state_digest_error: str | None
    service_errors: int
    callback_errors: int
    snapshot_error: str | None

    #: The service's work: commands applied, retries answered from the reply cache
    #: instead of applied twice, open client sessions.
    commands_applied: int
    duplicates_suppressed: int
    sessions: int

    #: The node's own load: write-ahead log syncs, client requests waiting, requests
    #: refused as busy, event-loop stalls, and client retries joined to the proposal in
    #: flight or answered from the reply cache before reaching the log.
    syncs: int
    pending_requests: int
    refused_busy: int
    loop_stalls: int
    retries_joined: int
    retries_answered_from_cache: int

    #: Snapshots: the index the latest covers, the index the log now starts after,
    #: how many were taken, sent and received, and the longest fork taking one.
    snapshot_index: Index
    log_offset: Index
    snapshots_taken: int
    snapshots_sent: int
    snapshots_received: int
    snapshot_fork_ms_max: float

    #: Replica checks (`Verdict.describe()`): set while this node found its own service
    #: diverged from the majority; the latest check it decided; repairs it installed.
    diverged: str | None
    replica_check: str | None
    repairs: int

    #: Service timers pending, and fired so far.
    timers: int
    timers_fired: int


class StatusReply(msgspec.Struct, frozen=True, tag=True, array_like=True):
    request_id: int
    status: NodeStatus


WireMessage = (
    Hello
    | Welcome
    | Refused
    | VoteRequest
    | VoteResponse
    | AppendRequest
    | AppendResponse
    | HeartbeatRequest
    | HeartbeatResponse
    | TimeoutNow
    | InstallSnapshot
    | SnapshotOffer
    | SnapshotResume
    | SnapshotChunk
    | SnapshotRequest
    | SnapshotReply
    | CheckpointReport
    | RepairWanted
    | RepairRequest
    | Subscribe
    | PushedMessage
    | OpenSessionRequest
    | CommandRequest
    | KeepAliveRequest
    | StatusRequest
    | ClientReply
    | StatusReply
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(WireMessage)


def encode_frame(message: WireMessage) -> bytes:
    payload = _encoder.encode(message)
    return FRAME_HEADER.pack(len(payload), PROTOCOL_VERSION) + payload


def decode_message(payload: bytes) -> WireMessage:
    try:
        message: WireMessage = _decoder.decode(payload)
    except (msgspec.DecodeError, ValueError) as error:
        # ValueError covers what msgspec raises beyond DecodeError on hostile bytes
        # (invalid UTF-8 in a string, for one).
        raise FrameError(f"undecodable message: {error}") from None
    return message


class FrameReader:
    """Splits a byte stream into frame payloads, refusing bad or oversized frames.

    What it holds between reads is the start of a frame still arriving, at most one
    header plus `max_frame_bytes`; `buffered_bytes` says how much, so the listener can
    bound the total over all its connections. `max_frame_bytes` may rise between frames
    (a connection allows bigger frames once its Hello is accepted), so a frame over the
    limit stops `take_payloads` short rather than raising while frames before it wait
    to be handled: the next call, under the limit those frames set, decides.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES_DEFAULT) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        #: Frames taken so far: a change tells the caller a new frame has begun.
        self.frames_read = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet handed out: the unfinished frame."""
        return len(self._buffer)

    def append(self, data: bytes) -> None:
        self._buffer += data

    def take_payloads(self) -> list[bytes]:
        """The payloads of the whole frames buffered, up to the first bad one; raises
        `FrameError` if that is the first frame buffered."""
        buffer = self._buffer
        start = 0
        header_size = FRAME_HEADER.size
        payloads: list[bytes] = []
        # Through a view: slicing the bytearray would copy each payload twice.
        with memoryview(buffer) as view:
            while len(buffer) - start >= header_size:
                length, version = FRAME_HEADER.unpack_from(buffer, start)
                if version != PROTOCOL_VERSION or length > self.max_frame_bytes:
                    if payloads:
                        break
                    raise FrameError(self._problem(length, version))
                end = start + header_size + length
                if end > len(buffer):
                    break
                payloads.append(bytes(view[start + header_size : end]))
                start = end
        self.frames_read += len(payloads)
        if start == len(buffer):
            # A new bytearray rather than emptying this one: after a large frame the
            # old one would keep its allocation for the life of the connection.
            self.clear()
        elif start:
            del buffer[:start]
        return payloads

    def feed(self, data: bytes) -> list[bytes]:
        """Appends `data` and takes the whole frames buffered (see `take_payloads`)."""
        self.append(data)
        return self.take_payloads()

    def clear(self) -> None:
        """Forgets the unfinished frame (the connection is closing)."""
        self._buffer = bytearray()

    def _problem(self, length: int, version: int) -> str:
        if version != PROTOCOL_VERSION:
            return f"unsupported frame version {version}"
        return (
            f"frame of {length} bytes exceeds this connection's limit of "
            f"{self.max_frame_bytes} bytes"
        )
