"""Actions: the methods that run a job and bring results to the driver (PySpark's)."""

from __future__ import annotations

import heapq
import itertools
import math
import operator
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from functools import reduce as _reduce
from typing import TYPE_CHECKING, Any

from shoal.compute.stats import StatCounter

if TYPE_CHECKING:
    from shoal.compute.rdd import RDD


# takeSample refuses sizes whose sampling fraction could not be bounded (PySpark's limit).
_MAX_SAMPLE_SIZE = sys.maxsize - int(10.0 * math.sqrt(sys.maxsize))


def _sample_fraction(num: int, total: int, with_replacement: bool) -> float:
    """A sampling fraction that yields at least ``num`` of ``total`` elements with
    probability > 99.99%: a Poisson tail bound with replacement, a binomial
    (Chernoff) bound without."""
    if with_replacement:
        spread = 9 if num < 12 else 5  # standard deviations: small samples vary more
        return (num + spread * math.sqrt(num)) / total
    delta = 1e-4
    gamma = -math.log(delta) / total
    q = num / total
    return min(1.0, q + gamma + math.sqrt(gamma * gamma + 2 * gamma * q))


def _count_iter(it: Iterator) -> int:
    n = 0
    for n, _ in enumerate(it, 1):
        pass
    return n


def _reduce_partition(f: Callable[[Any, Any], Any]) -> Callable[[Iterator], list]:
    """``[reduced]`` for a partition, ``[]`` for an empty one."""

    def part(it: Iterator) -> list:
        it = iter(it)
        for first in it:
            return [_reduce(f, it, first)]
        return []

    return part


def _tree_combine(partial: RDD, comb: Callable[[Any, Any], Any], depth: int, action: str) -> list:
    """The values of ``partial`` (one per partition) combined on the executors in
    rounds, each dividing the number of partitions by ``scale`` (so that about
    ``depth`` rounds are made), until few are left; those come to the driver."""
    n = partial.getNumPartitions()
    scale = max(math.ceil(n ** (1.0 / depth)), 2)
    while n > scale + n / scale:
        n = math.ceil(n / scale)
        partial = (partial.mapPartitionsWithIndex(lambda i, it, n=n: ((i % n, v) for v in it))
                   .reduceByKey(comb, n).values())
    return [v for vals in partial._run(list, action=action) for v in vals]


