"""Clients of a phalanx cluster."""

from phalanx.client.client import AsyncClient, Client
from phalanx.client.errors import (
    ClientError,
    ClusterUnavailableError,
    HandshakeRefusedError,
    OutcomeUnknownError,
    RequestRejectedError,
    SessionExpiredError,
)

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "ClusterUnavailableError",
    "HandshakeRefusedError",
    "OutcomeUnknownError",
    "RequestRejectedError",
    "SessionExpiredError",
]
