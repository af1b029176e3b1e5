"""The one exception raised by `phalanx.check` for failures a user can act on.

`CheckError` covers input the checker cannot read: a missing or unreadable file, a
line in no known format, an operation the chosen model does not understand. Its
message names the file and line so the user can open the history at the right place.
Bugs in the checker itself fail assertions instead.

`phalanx.check` imports nothing else of phalanx, so this is not part of the
`PhalanxError` tree; the command line turns it into exit code 3.
"""

from __future__ import annotations


class CheckError(Exception):
    """A history or an option the checker cannot use, with where it went wrong."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        elif line is not None:
            where = f"line {line}: "
        super().__init__(where + message)
