"""Plain-text reports of a check, for people reading a terminal."""

from __future__ import annotations

from phalanx.check.history import Event, Operation, show
from phalanx.check.linearizability import CheckResult, Verdict


def format_result(result: CheckResult, source: str) -> str:
    """A summary line and, for a failure, the operation and the excerpt around it."""
    parts = "partition" if result.partitions == 1 else "partitions"
    summary = (
        f"{source}: {result.verdict.value} (model {result.model}; "
        f"{result.partitions} {parts}; {result.steps:,} steps; {result.seconds:.2f} s)"
    )
    if result.verdict is Verdict.UNKNOWN:
        return f"{summary}\nThe search stopped before an answer: {result.reason}."
    failure = result.failure
    if failure is None:
        return summary
    key = failure.operation.key
    lines = [
        summary,
        f"First operation that cannot be placed: {failure.operation.describe()}, "
        f"{failure.operation.lines()}:",
        f"  {failure.reason}.",
    ]
    if failure.states:
        more = " (among others)" if failure.states_truncated else ""
        states = ", ".join(failure.states)
        holder = f"the {result.model}" if failure.operation.key is None else f"key {show(key)}"
        lines.append(
            f"  At the last moment it could take effect, {holder} could hold{more}: {states}"
        )
    count = len(failure.excerpt)
    lines.append(
        f"Excerpt of {source} ({count} operation{'s' if count != 1 else ''}: the failing "
        "one, those overlapping it, the last ones placed before it; > marks the failing one):"
    )
    lines.extend(_excerpt_lines(failure.excerpt, failure.operation))
    return "\n".join(lines)


def _excerpt_lines(excerpt: tuple[Operation, ...], culprit: Operation) -> list[str]:
    events: list[tuple[Event, bool]] = []
    for op in excerpt:
        events.append((op.invoke, op is culprit))
        if op.completion is not None:
            events.append((op.completion, op is culprit))
    events.sort(key=lambda item: item[0].line)
    width = len(str(events[-1][0].line)) if events else 1
    return [
        f"{'>' if marked else ' '} {event.line:>{width}}  {event.text}" for event, marked in events
    ]
