"""What the leader knows of each follower's log, and how fast it may send to it.

A follower is in one of two states (as in etcd-io/raft's tracker):

* PROBE: the leader does not know where the logs match. It sends one AppendEntries
  at a time and waits for the answer (or a heartbeat response) before the next, so a
  lagging follower is found with few messages.
* SNAPSHOT: the follower needs entries the leader compacted away; an InstallSnapshot
  is outstanding and nothing else is sent until it is answered or given up on.
* REPLICATE: the logs match up to `match`. The leader streams entries optimistically,
  advancing `next` as it sends, with at most `Inflights` messages and bytes unanswered:
  that window is the pipeline, and its bound is the back-pressure.
"""

from __future__ import annotations

import enum
from collections import deque

from phalanx.core.types import Index


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    #: The entries the follower needs are compacted away: a snapshot is on its way,
    #: and nothing else is sent until the follower answers for it.
    SNAPSHOT = "snapshot"


class Inflights:
    """A bounded window of sent, unacknowledged AppendEntries (last index and bytes)."""

    __slots__ = ("_bytes", "_messages", "max_bytes", "max_messages")

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        assert max_messages > 0 and max_bytes > 0
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._messages: deque[tuple[int, int]] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._messages)

    def full(self) -> bool:
        return len(self._messages) >= self.max_messages or self._bytes >= self.max_bytes

    def add(self, last_index: int, size_bytes: int) -> None:
        assert not self.full(), "sent beyond the inflight window"
        assert not self._messages or self._messages[-1][0] < last_index
        self._messages.append((last_index, size_bytes))
        self._bytes += size_bytes

    def free_to(self, index: int) -> None:
        """Forgets every message whose last entry is at or below `index`."""
        messages = self._messages
        while messages and messages[0][0] <= index:
            self._bytes -= messages.popleft()[1]

    def reset(self) -> None:
        self._messages.clear()
        self._bytes = 0


class Progress:
    __slots__ = (
        "inflights",
        "match",
        "match_at_last_heartbeat",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "stalled_heartbeats",
        "state",
    )

    def __init__(self, next_index: Index, max_inflight_messages: int, max_inflight_bytes: int):
        self.match = Index(0)
        self.next = next_index
        self.state = ProgressState.PROBE
        #: In PROBE, an append is outstanding; nothing more is sent until it is answered.
        self.probe_sent = False
        #: Heard from since the last CheckQuorum round (§6.2).
        self.recent_active = False
        self.inflights = Inflights(max_inflight_messages, max_inflight_bytes)
        #: Heartbeat rounds answered while appends were outstanding and `match` stood
        #: still: the appends (or their answers) were lost, so the pipeline restarts.
        self.stalled_heartbeats = 0
        self.match_at_last_heartbeat = Index(0)
        self.pending_snapshot = Index(0)

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.value}, "
            f"inflight={len(self.inflights)})"
        )

    def become_probe(self) -> None:
        self.stalled_heartbeats = 0
        self.state = ProgressState.PROBE
        self.next = Index(self.match + 1)
        self.probe_sent = False
        self.inflights.reset()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = Index(self.match + 1)
        self.probe_sent = False
        self.inflights.reset()

    def become_snapshot(self, snapshot_index: Index) -> None:
        self.stalled_heartbeats = 0
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.next = Index(snapshot_index + 1)
        self.inflights.reset()

    def on_heartbeat_response(self, stall_limit: int, snapshot_stall_limit: int) -> bool:
        """Resumes a paused follower; True when the pipeline must restart from `match`.

        A probe is resent on every heartbeat answer. A full pipeline whose acks stopped
        for `stall_limit` heartbeat rounds lost messages (a dropped connection, a lossy
        network): falling back to PROBE resends from `match + 1`."""
        self.probe_sent = False
        if self.state is ProgressState.SNAPSHOT:
            # A snapshot that is neither answered nor reported failed within the limit
            # was lost on the way: probing again sends a fresh one.
            self.stalled_heartbeats += 1
            if self.stalled_heartbeats >= snapshot_stall_limit:
                self.become_probe()
                return True
            return False
        if self.state is ProgressState.PROBE or not len(self.inflights):
            self.stalled_heartbeats = 0
        elif self.match == self.match_at_last_heartbeat:
            self.stalled_heartbeats += 1
        else:
            self.stalled_heartbeats = 0
        self.match_at_last_heartbeat = self.match
        if self.stalled_heartbeats >= stall_limit:
            self.become_probe()
            return True
        return False

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.SNAPSHOT:
            return True
        return self.inflights.full()

    def maybe_update(self, index: Index) -> bool:
        """A success response for `index` arrived; False if it says nothing new."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        if index + 1 > self.next:
            self.next = Index(index + 1)
        return updated

    def maybe_decrease_to(self, rejected: Index, match_hint: Index) -> bool:
        """A rejection of `prev_log_index == rejected` arrived; False if it is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = Index(self.match + 1)
            return True
        if self.state is ProgressState.SNAPSHOT:
            return False  # an answer to an append sent before the snapshot
        if self.next - 1 != rejected:
            return False
        self.next = Index(max(min(rejected, match_hint + 1), 1))
        if self.next <= self.match:
            # The follower no longer holds entries it acknowledged: its disk was wiped
            # or lost data. Lowering `match` only under-counts replicas, which is safe
            # (commit never moves back); staying put would wait on it forever.
            self.match = Index(self.next - 1)
        self.probe_sent = False
        return True
