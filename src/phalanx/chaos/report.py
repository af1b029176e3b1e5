"""`report.html`: one self-contained page (HTML and inline SVG, no external assets).

Theory of operation
-------------------
The page has, top to bottom: the verdict and every check; the run's numbers; a
timeline with one lane per client, each operation a bar from its invocation to its
completion coloured by outcome (ok green, fail red, info orange; an info bar ends
where the client gave up, although the operation may take effect later), with the
fault periods shaded across all lanes and labelled; a latency-over-time plot
(completion time against latency on a log scale, the same colours, the same
shading); the table of faults; and, when the checker found a violation, its
report with the excerpt of the history.

Each operation's bar and point carries a `<title>`, so hovering shows it. At most
`DRAWN_OPS_MAX` operations are drawn (the first ones); the page says when it cut.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phalanx.chaos.nemesis import FaultRecord
from phalanx.chaos.recorder import HistoryEvent

DRAWN_OPS_MAX = 20_000
WIDTH = 1200
LEFT = 80
RIGHT = 20
COLOURS = {"ok": "#2e7d32", "fail": "#c62828", "info": "#ef6c00", "open": "#757575"}
FAULT_COLOURS = {
    "kill": "#f8d7da",
    "pause": "#fff3cd",
    "partition": "#d6e4f5",
    "restart": "#e8d5f0",
    "exit": "#bdbdbd",
}
STATUS_COLOURS = {"pass": "#2e7d32", "fail": "#c62828", "unknown": "#ef6c00"}


@dataclass(frozen=True, slots=True)
class DrawnOp:
    lane: int
    process: int | str
    f: str
    key: str | None
    argument: Any
    outcome: str
    result: Any
    start_s: float
    end_s: float

    def title(self) -> str:
        key = f" {self.key}" if self.key is not None else ""
        argument = "" if self.argument is None else f" {_short(self.argument)}"
        result = (
            f" -> {_short(self.result)}"
            if self.outcome == "ok"
            and self.f
            in (
                "get",
                "read",
            )
            else ""
        )
        latency = (self.end_s - self.start_s) * 1000
        return (
            f"process {self.process}: {self.f}{key}{argument} {self.outcome}{result} "
            f"at {self.start_s:.3f}s, {latency:.1f} ms"
        )


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def pair_operations(events: Iterable[HistoryEvent], end_s: float) -> list[DrawnOp]:
    """Invocations paired with completions; ops never completed end at `end_s`."""
    open_ops: dict[int | str, HistoryEvent] = {}
    ops: list[DrawnOp] = []
    for event in events:
        if event.process == "nemesis":
            continue
        if event.type == "invoke":
            open_ops[event.process] = event
            continue
        invoke = open_ops.pop(event.process, None)
        if invoke is not None:
            ops.append(_drawn(invoke, event.type, event.value, event.time))
    ops.extend(_drawn(invoke, "open", None, end_s) for invoke in open_ops.values())
    ops.sort(key=lambda op: op.start_s)
    return ops


def _drawn(invoke: HistoryEvent, outcome: str, result: Any, end_s: float) -> DrawnOp:
    lane = invoke.client if invoke.client is not None else 0
    return DrawnOp(
        lane, invoke.process, invoke.f, invoke.key, invoke.value, outcome, result,
        invoke.time, max(end_s, invoke.time),
    )  # fmt: skip


class _Axis:
    """Maps seconds to x pixels."""

    def __init__(self, end_s: float) -> None:
        self.end_s = max(end_s, 1e-3)
        self.span = WIDTH - LEFT - RIGHT

    def x(self, seconds: float) -> float:
        return LEFT + self.span * min(max(seconds, 0.0), self.end_s) / self.end_s

    def ticks(self) -> list[float]:
        step = _nice_step(self.end_s / 10)
        return [i * step for i in range(int(self.end_s / step) + 1)]


def _nice_step(raw: float) -> float:
    magnitude = 10.0 ** math.floor(math.log10(max(raw, 1e-9)))
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _fault_shading(faults: Sequence[FaultRecord], axis: _Axis, top: float, height: float) -> str:
    parts = []
    for fault in faults:
        x0 = axis.x(fault.start_s)
        x1 = axis.x(fault.end_s if fault.end_s is not None else axis.end_s)
        colour = FAULT_COLOURS.get(fault.kind, "#eeeeee")
        label = html.escape(fault.description)
        parts.append(
            f'<rect x="{x0:.1f}" y="{top:.1f}" width="{max(x1 - x0, 1):.1f}" '
            f'height="{height:.1f}" fill="{colour}"><title>{label} '
            f"({fault.start_s:.1f}s to {fault.end_s or axis.end_s:.1f}s)</title></rect>"
        )
    return "".join(parts)


def _fault_labels(faults: Sequence[FaultRecord], axis: _Axis, y: float) -> str:
    parts = []
    for number, fault in enumerate(faults):
        x0 = axis.x(fault.start_s)
        names = ",".join(map(str, fault.nodes))
        noun = "node" if len(fault.nodes) == 1 else "nodes"
        row = y + (number % 2) * 12
        label = html.escape(f"{fault.kind}: {noun} {names}")
        parts.append(f'<text x="{x0 + 2:.1f}" y="{row:.1f}" class="flabel">{label}</text>')
    return "".join(parts)


def _time_axis(axis: _Axis, y: float) -> str:
    parts = [f'<line x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}" class="axis"/>']
    for tick in axis.ticks():
        x = axis.x(tick)
        parts.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" class="axis"/>')
        parts.append(f'<text x="{x:.1f}" y="{y + 16}" class="tick">{tick:g}s</text>')
    return "".join(parts)


def timeline_svg(
    ops: Sequence[DrawnOp],
    faults: Sequence[FaultRecord],
    lanes: int,
    end_s: float,
    culprit_s: float | None = None,
) -> str:
    """`culprit_s`: when the checker's first unplaceable operation completed."""
    axis = _Axis(end_s)
    lane_h = max(10.0, min(26.0, 420.0 / max(lanes, 1)))
    top = 34.0
    height = top + lanes * lane_h + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
        f'viewBox="0 0 {WIDTH} {height:.0f}">',
        _fault_shading(faults, axis, top - 4, lanes * lane_h + 4),
        _fault_labels(faults, axis, 12),
    ]
    for lane in range(lanes):
        y = top + lane * lane_h
        name = f"client {lane}" if lane < lanes - 1 else "final reads"
        parts.append(f'<text x="{LEFT - 6}" y="{y + lane_h * 0.7:.1f}" class="lane">{name}</text>')
        parts.append(
            f'<line x1="{LEFT}" y1="{y + lane_h:.1f}" x2="{WIDTH - RIGHT}" '
            f'y2="{y + lane_h:.1f}" class="grid"/>'
        )
    for op in ops:
        x0, x1 = axis.x(op.start_s), axis.x(op.end_s)
        y = top + op.lane * lane_h + lane_h * 0.2
        parts.append(
            f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0, 1.2):.1f}" '
            f'height="{lane_h * 0.6:.1f}" fill="{COLOURS.get(op.outcome, "#000")}">'
            f"<title>{html.escape(op.title())}</title></rect>"
        )
    if culprit_s is not None:
        x = axis.x(culprit_s)
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{top + lanes * lane_h:.1f}" '
            'stroke="#000" stroke-width="2" stroke-dasharray="4 2"/>'
            f'<text x="{x + 4:.1f}" y="{top + lanes * lane_h - 4:.1f}" class="culprit">'
            "first operation that cannot be placed</text>"
        )
    parts.append(_time_axis(axis, top + lanes * lane_h + 4))
    parts.append("</svg>")
    return "".join(parts)


