"""Node settings are validated before anything starts, naming the bad setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from phalanx.core.errors import ConfigError
from phalanx.server.config import build_config, config_from_toml, parse_members
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
