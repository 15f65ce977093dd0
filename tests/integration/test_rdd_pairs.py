"""PySpark's key-value RDD methods on local[2]: aggregations, joins, sorting and
partitioning, with the results PySpark documents (its doctests), and hash
partitioning that agrees between the driver and the executors."""

from __future__ import annotations

import random
from operator import add
from typing import Any

import pytest

from shoal.compute.partitioner import portable_hash
from shoal.spark import SparkContext

PAIRS = [("a", 1), ("b", 1), ("a", 1)]


# --- values and keys ---------------------------------------------------------------------------
def test_keys_values_map_values_flat_map_values(sc: SparkContext) -> None:
    assert sc.parallelize([(1, 2), (3, 4)]).keys().collect() == [1, 3]
    assert sc.parallelize([(1, 2), (3, 4)]).values().collect() == [2, 4]
    x = sc.parallelize([("a", ["apple", "banana", "lemon"]), ("b", ["grapes"])])
    assert x.mapValues(len).collect() == [("a", 3), ("b", 1)]
    y = sc.parallelize([("a", ["x", "y", "z"]), ("b", ["p", "r"])])
    assert y.flatMapValues(lambda v: v).collect() == [("a", "x"), ("a", "y"), ("a", "z"), ("b", "p"), ("b", "r")]
    # Both keep the partitioner: no second shuffle before a join on the same keys.
    part = sc.parallelize(PAIRS).partitionBy(3)
    assert part.mapValues(str).partitioner == part.partitioner
    assert part.flatMapValues(lambda v: [v]).partitioner == part.partitioner
    assert part.map(lambda kv: kv).partitioner is None


# --- aggregations ------------------------------------------------------------------------------
def test_reduce_fold_aggregate_by_key(sc: SparkContext) -> None:
    rdd = sc.parallelize(PAIRS)
    assert sorted(rdd.reduceByKey(add).collect()) == [("a", 2), ("b", 1)]
    assert sorted(rdd.foldByKey(0, add).collect()) == [("a", 2), ("b", 1)]
    # The zero value is applied once per key in each partition that has the key (Spark).
    assert sorted(sc.parallelize(PAIRS, 3).foldByKey(10, add).collect()) == [("a", 22), ("b", 11)]
    seq = (lambda acc, v: (acc[0] + v, acc[1] + 1))
    comb = (lambda a, b: (a[0] + b[0], a[1] + b[1]))
    data = sc.parallelize([("a", 1), ("b", 1), ("a", 2)])
    assert sorted(data.aggregateByKey((0, 0), seq, comb).collect()) == [("a", (3, 2)), ("b", (1, 1))]
    # A mutable zero value is copied for every key.
    lists = sc.parallelize([("a", 1), ("b", 2), ("a", 3)], 1).aggregateByKey([], lambda a, v: a + [v], add)
    assert sorted(lists.collect()) == [("a", [1, 3]), ("b", [2])]
    assert sorted(rdd.reduceByKeyLocally(add).items()) == [("a", 2), ("b", 1)]
    assert rdd.reduceByKey(add, 5).getNumPartitions() == 5


