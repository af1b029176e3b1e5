"""`phalanx node`, `cluster`, `status`, `snapshot`, `repair`, `call` and `replay-check`.

Exit codes, common to these commands (docs/operating.md shows what each prints):

    0  done; for `status`, a leader and no sign of diverged replicas
    1  the cluster answered, but not well: no leader or diverged replicas (`status`),
       an error reply or no reply (`call`), a failed snapshot (`snapshot`), every node
       exited (`cluster`); rebuilds that differ (`replay-check`)
    2  bad flags or settings, refused before anything starts
    3  this machine refused: the port is in use, the data cannot be opened (locked by
       a running node, damaged)
    4  a node stopped because its storage failed (a write or fsync error)
    5  a node stopped because its service faulted (out of memory applying an entry)
    6  a node stopped on an internal error (a bug)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import errno
import json
import logging
import math
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import msgspec

from phalanx.client import AsyncClient, Client, ClientError
from phalanx.client.admin import (
    ClusterHealth,
    gather_statuses,
    judge_statuses,
)
from phalanx.core.errors import ConfigError, PhalanxError
from phalanx.server.config import NodeConfig, build_config, config_from_toml
from phalanx.server.determinism import ensure_fixed_hash_seed
from phalanx.server.local import LocalCluster, describe_exit
from phalanx.service.container import ServiceFault
from phalanx.storage.errors import StorageError
from phalanx.transport.addresses import client_addresses, format_address, resolve
from phalanx.transport.wire import NodeStatus

if TYPE_CHECKING:
    from rich.console import Console

    from phalanx.core.types import SnapshotMeta
    from phalanx.server.node import Node
    from phalanx.server.replay import Rebuilds, Rebuilt

log = logging.getLogger("phalanx.node")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
#: The service faulted: out of memory applying an entry, or its restore() refused a snapshot.
EXIT_SERVICE_FAULT = 5

#: Nodes `phalanx cluster` will start on one machine.
MAX_LOCAL_NODES = 7
#: How long `phalanx cluster` waits for its nodes to stop before killing them.
STOP_GRACE_SECONDS_DEFAULT = 10.0
#: How often `phalanx cluster` looks for nodes that exited.
WATCH_INTERVAL_S = 0.2
#: Hints for the errors listening on a node's address most often meets.
_LISTEN_HINTS = {
    errno.EADDRINUSE: "another process listens there (a node still running?)",
    errno.EADDRNOTAVAIL: "no network interface of this machine has that address",
    errno.EACCES: "ports below 1024 need privileges",
}


def register(subparsers: Any) -> None:
    _register_node(subparsers)
    _register_cluster(subparsers)
    _register_admin(subparsers)
    _register_replay_check(subparsers)


def _register_node(subparsers: Any) -> None:
    node = subparsers.add_parser(
        "node",
        help="run one node until SIGTERM/SIGINT",
        description="Runs one node. Settings come from the flags, or from a TOML file "
        "(--config, keys in docs/configuration.md) that the flags override.",
    )
    add_node_arguments(node)
    node.set_defaults(func=run_node)


def add_node_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `phalanx node`, for a program that starts a node of its own with
    `run_node` (a test harness's `Node` subclass)."""
    needed = "no default: required here or in --config"
    parser.add_argument("--id", type=int, help=f"this node's id in --members ({needed})")
    parser.add_argument(
        "--members",
        help=f"ID=HOST:PORT,... for every member; IPv6 as ID=[::1]:PORT ({needed})",
    )
    parser.add_argument("--data", help=f"this node's data directory ({needed})")
    parser.add_argument(
        "--service",
        help="MODULE:CLASS of the service; MODULE may be a .py file in the current "
        f"directory ({needed})",
    )
    parser.add_argument(
        "--cluster-id",
        dest="cluster_id",
        help=f"cluster id (default: {NodeConfig.cluster_id}, or --config's)",
    )
    parser.add_argument(
        "--tick-ms",
        dest="tick_ms",
        type=int,
        help=f"Raft tick in ms (default: {NodeConfig.tick_ms}, or --config's)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML file with these settings and more (default: flags only)",
    )


