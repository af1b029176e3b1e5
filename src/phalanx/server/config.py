"""Node settings: from the command line or a TOML file, validated before anything starts.

Every bad value raises `ConfigError` naming the setting, so `phalanx node` can refuse
to start with a message the operator can act on.
"""

from __future__ import annotations

import dataclasses
import importlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phalanx.core.errors import ConfigError
from phalanx.core.types import NodeId
from phalanx.service.base import Service
from phalanx.transport.addresses import parse_address

MAX_MEMBERS = 9


@dataclass(frozen=True)
class NodeConfig:
    node_id: NodeId
    members: dict[NodeId, tuple[str, int]]
    data_dir: Path
    service: str
    cluster_id: str = "phalanx"
    #: One Raft tick. A follower campaigns after 15-30 silent ticks (150-300 ms by
    #: default) and the leader sends heartbeats every 3 ticks (30 ms): a failed leader
    #: is replaced in about 200 ms, and an election needs five heartbeats in a row
    #: to go missing.
    tick_ms: int = 10
    election_timeout_ticks: int = 15
    heartbeat_interval_ticks: int = 3
    session_timeout_ms: int = 60_000
    max_sessions: int = 10_000
    #: Replies each session caches for retries (commands a client may have unanswered).
    max_replies_per_session: int = 4096
    #: Requests the leader holds at once (queued or proposed, not yet answered);
    #: beyond it new ones are refused with "leader busy" and clients back off.
    max_pending_proposals: int = 8192
    #: ... and refused while the oldest pending request has waited longer than this
    #: (0: no such bound): latency stays below clients' attempt timeouts (1 s by
    #: default), so they never time out and append their commands again.
    max_commit_wait_ms: int = 500
    #: Client requests proposed in one Ready at most: a bounded turn of the loop.
    max_proposals_per_batch: int = 4096
    max_command_bytes: int = 1024 * 1024
    max_message_bytes: int = 1024 * 1024
    max_inflight_messages: int = 256
    #: Take a snapshot after this many applied entries (0: never). Snapshots need a
    #: service that implements `restore`.
    snapshot_every_entries: int = 100_000
    #: ... or after this many bytes of entries (0: only by entries).
    snapshot_every_bytes: int = 256 * 1024 * 1024
    #: Entries kept in the log below a snapshot, for followers only slightly behind.
    snapshot_compaction_margin: int = 10_000
    snapshot_chunk_bytes: int = 1024 * 1024
    snapshots_keep: int = 2
    #: Compare state digests with the other nodes every this many entries (0: never).
    checkpoint_every_entries: int = 1000
    #: Rebuild from the leader's snapshot as soon as this node finds itself diverged.
    auto_repair: bool = False
    #: Record the given members as this data directory's (`cluster.json`) although it
    #: already holds a log: only for a directory written before phalanx recorded them,
    #: and only with the members it was written with.
    adopt_identity: bool = False
    #: BROKEN ON PURPOSE: any node answers read-only commands from its own state,
    #: bypassing the log, so reads may be stale. Exists only so fault tests can show
    #: the linearizability checker catching it. Never enable it in production.
    unsafe_local_reads: bool = False

    @property
    def address(self) -> tuple[str, int]:
        return self.members[self.node_id]

    def validate(self) -> None:
        if not 1 <= len(self.members) <= MAX_MEMBERS:
            raise ConfigError("members", f"need 1 to {MAX_MEMBERS} members")
        if self.node_id not in self.members:
            raise ConfigError("id", f"node {self.node_id} is not in members {sorted(self.members)}")
        addresses = list(self.members.values())
        if len(set(addresses)) != len(addresses):
            raise ConfigError("members", "two members share one address")
        if not self.cluster_id or len(self.cluster_id) > 128:
            raise ConfigError("cluster_id", "must be 1 to 128 characters")
        for name in (
            "tick_ms",
            "session_timeout_ms",
            "max_sessions",
            "max_replies_per_session",
            "max_pending_proposals",
            "max_proposals_per_batch",
            "snapshot_chunk_bytes",
            "snapshots_keep",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(name, "must be at least 1")
        if (
            min(
                self.snapshot_every_entries,
                self.snapshot_every_bytes,
                self.snapshot_compaction_margin,
            )
            < 0
        ):
            raise ConfigError("snapshot_every_entries", "snapshot settings must not be negative")
        if self.snapshot_chunk_bytes > self.max_message_bytes:
            raise ConfigError("snapshot_chunk_bytes", "must not exceed max_message_bytes")
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks:
            raise ConfigError("election_timeout_ticks", "must exceed heartbeat_interval_ticks")
        load_service_class(self.service)


def parse_members(text: str) -> dict[NodeId, tuple[str, int]]:
    """Parses `1=127.0.0.1:7101,2=127.0.0.1:7102`."""
    members: dict[NodeId, tuple[str, int]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        node, sep, address = item.partition("=")
        if not sep or not node.strip().isdigit():
            raise ConfigError("members", f"{item!r} is not of the form ID=HOST:PORT")
        node_id = NodeId(int(node))
        if node_id < 1 or node_id in members:
            raise ConfigError("members", f"node id {node_id} is invalid or repeated")
        members[node_id] = parse_address(address, "members")
    if not members:
        raise ConfigError("members", "no members given")
    return members


def load_service_class(spec: str) -> type[Service]:
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise ConfigError("service", f"{spec!r} is not MODULE:CLASS")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError("service", f"cannot import {module_name!r}: {error}") from None
    if not hasattr(module, class_name):
        raise ConfigError("service", f"module {module_name!r} has no class {class_name!r}")
    cls = getattr(module, class_name)
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise ConfigError("service", f"{spec!r} is not a phalanx.Service subclass")
    return cls


def config_from_toml(path: Path, overrides: dict[str, Any]) -> NodeConfig:
    """Reads a TOML file (keys as in `NodeConfig`; `members` as a string or a table)."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError("config", f"cannot read {path}: {error}") from None
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return build_config(raw)


def build_config(raw: dict[str, Any]) -> NodeConfig:
    known = {f.name for f in dataclasses.fields(NodeConfig)} | {"id", "data"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(unknown[0], "unknown setting")
    values = dict(raw)
    if "id" in values:
        values["node_id"] = values.pop("id")
    if "data" in values:
        values["data_dir"] = values.pop("data")
    for required, name in (
        ("node_id", "id"),
        ("members", "members"),
        ("data_dir", "data"),
        ("service", "service"),
    ):
        if values.get(required) in (None, ""):
            raise ConfigError(name, "is required")
    members = values["members"]
    if isinstance(members, dict):
        members = ",".join(f"{k}={v}" for k, v in members.items())
    values["members"] = parse_members(str(members))
    values["data_dir"] = Path(values["data_dir"])
    try:
        values["node_id"] = NodeId(int(values["node_id"]))
    except (TypeError, ValueError):
        raise ConfigError("id", f"{values['node_id']!r} is not an integer") from None
    for field in dataclasses.fields(NodeConfig):
        if field.type == "int" and field.name in values and type(values[field.name]) is not int:
            raise ConfigError(field.name, f"must be an integer, got {values[field.name]!r}")
    config = NodeConfig(**values)
    config.validate()
    return config


def config_to_toml(config: NodeConfig) -> str:
    """The TOML text that `config_from_toml` reads back as `config`."""
    lines = []
    for field in dataclasses.fields(NodeConfig):
        value = getattr(config, field.name)
        name = {"node_id": "id", "data_dir": "data"}.get(field.name, field.name)
        if field.name == "members":
            value = ",".join(f"{n}={h}:{p}" for n, (h, p) in sorted(value.items()))
        if isinstance(value, bool):
            lines.append(f"{name} = {'true' if value else 'false'}")
        elif isinstance(value, int):
            lines.append(f"{name} = {value}")
        else:
            escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{name} = "{escaped}"')
    return "\n".join(lines) + "\n"
