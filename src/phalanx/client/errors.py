"""Client errors. The distinction that matters to a caller is whether a command
certainly did not happen, or might have:

    PhalanxError
    └── ClientError
        ├── ClusterUnavailableError   no leader took it before the deadline: the command
        │   │                         did not happen (every attempt was turned away
        │   │                         before it could apply, or never got through)
        │   └── HandshakeRefusedError every member refused this client's connection
        │                             (a wrong cluster id, say): final, raised at once,
        │                             with the node's reason; did not happen
        ├── RequestRejectedError      the cluster refused it, or the client did before
        │                             sending (too large, malformed): did not happen
        └── OutcomeUnknownError       sent, but no definite answer before the deadline:
            │                         it may have happened (once) or not; a retry with
            │                         the same session would tell, which is what the
            │                         client does until the deadline
            └── SessionExpiredError   the session ended with commands unanswered
"""

from __future__ import annotations

from phalanx.core.errors import PhalanxError


class ClientError(PhalanxError):
    pass


class ClusterUnavailableError(ClientError):
    pass


class HandshakeRefusedError(ClusterUnavailableError):
    """Every member refused the connection; the message carries each node's reason.
    Retrying will not help until the client's settings (the cluster id) change."""


class RequestRejectedError(ClientError):
    pass


class OutcomeUnknownError(ClientError, TimeoutError):
    pass


class SessionExpiredError(OutcomeUnknownError):
    pass
