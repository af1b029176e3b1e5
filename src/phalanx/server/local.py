"""Local clusters: `phalanx node` processes on this machine, for `phalanx demo`,
`phalanx chaos`, `phalanx bench`, `phalanx cluster` and the tests.

Theory of operation
-------------------
A `LocalCluster` owns the node processes of one cluster and their files under one
root directory: node N's data in `node-N/`, its settings in `node-N.toml` and its
output in `node-N.log`; node id `i + 1` is at index `i`. The configurations are built
(and validated: a bad setting raises `ConfigError`) before anything starts, on free
ports of 127.0.0.1 unless told otherwise, and stay in `configs`, which a caller may
change between starts (another setting, another member list): every start writes the
node's configuration afresh through `node_command`, so a node runs exactly its
`NodeConfig`. `addresses` and `members` are the ones clients use, fixed at creation.

Processes are controlled with signals, never over the network: `kill` (SIGKILL, no
chance to sync), `stop` (SIGTERM by default, SIGKILL after a bound), `pause` and
`resume` (SIGSTOP and SIGCONT), `restart`, `stop_all`. Observing the cluster over the
network is left to the module's functions (`cluster_statuses`, `wait_for_leader`),
which are coroutines because the demo, chaos and the benchmarks watch a cluster from
their event loop; a synchronous caller runs them with `asyncio.run`.

Nothing outlives its caller:

- every node runs in a session of its own, so a Ctrl-C at the terminal reaches only
  the caller, which stops the nodes in order (SIGTERM, then SIGKILL);
- `stop_all` runs at the end of a `with` block, and at interpreter exit for every
  cluster still running something (an uncaught exception in the caller);
- on Linux a node gets SIGKILL when its caller dies, even by SIGKILL
  (`prctl(PR_SET_PDEATHSIG)`). The kernel sends that signal when the *thread* that
  started the node ends, not the process, so every node is started by one daemon
  thread of this module (`_Spawner`), which ends only with the process: a caller may
  start nodes from a thread of its own (a test's nemesis does) and let it end.

A node that exits while its caller waits for it raises `NodeExitedError`, which names
its exit code and quotes the end of its log: that is where a node says why it would
not start (a refused setting, a port in use, a damaged data directory).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from phalanx.client.admin import gather_statuses
from phalanx.core.errors import PhalanxError
from phalanx.core.raft import Role
from phalanx.server.config import NodeConfig, build_config, config_to_toml
from phalanx.server.determinism import with_fixed_hash_seed
from phalanx.transport.addresses import format_address, free_ports
from phalanx.transport.wire import NodeStatus

HOST = "127.0.0.1"
KV_SERVICE = "phalanx.examples.kv:KeyValue"
#: `phalanx cluster` allows 7; tests and benchmarks stay far below this.
NODES_MAX = 16
#: Bounds on waiting, not expectations: a graceful stop and an election take well
#: under a second here, but machines running these are small and busy.
STOP_TIMEOUT_S = 10.0
LEADER_TIMEOUT_S = 30.0
STATUS_ATTEMPT_TIMEOUT_S = 0.5
POLL_INTERVAL_S = 0.05
LOG_TAIL_LINES = 20


class LocalClusterError(PhalanxError):
    """A local cluster did not do what its caller waited for."""


class NodeExitedError(LocalClusterError):
    """A node exited while it was expected to run; the message quotes its log."""

    def __init__(self, index: int, code: int, waiting_for: str, log_tail: str) -> None:
        super().__init__(
            f"node {index + 1} exited {describe_exit(code)} while waiting for {waiting_for}; "
            f"the end of its log:\n{log_tail}"
        )
        self.index = index
        self.code = code


class NodeStopTimeoutError(LocalClusterError):
    """A node did not exit within the bound after being asked to; it was killed."""


def node_command(config: NodeConfig, config_file: Path | None = None) -> list[str]:
    """The argv of a node process running exactly `config`: every setting goes through
    a TOML file (by default `node-<id>.toml` beside the node's data directory)."""
    if config_file is None:
        config_file = config.data_dir.parent / f"node-{config.node_id}.toml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(config_to_toml(config))
    return [sys.executable, "-m", "phalanx", "node", "--config", str(config_file)]


def describe_exit(code: int) -> str:
    if code < 0:
        return f"with code {code} (killed by {signal.Signals(-code).name})"
    return f"with code {code}"


class LocalCluster:
    """`nodes` node processes of one cluster; node id `i + 1` is at index `i`.

    `services` is one service for every node or one per node; `settings` are node
    settings every node gets (`cluster_id`, `tick_ms`, ...). `ports` (default: free
    ones) and `host` place the nodes; with `log_files=False` the nodes write to this
    process's own output instead of `node-N.log`.
    """

    def __init__(
        self,
        root: Path,
        nodes: int = 3,
        *,
        services: str | Sequence[str] = KV_SERVICE,
        settings: Mapping[str, Any] | None = None,
        host: str = HOST,
        ports: Sequence[int] | None = None,
        log_files: bool = True,
    ) -> None:
        assert 1 <= nodes <= NODES_MAX, f"a local cluster has 1 to {NODES_MAX} nodes"
        chosen_ports = free_ports(nodes, host) if ports is None else list(ports)
        service_of = [services] * nodes if isinstance(services, str) else list(services)
        assert len(chosen_ports) == nodes and len(service_of) == nodes
        self.root = root
        self.addresses = [format_address(host, port) for port in chosen_ports]
        self.members = ",".join(f"{i + 1}={a}" for i, a in enumerate(self.addresses))
        self.configs: list[NodeConfig] = [
            build_config(
                {
                    "id": i + 1,
                    "members": self.members,
                    "data": str(root / f"node-{i + 1}"),
                    "service": service_of[i],
                    **(settings or {}),
                }
            )
            for i in range(nodes)
        ]
        self.cluster_id = self.configs[0].cluster_id
        self.log_files = log_files
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * nodes
        #: The argv each node was last started with (to tell an operator how to restart it).
        self.commands: list[list[str] | None] = [None] * nodes
        self.paused: set[int] = set()
        _STARTED.add(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_all()

    @property
    def size(self) -> int:
        return len(self.configs)

    def log_path(self, index: int) -> Path:
        return self.root / f"node-{index + 1}.log"

    def data_dir(self, index: int) -> Path:
        return self.configs[index].data_dir

    # -- processes ---------------------------------------------------------------------

    def start(self, index: int, argv: Sequence[str] | None = None) -> None:
        """Starts node `index` with `node_command(configs[index])`, or with `argv` (a
        command line of the caller's own, a wrapper such as `prlimit`)."""
        assert not self.running(index), f"node {index + 1} is already running"
        command = node_command(self.configs[index]) if argv is None else list(argv)
        with contextlib.ExitStack() as files:
            log = self.log_path(index)
            output = files.enter_context(log.open("ab")) if self.log_files else None
            self.processes[index] = _SPAWNER.popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                env=with_fixed_hash_seed(),
                start_new_session=True,
            )
        self.commands[index] = command
        self.paused.discard(index)

    def start_all(self) -> None:
        for index in range(self.size):
            if not self.running(index):
                self.start(index)

    def running(self, index: int) -> bool:
        process = self.processes[index]
        return process is not None and process.poll() is None

    def started_indices(self) -> list[int]:
        """The nodes started and not stopped since (some may have exited on their own)."""
        return [index for index, process in enumerate(self.processes) if process is not None]

    def down(self) -> list[int]:
        return [index for index in range(self.size) if not self.running(index)]

    def pid(self, index: int) -> int:
        process = self.processes[index]
        assert process is not None, f"node {index + 1} is not running"
        return process.pid

    def kill(self, index: int) -> None:
        """SIGKILL: the node gets no chance to sync or close anything."""
        process = self.processes[index]
        if process is None:
            return
        process.kill()
        process.wait()
        self._forget(index)

    def stop(
        self, index: int, signum: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S
    ) -> int | None:
        """Sends `signum` (SIGTERM: stop gracefully) and returns the exit code, or None if
        the node was not running. A node still running `timeout_s` later is killed and
        `NodeStopTimeoutError` raised."""
        process = self.processes[index]
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signum)
            if index in self.paused:
                process.send_signal(signal.SIGCONT)  # a stopped process would hold the signal
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            name = signal.Signals(signum).name
            raise NodeStopTimeoutError(
                f"node {index + 1} still running {timeout_s:g}s after {name}; killed it\n"
                + self.log_tail(index)
            ) from None
        finally:
            self._forget(index)

    def restart(self, index: int, kill: bool = False) -> None:
        """Stops node `index` (gracefully, or with SIGKILL) and starts it again."""
        if kill:
            self.kill(index)
        else:
            self.stop(index)
        self.start(index)

    def pause(self, index: int) -> None:
        """SIGSTOP: the node keeps its sockets but answers nothing until `resume`."""
        if self.running(index):
            os.kill(self.pid(index), signal.SIGSTOP)
            self.paused.add(index)

    def resume(self, index: int) -> None:
        if self.running(index):
            os.kill(self.pid(index), signal.SIGCONT)
        self.paused.discard(index)

    def reap_exited(self) -> list[tuple[int, int]]:
        """(index, exit code) of every node that exited although nobody here stopped it
        (stopping and killing forget a process at once), forgetting them."""
        exited = []
        for index, process in enumerate(self.processes):
            if process is not None and process.poll() is not None:
                exited.append((index, process.returncode))
                self._forget(index)
        return exited

    def stop_all(self, timeout_s: float = STOP_TIMEOUT_S) -> list[int]:
        """Stops every node at once: resumes paused ones, SIGTERM, and SIGKILL to any
        still running `timeout_s` later. Returns the indices it had to kill."""
        for index in sorted(self.paused):
            self.resume(index)
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        killed = []
        for index, process in enumerate(self.processes):
            if process is None:
                continue
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                killed.append(index)
            self._forget(index)
        return killed

    def kill_all(self) -> None:
        for index in range(self.size):
            self.kill(index)

    def _forget(self, index: int) -> None:
        self.processes[index] = None
        self.paused.discard(index)

    # -- logs --------------------------------------------------------------------------

    def log_text(self, index: int) -> str:
        path = self.log_path(index)
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, index: int, lines: int = LOG_TAIL_LINES) -> str:
        if not self.log_files:
            return "    (the node writes to this process's output)"
        tail = self.log_text(index).splitlines()[-lines:]
        return "\n".join("    " + line for line in tail) if tail else "    (empty log)"

    def state(self, index: int) -> str:
        process = self.processes[index]
        if process is None:
            return "not running"
        if process.poll() is not None:
            return f"exited {describe_exit(process.returncode)}"
        return "paused" if index in self.paused else "running"

    def describe(self, lines: int = LOG_TAIL_LINES) -> str:
        """Every node's state and the end of its log, for error messages."""
        return "\n".join(
            f"--- node {index + 1} ({self.addresses[index]}, {self.state(index)}), "
            f"{self.log_path(index)}:\n{self.log_tail(index, lines)}"
            for index in range(self.size)
        )

    def check_running(self, indices: Sequence[int], waiting_for: str) -> None:
        """Raises `NodeExitedError` for the first of `indices` that has exited."""
        for index in indices:
            process = self.processes[index]
            if process is not None and process.poll() is not None:
                raise NodeExitedError(index, process.returncode, waiting_for, self.log_tail(index))


