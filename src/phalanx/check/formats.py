"""Readers for the three history formats the checker accepts.

- `jepsen`: Jepsen's log lines, `INFO  jepsen.util - 3\t:invoke\t:cas\t[1 4]` (the
  logger prefix is optional; fields are separated by tabs or spaces): process, type,
  function, value. As in the etcd histories this project verifies against, a
  `:fail :cas [a b]` is a compare-and-set that *ran* and found a value other than a,
  and `:info` (usually `:timed-out`) leaves the operation open. A `:fail` whose value
  is an error keyword (`:timed-out`) is not a definite failure: for a read it says
  nothing, for anything else the outcome is treated as unknown.
- `edn`: one EDN map a line, `{:process 3, :type :invoke, :f :append, :key "4",
  :value "x 3 1 y"}`.
- `jsonl`: the project's own format, one JSON object a line,
  `{"process": 3, "type": "invoke", "f": "cas", "key": "k", "value": [1, 2]}`;
  `key` is optional; `fail` means the operation did not take effect.

Events of a `nemesis` process (fault injection, not client operations) are skipped in
every format. Blank lines are skipped. Every other line must parse: a malformed line
is a `CheckError` naming the file and the line.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from phalanx.check import limits
from phalanx.check.edn import Keyword, read_edn, read_edn_prefix
from phalanx.check.errors import CheckError
from phalanx.check.history import Event, EventType, History, Value, build_history, freeze


class Format(enum.Enum):
    JEPSEN = "jepsen"
    EDN = "edn"
    JSONL = "jsonl"


_JEPSEN_LINE = re.compile(
    r"\s*(?:[A-Z]+\s+jepsen\.util\s+-\s+)?(?P<process>\S+)\s+(?P<type>:[a-z]+)"
    r"\s+(?P<f>:[\w-]+)(?:\s+(?P<value>.*?))?\s*"
)
_EVENT_TYPES = {item.value: item for item in EventType}
_NEMESIS = ("nemesis", ":nemesis")


def read_history(path: str | Path, history_format: Format | None = None) -> History:
    """Read a history file; detect its format from the content when not given."""
    return load_history(path, history_format)[0]


def load_history(path: str | Path, history_format: Format | None = None) -> tuple[History, Format]:
    """Read a history file and say which format it was read in."""
    source = str(path)
    try:
        size = Path(path).stat().st_size
        if size > limits.history_bytes_max:
            raise CheckError(f"larger than {limits.history_bytes_max} bytes", path=source)
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CheckError(f"cannot read: {error}", path=source) from error
    chosen = history_format or detect_format(text, source)
    return parse_history(text, source, chosen), chosen


def parse_history(text: str, source: str, history_format: Format | None = None) -> History:
    """Parse history text; `source` names it in errors."""
    chosen = history_format or detect_format(text, source)
    parse_line = _LINE_PARSERS[chosen]
    return build_history(_events(text, source, parse_line), source)


def detect_format(text: str, source: str = "<history>") -> Format:
    """Tell the format from the first non-blank line.

    Each format opens a line differently (`{"` or `{ "`, `{:`, or a Jepsen event), so
    the first line decides reliably; an empty history reads the same in any format.
    """
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("{"):
            rest = stripped[1:].lstrip()
            if rest.startswith('"') or rest.startswith("}"):
                return Format.JSONL
            if rest.startswith(":"):
                return Format.EDN
        elif _JEPSEN_LINE.fullmatch(stripped):
            return Format.JEPSEN
        raise CheckError(
            "cannot tell the format from this line; pass --format jepsen|edn|jsonl",
            path=source,
            line=text.splitlines().index(line) + 1,
        )
    return Format.JSONL


_LineParser = Callable[[str, str, int], Event | None]


def _events(text: str, source: str, parse_line: _LineParser) -> Iterator[Event]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(line) > limits.history_line_bytes_max:
            raise CheckError(
                f"line longer than {limits.history_line_bytes_max} characters",
                path=source,
                line=number,
            )
        try:
            event = parse_line(line, source, number)
        except ValueError as error:
            raise CheckError(str(error), path=source, line=number) from error
        if event is not None:
            yield event


def _parse_jepsen(line: str, source: str, number: int) -> Event | None:
    match = _JEPSEN_LINE.fullmatch(line)
    if match is None:
        raise ValueError("not a Jepsen event line (process :type :f value)")
    process_text = match["process"]
    if process_text in _NEMESIS:
        return None
    process = _jepsen_process(process_text)
    event_type = _event_type(match["type"][1:])
    f = match["f"][1:]
    raw = read_edn(match["value"]) if match["value"] else None
    refused = False
    if event_type is EventType.FAIL and isinstance(raw, Keyword):
        # An error keyword is not a definite "did not happen": a read learned nothing
        # (dropping it is exact), anything else may or may not have taken effect.
        event_type = EventType.FAIL if f == "read" else EventType.INFO
    elif event_type is EventType.FAIL and f == "cas":
        refused = True
    value = None if isinstance(raw, Keyword) and event_type is not EventType.INVOKE else raw
    return Event(process, event_type, f, None, freeze(value), number, line.rstrip(), refused)


def _jepsen_process(text: str) -> Value:
    if text.lstrip("-").isdigit():
        return int(text)
    value, rest = read_edn_prefix(text)
    if rest.strip():
        raise ValueError(f"bad process {text!r}")
    return freeze(value)


def _parse_edn(line: str, source: str, number: int) -> Event | None:
    raw = read_edn(line)
    if not isinstance(raw, dict):
        raise ValueError("expected an EDN map {:process ..., :type ..., :f ...}")
    fields = {str(key).removeprefix(":"): value for key, value in raw.items()}
    return _event_from_fields(fields, line, number)


_JSON_DECODER = msgspec.json.Decoder()


def _parse_jsonl(line: str, source: str, number: int) -> Event | None:
    try:
        raw = _JSON_DECODER.decode(line)
    except msgspec.DecodeError as error:
        raise ValueError(f"not JSON: {error}") from error
    if not isinstance(raw, dict):
        raise ValueError('expected a JSON object {"process": ..., "type": ..., "f": ...}')
    return _event_from_fields(raw, line, number)


def _event_from_fields(fields: dict[str, object], line: str, number: int) -> Event | None:
    for name in ("process", "type", "f"):
        if name not in fields:
            raise ValueError(f"missing field {name!r}")
    process = fields["process"]
    if isinstance(process, str) and process in _NEMESIS:
        return None
    if not isinstance(process, int | str) or isinstance(process, bool):
        raise ValueError(f"process must be an integer or a name, not {process!r}")
    f = fields["f"]
    if not isinstance(f, str) or not f.removeprefix(":"):
        raise ValueError(f"f must be a name such as 'read', not {f!r}")
    event_type = fields["type"]
    if not isinstance(event_type, str):
        raise ValueError(f"type must be invoke, ok, fail or info, not {event_type!r}")
    return Event(
        process=freeze(process),
        type=_event_type(event_type.removeprefix(":")),
        f=f.removeprefix(":"),
        key=freeze(fields.get("key")),
        value=freeze(fields.get("value")),
        line=number,
        text=line.rstrip(),
    )


def _event_type(name: str) -> EventType:
    event_type = _EVENT_TYPES.get(name)
    if event_type is None:
        raise ValueError(f"type must be invoke, ok, fail or info, not {name!r}")
    return event_type


_LINE_PARSERS: dict[Format, _LineParser] = {
    Format.JEPSEN: _parse_jepsen,
    Format.EDN: _parse_edn,
    Format.JSONL: _parse_jsonl,
}
