"""phalanx: replicated state machines for Python.

The names most programs need, from one place::

    from phalanx import Client, Service, error_reply

Errors (the client's are drawn as a tree in `phalanx.client.errors`)::

    PhalanxError
    ├── ConfigError
    ├── NotLeaderError
    ├── ProposalDroppedError
    └── ClientError
        ├── ClusterUnavailableError
        │   └── HandshakeRefusedError
        ├── RequestRejectedError
        └── OutcomeUnknownError
            └── SessionExpiredError
"""

from importlib.metadata import PackageNotFoundError, version

from phalanx.client import (
    AsyncClient,
    Client,
    ClientError,
    ClusterUnavailableError,
    HandshakeRefusedError,
    OutcomeUnknownError,
    RequestRejectedError,
    SessionExpiredError,
)
from phalanx.core.errors import ConfigError, NotLeaderError, PhalanxError, ProposalDroppedError
from phalanx.service import Service, error_reply

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "ClusterUnavailableError",
    "ConfigError",
    "HandshakeRefusedError",
    "NotLeaderError",
    "OutcomeUnknownError",
    "PhalanxError",
    "ProposalDroppedError",
    "RequestRejectedError",
    "Service",
    "SessionExpiredError",
    "error_reply",
]

try:
    __version__ = version("phalanx")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
