"""`phalanx check`: exit codes 0 (linearizable), 1 (not), 2 (unknown), 3 (bad input)."""

from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path

import pytest

import phalanx.cli
from phalanx.check import cli

PORCUPINE = Path(__file__).resolve().parents[2] / ".." / "shared" / "verification" / "porcupine"
CHECK_SOURCES = Path(__file__).resolve().parents[2] / "src" / "phalanx" / "check"


def run(*argv: str) -> int:
    # The same wiring as the `phalanx` command: `register` adds the subcommand and
    # sets `func`, which returns the exit code.
    parser = argparse.ArgumentParser(prog="phalanx")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["check", *argv])
    code: int = args.func(args)
    return code


def write_jsonl(path: Path, events: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    return path


def register_history(path: Path, seen: int) -> Path:
    return write_jsonl(
        path,
        [
            {"process": 1, "type": "invoke", "f": "write", "value": 1},
            {"process": 1, "type": "ok", "f": "write", "value": 1},
            {"process": 2, "type": "invoke", "f": "read", "value": None},
            {"process": 2, "type": "ok", "f": "read", "value": seen},
        ],
    )


def test_linearizable_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = register_history(tmp_path / "good.jsonl", seen=1)
    assert run(str(path), "--model", "register") == cli.EXIT_LINEARIZABLE
    assert ": linearizable (model register" in capsys.readouterr().out


def test_not_linearizable_exits_1_with_an_excerpt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = register_history(tmp_path / "bad.jsonl", seen=7)
    assert run(str(path), "--model", "register", "--format", "jsonl") == 1
    out = capsys.readouterr().out
    assert "not linearizable" in out
    assert "First operation that cannot be placed: process 2 read -> 7, lines 3-4" in out
    assert "could hold: 1" in out
    assert '> 4  {"process": 2, "type": "ok", "f": "read", "value": 7}' in out


def test_unknown_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    writers = 18
    events: list[dict[str, object]] = []
    events += [{"process": p, "type": "invoke", "f": "write", "value": p} for p in range(writers)]
    events += [{"process": p, "type": "ok", "f": "write", "value": p} for p in range(writers)]
    events += [
        {"process": writers, "type": "invoke", "f": "read", "value": None},
        {"process": writers, "type": "ok", "f": "read", "value": -1},
    ]
    path = write_jsonl(tmp_path / "hard.jsonl", events)
    assert run(str(path), "--model", "register", "--budget-seconds", "0") == cli.EXIT_UNKNOWN
    assert "unknown" in capsys.readouterr().out


def test_reference_logs_with_detected_formats(capsys: pytest.CaptureFixture[str]) -> None:
    assert PORCUPINE.is_dir(), f"reference histories missing: {PORCUPINE.resolve()} not found"
    assert run(str(PORCUPINE / "jepsen" / "etcd_002.log"), "--model", "cas-register") == 0
    assert run(str(PORCUPINE / "jepsen" / "etcd_000.log"), "--model", "cas-register") == 1
    # EDN key-value histories: keys start as "" without being told.
    assert run(str(PORCUPINE / "kv" / "c01-ok.txt"), "--model", "kv") == 0
    assert run(str(PORCUPINE / "kv" / "c01-bad.txt"), "--model", "kv") == 1
    capsys.readouterr()


def test_bank_takes_initial_balances(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "bank.jsonl",
        [
            {"process": 1, "type": "invoke", "f": "transfer", "value": ["a", "b", 5]},
            {"process": 1, "type": "ok", "f": "transfer", "value": ["a", "b", 5]},
            {"process": 2, "type": "invoke", "f": "read", "value": None},
            {"process": 2, "type": "ok", "f": "read", "value": {"a": 5, "b": 15}},
        ],
    )
    assert run(str(path), "--model", "bank", "--initial", '{"a": 10, "b": 10}') == 0
    assert run(str(path), "--model", "bank", "--initial", '{"a": 20, "b": 0}') == 1


@pytest.mark.parametrize(
    ("content", "options", "message"),
    [
        ('{"process": 1, "type": "invoke", "f": "read"}\nnonsense\n', [], r"h\.jsonl:2: not JSON"),
        ('{"process": 1, "type": "ok", "f": "read"}\n', [], r"h\.jsonl:1: .*never invoked"),
        (
            '{"process": 1, "type": "invoke", "f": "cas", "value": [1, 2]}\n',
            [],
            r"h\.jsonl:1: model register has no operation 'cas'",
        ),
        ("", ["--model", "bank"], r"the bank model needs --initial"),
        ("", ["--initial", "{nope"], r"--initial is not JSON"),
        ("", ["--budget-seconds", "-1"], r"--budget-seconds must not be negative"),
    ],
)
def test_bad_input_exits_3_naming_file_and_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    options: list[str],
    message: str,
) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(content)
    model = [] if "--model" in options else ["--model", "register"]
    assert run(str(path), *model, *options) == cli.EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.startswith("phalanx check: ")
    assert re.search(message, error), error


def test_bad_input_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.jsonl"
    assert run(str(missing), "--model", "kv") == cli.EXIT_BAD_INPUT
    assert "nowhere.jsonl: cannot read" in capsys.readouterr().err


def test_check_imports_nothing_else_of_phalanx() -> None:
    for source in sorted(CHECK_SOURCES.glob("*.py")):
        tree = ast.parse(source.read_text(), str(source))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name == "phalanx" or name.startswith("phalanx."):
                    assert name.startswith("phalanx.check"), f"{source.name} imports {name}"


def test_through_the_phalanx_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = register_history(tmp_path / "good.jsonl", seen=1)
    bad = register_history(tmp_path / "bad.jsonl", seen=2)
    assert phalanx.cli.main(["check", str(good), "--model", "register"]) == 0
    assert phalanx.cli.main(["check", str(bad), "--model", "register"]) == 1
    capsys.readouterr()