def test_word_count_shapes(sc: SparkContext) -> None:
    words = "the cat and the hat and the bat".split()
    expected = sorted({w: words.count(w) for w in words}.items())
    rdd = sc.parallelize(words, 3)
    assert sorted(rdd.map(lambda w: (w, 1)).reduceByKey(add).collect()) == expected
    assert sorted(rdd.map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b).collect()) == expected
    assert sorted(rdd.map(lambda w: (w, 2)).reduceByKey(add).mapValues(lambda n: n // 2).collect()) == expected
    # The recognised counting shape still applies foldByKey's zero once per partition.
    slices = [words[i * len(words) // 3:(i + 1) * len(words) // 3] for i in range(3)]
    folded = {w: sum(10 + s.count(w) for s in slices if w in s) for w in words}
    assert dict(rdd.map(lambda w: (w, 1)).foldByKey(10, add).collect()) == folded


def test_reduce_by_key_with_non_numeric_values(sc: SparkContext) -> None:
    rdd = sc.parallelize([("a", "x"), ("b", "z"), ("a", "y")], 2)
    assert sorted(sorted(v) for _, v in rdd.reduceByKey(lambda a, b: a + b).collect()) == [["x", "y"], ["z"]]
    lists = sc.parallelize([("a", [1]), ("a", [2]), ("b", [3])], 2).reduceByKey(add).collect()
    assert sorted((k, sorted(v)) for k, v in lists) == [("a", [1, 2]), ("b", [3])]


def test_combine_and_group_by_key(sc: SparkContext) -> None:
    data = sc.parallelize([("a", 1), ("b", 1), ("a", 2)])

    def to_list(a: Any) -> list:
        return [a]

    def append(a: list, b: Any) -> list:
        a.append(b)
        return a

    def extend(a: list, b: list) -> list:
        a.extend(b)
        return a

    assert sorted((k, sorted(v)) for k, v in data.combineByKey(to_list, append, extend).collect()) == [
        ("a", [1, 2]), ("b", [1])]
    rdd = sc.parallelize(PAIRS)
    assert sorted(rdd.groupByKey().mapValues(len).collect()) == [("a", 2), ("b", 1)]
    assert sorted(rdd.groupByKey().mapValues(list).collect()) == [("a", [1, 1]), ("b", [1])]
    assert sorted(rdd.countByKey().items()) == [("a", 2), ("b", 1)]
    # Already partitioned the same way: combined in place, without another shuffle.
    parted = rdd.partitionBy(2)
    summed = parted.reduceByKey(add, 2)
    assert summed.partitioner == parted.partitioner and sorted(summed.collect()) == [("a", 2), ("b", 1)]
    assert b"ShuffledRDD" in summed.toDebugString() and summed.toDebugString().count(b"+-") == 1


# --- joins -------------------------------------------------------------------------------------
def test_joins(sc: SparkContext) -> None:
    x = sc.parallelize([("a", 1), ("b", 4)])
    assert sorted(x.join(sc.parallelize([("a", 2), ("a", 3)])).collect()) == [("a", (1, 2)), ("a", (1, 3))]
    y = sc.parallelize([("a", 2)])
    assert sorted(x.leftOuterJoin(y).collect()) == [("a", (1, 2)), ("b", (4, None))]
    assert sorted(y.rightOuterJoin(x).collect()) == [("a", (2, 1)), ("b", (None, 4))]
    z = sc.parallelize([("a", 2), ("c", 8)])
    assert sorted(x.fullOuterJoin(z).collect(), key=repr) == [("a", (1, 2)), ("b", (4, None)), ("c", (None, 8))]
    assert x.join(y, 7).getNumPartitions() == 7


def test_cogroup_group_with_subtract_by_key(sc: SparkContext) -> None:
    x = sc.parallelize([("a", 1), ("b", 4)])
    y = sc.parallelize([("a", 2)])
    assert [(k, tuple(map(list, v))) for k, v in sorted(x.cogroup(y).collect())] == [
        ("a", ([1], [2])), ("b", ([4], []))]
    w = sc.parallelize([("a", 5), ("b", 6)])
    z = sc.parallelize([("b", 42)])
    assert [(k, tuple(map(list, v))) for k, v in sorted(w.groupWith(x, y, z).collect())] == [
        ("a", ([5], [1], [2], [])), ("b", ([6], [4], [], [42]))]
    left = sc.parallelize([("a", 1), ("b", 4), ("b", 5), ("a", 2)])
    right = sc.parallelize([("a", 3), ("c", None)])
    assert sorted(left.subtractByKey(right).collect()) == [("b", 4), ("b", 5)]


def test_sample_by_key(sc: SparkContext) -> None:
    fractions = {"a": 0.2, "b": 0.1}
    rdd = sc.parallelize(list(fractions)).cartesian(sc.parallelize(range(0, 1000)))
    sample = dict(rdd.sampleByKey(False, fractions, 2).groupByKey().collect())
    assert 100 < len(sample["a"]) < 300 and 50 < len(sample["b"]) < 150
    assert max(sample["a"]) <= 999 and min(sample["a"]) >= 0


# --- sorting -----------------------------------------------------------------------------------
def test_sort_by_key_and_sort_by(sc: SparkContext) -> None:
    tmp = [("a", 1), ("b", 2), ("1", 3), ("d", 4), ("2", 5)]
    ordered = [("1", 3), ("2", 5), ("a", 1), ("b", 2), ("d", 4)]
    assert sc.parallelize(tmp).sortByKey().first() == ("1", 3)
    assert sc.parallelize(tmp).sortByKey(True, 1).collect() == ordered
    assert sc.parallelize(tmp).sortByKey(True, 2).collect() == ordered
    assert sc.parallelize(tmp).sortByKey(False, 3).collect() == ordered[::-1]
    tmp2 = [("Mary", 1), ("had", 2), ("a", 3), ("little", 4), ("lamb", 5),
            ("whose", 6), ("fleece", 7), ("was", 8), ("white", 9)]
    assert sc.parallelize(tmp2).sortByKey(True, 3, keyfunc=lambda k: k.lower()).collect() == [
        ("a", 3), ("fleece", 7), ("had", 2), ("lamb", 5), ("little", 4), ("Mary", 1), ("was", 8),
        ("white", 9), ("whose", 6)]
    assert sc.parallelize(tmp).sortBy(lambda x: x[0]).collect() == ordered
    assert sc.parallelize(tmp).sortBy(lambda x: x[1]).collect() == tmp
    assert sc.parallelize(tmp).sortBy(lambda x: x[1], ascending=False, numPartitions=3).collect() == tmp[::-1]


def test_sort_by_key_uses_range_partitions(sc: SparkContext) -> None:
    rng = random.Random(5)
    keys = [rng.randrange(10_000) for _ in range(3000)]
    rdd = sc.parallelize([(k, None) for k in keys], 4).sortByKey(numPartitions=4)
    parts = rdd.keys().glom().collect()
    assert len(parts) == 4 and all(len(p) > 300 for p in parts)  # bounds from a sample: balanced
    assert [k for p in parts for k in p] == sorted(keys)
    assert all(p == sorted(p) for p in parts)
    assert rdd.lookup(keys[0]) == [None] * keys.count(keys[0])
    assert sc.emptyRDD().sortByKey().collect() == []
    # Input partitions of very different sizes: sampled keys are weighted by the size
    # of the partition they come from, so the output is still balanced.
    big = sc.parallelize([(k, None) for k in range(0, 30_000, 10)], 1)
    small = sc.parallelize([(k, None) for k in range(5, 100, 10)], 5)
    parts = sc.union([big, small]).sortByKey(numPartitions=3).keys().glom().collect()
    assert [k for p in parts for k in p] == sorted(list(range(0, 30_000, 10)) + list(range(5, 100, 10)))
    assert all(700 < len(p) < 1400 for p in parts), [len(p) for p in parts]


def test_repartition_and_sort_within_partitions(sc: SparkContext) -> None:
    rdd = sc.parallelize([(0, 5), (3, 8), (2, 6), (0, 8), (3, 8), (1, 3)])
    assert rdd.repartitionAndSortWithinPartitions(2, lambda x: x % 2, True).glom().collect() == [
        [(0, 5), (0, 8), (2, 6)], [(1, 3), (3, 8), (3, 8)]]


# --- partitioning ------------------------------------------------------------------------------
def test_partition_by(sc: SparkContext) -> None:
    pairs = sc.parallelize([1, 2, 3, 4, 2, 4, 1]).map(lambda x: (x, x))
    sets = pairs.partitionBy(2).glom().collect()
    assert len(sets) == 2 and len(set(sets[0]).intersection(set(sets[1]))) == 0
    odd_even = pairs.partitionBy(2, lambda k: k % 2).glom().collect()
    assert sorted(k for k, _ in odd_even[0]) == [2, 2, 4, 4] and sorted(k for k, _ in odd_even[1]) == [1, 1, 3]
    parted = pairs.partitionBy(2)
    assert parted.partitionBy(2) is parted  # the same partitioner: nothing to do


def test_hash_partitioning_agrees_across_processes(sc: SparkContext) -> None:
    keys = ["alpha", "β", "", b"bytes", ("t", 1, None), 42, -7, 3.5, None, True, frozenset({"x", "y"})]
    n = 5
    placed = sc.parallelize([(k, i) for i, k in enumerate(keys)], 3).partitionBy(n).glom().collect()
    for index, part in enumerate(placed):
        for k, _ in part:
            assert portable_hash(k) % n == index, k  # the driver's hash names the executor's partition
    assert portable_hash("alpha") == sc.parallelize(["alpha"], 1).map(portable_hash).first()
    assert portable_hash(("t", 1, None)) == sc.parallelize([("t", 1, None)], 1).map(portable_hash).first()


def test_lookup(sc: SparkContext) -> None:
    numbers = range(1000)
    rdd = sc.parallelize(zip(numbers, numbers), 10)
    assert rdd.lookup(42) == [42]
    ordered = rdd.sortByKey()
    assert ordered.lookup(42) == [42]
    assert ordered.lookup(1024) == []
    grouped = sc.parallelize([(("a", "b"), "c")]).groupByKey()
    assert list(grouped.lookup(("a", "b"))[0]) == ["c"]
    assert rdd.partitionBy(4).lookup(7) == [7]


@pytest.mark.parametrize("n", [1, 3])
def test_distinct_keys_across_many_partitions(sc: SparkContext, n: int) -> None:
    data = [(i % 37, i) for i in range(2000)]
    out = dict(sc.parallelize(data, 4).reduceByKey(add, n).collect())
    assert out == {k: sum(i for i in range(2000) if i % 37 == k) for k in range(37)}
