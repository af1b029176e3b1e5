"""Inputs a hostile tester tried: a timeout that is NaN, zero or negative (NaN waited
forever); a command JSON allows but msgpack cannot carry (an OverflowError traceback);
a service class that does not exist (called "not a Service subclass"). Each is refused
in one line with exit 2, before anything is started or sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from phalanx.cli import main
from phalanx.core.errors import ConfigError
from phalanx.server.config import load_service_class

#: Nothing listens there: a command that got as far as connecting would fail otherwise.
NOWHERE = "127.0.0.1:1"
BAD_SECONDS = ["nan", "NaN", "inf", "-inf", "0", "-1", "-0.5"]


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line `phalanx ARGV` printed when it exited 2."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert not out and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("value", BAD_SECONDS)
def test_call_refuses_a_timeout_that_is_not_a_positive_number(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(["call", "--members", NOWHERE, f"--timeout={value}", "{}"], capsys)
    assert err.startswith("phalanx call: --timeout must be a positive number of seconds"), err


@pytest.mark.parametrize("value", BAD_SECONDS)
def test_cluster_refuses_a_stop_grace_that_is_not_a_positive_number(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["cluster", "--data", str(tmp_path / "data"), f"--stop-grace-seconds={value}"]
    err = refused(argv, capsys)
    assert "--stop-grace-seconds must be a positive number of seconds" in err, err
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "command", ['{"value": 99999999999999999999999}', '{"value": -99999999999999999999999}']
)
def test_call_refuses_a_command_msgpack_cannot_carry(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(["call", "--members", NOWHERE, command], capsys)
    assert err.startswith("phalanx call: the command cannot be encoded: "), err


def test_call_refuses_json_nested_past_the_recursion_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = refused(["call", "--members", NOWHERE, "[" * 100_000 + "]" * 100_000], capsys)
    assert err.startswith("phalanx call: the command is not JSON"), err


def test_a_missing_service_class_is_named_as_missing() -> None:
    with pytest.raises(ConfigError) as missing:
        load_service_class("phalanx.examples.kv:KeyValu")
    assert missing.value.problem == "module 'phalanx.examples.kv' has no class 'KeyValu'"
    with pytest.raises(ConfigError) as not_a_service:
        load_service_class("phalanx.examples.kv:check_fields")
    assert "is not a phalanx.Service subclass" in not_a_service.value.problem


def test_node_refuses_a_missing_service_class_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    argv = ["node", "--id", "1", "--members", "1=127.0.0.1:7101", "--data", str(data)]
    err = refused([*argv, "--service", "phalanx.examples.kv:KeyValu"], capsys)
    assert "module 'phalanx.examples.kv' has no class 'KeyValu'" in err, err
    assert not data.exists()
