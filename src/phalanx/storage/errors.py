"""The storage layer's branch of the exception tree.

    PhalanxError                  (phalanx.core.errors)
    └── StorageError              the data directory cannot be used as asked (names it)
        └── StorageCorruptError   a record or file is damaged; names the file and byte offset

A `StorageCorruptError` means the node must not start: serving a damaged log could
make it acknowledge or apply entries it does not really hold. The operator either
repairs the file or wipes the node's directory and lets it catch up from the leader.
"""

from __future__ import annotations

from phalanx.core.errors import PhalanxError


class StorageError(PhalanxError):
    """The storage cannot be used: wrong directory, foreign data, failed I/O."""


class StorageCorruptError(StorageError):
    """A damaged record or file that recovery must not paper over."""

    def __init__(self, path: str, offset: int, problem: str) -> None:
        super().__init__(
            f"corrupt write-ahead log: {path} at byte offset {offset}: {problem}; "
            "refusing to start (repair the file, or wipe this node's data directory "
            "so that it catches up from the leader)"
        )
        self.path = path
        self.offset = offset
        self.problem = problem