class ActionsMixin:
    """Methods that return values to the driver or write output."""

    def _run(self: RDD, func: Callable[[Iterator], Any], partitions: list[int] | None = None,  # type: ignore[misc]
             action: str = "") -> list:
        return self.ctx.run_job(self, func, partitions, action)

    def collect(self: RDD) -> list:  # type: ignore[misc]
        return list(itertools.chain.from_iterable(self._run(list, action="collect")))

    def toLocalIterator(self: RDD, prefetchPartitions: bool = False) -> Iterator:  # type: ignore[misc]
        for p in range(self.getNumPartitions()):
            yield from self._run(list, [p], "toLocalIterator")[0]

    def count(self: RDD) -> int:  # type: ignore[misc]
        return sum(self._run(_count_iter, action="count"))

    def isEmpty(self: RDD) -> bool:  # type: ignore[misc]
        return self.getNumPartitions() == 0 or len(self.take(1)) == 0

    def first(self: RDD) -> Any:  # type: ignore[misc]
        rs = self.take(1)
        if rs:
            return rs[0]
        raise ValueError("RDD is empty")

    def take(self: RDD, num: int) -> list:  # type: ignore[misc]
        """Scan partitions in growing batches until ``num`` items are found (as Spark)."""
        items: list = []
        total = self.getNumPartitions()
        scanned = 0
        while len(items) < num and scanned < total:
            if scanned == 0:
                n_parts = 1
            elif not items:
                n_parts = scanned * 4
            else:
                n_parts = max(1, min(int(1.5 * num * scanned / len(items)) - scanned, scanned * 4))
            parts = list(range(scanned, min(scanned + n_parts, total)))
            left = num - len(items)
            for res in self._run(lambda it, left=left: list(itertools.islice(it, left)), parts, "take"):
                items.extend(res)
            scanned += len(parts)
        return items[:num]

    def top(self: RDD, num: int, key: Callable | None = None) -> list:  # type: ignore[misc]
        parts = self._run(lambda it: heapq.nlargest(num, it, key=key), action="top")
        return heapq.nlargest(num, itertools.chain.from_iterable(parts), key=key)

    def takeOrdered(self: RDD, num: int, key: Callable | None = None) -> list:  # type: ignore[misc]
        parts = self._run(lambda it: heapq.nsmallest(num, it, key=key), action="takeOrdered")
        return heapq.nsmallest(num, itertools.chain.from_iterable(parts), key=key)

    def takeSample(self: RDD, withReplacement: bool, num: int, seed: int | None = None) -> list:  # type: ignore[misc]
        """A sample of exactly ``num`` elements (fewer only when sampling without
        replacement from a smaller RDD), in random order: the RDD is sampled with a
        fraction large enough to get ``num`` elements with high probability (again,
        with another seed, in the rare case it did not)."""
        if num < 0:
            raise ValueError("Sample size cannot be negative.")
        if num > _MAX_SAMPLE_SIZE:
            raise ValueError(f"Sample size cannot be greater than {_MAX_SAMPLE_SIZE}.")
        if num == 0:
            return []
        rng = random.Random(seed)
        total = self.count()
        if total == 0:
            return []
        if not withReplacement and num >= total:
            items = self.collect()
            rng.shuffle(items)
            return items
        fraction = _sample_fraction(num, total, withReplacement)
        items = self.sample(withReplacement, fraction, rng.randrange(1 << 62)).collect()
        while len(items) < num:
            items = self.sample(withReplacement, fraction, rng.randrange(1 << 62)).collect()
        rng.shuffle(items)
        return items[:num]

    def reduce(self: RDD, f: Callable[[Any, Any], Any]) -> Any:  # type: ignore[misc]
        """Reduce with a commutative and associative ``f`` (partitions reduce their
        own elements, the driver the partial results)."""
        vals = [v for part in self._run(_reduce_partition(f), action="reduce") for v in part]
        if not vals:
            raise ValueError("Can not reduce() empty RDD")
        return _reduce(f, vals)

    def treeReduce(self: RDD, f: Callable[[Any, Any], Any], depth: int = 2) -> Any:  # type: ignore[misc]
        """``reduce`` in a tree of about ``depth`` levels: partial results are combined
        on the executors, level by level, before the driver combines the last few."""
        if depth < 1:
            raise ValueError(f"Depth cannot be smaller than 1 but got {depth}.")
        part = _reduce_partition(f)

        def merge(a: list, b: list) -> list:  # [] is "no value yet" (an empty partition)
            if not a:
                return b
            if not b:
                return a
            return [f(a[0], b[0])]

        partial = self.mapPartitions(lambda it: [part(it)])
        result = _reduce(merge, _tree_combine(partial, merge, depth, "treeReduce"), [])
        if not result:
            raise ValueError("Cannot reduce empty RDD.")
        return result[0]

    def fold(self: RDD, zeroValue: Any, op: Callable[[Any, Any], Any]) -> Any:  # type: ignore[misc]
        import copy

        vals = self._run(lambda it: _reduce(op, it, copy.deepcopy(zeroValue)), action="fold")
        return _reduce(op, vals, zeroValue)

    def aggregate(self: RDD, zeroValue: Any, seqOp: Callable, combOp: Callable) -> Any:  # type: ignore[misc]
        import copy

        vals = self._run(lambda it: _reduce(seqOp, it, copy.deepcopy(zeroValue)), action="aggregate")
        return _reduce(combOp, vals, zeroValue)

    def treeAggregate(self: RDD, zeroValue: Any, seqOp: Callable, combOp: Callable,  # type: ignore[misc]
                      depth: int = 2) -> Any:
        """``aggregate`` in a tree of about ``depth`` levels (see ``treeReduce``)."""
        import copy

        if depth < 1:
            raise ValueError(f"Depth cannot be smaller than 1 but got {depth}.")
        if self.getNumPartitions() == 0:
            return zeroValue
        partial = self.mapPartitions(lambda it: [_reduce(seqOp, it, copy.deepcopy(zeroValue))])
        return _reduce(combOp, _tree_combine(partial, combOp, depth, "treeAggregate"))

    def foreach(self: RDD, f: Callable[[Any], None]) -> None:  # type: ignore[misc]
        def part(it: Iterator) -> None:
            for x in it:
                f(x)

        self._run(part, action="foreach")

    def foreachPartition(self: RDD, f: Callable[[Iterator], None]) -> None:  # type: ignore[misc]
        self._run(lambda it: f(it) and None, action="foreachPartition")

    # --- numbers ---------------------------------------------------------------------------
    def sum(self: RDD) -> Any:  # type: ignore[misc]
        return sum(self._run(lambda it: sum(it, 0), action="sum"), 0)

    def stats(self: RDD) -> StatCounter:  # type: ignore[misc]
        parts = self._run(lambda it: StatCounter(it), action="stats")
        return _reduce(lambda a, b: a.mergeStats(b), parts, StatCounter())

    def mean(self: RDD) -> float:  # type: ignore[misc]
        return self.stats().mean()

    def variance(self: RDD) -> float:  # type: ignore[misc]
        return self.stats().variance()

    def stdev(self: RDD) -> float:  # type: ignore[misc]
        return self.stats().stdev()

    def sampleVariance(self: RDD) -> float:  # type: ignore[misc]
        return self.stats().sampleVariance()

    def sampleStdev(self: RDD) -> float:  # type: ignore[misc]
        return self.stats().sampleStdev()

    def max(self: RDD, key: Callable | None = None) -> Any:  # type: ignore[misc]
        if key is None:
            return self.reduce(max)
        return self.reduce(lambda a, b: max(a, b, key=key))

    def min(self: RDD, key: Callable | None = None) -> Any:  # type: ignore[misc]
        if key is None:
            return self.reduce(min)
        return self.reduce(lambda a, b: min(a, b, key=key))

    def histogram(self: RDD, buckets: int | list) -> tuple[list, list[int]]:  # type: ignore[misc]
        from shoal.compute.stats import histogram

        return histogram(self, buckets)

    def countApprox(self: RDD, timeout: int, confidence: float = 0.95) -> int:  # type: ignore[misc]
        """The exact count (shoal does not stop jobs early at a timeout)."""
        return self.count()

    def sumApprox(self: RDD, timeout: int, confidence: float = 0.95) -> float:  # type: ignore[misc]
        """The exact sum, as a float (shoal does not stop jobs early at a timeout)."""
        return float(self.sum())

    def meanApprox(self: RDD, timeout: int, confidence: float = 0.95) -> float:  # type: ignore[misc]
        """The exact mean (shoal does not stop jobs early at a timeout)."""
        return float(self.mean())

    def countApproxDistinct(self: RDD, relativeSD: float = 0.05) -> int:  # type: ignore[misc]
        """The number of distinct elements (exact: a distinct count over a shuffle)."""
        if relativeSD < 0.000017:
            raise ValueError("relativeSD should be greater than 0.000017")
        return self.distinct().count()

    # --- keys and values -------------------------------------------------------------------
    def reduceByKeyLocally(self: RDD, func: Callable[[Any, Any], Any]) -> dict:  # type: ignore[misc]
        """Merge the values of each key with ``func`` and return a dict to the driver
        (each partition reduces its own keys, the driver merges the dicts)."""
        def part(it: Iterator) -> dict:
            d: dict = {}
            for k, v in it:
                d[k] = func(d[k], v) if k in d else v
            return d

        merged: dict = {}
        for d in self._run(part, action="reduceByKeyLocally"):
            for k, v in d.items():
                merged[k] = func(merged[k], v) if k in merged else v
        return merged

    def countByValue(self: RDD) -> dict:  # type: ignore[misc]
        parts = self._run(lambda it: Counter(it), action="countByValue")
        total: defaultdict = defaultdict(int)
        for c in parts:
            for k, v in c.items():
                total[k] += v
        return total

    def countByKey(self: RDD) -> dict:  # type: ignore[misc]
        return self.map(operator.itemgetter(0)).countByValue()

    def collectAsMap(self: RDD) -> dict:  # type: ignore[misc]
        return dict(self.collect())

    def lookup(self: RDD, key: Any) -> list:  # type: ignore[misc]
        values = self.filter(lambda kv: kv[0] == key).values()
        if self.partitioner is not None:
            return values._run(list, [self.partitioner.partition(key)], "lookup")[0]
        return values.collect()

    # --- output ----------------------------------------------------------------------------
    def saveAsTextFile(self: RDD, path: str, compressionCodecClass: str | None = None) -> None:  # type: ignore[misc]
        from shoal.compute.output import save_as_text

        save_as_text(self, path, compressionCodecClass)

    def saveAsPickleFile(self: RDD, path: str, batchSize: int = 10) -> None:  # type: ignore[misc]
        from shoal.compute.output import save_as_pickle

        save_as_pickle(self, path, batchSize)
