"""Key-value transformations (PySpark's pair-RDD methods), all built on
``combineByKey`` / ``partitionBy`` / ``cogroup`` over a shuffle."""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from shoal.compute.dependencies import Aggregator, ShuffleDependency
from shoal.compute.optimizer import add_kind, constant_pair_value
from shoal.compute.partitioner import HashPartitioner, Partitioner, RangePartitioner, portable_hash

if TYPE_CHECKING:
    from shoal.compute.rdd import RDD


def _identity(x: Any) -> Any:
    return x


def _to_list(x: Any) -> list:
    return [x]


def _append(acc: list, x: Any) -> list:
    acc.append(x)
    return acc


def _extend(a: list, b: list) -> list:
    a.extend(b)
    return a


def _partition_func(f: Callable[[Any], int] | None) -> Callable[[Any], int] | None:
    """``None`` for the default hash (PySpark's ``portable_hash``), so partitioners
    compare equal and use the fast path."""
    return None if f is None or f is portable_hash else f


def _reservoir(items: Iterable, k: int, rng: Any) -> tuple[int, list]:
    """(number of items, a uniform sample of ``k`` of them) in one pass, skipping
    between picks in C (Li's reservoir algorithm L): O(k log(n/k)) random numbers."""
    import math
    from collections import deque
    from itertools import islice

    it = enumerate(items)  # the index of the last item seen gives the count
    sample = [v for _, v in islice(it, k)]
    last = len(sample) - 1
    if len(sample) < k:
        return len(sample), sample

    def unit() -> float:  # uniform in (0, 1)
        return rng.random() or 0.5

    w = math.exp(math.log(unit()) / k)
    missing = (-1, None)
    while True:
        skip = int(math.log(unit()) / math.log1p(-w)) if w < 1.0 else 0
        skipped = deque(islice(it, skip), maxlen=1)  # consumed in C, the last one kept
        index, item = next(it, missing)
        if index < 0:
            return (skipped[0][0] if skipped else last) + 1, sample
        last = index
        sample[rng.randrange(k)] = item
        w *= math.exp(math.log(unit()) / k)


