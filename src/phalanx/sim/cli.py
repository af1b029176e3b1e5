"""`phalanx sim`: run the deterministic simulator over many seeds."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from phalanx.sim.bugs import BUGS, inject
from phalanx.sim.swarm import SeedResult, run_swarm

#: Largest cluster the simulator accepts (Raft clusters beyond 9 voters are unusual).
MAX_SIM_NODES = 9


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="run the deterministic cluster simulator over many seeds",
        description=(
            "Runs a swarm of simulated clusters of the replicas `phalanx node` runs (the "
            "same Replica class: core, service container, sessions, snapshots), with "
            "simulated clients. Each seed picks its own mix of faults; invariants are "
            "checked after every event and at the end of each seed (exactly-once, "
            "durability, linearizability, replay equivalence, ...). Exits 1 on any "
            "violation, printing the command that reproduces it."
        ),
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seeds", type=int, default=100, help="how many seeds (default 100)")
    parser.add_argument("--nodes", type=int, default=3, help="cluster size (default 3)")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed of the swarm")
    which.add_argument(
        "--seed", type=int, help="run this one seed and describe it (default: the whole swarm)"
    )
    parser.add_argument(
        "--fault-ticks", type=int, default=300, help="ticks of faults per seed (default 300)"
    )
    parser.add_argument(
        "--inject-bug",
        choices=sorted(BUGS),
        help="break one rule on purpose (in the core, the replica or the container), to "
        "see the simulator catch it (default: none)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only failures and the summary")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= MAX_SIM_NODES:
        print(f"phalanx sim: --nodes must be between 1 and {MAX_SIM_NODES}", file=sys.stderr)
        return 2
    if args.seed is not None and args.first_seed:
        print("phalanx sim: --first-seed goes with --seeds, not --seed", file=sys.stderr)
        return 2
    if args.seeds < 1 or args.fault_ticks < 1:
        print("phalanx sim: --seeds and --fault-ticks must be positive", file=sys.stderr)
        return 2
    seeds = (
        [args.seed]
        if args.seed is not None
        else list(range(args.first_seed, args.first_seed + args.seeds))
    )
    bug = inject(args.inject_bug) if args.inject_bug else contextlib.nullcontext()
    if args.inject_bug:
        print(f"injected bug {args.inject_bug!r}: {BUGS[args.inject_bug][3]}")
    done = [0]

    def on_result(result: SeedResult) -> None:
        done[0] += 1
        if not result.ok:
            print(f"FAIL seed={result.seed} nodes={result.nodes}: {result.violation}")
            print(f"     mix: {result.mix}")
            print(f"     reproduce: {_reproduce_command(args, result.seed)}")
        elif args.seed is not None:
            print(f"seed {result.seed}: ok; mix: {result.mix}")
        if args.seed is not None:
            print(
                f"seed {result.seed}: {result.operations} client operations, "
                f"{result.snapshots} snapshots, {result.replays} replays from snapshots, "
                f"history {result.linearizable or 'not checked'}"
            )
        if not args.quiet and len(seeds) >= 100 and done[0] % 100 == 0:
            print(f"... {done[0]}/{len(seeds)} seeds", file=sys.stderr, flush=True)

    # The replicas log what a node would (elections, divergence verdicts); thousands of
    # simulated nodes would drown the verdicts this command prints.
    with bug, _quiet(logging.getLogger("phalanx")):
        summary = run_swarm(seeds, args.nodes, on_result=on_result, fault_ticks=args.fault_ticks)
    results = summary.results
    if args.seed is not None:
        print(
            f"seed {args.seed}: {results[0].events} events, {results[0].ticks} node-ticks, "
            f"committed {results[0].committed}, acknowledged {results[0].acknowledged}, "
            f"trace {results[0].trace_hash}"
        )
    failures = summary.failures
    ticks_per_second = summary.ticks / summary.seconds if summary.seconds else 0.0
    operations = sum(r.operations for r in results)
    replays = sum(r.replays for r in results)
    skipped = sum(len(r.skipped_probes) for r in results)
    print(
        f"{len(results)} seeds x {args.nodes} nodes: {operations} client operations, "
        f"{replays} replays from snapshots, {skipped} probes skipped (no stable leader)"
    )
    print(
        f"{len(results)} seeds x {args.nodes} nodes: {len(failures)} failed; "
        f"{summary.ticks} node-ticks, {sum(r.events for r in results)} events in "
        f"{summary.seconds:.1f}s ({ticks_per_second:,.0f} node-ticks/s); "
        f"trace hash {summary.combined_hash()}"
    )
    return 1 if failures else 0


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """Only critical records while the swarm runs; the level as it was afterwards (the
    command also runs inside other programs, tests among them)."""
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _reproduce_command(args: argparse.Namespace, seed: int) -> str:
    command = f"phalanx sim --nodes {args.nodes} --seed {seed} --fault-ticks {args.fault_ticks}"
    if args.inject_bug:
        command += f" --inject-bug {args.inject_bug}"
    return command
