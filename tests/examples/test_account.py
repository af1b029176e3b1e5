"""The bank account's rules, its digest, and the faulty twin's repeatability."""

from __future__ import annotations

import random

import pytest

from phalanx.examples.account import (
    AMOUNT_CENTS_MAX,
    BALANCE_CENTS_MAX,
    HISTORY_ENTRIES_MAX,
    AccountError,
    AccountState,
    Command,
    Deposit,
    DeterministicAccount,
    FaultyAccount,
    InvalidAmountError,
    Outcome,
    Withdraw,
    format_cents,
    state_digest,
    transition,
)


def test_deposit_adds_to_the_balance_and_records_history() -> None:
    state, outcome = transition(AccountState(), Deposit(12_50))
    assert outcome is Outcome.APPLIED
    assert state.balance_cents == 12_50
    assert state.applied_count == 1
    assert [entry.command for entry in state.history] == [Deposit(12_50)]
    assert state.history[0].balance_after_cents == 12_50


def test_withdraw_within_the_balance_is_applied() -> None:
    account = DeterministicAccount()
    account.apply(Deposit(100_00))
    assert account.apply(Withdraw(100_00)) is Outcome.APPLIED
    assert account.state.balance_cents == 0
    assert account.state.applied_count == 2


def test_overdraft_is_rejected() -> None:
    account = DeterministicAccount()
    account.apply(Deposit(10_00))
    assert account.apply(Withdraw(10_01)) is Outcome.REJECTED_OVERDRAFT
    assert account.state.balance_cents == 10_00


def test_rejected_withdraw_leaves_the_state_unchanged() -> None:
    before, _ = transition(AccountState(), Deposit(5_00))
    after, outcome = transition(before, Withdraw(6_00))
    assert outcome is Outcome.REJECTED_OVERDRAFT
    assert after == before
    assert state_digest(after) == state_digest(before)


def test_deposit_past_the_balance_limit_is_rejected_and_changes_nothing() -> None:
    full = AccountState(balance_cents=BALANCE_CENTS_MAX)
    after, outcome = transition(full, Deposit(1))
    assert outcome is Outcome.REJECTED_BALANCE_LIMIT
    assert after == full


@pytest.mark.parametrize("make_command", [Deposit, Withdraw])
@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (0, "must be positive, got 0"),
        (-5, "must be positive, got -5"),
        (AMOUNT_CENTS_MAX + 1, f"must be at most {AMOUNT_CENTS_MAX} cents"),
        (1.5, "must be a whole number of cents (int), got 1.5"),
        ("10", "must be a whole number of cents (int), got '10'"),
        (True, "must be a whole number of cents (int), got True"),
    ],
)
def test_invalid_amounts_are_rejected_with_a_clear_error(
    make_command: type[Command], amount: object, message: str
) -> None:
    with pytest.raises(InvalidAmountError) as raised:
        make_command(amount)  # type: ignore[arg-type]
    kind = "deposit" if make_command is Deposit else "withdraw"
    assert str(raised.value).startswith(f"{kind} amount ")
    assert message in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_the_largest_amount_is_accepted() -> None:
    assert Deposit(AMOUNT_CENTS_MAX).amount_cents == AMOUNT_CENTS_MAX


def test_history_is_bounded_but_the_count_covers_the_whole_past() -> None:
    account = DeterministicAccount()
    for _ in range(HISTORY_ENTRIES_MAX + 10):
        account.apply(Deposit(1))
    assert len(account.state.history) == HISTORY_ENTRIES_MAX
    assert account.state.applied_count == HISTORY_ENTRIES_MAX + 10
    assert account.state.history[-1].sequence == HISTORY_ENTRIES_MAX + 10


def _commands() -> list[Command]:
    rng = random.Random(1)
    return [
        Deposit(rng.randint(1, 50) * 100) if rng.random() < 0.6 else Withdraw(rng.randint(1, 50))
        for _ in range(200)
    ]


def test_same_inputs_give_the_same_state_and_digest() -> None:
    first, second = DeterministicAccount(), DeterministicAccount()
    for command in _commands():
        assert first.apply(command) is second.apply(command)
        assert first.digest() == second.digest()
    assert first.state == second.state


def test_digest_is_pinned() -> None:
    # Pinned: a change of the encoding or the hash must be deliberate, because replicas
    # running different versions would compare digests that can never match.
    state, _ = transition(AccountState(), Deposit(1_00))
    assert state_digest(AccountState()) == "14c339f0ed107e6d044226bc05c0a5f0"
    assert state_digest(state) == "883fa08d43fc8746afa0463ef0665a74"
    assert state_digest(AccountState(1_00, 1, state.history)) == state_digest(state)


def test_digest_tells_states_with_equal_balances_apart() -> None:
    via_one, _ = transition(AccountState(), Deposit(2_00))
    via_two, _ = transition(transition(AccountState(), Deposit(1_00))[0], Deposit(1_00))
    assert via_one.balance_cents == via_two.balance_cents
    assert state_digest(via_one) != state_digest(via_two)


def test_faulty_account_with_the_same_seed_skips_the_same_steps() -> None:
    def skipped_steps(seed: int) -> list[int]:
        account = FaultyAccount(random.Random(seed), skip_probability=0.2)
        return [
            step
            for step, command in enumerate(_commands(), start=1)
            if account.apply(command) is Outcome.SKIPPED
        ]

    assert skipped_steps(5) == skipped_steps(5)
    assert skipped_steps(5) != []
    assert skipped_steps(5) != skipped_steps(6)


def test_a_skip_leaves_the_faulty_state_behind() -> None:
    account = FaultyAccount(random.Random(0), skip_probability=1.0)
    assert account.apply(Deposit(10_00)) is Outcome.SKIPPED
    assert account.state == AccountState()


def test_skipping_a_rejected_input_is_no_fault() -> None:
    # A rejected input is no transition, so there is nothing to skip.
    account = FaultyAccount(random.Random(0), skip_probability=1.0)
    assert account.apply(Withdraw(1)) is Outcome.REJECTED_OVERDRAFT


def test_faulty_account_without_skips_is_deterministic() -> None:
    faulty, healthy = FaultyAccount(random.Random(3), 0.0), DeterministicAccount()
    for command in _commands():
        faulty.apply(command)
        healthy.apply(command)
    assert faulty.state == healthy.state


@pytest.mark.parametrize("probability", [-0.1, 1.5])
def test_skip_probability_out_of_range_is_rejected(probability: float) -> None:
    with pytest.raises(AccountError, match="skip probability must be between 0 and 1"):
        FaultyAccount(random.Random(0), probability)


@pytest.mark.parametrize(
    ("cents", "text"), [(0, "0.00"), (5, "0.05"), (12_345, "123.45"), (-250, "-2.50")]
)
def test_format_cents(cents: int, text: str) -> None:
    assert format_cents(cents) == text
