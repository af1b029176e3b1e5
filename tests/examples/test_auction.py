"""The auction example through the real container: sessions, a closing timer and the
messages pushed to seller, bidders and watchers, identical on every replica."""

from __future__ import annotations

from typing import Any

import msgspec

from phalanx.core.types import Entry, EntryKind, Index, Term
from phalanx.examples.auction import Auctions
from phalanx.service.container import ServiceContainer
from phalanx.service.envelope import Clock, Command, Envelope, OpenSession, encode_envelope

SELLER, ALICE, BOB = 1, 2, 3


def entries(envelopes: list[Envelope]) -> list[Entry]:
    return [
        Entry(Term(1), Index(i + 1), EntryKind.COMMAND, encode_envelope(e))
        for i, e in enumerate(envelopes)
    ]


def cmd(time_ms: int, session: int, seq: int, message: Any) -> Command:
    return Command(time_ms, session, seq, seq, msgspec.msgpack.encode(message))


LOG = entries(
    [
        OpenSession(0),  # session 1: the seller
        OpenSession(0),  # session 2: Alice
        OpenSession(0),  # session 3: Bob
        cmd(10, SELLER, 1, {"op": "open", "item": "lamp", "reserve": 50, "duration_ms": 1000}),
        cmd(20, BOB, 1, {"op": "watch", "auction": 1}),
        cmd(30, ALICE, 1, {"op": "bid", "auction": 1, "amount": 40}),
        cmd(40, BOB, 2, {"op": "bid", "auction": 1, "amount": 40}),
        cmd(50, BOB, 3, {"op": "bid", "auction": 1, "amount": 60}),
        cmd(60, SELLER, 2, {"op": "bid", "auction": 1, "amount": 70}),
        Clock(1_010),  # the auction closes here
        cmd(1_020, ALICE, 2, {"op": "bid", "auction": 1, "amount": 90}),
    ]
)


def run() -> tuple[ServiceContainer, list[Any], list[tuple[int, Any]]]:
    container = ServiceContainer(Auctions())
    replies = []
    for entry in LOG:
        result = container.apply(entry)
        if result is not None and result.reply:
            replies.append(msgspec.msgpack.decode(result.reply))
    pushed = [(p.session_id, msgspec.msgpack.decode(p.payload)) for p in container.new_egress]
    return container, replies, pushed


def test_bids_pushes_and_the_close_through_the_log() -> None:
    _, replies, pushed = run()
    assert replies[0] == {"ok": True, "auction": 1, "closes_at_ms": 1010}
    assert replies[2] == {"ok": True, "leading": True}  # Alice, 40
    assert replies[3]["error"] == "too_low"  # Bob, 40
    assert replies[4] == {"ok": True, "leading": True}  # Bob, 60
    assert replies[5]["error"] == "own_auction"
    assert replies[6]["error"] == "closed"  # after the timer
    closed = {"event": "closed", "auction": 1, "sold": True, "price": 60, "winner": BOB}
    assert pushed == [
        (BOB, {"event": "bid", "auction": 1, "amount": 40}),
        (ALICE, {"event": "outbid", "auction": 1, "amount": 60}),
        (BOB, {"event": "bid", "auction": 1, "amount": 60}),
        (SELLER, closed),
        (BOB, closed),
    ]


def test_every_replica_closes_and_pushes_identically() -> None:
    first, _, pushed_first = run()
    second, _, pushed_second = run()
    assert pushed_first == pushed_second
    assert first.state_digest() == second.state_digest()


def test_state_survives_a_snapshot() -> None:
    container, _, _ = run()
    copy = ServiceContainer(Auctions())
    copy.restore(container.snapshot_bytes())
    assert copy.state_digest() == container.state_digest()