def _register_cluster(subparsers: Any) -> None:
    cluster = subparsers.add_parser(
        "cluster",
        help="run a local cluster of node processes",
        description="Runs node processes on this machine in the foreground. A node that "
        "exits is reported and the others keep running; SIGINT (Ctrl-C) or SIGTERM "
        "stops them all.",
    )
    cluster.add_argument("--nodes", type=int, default=3, help=f"1 to {MAX_LOCAL_NODES}")
    cluster.add_argument(
        "--service",
        default="phalanx.examples.kv:KeyValue",
        help="MODULE:CLASS of the service; MODULE may be a .py file in the current directory",
    )
    cluster.add_argument(
        "--data", required=True, help="directory for the nodes' data (node-N/ each)"
    )
    cluster.add_argument(
        "--base-port", type=int, default=7101, help="node N listens on BASE_PORT + N - 1"
    )
    cluster.add_argument("--host", default="127.0.0.1", help="address the nodes listen on")
    cluster.add_argument(
        "--stop-grace-seconds",
        type=float,
        default=STOP_GRACE_SECONDS_DEFAULT,
        help="when stopping, kill a node still running after this long",
    )
    cluster.set_defaults(func=run_cluster)


def _register_admin(subparsers: Any) -> None:
    status = _admin_parser(
        subparsers,
        "status",
        run_status,
        help="print every member's role, indices and digests; exit 1 if unhealthy",
        description="Asks every member for its status. Exits 0 when one member leads "
        "and no replica is known to have diverged, 1 otherwise (saying why).",
    )
    status.add_argument("--json", action="store_true", help="print one JSON object instead")
    _admin_parser(
        subparsers, "snapshot", run_snapshot, help="make every member take a snapshot now"
    )
    repair = _admin_parser(
        subparsers,
        "repair",
        run_repair,
        help="rebuild one member's service state from the leader's snapshot",
    )
    repair.add_argument("--node", type=int, required=True, help="position (1-based) in --members")
    call = _admin_parser(
        subparsers,
        "call",
        run_call,
        help="send one command (JSON) and print the reply as JSON",
        description="Sends one command and prints the reply as JSON. Exits 1 when the "
        'reply is an error reply ({"ok": false, ...}) or no reply came.',
    )
    call.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply")
    call.add_argument("command", help='e.g. \'{"op": "get", "key": "x"}\'')


def _register_replay_check(subparsers: Any) -> None:
    check = subparsers.add_parser(
        "replay-check",
        help="rebuild a stopped node's state from every stored snapshot; exit 1 if they differ",
        description="Rebuilds a stopped node's service state offline, once from the empty "
        "state (when the log still starts at index 1) and once from every stored snapshot "
        "the log continues, each replaying the log to the same index, and prints the "
        "digests each reached. Exits 0 when they all agree, 1 when any differ, 2 for a "
        "directory that is not a node's, 3 when a running node holds it or it is damaged.",
    )
    check.add_argument("--data", required=True, type=Path, help="the node's data directory")
    check.add_argument(
        "--up-to",
        dest="up_to",
        type=int,
        help="replay to this log index (default: the log's last entry)",
    )
    check.add_argument("--json", action="store_true", help="print one JSON object instead")
    check.set_defaults(func=run_replay_check)


def _admin_parser(
    subparsers: Any, name: str, func: Callable[[argparse.Namespace], int], **texts: str
) -> argparse.ArgumentParser:
    """The parser of a command that talks to a running cluster."""
    parser: argparse.ArgumentParser = subparsers.add_parser(name, **texts)
    parser.add_argument(
        "--members", required=True, help="HOST:PORT,... or ID=HOST:PORT,... of the members"
    )
    parser.add_argument("--cluster-id", default="phalanx", help="the cluster's id")
    parser.set_defaults(func=func)
    return parser


# -- phalanx node ------------------------------------------------------------------------------


