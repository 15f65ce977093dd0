"""PySpark's RDD transformations on local[2], with the results PySpark documents
(its doctests), and persistence / lineage: cache, persist, unpersist, checkpoint,
toDebugString."""

from __future__ import annotations

from operator import add
from typing import Any

import pytest

from shoal.spark import RDD, SparkContext, StorageLevel


# --- creating RDDs ---------------------------------------------------------------------------
def test_parallelize_slices_like_pyspark(sc: SparkContext) -> None:
    assert sc.parallelize([0, 2, 3, 4, 6], 5).glom().collect() == [[0], [2], [3], [4], [6]]
    assert sc.parallelize(range(0, 6, 2), 5).glom().collect() == [[], [0], [], [2], [4]]
    assert sc.parallelize(["a", "b", "c"], 2).glom().collect() == [["a"], ["b", "c"]]
    assert sc.parallelize([1, 2, 3, 4, 5], 3).glom().collect() == [[1], [2, 3], [4, 5]]
    assert sc.parallelize(["x", "y", "z"]).collect() == ["x", "y", "z"]
    assert sc.parallelize(x for x in (1, 2, 3)).collect() == [1, 2, 3]  # any iterable
    assert sc.parallelize([1, 2, 3, 4]).getNumPartitions() == sc.defaultParallelism == 2


def test_range(sc: SparkContext) -> None:
    assert sc.range(5).collect() == [0, 1, 2, 3, 4]
    assert sc.range(2, 4).collect() == [2, 3]
    assert sc.range(1, 7, 2).collect() == [1, 3, 5]
    assert sc.range(5, 0, -1).collect() == [5, 4, 3, 2, 1]
    assert sc.range(0, 5, -1).collect() == []
    assert sc.range(5, numSlices=1).getNumPartitions() == 1
    assert sc.range(5, numSlices=10).getNumPartitions() == 10


def test_empty_rdd_and_union(sc: SparkContext) -> None:
    empty = sc.emptyRDD()
    assert empty.count() == 0 and empty.collect() == [] and empty.isEmpty()
    assert empty.getNumPartitions() == 0
    rdd = sc.parallelize([1, 1, 2, 3])
    assert rdd.union(rdd).collect() == [1, 1, 2, 3, 1, 1, 2, 3]
    assert (rdd + rdd).collect() == [1, 1, 2, 3, 1, 1, 2, 3]
    assert sc.union([rdd, sc.parallelize([9], 1), empty]).collect() == [1, 1, 2, 3, 9]
    assert rdd.union(rdd).getNumPartitions() == 4


# --- narrow transformations ------------------------------------------------------------------
def test_map_flatmap_filter(sc: SparkContext) -> None:
    assert sorted(sc.parallelize(["b", "a", "c"]).map(lambda x: (x, 1)).collect()) == [
        ("a", 1), ("b", 1), ("c", 1)]
    rdd = sc.parallelize([2, 3, 4])
    assert sorted(rdd.flatMap(lambda x: range(1, x)).collect()) == [1, 1, 1, 2, 2, 3]
    assert sorted(rdd.flatMap(lambda x: [(x, x), (x, x)]).collect()) == [
        (2, 2), (2, 2), (3, 3), (3, 3), (4, 4), (4, 4)]
    assert sc.parallelize([1, 2, 3, 4, 5]).filter(lambda x: x % 2 == 0).collect() == [2, 4]
    # A long fused chain keeps the order of parallelize.
    chain = sc.range(20, numSlices=3).map(lambda x: x + 1).filter(lambda x: x % 2).map(str).flatMap(list)
    assert chain.collect() == [c for x in range(20) if (x + 1) % 2 for c in str(x + 1)]


def test_map_partitions_and_glom(sc: SparkContext) -> None:
    rdd = sc.parallelize([1, 2, 3, 4], 2)

    def total(iterator: Any) -> Any:
        yield sum(iterator)

    assert rdd.mapPartitions(total).collect() == [3, 7]
    assert rdd.glom().collect() == [[1, 2], [3, 4]]

    def index(split: int, iterator: Any) -> Any:
        yield split

    four = sc.parallelize([1, 2, 3, 4], 4)
    assert four.mapPartitionsWithIndex(index).sum() == 6
    assert four.mapPartitionsWithSplit(index).sum() == 6
    assert four.mapPartitionsWithIndex(lambda i, it: ((i, x) for x in it)).collect() == [
        (0, 1), (1, 2), (2, 3), (3, 4)]


