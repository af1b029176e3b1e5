"""The latency histogram against a sorted-list oracle (HdrHistogram's definitions)."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest

from phalanx.bench.histogram import (
    SUB_BUCKETS,
    Histogram,
    bucket_index,
    bucket_range,
    highest_equivalent,
)

PERCENTILES = (0.0, 1.0, 25.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0)


def oracle(values: list[int], percentile: float) -> int:
    """The value of rank ceil(p/100 * n) (at least 1) in sorted order, in exact arithmetic."""
    ordered = sorted(values)
    rank = max(1, math.ceil(Fraction(str(percentile)) * len(ordered) / 100))
    return ordered[rank - 1]


def distributions() -> list[tuple[str, list[int]]]:
    rng = random.Random(6)
    return [
        ("uniform", [rng.randint(0, 1_000_000) for _ in range(5000)]),
        ("lognormal", [int(rng.lognormvariate(7, 1.5)) for _ in range(5000)]),
        ("small exact", [rng.randint(0, 2 * SUB_BUCKETS - 1) for _ in range(999)]),
        ("one value", [1234] * 10),
        ("single", [7]),
        ("with outlier", [500] * 9999 + [60_000_000]),
    ]


@pytest.mark.parametrize(("name", "values"), distributions())
def test_percentiles_match_the_sorted_list_oracle(name: str, values: list[int]) -> None:
    histogram = Histogram()
    histogram.record_all(values)
    for percentile in PERCENTILES:
        expected = min(highest_equivalent(oracle(values, percentile)), max(values))
        assert histogram.value_at_percentile(percentile) == expected, (name, percentile)


@pytest.mark.parametrize(("name", "values"), distributions())
def test_reported_values_are_within_the_bucket_precision(name: str, values: list[int]) -> None:
    histogram = Histogram()
    histogram.record_all(values)
    for percentile in PERCENTILES:
        exact = oracle(values, percentile)
        reported = histogram.value_at_percentile(percentile)
        assert exact <= reported <= exact + exact / SUB_BUCKETS, (name, percentile)


def test_max_min_and_mean_are_exact() -> None:
    histogram = Histogram()
    histogram.record_all([5, 1_000_003, 17])
    assert (histogram.min, histogram.max, histogram.count) == (5, 1_000_003, 3)
    assert histogram.mean == pytest.approx((5 + 1_000_003 + 17) / 3)
    assert histogram.value_at_percentile(100) == 1_000_003


def test_every_bucket_range_maps_back_to_its_bucket() -> None:
    for index in range(30 * SUB_BUCKETS):
        low, high = bucket_range(index)
        if index >= SUB_BUCKETS * 2 or low == index:
            assert bucket_index(low) == index
            assert bucket_index(high) == index
            assert bucket_index(high + 1) == index + 1 or bucket_range(index + 1)[0] > high


def test_merge_equals_recording_everything_in_one() -> None:
    rng = random.Random(1)
    parts = [[rng.randint(0, 50_000) for _ in range(300)] for _ in range(4)]
    merged = Histogram()
    for part in parts:
        piece = Histogram()
        piece.record_all(part)
        merged.merge(piece)
    whole = Histogram()
    whole.record_all([v for part in parts for v in part])
    assert merged == whole


def test_json_round_trip() -> None:
    histogram = Histogram()
    histogram.record_all([1, 2, 300, 40_000, 40_001])
    assert Histogram.from_json(histogram.to_json()) == histogram


def test_empty_histogram_reports_zeros() -> None:
    summary = Histogram().summary()
    assert summary["p50"] == summary["max"] == summary["count"] == 0


def test_summary_names_the_reported_percentiles() -> None:
    histogram = Histogram()
    histogram.record_all(range(1, 1001))
    summary = histogram.summary()
    assert list(summary) == ["p50", "p90", "p99", "p99.9", "max", "mean", "count"]
    assert summary["p50"] == highest_equivalent(500) == 501  # 500 and 501 share a bucket
    assert summary["p99.9"] == highest_equivalent(999)
    assert summary["max"] == 1000