def run_node(args: argparse.Namespace, node_class: type[Node] | None = None) -> int:
    """Runs one node until it is told to stop; returns the exit code. `node_class`
    (default `Node`) is for a test harness that runs a subclass of its own; that
    harness also sees to the hash seed, as `phalanx node` does here."""
    # First of all: a node must hash strings as every other replica does (see
    # determinism.py); this re-executes the process unless it already runs so. Only a
    # process started as `phalanx node` is re-executed: another program calling main()
    # (a test) has argv of its own, which `python -m phalanx` would misread.
    if sys.argv[1:2] == ["node"]:
        ensure_fixed_hash_seed(sys.argv[1:])
    if node_class is None:
        from phalanx.server import node as node_module

        node_class = node_module.Node

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _importable_from_cwd()
    try:
        config = _node_config(args)
        _check_addresses(config)
    except ConfigError as error:
        return _refuse("node", _explained(error), EXIT_USAGE)
    host, port = config.address
    listen_error = _listen_error(host, port)
    if listen_error is not None:
        reason = _LISTEN_HINTS.get(listen_error.errno or 0, "")
        message = f"cannot listen on {format_address(host, port)}: {listen_error.strerror}"
        return _refuse("node", f"{message}; {reason}" if reason else message, EXIT_REFUSED)
    try:
        node = node_class(config)
    except ConfigError as error:  # e.g. members that differ from the data directory's
        return _refuse("node", _explained(error), EXIT_USAGE)
    except StorageError as error:
        return _refuse("node", f"refusing to start: {error}", EXIT_REFUSED)
    except OSError as error:
        return _refuse("node", f"cannot open the data directory: {error}", EXIT_REFUSED)
    except ServiceFault as fault:  # the service's restore() refused its own snapshot
        return _refuse("node", f"refusing to start: {fault}", EXIT_SERVICE_FAULT)
    if not node.service.supports_snapshots():
        log.warning(
            "%s has no restore(): snapshots are off, so the log is never compacted and a "
            "node that falls behind catches up by replaying all of it",
            config.service,
        )
    try:
        asyncio.run(_serve(node))
    except OSError as error:  # listening failed after all (the port was taken meanwhile)
        return _refuse("node", f"stopped: {error}", EXIT_REFUSED)
    if node.failed is not None:
        # 4: its storage failed; 5: its service faulted (out of memory); 6: a bug.
        print(f"phalanx node: stopped: {node.failed}", file=sys.stderr)
        return int(node.exit_code)
    return EXIT_OK


def _node_config(args: argparse.Namespace) -> NodeConfig:
    overrides = {
        "id": args.id,
        "members": args.members,
        "data": args.data,
        "service": args.service,
        "cluster_id": args.cluster_id,
        "tick_ms": args.tick_ms,
    }
    if args.config is not None:
        return config_from_toml(args.config, overrides)
    return build_config({k: v for k, v in overrides.items() if v is not None})


def _refuse(command: str, message: str, code: int) -> int:
    print(f"phalanx {command}: {message}", file=sys.stderr)
    return code


def _bad_seconds(flag: str, value: float) -> str | None:
    """Why `value` cannot be `flag`'s number of seconds (None: it can). NaN would wait
    forever, and zero or less would give up before asking."""
    if math.isfinite(value) and value > 0:
        return None
    return f"{flag} must be a positive number of seconds, not {value:g}"


def _importable_from_cwd() -> None:
    """Lets `--service mymodule:MyService` name a module in the working directory, as
    `python -m phalanx` allows by itself and the installed `phalanx` script would not.
    PYTHONSAFEPATH (python -P) turns this off, as it does for `python -m`."""
    cwd = os.getcwd()
    if not sys.flags.safe_path and cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _explained(error: ConfigError) -> str:
    if error.setting == "service" and "cannot import" in error.problem:
        return f"{error}; modules are looked for in {os.getcwd()} and on PYTHONPATH"
    return str(error)


def _check_addresses(config: NodeConfig) -> None:
    """This node's own host must resolve (ConfigError); a peer's that does not is only
    reported, since a name may appear later and the node keeps trying to reach it."""
    for node_id, (host, port) in sorted(config.members.items()):
        if node_id == config.node_id:
            resolve(host, port)
            continue
        try:
            resolve(host, port)
        except ConfigError as error:
            log.warning("member %s: %s; this node keeps trying it", node_id, error.problem)


def _listen_error(host: str, port: int) -> OSError | None:
    """The error listening on host:port meets right now, if any, found before the node
    opens its data (nothing stays bound: the node binds again when it starts)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as error:
        return error
    for family, kind, proto, _, address in found:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio does
            try:
                sock.bind(address)
                sock.listen()
            except OSError as error:
                return error
    return None


async def _serve(node: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await node.run(stop)


# -- phalanx cluster ---------------------------------------------------------------------------


class _StopSignals:
    """While entered, SIGTERM and SIGINT are noted instead of ending this process at
    once, so that it can stop its nodes rather than leave them running as orphans."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum


