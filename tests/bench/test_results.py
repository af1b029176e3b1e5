"""The result documents, the tables and the /proc parsing of the benchmark harness."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from phalanx.bench.histogram import Histogram
from phalanx.bench.loadgen import LoadResult, merge_results
from phalanx.bench.memory import memory_table
from phalanx.bench.peers.bench import peers_table
from phalanx.bench.results import (
    format_table,
    make_document,
    parse_stat_cpu_ticks,
    parse_status_kib,
    validate_document,
)
from phalanx.bench.throughput import in_flight_levels, latency_table, throughput_table
from phalanx.bench.workloads import cpu_us_per_op

PROC_STATUS = """\
Name:\tpython
Umask:\t0022
State:\tS (sleeping)
Tgid:\t4242
Pid:\t4242
VmPeak:\t  412340 kB
VmSize:\t  398812 kB
VmHWM:\t   71236 kB
VmRSS:\t   65432 kB
RssAnon:\t   51200 kB
Threads:\t3
"""

LATENCY = {"p50": 500.0, "p90": 800.0, "p99": 1500.0, "p99.9": 4000.0, "max": 9000.0}


def level(in_flight: int, ops_per_second: float) -> dict[str, Any]:
    return {
        "in_flight": in_flight,
        "ops": int(ops_per_second * 2),
        "seconds": 2.0,
        "ops_per_second": ops_per_second,
        "errors": 0,
        "latency_us": dict(LATENCY),
    }


def system(name: str, durability: str, rates: list[float], p50: float) -> dict[str, Any]:
    latency = dict(LATENCY, p50=p50)
    return {
        "system": name,
        "durability": durability,
        "levels": [level(2**i, r) for i, r in enumerate(rates)],
        "latency_us": latency,
    }


PROC_STAT = (
    "4242 (python -m (odd) name) S 1 4242 4242 0 -1 4194560 2048 0 0 0 "
    "1500 250 0 0 20 0 3 0 123456 398812000 16358 18446744073709551615"
)


def test_cpu_ticks_are_parsed_from_proc_stat_even_with_a_strange_name() -> None:
    assert parse_stat_cpu_ticks(PROC_STAT) == 1500 + 250


def test_rss_is_parsed_from_proc_status_text() -> None:
    assert parse_status_kib(PROC_STATUS, "VmRSS") == 65432
    assert parse_status_kib(PROC_STATUS, "VmHWM") == 71236


@pytest.mark.parametrize(
    ("text", "field"),
    [(PROC_STATUS, "VmSwap"), ("VmRSS:\t12 MB\n", "VmRSS"), ("VmRSS:\tlots kB\n", "VmRSS")],
)
def test_rss_parsing_refuses_what_it_cannot_read(text: str, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        parse_status_kib(text, field)


def test_a_document_has_the_schema() -> None:
    document = make_document("throughput", {"cpus": 2}, {"clients": 2}, {"levels": [level(4, 9)]})
    assert document["schema"] == "phalanx-bench/1"
    assert set(document) == {
        "schema", "benchmark", "created_at", "machine", "config", "results", "source",
    }  # fmt: skip


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d.pop("machine"),
        lambda d: d.update(schema="other/9"),
        lambda d: d.update(benchmark="nonsense"),
        lambda d: d["results"]["levels"][0].pop("ops_per_second"),
        lambda d: d["results"]["levels"][0]["latency_us"].update(p99=10.0),
        lambda d: d["results"]["levels"][0]["latency_us"].pop("max"),
        lambda d: d["results"]["levels"][0]["latency_us"].update(p50=-1),
    ],
)
def test_validation_names_what_is_wrong(break_it: Any) -> None:
    document = make_document("throughput", {}, {}, {"levels": [level(4, 9)]})
    broken = copy.deepcopy(document)
    break_it(broken)
    with pytest.raises(ValueError):
        validate_document(broken)


def test_peers_documents_need_each_systems_durability() -> None:
    results = {"systems": [system("phalanx", "fsync", [1.0], 100.0)]}
    make_document("peers", {}, {}, results)
    del results["systems"][0]["durability"]
    with pytest.raises(ValueError, match="durability"):
        make_document("peers", {}, {}, results)


def test_table_aligns_text_left_and_numbers_right() -> None:
    table = format_table(
        ["system", "puts/s", "p50 ms"], [["phalanx", 12345, 0.512], ["etcd", 2500.0, None]]
    )
    assert table == (
        "| system  | puts/s | p50 ms |\n"
        "|---------|-------:|-------:|\n"
        "| phalanx | 12,345 |   0.51 |\n"
        "| etcd    |  2,500 |      - |"
    )


def test_peers_table_has_one_row_per_system_and_ratios_phalanx_over_peer() -> None:
    systems = [
        system("phalanx", "fsync on a majority", [1000.0, 8000.0], 500.0),
        system("pysyncobj", "memory only, no fsync", [20.0, 4000.0], 250.0),
        system("etcd", "fsync on", [500.0, 2000.0], 1000.0),
    ]
    lines = peers_table(systems).splitlines()
    assert lines[0].split("|")[1:-1] == [
        " system              ",
        " durability            ",
        " 1 in flight /s ",
        " 2 in flight /s ",
        " p50 ms ",
        " p99 ms ",
    ]
    assert len(lines) == 2 + 3 + 2
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    assert cells[1][:2] == ["pysyncobj", "memory only, no fsync"]
    assert cells[3] == ["phalanx / pysyncobj", "(ratio)", "50.0", "2.00", "2.00", "1.00"]
    assert cells[4] == ["phalanx / etcd", "(ratio)", "2.00", "4.00", "0.50", "1.00"]


def test_throughput_latency_and_memory_tables() -> None:
    overloaded = dict(level(40, 4.5), terms=[2, 3], entries_per_command=1.25)
    rows = throughput_table([level(4, 9.0), overloaded]).splitlines()[2:]
    cells = [[cell.strip() for cell in row.split("|")[1:-1]] for row in rows]
    # Without term readings the elections column cannot say; with them it counts.
    assert cells[0] == ["4", "9.00", "100%", "0.50", "1.50", "0", "?", "-"]
    assert cells[1] == ["40", "4.50", "50%", "0.50", "1.50", "0", "1", "1.250"]
    assert latency_table({"phalanx": LATENCY}).splitlines()[2].split("|")[2].strip() == "0.50"
    table = memory_table(
        {
            "start_rss_mib": [30.0],
            "final_rss_mib": [60.0],
            "max_rss_mib": [61.0],
            "mib_per_million_entries": [300.0],
            "commit_index": 100_000,
        }
    )
    assert "node 1" in table
    assert table.endswith("committed entries: 100,000")


def test_in_flight_levels_parse_and_refuse_nonsense() -> None:
    assert in_flight_levels("1,4, 16") == [1, 4, 16]
    for bad in ("", "0,4", "-1"):
        with pytest.raises(ValueError):
            in_flight_levels(bad)


def test_load_results_merge_counts_and_histograms() -> None:
    first, second = Histogram(), Histogram()
    first.record_all([100, 200])
    second.record_all([300])
    merged = merge_results([LoadResult(2, 0, 3.0, first), LoadResult(1, 1, 3.1, second)])
    assert (merged.ops, merged.errors, merged.seconds) == (3, 1, 3.1)
    assert merged.histogram.count == 3
    assert LoadResult.from_json(merged.to_json()) == merged


def test_cpu_per_request_adds_up_over_processes() -> None:
    per_op = cpu_us_per_op({"leader": 40.0, "clients": 60.0}, ops_per_second=20_000)
    assert per_op == {"leader": 20.0, "clients": 30.0, "total": 50.0}
    assert cpu_us_per_op({"leader": 40.0}, ops_per_second=0) == {}


def test_a_sweep_level_with_an_election_in_it_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from phalanx.bench import workloads

    def fake_loads(specs: list[Any], timeout_s: float, watch: Any = None) -> Any:
        histogram = Histogram()
        histogram.record_all([500, 700])
        return [LoadResult(2, 0, 1.0, histogram) for _ in specs], {"clients": 10.0}

    monkeypatch.setattr(workloads, "spawn_loads", fake_loads)
    monkeypatch.setattr(workloads, "START_UP_S", 0.0)
    terms = iter([3, 3, 3, 5])  # level 1: 3 -> 3; level 2: 3 -> 5
    levels = workloads.sweep(
        "phalanx", ["127.0.0.1:1"], clients=2, in_flight_levels=[1, 4],
        warmup_s=0.0, measure_s=1.0, term=lambda: next(terms),
    )  # fmt: skip
    assert [level["terms"] for level in levels] == [[3, 3], [3, 5]]
    assert [level["ops"] for level in levels] == [4, 4]
    lines = [line for line in capsys.readouterr().out.splitlines() if "level" in line]
    assert "ELECTION" not in lines[0]
    assert "ELECTION during this level (term 3 -> 5)" in lines[1]
