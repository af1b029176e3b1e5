"""The root of phalanx's exception tree, and the errors the core itself can raise.

    PhalanxError                  expected failures a user can act on
    ├── ConfigError               a setting is invalid (names the setting)
    ├── NotLeaderError            proposal sent to a node that does not lead (carries a hint)
    ├── ProposalDroppedError      the leader refused a proposal (limit reached, transfer running)
    └── ...                       other layers extend the tree from `phalanx.errors`

Bugs are not in this tree: they fail assertions, and an assertion failure stops the
node rather than letting it corrupt state.

    AssertionError
    └── InvariantError            a state the code holds impossible (a bug); raised by
                                  `invariant()` and by explicit checks, which stay on
                                  under `python -O`, unlike `assert`

`InvariantError` is an `AssertionError` so that every handler that treats a failed
assertion as a bug (stop the node, exit 6) treats it the same, and no handler of
`PhalanxError` (an expected failure, reported and survived) ever catches one.
"""

from __future__ import annotations

from phalanx.core.types import NO_NODE, NodeId


class PhalanxError(Exception):
    """Base class of every expected phalanx failure."""


class ConfigError(PhalanxError, ValueError):
    """A configuration value is invalid. The message names the setting."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"invalid setting {setting!r}: {problem}")
        self.setting = setting
        self.problem = problem


class NotLeaderError(PhalanxError):
    """A proposal reached a node that is not the leader."""

    def __init__(self, leader_hint: NodeId = NO_NODE) -> None:
        hint = f"; try node {leader_hint}" if leader_hint != NO_NODE else "; leader unknown"
        super().__init__(f"this node is not the leader{hint}")
        self.leader_hint = leader_hint


class ProposalDroppedError(PhalanxError):
    """The leader refused a proposal; the reason says whether retrying can help."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"proposal dropped: {reason}")
        self.reason = reason


class InvariantError(AssertionError):
    """A state the code holds impossible was found: a bug, not bad input. Unlike an
    `assert`, the check that raises it runs under `python -O` too (TigerBeetle's rule:
    assertions stay on in production), so a replica stops rather than go on from
    state it knows is wrong."""


def invariant(condition: bool, message: str, *args: object) -> None:
    """Raises `InvariantError(message % args)` unless `condition`. The message is only
    formatted on failure, so a check on a hot path costs one call. Where mypy must
    narrow a type (`x is not None`), or in a per-entry loop, write the check inline:
    `if not condition: raise InvariantError(...)`."""
    if not condition:
        raise InvariantError(message % args if args else message)