# -- observing over the network -------------------------------------------------------------


async def cluster_statuses(
    cluster: LocalCluster,
    among: Sequence[int] | None = None,
    attempt_timeout_s: float = STATUS_ATTEMPT_TIMEOUT_S,
) -> list[NodeStatus | None]:
    """The status of each node of `among` (default: all), None where none came in time."""
    indices = range(cluster.size) if among is None else among
    return await gather_statuses(
        [cluster.addresses[index] for index in indices],
        cluster_id=cluster.cluster_id,
        attempt_timeout=attempt_timeout_s,
    )


def agreed_leader(statuses: Sequence[NodeStatus | None]) -> int | None:
    """The node id every one of `statuses` names as leader, in one term, with exactly
    one of them leading; None while any is missing or they disagree."""
    if not statuses or any(status is None for status in statuses):
        return None
    answered = [status for status in statuses if status is not None]
    leaders = [status for status in answered if status.role is Role.LEADER]
    if len(leaders) != 1 or len({status.term for status in answered}) != 1:
        return None
    leader_id = int(leaders[0].id)
    return leader_id if all(status.leader == leader_id for status in answered) else None


def leader_of(statuses: Sequence[NodeStatus | None]) -> int | None:
    """The index of the node that leads in the highest term among `statuses`, if any
    (a deposed leader may not know yet; the higher term wins)."""
    leaders = [
        (status.term, index)
        for index, status in enumerate(statuses)
        if status is not None and status.role is Role.LEADER
    ]
    return max(leaders)[1] if leaders else None


