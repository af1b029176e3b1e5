"""A small HDR-style latency histogram: log-bucketed, mergeable, JSON-serialisable.

Theory of operation
-------------------
Values are non-negative integers (the benchmarks record microseconds). Below
`2 * SUB_BUCKETS` every value has its own bucket; above, each power of two is split into
`SUB_BUCKETS` equal buckets, so a bucket is never wider than 1/SUB_BUCKETS of its lowest
value: with 128 sub-buckets every reported value is within 0.8 % of the true one
(HdrHistogram's "two significant digits", Gil Tene's layout without its array).

A value's bucket index is `shift * SUB_BUCKETS + (value >> shift)`, where `shift` is
how many low bits the value loses. Counts are kept in a dict, so the memory is bounded by
the number of distinct buckets touched (at most ~128 per power of two), not by the count
of values.

`value_at_percentile(p)` is HdrHistogram's definition: the highest value equivalent to
(in the same bucket as) the value of rank `ceil(p / 100 * count)` in sorted order,
clamped to the exact maximum recorded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

SUB_BUCKET_BITS = 7
SUB_BUCKETS = 1 << SUB_BUCKET_BITS
#: The largest value accepted (about 73 minutes in microseconds at 2**32).
VALUE_MAX = 1 << 40
#: The percentiles every report carries.
REPORTED_PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def bucket_index(value: int) -> int:
    assert 0 <= value <= VALUE_MAX, value
    shift = max(0, value.bit_length() - SUB_BUCKET_BITS - 1)
    return shift * SUB_BUCKETS + (value >> shift)


def bucket_range(index: int) -> tuple[int, int]:
    """The lowest and highest value that fall into bucket `index`."""
    assert index >= 0
    if index < 2 * SUB_BUCKETS:
        return index, index
    # index = shift * SUB + mantissa, mantissa in [SUB, 2 * SUB)
    shift = index // SUB_BUCKETS - 1
    mantissa = index - shift * SUB_BUCKETS
    return mantissa << shift, ((mantissa + 1) << shift) - 1


def highest_equivalent(value: int) -> int:
    return bucket_range(bucket_index(value))[1]


@dataclass
class Histogram:
    counts: dict[int, int] = field(default_factory=dict)
    count: int = 0
    min: int = 0
    max: int = 0
    total: int = 0

    def record(self, value: int) -> None:
        value = min(max(0, value), VALUE_MAX)
        index = bucket_index(value)
        self.counts[index] = self.counts.get(index, 0) + 1
        if self.count == 0 or value < self.min:
            self.min = value
        self.max = max(self.max, value)
        self.count += 1
        self.total += value

    def record_all(self, values: Iterable[int]) -> None:
        for value in values:
            self.record(value)

    def merge(self, other: Histogram) -> None:
        if other.count == 0:
            return
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.min = other.min if self.count == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    def value_at_percentile(self, percentile: float) -> int:
        assert 0.0 <= percentile <= 100.0, percentile
        if self.count == 0:
            return 0
        # Rounded before ceil so that 99.9 % of 1000 is rank 999, not float noise's 1000.
        rank = max(1, math.ceil(round(percentile * self.count / 100.0, 9)))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(bucket_range(index)[1], self.max)
        raise AssertionError("ranks beyond the count")

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def summary(self) -> dict[str, float]:
        """p50/p90/p99/p99.9/max/mean in the recorded unit."""
        result: dict[str, float] = {
            f"p{_label(p)}": float(self.value_at_percentile(p)) for p in REPORTED_PERCENTILES
        }
        result["max"] = float(self.max)
        result["mean"] = round(self.mean, 1)
        result["count"] = float(self.count)
        return result

    def to_json(self) -> dict[str, object]:
        return {
            "counts": {str(k): v for k, v in sorted(self.counts.items())},
            "count": self.count,
            "min": self.min,
            "max": self.max,
            "total": self.total,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Histogram:
        counts = data["counts"]
        assert isinstance(counts, dict)
        histogram = cls(
            counts={int(k): int(v) for k, v in counts.items()},
            count=_int(data["count"]),
            min=_int(data["min"]),
            max=_int(data["max"]),
            total=_int(data["total"]),
        )
        assert sum(histogram.counts.values()) == histogram.count
        return histogram


def _int(value: object) -> int:
    assert isinstance(value, int), value
    return value


def _label(percentile: float) -> str:
    """50.0 -> "50", 99.9 -> "99.9"."""
    return f"{percentile:g}"
