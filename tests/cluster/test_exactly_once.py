"""Client retries apply once: through a leader killed mid-stream, and deterministically
at the protocol level by sending one request twice (issue 3, "Service and client";
Raft thesis §6.3)."""

from __future__ import annotations

import threading
from collections import Counter

import msgspec
import pytest

from phalanx.client import ClientError, OutcomeUnknownError
from phalanx.transport.wire import (
    ClientReply,
    CommandRequest,
    Hello,
    OpenSessionRequest,
    ReplyStatus,
    Welcome,
    encode_frame,
)

from .harness import CALL_TIMEOUT_S, LiveCluster, RawConnection

pytestmark = pytest.mark.slow

WORKERS = 4
TOKENS_PER_WORKER = 150
#: Acknowledged appends before the leader is killed, so that calls are in flight.
ACKS_BEFORE_KILL = 80
KEY = "tokens"


def test_appends_through_a_leader_kill_apply_exactly_once(cluster: LiveCluster) -> None:
    leader = cluster.wait_for_leader()
    acknowledged: list[list[int]] = [[] for _ in range(WORKERS)]
    unknown: list[list[int]] = [[] for _ in range(WORKERS)]
    errors: list[BaseException] = []
    enough = threading.Event()
    lock = threading.Lock()
    total = [0]

    with cluster.client(timeout=CALL_TIMEOUT_S) as client:

        def work(worker: int) -> None:
            try:
                for n in range(TOKENS_PER_WORKER):
                    token = f"w{worker}-{n};"
                    try:
                        reply = client.call({"op": "append", "key": KEY, "value": token})
                    except ClientError:
                        unknown[worker].append(n)
                        continue
                    assert reply["ok"] is True and reply["value"].endswith(token), reply
                    acknowledged[worker].append(n)
                    with lock:
                        total[0] += 1
                        if total[0] >= ACKS_BEFORE_KILL:
                            enough.set()
            except BaseException as error:  # reported by the main thread
                errors.append(error)
                enough.set()

        threads = [threading.Thread(target=work, args=(w,)) for w in range(WORKERS)]
        for thread in threads:
            thread.start()
        try:
            assert enough.wait(CALL_TIMEOUT_S), "no progress before the kill"
            cluster.kill(leader)
        finally:
            for thread in threads:
                thread.join(CALL_TIMEOUT_S * 3)
        assert not any(thread.is_alive() for thread in threads), "a worker hung"
        assert not errors, errors
        final = client.call({"op": "get", "key": KEY})["value"]

    applied = final.split(";")[:-1]
    tokens = Counter(applied)
    position = {token: i for i, token in enumerate(applied)}
    duplicated = {token: count for token, count in tokens.items() if count > 1}
    assert not duplicated, f"applied more than once: {duplicated}"
    for worker in range(WORKERS):
        positions = []
        for n in acknowledged[worker]:
            token = f"w{worker}-{n}"
            assert token in tokens, f"acknowledged {token} is missing"
            positions.append(position[token])
        # One worker's calls are sequential, so its acknowledged appends are in order.
        assert positions == sorted(positions)
        attempted = {f"w{worker}-{n}" for n in acknowledged[worker] + unknown[worker]}
        assert {t for t in tokens if t.startswith(f"w{worker}-")} <= attempted
    assert sum(map(len, acknowledged)) > ACKS_BEFORE_KILL, "no progress after the kill"

    cluster.start(leader)
    statuses = cluster.wait_converged()
    cluster.assert_same_digests(statuses)
    # The session table is replicated state: every replica counts the same duplicates.
    assert len({status["duplicates_suppressed"] for status in statuses}) == 1
    assert all(isinstance(status["duplicates_suppressed"], int) for status in statuses)
    assert len({status["commands_applied"] for status in statuses}) == 1
    cluster.assert_election_safety()


def open_raw_session(address: str) -> tuple[RawConnection, int]:
    raw = RawConnection(address)
    raw.send(Hello("phalanx", "client"))
    assert isinstance(raw.receive(), Welcome)
    raw.send(OpenSessionRequest(1))
    opened = raw.receive()
    assert isinstance(opened, ClientReply) and opened.status is ReplyStatus.OK, opened
    assert opened.session_id > 0
    return raw, opened.session_id


def call_raw(raw: RawConnection, request: CommandRequest) -> object:
    raw.send(request)
    reply = raw.receive()
    assert isinstance(reply, ClientReply) and reply.status is ReplyStatus.OK, reply
    return msgspec.msgpack.decode(reply.payload)