async def wait_for_leader(
    cluster: LocalCluster,
    among: Sequence[int] | None = None,
    timeout_s: float = LEADER_TIMEOUT_S,
    on_statuses: Callable[[Sequence[int], list[NodeStatus | None]], None] | None = None,
) -> int:
    """Waits until every node of `among` (default: the started ones) answers and they
    agree on one leader; returns its index. Raises `NodeExitedError` at once if one of
    them exits, `LocalClusterError` after `timeout_s`. `on_statuses` sees every poll."""
    indices = cluster.started_indices() if among is None else list(among)
    deadline = time.monotonic() + timeout_s
    statuses: list[NodeStatus | None] = []
    while time.monotonic() < deadline:
        cluster.check_running(indices, "a leader")
        statuses = await cluster_statuses(cluster, indices)
        if on_statuses is not None:
            on_statuses(indices, statuses)
        leader_id = agreed_leader(statuses)
        if leader_id is not None:
            return leader_id - 1
        await asyncio.sleep(POLL_INTERVAL_S)
    raise LocalClusterError(
        f"nodes {[i + 1 for i in indices]} agreed on no leader within {timeout_s:g}s; "
        f"last statuses: {statuses}\n{cluster.describe()}"
    )


# -- cleaning up ------------------------------------------------------------------------------


