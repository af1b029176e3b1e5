"""Hosting a deterministic service on a replicated log."""

from phalanx.service.base import Service, error_reply

__all__ = ["Service", "error_reply"]
