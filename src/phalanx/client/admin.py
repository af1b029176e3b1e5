"""Asking several members for their status at once (status tables, demos, harnesses),
and judging what they said: is there one leader, and do the replicas agree?"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from phalanx.client.client import AsyncClient
from phalanx.client.errors import ClientError
from phalanx.core.raft import Role
from phalanx.transport.wire import NodeStatus

#: How a node describes a replica check that found every replica alike (the text of
#: `Verdict.describe()` for `VerdictKind.AGREE` ends with it).
_AGREE_SUFFIX = ": agree"


async def gather_statuses(
    addresses: Sequence[str], *, cluster_id: str = "phalanx", attempt_timeout: float = 1.0
) -> list[NodeStatus | None]:
    """Each member's status, in order; None for a member that did not answer."""

    async def one(address: str) -> NodeStatus | None:
        client = AsyncClient([address], cluster_id=cluster_id, attempt_timeout=attempt_timeout)
        try:
            return await client.status()
        except (ClientError, OSError, TimeoutError):
            return None
        finally:
            await client.close()

    return list(await asyncio.gather(*(one(address) for address in addresses)))


@dataclass(frozen=True, slots=True)
class ClusterHealth:
    """What the statuses say: the leader's node id (None if no answering member leads)
    and every problem found, each a sentence naming the nodes concerned."""

    leader: int | None
    problems: tuple[str, ...]


def judge_statuses(members: Sequence[NodeStatus | None]) -> ClusterHealth:
    """Judges one round of statuses (None: the member did not answer)."""
    statuses = [status for status in members if status is not None]
    if not statuses:
        return ClusterHealth(None, ("no member answered",))
    leader, leader_problems = _leader(statuses, len(members))
    return ClusterHealth(leader, (*leader_problems, *_divergence(statuses)))


def _leader(statuses: Sequence[NodeStatus], asked: int) -> tuple[int | None, list[str]]:
    leaders = [s for s in statuses if s.role is Role.LEADER]
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


def _divergence(statuses: Sequence[NodeStatus]) -> list[str]:
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
    by_index: dict[int, list[NodeStatus]] = defaultdict(list)
    for status in statuses:
        by_index[status.applied_index].append(status)
    for index, alike in sorted(by_index.items()):
        state_digests = {s.state_digest for s in alike}
        log_digests = {s.log_digest for s in alike}
        for kind, digests in (("state", state_digests), ("log", log_digests)):
            if len(digests) > 1:
                problems.append(
                    f"nodes {_nodes([s.id for s in alike])} applied up to index {index} "
                    f"but their {kind} digests differ"
                )
    return problems


def _nodes(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in sorted(ids))
