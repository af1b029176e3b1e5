"""One hash seed for every replica.

Why: Python salts the hash of `str` and `bytes` with a random seed per process, so a
set of strings iterates in a different order in each process, and so do the reprs in
exception messages (`KeyError: frozenset({...})`). A service that iterates a set, or
picks "any" element of one, would then do different things on different replicas of
the same log: the determinism phalanx rests on, broken by the interpreter. A node
therefore always runs with `PYTHONHASHSEED=0`; `phalanx node` started without it
re-executes itself with it, before it has read or written anything.
"""

from __future__ import annotations

import os
import sys

#: The seed every node runs with (any fixed value would do; 0 turns salting off).
HASH_SEED = "0"
_ENVIRONMENT = "PYTHONHASHSEED"


def hash_seed_is_fixed() -> bool:
    return os.environ.get(_ENVIRONMENT) == HASH_SEED and not sys.flags.hash_randomization


def ensure_fixed_hash_seed(argv: list[str], module: str = "phalanx") -> None:
    """Re-executes `python -m MODULE ARGV` with the fixed seed unless this process
    already runs with it; returns only when it does."""
    if hash_seed_is_fixed():
        return
    environment = dict(os.environ, **{_ENVIRONMENT: HASH_SEED})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], environment)


def with_fixed_hash_seed(environment: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a node process started by another phalanx command."""
    return dict(os.environ if environment is None else environment, **{_ENVIRONMENT: HASH_SEED})
