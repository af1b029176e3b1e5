"""Time the checker on the reference histories: `python -m phalanx.check.benchmark`.

Checks every history listed in `verdicts.csv` of the reference directory (by default
`../shared/verification/porcupine` from the current directory), prints the slowest
ones, the slowest etcd history, the total, and every verdict that differs from the
expected one. Exits 1 on any difference. Timing is reported, never asserted: tests
do not depend on the speed of the machine.

Parsing is timed apart from checking and the ratio of the two is printed, a
baseline measured in the same run that does not depend on the machine's speed.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from phalanx.check.formats import read_history
from phalanx.check.linearizability import Verdict, check_history
from phalanx.check.models import CasRegisterModel, KvModel, Model

_DEFAULT_DIRECTORY = Path("..") / "shared" / "verification" / "porcupine"
_SLOWEST_SHOWN = 5


def _model(name: str) -> Model:
    if name == "etcd_cas_register":
        return CasRegisterModel()
    if name == "kv_get_put_append":
        return KvModel(absent="")  # every key starts as the empty string
    raise SystemExit(f"unknown model {name!r} in verdicts.csv")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phalanx.check.benchmark")
    parser.add_argument("directory", nargs="?", type=Path, default=_DEFAULT_DIRECTORY)
    args = parser.parse_args(argv)
    with (args.directory / "verdicts.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    timings: list[tuple[float, str]] = []
    wrong: list[str] = []
    parse_seconds = 0.0
    for row in rows:
        started = time.perf_counter()
        history = read_history(args.directory / row["path"])
        parsed = time.perf_counter()
        result = check_history(history, _model(row["model"]))
        parse_seconds += parsed - started
        timings.append((time.perf_counter() - parsed, row["path"]))
        expected = row["expected_linearizable"] == "true"
        if (result.verdict is Verdict.LINEARIZABLE) != expected or (
            result.verdict is Verdict.UNKNOWN
        ):
            wrong.append(f"{row['path']}: {result.verdict.value}")
    check_seconds = sum(seconds for seconds, _ in timings)
    etcd = [item for item in timings if item[1].startswith("jepsen/")]
    print(
        f"{len(rows)} histories: checked in {check_seconds:.2f} s, parsed in {parse_seconds:.2f} s"
    )
    print(f"checking / parsing: {check_seconds / max(parse_seconds, 1e-9):.1f}")
    if etcd:
        print(f"slowest etcd history: {max(etcd)[1]} {max(etcd)[0]:.3f} s")
    for seconds, path in sorted(timings, reverse=True)[:_SLOWEST_SHOWN]:
        print(f"  {seconds:8.3f} s  {path}")
    for line in wrong:
        print(f"WRONG VERDICT {line}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