def run_cluster(args: argparse.Namespace) -> int:
    _importable_from_cwd()
    if not 1 <= args.nodes <= MAX_LOCAL_NODES:
        return _refuse("cluster", f"--nodes must be 1 to {MAX_LOCAL_NODES}", EXIT_USAGE)
    bad_grace = _bad_seconds("--stop-grace-seconds", args.stop_grace_seconds)
    if bad_grace is not None:
        return _refuse("cluster", bad_grace, EXIT_USAGE)
    try:
        resolve(args.host, args.base_port)
        cluster = LocalCluster(
            Path(args.data),
            args.nodes,
            services=args.service,
            host=args.host,
            ports=range(args.base_port, args.base_port + args.nodes),
            log_files=False,  # the nodes write to this terminal
        )
    except ConfigError as error:
        return _refuse("cluster", _explained(error), EXIT_USAGE)
    with _StopSignals() as stop:
        try:
            cluster.start_all()
            print(
                f"cluster of {args.nodes} running; members: {cluster.members}\n"
                f"  phalanx status --members {cluster.members}\n"
                "a node that exits is reported and the others keep running; "
                "Ctrl-C or SIGTERM stops them all",
                flush=True,
            )
            return _watch(cluster, stop)
        finally:
            for index in cluster.stop_all(args.stop_grace_seconds):
                grace = args.stop_grace_seconds
                _say(f"node {index + 1} still running {grace:g}s after SIGTERM; killing it")


def _watch(cluster: LocalCluster, stop: _StopSignals) -> int:
    """Reports each node that exits, until a stop signal (0) or none is left (1)."""
    while stop.received is None:
        for index, code in cluster.reap_exited():
            running = cluster.started_indices()
            command = cluster.commands[index] or []
            then = (
                f"; the others keep running. Restart it with: {shlex.join(command)}"
                if running
                else ""
            )
            _say(f"node {index + 1} exited {describe_exit(code)}{then}")
        if not cluster.started_indices():
            _say("every node has exited")
            return EXIT_FAILED
        time.sleep(WATCH_INTERVAL_S)
    _say(f"{signal.Signals(stop.received).name}: stopping the nodes")
    return EXIT_OK


def _say(message: str) -> None:
    print(f"phalanx cluster: {message}", file=sys.stderr, flush=True)


# -- phalanx status, snapshot, repair ----------------------------------------------------------


def _member_addresses(members: str, command: str) -> list[str] | None:
    """`--members` parsed, or None after printing why it is not usable."""
    try:
        return [format_address(host, port) for host, port in client_addresses(members)]
    except ConfigError as error:
        print(f"phalanx {command}: {error}", file=sys.stderr)
        return None


def run_status(args: argparse.Namespace) -> int:
    from rich.console import Console

    addresses = _member_addresses(args.members, "status")
    if addresses is None:
        return EXIT_USAGE
    members = asyncio.run(gather_statuses(addresses, cluster_id=args.cluster_id))
    health = judge_statuses(members)
    if args.json:
        print(to_json(status_report(addresses, members, health)))
    else:
        print_status(addresses, members, health, Console())
    for problem in health.problems:
        print(f"phalanx status: {problem}", file=sys.stderr)
    return EXIT_FAILED if health.problems else EXIT_OK


def status_report(
    addresses: Sequence[str], members: Sequence[NodeStatus | None], health: ClusterHealth
) -> dict[str, Any]:
    """What `phalanx status --json` prints."""
    return {
        "healthy": not health.problems,
        "leader": health.leader,
        "problems": list(health.problems),
        "members": [
            {
                "address": address,
                "reachable": status is not None,
                "status": None if status is None else msgspec.to_builtins(status),
            }
            for address, status in zip(addresses, members, strict=True)
        ],
    }


