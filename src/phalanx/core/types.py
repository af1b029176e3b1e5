"""Value types shared by every layer: identifiers, log entries and hard state.

`Term`, `Index` and `NodeId` are `NewType`s over `int` so that the type checker keeps
them apart (a term passed where an index is expected is a bug the checker finds).
Entries and hard state are frozen `msgspec.Struct`s: immutable, slotted, and encodable
by the storage and transport layers without a second representation.
"""

from __future__ import annotations

import enum
from typing import NewType

import msgspec

Term = NewType("Term", int)
Index = NewType("Index", int)
NodeId = NewType("NodeId", int)

#: The "no node" value for `HardState.vote` and leader hints (node ids start at 1).
NO_NODE = NodeId(0)


class EntryKind(enum.IntEnum):
    """What an entry carries. Only `COMMAND` entries reach the service."""

    COMMAND = 0
    #: The empty entry a new leader appends at the start of its term (Raft §5.4.2 / §8):
    #: committing it commits every earlier entry and lets the leader learn the commit index.
    NOOP = 1
    #: A membership change (reserved for the membership-change work).
    CONFIG = 2


class Entry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One record of the replicated log. `data` is opaque to the core."""

    term: Term
    index: Index
    kind: EntryKind = EntryKind.COMMAND
    data: bytes = b""


class HardState(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What a node must persist before it sends a vote or an acknowledgement (§5, Fig. 2).

    `commit` is persisted too (as etcd does) so a restarted node can apply up to it
    without waiting to hear from a leader; it is a hint, never a safety requirement.
    """

    term: Term = Term(0)
    vote: NodeId = NO_NODE
    commit: Index = Index(0)


class SnapshotMeta(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Where a snapshot sits in the log: it replaces every entry up to `index`.

    The snapshot's contents (the service state) never pass through the core; the
    caller stores and transfers them, and hands the core only this description."""

    index: Index = Index(0)
    term: Term = Term(0)


#: Bytes counted for an entry beyond its payload when bounding messages and the
#: leader's uncommitted tail (term, index and kind as encoded).
ENTRY_OVERHEAD_BYTES = 24


def entry_size_bytes(entry: Entry) -> int:
    """The size an entry counts for in every byte limit."""
    return len(entry.data) + ENTRY_OVERHEAD_BYTES
