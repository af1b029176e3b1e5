"""Deliberately broken Raft rules, for showing that the simulator catches them.

`inject(name)` is a context manager that swaps one method of the core for a broken
twin while it is active. Tests use it to prove the checkers have teeth; learners use
`phalanx sim --inject-bug NAME` to watch a safety rule fail.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from phalanx.core.log import RaftLog
from phalanx.core.messages import AppendResponse, HeartbeatRequest, Message, VoteResponse
from phalanx.core.quorum import committed_index
from phalanx.core.raft import Raft
from phalanx.core.types import NO_NODE, Index, Term
from phalanx.server import replica as replica_module
from phalanx.server.replica import Batch, Replica
from phalanx.service import container as container_module
from phalanx.service.container import ServiceContainer
from phalanx.service.context import Timers
from phalanx.transport.wire import ClientReply, ReplyStatus


def _commit_counting_old_terms(self: Raft) -> bool:
    # Broken: commits an entry of an older term by counting replicas, the exact
    # mistake Figure 8 of the Raft paper warns about (§5.4.2).
    match = {voter: self.progress[voter].match for voter in self.voters}
    candidate = committed_index(self.voters, match)
    if candidate <= self.log.committed:
        return False
    self.log.commit_to(candidate)
    return True


def _any_log_is_up_to_date(self: RaftLog, last_index: int, last_term: int) -> bool:
    # Broken: grants votes to candidates whose log is behind ours (§5.4.1).
    return True


def _forget_vote(self: Raft, message: Any) -> None:
    # Broken: votes for every candidate that asks, even twice in one term (§5.2).
    self.vote = type(self.vote)(0)
    _ORIGINAL_ON_VOTE_REQUEST(self, message)


_ORIGINAL_ON_VOTE_REQUEST = Raft._on_vote_request


def _forget_in_cache_order(session: Any, first_incomplete: int) -> None:
    # Broken: forgets acknowledged replies from the front of the reply dict (the order
    # they were cached in), which a snapshot does not keep: a replica rebuilt from one
    # decides "too many in flight" differently from a live one (issue 11, item 1).
    replies = session.replies
    while replies:
        seq = next(iter(replies))
        if seq >= first_incomplete:
            break
        del replies[seq]
    session.reply_seqs[:] = sorted(replies)


def _forget_one_too_many(session: Any, first_incomplete: int) -> None:
    # Broken: an off-by-one in the session's sequence check forgets the reply of
    # `first_incomplete` itself, a command the client has not heard back about yet: its
    # retry finds no cached reply and is applied a second time.
    seqs, replies = session.reply_seqs, session.replies
    while seqs and seqs[0] <= first_incomplete:
        del replies[heapq.heappop(seqs)]


_ORIGINAL_SPLIT = replica_module.split_messages


def _early(kind: type[Message]) -> Callable[..., Any]:
    def split(messages: Any) -> tuple[list[Message], list[Any], list[Message]]:
        # Broken: sends `kind` before the sync that makes its promise true.
        now, snapshots, after = _ORIGINAL_SPLIT(messages)
        now += [m for m in after if isinstance(m, kind)]
        return now, snapshots, [m for m in after if not isinstance(m, kind)]

    return split


_ORIGINAL_PERSISTED = Replica.persisted


def _answer_on_persist(self: Replica, batch: Batch) -> None:
    # Broken: the leader answers a command once its own disk holds the entry, before a
    # majority does (and before it is applied): an entry lost in a failover was
    # acknowledged all the same.
    ok = msgspec.msgpack.encode({"ok": True})
    for entry in batch.entries:
        waiter = self._waiters.get(entry.index)
        if waiter is not None and waiter.key is not None:  # a command (not a session)
            del self._waiters[entry.index]
            self._finish(waiter, ClientReply(0, ReplyStatus.OK, payload=ok))
    _ORIGINAL_PERSISTED(self, batch)


_ORIGINAL_RESTORE = ServiceContainer.restore


def _restore_without_replies(self: ServiceContainer, data: bytes) -> None:
    # Broken: a replica restored from a snapshot starts with empty reply caches, so a
    # retry of a command it applied before the snapshot is applied again.
    _ORIGINAL_RESTORE(self, data)
    for session in self.sessions.values():
        session.replies.clear()
        session.reply_seqs.clear()


def _restore_timers_unordered(self: Timers, deadlines: dict[int, int]) -> None:
    # Broken: rebuilds the timer queue in the snapshot's order rather than as a heap,
    # so a restored replica fires timers due at the same time in another order.
    self.deadlines = dict(deadlines)
    self._heap = [(deadline, timer_id) for timer_id, deadline in sorted(deadlines.items())][::-1]


def _pre_vote_raising_term(self: Raft) -> None:
    # Broken: a pre-candidate moves to the next term as a candidate would, so a node
    # cut off from the cluster comes back with a higher term and deposes the leader.
    _ORIGINAL_BECOME_PRE_CANDIDATE(self)
    self.term = Term(self.term + 1)
    self.vote = NO_NODE


_ORIGINAL_BECOME_PRE_CANDIDATE = Raft._become_pre_candidate


def _quorum_always_active(self: Raft) -> bool:
    # Broken: CheckQuorum never finds the quorum gone, so a cut-off leader leads on.
    for peer in self.peers:
        self.progress[peer].recent_active = False
    return True


def _heartbeat_full_commit(self: Raft) -> None:
    # Broken (with `_commit_past_last_new`): heartbeats carry the leader's whole commit
    # index instead of min(follower's match, commit), so a follower whose log ends in
    # stale entries of an old term takes them as committed.
    committed = self.log.committed
    for peer in self.peers:
        self._send(HeartbeatRequest(self.term, self.id, peer, committed))


def _commit_past_last_new(
    self: RaftLog, prev_index: int, prev_term: int, leader_commit: int, entries: Any
) -> Index | None:
    # Broken: a follower commits up to the leader's commit index even past the last
    # entry this message matched, committing stale entries of an old term (§5.3 rule 5).
    if not self.match_term(prev_index, prev_term):
        return None
    last_new = Index(prev_index + len(entries))
    conflict = self._find_conflict(entries)
    if conflict:
        self.append(entries[conflict - prev_index - 1 :])
    self.commit_to(min(leader_commit, self.last_index()))
    return last_new


#: name -> (owner class or module, attribute, replacement, what it breaks)
BUGS: dict[str, tuple[Any, str, Callable[..., Any], str]] = {
    "commit-old-term": (
        Raft,
        "_maybe_commit",
        _commit_counting_old_terms,
        "leader commits entries of earlier terms by counting replicas (Figure 8)",
    ),
    "vote-any-log": (
        RaftLog,
        "is_up_to_date",
        _any_log_is_up_to_date,
        "voters grant votes to candidates with less up-to-date logs",
    ),
    "double-vote": (
        Raft,
        "_on_vote_request",
        _forget_vote,
        "a node may vote for two candidates in one term",
    ),
    "forget-in-cache-order": (
        container_module,
        "_forget_acknowledged",
        _forget_in_cache_order,
        "the reply cache forgets in the order replies were cached, which snapshots lose",
    ),
    "vote-before-sync": (
        replica_module,
        "split_messages",
        _early(VoteResponse),
        "a vote leaves before the term and vote it grants are synced",
    ),
    "ack-before-sync": (
        replica_module,
        "split_messages",
        _early(AppendResponse),
        "a follower acknowledges entries before it synced them",
    ),
    "answer-before-commit": (
        Replica,
        "persisted",
        _answer_on_persist,
        "the leader answers a client once its own disk holds the entry, before it commits",
    ),
    "reply-cache-not-restored": (
        ServiceContainer,
        "restore",
        _restore_without_replies,
        "a replica restored from a snapshot forgets its sessions' cached replies",
    ),
    "session-seq-off-by-one": (
        container_module,
        "_forget_acknowledged",
        _forget_one_too_many,
        "the session table forgets the reply of the first unacknowledged command too",
    ),
    "timers-restore-order": (
        Timers,
        "restore",
        _restore_timers_unordered,
        "a restored replica fires timers due at the same time in another order",
    ),
    "prevote-raises-term": (
        Raft,
        "_become_pre_candidate",
        _pre_vote_raising_term,
        "PreVote raises the real term, so a rejoining node deposes a healthy leader",
    ),
    "no-check-quorum": (
        Raft,
        "_quorum_active",
        _quorum_always_active,
        "CheckQuorum never steps down a leader that lost its followers",
    ),
    "commit-past-last-new": (
        RaftLog,
        "maybe_append",
        _commit_past_last_new,
        "a follower advances its commit index past the entries it is known to share with "
        "the leader (the last new entry of an append; the match a heartbeat carries)",
    ),
}


#: Bugs that break one rule in two places: the leader's heartbeat clamps the commit
#: index it sends to what the follower matched, which alone would hide a follower that
#: trusts a commit index beyond its last new entry.
_ALSO: dict[str, tuple[tuple[Any, str, Callable[..., Any]], ...]] = {
    "commit-past-last-new": ((Raft, "_broadcast_heartbeat", _heartbeat_full_commit),),
}


@contextlib.contextmanager
def inject(name: str) -> Iterator[None]:
    if name not in BUGS:
        known = ", ".join(sorted(BUGS))
        raise ValueError(f"unknown bug {name!r}; known bugs: {known}")
    owner, attribute, replacement, _ = BUGS[name]
    patches = [(owner, attribute, replacement), *_ALSO.get(name, ())]
    originals = [(o, a, o.__dict__[a]) for o, a, _ in patches]
    for o, a, r in patches:
        setattr(o, a, r)
    try:
        yield
    finally:
        for o, a, original in originals:
            setattr(o, a, original)


__all__ = ["BUGS", "Index", "inject"]
