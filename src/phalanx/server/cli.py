"""`phalanx node`, `phalanx cluster`, `phalanx status` and `phalanx call`."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from phalanx.client import AsyncClient, Client, ClientError
from phalanx.client.admin import gather_statuses
from phalanx.core.errors import ConfigError, PhalanxError
from phalanx.server.config import NodeConfig, build_config, config_from_toml, config_to_toml
from phalanx.storage.errors import StorageError
from phalanx.transport.addresses import client_addresses

#: Nodes `phalanx cluster` will start on one machine.
MAX_LOCAL_NODES = 7


def register(subparsers: Any) -> None:
    node = subparsers.add_parser("node", help="run one node until SIGTERM/SIGINT")
    node.add_argument("--id", type=int, help="this node's id")
    node.add_argument("--members", help="ID=HOST:PORT,... for every member")
    node.add_argument("--data", help="data directory")
    node.add_argument("--service", help="MODULE:CLASS of the service")
    node.add_argument("--cluster-id", dest="cluster_id", help="cluster id (default phalanx)")
    node.add_argument("--tick-ms", dest="tick_ms", type=int, help="Raft tick in ms")
    node.add_argument("--config", type=Path, help="TOML file with the same settings")
    node.set_defaults(func=run_node)

    cluster = subparsers.add_parser("cluster", help="run a local cluster of node processes")
    cluster.add_argument("--nodes", type=int, default=3)
    cluster.add_argument("--service", default="phalanx.examples.kv:KeyValue")
    cluster.add_argument("--data", required=True, help="directory for the nodes' data")
    cluster.add_argument("--base-port", type=int, default=7101)
    cluster.add_argument("--host", default="127.0.0.1")
    cluster.set_defaults(func=run_cluster)

    status = subparsers.add_parser("status", help="print every member's role and indices")
    status.add_argument("--members", required=True)
    status.add_argument("--cluster-id", default="phalanx")
    status.set_defaults(func=run_status)

    snapshot = subparsers.add_parser("snapshot", help="make every member take a snapshot now")
    snapshot.add_argument("--members", required=True)
    snapshot.add_argument("--cluster-id", default="phalanx")
    snapshot.set_defaults(func=run_snapshot)

    repair = subparsers.add_parser(
        "repair", help="rebuild one member's service state from the leader's snapshot"
    )
    repair.add_argument("--members", required=True)
    repair.add_argument("--node", type=int, required=True, help="position (1-based) in --members")
    repair.add_argument("--cluster-id", default="phalanx")
    repair.set_defaults(func=run_repair)

    call = subparsers.add_parser("call", help="send one command (JSON) and print the reply")
    call.add_argument("--members", required=True)
    call.add_argument("--cluster-id", default="phalanx")
    call.add_argument("--timeout", type=float, default=10.0)
    call.add_argument("command", help='e.g. \'{"op": "get", "key": "x"}\'')
    call.set_defaults(func=run_call)


def run_node(args: argparse.Namespace) -> int:
    from phalanx.server.node import Node

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    overrides = {
        "id": args.id,
        "members": args.members,
        "data": args.data,
        "service": args.service,
        "cluster_id": args.cluster_id,
        "tick_ms": args.tick_ms,
    }
    try:
        if args.config is not None:
            config = config_from_toml(args.config, overrides)
        else:
            config = build_config({k: v for k, v in overrides.items() if v is not None})
        node = Node(config)
    except ConfigError as error:
        print(f"phalanx node: {error}", file=sys.stderr)
        return 2
    except StorageError as error:
        print(f"phalanx node: refusing to start: {error}", file=sys.stderr)
        return 3
    asyncio.run(_serve(node))
    if node.failed is not None:
        print(f"phalanx node: stopped because its storage failed: {node.failed}", file=sys.stderr)
        return 4
    return 0


async def _serve(node: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await node.run(stop)


def node_command(config: NodeConfig, config_file: Path | None = None) -> list[str]:
    """The argv of a node process running exactly `config`: every setting goes through
    a TOML file (by default `node-<id>.toml` beside the node's data directory)."""
    if config_file is None:
        config_file = config.data_dir.parent / f"node-{config.node_id}.toml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(config_to_toml(config))
    return [sys.executable, "-m", "phalanx", "node", "--config", str(config_file)]


def run_cluster(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= MAX_LOCAL_NODES:
        print(f"phalanx cluster: --nodes must be 1 to {MAX_LOCAL_NODES}", file=sys.stderr)
        return 2
    members = ",".join(
        f"{i}={args.host}:{args.base_port + i - 1}" for i in range(1, args.nodes + 1)
    )
    processes = []
    try:
        for node_id in range(1, args.nodes + 1):
            config = build_config(
                {
                    "id": node_id,
                    "members": members,
                    "data": str(Path(args.data) / f"node-{node_id}"),
                    "service": args.service,
                }
            )
            processes.append(subprocess.Popen(node_command(config)))
    except ConfigError as error:
        print(f"phalanx cluster: {error}", file=sys.stderr)
        _stop_all(processes)
        return 2
    print(f"cluster of {args.nodes} running; members: {members}; Ctrl-C stops it")
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.2)
        print("a node exited; stopping the cluster", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_all(processes)


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


def _member_addresses(members: str, command: str) -> list[tuple[str, int]] | None:
    """`--members` parsed, or None after printing why it is not usable."""
    try:
        return client_addresses(members)
    except ConfigError as error:
        print(f"phalanx {command}: {error}", file=sys.stderr)
        return None


def run_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    addresses = _member_addresses(args.members, "status")
    if addresses is None:
        return 2
    rows = asyncio.run(
        gather_statuses([f"{h}:{p}" for h, p in addresses], cluster_id=args.cluster_id)
    )
    table = Table(title="phalanx cluster status")
    columns = ["id", "role", "term", "last_index", "commit_index", "applied_index", "leader"]
    for column in ["address", *columns, "reachable"]:
        table.add_column(column.replace("_", " "))
    for (host, port), status in zip(addresses, rows, strict=True):
        if status is None:
            table.add_row(f"{host}:{port}", *["-"] * len(columns), "[red]no[/red]")
        else:
            table.add_row(f"{host}:{port}", *(str(status[c]) for c in columns), "yes")
    Console().print(table)
    return 0 if any(rows) else 1


def run_snapshot(args: argparse.Namespace) -> int:
    addresses = _member_addresses(args.members, "snapshot")
    if addresses is None:
        return 2

    async def one(host: str, port: int) -> str:
        client = AsyncClient([f"{host}:{port}"], cluster_id=args.cluster_id)
        try:
            index, term, note = await client.snapshot()
        except (PhalanxError, OSError, TimeoutError) as error:
            return f"{host}:{port}: failed: {type(error).__name__} {error}"
        finally:
            await client.close()
        return f"{host}:{port}: snapshot at index {index} (term {term}) {note}"

    async def all_members() -> list[str]:
        return list(await asyncio.gather(*(one(h, p) for h, p in addresses)))

    lines = asyncio.run(all_members())
    print("\n".join(lines))
    return 1 if any(": failed:" in line for line in lines) else 0


def run_repair(args: argparse.Namespace) -> int:
    addresses = _member_addresses(args.members, "repair")
    if addresses is None:
        return 2
    if not 1 <= args.node <= len(addresses):
        print(f"phalanx repair: --node must be 1 to {len(addresses)}", file=sys.stderr)
        return 2
    host, port = addresses[args.node - 1]

    async def ask() -> str:
        client = AsyncClient([f"{host}:{port}"], cluster_id=args.cluster_id)
        try:
            return (await client.repair())[2]
        finally:
            await client.close()

    try:
        note = asyncio.run(ask())
    except (PhalanxError, OSError, TimeoutError) as error:
        print(f"phalanx repair: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(f"{host}:{port}: {note}")
    return 0


def run_call(args: argparse.Namespace) -> int:
    try:
        command = json.loads(args.command)
    except json.JSONDecodeError as error:
        print(f"phalanx call: the command is not JSON: {error}", file=sys.stderr)
        return 2
    try:
        with Client(args.members, cluster_id=args.cluster_id) as client:
            reply = client.call(command, timeout=args.timeout)
    except ConfigError as error:
        print(f"phalanx call: {error}", file=sys.stderr)
        return 2
    except ClientError as error:
        print(f"phalanx call: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(reply, default=_json_default, sort_keys=True))
    return 0


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    raise TypeError(f"{type(value).__name__} is not JSON")
