"""Auctions: sessions, timers and pushed messages in one small service.

    {"op": "open", "item": s, "reserve": n, "duration_ms": ms}
        -> {"ok": True, "auction": id, "closes_at_ms": t}      (the caller is the seller)
    {"op": "bid", "auction": id, "amount": n}
        -> {"ok": True, "leading": True}  or an error: no_such_auction, closed, too_low,
           own_auction
    {"op": "watch", "auction": id}  -> {"ok": True}   (pushes every bid and the close)
    {"op": "show", "auction": id}
        -> {"ok": True, "item": s, "high_bid": n, "open": bool, "closes_at_ms": t, ...}

Pushed to sessions (`ctx.send`):
    {"event": "outbid", "auction": id, "amount": n}           to the bidder who lost the lead
    {"event": "bid", "auction": id, "amount": n}               to watchers
    {"event": "closed", "auction": id, "sold": bool, "price": n, "winner": session}
                                                               to seller, winner, watchers

An auction closes through a timer at `closes_at_ms` of cluster time, so every replica
closes it at the same log entry and sends the same messages, however the leader's clock
drifts and whoever leads at that moment.
"""

from __future__ import annotations

from typing import Any

from phalanx.examples.commands import Rejected, check_fields
from phalanx.service import Service
from phalanx.service.context import ServiceContext

_FIELDS = {
    "open": frozenset({"op", "item", "reserve", "duration_ms"}),
    "bid": frozenset({"op", "auction", "amount"}),
    "watch": frozenset({"op", "auction"}),
    "show": frozenset({"op", "auction"}),
}
OPEN_AUCTIONS_MAX = 1000
CLOSED_AUCTIONS_KEPT = 1000
WATCHERS_MAX = 100
DURATION_MS_MAX = 7 * 24 * 3600 * 1000
AMOUNT_MAX = 10**15


def _int(value: Any, name: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise Rejected("bad_argument", f"{name} must be an int in {low}..{high}")
    return value


class Auctions(Service):
    def __init__(self) -> None:
        self.auctions: dict[int, dict[str, Any]] = {}
        self.next_id = 1

    # -- commands ----------------------------------------------------------------------

    def on_message(self, ctx: ServiceContext, session_id: int, message: Any) -> Any:
        try:
            op = check_fields(message, _FIELDS, '{"op": "show", "auction": 1}')
            if op == "open":
                return self._open(ctx, session_id, message)
            auction = self._auction(message["auction"])
            if op == "bid":
                return self._bid(ctx, session_id, auction, message["amount"])
            if op == "watch":
                return self._watch(session_id, auction)
            return {"ok": True, **{k: v for k, v in auction.items() if k != "watchers"}}
        except Rejected as rejected:
            return rejected.reply

    def _open(self, ctx: ServiceContext, seller: int, message: dict[str, Any]) -> Any:
        item = message["item"]
        if type(item) is not str or not 0 < len(item) <= 200:
            raise Rejected("bad_argument", "item must be a string of 1 to 200 characters")
        reserve = _int(message["reserve"], "reserve", 0, AMOUNT_MAX)
        duration = _int(message["duration_ms"], "duration_ms", 1, DURATION_MS_MAX)
        if sum(1 for a in self.auctions.values() if a["open"]) >= OPEN_AUCTIONS_MAX:
            raise Rejected("full", f"{OPEN_AUCTIONS_MAX} auctions are open")
        auction_id = self.next_id
        self.next_id += 1
        closes_at = ctx.time_ms + duration
        self.auctions[auction_id] = {
            "auction": auction_id,
            "item": item,
            "seller": seller,
            "reserve": reserve,
            "high_bid": 0,
            "high_bidder": 0,
            "open": True,
            "closes_at_ms": closes_at,
            "watchers": [],
        }
        ctx.schedule_timer(auction_id, closes_at)
        return {"ok": True, "auction": auction_id, "closes_at_ms": closes_at}

    def _auction(self, auction_id: Any) -> dict[str, Any]:
        if type(auction_id) is not int or auction_id not in self.auctions:
            raise Rejected("no_such_auction", f"no auction {auction_id!r}")
        return self.auctions[auction_id]

    def _bid(self, ctx: ServiceContext, bidder: int, auction: dict[str, Any], amount: Any) -> Any:
        amount = _int(amount, "amount", 1, AMOUNT_MAX)
        if not auction["open"]:
            raise Rejected("closed", f"auction {auction['auction']} is closed")
        if bidder == auction["seller"]:
            raise Rejected("own_auction", "a seller cannot bid on their own auction")
        if amount <= auction["high_bid"]:
            raise Rejected("too_low", f"the high bid is {auction['high_bid']}")
        previous = auction["high_bidder"]
        auction["high_bid"], auction["high_bidder"] = amount, bidder
        number = auction["auction"]
        if previous and previous != bidder:
            ctx.send(previous, {"event": "outbid", "auction": number, "amount": amount})
        for watcher in auction["watchers"]:
            ctx.send(watcher, {"event": "bid", "auction": number, "amount": amount})
        return {"ok": True, "leading": True}

    def _watch(self, session_id: int, auction: dict[str, Any]) -> Any:
        watchers = auction["watchers"]
        if session_id not in watchers:
            if len(watchers) >= WATCHERS_MAX:
                raise Rejected("full", f"{WATCHERS_MAX} sessions already watch it")
            watchers.append(session_id)
        return {"ok": True}

    # -- callbacks ---------------------------------------------------------------------

    def on_timer(self, ctx: ServiceContext, timer_id: int) -> None:
        auction = self.auctions.get(timer_id)
        if auction is None or not auction["open"]:
            return
        auction["open"] = False
        sold = auction["high_bid"] >= max(auction["reserve"], 1)
        event = {
            "event": "closed",
            "auction": timer_id,
            "sold": sold,
            "price": auction["high_bid"] if sold else 0,
            "winner": auction["high_bidder"] if sold else 0,
        }
        told = [auction["seller"], auction["high_bidder"], *auction["watchers"]]
        for session_id in dict.fromkeys(s for s in told if s):  # once each, in order
            ctx.send(session_id, event)
        self._forget_old_closed()

    def on_session_close(self, ctx: ServiceContext, session_id: int, reason: str) -> None:
        for auction in self.auctions.values():
            if session_id in auction["watchers"]:
                auction["watchers"].remove(session_id)

    def _forget_old_closed(self) -> None:
        closed = [number for number, a in self.auctions.items() if not a["open"]]
        for number in closed[:-CLOSED_AUCTIONS_KEPT]:
            del self.auctions[number]

    # -- state -------------------------------------------------------------------------

    def apply(self, command: Any) -> Any:
        raise AssertionError("Auctions is driven through on_message")

    def state(self) -> Any:
        return {
            "next_id": self.next_id,
            "auctions": [self.auctions[k] for k in sorted(self.auctions)],
        }

    def restore(self, snapshot: Any) -> None:
        self.next_id = snapshot["next_id"]
        self.auctions = {a["auction"]: dict(a) for a in snapshot["auctions"]}
