"""The auction example on real nodes: the close is pushed to seller and winner."""

from __future__ import annotations

import asyncio
from pathlib import Path

from phalanx.client import AsyncClient
from phalanx.server.local import LocalCluster


def test_seller_and_winner_are_told_when_the_auction_closes(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, services=["phalanx.examples.auction:Auctions"] * 3)

    async def scenario() -> tuple[object, object, int]:
        async with (
            AsyncClient(cluster.addresses, timeout=20) as seller,
            AsyncClient(cluster.addresses, timeout=20) as bidder,
        ):
            seller_events, bidder_events = seller.messages(), bidder.messages()
            opened = await seller.call(
                {"op": "open", "item": "lamp", "reserve": 10, "duration_ms": 800}
            )
            bid = await bidder.call({"op": "bid", "auction": opened["auction"], "amount": 25})
            assert bid == {"ok": True, "leading": True}
            to_seller = await asyncio.wait_for(anext(seller_events), 15)
            to_bidder = await asyncio.wait_for(anext(bidder_events), 15)
            return to_seller, to_bidder, bidder.session_id

    try:
        for index in range(3):
            cluster.start(index)
        to_seller, to_bidder, bidder_session = asyncio.run(scenario())
    finally:
        cluster.stop_all()
    closed = {"event": "closed", "auction": 1, "sold": True, "price": 25, "winner": bidder_session}
    assert to_seller == closed and to_bidder == closed
