"""Running `phalanx` as a newcomer would: real processes on 127.0.0.1 (and ::1), output
captured in files, every process stopped at teardown (`conftest.py`).

Waits poll with generous bounds and fail with the process's output; no test asserts
how fast anything happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.cluster.harness import EXIT_TIMEOUT_S, LEADER_TIMEOUT_S, POLL_INTERVAL_S

from phalanx.client.admin import gather_statuses
from phalanx.core import Role
from phalanx.transport.wire import NodeStatus

#: `python -m phalanx`, the way tests/cluster starts nodes.
PHALANX_MODULE = (sys.executable, "-m", "phalanx")
#: The installed `phalanx` script, which (unlike `python -m`) does not put the working
#: directory on sys.path by itself.
PHALANX_SCRIPT = Path(sys.executable).with_name("phalanx")
#: Bound on a command that should answer at once (status, call, a refused start).
COMMAND_TIMEOUT_S = 60.0

#: The README's Counter (no restore(): snapshots off), plus one that will not stop.
SERVICE_MODULE = '''
import time

from phalanx import Service, error_reply


class Counter(Service):
    def __init__(self):
        self.value = 0

    def apply(self, command):
        if command.get("op") == "add":
            self.value += command["n"]
            return {"ok": True, "value": self.value}
        return error_reply("unknown_op", f"unknown op {command.get('op')!r}")

    def state(self):
        return self.value


class Stubborn(Counter):
    """Hangs when asked to stop: only SIGKILL ends its node."""

    def on_terminate(self, ctx):
        time.sleep(3600)
'''


def write_service_module(directory: Path, name: str = "newcomer_service") -> str:
    """Writes the module into `directory`; returns its module name."""
    (directory / f"{name}.py").write_text(SERVICE_MODULE)
    return name


def run(
    argv: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


class Processes:
    """Long-running `phalanx` processes, each in its own process group with its output
    in a file, so that teardown can reach whatever they started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, argv: Sequence[str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
        log_path = self.root / f"process-{len(self.started) + 1}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append((process, log_path))
        return process

    def output(self, process: subprocess.Popen[bytes]) -> str:
        for started, log_path in self.started:
            if started is process:
                return log_path.read_text(errors="replace")
        raise AssertionError("not a process started here")

    def stop(self, process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> int:
        """Sends `signum` and returns the exit code (fails if the process hangs)."""
        process.send_signal(signum)
        try:
            return process.wait(timeout=EXIT_TIMEOUT_S * 2)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"ignored signal {signum}:\n{self.output(process)}") from None

    def close(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # anything it left behind


def wait_until(
    condition: Callable[[], Any],
    what: str,
    timeout: float = LEADER_TIMEOUT_S,
    describe: Callable[[], str] = lambda: "",
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{describe()}")
        time.sleep(POLL_INTERVAL_S)


def statuses(addresses: Sequence[str], cluster_id: str = "phalanx") -> list[NodeStatus | None]:
    return asyncio.run(gather_statuses(addresses, cluster_id=cluster_id, attempt_timeout=0.5))


def leader_position(addresses: Sequence[str]) -> int | None:
    """The position of the member every answering member agrees leads, if any."""
    found = statuses(addresses)
    leaders = [i for i, s in enumerate(found) if s is not None and s.role is Role.LEADER]
    if len(leaders) != 1 or any(s is None for s in found):
        return None
    return leaders[0]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def children(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)
