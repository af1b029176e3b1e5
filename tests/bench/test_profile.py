"""Attributing py-spy's raw stacks to layers (`phalanx bench profile`)."""

from __future__ import annotations

from phalanx.bench.profile import layer_of, summarise

LOOP = "run (asyncio/runners.py:190);BaseEventLoop._run_once (asyncio/base_events.py:1922)"
SEND = "_SelectorSocketTransport.write (asyncio/selector_events.py:1057)"
WORKER = "Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:81)"
RAW = f"""\
{LOOP};EpollSelector.select (selectors.py:468) 60
{LOOP};Node._apply (node.py:288);ServiceContainer.apply (phalanx/service/container.py:114) 25
{LOOP};Connection._flush (phalanx/transport/tcp.py:137);{SEND} 10
{LOOP};Node._handle_ready (node.py:240);RawNode.ready (phalanx/core/rawnode.py:90) 5
{LOOP};Node._handle_ready (node.py:240);WalStorage._sync (phalanx/storage/wal.py:914) 20
{WORKER};_worker (concurrent/futures/thread.py:81) 70
"""


def test_loop_samples_are_shared_out_by_layer() -> None:
    summary = summarise(RAW)
    assert summary["loop_samples"] == 120
    assert summary["layers"] == {
        "idle (epoll wait)": 50.0,
        "container + service apply": 20.8,
        "fdatasync (waiting for the disk)": 16.7,
        "socket syscalls (asyncio transports)": 8.3,
        "raft core": 4.2,
    }
    assert summary["other_thread_samples"] == 70
    assert next(iter(summary["frames"])) == "EpollSelector.select (selectors.py:468)"


def test_unknown_frames_and_junk_lines() -> None:
    assert layer_of("something (elsewhere.py:1)") == "other"
    assert summarise("no count here\n\n")["loop_samples"] == 0