class PairsMixin:
    """Methods of RDDs of (key, value) pairs."""

    def _default_partitions(self: RDD, n: int | None) -> int:  # type: ignore[misc]
        if n is not None:
            if n < 1:
                raise ValueError(f"number of partitions must be positive, got {n}")
            return n
        if self.ctx.conf_default_parallelism_set:
            return self.ctx.defaultParallelism
        return max(self.getNumPartitions(), 1)

    def _shuffled(self: RDD, partitioner: Partitioner, aggregator: Aggregator | None = None,  # type: ignore[misc]
                  map_side_combine: bool = False, site: str = "", source: RDD | None = None,
                  **sort: Any) -> RDD:
        from shoal.compute.rdd import ShuffledRDD

        dep = ShuffleDependency(source or self, self.ctx._new_shuffle_id(), partitioner, aggregator,
                                map_side_combine, **sort)
        dep.extra["site"] = site
        return ShuffledRDD(source or self, dep, site)

    # --- partitioning -----------------------------------------------------------------------
    def partitionBy(self: RDD, numPartitions: int | None,  # type: ignore[misc]
                    partitionFunc: Callable[[Any], int] | None = None) -> RDD:
        from shoal.compute.rdd import call_site

        part = HashPartitioner(self._default_partitions(numPartitions), _partition_func(partitionFunc))
        if self.partitioner == part:
            return self
        return self._shuffled(part, site=call_site("partitionBy"))

    def combineByKey(self: RDD, createCombiner: Callable, mergeValue: Callable,  # type: ignore[misc]
                     mergeCombiners: Callable, numPartitions: int | None = None,
                     partitionFunc: Callable[[Any], int] | None = None, *, _site: str = "",
                     _map_side_combine: bool = True, _identity_create: bool = False) -> RDD:
        from shoal.compute.rdd import call_site

        part = HashPartitioner(self._default_partitions(numPartitions), _partition_func(partitionFunc))
        kind = add_kind(mergeValue, mergeCombiners)
        agg = Aggregator(createCombiner, mergeValue, mergeCombiners, _identity_create, kind)
        site = _site or call_site("combineByKey")
        if self.partitioner == part:
            # Already partitioned this way: combine within partitions, no shuffle.
            def combine(it: Iterator) -> Iterator:
                from shoal.compute.combine import combine_values

                return iter(combine_values(it, agg).items())

            return self.mapPartitions(combine, preservesPartitioning=True)
        source = None
        if kind == "add" and _map_side_combine:
            # ``rdd.map(lambda w: (w, 1)).reduceByKey(add)``: count the keys of the RDD
            # before the map in a C loop instead of building a pair per record.
            const = constant_pair_value(getattr(self, "map_func", None))
            if const is not None:
                source = self.unfused_prev  # type: ignore[attr-defined]
                rdd = self._shuffled(part, agg, True, site, source=source)
                rdd.dep.extra["count_keys"] = const
                return rdd
        return self._shuffled(part, agg, _map_side_combine, site)

    def reduceByKey(self: RDD, func: Callable[[Any, Any], Any], numPartitions: int | None = None,  # type: ignore[misc]
                    partitionFunc: Callable[[Any], int] | None = None) -> RDD:
        from shoal.compute.rdd import call_site

        return self.combineByKey(_identity, func, func, numPartitions, partitionFunc,
                                 _site=call_site("reduceByKey"), _identity_create=True)

    def foldByKey(self: RDD, zeroValue: Any, func: Callable, numPartitions: int | None = None,  # type: ignore[misc]
                  partitionFunc: Callable[[Any], int] | None = None) -> RDD:
        from shoal.compute.rdd import call_site

        return self.combineByKey(lambda v: func(copy.deepcopy(zeroValue), v), func, func, numPartitions,
                                 partitionFunc, _site=call_site("foldByKey"))

    def aggregateByKey(self: RDD, zeroValue: Any, seqFunc: Callable, combFunc: Callable,  # type: ignore[misc]
                       numPartitions: int | None = None, partitionFunc: Callable[[Any], int] | None = None) -> RDD:
        from shoal.compute.rdd import call_site

        return self.combineByKey(lambda v: seqFunc(copy.deepcopy(zeroValue), v), seqFunc, combFunc,
                                 numPartitions, partitionFunc, _site=call_site("aggregateByKey"))

    def groupByKey(self: RDD, numPartitions: int | None = None,  # type: ignore[misc]
                   partitionFunc: Callable[[Any], int] | None = None) -> RDD:
        from shoal.compute.rdd import call_site

        # As Spark: no map-side combine for groupByKey (it would not shrink anything).
        return self.combineByKey(_to_list, _append, _extend, numPartitions, partitionFunc,
                                 _site=call_site("groupByKey"), _map_side_combine=False)

    def sortByKey(self: RDD, ascending: bool = True, numPartitions: int | None = None,  # type: ignore[misc]
                  keyfunc: Callable[[Any], Any] = _identity) -> RDD:
        from shoal.compute.rdd import call_site

        site = call_site("sortByKey")
        n = self._default_partitions(numPartitions)
        if n == 1:
            bounds: list = []
        else:
            bounds = self._range_bounds(n, keyfunc)
        part = RangePartitioner(bounds, ascending, None if keyfunc is _identity else keyfunc)
        return self._shuffled(part, site=site, key_ordering=True, ascending=ascending,
                              sort_keyfunc=None if keyfunc is _identity else keyfunc)

    def repartitionAndSortWithinPartitions(  # type: ignore[misc]
            self: RDD, numPartitions: int | None = None, partitionFunc: Callable[[Any], int] | None = None,
            ascending: bool = True, keyfunc: Callable[[Any], Any] = _identity) -> RDD:
        """Hash-partition by key (or ``partitionFunc``) and sort each partition by key,
        in the shuffle (cheaper than ``partitionBy`` then sorting each partition)."""
        from shoal.compute.rdd import call_site

        part = HashPartitioner(self._default_partitions(numPartitions), _partition_func(partitionFunc))
        return self._shuffled(part, site=call_site("repartitionAndSortWithinPartitions"), key_ordering=True,
                              ascending=ascending, sort_keyfunc=None if keyfunc is _identity else keyfunc)

    def _range_bounds(self: RDD, n: int, keyfunc: Callable) -> list:  # type: ignore[misc]
        """n-1 bounds for ``sortByKey`` from a sample of the keys (Spark's
        RangePartitioner), aiming at 60 keys per output partition: each input
        partition sends its size and a uniform sample of up to three times its share
        of that (one job); a partition so big that its share of the keys is more than
        that is sampled again, in proportion to its size (a second job on those
        partitions only). Each sampled key stands for ``size / sample size`` keys,
        and the bounds cut the sorted sample into ``n`` runs of equal weight."""
        import math

        m = max(self.getNumPartitions(), 1)
        sample_size = min(60 * n, 1_000_000)
        per_part = max(1, math.ceil(3 * sample_size / m))

        def sampler(k: int | None) -> Callable[[int, Iterator], Iterator]:
            def sample(index: int, it: Iterator) -> Iterator:
                import random

                count, kvs = _reservoir(it, k or per_part, random.Random(index * 7919 + (k or 0)))
                return iter([(count, [keyfunc(kv[0]) for kv in kvs])])

            return sample

        first = self.mapPartitionsWithIndex(sampler(None)).collect()
        total = sum(count for count, _ in first)
        if total == 0:
            return []
        fraction = min(1.0, sample_size / total)
        weighted: list[tuple[Any, float]] = []
        big: dict[int, int] = {}  # partition -> how many keys to sample from it
        for index, (count, keys) in enumerate(first):
            if fraction * count > per_part:
                big[index] = math.ceil(fraction * count)
            elif keys:
                weighted.extend((k, count / len(keys)) for k in keys)
        for want in sorted(set(big.values())):
            parts = [i for i, k in big.items() if k == want]
            again = self.mapPartitionsWithIndex(sampler(want))
            for count, keys in again._run(lambda it: next(iter(it)), parts, "sortByKey"):
                weighted.extend((k, count / len(keys)) for k in keys)
        weighted.sort(key=operator.itemgetter(0))
        step = sum(w for _, w in weighted) / n
        bounds: list = []
        cumulative, target = 0.0, step
        for key, weight in weighted:
            cumulative += weight
            if cumulative >= target and (not bounds or key > bounds[-1]):
                bounds.append(key)
                if len(bounds) == n - 1:
                    break
                target += step
        return bounds

    # --- values ----------------------------------------------------------------------------
    def mapValues(self: RDD, f: Callable[[Any], Any]) -> RDD:  # type: ignore[misc]
        return self.map(lambda kv: (kv[0], f(kv[1])), preservesPartitioning=True)

    def flatMapValues(self: RDD, f: Callable[[Any], Any]) -> RDD:  # type: ignore[misc]
        return self.flatMap(lambda kv: ((kv[0], x) for x in f(kv[1])), preservesPartitioning=True)

    def sampleByKey(self: RDD, withReplacement: bool, fractions: dict[Any, float],  # type: ignore[misc]
                    seed: int | None = None) -> RDD:
        """A sample with a fraction per key (``fractions[key]``; every key must have one)."""
        import random

        from shoal.compute.rdd import PipelinedRDD, _poisson_sample, call_site

        for k, f in fractions.items():
            if f < 0:
                raise ValueError(f"Negative fraction value: {f} (key {k!r})")
        seed = random.randrange(1 << 62) if seed is None else seed

        def sampler(index: int, it: Iterator) -> Iterator:
            rng = random.Random(seed ^ (index * 0x9E3779B97F4A7C15))
            for kv in it:
                fraction = fractions[kv[0]]
                if withReplacement:
                    yield from _poisson_sample(iter((kv,)), fraction, rng)
                elif rng.random() < fraction:
                    yield kv

        return PipelinedRDD(self, sampler, True, call_site("sampleByKey"))

    def keys(self: RDD) -> RDD:  # type: ignore[misc]
        return self.map(operator.itemgetter(0))

    def values(self: RDD) -> RDD:  # type: ignore[misc]
        return self.map(operator.itemgetter(1))

    # --- joins -----------------------------------------------------------------------------
    def cogroup(self: RDD, other: RDD, numPartitions: int | None = None) -> RDD:  # type: ignore[misc]
        return self.groupWith(other, numPartitions=numPartitions)

    def groupWith(self: RDD, other: RDD, *others: RDD, numPartitions: int | None = None) -> RDD:  # type: ignore[misc]
        from shoal.compute.rdd import call_site

        rdds = [self, other, *others]
        k = len(rdds)
        if numPartitions is None and not self.ctx.conf_default_parallelism_set:
            n = max(1, *(r.getNumPartitions() for r in rdds))
        else:
            n = self._default_partitions(numPartitions)
        tagged = [r.map(lambda kv, i=i: (kv[0], (i, kv[1]))) for i, r in enumerate(rdds)]

        def create(tv: tuple) -> tuple:
            groups: tuple = tuple([] for _ in range(k))
            groups[tv[0]].append(tv[1])
            return groups

        def merge_value(groups: tuple, tv: tuple) -> tuple:
            groups[tv[0]].append(tv[1])
            return groups

        def merge_groups(a: tuple, b: tuple) -> tuple:
            for x, y in zip(a, b):
                x.extend(y)
            return a

        return self.ctx.union(tagged).combineByKey(create, merge_value, merge_groups, n,
                                                   _site=call_site("cogroup"), _map_side_combine=False)

    def join(self: RDD, other: RDD, numPartitions: int | None = None) -> RDD:  # type: ignore[misc]
        return self.cogroup(other, numPartitions).flatMapValues(
            lambda g: [(v, w) for v in g[0] for w in g[1]])

    def leftOuterJoin(self: RDD, other: RDD, numPartitions: int | None = None) -> RDD:  # type: ignore[misc]
        return self.cogroup(other, numPartitions).flatMapValues(
            lambda g: [(v, w) for v in g[0] for w in (g[1] or [None])])

    def rightOuterJoin(self: RDD, other: RDD, numPartitions: int | None = None) -> RDD:  # type: ignore[misc]
        return self.cogroup(other, numPartitions).flatMapValues(
            lambda g: [(v, w) for v in (g[0] or [None]) for w in g[1]])

    def fullOuterJoin(self: RDD, other: RDD, numPartitions: int | None = None) -> RDD:  # type: ignore[misc]
        return self.cogroup(other, numPartitions).flatMapValues(
            lambda g: [(v, w) for v in (g[0] or [None]) for w in (g[1] or [None])])

    def subtractByKey(self: RDD, other: RDD, numPartitions: int | None = None) -> RDD:  # type: ignore[misc]
        return self.cogroup(other, numPartitions).filter(
            lambda kv: len(kv[1][0]) > 0 and not kv[1][1]).flatMapValues(lambda g: g[0])