def test_key_by_and_cogroup(sc: SparkContext) -> None:
    x = sc.parallelize(range(0, 3)).keyBy(lambda v: v * v)
    y = sc.parallelize(zip(range(0, 5), range(0, 5)))
    assert [(k, list(map(list, v))) for k, v in sorted(x.cogroup(y).collect())] == [
        (0, [[0], [0]]), (1, [[1], [1]]), (2, [[], [2]]), (3, [[], [3]]), (4, [[2], [4]])]


def test_distinct_intersection_subtract(sc: SparkContext) -> None:
    assert sorted(sc.parallelize([1, 1, 2, 3]).distinct().collect()) == [1, 2, 3]
    assert sc.parallelize(range(100), 4).map(lambda x: x % 7).distinct(3).getNumPartitions() == 3
    rdd1 = sc.parallelize([1, 10, 2, 3, 4, 5])
    rdd2 = sc.parallelize([1, 6, 2, 3, 7, 8])
    assert sorted(rdd1.intersection(rdd2).collect()) == [1, 2, 3]
    assert sorted(sc.parallelize([1, 1, 2]).intersection(sc.parallelize([1, 1])).collect()) == [1]  # no dups
    x = sc.parallelize([("a", 1), ("b", 4), ("b", 5), ("a", 3)])
    y = sc.parallelize([("a", 3), ("c", None)])
    assert sorted(x.subtract(y).collect()) == [("a", 1), ("b", 4), ("b", 5)]
    assert sorted(sc.parallelize([1, 1, 2, 3]).subtract(sc.parallelize([3])).collect()) == [1, 1, 2]


def test_cartesian_and_zip(sc: SparkContext) -> None:
    rdd = sc.parallelize([1, 2])
    assert sorted(rdd.cartesian(rdd).collect()) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert rdd.cartesian(sc.parallelize("abc", 3)).getNumPartitions() == 6
    x = sc.parallelize(range(0, 5))
    y = sc.parallelize(range(1000, 1005))
    assert x.zip(y).collect() == [(0, 1000), (1, 1001), (2, 1002), (3, 1003), (4, 1004)]
    with pytest.raises(ValueError, match="same number of partitions"):
        x.zip(sc.parallelize(range(5), 3))
    with pytest.raises(ValueError, match="same number of elements"):
        x.zip(sc.parallelize(range(6))).collect()


def test_zip_with_index_and_unique_id(sc: SparkContext) -> None:
    assert sc.parallelize(["a", "b", "c", "d"], 3).zipWithIndex().collect() == [
        ("a", 0), ("b", 1), ("c", 2), ("d", 3)]
    assert sc.parallelize(["a", "b", "c", "d", "e"], 3).zipWithUniqueId().collect() == [
        ("a", 0), ("b", 1), ("c", 4), ("d", 2), ("e", 5)]
    assert sc.range(1000, numSlices=7).zipWithIndex().values().collect() == list(range(1000))


def test_group_by(sc: SparkContext) -> None:
    result = sc.parallelize([1, 1, 2, 3, 5, 8]).groupBy(lambda x: x % 2).collect()
    assert sorted((k, sorted(v)) for k, v in result) == [(0, [2, 8]), (1, [1, 1, 3, 5])]
    assert sc.parallelize(range(10)).groupBy(lambda x: x % 3, 5).getNumPartitions() == 5


def test_sample_and_random_split(sc: SparkContext) -> None:
    rdd = sc.parallelize(range(100), 4)
    n = rdd.sample(False, 0.1, 81).count()
    assert 6 <= n <= 14
    assert rdd.sample(False, 0.1, 81).collect() == rdd.sample(False, 0.1, 81).collect()  # seeded
    assert rdd.sample(False, 0.0, 1).count() == 0
    assert rdd.sample(False, 1.0, 1).count() == 100
    with_replacement = rdd.sample(True, 2.0, 7).collect()
    assert 120 <= len(with_replacement) <= 280 and len(set(with_replacement)) < len(with_replacement)
    with pytest.raises(ValueError):
        rdd.sample(False, -0.5)
    rdd = sc.parallelize(range(500), 1)
    rdd1, rdd2 = rdd.randomSplit([2, 3], 17)
    one, two = rdd1.collect(), rdd2.collect()
    assert sorted(one + two) == list(range(500))
    assert 150 < len(one) < 250 and 250 < len(two) < 350
    assert rdd1.count() == len(one)  # the same split on every evaluation


