"""`phalanx demo`: a 3-node bank cluster on this machine, run through a failure, with a
verdict on what clients saw.

- `failover.py`, `phalanx demo` (the default scenario): the leader is killed mid-run
  and restarted; every acknowledged transfer must be in the final balances exactly once.
- `faulty.py`, `phalanx demo faulty`: one node runs a bank that skips transfers; the
  majority names it, it stops serving, `repair` rebuilds it.
- `bank.py`: what both share, the bank's accounts and the clients making transfers.

The nodes are a `phalanx.server.local.LocalCluster` in a temporary directory.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a 3-node bank cluster through a failover, or (faulty) catch a faulty replica",
    )
    parser.add_argument(
        "scenario",
        nargs="?",
        default="failover",
        choices=("failover", "faulty"),
        help="failover (default): kill the leader; faulty: one node's service skips transfers",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="client run time")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client sessions")
    parser.add_argument("--in-flight", type=int, default=16, help="requests in flight per client")
    parser.add_argument("--seed", type=int, default=1, help="seed of the clients' transfers")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.scenario == "faulty":
        from phalanx.demo.faulty import run_faulty

        return run_faulty(args)
    from phalanx.demo.failover import run_failover

    return run_failover(args)
