"""Node settings are validated before anything starts, naming the bad setting."""

from __future__ import annotations

import dataclasses
import logging
import tomllib
from pathlib import Path

import pytest

from phalanx.core.errors import ConfigError
from phalanx.core.raft import RaftConfig
from phalanx.core.types import NodeId
from phalanx.server.config import (
    DEPRECATED_TOP_LEVEL_RAFT_KEYS,
    INTEGER_RANGES,
    RAFT_SETTINGS,
    REMOVED_KEYS,
    NodeConfig,
    build_config,
    config_from_toml,
    config_to_toml,
    parse_members,
)
from phalanx.transport.addresses import client_addresses

GOOD = {
    "id": 1,
    "members": "1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103",
    "data": "/tmp/x",
    "service": "phalanx.examples.kv:KeyValue",
}


def test_good_config() -> None:
    config = build_config(dict(GOOD))
    assert config.node_id == 1 and config.address == ("127.0.0.1", 7101)


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"id": 9}, "id"),
        ({"id": "one"}, "id"),
        ({"members": "1=127.0.0.1"}, "members"),
        ({"members": "1=a:1,1=b:2"}, "members"),
        ({"members": "1=h:1,2=h:1"}, "members"),
        ({"service": "nope.nothing:Thing"}, "service"),
        ({"service": "phalanx.examples.kv"}, "service"),
        ({"service": "phalanx.examples.kv:KEYS_MAX"}, "service"),
        ({"tick_ms": 0}, "tick_ms"),
        ({"tick_ms": "fast"}, "tick_ms"),
        ({"colour": "blue"}, "colour"),
        ({"data": ""}, "data"),
    ],
)
def test_bad_setting_is_named(change: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigError) as error:
        build_config({**GOOD, **change})
    assert error.value.setting == setting
    assert setting in str(error.value)


def test_toml_file_with_members_table(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        'id = 2\ndata = "/tmp/y"\nservice = "phalanx.examples.bank:Bank"\n'
        '[members]\n1 = "127.0.0.1:7101"\n2 = "127.0.0.1:7102"\n'
    )
    config = config_from_toml(path, {})
    assert config.node_id == 2 and set(config.members) == {1, 2}


def test_unreadable_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("id = = 2")
    with pytest.raises(ConfigError, match="cannot read"):
        config_from_toml(path, {})


def test_member_forms() -> None:
    assert parse_members("1=h:1, 2=h:2") == {1: ("h", 1), 2: ("h", 2)}
    assert client_addresses(["h:1", "h:2"]) == [("h", 1), ("h", 2)]
    assert client_addresses("1=h:1,2=h:2") == [("h", 1), ("h", 2)]
    with pytest.raises(ConfigError):
        client_addresses("")


# -- the [raft] table -----------------------------------------------------------------

TOML_HEAD = (
    'id = 1\ndata = "/tmp/x"\nservice = "phalanx.examples.kv:KeyValue"\n'
    'members = "1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103"\n'
)


def test_node_config_has_a_field_for_every_raft_setting() -> None:
    """A setting added to `RaftConfig` is an operator's setting at once, or this fails."""
    fields = {f.name: f for f in dataclasses.fields(NodeConfig)}
    core_defaults = {f.name: f.default for f in dataclasses.fields(RaftConfig)}
    assert set(RAFT_SETTINGS) == set(core_defaults) - {"node_id", "voters"}
    # The node's ticks are 10 ms; the core's defaults count the simulator's ticks.
    own_defaults = {"election_timeout_ticks", "heartbeat_interval_ticks"}
    for name in RAFT_SETTINGS:
        assert name in fields, name
        if name not in own_defaults:
            assert fields[name].default == core_defaults[name], name


def test_every_integer_setting_has_a_range() -> None:
    integers = {f.name for f in dataclasses.fields(NodeConfig) if f.type == "int"}
    assert integers == set(INTEGER_RANGES)


def test_raft_config_carries_every_setting_of_the_raft_table(tmp_path: Path) -> None:
    changed = {
        "election_timeout_ticks": 40,
        "heartbeat_interval_ticks": 4,
        "max_inflight_messages": 17,
        "max_inflight_bytes": 1 << 20,
        "max_message_bytes": 1 << 21,
        "max_uncommitted_bytes": 1 << 22,
        "max_apply_bytes": 1 << 19,
        "replication_stall_heartbeats": 5,
        "snapshot_stall_heartbeats": 50,
        "pre_vote": False,
        "check_quorum": False,
        "broadcast_commit": True,
    }
    assert set(changed) == set(RAFT_SETTINGS)
    path = tmp_path / "node.toml"
    table = "".join(f"{key} = {str(value).lower()}\n" for key, value in changed.items())
    path.write_text(TOML_HEAD + "[raft]\n" + table)
    config = config_from_toml(path, {"id": 2})
    raft = config.raft_config()
    assert raft == RaftConfig(
        node_id=NodeId(2), voters=(NodeId(1), NodeId(2), NodeId(3)), **changed
    )
    raft.validate()
    assert build_config(dict(GOOD)).raft_config().election_timeout_ticks == 15


