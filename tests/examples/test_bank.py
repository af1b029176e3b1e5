"""The bank service: its commands and replies, its limits, and that money is conserved."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import phalanx.examples.bank as bank_module
from phalanx.examples import Bank
from phalanx.examples.bank import ACCOUNT_NAME_BYTES_MAX, ACCOUNTS_MAX, AMOUNT_MAX, DEPOSITED_MAX
from phalanx.service import Service


def _error_code(reply: Any) -> str:
    """The code of an error reply, after checking it has the conventional shape."""
    assert isinstance(reply, dict)
    assert reply["ok"] is False
    assert set(reply) - {"balance"} == {"ok", "error", "message"}
    assert isinstance(reply["message"], str)
    assert reply["message"]
    code = reply["error"]
    assert isinstance(code, str)
    return code


def _bank_with_alice_and_bob() -> Bank:
    """alice holds 100, bob 20: 120 deposited, nothing withdrawn."""
    bank = Bank()
    for command in [
        {"op": "open", "account": "alice"},
        {"op": "open", "account": "bob"},
        {"op": "deposit", "account": "alice", "amount": 100},
        {"op": "deposit", "account": "bob", "amount": 20},
    ]:
        assert bank.apply(command)["ok"] is True
    return bank


# --- the commands, reply for reply --------------------------------------------------------


def test_bank_is_a_service() -> None:
    assert isinstance(Bank(), Service)


def test_a_new_bank_is_empty() -> None:
    bank = Bank()
    assert bank.state() == {"accounts": {}, "deposited": 0, "withdrawn": 0}
    assert bank.apply({"op": "total"}) == {"ok": True, "total": 0, "deposited": 0, "withdrawn": 0}
    assert bank.apply({"op": "balances"}) == {"ok": True, "balances": {}}


def test_open_starts_an_account_at_zero() -> None:
    bank = Bank()
    assert bank.apply({"op": "open", "account": "alice"}) == {"ok": True, "balance": 0}
    assert bank.apply({"op": "balance", "account": "alice"}) == {"ok": True, "balance": 0}


def test_deposit_and_withdraw_reply_with_the_new_balance() -> None:
    bank = Bank()
    bank.apply({"op": "open", "account": "alice"})
    assert bank.apply({"op": "deposit", "account": "alice", "amount": 250}) == {
        "ok": True,
        "balance": 250,
    }
    assert bank.apply({"op": "withdraw", "account": "alice", "amount": 50}) == {
        "ok": True,
        "balance": 200,
    }
    assert bank.apply({"op": "withdraw", "account": "alice", "amount": 200}) == {
        "ok": True,
        "balance": 0,
    }
    assert bank.apply({"op": "total"}) == {
        "ok": True,
        "total": 0,
        "deposited": 250,
        "withdrawn": 250,
    }


def test_transfer_moves_money_between_accounts() -> None:
    bank = _bank_with_alice_and_bob()
    reply = bank.apply({"op": "transfer", "from": "alice", "to": "bob", "amount": 30})
    assert reply == {"ok": True, "from_balance": 70, "to_balance": 50}
    # A transfer moves money inside the bank: the counters do not change.
    assert bank.apply({"op": "total"}) == {
        "ok": True,
        "total": 120,
        "deposited": 120,
        "withdrawn": 0,
    }


def test_transfer_of_the_whole_balance_is_allowed() -> None:
    bank = _bank_with_alice_and_bob()
    reply = bank.apply({"op": "transfer", "from": "bob", "to": "alice", "amount": 20})
    assert reply == {"ok": True, "from_balance": 0, "to_balance": 120}


def test_balances_lists_every_account_sorted() -> None:
    bank = _bank_with_alice_and_bob()
    bank.apply({"op": "open", "account": "aaron"})
    reply = bank.apply({"op": "balances"})
    assert reply == {"ok": True, "balances": {"aaron": 0, "alice": 100, "bob": 20}}
    assert list(reply["balances"]) == ["aaron", "alice", "bob"]


def test_state_holds_balances_and_counters() -> None:
    bank = _bank_with_alice_and_bob()
    bank.apply({"op": "withdraw", "account": "alice", "amount": 1})
    assert bank.state() == {
        "accounts": {"alice": 99, "bob": 20},
        "deposited": 120,
        "withdrawn": 1,
    }


def test_reads_change_nothing() -> None:
    bank = _bank_with_alice_and_bob()
    before = bank.state()
    for command in [{"op": "balance", "account": "bob"}, {"op": "balances"}, {"op": "total"}]:
        assert bank.apply(command)["ok"] is True
    assert bank.state() == before


def test_the_docstring_documents_every_command() -> None:
    doc = Bank.__doc__ or ""
    for op in ["open", "deposit", "withdraw", "transfer", "balance", "balances", "total"]:
        assert f'"op": "{op}"' in doc


# --- every error path leaves the state unchanged -------------------------------------------


def test_an_overdraft_is_refused_with_the_balance() -> None:
    bank = _bank_with_alice_and_bob()
    before = bank.state()
    reply = bank.apply({"op": "withdraw", "account": "bob", "amount": 21})
    assert _error_code(reply) == "insufficient_funds"
    assert reply["balance"] == 20
    reply = bank.apply({"op": "transfer", "from": "bob", "to": "alice", "amount": 21})
    assert _error_code(reply) == "insufficient_funds"
    assert reply["balance"] == 20
    assert bank.state() == before


_BAD_COMMANDS: list[tuple[str, Any, str]] = [
    ("not a dict", [("op", "total")], "bad_command"),
    ("None", None, "bad_command"),
    ("no op", {"account": "alice"}, "bad_command"),
    ("unknown op", {"op": "close", "account": "alice"}, "unknown_op"),
    ("op not a string", {"op": None}, "unknown_op"),
    ("open without account", {"op": "open"}, "bad_argument"),
    ("deposit without amount", {"op": "deposit", "account": "alice"}, "bad_argument"),
    ("transfer without to", {"op": "transfer", "from": "alice", "amount": 1}, "bad_argument"),
    ("extra field", {"op": "total", "account": "alice"}, "bad_argument"),
    ("misspelt field", {"op": "deposit", "acount": "alice", "amount": 1}, "bad_argument"),
    ("open existing", {"op": "open", "account": "alice"}, "account_exists"),
    ("open empty name", {"op": "open", "account": ""}, "bad_argument"),
    ("open name not a string", {"op": "open", "account": 7}, "bad_argument"),
    ("open name surrogate", {"op": "open", "account": "\ud800"}, "bad_argument"),
    (
        "open name too long",
        {"op": "open", "account": "n" * (ACCOUNT_NAME_BYTES_MAX + 1)},
        "too_large",
    ),
    ("deposit float", {"op": "deposit", "account": "alice", "amount": 1.0}, "bad_amount"),
    ("deposit bool", {"op": "deposit", "account": "alice", "amount": True}, "bad_amount"),
    ("deposit string", {"op": "deposit", "account": "alice", "amount": "5"}, "bad_amount"),
    ("deposit zero", {"op": "deposit", "account": "alice", "amount": 0}, "bad_amount"),
    ("deposit negative", {"op": "deposit", "account": "alice", "amount": -5}, "bad_amount"),
    (
        "deposit too much",
        {"op": "deposit", "account": "alice", "amount": AMOUNT_MAX + 1},
        "bad_amount",
    ),
    ("deposit unknown", {"op": "deposit", "account": "carol", "amount": 1}, "no_such_account"),
    ("withdraw float", {"op": "withdraw", "account": "alice", "amount": 0.5}, "bad_amount"),
    ("withdraw negative", {"op": "withdraw", "account": "alice", "amount": -1}, "bad_amount"),
    ("withdraw unknown", {"op": "withdraw", "account": "carol", "amount": 1}, "no_such_account"),
    ("overdraft", {"op": "withdraw", "account": "bob", "amount": 21}, "insufficient_funds"),
    (
        "transfer to itself",
        {"op": "transfer", "from": "alice", "to": "alice", "amount": 1},
        "same_account",
    ),
    (
        "transfer from unknown",
        {"op": "transfer", "from": "carol", "to": "alice", "amount": 1},
        "no_such_account",
    ),
    (
        "transfer to unknown",
        {"op": "transfer", "from": "alice", "to": "carol", "amount": 1},
        "no_such_account",
    ),
    (
        "transfer zero",
        {"op": "transfer", "from": "alice", "to": "bob", "amount": 0},
        "bad_amount",
    ),
    (
        "transfer bool",
        {"op": "transfer", "from": "alice", "to": "bob", "amount": False},
        "bad_amount",
    ),
    (
        "transfer overdraft",
        {"op": "transfer", "from": "alice", "to": "bob", "amount": 101},
        "insufficient_funds",
    ),
    (
        "transfer name not a string",
        {"op": "transfer", "from": "alice", "to": ["bob"], "amount": 1},
        "bad_argument",
    ),
    ("balance unknown", {"op": "balance", "account": "carol"}, "no_such_account"),
    ("balance bad name", {"op": "balance", "account": None}, "bad_argument"),
]


@pytest.mark.parametrize(
    ("command", "code"),
    [pytest.param(command, code, id=name) for name, command, code in _BAD_COMMANDS],
)
def test_a_bad_command_gets_an_error_reply_and_changes_nothing(command: Any, code: str) -> None:
    bank = _bank_with_alice_and_bob()
    before = bank.state()
    assert _error_code(bank.apply(command)) == code
    assert bank.state() == before


def test_the_largest_amount_and_name_are_accepted() -> None:
    bank = Bank()
    name = "n" * ACCOUNT_NAME_BYTES_MAX
    assert bank.apply({"op": "open", "account": name}) == {"ok": True, "balance": 0}
    assert bank.apply({"op": "deposit", "account": name, "amount": AMOUNT_MAX}) == {
        "ok": True,
        "balance": AMOUNT_MAX,
    }


def test_a_full_bank_refuses_new_accounts() -> None:
    bank = Bank()
    for number in range(ACCOUNTS_MAX):
        assert bank.apply({"op": "open", "account": f"a{number}"})["ok"] is True
    before = bank.state()
    assert _error_code(bank.apply({"op": "open", "account": "one-more"})) == "full"
    assert bank.state() == before
    # The accounts that exist still work.
    assert bank.apply({"op": "deposit", "account": "a0", "amount": 5}) == {"ok": True, "balance": 5}


def test_deposits_stop_at_the_lifetime_limit() -> None:
    bank = Bank()
    bank.apply({"op": "open", "account": "whale"})
    deposits = DEPOSITED_MAX // AMOUNT_MAX
    for _ in range(deposits):
        assert bank.apply({"op": "deposit", "account": "whale", "amount": AMOUNT_MAX})["ok"]
    room = DEPOSITED_MAX - deposits * AMOUNT_MAX
    before = bank.state()
    reply = bank.apply({"op": "deposit", "account": "whale", "amount": room + 1})
    assert _error_code(reply) == "limit_exceeded"
    assert bank.state() == before
    assert bank.apply({"op": "deposit", "account": "whale", "amount": room}) == {
        "ok": True,
        "balance": DEPOSITED_MAX,
    }
    # Withdrawing does not make room: the limit is on money ever deposited.
    bank.apply({"op": "withdraw", "account": "whale", "amount": AMOUNT_MAX})
    reply = bank.apply({"op": "deposit", "account": "whale", "amount": 1})
    assert _error_code(reply) == "limit_exceeded"


def test_a_broken_invariant_fails_an_assertion(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate a handler bug that lets a withdrawal go unrecorded: the check must catch it
    # at that command.
    bank = _bank_with_alice_and_bob()
    real_check_funds = bank_module._check_funds

    def check_funds_and_lose_the_record(name: str, balance: int, amount: int) -> None:
        real_check_funds(name, balance, amount)
        bank._withdrawn -= amount

    monkeypatch.setattr(bank_module, "_check_funds", check_funds_and_lose_the_record)
    with pytest.raises(AssertionError, match="bank invariant broken"):
        bank.apply({"op": "withdraw", "account": "alice", "amount": 10})


# --- determinism -------------------------------------------------------------------------

_NAMES = ["alice", "bob", "carol", "dave"]


def _random_command(rng: random.Random) -> Any:
    op = rng.choice(["open", "deposit", "withdraw", "transfer", "balance", "total", "bogus"])
    amount = rng.choice([rng.randrange(1, 200), 0, -3, 2.5, True])
    if op in ("open", "balance"):
        return {"op": op, "account": rng.choice(_NAMES)}
    if op in ("deposit", "withdraw"):
        return {"op": op, "account": rng.choice(_NAMES), "amount": amount}
    if op == "transfer":
        return {"op": op, "from": rng.choice(_NAMES), "to": rng.choice(_NAMES), "amount": amount}
    if op == "bogus":
        return rng.choice([None, {"op": "bogus"}, {"op": "open"}])
    return {"op": op}


@pytest.mark.parametrize("seed", range(5))
def test_two_banks_fed_the_same_commands_agree(seed: int) -> None:
    rng = random.Random(seed)
    commands = [_random_command(rng) for _ in range(2_000)]
    first, second = Bank(), Bank()
    for command in commands:
        assert first.apply(command) == second.apply(command), f"seed {seed}: {command}"
    assert first.state() == second.state()


# --- money is conserved ------------------------------------------------------------------

_names = st.sampled_from(["a", "b", "c"])
_amounts = st.one_of(
    st.integers(min_value=1, max_value=500),
    st.integers(min_value=-(10**16), max_value=10**16),
    st.sampled_from([0, -1, AMOUNT_MAX, AMOUNT_MAX + 1, 1.5, True]),
)
_commands = st.one_of(
    st.builds(lambda a: {"op": "open", "account": a}, _names),
    st.builds(lambda a, n: {"op": "deposit", "account": a, "amount": n}, _names, _amounts),
    st.builds(lambda a, n: {"op": "withdraw", "account": a, "amount": n}, _names, _amounts),
    st.builds(
        lambda a, b, n: {"op": "transfer", "from": a, "to": b, "amount": n},
        _names,
        _names,
        _amounts,
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_commands, max_size=50))
def test_money_is_conserved(commands: list[dict[str, Any]]) -> None:
    bank = Bank()
    for command in commands:
        before = bank.state()
        reply = bank.apply(command)
        after = bank.state()
        if reply["ok"] is False:
            assert after == before
        balances = after["accounts"]
        assert sum(balances.values()) == after["deposited"] - after["withdrawn"]
        assert all(balance >= 0 for balance in balances.values())
        assert bank.apply({"op": "total"}) == {
            "ok": True,
            "total": sum(balances.values()),
            "deposited": after["deposited"],
            "withdrawn": after["withdrawn"],
        }
        if command["op"] == "transfer" and reply["ok"]:
            # A transfer changes neither counter, and only its two accounts.
            assert (after["deposited"], after["withdrawn"]) == (
                before["deposited"],
                before["withdrawn"],
            )
            assert reply == {
                "ok": True,
                "from_balance": balances[command["from"]],
                "to_balance": balances[command["to"]],
            }
            untouched = set(balances) - {command["from"], command["to"]}
            assert all(balances[name] == before["accounts"][name] for name in untouched)