def latency_svg(ops: Sequence[DrawnOp], faults: Sequence[FaultRecord], end_s: float) -> str:
    axis = _Axis(end_s)
    top, plot_h = 20.0, 260.0
    height = top + plot_h + 30
    latencies = [max((op.end_s - op.start_s) * 1000, 0.1) for op in ops if op.outcome != "open"]
    high = max([10.0, *latencies])
    low = 0.1
    decades = math.log10(high) - math.log10(low)

    def y(ms: float) -> float:
        return top + plot_h * (1 - (math.log10(max(ms, low)) - math.log10(low)) / decades)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
        f'viewBox="0 0 {WIDTH} {height:.0f}">',
        _fault_shading(faults, axis, top, plot_h),
    ]
    for exponent in range(-1, math.ceil(math.log10(high)) + 1):
        ms = 10.0**exponent
        if ms > high * 1.01:
            break
        parts.append(
            f'<line x1="{LEFT}" y1="{y(ms):.1f}" x2="{WIDTH - RIGHT}" y2="{y(ms):.1f}" '
            f'class="grid"/><text x="{LEFT - 6}" y="{y(ms) + 4:.1f}" class="lane">{ms:g} ms</text>'
        )
    for op in ops:
        if op.outcome == "open":
            continue
        ms = max((op.end_s - op.start_s) * 1000, low)
        parts.append(
            f'<circle cx="{axis.x(op.end_s):.1f}" cy="{y(ms):.1f}" r="1.8" '
            f'fill="{COLOURS.get(op.outcome, "#000")}"><title>{html.escape(op.title())}'
            "</title></circle>"
        )
    parts.append(_time_axis(axis, top + plot_h))
    parts.append("</svg>")
    return "".join(parts)


_STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px;
       color: #212121; max-width: 1240px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 14px; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
.verdict { font-size: 20px; font-weight: bold; padding: 8px 12px; display: inline-block;
           color: white; border-radius: 4px; }
