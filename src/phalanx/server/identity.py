"""What a data directory belongs to: the cluster, its members and its service.

Why this exists: Raft's safety rests on every node counting votes and commits against
the same set of voters. If a node restarts with a different `--members` (a typo, a
stale config file, a copy of another node's flags), it counts a different majority:
with `--members 1=...` alone it is a majority of one, elects itself over the data of a
three-node cluster and acknowledges writes the real cluster never sees. So the first
start records the cluster id, the members and the service class in the data
directory (`cluster.json`, written atomically and fsynced before the log is opened),
and every later start must name exactly the same, or the node refuses to start,
naming both. Changing the members is a change to the replicated state itself and goes
through the log (a membership change), never through a flag.

The same holds for the settings that decide outcomes in the service container
(session timeout, session and reply-cache bounds): replaying the same log under other
values would reach another state, so they are recorded and checked too.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from phalanx.core.errors import ConfigError
from phalanx.limits import (
    IDENTITY_BYTES_MAX,
)
from phalanx.server.config import NodeConfig
from phalanx.storage.files import ensure_directory, replace_atomically

IDENTITY_FILE = "cluster.json"
#: Settings that decide what a command's outcome is (see the module docstring).
OUTCOME_SETTINGS = ("session_timeout_ms", "max_sessions", "max_replies_per_session")
IDENTITY_FORMAT = 1


class ClusterIdentity(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: int
    cluster_id: str
    node_id: int
    #: Node id (as a string, JSON's only key type) -> "host:port".
    members: dict[str, str]
    #: MODULE:CLASS of the service the log's commands are meant for.
    service: str
    #: `ContainerLimits` fields that decide outcomes -> value.
    outcome_settings: dict[str, int]

    @classmethod
    def of(cls, config: NodeConfig) -> ClusterIdentity:
        return cls(
            IDENTITY_FORMAT,
            config.cluster_id,
            int(config.node_id),
            {str(n): f"{host}:{port}" for n, (host, port) in sorted(config.members.items())},
            config.service,
            {name: int(getattr(config, name)) for name in OUTCOME_SETTINGS},
        )

    def describe_cluster(self) -> str:
        """What every node of one cluster must share, for peers to compare. Not the node
        id, nor the addresses, nor the service's name: a replica running other code than
        the others (a bad deploy, the faulty replica of `phalanx demo faulty`) is what
        the digest checkpoints exist to catch and name, which they can only do if it
        stays in the cluster."""
        # Member ids, not addresses: how a node reaches its peers is its own business
        # (through proxies, NAT, another interface), who they are is not.
        ids = ",".join(sorted(self.members, key=int))
        settings = ", ".join(f"{k}={v}" for k, v in sorted(self.outcome_settings.items()))
        return f"cluster {self.cluster_id!r}, member ids {ids}, {settings}"

    def describe_members(self) -> str:
        return ",".join(f"{n}={a}" for n, a in sorted(self.members.items(), key=_by_id))


def _by_id(item: tuple[str, str]) -> int:
    return int(item[0])


def check_or_record(config: NodeConfig) -> ClusterIdentity:
    """Records the identity on first start; afterwards refuses a start that differs.

    Raises `ConfigError` naming the setting, what the directory holds and what was given.
    """
    given = ClusterIdentity.of(config)
    data_dir = config.data_dir
    path = data_dir / IDENTITY_FILE
    recorded = read_identity(data_dir)
    if recorded is None:
        held = _data_held(data_dir)
        if held and not config.adopt_identity:
            raise ConfigError(
                "data",
                f"data directory {data_dir} holds a log ({', '.join(held[:3])}) but no "
                f"{IDENTITY_FILE} saying which members it was written with (it was written "
                "by an older phalanx, or the file was deleted). Refusing to start: with other "
                "members than the log's, this node could elect itself over the others' data. "
                "If these ARE the members it was written with, start once with "
                "adopt_identity = true in its config file to record them",
            )
        _write_atomically(path, msgspec.json.format(msgspec.json.encode(given)))
        return given
    if recorded.cluster_id != given.cluster_id:
        raise ConfigError(
            "cluster_id",
            f"data directory {data_dir} belongs to cluster {recorded.cluster_id!r}, "
            f"this start names {given.cluster_id!r}",
        )
    if recorded.node_id != given.node_id:
        raise ConfigError(
            "id",
            f"data directory {data_dir} is node {recorded.node_id}'s, this start names "
            f"node {given.node_id}: give each node its own data directory",
        )
    if recorded.members != given.members:
        raise ConfigError(
            "members",
            f"data directory {data_dir} belongs to a cluster whose members are "
            f"{recorded.describe_members()}, but this start names {given.describe_members()}. "
            "Refusing to start: counting votes against other members than the rest of the "
            "cluster could elect two leaders. Give the recorded members (or fix the typo); "
            "members change only through the log, never by a flag",
        )
    if recorded.service != given.service:
        raise ConfigError(
            "service",
            f"data directory {data_dir} holds the log of service {recorded.service}, "
            f"this start names {given.service}: its commands would be applied by the wrong "
            "code. Give the recorded service, or use a new data directory for a new cluster",
        )
    if recorded.outcome_settings != given.outcome_settings:
        changed = sorted(
            name
            for name in set(recorded.outcome_settings) | set(given.outcome_settings)
            if recorded.outcome_settings.get(name) != given.outcome_settings.get(name)
        )
        raise ConfigError(
            changed[0],
            f"data directory {data_dir} was written with "
            + ", ".join(f"{n}={recorded.outcome_settings.get(n)}" for n in changed)
            + ", this start gives "
            + ", ".join(f"{n}={given.outcome_settings.get(n)}" for n in changed)
            + ": these settings decide commands' outcomes, so replaying the log under other "
            "values would reach another state. Every node of a cluster needs the same ones",
        )
    return recorded


def _data_held(data_dir: Path) -> list[str]:
    """Names of what the directory holds besides the identity file (a fresh node: none)."""
    try:
        return sorted(p.name for p in data_dir.iterdir() if p.name != IDENTITY_FILE)
    except FileNotFoundError:
        return []
    except OSError as error:
        raise ConfigError("data", f"cannot read {data_dir}: {error}") from None


def read_identity(data_dir: Path) -> ClusterIdentity | None:
    """The identity recorded in `data_dir`, or None if there is none yet."""
    path = data_dir / IDENTITY_FILE
    try:
        with path.open("rb") as file:
            data = file.read(IDENTITY_BYTES_MAX + 1)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ConfigError("data", f"cannot read {path}: {error}") from None
    try:
        if len(data) > IDENTITY_BYTES_MAX:
            raise msgspec.ValidationError(f"larger than {IDENTITY_BYTES_MAX} bytes")
        identity = msgspec.json.decode(data, type=ClusterIdentity)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise ConfigError(
            "data",
            f"{path} is damaged or not a phalanx identity file ({error}); it records which "
            "cluster this directory belongs to: restore it rather than delete it",
        ) from None
    if identity.format != IDENTITY_FORMAT:
        raise ConfigError("data", f"{path} has format {identity.format}, not {IDENTITY_FORMAT}")
    return identity


def _write_atomically(path: Path, data: bytes) -> None:
    """After a crash the file is either absent (the next start records it again) or
    whole: the storage layer's temporary file, fsync, rename, fsync of the directory."""
    directory = str(path.parent)
    try:
        ensure_directory(directory)
        directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            replace_atomically(directory, directory_fd, path.name, data)
        finally:
            os.close(directory_fd)
    except OSError as error:
        problem = f"cannot record the cluster identity in {path}: {error}"
        raise ConfigError("data", problem) from None
