"""Reading histories: the three formats, format detection, pairing, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from phalanx.check import (
    CheckError,
    Format,
    Outcome,
    detect_format,
    parse_history,
    read_history,
)
from phalanx.check.edn import Keyword, read_edn

JEPSEN = """\
INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - 1\t:invoke\t:cas\t[1 4]
INFO  jepsen.util - 0\t:ok\t:read\tnil
INFO  jepsen.util - 1   :fail   :cas    [1 4]
INFO  jepsen.util - 2  :invoke :write  3
INFO  jepsen.util - 3\t:invoke\t:read\tnil
INFO  jepsen.util - 2\t:info\t:write\t:timed-out
INFO  jepsen.util - 3\t:fail\t:read\t:timed-out
INFO  jepsen.util - 4\t:invoke\t:write\t1
"""


def test_jepsen_lines_pair_into_operations() -> None:
    ops = parse_history(JEPSEN, "etcd.log").operations
    assert [(op.process, op.f, op.outcome) for op in ops] == [
        (0, "read", Outcome.OK),
        (1, "cas", Outcome.OK),
        (2, "write", Outcome.INFO),
        (3, "read", Outcome.FAIL),
        (4, "write", Outcome.INFO),  # still open at the end: unknown
    ]
    read, cas, write, _, open_write = ops
    assert read.result is None and read.ret is not None
    # `:fail :cas` ran and found another value: a definite, negative answer.
    assert cas.refused and cas.argument == (1, 4)
    assert write.argument == 3 and write.ret is None
    assert open_write.completion is None
    assert (read.invoke.line, read.completion and read.completion.line) == (1, 3)


def test_jepsen_prefix_is_optional_and_nemesis_is_skipped() -> None:
    text = "0 :invoke :write 2\n:nemesis :info :start nil\n0 :ok :write 2\n"
    ops = parse_history(text, "bare.log", Format.JEPSEN).operations
    assert len(ops) == 1 and ops[0].argument == 2 and ops[0].outcome is Outcome.OK


def test_edn_lines() -> None:
    text = (
        '{:process 3, :type :invoke, :f :append, :key "4", :value "x 3 1 y"}\n'
        '{:process 3, :type :ok, :f :append, :key "4", :value "x 3 1 y"}\n'
        '{:process 1, :type :invoke, :f :get, :key "4", :value nil}\n'
        '{:process 1, :type :ok, :f :get, :key "4", :value "x 3 1 y"}\n'
    )
    assert detect_format(text) is Format.EDN
    append, get = parse_history(text, "kv.txt").operations
    assert (append.f, append.key, append.argument) == ("append", "4", "x 3 1 y")
    assert (get.f, get.argument, get.result) == ("get", None, "x 3 1 y")


def test_jsonl_lines() -> None:
    text = (
        '{"process": 1, "type": "invoke", "f": "cas", "key": "k", "value": [1, 2]}\n'
        "\n"
        '{"process": 1, "type": "ok", "f": "cas", "key": "k", "value": [1, 2], "time": 5}\n'
        '{"process": 2, "type": "invoke", "f": "write", "value": 7}\n'
        '{"process": 2, "type": "fail", "f": "write", "value": 7}\n'
    )
    assert detect_format(text) is Format.JSONL
    cas, write = parse_history(text, "h.jsonl").operations
    assert cas.key == "k" and cas.argument == (1, 2) and cas.outcome is Outcome.OK
    assert not cas.refused
    assert write.outcome is Outcome.FAIL and write.key is None


def test_values_are_frozen_so_models_can_hash_them() -> None:
    text = (
        '{"process": 1, "type": "invoke", "f": "read", "value": null}\n'
        '{"process": 1, "type": "ok", "f": "read", "value": {"a": [1, 2], "b": 3}}\n'
    )
    (read,) = parse_history(text, "h.jsonl").operations
    assert read.result == frozenset({("a", (1, 2)), ("b", 3)})
    hash(read.result)


def test_detect_format_of_each_kind_and_of_nothing() -> None:
    assert detect_format(JEPSEN) is Format.JEPSEN
    assert detect_format("\n\n") is Format.JSONL  # empty reads the same in any format
    with pytest.raises(CheckError, match=r"h\.txt:2: cannot tell the format"):
        detect_format("\nhello world\n", "h.txt")


def test_empty_file_is_an_empty_history(tmp_path: Path) -> None:
    path = tmp_path / "empty.log"
    path.write_text("")
    assert read_history(path).operations == ()


@pytest.mark.parametrize(
    ("text", "history_format", "message"),
    [
        ("0 :invoke :write 1\nnot an event\n", Format.JEPSEN, r"h:2: not a Jepsen event"),
        ("0 :invoke :write [1 2\n", Format.JEPSEN, r"h:1: missing"),
        ('{"process": 1, "type": "invoke"\n', Format.JSONL, r"h:1: not JSON"),
        ('{"process": 1, "f": "read"}\n', Format.JSONL, r"h:1: missing field 'type'"),
        ('{"process": 1, "type": "done", "f": "read"}\n', Format.JSONL, r"h:1: type must"),
        ("[1 2]\n", Format.EDN, r"h:1: expected an EDN map"),
        ('{"process": 1, "type": "ok", "f": "read"}\n', None, r"h:1: .*never invoked"),
        (
            '{"process": 1, "type": "invoke", "f": "read"}\n'
            '{"process": 1, "type": "invoke", "f": "read"}\n',
            None,
            r"h:2: process 1 invokes again while its operation from line 1",
        ),
        (
            '{"process": 1, "type": "invoke", "f": "read"}\n'
            '{"process": 1, "type": "ok", "f": "write"}\n',
            None,
            r"h:2: completion of 'write' does not match",
        ),
    ],
)
def test_malformed_input_names_file_and_line(
    text: str, history_format: Format | None, message: str
) -> None:
    with pytest.raises(CheckError, match=message):
        parse_history(text, "h", history_format)


def test_unreadable_file_is_a_check_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(CheckError, match=r"missing\.jsonl: cannot read"):
        read_history(missing)


def test_info_completion_frees_the_process_for_a_new_invocation() -> None:
    text = (
        '{"process": 1, "type": "invoke", "f": "write", "value": 1}\n'
        '{"process": 1, "type": "info", "f": "write", "value": 1}\n'
        '{"process": 1, "type": "invoke", "f": "read", "value": null}\n'
        '{"process": 1, "type": "ok", "f": "read", "value": 1}\n'
    )
    write, read = parse_history(text, "h").operations
    assert write.outcome is Outcome.INFO and write.ret is None
    assert write.completion is not None and write.completion.line == 2
    assert read.call > write.call


def test_edn_reader_values() -> None:
    assert read_edn('{:a [1 -2 3.5], "s" "q\\"x", :b #{nil true}, :c (x)}') == {
        Keyword(":a"): (1, -2, 3.5),
        "s": 'q"x',
        Keyword(":b"): frozenset({None, True}),
        Keyword(":c"): ("x",),
    }
    with pytest.raises(ValueError, match="unterminated string"):
        read_edn('"abc')
    with pytest.raises(ValueError, match="unexpected text"):
        read_edn("1 2")
    with pytest.raises(ValueError, match="nested deeper"):
        read_edn("[" * 100 + "]" * 100)


def test_jepsen_fail_meanings() -> None:
    text = (
        "1 :invoke :write 1\n1 :fail :write 1\n"  # did not happen
        "2 :invoke :cas [1 2]\n2 :fail :cas :timed-out\n"  # an error, not an answer
    )
    write, cas = parse_history(text, "h.log").operations
    assert write.outcome is Outcome.FAIL
    assert cas.outcome is Outcome.INFO and not cas.refused
