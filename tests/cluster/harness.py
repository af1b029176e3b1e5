"""A cluster of real node processes on 127.0.0.1, observed from outside.

Theory of operation
-------------------
`LiveCluster` is the `phalanx.server.local.LocalCluster` that `phalanx cluster`, the
demo, chaos and the benchmarks use (each node started with the argv `node_command`
gives, its output in `node-N.log` beside its data directory), with synchronous waits
that fail as tests should. Tests look at the cluster only as an operator could: the
status every node answers (role, term, indices, digests), the client API, the files on
disk and the node's log.

Every wait polls with a bounded timeout and, when the bound is reached, fails with the
statuses it last saw and the tail of every node's log. The bounds are generous because
this runs on small, busy machines; no test asserts how fast anything happens.

Every status poll also records which node claimed to lead in which term, so a test can
check election safety (at most one leader per term) over everything it observed.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from phalanx.client import AsyncClient, Client, ClientError
from phalanx.server.local import KV_SERVICE, LocalCluster, NodeStopTimeoutError
from phalanx.transport.addresses import free_ports
from phalanx.transport.wire import FRAME_HEADER, WireMessage, decode_message, encode_frame

DEFAULT_CLUSTER_ID = "phalanx"
HOST = "127.0.0.1"

#: Bounds on waiting, not expectations: elections take well under a second here.
LEADER_TIMEOUT_S = 20.0
CONVERGE_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 15.0
LOG_LINE_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.1
STATUS_ATTEMPT_TIMEOUT_S = 0.5
#: Deadline of one client call; covers a leader failover.
CALL_TIMEOUT_S = 20.0
LOG_TAIL_LINES = 30

Status = dict[str, Any]


def free_consecutive_ports(count: int) -> int:
    """The first of `count` consecutive free ports (for `phalanx cluster --base-port`)."""
    for _ in range(100):
        base = free_ports(1)[0]
        if base + count > 65536:
            continue
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sockets.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                sockets[-1].bind((HOST, port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise AssertionError(f"found no {count} consecutive free ports")


async def gather_statuses(addresses: Sequence[str], cluster_id: str) -> list[Status | None]:
    async def one(address: str) -> Status | None:
        client = AsyncClient(
            [address], cluster_id=cluster_id, attempt_timeout=STATUS_ATTEMPT_TIMEOUT_S
        )
        try:
            # As the keys of `phalanx status --json`: what the tests read.
            found: Status = msgspec.to_builtins(await client.status())
            return found
        except (ClientError, OSError, TimeoutError):
            return None
        finally:
            await client.close()

    return list(await asyncio.gather(*(one(address) for address in addresses)))


class LiveCluster(LocalCluster):
    """`size` node processes of one cluster; node id `i + 1` is at position `i`."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        service: str = KV_SERVICE,
        cluster_id: str = DEFAULT_CLUSTER_ID,
    ) -> None:
        super().__init__(root, size, services=service, settings={"cluster_id": cluster_id})
        #: term -> ids of the nodes that reported being leader in that term.
        self.leaders_seen: dict[int, set[int]] = {}
        self.last_statuses: list[Status | None] = [None] * size

    def port(self, index: int) -> int:
        return self.configs[index].address[1]

    # -- processes ---------------------------------------------------------------------------

    def running_indices(self) -> list[int]:
        return self.started_indices()

    def terminate(self, index: int, signum: int = signal.SIGTERM) -> int:
        """Asks for a graceful stop and returns the exit code (fails if it hangs)."""
        assert self.processes[index] is not None, f"node {index + 1} is not running"
        try:
            code = self.stop(index, signum, EXIT_TIMEOUT_S)
        except NodeStopTimeoutError as error:
            raise AssertionError(f"{error}\n{self.describe()}") from None
        assert code is not None
        return code

    def close(self) -> None:
        """Kills whatever is still running; called by the fixture at teardown."""
        self.kill_all()

    # -- observing ---------------------------------------------------------------------------

    def statuses(self, among: Sequence[int] | None = None) -> list[Status | None]:
        """One status poll of the nodes at `among` (default: all), None if unreachable."""
        indices = list(range(self.size)) if among is None else list(among)
        found = asyncio.run(gather_statuses([self.addresses[i] for i in indices], self.cluster_id))
        for index, status in zip(indices, found, strict=True):
            self.last_statuses[index] = status
            if status is not None and status["role"] == "leader":
                self.leaders_seen.setdefault(int(status["term"]), set()).add(int(status["id"]))
        return found

    def status(self, index: int) -> Status | None:
        return self.statuses([index])[0]

    def describe(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last statuses and every node's log tail, for failure messages."""
        statuses = "\n".join(
            f"node {index + 1} last status: {status}"
            for index, status in enumerate(self.last_statuses)
        )
        return f"{statuses}\n{super().describe(lines)}"

    def assert_election_safety(self) -> None:
        """Raft's Election Safety over every status observed: one leader per term."""
        doubles = {term: ids for term, ids in self.leaders_seen.items() if len(ids) > 1}
        assert not doubles, f"two leaders in one term: {doubles}"

    # -- waiting -----------------------------------------------------------------------------

    def wait_until(
        self,
        condition: Callable[[], Any],
        what: str,
        timeout: float,
        must_run: Sequence[int] = (),
    ) -> Any:
        """Polls `condition` until it returns something truthy, which is returned."""
        deadline = time.monotonic() + timeout
        while True:
            for index in must_run:
                process = self.processes[index]
                assert process is not None and process.poll() is None, (
                    f"node {index + 1} exited while waiting for {what}\n{self.describe()}"
                )
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}\n{self.describe()}"
                )
            time.sleep(POLL_INTERVAL_S)

    def wait_for_leader(
        self, among: Sequence[int] | None = None, timeout: float = LEADER_TIMEOUT_S
    ) -> int:
        """Waits until every node of `among` (default: the running ones) answers, one of
        them leads, and all agree on it and on the term; returns the leader's position."""
        indices = self.running_indices() if among is None else list(among)

        def agreed() -> int | None:
            found = self.statuses(indices)
            if any(status is None for status in found):
                return None
            statuses = [status for status in found if status is not None]
            leaders = [s for s in statuses if s["role"] == "leader"]
            if len(leaders) != 1 or len({s["term"] for s in statuses}) != 1:
                return None
            leader_id = int(leaders[0]["id"])
            if any(s["leader"] != leader_id for s in statuses):
                return None
            return leader_id  # ids start at 1, so this is truthy

        leader_id: int = self.wait_until(agreed, "one agreed leader", timeout, indices)
        return leader_id - 1

    def wait_converged(
        self, among: Sequence[int] | None = None, timeout: float = CONVERGE_TIMEOUT_S
    ) -> list[Status]:
        """Waits until every node of `among` (default: the running ones) holds, commits and
        has applied the same last index; returns their statuses (digests not compared)."""
        indices = self.running_indices() if among is None else list(among)

        def converged() -> list[Status] | None:
            found = self.statuses(indices)
            if any(status is None for status in found):
                return None
            statuses = [status for status in found if status is not None]
            marks = {(s["last_index"], s["commit_index"], s["applied_index"]) for s in statuses}
            if len(marks) != 1:
                return None
            last, commit, applied = marks.pop()
            return statuses if last == commit == applied else None

        statuses: list[Status] = self.wait_until(
            converged, "all nodes to apply the same last index", timeout, indices
        )
        return statuses

    def assert_same_digests(self, statuses: Sequence[Status]) -> None:
        log_digests = {s["id"]: s["log_digest"] for s in statuses}
        state_digests = {s["id"]: s["state_digest"] for s in statuses}
        assert len(set(log_digests.values())) == 1, f"log digests differ: {log_digests}"
        assert len(set(state_digests.values())) == 1, f"state digests differ: {state_digests}"

    def wait_for_log_line(self, index: int, text: str, timeout: float = LOG_LINE_TIMEOUT_S) -> str:
        """Waits for a line containing `text` in the node's log; returns that line."""

        def found() -> str | None:
            for line in self.log_text(index).splitlines():
                if text in line:
                    return line
            return None

        line: str = self.wait_until(found, f"{text!r} in node {index + 1}'s log", timeout)
        return line

    # -- clients -------------------------------------------------------------------------------

    def start_expecting_refusal(self, index: int, exit_code: int) -> str:
        """Starts node `index`, which must exit at once with `exit_code`; returns what it
        logged on the way (the log file's new text), and leaves it stopped."""
        earlier = len(self.log_text(index))
        self.start(index)
        self.wait_until(lambda: not self.running(index), f"node {index + 1} refuses to start", 30.0)
        process = self.processes[index]
        assert process is not None and process.returncode == exit_code, process
        self.processes[index] = None
        return self.log_text(index)[earlier:]

    def client(self, **options: Any) -> Client:
        options.setdefault("timeout", CALL_TIMEOUT_S)
        options.setdefault("cluster_id", self.cluster_id)
        return Client(self.addresses, **options)

    def put_and_check(self, client: Client, key: str, value: str) -> None:
        assert client.call({"op": "put", "key": key, "value": value}) == {"ok": True}
        assert client.call({"op": "get", "key": key}) == {"value": value}


