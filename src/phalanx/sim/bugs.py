"""Deliberately broken Raft rules, for showing that the simulator catches them.

`inject(name)` is a context manager that swaps one method of the core for a broken
twin while it is active. Tests use it to prove the checkers have teeth; learners use
`phalanx sim --inject-bug NAME` to watch a safety rule fail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from phalanx.core.log import RaftLog
from phalanx.core.quorum import committed_index
from phalanx.core.raft import Raft
from phalanx.core.types import Index
from phalanx.service import container as container_module


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
}


@contextlib.contextmanager
def inject(name: str) -> Iterator[None]:
    if name not in BUGS:
        known = ", ".join(sorted(BUGS))
        raise ValueError(f"unknown bug {name!r}; known bugs: {known}")
    owner, attribute, replacement, _ = BUGS[name]
    original = owner.__dict__[attribute]
    setattr(owner, attribute, replacement)
    try:
        yield
    finally:
        setattr(owner, attribute, original)


__all__ = ["BUGS", "Index", "inject"]
