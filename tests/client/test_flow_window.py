"""The client's flow window (issue 11, item 4): callers beyond it wait in the client,
sending nothing; the span of sequence numbers in flight never exceeds what a session
caches; a busy leader halves the window once per interval, answers widen it again."""

from __future__ import annotations

import asyncio

import pytest

from phalanx.client import AsyncClient, ClusterUnavailableError
from phalanx.client.client import WINDOW_DECREASE_INTERVAL_S, WINDOW_MIN


def test_callers_beyond_the_window_wait_first_come_first_served() -> None:
    async def scenario() -> None:
        client = AsyncClient(["127.0.0.1:9"], max_in_flight=4)
        deadline = asyncio.get_running_loop().time() + 5
        admitted = [await client._admit(deadline) for _ in range(4)]
        assert admitted == [1, 2, 3, 4]
        waiting = [asyncio.create_task(client._admit(deadline)) for _ in range(2)]
        await asyncio.sleep(0.01)
        assert not any(task.done() for task in waiting)
        client._release(1)
        assert await asyncio.wait_for(waiting[0], 1) == 5
        await asyncio.sleep(0.01)
        assert not waiting[1].done()
        client._release(2)
        assert await asyncio.wait_for(waiting[1], 1) == 6

    asyncio.run(scenario())


def test_the_span_of_sequence_numbers_in_flight_is_bounded_by_max_in_flight() -> None:
    """A slow command holds `first_incomplete` back: newer ones must not run more than
    `max_in_flight` ahead of it, or the cluster's reply cache would refuse them."""

    async def scenario() -> None:
        client = AsyncClient(["127.0.0.1:9"], max_in_flight=4)
        deadline = asyncio.get_running_loop().time() + 5
        for _ in range(4):
            await client._admit(deadline)
        for seq in (2, 3, 4):
            client._release(seq)  # seq 1 is still in flight
        assert len(client._outstanding) == 1
        blocked = asyncio.create_task(client._admit(deadline))
        await asyncio.sleep(0.01)
        assert not blocked.done()  # 5 - 1 = 4: one more would span 5 numbers
        client._release(1)
        assert await blocked == 5

    asyncio.run(scenario())


def test_a_caller_that_finds_no_room_before_its_deadline_sent_nothing() -> None:
    async def scenario() -> None:
        client = AsyncClient(["127.0.0.1:9"], max_in_flight=1)
        loop = asyncio.get_running_loop()
        await client._admit(loop.time() + 5)
        with pytest.raises(ClusterUnavailableError, match="nothing was sent"):
            await client._admit(loop.time() + 0.05)
        assert client._next_seq == 2  # no number was taken for it

    asyncio.run(scenario())


def test_busy_halves_the_window_once_per_interval_and_answers_widen_it() -> None:
    async def scenario() -> None:
        client = AsyncClient(["127.0.0.1:9"], max_in_flight=64)
        assert client.window == 64
        for _ in range(10):  # one burst of "busy" answers is one signal
            client._narrow()
        assert client.window == 32 and client.window_decreases == 1
        await asyncio.sleep(WINDOW_DECREASE_INTERVAL_S * 1.5)
        client._narrow()
        assert client.window == 16
        for _ in range(16):  # a window's worth of answers: one more in flight
            client._widen()
        assert 16.9 < client.window < 17.1
        for _ in range(20):
            await asyncio.sleep(WINDOW_DECREASE_INTERVAL_S * 1.1)
            client._narrow()
        assert client.window == WINDOW_MIN

    asyncio.run(scenario())
