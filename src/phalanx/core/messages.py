"""The messages Raft nodes exchange (Raft paper Fig. 2, plus PreVote, heartbeats and
leadership transfer from Ongaro's thesis §9.6, §6.2 and §3.10).

Every message carries the sender's `term`, `from_id` and `to`. They are frozen, tagged
`msgspec.Struct`s so the transport can encode and decode the `Message` union directly.
"""

from __future__ import annotations

import msgspec

from phalanx.core.types import Entry, Index, NodeId, SnapshotMeta, Term


class Message(msgspec.Struct, frozen=True, tag=True, array_like=True, gc=False):
    term: Term
    from_id: NodeId
    to: NodeId


class VoteRequest(Message, frozen=True, tag=True, array_like=True, gc=False):
    """RequestVote (§5.2). With `pre_vote`, a poll that changes no one's term (§9.6).

    `transfer` marks a campaign started by TimeoutNow: voters then ignore their
    leader lease, because the current leader asked for this election (§3.10).
    """

    last_log_index: Index
    last_log_term: Term
    pre_vote: bool = False
    transfer: bool = False


class VoteResponse(Message, frozen=True, tag=True, array_like=True, gc=False):
    granted: bool
    pre_vote: bool = False


class AppendRequest(Message, frozen=True, tag=True, array_like=True, gc=False):
    """AppendEntries (§5.3). An empty `entries` still carries `leader_commit`."""

    prev_log_index: Index
    prev_log_term: Term
    entries: tuple[Entry, ...]
    leader_commit: Index


class AppendResponse(Message, frozen=True, tag=True, array_like=True, gc=False):
    """Answer to AppendEntries.

    On success `index` is the last index the follower now matches. On rejection
    `index` is the `prev_log_index` that was rejected and (`reject_hint`, `hint_term`)
    is the follower's largest index whose term is at most the leader's `prev_log_term`,
    so the leader can skip a whole conflicting term per round trip (§5.3, "fast
    backtracking").
    """

    index: Index
    reject: bool = False
    reject_hint: Index = Index(0)
    hint_term: Term = Term(0)


class HeartbeatRequest(Message, frozen=True, tag=True, array_like=True, gc=False):
    """Leader liveness. `commit` is min(follower's match, leader commit), so a follower
    never learns a commit index beyond the entries it is known to hold."""

    commit: Index


class HeartbeatResponse(Message, frozen=True, tag=True, array_like=True, gc=False):
    """`last_index` is the follower's last log index: a value below what the leader
    believes it matches means the follower lost its disk, and replication restarts."""

    last_index: Index = Index(0)


class TimeoutNow(Message, frozen=True, tag=True, array_like=True, gc=False):
    """Leadership transfer: the leader tells an up-to-date follower to campaign now."""


class InstallSnapshot(Message, frozen=True, tag=True, array_like=True, gc=False):
    """InstallSnapshot (§7), metadata only: the leader's server streams the snapshot's
    bytes in bounded chunks beside this message and steps it into the follower's core
    only once they have all arrived and verified. The follower answers with an
    `AppendResponse` for `snapshot.index` (or for its commit index if it is ahead)."""

    snapshot: SnapshotMeta


AnyMessage = (
    VoteRequest
    | VoteResponse
    | AppendRequest
    | AppendResponse
    | HeartbeatRequest
    | HeartbeatResponse
    | TimeoutNow
    | InstallSnapshot
)