def test_config_to_toml_writes_the_raft_table_and_reads_back(tmp_path: Path) -> None:
    config = build_config({**GOOD, "raft": {"max_inflight_bytes": 4096, "pre_vote": False}})
    text = config_to_toml(config)
    assert "\n[raft]\nelection_timeout_ticks = 15\n" in text
    assert tomllib.loads(text)["raft"]["max_inflight_bytes"] == 4096
    path = tmp_path / "node.toml"
    path.write_text(text)
    assert config_from_toml(path, {}) == config


def test_the_old_top_level_spelling_still_works_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="phalanx.server.config"):
        config = build_config({**GOOD, "election_timeout_ticks": 40, "max_message_bytes": 4 << 20})
    assert config.raft_config().election_timeout_ticks == 40
    assert config.max_message_bytes == 4 << 20
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert "'election_timeout_ticks' at the top level is deprecated" in warned
    assert "raft.max_message_bytes" in warned
    assert set(DEPRECATED_TOP_LEVEL_RAFT_KEYS) < set(RAFT_SETTINGS)


@pytest.mark.parametrize(
    ("change", "setting", "problem"),
    [
        (
            {"election_timeout_ticks": 20, "raft": {"election_timeout_ticks": 30}},
            "raft.election_timeout_ticks",
            "both in [raft] and as the top-level 'election_timeout_ticks'",
        ),
        ({"raft": {"election_timeout": 30}}, "raft.election_timeout", "[raft] takes "),
        ({"max_apply_bytes": 5}, "max_apply_bytes", "belongs in the [raft] table"),
        ({"raft": 5}, "raft", "must be a table"),
        ({"raft": {"max_inflight_bytes": 0}}, "raft.max_inflight_bytes", "at least 1, got 0"),
        ({"raft": {"pre_vote": "yes"}}, "raft.pre_vote", "must be true or false"),
        ({"raft": {"max_apply_bytes": 1.5}}, "raft.max_apply_bytes", "must be an integer"),
        (
            {"raft": {"election_timeout_ticks": 3, "heartbeat_interval_ticks": 3}},
            "raft.election_timeout_ticks",
            "must exceed raft.heartbeat_interval_ticks (3), got 3",
        ),
        ({"snapshot_chunk_bytes": 1 << 30}, "snapshot_chunk_bytes", "from 1 to 67108864"),
        ({"auto_repair": 1}, "auto_repair", "must be true or false"),
        ({"max_commit_wait_ms": -1}, "max_commit_wait_ms", "at least 0, got -1"),
    ],
)
def test_a_bad_raft_setting_names_the_key_and_the_valid_values(
    change: dict[str, object], setting: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as error:
        build_config({**GOOD, **change})
    assert error.value.setting == setting
    assert problem in error.value.problem


def test_an_unknown_key_in_raft_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as error:
        build_config({**GOOD, "raft": {"prevote": True}})
    assert all(name in error.value.problem for name in RAFT_SETTINGS)
    with pytest.raises(ConfigError) as error:
        build_config({**GOOD, "colour": "blue"})
    assert "tick_ms" in error.value.problem and "[raft]" in error.value.problem


def test_a_file_with_unsafe_local_reads_is_refused_and_told_where_it_went(
    tmp_path: Path,
) -> None:
    # The deliberately stale read path left the node for `phalanx chaos` (chaos/stale_reads.py).
    assert "unsafe_local_reads" not in {f.name for f in dataclasses.fields(NodeConfig)}
    path = tmp_path / "node.toml"
    path.write_text(
        'id = 1\nmembers = "1=127.0.0.1:7101"\ndata = "/tmp/x"\n'
        'service = "phalanx.examples.kv:KeyValue"\nunsafe_local_reads = false\n'
    )
    with pytest.raises(ConfigError) as error:
        config_from_toml(path, {})
    assert error.value.setting == "unsafe_local_reads"
    assert "phalanx chaos --unsafe-local-reads" in str(error.value)
    assert "delete the key" in error.value.problem
    assert set(REMOVED_KEYS).isdisjoint(f.name for f in dataclasses.fields(NodeConfig))
