"""The simulator has teeth: each deliberately broken rule in `phalanx.sim.bugs` (in the
Raft core, in the replica's ordering of sends and syncs, in the service container) is
caught by the random five-node swarm, and the catching seed passes with the rule
intact. The budgets are the first catching seed found when the bug was planted, with
room to spare (docs/simulation.md gives each bug's rate over 1,000 seeds)."""

from __future__ import annotations

import pytest

from phalanx.sim.bugs import BUGS, inject
from phalanx.sim.checkers import InvariantViolation
from phalanx.sim.swarm import SeedResult, run_seed

from .helpers import run_paper_figure_8

NODES = 5

#: bug -> (seeds the swarm may try, the invariants that may catch it)
CAUGHT_BY: dict[str, tuple[int, frozenset[str]]] = {
    # A voter that ignores the candidate's log elects a leader lacking commits.
    "vote-any-log": (20, frozenset({"Leader Completeness", "State Machine Safety"})),
    # A voter that votes twice in one term lets two leaders share it.
    "double-vote": (20, frozenset({"Election Safety"})),
    # A reply cache that forgets in cache order: a rebuilt replica decides otherwise, or
    # the cache fills with replies nobody forgets and the client can never finish.
    "forget-in-cache-order": (
        80,
        frozenset({"Replay Equivalence", "Replica Digest Agreement", "Liveness"}),
    ),
    # A vote sent before it is durable, forgotten in a crash, given again.
    "vote-before-sync": (150, frozenset({"Election Safety"})),
    # An acknowledgement sent before its entries are durable: a "majority" that is not.
    "ack-before-sync": (
        150,
        frozenset({"State Machine Safety", "Leader Completeness", "Durability"}),
    ),
    # A client told "done" before its command committed.
    "answer-before-commit": (20, frozenset({"Linearizability", "Durability"})),
    # A restored replica without its reply cache applies a retry twice.
    "reply-cache-not-restored": (
        50,
        frozenset({"Exactly-Once", "Replica Digest Agreement", "Replay Equivalence"}),
    ),
    # The session forgets the reply of a command its client still waits for.
    "session-seq-off-by-one": (30, frozenset({"Exactly-Once"})),
    # A restored replica fires same-deadline timers in another order.
    "timers-restore-order": (
        50,
        frozenset({"Replica Digest Agreement", "Replay Equivalence"}),
    ),
    "prevote-raises-term": (20, frozenset({"Disruption"})),
    "no-check-quorum": (20, frozenset({"CheckQuorum"})),
    # Figure 8: an older term's entry committed by counting replicas.
    "commit-old-term": (120, frozenset({"Leader Completeness", "State Machine Safety"})),
    # A follower committing stale entries past the last one the leader matched.
    "commit-past-last-new": (20, frozenset({"State Machine Safety", "Leader Completeness"})),
}


def test_every_planted_bug_has_a_budget() -> None:
    assert set(CAUGHT_BY) == set(BUGS)
    assert len(BUGS) >= 8


def _first_caught(bug: str, budget: int) -> tuple[SeedResult | None, int]:
    with inject(bug):
        for seed in range(budget):
            result = run_seed(seed, NODES)
            if not result.ok:
                return result, seed
    return None, budget


@pytest.mark.slow
@pytest.mark.parametrize("bug", sorted(CAUGHT_BY))
def test_random_swarm_catches_planted_bug(bug: str) -> None:
    budget, invariants = CAUGHT_BY[bug]
    caught, seed = _first_caught(bug, budget)
    assert caught is not None, f"{bug}: no violation in seeds 0..{budget - 1} of {NODES} nodes"
    assert caught.violation is not None
    invariant = caught.violation.split(" violated")[0]
    assert invariant in invariants, caught.violation
    # The same seed, rule intact: no violation (the catch is the bug's, not the seed's).
    intact = run_seed(seed, NODES)
    assert intact.ok, f"seed {seed} fails without {bug}: {intact.violation}"


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_figure_8_schedule_catches_commit_of_old_term(seed: int) -> None:
    """The paper's own Figure 8 schedule catches the old-term commit on every seed."""
    with inject("commit-old-term"), pytest.raises(InvariantViolation) as caught:
        run_paper_figure_8(seed)
    # The leader that overwrites x lacks an entry another node applied; were the run
    # to go on, State Machine Safety would fail when it applies its own.
    assert caught.value.invariant in {"Leader Completeness", "State Machine Safety"}
    assert "data=b'x'" in caught.value.detail

    run = run_paper_figure_8(seed)
    assert run.commit_when_old_entry_on_majority < run.old_entry.index
