"""The root of phalanx's exception tree, and the errors the core itself can raise.

    PhalanxError                  expected failures a user can act on
    ├── ConfigError               a setting is invalid (names the setting)
    ├── NotLeaderError            proposal sent to a node that does not lead (carries a hint)
    ├── ProposalDroppedError      the leader refused a proposal (limit reached, transfer running)
    └── ...                       other layers extend the tree from `phalanx.errors`

Bugs are not in this tree: they fail assertions, and an assertion failure stops the
node rather than letting it corrupt state.
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
