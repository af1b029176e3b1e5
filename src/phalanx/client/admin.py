"""Asking several members for their status at once (status tables, demos, harnesses),
and judging what they said: is there one leader, and do the replicas agree?"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from phalanx.client.client import AsyncClient
from phalanx.client.errors import ClientError

#: How a node describes a replica check that found every replica alike (the text of
#: `Verdict.describe()` for `VerdictKind.AGREE` ends with it).
_AGREE_SUFFIX = ": agree"


async def gather_statuses(
    addresses: Sequence[str], *, cluster_id: str = "phalanx", attempt_timeout: float = 1.0
) -> list[dict[str, Any] | None]:
    """Each member's status, in order; None for a member that did not answer."""

    async def one(address: str) -> dict[str, Any] | None:
        client = AsyncClient([address], cluster_id=cluster_id, attempt_timeout=attempt_timeout)
        try:
            return await client.status()
        except (ClientError, OSError, TimeoutError):
            return None
        finally:
            await client.close()

    return list(await asyncio.gather(*(one(address) for address in addresses)))


class MemberStatus(msgspec.Struct, frozen=True):
    """The part of a node's status reply that `judge_statuses` reads."""

    id: int
    role: str
    term: int
    leader: int
    last_index: int
    commit_index: int
    applied_index: int
    log_digest: str = ""
    state_digest: str = ""
    #: Set while this node found its own service diverged from the majority.
    diverged: str | None = None
    #: The latest replica check this node decided (`Verdict.describe()`), if any.
    replica_check: str | None = None


@dataclass(frozen=True, slots=True)
class ClusterHealth:
    """What the statuses say: the leader's node id (None if no answering member leads)
    and every problem found, each a sentence naming the nodes concerned."""

    leader: int | None
    problems: tuple[str, ...]


def member_statuses(replies: Sequence[dict[str, Any] | None]) -> list[MemberStatus | None]:
    """`gather_statuses`' replies, typed (extra fields ignored)."""
    return [None if reply is None else msgspec.convert(reply, MemberStatus) for reply in replies]


def judge_statuses(members: Sequence[MemberStatus | None]) -> ClusterHealth:
    """Judges one round of statuses (None: the member did not answer)."""
    statuses = [status for status in members if status is not None]
    if not statuses:
        return ClusterHealth(None, ("no member answered",))
    leader, leader_problems = _leader(statuses, len(members))
    return ClusterHealth(leader, (*leader_problems, *_divergence(statuses)))


def _leader(statuses: Sequence[MemberStatus], asked: int) -> tuple[int | None, list[str]]:
    leaders = [s for s in statuses if s.role == "leader"]
    if not leaders:
        answered = {s.id for s in statuses}
        named = sorted({s.leader for s in statuses if s.leader > 0} - answered)
        hint = f"; they name node(s) {_nodes(named)}, which did not answer" if named else ""
        return None, [f"no leader among the {len(statuses)} of {asked} members that answered{hint}"]
    term = max(s.term for s in leaders)
    current = [s.id for s in leaders if s.term == term]
    if len(current) > 1:
        return None, [f"nodes {_nodes(current)} all claim to lead in term {term}"]
    return current[0], []


def _divergence(statuses: Sequence[MemberStatus]) -> list[str]:
    problems = [
        f"node {s.id} found its own service diverged from the majority {s.diverged}; "
        "it serves no clients until repaired (phalanx repair)"
        for s in statuses
        if s.diverged
    ]
    reporters: dict[str, list[int]] = defaultdict(list)
    for status in statuses:
        check = status.replica_check
        if check and not check.endswith(_AGREE_SUFFIX) and not status.diverged:
            reporters[check].append(status.id)
    problems += [
        f"replica check {check} (reported by node(s) {_nodes(ids)})"
        for check, ids in sorted(reporters.items())
    ]
    by_index: dict[int, list[MemberStatus]] = defaultdict(list)
    for status in statuses:
        by_index[status.applied_index].append(status)
    for index, alike in sorted(by_index.items()):
        for kind in ("state_digest", "log_digest"):
            digests = {getattr(s, kind) for s in alike}
            if len(digests) > 1:
                problems.append(
                    f"nodes {_nodes([s.id for s in alike])} applied up to index {index} "
                    f"but their {kind.replace('_', ' ')}s differ"
                )
    return problems


def _nodes(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in sorted(ids))