def test_coalesce_and_repartition(sc: SparkContext) -> None:
    assert sc.parallelize([1, 2, 3, 4, 5], 3).coalesce(1).glom().collect() == [[1, 2, 3, 4, 5]]
    rdd = sc.parallelize([1, 2, 3, 4, 5, 6, 7], 4)
    assert rdd.glom().collect() == [[1], [2, 3], [4, 5], [6, 7]]
    assert rdd.coalesce(2).glom().collect() == [[1, 2, 3], [4, 5, 6, 7]]
    assert rdd.coalesce(10).getNumPartitions() == 4  # no shuffle: never more partitions
    for n in (2, 10):
        parts = rdd.repartition(n).glom().collect()
        assert len(parts) == n and sorted(x for p in parts for x in p) == [1, 2, 3, 4, 5, 6, 7]
    spread = sc.parallelize(range(1000), 1).coalesce(4, shuffle=True).glom().collect()
    assert len(spread) == 4 and all(len(p) > 100 for p in spread)
    with pytest.raises(ValueError):
        rdd.repartition(0)


def test_pipe(sc: SparkContext) -> None:
    assert sc.parallelize(["1", "2", "", "3"]).pipe("cat").collect() == ["1", "2", "", "3"]
    assert sc.parallelize(["hello", "world"], 2).pipe("tr a-z A-Z").collect() == ["HELLO", "WORLD"]
    assert sc.parallelize([1, 2, 3], 1).pipe("wc -l").map(str.strip).collect() == ["3"]
    assert sc.parallelize(["x"], 1).pipe("sh -c 'echo $GREETING'", env={"GREETING": "hi"}).collect() == ["hi"]
    assert sc.parallelize(range(10000), 2).pipe("cat").take(3) == ["0", "1", "2"]
    with pytest.raises(RuntimeError, match="exited with error code 3"):
        sc.parallelize(["a"], 1).pipe("sh -c 'exit 3'", checkCode=True).collect()
    assert sc.parallelize(["a"], 1).pipe("sh -c 'exit 3'").collect() == []  # checkCode off
    # Upstream functions run in the feeding thread as part of the task.
    seen = sc.accumulator(0)
    factor = sc.broadcast(10)

    def scale(x: int) -> int:
        seen.add(1)
        return x * factor.value

    assert sc.parallelize([1, 2, 3], 2).map(scale).pipe("cat").collect() == ["10", "20", "30"]
    assert seen.value == 3


# --- persistence and lineage ------------------------------------------------------------------
def test_rdd_identity(sc: SparkContext) -> None:
    rdd = sc.range(5)
    assert isinstance(rdd.id(), int) and rdd.id() == rdd.id
    assert sc.range(5).id() != rdd.id()
    assert rdd.context is sc
    assert rdd.name() is None
    assert sc.parallelize([1, 2]).setName("I am an RDD").name() == "I am an RDD"
    assert sc.parallelize([1, 2, 3, 4], 2).getNumPartitions() == 2
    assert isinstance(rdd, RDD)


def test_storage_levels(sc: SparkContext) -> None:
    rdd = sc.parallelize(["b", "a", "c"])
    assert rdd.getStorageLevel() == StorageLevel(False, False, False, False, 1)
    assert rdd.cache() is rdd and rdd.is_cached
    assert str(rdd.getStorageLevel()) == "Memory Serialized 1x Replicated"
    assert rdd.unpersist() is rdd and not rdd.is_cached
    rdd2 = sc.range(5)
    rdd2.persist(StorageLevel.MEMORY_AND_DISK)
    assert rdd2.is_cached and str(rdd2.getStorageLevel()) == "Disk Memory Serialized 1x Replicated"
    with pytest.raises(ValueError):
        rdd2.persist(StorageLevel.MEMORY_ONLY_2)  # the level cannot change while persisted
    rdd2.unpersist()
    rdd2.persist(StorageLevel.MEMORY_ONLY_2)
    assert str(rdd2.getStorageLevel()) == "Memory Serialized 2x Replicated"
    rdd2.unpersist()