def test_the_same_command_request_sent_twice_applies_once(cluster: LiveCluster) -> None:
    leader = cluster.wait_for_leader()
    before = {s["id"]: s for s in cluster.wait_converged()}
    raw, session = open_raw_session(cluster.addresses[leader])
    with raw:
        payload = msgspec.msgpack.encode({"op": "append", "key": "once", "value": "x"})
        frame = encode_frame(CommandRequest(2, session, 1, 1, payload))
        raw.send_bytes(frame + frame)  # both in one batch, the second a pure duplicate
        first, second = raw.receive(), raw.receive()
        raw.send_bytes(frame)  # and again after the first was answered
        third = raw.receive()
        for reply in (first, second, third):
            assert isinstance(reply, ClientReply)
            assert (reply.request_id, reply.status) == (2, ReplyStatus.OK), reply
        assert first == second == third
        assert isinstance(first, ClientReply)
        assert msgspec.msgpack.decode(first.payload) == {"ok": True, "value": "x"}

        get = msgspec.msgpack.encode({"op": "get", "key": "once"})
        assert call_raw(raw, CommandRequest(3, session, 2, 2, get)) == {"value": "x"}

    after = cluster.wait_converged()
    cluster.assert_same_digests(after)
    for status in after:
        old = before[status["id"]]
        assert status["commands_applied"] - old["commands_applied"] == 2  # append, get
    # The duplicates never applied: each was joined to the pending entry, answered from
    # the leader's reply cache, or (appended again) answered from every replica's cache.
    answered_again = sum(
        status[counter] - before[status["id"]][counter]
        for status in after
        for counter in ("retries_joined", "retries_answered_from_cache")
    ) + (after[leader]["duplicates_suppressed"] - before[leader + 1]["duplicates_suppressed"])
    assert answered_again == 2


def test_a_retry_sent_to_the_next_leader_gets_the_first_reply(cluster: LiveCluster) -> None:
    leader = cluster.wait_for_leader()
    raw, session = open_raw_session(cluster.addresses[leader])
    payload = msgspec.msgpack.encode({"op": "append", "key": "k", "value": "once;"})
    request = CommandRequest(2, session, 1, 1, payload)
    with raw:
        first = call_raw(raw, request)
    assert first == {"ok": True, "value": "once;"}
    cluster.wait_converged()  # every replica has the reply in its session table

    cluster.kill(leader)
    new_leader = cluster.wait_for_leader()
    raw, other_session = open_raw_session(cluster.addresses[new_leader])
    with raw:
        assert call_raw(raw, request) == first, "the retry must get the cached reply"
        # Something else appended in between does not change the retry's answer.
        other = msgspec.msgpack.encode({"op": "append", "key": "k", "value": "other;"})
        assert call_raw(raw, CommandRequest(3, other_session, 1, 1, other)) == {
            "ok": True,
            "value": "once;other;",
        }
        assert call_raw(raw, request) == first
        get = msgspec.msgpack.encode({"op": "get", "key": "k"})
        assert call_raw(raw, CommandRequest(4, session, 2, 2, get)) == {"value": "once;other;"}

        raw.send(CommandRequest(5, 10**9, 1, 1, get))
        unknown = raw.receive()
        assert isinstance(unknown, ClientReply)
        assert unknown.status is ReplyStatus.SESSION_UNKNOWN, unknown

    cluster.start(leader)
    statuses = cluster.wait_converged()
    cluster.assert_same_digests(statuses)
    # Both retries were answered without applying again: by the new leader from its
    # reply cache (no log entry), or through the log from every replica's.
    new = statuses[new_leader]
    assert new["retries_answered_from_cache"] + new["duplicates_suppressed"] == 2


def test_without_a_quorum_the_outcome_is_unknown_and_applies_at_most_once_later(
    cluster: LiveCluster,
) -> None:
    leader = cluster.wait_for_leader()
    with cluster.client() as client:
        client.call({"op": "put", "key": "k", "value": "0;"})
        followers = [index for index in range(cluster.size) if index != leader]
        for index in followers:
            cluster.kill(index)
        # Sent to a leader that can no longer commit: it may or may not apply later.
        with pytest.raises(OutcomeUnknownError):
            client.call({"op": "append", "key": "k", "value": "1;"}, timeout=2.0)
        for index in followers:
            cluster.start(index)
        reply = client.call({"op": "append", "key": "k", "value": "2;"})
        assert reply["value"] in ("0;2;", "0;1;2;"), reply
        assert client.call({"op": "get", "key": "k"}) == {"value": reply["value"]}
    cluster.assert_same_digests(cluster.wait_converged())
