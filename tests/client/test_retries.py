"""How the client retries, against fake nodes that answer as each test scripts
(issue 11, item 6: "The client gives up on what it was told").

Each test states what the client may conclude from the answers it got: a command is
reported as possibly applied (`OutcomeUnknownError`) only if some attempt was sent and
then went unanswered or was answered "outcome unknown"; answers that turn it away
before it is proposed mean it did not happen (`ClusterUnavailableError`).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import pytest

from phalanx.client import (
    AsyncClient,
    ClusterUnavailableError,
    HandshakeRefusedError,
    OutcomeUnknownError,
    RequestRejectedError,
)
from phalanx.client.client import (
    BACKOFF_MAX_S,
    BACKOFF_MIN_S,
    MAX_COMMAND_BYTES_DEFAULT,
    MAX_LEARNED_ADDRESSES,
    backoff_delay_s,
)
from phalanx.core.errors import ConfigError
from phalanx.server.config import NodeConfig
from phalanx.transport.addresses import free_ports
from phalanx.transport.wire import (
    MAX_FRAME_BYTES_DEFAULT,
    ClientReply,
    CommandRequest,
    OpenSessionRequest,
    ReplyStatus,
    WireMessage,
)

from .fake_node import CLOSE, FakeNode, always, sessions_then

T = TypeVar("T")
REFUSAL = "cluster id 'elsewhere' is not this cluster's ('phalanx')"
BUSY = "leader busy"
#: A behaviour bound, not a speed claim: with a 10 s deadline, "at once" is far below it.
FAST_S = 3.0
#: Commands a client may send in 2 s to a node that keeps saying "busy": the backoff
#: allows about 25; the old fixed 50 ms delay allowed 40 and a spin allows thousands.
BUSY_ATTEMPTS_MAX = 35


def run(scenario: Callable[..., Awaitable[T]], *nodes: FakeNode) -> T:
    """Runs `scenario(*nodes)` with the fake nodes listening, and stops them after."""

    async def main() -> T:
        for node in nodes:
            await node.start()
        try:
            return await scenario(*nodes)
        finally:
            for node in nodes:
                await node.stop()

    return asyncio.run(main())


def ok(value: Any) -> Callable[[WireMessage], ClientReply]:
    payload = msgspec.msgpack.encode(value)
    return lambda message: ClientReply(message.request_id, ReplyStatus.OK, payload)  # type: ignore[union-attr]


class CountingRandom(random.Random):
    """Counts the back-off delays drawn from it."""

    draws = 0

    def uniform(self, a: float, b: float) -> float:
        self.draws += 1
        return super().uniform(a, b)


async def call(
    addresses: list[str], command: Any = "get", rng: random.Random | None = None, **options: Any
) -> tuple[AsyncClient, Any]:
    """(the client, what `call` returned or raised) for one call with a fresh client."""
    async with AsyncClient(addresses, **options) as client:
        if rng is not None:
            client._rng = rng
        try:
            return client, await client.call(command)
        except Exception as error:
            return client, error


# -- following hints --------------------------------------------------------------------------


def test_a_hint_to_an_address_the_client_was_not_given_is_followed() -> None:
    leader = FakeNode(sessions_then(ok("done")))
    follower = FakeNode(
        lambda m: ClientReply(
            m.request_id,  # type: ignore[union-attr]
            ReplyStatus.NOT_LEADER,
            leader_hint=leader.address,  # known once the nodes have started
        )
    )

    rng = CountingRandom()

    async def scenario(leader: FakeNode, follower: FakeNode) -> tuple[AsyncClient, Any]:
        return await call([follower.address], rng=rng, timeout=5.0)

    client, result = run(scenario, leader, follower)
    assert result == "done"
    assert rng.draws == 0  # pointed at the leader, the client went at once
    assert len(follower.arrivals) == 1  # the session request, redirected once
    assert len(leader.requests(CommandRequest)) == 1
    host, _, port = leader.address.rpartition(":")
    assert client.addresses == [client.addresses[0], (host, int(port))]


def test_two_nodes_that_point_at_each_other_do_not_make_the_client_spin() -> None:
    first, second = FakeNode(lambda m: None), FakeNode(lambda m: None)

    async def scenario(first: FakeNode, second: FakeNode) -> tuple[AsyncClient, Any]:
        first.answer = always(ReplyStatus.NOT_LEADER, leader_hint=second.address)
        second.answer = always(ReplyStatus.NOT_LEADER, leader_hint=first.address)
        return await call([first.address], timeout=2.0)

    _, result = run(scenario, first, second)
    assert type(result) is ClusterUnavailableError, result
    attempts = len(first.arrivals) + len(second.arrivals)
    assert 2 < attempts < BUSY_ATTEMPTS_MAX, attempts


def test_learned_addresses_are_bounded() -> None:
    unused = [f"127.0.0.1:{port}" for port in free_ports(2 * MAX_LEARNED_ADDRESSES)]
    hints = iter(unused * 10)
    node = FakeNode(
        lambda m: ClientReply(
            m.request_id,  # type: ignore[union-attr]
            ReplyStatus.NOT_LEADER,
            leader_hint=next(hints),
        )
    )

    async def scenario(node: FakeNode) -> tuple[AsyncClient, Any]:
        return await call([node.address], timeout=4.0)

    client, result = run(scenario, node)
    assert type(result) is ClusterUnavailableError, result
    assert len(node.arrivals) > MAX_LEARNED_ADDRESSES, "too few hints to fill the list"
    assert len(client.addresses) == 1 + MAX_LEARNED_ADDRESSES


# -- backing off --------------------------------------------------------------------------------


def test_backoff_ceilings_double_up_to_the_cap_and_delays_are_drawn_below_them() -> None:
    rng = random.Random(11)
    for failures in range(12):
        ceiling_s = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2**failures)
        delays = [backoff_delay_s(failures, rng) for _ in range(200)]
        assert all(BACKOFF_MIN_S <= delay <= ceiling_s for delay in delays)
        if failures >= 3:
            assert max(delays) - min(delays) > ceiling_s / 4  # spread out, not a ladder


def test_a_busy_leader_is_retried_with_backoff_and_nothing_applied_is_unavailable() -> None:
    node = FakeNode(sessions_then(always(ReplyStatus.RETRY, message=BUSY)))

    async def scenario(node: FakeNode) -> tuple[AsyncClient, Any]:
        return await call([node.address], timeout=2.0)

    _, result = run(scenario, node)
    assert type(result) is ClusterUnavailableError, result
    assert BUSY in str(result)
    attempts = node.requests(CommandRequest)
    assert 2 < len(attempts) < BUSY_ATTEMPTS_MAX, len(attempts)
    gaps = [b.at_s - a.at_s for a, b in itertools.pairwise(attempts)]
    assert min(gaps) >= BACKOFF_MIN_S * 0.9, gaps


def test_two_clients_turned_away_together_come_back_at_different_times() -> None:
    node = FakeNode(sessions_then(always(ReplyStatus.RETRY, message=BUSY)))

    async def scenario(node: FakeNode) -> None:
        await asyncio.gather(call([node.address], timeout=1.5), call([node.address], timeout=1.5))

    run(scenario, node)
    gaps: dict[int, list[float]] = {}
    last: dict[int, float] = {}
    for arrival in node.requests(CommandRequest):
        if arrival.connection in last:
            gaps.setdefault(arrival.connection, []).append(arrival.at_s - last[arrival.connection])
        last[arrival.connection] = arrival.at_s
    assert len(gaps) == 2, gaps
    first, second = gaps.values()
    assert min(len(first), len(second)) >= 5, gaps
    # Without jitter both would wait the same ladder of delays, give or take scheduling.
    assert max(abs(a - b) for a, b in zip(first, second, strict=False)) > 0.02, gaps


def test_a_node_that_never_knows_the_leader_is_retried_with_backoff() -> None:
    node = FakeNode(always(ReplyStatus.NOT_LEADER))

    async def scenario(node: FakeNode) -> tuple[AsyncClient, Any]:
        return await call([node.address], timeout=2.0)

    _, result = run(scenario, node)
    assert type(result) is ClusterUnavailableError, result
    assert 2 < len(node.arrivals) < BUSY_ATTEMPTS_MAX, len(node.arrivals)


# -- what a failure means ------------------------------------------------------------------------


def test_a_connection_lost_after_the_command_was_sent_leaves_the_outcome_unknown() -> None:
    node = FakeNode(sessions_then(lambda m: CLOSE))

    async def scenario(node: FakeNode) -> tuple[AsyncClient, Any]:
        return await call([node.address], timeout=1.0)

    _, result = run(scenario, node)
    assert isinstance(result, OutcomeUnknownError), result
    assert 0 < len(node.requests(CommandRequest)) < BUSY_ATTEMPTS_MAX


def test_a_leadership_change_with_the_outcome_unknown_stays_unknown() -> None:
    changed = "leadership changed; outcome unknown, retry"
    node = FakeNode(sessions_then(always(ReplyStatus.RETRY, message=changed)))

    async def scenario(node: FakeNode) -> tuple[AsyncClient, Any]:
        return await call([node.address], timeout=1.0)

    _, result = run(scenario, node)
    assert isinstance(result, OutcomeUnknownError), result


def test_a_session_request_that_went_unanswered_does_not_make_the_command_unknown() -> None:
    node = FakeNode(lambda m: None)  # accepts, never answers

    async def scenario(node: FakeNode) -> tuple[AsyncClient, Any]:
        return await call([node.address], timeout=1.0, attempt_timeout=0.3)

    _, result = run(scenario, node)
    assert type(result) is ClusterUnavailableError, result  # the command was never sent
    assert node.requests(OpenSessionRequest) and not node.requests(CommandRequest)


def test_an_unknown_session_is_replaced_when_no_attempt_can_have_applied() -> None:
    sessions = iter(range(7, 100))
    answers = iter(
        [ClientReply(0, ReplyStatus.NOT_LEADER), ClientReply(0, ReplyStatus.SESSION_UNKNOWN)]
    )

    def answer(message: WireMessage) -> ClientReply:
        if isinstance(message, OpenSessionRequest):
            return ClientReply(message.request_id, ReplyStatus.OK, session_id=next(sessions))
        assert isinstance(message, CommandRequest)
        if message.session_id == 7:
            return msgspec.structs.replace(next(answers), request_id=message.request_id)
        return ok("done")(message)

    node = FakeNode(answer)

    async def scenario(node: FakeNode) -> tuple[AsyncClient, Any]:
        return await call([node.address], timeout=5.0)

    client, result = run(scenario, node)
    assert result == "done"
    assert client.session_id == 8


# -- refusals ----------------------------------------------------------------------------------


def test_a_refused_handshake_fails_at_once_with_the_nodes_reason() -> None:
    nodes = (
        FakeNode(always(ReplyStatus.OK), refusal=REFUSAL),
        FakeNode(always(ReplyStatus.OK), refusal=REFUSAL),
    )

    async def scenario(*nodes: FakeNode) -> tuple[float, Any]:
        started = time.monotonic()
        _, result = await call([node.address for node in nodes], timeout=10.0)
        return time.monotonic() - started, result

    took_s, result = run(scenario, *nodes)
    assert isinstance(result, HandshakeRefusedError), result
    assert isinstance(result, ClusterUnavailableError)  # nothing happened
    assert REFUSAL in str(result) and nodes[0].address in str(result)
    assert took_s < FAST_S
    assert sum(node.connections for node in nodes) == 2  # each asked once


def test_a_refusal_while_other_members_are_unreachable_is_retried_and_reported() -> None:
    (unreachable,) = free_ports(1)
    node = FakeNode(always(ReplyStatus.OK), refusal=REFUSAL)

    async def scenario(node: FakeNode) -> tuple[AsyncClient, Any]:
        return await call([node.address, f"127.0.0.1:{unreachable}"], timeout=1.0)

    _, result = run(scenario, node)
    assert type(result) is ClusterUnavailableError, result
    assert REFUSAL in str(result)
    assert 1 < node.connections < BUSY_ATTEMPTS_MAX


# -- size --------------------------------------------------------------------------------------


def test_a_command_over_the_size_limit_is_refused_before_it_is_sent() -> None:
    node = FakeNode(sessions_then(ok("done")))

    async def scenario(node: FakeNode) -> tuple[AsyncClient, Any]:
        return await call([node.address], b"x" * MAX_COMMAND_BYTES_DEFAULT, timeout=10.0)

    _, result = run(scenario, node)
    assert isinstance(result, RequestRejectedError), result
    assert "max_command_bytes" in str(result)
    assert not node.arrivals


def test_a_rejected_command_fails_on_the_first_answer() -> None:
    node = FakeNode(sessions_then(always(ReplyStatus.REJECTED, message="too large")))

    async def scenario(node: FakeNode) -> tuple[AsyncClient, Any]:
        return await call([node.address], timeout=10.0)

    _, result = run(scenario, node)
    assert isinstance(result, RequestRejectedError) and "too large" in str(result), result
    assert len(node.requests(CommandRequest)) == 1


def test_the_client_knows_the_nodes_default_command_limit() -> None:
    assert NodeConfig.max_command_bytes == MAX_COMMAND_BYTES_DEFAULT


def test_a_command_limit_beyond_one_frame_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="max_command_bytes"):
        AsyncClient(["127.0.0.1:1"], max_command_bytes=MAX_FRAME_BYTES_DEFAULT)
