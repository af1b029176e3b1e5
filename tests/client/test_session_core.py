"""The client's sans-I/O core (`phalanx.client.session`), driven directly with hostile
sequences of answers, times and addresses, as a simulator's clients drive it.

Every test states the decision a correct client must take and would fail on another:
where the next attempt goes, whether it waits, and what the error says about whether
the command may have happened.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from pathlib import Path

import pytest

import phalanx.client.session as session_module
from core.test_purity import FORBIDDEN, _runtime_imports
from phalanx.client import (
    ClusterUnavailableError,
    OutcomeUnknownError,
    RequestRejectedError,
    SessionExpiredError,
)
from phalanx.client.session import (
    BACKOFF_MAX_S,
    BACKOFF_MIN_S,
    MAX_LEARNED_ADDRESSES,
    WINDOW_DECREASE_INTERVAL_S,
    WINDOW_MIN,
    Attempt,
    Call,
    ClientSession,
    Decision,
    Done,
    Fail,
    Ignored,
    Reopen,
    Retry,
)
from phalanx.transport.wire import ClientReply, CommandRequest, OpenSessionRequest, ReplyStatus

MEMBERS = ["sim:1", "sim:2", "sim:3"]
SESSION = 41
DEADLINE_S = 10.0
BUSY = "leader busy; retry after 20 ms"
CHANGED = "leadership changed; outcome unknown, retry"
#: Attempts `drive` makes before it calls the client's retrying a spin.
ATTEMPTS_MAX = 1000


def make_core(seed: int = 7, **options: int | float) -> ClientSession:
    return ClientSession(MEMBERS, random.Random(seed), **options)  # type: ignore[arg-type]


def reply(status: ReplyStatus, **fields: object) -> ClientReply:
    return ClientReply(0, status, **fields)  # type: ignore[arg-type]


def not_leader(hint: str = "") -> ClientReply:
    return reply(ReplyStatus.NOT_LEADER, leader_hint=hint)


def ok(payload: bytes = b"result") -> ClientReply:
    return reply(ReplyStatus.OK, payload=payload)


def attempt(core: ClientSession, call: Call, now_s: float) -> Attempt:
    made = core.attempt(call, now_s)
    assert isinstance(made, Attempt), made
    return made


def opened(core: ClientSession, session_id: int = SESSION) -> ClientSession:
    call = core.open_session(DEADLINE_S)
    first = attempt(core, call, 0.0)
    assert first.message(1) == OpenSessionRequest(1)
    assert core.on_reply(first, reply(ReplyStatus.OK, session_id=session_id), 0.0) == Done(
        b"", session_id
    )
    assert core.session_id == session_id
    return core


def command(core: ClientSession, deadline_s: float = DEADLINE_S) -> Call:
    call = core.start_command(b"cmd", deadline_s)
    assert call is not None, "the window had no room"
    return call


def drive(
    core: ClientSession, call: Call, answer: Callable[[Attempt], ClientReply], now_s: float = 0.0
) -> tuple[Decision, list[Retry]]:
    """Drives `call` as a simulated client would, each attempt answered by `answer`
    at once: (the final decision, the retries on the way)."""
    retries: list[Retry] = []
    for _ in range(ATTEMPTS_MAX):
        made = core.attempt(call, now_s)
        if isinstance(made, Fail):
            return made, retries
        decision = core.on_reply(made, answer(made), now_s)
        if not isinstance(decision, Retry):
            return decision, retries
        retries.append(decision)
        now_s += decision.delay_s
    raise AssertionError(f"still retrying after {ATTEMPTS_MAX} attempts: a spin")


def retry(decision: Decision) -> Retry:
    assert isinstance(decision, Retry), decision
    return decision


def failure(decision: Decision | Attempt) -> BaseException:
    assert isinstance(decision, Fail), decision
    return decision.error


# -- sessions, sequence numbers and first_incomplete ---------------------------------------


def test_commands_carry_the_opened_session_and_numbers_in_order() -> None:
    core = opened(make_core())
    calls = [command(core) for _ in range(3)]
    assert [call.seq for call in calls] == [1, 2, 3]
    tried = attempt(core, calls[2], 0.0)
    assert tried.address == "sim:1"
    assert tried.message(99) == CommandRequest(99, SESSION, 3, 1, b"cmd")


def test_first_incomplete_is_the_lowest_unanswered_number_even_out_of_order() -> None:
    core = opened(make_core())
    one, two, three = (command(core) for _ in range(3))
    assert core.on_reply(attempt(core, two, 0.0), ok(), 0.0) == Done(b"result")
    assert core.first_incomplete == 1  # seq 1 is still unanswered: its reply must stay
    three_first = attempt(core, three, 0.0)
    assert three_first.first_incomplete == 1
    assert core.on_reply(attempt(core, one, 0.0), ok(), 0.0) == Done(b"result")
    assert core.first_incomplete == 3
    # A retry keeps its number but reports the newer first_incomplete.
    retry(core.on_reply(three_first, reply(ReplyStatus.RETRY, message=BUSY), 0.0))
    again = attempt(core, three, 1.0)
    assert (again.seq, again.first_incomplete) == (3, 3)
    assert core.on_reply(again, ok(), 1.0) == Done(b"result")
    assert core.first_incomplete == core.next_seq == 4


def test_an_open_session_request_that_went_unanswered_did_not_send_the_command() -> None:
    core = make_core(attempt_timeout_s=1.0)
    call = core.open_session(1.5)
    first = attempt(core, call, 0.0)
    assert first.timeout_at_s == 1.0
    delay_s = retry(core.on_timeout(first, 1.0)).delay_s
    second = attempt(core, call, 1.0 + delay_s)
    assert second.timeout_at_s == 1.5  # the deadline cuts the last attempt short
    error = failure(core.on_timeout(second, 1.5))
    # The session may have opened, but no command went out under it.
    assert type(error) is ClusterUnavailableError and "no session opened" in str(error)
    assert core.session_id == 0


# -- following hints -----------------------------------------------------------------------


def test_redirect_ping_pong_goes_at_once_only_once_in_a_row() -> None:
    core = opened(make_core(), SESSION)
    call = command(core, deadline_s=2.0)
    hints = {"sim:1": "sim:2", "sim:2": "sim:1"}
    decision, retries = drive(core, call, lambda tried: not_leader(hints[tried.address]))
    alternating = itertools.cycle(["sim:2", "sim:1"])
    assert [r.address for r in retries] == [next(alternating) for _ in retries]
    delays = [r.delay_s for r in retries]
    assert delays[0] == 0.0  # the first redirect is followed at once
    assert all(delay > 0 for delay in delays[1:])  # then every one waits: no spin
    # About 25 attempts in 2 s with the backoff's ceilings; a spin would make thousands.
    assert 10 < len(delays) < 35, len(delays)
    # Every attempt was turned away before it could apply.
    error = failure(decision)
    assert type(error) is ClusterUnavailableError
    assert "not the leader (leader sim:" in str(error)


def test_a_redirect_after_another_answer_goes_at_once_again() -> None:
    core = opened(make_core())
    call = command(core)
    assert retry(core.on_reply(attempt(core, call, 0.0), not_leader("sim:2"), 0.0)).delay_s == 0
    busy = core.on_reply(attempt(core, call, 0.0), reply(ReplyStatus.RETRY, message=BUSY), 0.0)
    assert retry(busy).address == "sim:2" and busy.delay_s > 0  # busy: same node, waits
    again = retry(core.on_reply(attempt(core, call, 1.0), not_leader("sim:3"), 1.0))
    assert again == Retry("sim:3", 0.0)


@pytest.mark.parametrize("hint", ["", "no port here", "sim:0", "::1:2:x", "sim:99999"])
def test_a_hint_that_names_no_address_moves_to_the_next_member_after_a_wait(hint: str) -> None:
    core = opened(make_core())
    call = command(core)
    decision = retry(core.on_reply(attempt(core, call, 0.0), not_leader(hint), 0.0))
    assert decision.address == "sim:2" and decision.delay_s >= BACKOFF_MIN_S
    assert core.addresses == tuple(MEMBERS)  # nothing learned from it
    decision = retry(core.on_reply(attempt(core, call, 1.0), not_leader(hint), 1.0))
    assert decision.address == "sim:3"
    decision = retry(core.on_reply(attempt(core, call, 2.0), not_leader(hint), 2.0))
    assert decision.address == "sim:1"  # round the members


def test_a_hint_to_a_new_address_is_learned_and_followed_at_once() -> None:
    core = opened(make_core())
    call = command(core)
    assert core.on_reply(attempt(core, call, 0.0), not_leader("sim:9"), 0.0) == Retry("sim:9", 0.0)
    at_hint = attempt(core, call, 0.0)
    assert at_hint.address == "sim:9"
    assert core.addresses == (*MEMBERS, "sim:9")
    # The same address written another way is the same address.
    core.on_timeout(at_hint, 1.0)  # silent: moves on from sim:9
    decision = retry(core.on_reply(attempt(core, call, 1.1), not_leader(" sim:9 "), 1.1))
    assert decision.address == "sim:9" and len(core.addresses) == 4


def test_learned_addresses_are_capped_and_the_oldest_makes_way() -> None:
    core = opened(make_core(), SESSION)
    call = command(core, deadline_s=1000.0)
    hints = [f"learned:{port}" for port in range(1, MAX_LEARNED_ADDRESSES + 4)]
    now_s = 0.0
    for hint in hints:
        decision = retry(core.on_reply(attempt(core, call, now_s), not_leader(hint), now_s))
        assert decision.address == hint  # always followed, even when the list is full
        now_s += 1.0
    addresses = core.addresses
    assert len(addresses) == len(MEMBERS) + MAX_LEARNED_ADDRESSES
    assert addresses[: len(MEMBERS)] == tuple(MEMBERS)  # members never make way
    assert set(addresses[len(MEMBERS) :]) == set(hints[3:])  # the three oldest did
    assert "learned:1" not in addresses


def test_many_calls_turned_away_by_one_node_move_the_client_on_once() -> None:
    core = opened(make_core())
    calls = [command(core) for _ in range(5)]
    attempts = [attempt(core, call, 0.0) for call in calls]
    for tried in attempts:
        core.on_reply(tried, not_leader(), 0.1)
    assert core.target == "sim:2"  # not sim:1 + 5 members round
    for tried in attempts:  # the connection they were on is gone: no further move
        assert isinstance(core.on_lost(tried, 0.2), Ignored)
    assert core.target == "sim:2"


def test_a_slow_node_that_answers_others_is_kept_and_a_silent_one_is_left() -> None:
    core = opened(make_core())
    slow, quick = command(core), command(core)
    slow_attempt = attempt(core, slow, 0.0)
    core.on_reply(attempt(core, quick, 0.0), ok(), 0.5)  # the node is alive
    stayed = retry(core.on_timeout(slow_attempt, 1.0))
    assert stayed.address == "sim:1"
    silent = attempt(core, slow, 1.0 + stayed.delay_s)
    assert retry(core.on_timeout(silent, 2.1)).address == "sim:2"


def test_an_address_that_accepts_no_connection_is_passed_over_and_nothing_applied() -> None:
    core = opened(make_core())
    core.connect_failed("sim:3")  # not the target: no move
    assert core.target == "sim:1"
    core.connect_failed("sim:1")
    assert core.target == "sim:2"
    call = command(core, deadline_s=0.5)
    now_s = 0.0
    while isinstance(decision := core.on_unreachable(call, now_s, "refused"), Retry):
        now_s += decision.delay_s
    assert type(decision.error) is ClusterUnavailableError  # type: ignore[union-attr]
    # The simulator's form: the attempt's address turned out to be down.
    call = command(core)
    decision = retry(core.on_unreachable(attempt(core, call, 1.0), 1.0, "node down"))
    assert decision.address == "sim:3" and decision.delay_s > 0


# -- the flow window -------------------------------------------------------------------------


def test_busy_answers_halve_the_window_once_per_interval_and_results_widen_it() -> None:
    core = opened(make_core(max_in_flight=64))
    calls = [command(core) for _ in range(40)]
    attempts = [attempt(core, call, 0.0) for call in calls]
    for tried in attempts:  # one burst of "busy" is one signal
        retry(core.on_reply(tried, reply(ReplyStatus.RETRY, message=BUSY), 0.01))
    assert (core.window, core.window_decreases) == (32, 1)
    retry(
        core.on_reply(
            attempt(core, calls[0], 0.1),
            reply(ReplyStatus.RETRY, message="too many commands in flight"),
            0.01 + WINDOW_DECREASE_INTERVAL_S,
        )
    )
    assert core.window == 16
    assert core.start_command(b"cmd", DEADLINE_S) is None  # 40 in flight, window 16
    for tried_call in calls[:16]:
        assert isinstance(core.on_reply(attempt(core, tried_call, 1.0), ok(), 1.0), Done)
    assert 16.9 < core.window < 17.1  # a window of answers widened it by one
    for step in range(20):
        core.narrow(2.0 + step * WINDOW_DECREASE_INTERVAL_S)
    assert core.window == WINDOW_MIN


def test_a_leadership_change_does_not_shrink_the_window() -> None:
    core = opened(make_core(max_in_flight=64))
    call = command(core)
    retry(core.on_reply(attempt(core, call, 0.0), reply(ReplyStatus.RETRY, message=CHANGED), 0))
    assert core.window == 64 and core.window_decreases == 0


def test_the_span_of_numbers_in_flight_is_bounded_and_the_welcome_caps_it() -> None:
    core = opened(make_core(max_in_flight=8))
    core.cap_in_flight(4)  # the cluster caches fewer replies per session
    assert (core.max_in_flight, core.window) == (4, 4)
    core.cap_in_flight(100)  # never raised by a Welcome
    assert core.max_in_flight == 4
    calls = [command(core) for _ in range(4)]
    for call in calls[1:]:
        core.on_reply(attempt(core, call, 0.0), ok(), 0.0)
    # One in flight, but seq 5 would be 4 ahead of seq 1: the cluster would refuse it.
    assert len(core.in_flight) == 1 and not core.has_room()
    assert core.start_command(b"cmd", DEADLINE_S) is None
    assert core.next_seq == 5  # nothing was taken
    core.abandon(calls[0])
    assert command(core).seq == 5


def test_a_command_over_the_size_limit_is_refused_before_a_number_is_taken() -> None:
    core = opened(make_core(max_command_bytes=10))
    with pytest.raises(RequestRejectedError, match="max_command_bytes=10"):
        core.start_command(b"x" * 11, DEADLINE_S)
    assert core.next_seq == 1


# -- what the deadline means ----------------------------------------------------------------------


def test_turned_away_until_the_deadline_is_unavailable_and_nothing_applied() -> None:
    core = opened(make_core())
    call = command(core, deadline_s=1.0)
    answers = itertools.cycle(
        [reply(ReplyStatus.RETRY, message=BUSY), not_leader(), not_leader("sim:1")]
    )
    decision, retries = drive(core, call, lambda tried: next(answers))
    assert sum(r.delay_s for r in retries) <= 1.0  # never waits past the deadline
    assert len(retries) > 5
    error = failure(decision)
    assert type(error) is ClusterUnavailableError
    assert "nothing applied" in str(error)
    assert call.finished and not core.in_flight


@pytest.mark.parametrize("unanswered", ["timeout", "lost", "leadership changed"])
def test_one_attempt_that_may_have_applied_makes_the_deadline_outcome_unknown(
    unanswered: str,
) -> None:
    core = opened(make_core())
    call = command(core, deadline_s=1.0)
    first = attempt(core, call, 0.0)
    if unanswered == "timeout":
        decision = core.on_timeout(first, 0.5)
    elif unanswered == "lost":
        decision = core.on_lost(first, 0.5)
    else:
        decision = core.on_reply(first, reply(ReplyStatus.RETRY, message=CHANGED), 0.5)
    now_s = 0.5 + retry(decision).delay_s
    # Every later attempt is turned away before it could apply; the first still may have.
    decision, retries = drive(core, call, lambda tried: not_leader(), now_s)
    assert retries
    error = failure(decision)
    assert type(error) is OutcomeUnknownError, error
    assert isinstance(error, TimeoutError)


def test_an_attempt_after_the_deadline_is_not_made() -> None:
    core = opened(make_core())
    call = command(core, deadline_s=1.0)
    retry(core.on_reply(attempt(core, call, 0.0), reply(ReplyStatus.RETRY, message=BUSY), 0.0))
    assert type(failure(core.attempt(call, 1.0))) is ClusterUnavailableError
    assert not core.in_flight


def test_backoff_grows_with_each_failure_and_is_cut_at_the_deadline() -> None:
    core = opened(make_core(seed=3))
    call = command(core, deadline_s=100.0)
    delays = []
    for step in range(12):
        tried = attempt(core, call, float(step))
        delays.append(retry(core.on_reply(tried, reply(ReplyStatus.RETRY, message=BUSY), step)))
    for failures, decision in enumerate(delays):
        ceiling_s = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2**failures)
        assert BACKOFF_MIN_S <= decision.delay_s <= ceiling_s
    late = command(core, deadline_s=200.01)
    for _ in range(10):  # ceilings well past the 10 ms left
        retry(core.on_reply(attempt(core, late, 199.0), not_leader(), 199.0))
    assert retry(core.on_reply(attempt(core, late, 200.0), not_leader(), 200.0)).delay_s <= 0.01
    assert isinstance(core.on_reply(attempt(core, late, 200.0), not_leader(), 200.01), Fail)


# -- duplicate and late answers ------------------------------------------------------------------


def test_duplicate_and_late_answers_for_a_finished_command_change_nothing() -> None:
    core = opened(make_core(max_in_flight=16))
    call = command(core)
    first = attempt(core, call, 0.0)
    retry(core.on_timeout(first, 1.0))  # presumed dead: moves to sim:2
    second = attempt(core, call, 1.1)
    assert core.on_reply(second, ok(b"once"), 1.2) == Done(b"once")
    window, target, retries = core.window, core.target, core.retries
    for late in (
        core.on_reply(second, ok(b"once"), 1.3),  # duplicated by the network
        core.on_reply(first, not_leader("sim:3"), 1.4),  # the first attempt's, late
        core.on_reply(first, ok(b"once"), 1.4),
        core.on_timeout(second, 2.0),
        core.on_lost(second, 2.0),
        core.on_reply(second, reply(ReplyStatus.SESSION_UNKNOWN), 2.0),
    ):
        assert isinstance(late, Ignored), late
    assert (core.window, core.target, core.retries) == (window, target, retries)
    assert core.session_id == SESSION and not core.in_flight


def test_an_answer_to_an_earlier_attempt_does_not_decide_the_open_one() -> None:
    core = opened(make_core())
    call = command(core)
    first = attempt(core, call, 0.0)
    retry(core.on_reply(first, reply(ReplyStatus.RETRY, message=BUSY), 0.1))
    second = attempt(core, call, 0.5)
    # The first attempt's answer, duplicated: the second is still open, nothing moves.
    assert isinstance(core.on_reply(first, not_leader("sim:3"), 0.6), Ignored)
    assert core.target == "sim:1" and call.open_attempt == second.number
    assert core.on_reply(second, ok(), 0.7) == Done(b"result")


def test_a_driver_that_makes_two_attempts_at_once_is_stopped() -> None:
    core = opened(make_core())
    call = command(core)
    attempt(core, call, 0.0)
    with pytest.raises(AssertionError, match="two attempts"):
        core.attempt(call, 0.0)


# -- final answers -------------------------------------------------------------------------------


def test_an_unknown_session_with_nothing_applied_reopens_and_frees_the_number() -> None:
    core = opened(make_core())
    call = command(core)
    retry(core.on_reply(attempt(core, call, 0.0), not_leader(), 0.0))
    decision = core.on_reply(attempt(core, call, 0.1), reply(ReplyStatus.SESSION_UNKNOWN), 0.1)
    assert isinstance(decision, Reopen)
    assert core.session_id == 0 and not core.in_flight
    opened(core, SESSION + 1)
    again = command(core)
    assert again.seq == 2  # numbers keep increasing across sessions
    assert attempt(core, again, 0.2).session_id == SESSION + 1


def test_an_unknown_session_after_an_attempt_that_may_have_applied_is_expired() -> None:
    core = opened(make_core())
    call = command(core)
    retry(core.on_lost(attempt(core, call, 0.0), 0.1))
    gone = reply(ReplyStatus.SESSION_UNKNOWN, message="session 41 expired")
    error = failure(core.on_reply(attempt(core, call, 0.2), gone, 0.2))
    assert type(error) is SessionExpiredError and "session 41 expired" in str(error)
    assert core.session_id == 0 and not core.in_flight


def test_an_unknown_old_session_does_not_forget_the_new_one() -> None:
    core = opened(make_core())
    old = command(core)
    old_attempt = attempt(core, old, 0.0)
    newer = command(core)
    assert isinstance(
        core.on_reply(attempt(core, newer, 0.0), reply(ReplyStatus.SESSION_UNKNOWN), 0.1),
        Reopen,
    )
    opened(core, SESSION + 1)
    assert isinstance(core.on_reply(old_attempt, reply(ReplyStatus.SESSION_UNKNOWN), 0.2), Reopen)
    assert core.session_id == SESSION + 1  # the reopened session stays


def test_an_unknown_session_fails_a_keepalive_without_forgetting_the_session() -> None:
    core = opened(make_core())
    call = core.session_call(DEADLINE_S)
    tried = attempt(core, call, 0.0)
    assert tried.session_id == SESSION and tried.seq == 0
    error = failure(core.on_reply(tried, reply(ReplyStatus.SESSION_UNKNOWN), 0.0))
    assert isinstance(error, SessionExpiredError)
    assert core.session_id == SESSION


def test_a_rejected_request_fails_on_its_first_answer() -> None:
    core = opened(make_core())
    call = command(core)
    error = failure(
        core.on_reply(attempt(core, call, 0.0), reply(ReplyStatus.REJECTED, message="bad"), 0)
    )
    assert type(error) is RequestRejectedError and str(error) == "bad"
    assert core.retries == 0 and not core.in_flight


# -- determinism and purity ------------------------------------------------------------------------


def script(seed: int) -> list[Decision]:
    """A fixed run of answers; the decisions depend only on the seed and the times."""
    core = opened(make_core(seed=seed))
    answers = [
        not_leader("sim:2"),
        not_leader("sim:1"),
        reply(ReplyStatus.RETRY, message=BUSY),
        not_leader(),
        reply(ReplyStatus.RETRY, message=CHANGED),
        ok(),
    ]
    call = command(core)
    now_s, decisions = 0.0, []
    for answer in answers:
        decision = core.on_reply(attempt(core, call, now_s), answer, now_s)
        decisions.append(decision)
        now_s += decision.delay_s if isinstance(decision, Retry) else 0.0
    return decisions


def test_the_same_seed_and_times_give_the_same_decisions() -> None:
    assert script(5) == script(5)
    assert script(5) != script(6)  # the jitter comes from the generator given
    assert script(5)[-1] == Done(b"result")


def test_the_core_imports_no_clock_socket_or_global_randomness() -> None:
    imports = _runtime_imports(Path(session_module.__file__))
    assert not [module for module, _ in imports if module.split(".")[0] in FORBIDDEN], imports