def test_storage_level_none_prints_like_pyspark(sc: SparkContext) -> None:
    assert str(sc.parallelize([1, 2]).getStorageLevel()) == "Serialized 1x Replicated"


@pytest.mark.parametrize("level", [StorageLevel.MEMORY_ONLY, StorageLevel.MEMORY_AND_DISK, StorageLevel.DISK_ONLY],
                         ids=["memory", "memory_and_disk", "disk"])
def test_persisted_rdd_is_not_recomputed(sc: SparkContext, level: StorageLevel) -> None:
    evaluated = sc.accumulator(0)

    def tag(x: int) -> int:
        evaluated.add(1)
        return x * 2

    rdd = sc.parallelize(range(100), 4).map(tag).persist(level)
    assert rdd.count() == 100 and evaluated.value == 100
    assert rdd.sum() == 9900 and evaluated.value == 100  # read from the executors' cache
    assert rdd.map(lambda x: x + 1).filter(lambda x: x > 190).count() == 5 and evaluated.value == 100
    rdd.unpersist()
    assert rdd.count() == 100 and evaluated.value == 200  # computed again


def test_cache_reduce(sc: SparkContext) -> None:
    assert sc.parallelize((2 for _ in range(10))).map(lambda x: 1).cache().reduce(add) == 10
    assert sc.parallelize([2, 3, 4, 5, 6]).cache().take(2) == [2, 3]


def test_checkpoint_truncates_lineage(sc: SparkContext) -> None:
    evaluated = sc.accumulator(0)

    def tag(kv: tuple) -> tuple:
        evaluated.add(1)
        return kv

    rdd = sc.parallelize([(i % 5, i) for i in range(50)], 3).map(tag).reduceByKey(add).mapValues(lambda v: v * 2)
    assert rdd.is_checkpointed is False and rdd.getCheckpointFile() is None
    before = rdd.toDebugString().decode()
    assert "ShuffledRDD" in before and "ParallelCollectionRDD" in before
    rdd.checkpoint()
    assert rdd.is_checkpointed and not rdd.isCheckpointed() and rdd.getCheckpointFile() is None
    expected = [(k, 2 * sum(i for i in range(50) if i % 5 == k)) for k in range(5)]
    assert sorted(rdd.collect()) == expected
    assert rdd.isCheckpointed() and rdd.getCheckpointFile() is not None
    after = rdd.toDebugString().decode()
    assert "ShuffledRDD" not in after and "ParallelCollectionRDD" not in after
    assert len(after.splitlines()) == 1 and "checkpointed" in after
    count = evaluated.value
    assert sorted(rdd.collect()) == expected  # read from the checkpoint files
    assert sorted(rdd.map(lambda kv: kv).collect()) == expected
    assert evaluated.value == count
    local = sc.range(5)
    assert not local.isLocallyCheckpointed()
    local.localCheckpoint()
    assert local.isLocallyCheckpointed() and local.count() == 5


def test_checkpoint_needs_a_directory(sc: SparkContext) -> None:
    saved, sc.checkpoint_dir = sc.checkpoint_dir, None
    try:
        with pytest.raises(ValueError, match="setCheckpointDir"):
            sc.range(3).checkpoint()
    finally:
        sc.checkpoint_dir = saved


def test_to_debug_string_shows_shuffle_boundaries(sc: SparkContext) -> None:
    rdd = sc.parallelize([("a", 1), ("b", 2)], 2).map(lambda kv: kv).reduceByKey(add, 3).map(lambda kv: kv)
    text = rdd.toDebugString()
    assert isinstance(text, bytes)
    lines = text.decode().splitlines()
    assert lines[0].startswith("(3) PipelinedRDD[")
    assert lines[1].startswith(" |  ShuffledRDD[") and "reduceByKey at test_rdd_api.py" in lines[1]
    assert lines[2].startswith(" +-(2) PipelinedRDD[")
    assert lines[3].startswith("    |  ParallelCollectionRDD[") and "parallelize at test_rdd_api.py" in lines[3]
    assert len(lines) == 4
    cached = sc.range(3).cache()
    assert "[Memory Serialized 1x Replicated]" in cached.toDebugString().decode()