@contextlib.contextmanager
def temporary_directory(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A new directory under the system's temporary one, removed afterwards unless `keep`."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


#: Every cluster created in this process, for `_stop_leftovers` at exit.
_STARTED: weakref.WeakSet[LocalCluster] = weakref.WeakSet()
_PR_SET_PDEATHSIG = 1


@atexit.register
def _stop_leftovers() -> None:
    for cluster in list(_STARTED):
        if cluster.started_indices():
            cluster.stop_all()


class _Spawner:
    """Starts processes from one daemon thread, each with the parent-death signal
    SIGKILL (on Linux): the thread lives as long as this process (and is started
    again in a forked child, which has no threads but the forking one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._requests: queue.SimpleQueue[
            tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]
        ] = queue.SimpleQueue()

    def popen(self, argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
        preexec = _die_with_parent()
        if preexec is None:
            return subprocess.Popen(argv, **options)

        def start() -> subprocess.Popen[bytes]:
            # Safe with threads: the child only calls prctl(2), through a function
            # looked up before the fork, and getppid(2).
            return subprocess.Popen(argv, preexec_fn=preexec, **options)  # noqa: PLW1509

        started: Future[subprocess.Popen[bytes]] = Future()
        self._ensure_thread()
        self._requests.put((start, started))
        return started.result()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, name="phalanx-local-spawner", daemon=True
                )
                self._thread.start()

    def _serve(self) -> None:
        while True:
            start, started = self._requests.get()
            try:
                started.set_result(start())
            except BaseException as error:  # handed to the caller, who raises it
                started.set_exception(error)


def _die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` asking the kernel to SIGKILL the child when the thread starting
    it ends (Linux only; elsewhere the atexit cleanup is all there is)."""
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    parent = os.getpid()

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return in_child


_SPAWNER = _Spawner()