.status { font-weight: bold; }
pre { background: #f7f7f7; padding: 10px; font-size: 12px; overflow-x: auto; }
svg text { font-family: Helvetica, Arial, sans-serif; }
.lane { font-size: 11px; text-anchor: end; fill: #424242; }
.tick { font-size: 11px; text-anchor: middle; fill: #424242; }
.flabel { font-size: 10px; fill: #37474f; }
.culprit { font-size: 12px; font-weight: bold; fill: #000; }
.axis { stroke: #424242; stroke-width: 1; } .grid { stroke: #e0e0e0; stroke-width: 1; }
.legend span { display: inline-block; margin-right: 14px; font-size: 13px; }
.swatch { display: inline-block; width: 12px; height: 12px; vertical-align: -1px;
          margin-right: 4px; border: 1px solid #9e9e9e; }
"""


def _legend() -> str:
    items = (
        [(COLOURS[k], k) for k in ("ok", "fail", "info")]
        + [(FAULT_COLOURS[k], f"{k} period") for k in FAULT_COLOURS if k != "exit"]
        + [(FAULT_COLOURS["exit"], "node exited on its own")]
    )
    spans = "".join(
        f'<span><i class="swatch" style="background:{colour}"></i>{html.escape(name)}</span>'
        for colour, name in items
    )
    return f'<p class="legend">{spans}</p>'


def _checks_table(summary: dict[str, Any]) -> str:
    rows = []
    for check in summary["checks"]:
        colour = STATUS_COLOURS.get(check["status"], "#000")
        first_line = html.escape(check["detail"].splitlines()[0] if check["detail"] else "")
        rows.append(
            f"<tr><td>{html.escape(check['name'])}</td><td class=status "
            f'style="color:{colour}">{check["status"].upper()}</td><td>{first_line}</td></tr>'
        )
    return (
        "<table><tr><th>check</th><th>result</th><th>detail</th></tr>" + "".join(rows) + "</table>"
    )


def _numbers_table(summary: dict[str, Any]) -> str:
    ops = summary["ops"]
    latency = summary.get("latency_ms") or {}
    rows = [
        ("workload", summary["workload"]),
        ("nodes", summary["nodes"]),
        ("nemesis", ", ".join(summary["nemesis"]) or "none"),
        ("seed", summary["seed"]),
        ("run time", f"{summary['duration_s']:.1f} s"),
        ("operations", f"{ops['total']} (ok {ops['ok']}, fail {ops['fail']}, info {ops['info']})"),
        ("by function", "; ".join(_counts(f, c) for f, c in summary["ops_by_f"].items())),
        ("latency of ok ops", ", ".join(f"{k} {v} ms" for k, v in latency.items())),
        ("faults", ", ".join(f"{k} {v}" for k, v in summary["fault_counts"].items())),
        ("leader changes seen", summary["leader_changes"]),
        (
            "unsafe local reads",
            "YES (broken on purpose)" if summary["unsafe_local_reads"] else "no",
        ),
    ]
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{cells}</table>"


def _counts(f: str, counts: dict[str, int]) -> str:
    return f"{f} " + ", ".join(f"{kind} {counts[kind]}" for kind in sorted(counts))


def _faults_table(faults: Sequence[FaultRecord]) -> str:
    if not faults:
        return "<p>No faults were injected.</p>"
    rows = "".join(
        f"<tr><td>{f.start_s:.1f}s</td><td>{(f.end_s or 0):.1f}s</td><td>{f.kind}</td>"
        f"<td>{html.escape(f.description)}</td></tr>"
        for f in faults
    )
    return f"<table><tr><th>start</th><th>end</th><th>kind</th><th>what</th></tr>{rows}</table>"


def render(
    summary: dict[str, Any],
    events: Sequence[HistoryEvent],
    faults: Sequence[FaultRecord],
    lanes: int,
) -> str:
    end_s = max([event.time for event in events] + [summary["duration_s"], 0.001])
    ops = pair_operations(events, end_s)
    cut = len(ops) > DRAWN_OPS_MAX
    drawn = ops[:DRAWN_OPS_MAX]
    verdict = summary["verdict"]
    colour = STATUS_COLOURS.get(verdict, "#616161")
    checker = summary.get("checker", {})
    failure = checker.get("failure")
    note = (
        f"<p>Only the first {DRAWN_OPS_MAX} of {len(ops)} operations are drawn.</p>" if cut else ""
    )
    title = f"phalanx chaos: {summary['workload']}, {summary['nodes']} nodes"
    return "".join(
        [
            "<!DOCTYPE html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
            f"<h1>{html.escape(title)}</h1>",
            f'<p><span class="verdict" style="background:{colour}">verdict: '
            f"{verdict.upper()}</span> (exit code {summary['exit_code']})</p>",
            _checks_table(summary),
            "<h2>The run</h2>",
            _numbers_table(summary),
            "<h2>Timeline: one lane per client, one bar per operation</h2>",
            _legend(),
            note,
            timeline_svg(drawn, faults, lanes, end_s, checker.get("failure_time_s")),
            "<h2>Latency over time (completion time, log scale)</h2>",
            latency_svg(drawn, faults, end_s),
            "<h2>Faults</h2>",
            _faults_table(faults),
            f"<h2>Checker report</h2><pre>{html.escape(failure)}</pre>" if failure else "",
            "</body></html>",
        ]
    )


def write_report(
    path: Path,
    summary: dict[str, Any],
    events: Sequence[HistoryEvent],
    faults: Sequence[FaultRecord],
    lanes: int,
) -> None:
    path.write_text(render(summary, events, faults, lanes), encoding="utf-8")
