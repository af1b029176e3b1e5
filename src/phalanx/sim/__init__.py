"""Deterministic simulation of clusters built from the real core (one thread, one seed)."""

from phalanx.sim.checkers import InvariantChecker, InvariantViolation
from phalanx.sim.cluster import TICK, NetworkFaults, SimCluster
from phalanx.sim.swarm import FaultMix, SeedResult, run_seed, run_swarm

__all__ = [
    "TICK",
    "FaultMix",
    "InvariantChecker",
    "InvariantViolation",
    "NetworkFaults",
    "SeedResult",
    "SimCluster",
    "run_seed",
    "run_swarm",
]