def status_tables(
    addresses: Sequence[str], members: Sequence[NodeStatus | None]
) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the tables `phalanx status` prints: one row per member
    with its role and indices, then one per answering member with its digests."""
    header = ["id", "role", "term", "last index", "commit index", "applied index", "leader"]
    rows = [
        [address, *(str(v) for v in _member_row(status)), "yes"]
        if status is not None
        else [address, *["-"] * len(header), "no"]
        for address, status in zip(addresses, members, strict=True)
    ]
    replicas = [
        [str(s.id), str(s.applied_index), s.state_digest, s.log_digest, _replica_check(s)]
        for s in members
        if s is not None
    ]
    return [
        ("members", ["address", *header, "reachable"], rows),
        (
            "replicas",
            ["id", "applied index", "state digest", "log digest", "replica check"],
            replicas,
        ),
    ]


def _member_row(s: NodeStatus) -> tuple[object, ...]:
    return (s.id, s.role.value, s.term, s.last_index, s.commit_index, s.applied_index, s.leader)


def _replica_check(status: NodeStatus) -> str:
    if status.diverged:
        return f"THIS NODE DIVERGED {status.diverged}"
    return status.replica_check or "none yet"


def print_status(
    addresses: Sequence[str],
    members: Sequence[NodeStatus | None],
    health: ClusterHealth,
    console: Console,
) -> None:
    """A terminal gets tables that fold to its width; a pipe or file gets plain text
    with every value whole, one member per line."""
    from rich.table import Table
    from rich.text import Text

    for position, (title, header, rows) in enumerate(status_tables(addresses, members)):
        if console.is_terminal:
            table = Table(title=title)
            for column in header:
                table.add_column(column, overflow="fold")
            for row in rows:
                table.add_row(*(Text(cell, "red" if cell == "no" else "") for cell in row))
            console.print(table)
        else:
            gap = "\n" if position else ""
            console.out(f"{gap}{title}:\n{_plain_table(header, rows)}", highlight=False)
    if health.leader is not None and not health.problems:
        console.out(f"leader: node {health.leader}; no sign of diverged replicas", highlight=False)


def _plain_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def run_snapshot(args: argparse.Namespace) -> int:
    addresses = _member_addresses(args.members, "snapshot")
    if addresses is None:
        return EXIT_USAGE

    async def one(address: str) -> SnapshotResult:
        client = AsyncClient([address], cluster_id=args.cluster_id)
        try:
            return judge_snapshot_reply(address, await client.snapshot())
        except (PhalanxError, OSError, TimeoutError) as error:
            return SnapshotResult(address, f"failed: {type(error).__name__} {error}", failed=True)
        finally:
            await client.close()

    async def all_members() -> list[SnapshotResult]:
        return list(await asyncio.gather(*(one(address) for address in addresses)))

    results = asyncio.run(all_members())
    print("\n".join(f"{result.address}: {result.text}" for result in results))
    failed = [result.address for result in results if result.failed]
    if failed:
        return _refuse("snapshot", f"no snapshot taken by {', '.join(failed)}", EXIT_FAILED)
    return EXIT_OK


@dataclass(frozen=True, slots=True)
class SnapshotResult:
    address: str
    #: What `phalanx snapshot` prints after the address.
    text: str
    failed: bool


#: How a node's `SnapshotReply` message says the snapshot was not taken (its index is 0).
SNAPSHOT_FAILED_PREFIX = "failed:"


def judge_snapshot_reply(address: str, reply: tuple[int, int, str]) -> SnapshotResult:
    """One member's answer to `phalanx snapshot`: (index, term, message) as the node
    sent it. A node whose service's `snapshot()` raised answers index 0 and a message
    starting "failed:", which names the error."""
    index, term, note = reply
    if note.startswith(SNAPSHOT_FAILED_PREFIX):
        return SnapshotResult(address, note, failed=True)
    return SnapshotResult(address, f"snapshot at index {index} (term {term}) {note}", failed=False)


def run_repair(args: argparse.Namespace) -> int:
    addresses = _member_addresses(args.members, "repair")
    if addresses is None:
        return EXIT_USAGE
    if not 1 <= args.node <= len(addresses):
        return _refuse("repair", f"--node must be 1 to {len(addresses)}", EXIT_USAGE)
    address = addresses[args.node - 1]

    async def ask() -> str:
        client = AsyncClient([address], cluster_id=args.cluster_id)
        try:
            return (await client.repair())[2]
        finally:
            await client.close()

    try:
        note = asyncio.run(ask())
    except (PhalanxError, OSError, TimeoutError) as error:
        return _refuse("repair", f"{type(error).__name__}: {error}", EXIT_FAILED)
    print(f"{address}: {note}")
    return EXIT_OK


# -- phalanx call ------------------------------------------------------------------------------


def run_call(args: argparse.Namespace) -> int:
    bad_timeout = _bad_seconds("--timeout", args.timeout)
    if bad_timeout is not None:
        return _refuse("call", bad_timeout, EXIT_USAGE)
    try:
        command = json.loads(args.command)
    except (json.JSONDecodeError, RecursionError) as error:
        return _refuse("call", f"the command is not JSON: {error}", EXIT_USAGE)
    try:
        # As the client will: JSON allows what msgpack cannot carry (ints past 64 bits).
        msgspec.msgpack.encode(command)
    except (OverflowError, RecursionError, msgspec.EncodeError) as error:
        return _refuse("call", f"the command cannot be encoded: {error}", EXIT_USAGE)
    try:
        with Client(args.members, cluster_id=args.cluster_id) as client:
            reply = client.call(command, timeout=args.timeout)
    except ConfigError as error:
        return _refuse("call", str(error), EXIT_USAGE)
    except ClientError as error:
        return _refuse("call", f"{type(error).__name__}: {error}", EXIT_FAILED)
    print(to_json(reply))
    if isinstance(reply, dict) and reply.get("ok") is False:
        what = ": ".join(str(reply[k]) for k in ("error", "message") if reply.get(k))
        return _refuse("call", f"the service replied with an error: {what}", EXIT_FAILED)
    return EXIT_OK


def to_json(value: object) -> str:
    """`value` as strict JSON (RFC 8259), whatever a service replied: bytes become
    {"base64": ...}, NaN and infinities the strings "NaN", "Infinity" and "-Infinity",
    map keys strings, and anything else its str()."""
    return json.dumps(_json_ready(value), allow_nan=False, sort_keys=True, default=str)


def _json_ready(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {
            key if isinstance(key, str) else to_json(key): _json_ready(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    return value


# -- phalanx replay-check ----------------------------------------------------------------------


def run_replay_check(args: argparse.Namespace) -> int:
    from phalanx.server.replay import rebuild_all

    _importable_from_cwd()
    data: Path = args.data
    if not data.is_dir():
        return _refuse("replay-check", f"{data}: no such directory", EXIT_USAGE)
    if args.up_to is not None and args.up_to < 0:
        return _refuse("replay-check", "--up-to must not be negative", EXIT_USAGE)
    try:
        rebuilds = rebuild_all(data, up_to=args.up_to)
    except ConfigError as error:
        return _refuse("replay-check", _explained(error), EXIT_USAGE)
    except (StorageError, OSError) as error:
        return _refuse("replay-check", f"cannot read {data}: {error}", EXIT_REFUSED)
    if not rebuilds:
        message = f"--up-to {args.up_to} is before every snapshot the log continues"
        return _refuse("replay-check", message, EXIT_USAGE)
    differing = rebuilds.differing()
    if args.json:
        print(to_json(replay_check_report(rebuilds)))
    else:
        print(replay_check_text(rebuilds))
    for rebuilt in differing:
        print(f"phalanx replay-check: {_difference(rebuilds[0], rebuilt)}", file=sys.stderr)
    return EXIT_FAILED if differing else EXIT_OK


def replay_check_report(rebuilds: Rebuilds) -> dict[str, Any]:
    """What `phalanx replay-check --json` prints."""
    differing = rebuilds.differing()
    return {
        "agree": not differing,
        "rebuilds": [
            {
                "start": {"index": r.start.index, "term": r.start.term},
                "applied_index": r.applied_index,
                "log_digest": r.log_digest,
                "state_digest": r.state_digest,
                "outcome_digest": r.outcome_digest,
                "agrees": r not in differing,
            }
            for r in rebuilds
        ],
        "skipped": [{"index": meta.index, "term": meta.term} for meta in rebuilds.skipped],
    }


def replay_check_text(rebuilds: Rebuilds) -> str:
    """What `phalanx replay-check` prints: one row per rebuild, then the skipped
    snapshots and the verdict."""
    header = [
        "start index",
        "start term",
        "applied index",
        "log digest",
        "state digest",
        "outcome digest",
    ]
    rows = [
        [str(r.start.index), str(r.start.term), str(r.applied_index), *r.digests()]
        for r in rebuilds
    ]
    lines = [_plain_table(header, rows)]
    if rebuilds.skipped:
        skipped = ", ".join(_start_name(meta) for meta in rebuilds.skipped)
        lines.append(f"skipped (the log no longer continues them): {skipped}")
    differing = len(rebuilds.differing())
    if differing:
        lines.append(f"{differing} of {len(rebuilds)} rebuilds differ from the first")
    else:
        lines.append(f"all {len(rebuilds)} rebuilds agree")
    return "\n".join(lines)


def _start_name(meta: SnapshotMeta) -> str:
    if meta.index == 0:
        return "the empty state"
    return f"the snapshot at index {meta.index} (term {meta.term})"


def _difference(first: Rebuilt, other: Rebuilt) -> str:
    names = ("log", "state", "outcome")
    differ = [
        name
        for name, mine, theirs in zip(names, other.digests(), first.digests(), strict=True)
        if mine != theirs
    ]
    return (
        f"rebuilt from {_start_name(other.start)}, index {other.applied_index} has another "
        f"{' and '.join(differ)} digest than rebuilt from {_start_name(first.start)}"
    )