# -- raw wire access -------------------------------------------------------------------------


class RawConnection:
    """A plain blocking socket speaking (or deliberately misspeaking) the wire format."""

    def __init__(self, address: str, timeout: float = 5.0) -> None:
        host, _, port = address.rpartition(":")
        assert host == HOST, "tests only ever talk to 127.0.0.1"
        self.socket = socket.create_connection((host, int(port)), timeout=timeout)
        self._buffer = b""

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.socket.close()

    def send_bytes(self, data: bytes) -> None:
        self.socket.sendall(data)

    def send(self, message: WireMessage) -> None:
        self.socket.sendall(encode_frame(message))

    def _read_exactly(self, count: int) -> bytes | None:
        while len(self._buffer) < count:
            chunk = self.socket.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def receive(self) -> WireMessage:
        header = self._read_exactly(FRAME_HEADER.size)
        assert header is not None, "the node closed the connection"
        length, _ = FRAME_HEADER.unpack(header)
        payload = self._read_exactly(length)
        assert payload is not None, "the node closed the connection mid-frame"
        return decode_message(payload)

    def closed_by_peer(self) -> bool:
        """True once the node has closed its side (EOF or reset), reading whatever it
        still sent before; raises TimeoutError if the connection stays open."""
        try:
            while self.socket.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True
