"""Node settings: from the command line or a TOML file, validated before anything starts.

Every bad value raises `ConfigError` naming the setting, so `phalanx node` can refuse
to start with a message the operator can act on: an unknown key names the valid ones,
a removed key says what replaced it (`REMOVED_KEYS`), a value out of range names the
range.

Every setting of the core's `RaftConfig` but the node id and the voters (which come
from `id` and `members`) is an operator's setting, in the file's `[raft]` table. They
are flat fields of `NodeConfig`, under the same names, and `raft_config()` builds the
core's configuration from them. Four of them were top-level keys before the table
existed (`DEPRECATED_TOP_LEVEL_RAFT_KEYS`): a file that still sets one there is read,
with a logged warning, and one that sets it in both places is refused.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phalanx.core.errors import ConfigError
from phalanx.core.raft import RaftConfig
from phalanx.core.types import NodeId
from phalanx.limits import MAX_MEMBERS, SNAPSHOT_CHUNK_BYTES_MAX
from phalanx.service.base import Service
from phalanx.transport.addresses import parse_address

log = logging.getLogger(__name__)


#: The `RaftConfig` settings an operator sets, in the `[raft]` table (the node id and
#: the voters come from `id` and `members`). `NodeConfig` has a field of each name.
RAFT_SETTINGS = tuple(
    f.name for f in dataclasses.fields(RaftConfig) if f.name not in ("node_id", "voters")
)
#: Raft settings that were top-level keys before the `[raft]` table: still read there,
#: with a warning, so that existing files keep working.
DEPRECATED_TOP_LEVEL_RAFT_KEYS = (
    "election_timeout_ticks",
    "heartbeat_interval_ticks",
    "max_inflight_messages",
    "max_message_bytes",
)
#: TOML keys that differ from the `NodeConfig` field they set.
TOML_KEYS = {"node_id": "id", "data_dir": "data"}
#: Keys a node no longer reads, with what to do instead: a file that still sets one is
#: refused with that advice rather than the bare "unknown setting".
REMOVED_KEYS = {
    "unsafe_local_reads": "no longer a node setting: the deliberately stale reads moved "
    "to `phalanx chaos --unsafe-local-reads` (docs/chaos.md), which starts test nodes "
    "of its own; delete the key from this file",
}


#: The core's defaults, which the `[raft]` settings below start from.
_CORE = RaftConfig(node_id=NodeId(1), voters=(NodeId(1),))


@dataclass(frozen=True)
class NodeConfig:
    node_id: NodeId
    members: dict[NodeId, tuple[str, int]]
    data_dir: Path
    service: str
    cluster_id: str = "phalanx"
    #: One Raft tick (see election_timeout_ticks below).
    tick_ms: int = 10
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

    # -- the [raft] table: `RaftConfig`'s settings, by the same names (RAFT_SETTINGS) --
    #: A follower campaigns after 15-30 silent ticks (150-300 ms by default) and the
    #: leader sends heartbeats every 3 ticks (30 ms): a failed leader is replaced in
    #: about 200 ms, and an election needs five heartbeats in a row to go missing.
    #: (The core's own defaults, 10 and 1, count abstract ticks for the simulator.)
    election_timeout_ticks: int = 15
    heartbeat_interval_ticks: int = 3
    #: The rest default to the core's own values (see `RaftConfig`).
    max_inflight_messages: int = _CORE.max_inflight_messages
    max_inflight_bytes: int = _CORE.max_inflight_bytes
    max_message_bytes: int = _CORE.max_message_bytes
    max_uncommitted_bytes: int = _CORE.max_uncommitted_bytes
    max_apply_bytes: int = _CORE.max_apply_bytes
    replication_stall_heartbeats: int = _CORE.replication_stall_heartbeats
    snapshot_stall_heartbeats: int = _CORE.snapshot_stall_heartbeats
    pre_vote: bool = _CORE.pre_vote
    check_quorum: bool = _CORE.check_quorum
    broadcast_commit: bool = _CORE.broadcast_commit

    @property
    def address(self) -> tuple[str, int]:
        return self.members[self.node_id]

    def raft_config(self) -> RaftConfig:
        """The core's configuration for this node: its id, every member as a voter (in
        id order, so every node builds the same tuple) and every `[raft]` setting."""
        settings: dict[str, Any] = {name: getattr(self, name) for name in RAFT_SETTINGS}
        return RaftConfig(node_id=self.node_id, voters=tuple(sorted(self.members)), **settings)

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
        for name, (lowest, highest) in INTEGER_RANGES.items():
            _check_range(setting_key(name), getattr(self, name), lowest, highest)
        if self.snapshot_chunk_bytes > self.max_message_bytes:
            raise ConfigError(
                "snapshot_chunk_bytes",
                f"must not exceed raft.max_message_bytes ({self.max_message_bytes}), "
                f"got {self.snapshot_chunk_bytes}",
            )
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks:
            raise ConfigError(
                "raft.election_timeout_ticks",
                f"must exceed raft.heartbeat_interval_ticks ({self.heartbeat_interval_ticks}), "
                f"got {self.election_timeout_ticks}",
            )
        self.raft_config().validate()  # the core's own checks, should it ever add one
        load_service_class(self.service)


#: Every integer setting's valid range, inclusive (None: no upper bound). A test checks
#: that every integer field of `NodeConfig` has one.
INTEGER_RANGES: dict[str, tuple[int, int | None]] = {
    "tick_ms": (1, None),
    "session_timeout_ms": (1, None),
    "max_sessions": (1, None),
    "max_replies_per_session": (1, None),
    "max_pending_proposals": (1, None),
    "max_commit_wait_ms": (0, None),
    "max_proposals_per_batch": (1, None),
    "max_command_bytes": (1, None),
    "snapshot_every_entries": (0, None),
    "snapshot_every_bytes": (0, None),
    "snapshot_compaction_margin": (0, None),
    "snapshot_chunk_bytes": (1, SNAPSHOT_CHUNK_BYTES_MAX),
    "snapshots_keep": (1, None),
    "checkpoint_every_entries": (0, None),
    "election_timeout_ticks": (2, None),
    "heartbeat_interval_ticks": (1, None),
    "max_inflight_messages": (1, None),
    "max_inflight_bytes": (1, None),
    "max_message_bytes": (1, None),
    "max_uncommitted_bytes": (1, None),
    "max_apply_bytes": (1, None),
    "replication_stall_heartbeats": (1, None),
    "snapshot_stall_heartbeats": (1, None),
}


def setting_key(field_name: str) -> str:
    """How the file spells the setting a `NodeConfig` field holds (`raft.` for the
    `[raft]` table's); errors name settings this way."""
    if field_name in RAFT_SETTINGS:
        return f"raft.{field_name}"
    return TOML_KEYS.get(field_name, field_name)


def _check_range(key: str, value: int, lowest: int, highest: int | None) -> None:
    if highest is None and value < lowest:
        raise ConfigError(key, f"must be at least {lowest}, got {value}")
    if highest is not None and not lowest <= value <= highest:
        raise ConfigError(key, f"must be from {lowest} to {highest}, got {value}")


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
    """A validated `NodeConfig` from the file's keys (`raft` holding the `[raft]` table)."""
    values = _without_raft_table(raw)
    _refuse_unknown_keys(values)
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
        if field.name not in values:
            continue
        value = values[field.name]
        if field.type == "int" and type(value) is not int:
            raise ConfigError(setting_key(field.name), f"must be an integer, got {value!r}")
        if field.type == "bool" and type(value) is not bool:
            raise ConfigError(setting_key(field.name), f"must be true or false, got {value!r}")
    config = NodeConfig(**values)
    config.validate()
    return config


def _without_raft_table(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with the `[raft]` table's settings (and the deprecated top-level spelling
    of four of them) as plain keys, checked: an unknown key in the table, a key in
    both places, or a Raft setting that was never a top-level key found there."""
    values = dict(raw)
    table = values.pop("raft", {})
    if not isinstance(table, dict):
        raise ConfigError("raft", f"must be a table of Raft settings, got {table!r}")
    for key in table:
        if key not in RAFT_SETTINGS:
            valid = ", ".join(RAFT_SETTINGS)
            raise ConfigError(f"raft.{key}", f"unknown setting; [raft] takes {valid}")
    for key in sorted(set(values) & set(RAFT_SETTINGS)):
        if key not in DEPRECATED_TOP_LEVEL_RAFT_KEYS:
            raise ConfigError(key, f"belongs in the [raft] table, as raft.{key}")
        if key in table:
            raise ConfigError(
                f"raft.{key}", f"is set both in [raft] and as the top-level {key!r}; keep [raft]'s"
            )
        log.warning(
            "setting %r at the top level is deprecated: move it into the [raft] table (raft.%s)",
            key,
            key,
        )
    return {**values, **table}


def _refuse_unknown_keys(values: dict[str, Any]) -> None:
    fields = {f.name for f in dataclasses.fields(NodeConfig)}
    top_level = sorted({TOML_KEYS.get(name, name) for name in fields - set(RAFT_SETTINGS)})
    known = fields | {"id", "data"}
    unknown = sorted(set(values) - known)
    for key in unknown:
        if key in REMOVED_KEYS:
            raise ConfigError(key, REMOVED_KEYS[key])
    if unknown:
        valid = ", ".join(top_level)
        raise ConfigError(unknown[0], f"unknown setting; valid keys: {valid} and the [raft] table")


def config_to_toml(config: NodeConfig) -> str:
    """The TOML text that `config_from_toml` reads back as `config`."""
    top_level: list[str] = []
    raft = ["", "[raft]"]
    for field in dataclasses.fields(NodeConfig):
        value = getattr(config, field.name)
        if field.name == "members":
            value = ",".join(f"{n}={h}:{p}" for n, (h, p) in sorted(value.items()))
        if field.name in RAFT_SETTINGS:
            raft.append(f"{field.name} = {toml_value(value)}")
        else:
            top_level.append(f"{TOML_KEYS.get(field.name, field.name)} = {toml_value(value)}")
    return "\n".join(top_level + raft) + "\n"


def toml_value(value: object) -> str:
    """`value` (a bool, an int, a string or a dict of them) as TOML; a dict as an
    inline table."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
