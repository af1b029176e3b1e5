"""Client errors. The distinction that matters to a caller is whether a command
certainly did not happen, or might have:

    PhalanxError
    └── ClientError
        ├── ClusterUnavailableError   never reached a leader: the command did not happen
        ├── RequestRejectedError      the cluster refused it (too large, malformed): did not happen
        └── OutcomeUnknownError       sent, but no answer before the deadline: it may have
            │                         happened (once) or not; a retry with the same
            │                         session would tell, which is what the client does
            └── SessionExpiredError   the session ended with commands unanswered
"""

from __future__ import annotations

from phalanx.core.errors import PhalanxError


class ClientError(PhalanxError):
    pass


class ClusterUnavailableError(ClientError):
    pass


class RequestRejectedError(ClientError):
    pass


class OutcomeUnknownError(ClientError, TimeoutError):
    pass


class SessionExpiredError(OutcomeUnknownError):
    pass
