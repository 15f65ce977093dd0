"""StatCounter (count, mean, variance in one pass, mergeable; Welford/Chan) and
``histogram`` as PySpark defines them."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shoal.compute.rdd import RDD


class StatCounter:
    def __init__(self, values: Iterable[float] = ()) -> None:
        self.n = 0
        self.mu = 0.0
        self.m2 = 0.0
        self.maxValue = float("-inf")
        self.minValue = float("inf")
        for v in values:
            self.merge(v)

    def merge(self, value: float) -> StatCounter:
        delta = value - self.mu
        self.n += 1
        self.mu += delta / self.n
        self.m2 += delta * (value - self.mu)
        self.maxValue = max(self.maxValue, value)
        self.minValue = min(self.minValue, value)
        return self

    def mergeStats(self, other: StatCounter) -> StatCounter:
        if other.n == 0:
            return self
        if self.n == 0:
            self.n, self.mu, self.m2 = other.n, other.mu, other.m2
            self.maxValue, self.minValue = other.maxValue, other.minValue
            return self
        delta = other.mu - self.mu
        n = self.n + other.n
        self.mu = (self.mu * self.n + other.mu * other.n) / n
        self.m2 += other.m2 + delta * delta * self.n * other.n / n
        self.n = n
        self.maxValue = max(self.maxValue, other.maxValue)
        self.minValue = min(self.minValue, other.minValue)
        return self

    def count(self) -> int:
        return self.n

    def mean(self) -> float:
        return self.mu if self.n else float("nan")

    def sum(self) -> float:
        return self.n * self.mu

    def min(self) -> float:
        return self.minValue

    def max(self) -> float:
        return self.maxValue

    def variance(self) -> float:
        return self.m2 / self.n if self.n else float("nan")

    def sampleVariance(self) -> float:
        return self.m2 / (self.n - 1) if self.n > 1 else float("nan")

    def stdev(self) -> float:
        return math.sqrt(self.variance())

    def sampleStdev(self) -> float:
        return math.sqrt(self.sampleVariance())

    def asDict(self, sample: bool = False) -> dict[str, float]:
        return {
            "count": self.count(), "mean": self.mean(), "sum": self.sum(), "min": self.min(), "max": self.max(),
            "stdev": self.sampleStdev() if sample else self.stdev(),
            "variance": self.sampleVariance() if sample else self.variance(),
        }

    def __repr__(self) -> str:
        return "(count: %s, mean: %s, stdev: %s, max: %s, min: %s)" % (
            self.count(), self.mean(), self.stdev(), self.max(), self.min())


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def histogram(rdd: RDD, buckets: int | list | tuple) -> tuple[Any, list[int]]:
    """PySpark's ``histogram``.

    An int ``n`` asks for ``n`` evenly spaced buckets between the RDD's min and max
    (integer edges when the span divides evenly); a sequence gives the sorted edges
    (returned as given). Buckets are ``[a, b)`` except the last, ``[a, b]``; values
    outside the edges, ``None`` and NaN are not counted."""
    if isinstance(buckets, int):
        if buckets < 1:
            raise ValueError("number of buckets must be >= 1")
        clean = rdd.filter(lambda x: not _missing(x))

        def minmax(a: tuple, b: tuple) -> tuple:
            return (min(a[0], b[0]), max(a[1], b[1]), a[2] + b[2])

        try:
            lo, hi, n = clean.map(lambda x: (x, x, 1)).reduce(minmax)
        except ValueError as exc:
            if "empty" in str(exc):
                raise ValueError("can not generate buckets from empty RDD") from None
            raise
        if lo == hi or buckets == 1:
            return [lo, hi], [n]
        try:
            inc = (hi - lo) / buckets
        except TypeError:
            raise TypeError("Can not generate buckets with non-number in RDD") from None
        if math.isinf(inc) or math.isnan(inc):
            raise ValueError("Can not generate buckets with infinite value")
        if int(inc) * buckets == hi - lo:
            inc = int(inc)  # integer edges when the span divides evenly (as PySpark)
        edges: list[Any] = [lo + i * inc for i in range(buckets)] + [hi]
        given: Any = edges
    else:
        edges = list(buckets)
        if len(edges) < 2:
            raise ValueError("buckets should have more than one value")
        if any(_missing(b) for b in edges):
            raise ValueError("can not have None or NaN in buckets")
        if sorted(edges) != edges:
            raise ValueError("buckets should be sorted")
        if len(set(edges)) != len(edges):
            raise ValueError("buckets should not contain duplicated values")
        given = buckets
    lo, hi = edges[0], edges[-1]
    nb = len(edges) - 1

    def count(it: Iterable) -> list[int]:
        counts = [0] * nb
        for x in it:
            if _missing(x) or x < lo or x > hi:
                continue
            counts[min(bisect.bisect_right(edges, x) - 1, nb - 1)] += 1
        return counts

    parts = rdd.ctx.run_job(rdd, count, None, "histogram")
    total = [sum(c) for c in zip(*parts)] if parts else [0] * nb
    return given, total
