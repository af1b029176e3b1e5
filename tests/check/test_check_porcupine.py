"""Every reference history gets exactly the verdict fixed by an independent checker.

The 108 histories (102 Jepsen etcd logs of a compare-and-set register, 6 key-value
histories) and their verdicts live outside the repository, in
`../shared/verification/porcupine/` (read-only; never copied here). A missing
directory fails these tests rather than skipping them: the verdicts are the
checker's main evidence.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from phalanx.check import (
    CasRegisterModel,
    KvModel,
    Model,
    Verdict,
    check_history,
    read_history,
)

PORCUPINE = Path(__file__).resolve().parents[2] / ".." / "shared" / "verification" / "porcupine"
HISTORIES = 108


def reference_rows() -> list[dict[str, str]]:
    verdicts = PORCUPINE / "verdicts.csv"
    assert verdicts.is_file(), f"reference histories missing: {verdicts.resolve()} not found"
    with verdicts.open(newline="") as file:
        return list(csv.DictReader(file))


def model_for(name: str) -> Model:
    # In the key-value histories every key starts as the empty string.
    models: dict[str, Model] = {
        "etcd_cas_register": CasRegisterModel(),
        "kv_get_put_append": KvModel(absent=""),
    }
    return models[name]


def test_every_reference_history_gets_its_verdict() -> None:
    rows = reference_rows()
    assert len(rows) == HISTORIES
    wrong = []
    for row in rows:
        path = PORCUPINE / row["path"]
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"], f"{path} was changed"
        expected = {"true": Verdict.LINEARIZABLE, "false": Verdict.NOT_LINEARIZABLE}[
            row["expected_linearizable"]
        ]
        result = check_history(read_history(path), model_for(row["model"]))
        if result.verdict is not expected:
            wrong.append(f"{row['path']}: {result.verdict.value}, expected {expected.value}")
        elif expected is Verdict.NOT_LINEARIZABLE:
            assert result.failure is not None
            assert result.failure.operation in result.failure.excerpt
    assert not wrong, "\n".join(wrong)


def test_every_etcd_log_but_the_empty_one_has_a_verdict() -> None:
    listed = {row["path"] for row in reference_rows()}
    logs = {f"jepsen/{path.name}" for path in (PORCUPINE / "jepsen").glob("*.log")}
    assert logs - listed == {"jepsen/etcd_095.log"}
    empty = read_history(PORCUPINE / "jepsen" / "etcd_095.log")
    assert check_history(empty, CasRegisterModel()).verdict is Verdict.LINEARIZABLE


def test_whole_map_and_per_key_agree_on_the_key_value_histories() -> None:
    # P-compositionality: checking each key alone must give the whole map's verdict.
    # The 50-client histories are left out: as one state they are too slow to search.
    for name in ("c01-ok", "c01-bad", "c10-ok", "c10-bad"):
        history = read_history(PORCUPINE / "kv" / f"{name}.txt")
        per_key = check_history(history, KvModel(absent=""))
        whole = check_history(history, KvModel(absent="", per_key=False))
        assert per_key.verdict is whole.verdict, name
        expected = Verdict.LINEARIZABLE if name.endswith("ok") else Verdict.NOT_LINEARIZABLE
        assert whole.verdict is expected, name
