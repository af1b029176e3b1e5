"""Raft as a pure state machine: no I/O, no clock, no global randomness.

See `raft.py` for the theory of operation and `rawnode.py` for the caller's contract.
"""

from phalanx.core.errors import ConfigError, NotLeaderError, PhalanxError, ProposalDroppedError
from phalanx.core.log import RaftLog
from phalanx.core.messages import (
    AnyMessage,
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
from phalanx.core.raft import Raft, RaftConfig, Role
from phalanx.core.rawnode import RawNode, Ready, SoftState, Status
from phalanx.core.types import (
    NO_NODE,
    Entry,
    EntryKind,
    HardState,
    Index,
    NodeId,
    SnapshotMeta,
    Term,
)

__all__ = [
    "NO_NODE",
    "AnyMessage",
    "AppendRequest",
    "AppendResponse",
    "ConfigError",
    "Entry",
    "EntryKind",
    "HardState",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "Index",
    "InstallSnapshot",
    "Message",
    "NodeId",
    "NotLeaderError",
    "PhalanxError",
    "ProposalDroppedError",
    "Raft",
    "RaftConfig",
    "RaftLog",
    "RawNode",
    "Ready",
    "Role",
    "SnapshotMeta",
    "SoftState",
    "Status",
    "Term",
    "TimeoutNow",
    "VoteRequest",
    "VoteResponse",
]
