"""What a user implements: a deterministic service.

A `Service` is a state machine. phalanx calls `apply(command)` on every replica with
the same commands in the same order, so every replica must compute the same reply and
reach the same state from them. That rules out, inside `apply`: the wall clock,
randomness, threads, network or file I/O, local configuration, and iterating over
unordered sets of strings (string hashing differs between processes).

Commands and replies are plain data: dict, list, str, int, float, bool, None, bytes.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

from phalanx.core.errors import PhalanxError


class SnapshotUnsupportedError(PhalanxError):
    """The service cannot restore snapshots (it does not implement `restore`)."""


if TYPE_CHECKING:
    from phalanx.service.context import ServiceContext


class Service(abc.ABC):
    """Subclass and implement `apply` and `state`.

    Services that need sessions, cluster time or timers also override the callbacks
    below; each gets a `ServiceContext`. The deterministic ones (`on_session_open`,
    `on_session_close`, `on_message`, `on_timer`) run on every replica at the same log
    position; `on_start`, `on_role_change` and `on_terminate` run on one node only.
    """

    # -- deterministic callbacks (every replica, same log position) ---------------------

    def on_message(self, ctx: ServiceContext, session_id: int, message: Any) -> Any:
        """A client's command; returns the reply. By default: `apply(message)`."""
        return self.apply(message)

    def on_session_open(self, ctx: ServiceContext, session_id: int) -> None:
        """A client opened a session."""

    def on_session_close(self, ctx: ServiceContext, session_id: int, reason: str) -> None:
        """A session ended: "client_closed", "timed_out", "evicted" or "service_closed"."""

    def on_timer(self, ctx: ServiceContext, timer_id: int) -> None:
        """A timer scheduled with `ctx.schedule_timer` reached its deadline."""

    # -- local callbacks (this node only; the context refuses replicated changes) -------

    def on_start(self, ctx: ServiceContext) -> None:
        """The node started, after restoring any snapshot and before replaying the log."""

    def on_role_change(self, ctx: ServiceContext, role: str) -> None:
        """This node became "leader", "follower", "candidate" or "pre-candidate"."""

    def on_terminate(self, ctx: ServiceContext) -> None:
        """The node is stopping."""

    @abc.abstractmethod
    def apply(self, command: Any) -> Any:
        """Applies one command and returns its reply.

        A command the service does not understand, or with bad arguments, should get
        an error reply (for example `{"ok": False, "error": "unknown_op"}`): raising is
        also safe (the container turns the exception into an error reply on every
        replica alike) but leaves whatever the command had already changed."""

    @abc.abstractmethod
    def state(self) -> Any:
        """The whole state as plain data, for state digests (and later snapshots).

        Two replicas that applied the same commands must return equal values."""

    def state_hash(self) -> bytes | None:
        """Optionally, a cheap fingerprint of the whole state (for example one kept up
        to date incrementally). Replicas compare state digests at checkpoints; without
        this, the digest encodes `state()` in full each time."""
        return None

    def snapshot(self) -> Any:
        """The state to store in a snapshot, as plain data (by default `state()`).

        It may be called in a forked child process while the node keeps applying in
        the parent, so it must only read the service's own objects."""
        return self.state()

    def restore(self, snapshot: Any) -> None:
        """Replaces the whole state by one that `snapshot()` returned (possibly on
        another node). A service that does not override this runs without snapshots:
        its log is never compacted, and a lagging node catches up by replaying it."""
        raise SnapshotUnsupportedError(
            f"{type(self).__name__} does not implement restore(); snapshots are off for it"
        )

    @classmethod
    def supports_snapshots(cls) -> bool:
        return cls.restore is not Service.restore


def error_reply(error: str, message: str) -> dict[str, Any]:
    """The conventional shape of an error reply."""
    return {"ok": False, "error": error, "message": message}
