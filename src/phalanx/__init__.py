"""phalanx: replicated state machines for Python."""

from phalanx.core.errors import ConfigError, NotLeaderError, PhalanxError, ProposalDroppedError

__all__ = ["ConfigError", "NotLeaderError", "PhalanxError", "ProposalDroppedError"]
__version__ = "0.1.0"
