"""What a newcomer reads first (issue 11, item 7): `import phalanx` gives the client,
its errors and `Service`; `phalanx --version`; every flag of every command names its
default in `--help`; every key of a node's TOML file is in docs/configuration.md,
with its default, and every key a node no longer reads as removed."""

from __future__ import annotations

import argparse
import dataclasses
import re
import tomllib
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import phalanx
import phalanx.client
import phalanx.client.errors
import phalanx.service
from phalanx.cli import HelpFormatter, build_parser, help_with_default
from phalanx.server.config import RAFT_SETTINGS, REMOVED_KEYS, NodeConfig, setting_key

from .helpers import PHALANX_MODULE, run

CONFIGURATION_DOC = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_the_package_exports_the_clients_their_errors_and_service() -> None:
    assert phalanx.Client is phalanx.client.Client
    assert phalanx.AsyncClient is phalanx.client.AsyncClient
    assert phalanx.Service is phalanx.service.Service
    assert phalanx.error_reply is phalanx.service.error_reply
    for name in (
        "ClientError",
        "ClusterUnavailableError",
        "OutcomeUnknownError",
        "RequestRejectedError",
        "SessionExpiredError",
    ):
        assert getattr(phalanx, name) is getattr(phalanx.client.errors, name)
        assert name in phalanx.__all__
    assert phalanx.__all__ == sorted(phalanx.__all__)
    assert all(hasattr(phalanx, name) for name in phalanx.__all__)


def test_phalanx_version_is_the_installed_package_version() -> None:
    result = run([*PHALANX_MODULE, "--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"phalanx {version('phalanx')}"
    assert phalanx.__version__ == version("phalanx")


def parsers(
    parser: argparse.ArgumentParser, name: str = "phalanx"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the command, with the command line that reaches it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, subparser in action.choices.items():
                yield from parsers(subparser, f"{name} {command}")


def test_every_flag_of_every_command_names_its_default() -> None:
    missing = []
    commands = dict(parsers(build_parser()))
    assert {"phalanx node", "phalanx cluster", "phalanx status", "phalanx call"} <= set(commands)
    assert {"phalanx bench latency", "phalanx learn state-machines", "phalanx chaos"} <= set(
        commands
    )
    for command, parser in commands.items():
        parser.format_help()  # every %(default)s expands
        # `phalanx check` imports nothing else of phalanx, so keeps argparse's formatter:
        # its flags must name their defaults themselves.
        shows_defaults = issubclass(parser.formatter_class, HelpFormatter)  # type: ignore[arg-type]
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            shown = help_with_default(action) if shows_defaults else action.help or ""
            if not action.required and "default" not in shown:
                missing.append(f"{command} {action.option_strings[0]}")
    assert not missing, f"flags whose help does not name a default: {missing}"


def test_a_flag_registered_without_help_still_shows_its_default() -> None:
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--keep", action="store_true", help="keep the data")
    text = " ".join(parser.format_help().split())
    assert "--value-bytes VALUE_BYTES (default: 100)" in text
    assert "keep the data (default: off)" in text


def documented_keys() -> dict[str, str]:
    """key -> default cell of the tables in docs/configuration.md (`raft.KEY` for the
    [raft] table's)."""
    rows = re.findall(r"^\| `([\w.]+)` \| ([^|]+) \|", CONFIGURATION_DOC.read_text(), re.MULTILINE)
    return {key: default.strip() for key, default in rows}


def test_every_node_setting_is_documented_with_its_default() -> None:
    documented = documented_keys()
    expected = {}
    for field in dataclasses.fields(NodeConfig):
        key = setting_key(field.name)
        expected[key] = field.default
        assert key in documented, f"docs/configuration.md does not list {key!r}"
    for key in REMOVED_KEYS:
        assert documented.pop(key, None) == "removed", f"docs do not list {key!r} as removed"
    assert sorted(documented) == sorted(expected), "docs list keys NodeConfig does not have"
    for key, default in expected.items():
        cell = documented[key]
        if default is dataclasses.MISSING:
            assert cell == "required", (key, cell)
        else:
            value = tomllib.loads(f"value = {cell.strip('`')}")["value"]
            assert value == default, f"docs give {key} = {cell}, NodeConfig {default!r}"


def test_the_raft_table_is_documented_and_the_doc_example_is_valid_toml() -> None:
    documented = documented_keys()
    assert {f"raft.{name}" for name in RAFT_SETTINGS} <= set(documented)
    text = CONFIGURATION_DOC.read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    assert set(tomllib.loads(example)["raft"]) <= set(RAFT_SETTINGS)
