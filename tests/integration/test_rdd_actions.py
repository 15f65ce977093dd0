"""PySpark's RDD actions on local[2] with the results PySpark documents (its
doctests); shared variables (broadcasts, accumulators); how failures reach the
driver (user exceptions, unpicklable closures, cancelled job groups)."""

from __future__ import annotations

import math
import socket
import sys
import threading
import time
from operator import add
from typing import Any

import pytest

from shoal.errors import JobCancelled, RemoteTraceback, SerializationError
from shoal.spark import AccumulatorParam, InheritableThread, SparkContext, StatCounter


# --- collecting ----------------------------------------------------------------------------
def test_collect_count_first_take(sc: SparkContext) -> None:
    assert sc.range(5).collect() == [0, 1, 2, 3, 4]
    assert sc.parallelize([2, 3, 4]).count() == 3
    assert sc.parallelize([2, 3, 4]).first() == 2
    with pytest.raises(ValueError, match="RDD is empty"):
        sc.parallelize([]).first()
    assert sc.parallelize([2, 3, 4, 5, 6]).take(2) == [2, 3]
    assert sc.parallelize([2, 3, 4, 5, 6]).take(10) == [2, 3, 4, 5, 6]
    assert sc.parallelize(range(100), 100).filter(lambda x: x > 90).take(3) == [91, 92, 93]
    assert sc.parallelize([1, 2]).take(0) == []
    assert sc.parallelize([]).isEmpty() and not sc.parallelize([1]).isEmpty()
    assert sc.parallelize([], 3).isEmpty()
    assert list(sc.parallelize(range(10), 3).toLocalIterator()) == list(range(10))
    assert sc.parallelize([(1, 2), (3, 4)]).collectAsMap() == {1: 2, 3: 4}


def test_take_scans_only_the_partitions_it_needs(sc: SparkContext) -> None:
    evaluated = sc.accumulator(0)

    def tag(x: int) -> int:
        evaluated.add(1)
        return x

    assert sc.parallelize(range(100), 10).map(tag).take(3) == [0, 1, 2]
    assert evaluated.value <= 10  # only the first partition was computed


def test_top_and_take_ordered(sc: SparkContext) -> None:
    assert sc.parallelize([10, 4, 2, 12, 3]).top(1) == [12]
    assert sc.parallelize([2, 3, 4, 5, 6], 2).top(2) == [6, 5]
    assert sc.parallelize([10, 4, 2, 12, 3]).top(3, key=str) == [4, 3, 2]
    assert sc.parallelize([10, 1, 2, 9, 3, 4, 5, 6, 7]).takeOrdered(6) == [1, 2, 3, 4, 5, 6]
    assert sc.parallelize([10, 1, 2, 9, 3, 4, 5, 6, 7], 2).takeOrdered(6, key=lambda x: -x) == [10, 9, 7, 6, 5, 4]
    assert sc.emptyRDD().takeOrdered(3) == []


def test_take_sample(sc: SparkContext) -> None:
    rdd = sc.parallelize(range(0, 10))
    assert len(rdd.takeSample(True, 20, 1)) == 20
    five = rdd.takeSample(False, 5, 2)
    assert len(five) == 5 and len(set(five)) == 5 and set(five) <= set(range(10))
    assert sorted(rdd.takeSample(False, 15, 3)) == list(range(10))
    assert rdd.takeSample(False, 5, 2) == five  # seeded
    big = sc.parallelize(range(10_000), 4).takeSample(False, 50, 9)
    assert len(set(big)) == 50 and big != sorted(big)
    assert sc.emptyRDD().takeSample(True, 3) == []
    with pytest.raises(ValueError, match="Sample size cannot be greater than"):
        sc.range(0, 10).takeSample(False, sys.maxsize)
    with pytest.raises(ValueError, match="negative"):
        rdd.takeSample(False, -1)


# --- reducing ------------------------------------------------------------------------------
def test_reduce_fold_aggregate(sc: SparkContext) -> None:
    assert sc.parallelize([1, 2, 3, 4, 5]).reduce(add) == 15
    with pytest.raises(ValueError, match=r"Can not reduce\(\) empty RDD"):
        sc.parallelize([]).reduce(add)
    assert sc.parallelize([1, 2, 3], 8).reduce(add) == 6  # empty partitions are skipped
    assert sc.parallelize([1, 2, 3, 4, 5]).fold(0, add) == 15
    seq = (lambda acc, v: (acc[0] + v, acc[1] + 1))
    comb = (lambda a, b: (a[0] + b[0], a[1] + b[1]))
    assert sc.parallelize([1, 2, 3, 4]).aggregate((0, 0), seq, comb) == (10, 4)
    assert sc.parallelize([]).aggregate((0, 0), seq, comb) == (0, 0)
    # The zero value is copied for every partition, so mutating it is safe.
    assert sorted(sc.parallelize([1, 2, 3], 3).aggregate([], lambda a, v: a + [v], add)) == [1, 2, 3]


def test_tree_reduce_and_aggregate(sc: SparkContext) -> None:
    rdd = sc.parallelize([-5, -4, -3, -2, -1, 1, 2, 3, 4], 10)
    for depth in (1, 2, 5, 10):
        assert rdd.treeReduce(add, depth) == -5
        assert rdd.treeAggregate(0, add, add, depth) == -5
    assert rdd.treeReduce(add) == -5 and rdd.treeAggregate(0, add, add) == -5
    many = sc.parallelize(range(1000), 50)  # combined on the executors in rounds
    assert many.treeReduce(max, 3) == 999 and many.treeAggregate(0, add, add) == sum(range(1000))
    assert many.treeAggregate((0, 0), lambda a, v: (a[0] + v, a[1] + 1),
                              lambda a, b: (a[0] + b[0], a[1] + b[1])) == (sum(range(1000)), 1000)
    with pytest.raises(ValueError):
        rdd.treeReduce(add, 0)
    with pytest.raises(ValueError, match="empty"):
        sc.parallelize([], 4).treeReduce(add)
    assert sc.emptyRDD().treeAggregate(5, add, add) == 5 and sc.parallelize([], 3).treeAggregate(0, add, add) == 0


def test_numbers(sc: SparkContext) -> None:
    floats = sc.parallelize([1.0, 5.0, 43.0, 10.0])
    assert floats.max() == 43.0 and floats.max(key=str) == 5.0
    other = sc.parallelize([2.0, 5.0, 43.0, 10.0])
    assert other.min() == 2.0 and other.min(key=str) == 10.0
    assert sc.parallelize([1.0, 2.0, 3.0]).sum() == 6.0
    assert sc.parallelize([], 2).sum() == 0
    assert sc.parallelize([1, 2, 3]).mean() == 2.0
    assert sc.parallelize([1, 2, 3]).variance() == pytest.approx(2 / 3)
    assert sc.parallelize([1, 2, 3]).stdev() == pytest.approx(math.sqrt(2 / 3))
    assert sc.parallelize([1, 2, 3]).sampleStdev() == 1.0
    assert sc.parallelize([1, 2, 3]).sampleVariance() == 1.0


def test_stats(sc: SparkContext) -> None:
    st = sc.parallelize([1.0, 2.0, 3.0, 4.0], 3).stats()
    assert isinstance(st, StatCounter)
    assert st.asDict() == pytest.approx({"count": 4, "max": 4.0, "mean": 2.5, "min": 1.0, "stdev": 1.118033988749895,
                                         "sum": 10.0, "variance": 1.25})
    assert st.asDict(sample=True)["stdev"] == pytest.approx(1.2909944487358056)
    assert repr(st).startswith("(count: 4, mean: 2.5, stdev: 1.118")
    many = sc.parallelize([float(x) for x in range(1, 1001)], 7).stats()
    assert many.count() == 1000 and many.mean() == pytest.approx(500.5)
    assert many.variance() == pytest.approx((1000 ** 2 - 1) / 12)
    assert many.min() == 1.0 and many.max() == 1000.0
    assert math.isnan(sc.emptyRDD().mean())


def test_histogram(sc: SparkContext) -> None:
    rdd = sc.parallelize(range(51))
    assert rdd.histogram(2) == ([0, 25, 50], [25, 26])
    assert rdd.histogram([0, 5, 25, 50]) == ([0, 5, 25, 50], [5, 20, 26])
    assert rdd.histogram([0, 15, 30, 45, 60]) == ([0, 15, 30, 45, 60], [15, 15, 15, 6])
    assert sc.parallelize(["ab", "ac", "b", "bd", "ef"]).histogram(("a", "b", "c")) == (("a", "b", "c"), [2, 2])
    buckets, counts = sc.parallelize([1.0, 2.0, 2.5, float("nan"), None, 4.0]).histogram(3)
    assert buckets == [1.0, 2.0, 3.0, 4.0] and counts == [1, 2, 1]
    assert sc.parallelize([7, 7, 7]).histogram(4) == ([7, 7], [3])
    with pytest.raises(ValueError, match="empty"):
        sc.emptyRDD().histogram(2)
    with pytest.raises(ValueError):
        rdd.histogram([5, 1])
    with pytest.raises(ValueError):
        rdd.histogram(0)


def test_count_by_value_and_key(sc: SparkContext) -> None:
    assert sorted(sc.parallelize([1, 2, 1, 2, 2], 2).countByValue().items()) == [(1, 2), (2, 3)]
    assert sorted(sc.parallelize([("a", 1), ("b", 1), ("a", 1)]).countByKey().items()) == [("a", 2), ("b", 1)]


def test_approximate_actions_are_exact(sc: SparkContext) -> None:
    rdd = sc.parallelize(range(1000), 10)
    assert rdd.countApprox(1000, 1.0) == 1000
    assert rdd.sumApprox(1000) == pytest.approx(sum(range(1000)))
    assert rdd.meanApprox(1000) == pytest.approx(499.5)
    assert sc.parallelize([i % 20 for i in range(1000)]).countApproxDistinct() == 20


def test_foreach_and_foreach_partition(sc: SparkContext) -> None:
    seen = sc.accumulator(0)
    parts = sc.accumulator(0)
    sc.parallelize([1, 2, 3, 4, 5]).foreach(lambda x: seen.add(x))
    assert seen.value == 15

    def per_partition(iterator: Any) -> None:
        parts.add(1)
        for x in iterator:
            seen.add(x)

    assert sc.parallelize([1, 2, 3, 4, 5], 3).foreachPartition(per_partition) is None
    assert parts.value == 3 and seen.value == 30


def test_run_job(sc: SparkContext) -> None:
    rdd = sc.parallelize(range(6), 3)
    assert sc.runJob(rdd, lambda part: [x * x for x in part]) == [0, 1, 4, 9, 16, 25]
    assert sc.runJob(rdd, lambda part: [x * x for x in part], [0, 2], True) == [0, 1, 16, 25]


# --- shared variables ----------------------------------------------------------------------
def test_broadcast(sc: SparkContext) -> None:
    mapping = {1: 10001, 2: 10002}
    bc = sc.broadcast(mapping)
    assert bc.value == mapping
    assert sc.range(5).map(lambda i: bc.value[i] if i in bc.value else -1).collect() == [-1, 10001, 10002, -1, -1]
    b = sc.broadcast([1, 2, 3, 4, 5])
    assert sc.parallelize([0, 0]).flatMap(lambda x: b.value).collect() == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    b.unpersist()
    assert sc.parallelize([0], 1).map(lambda x: len(b.value)).collect() == [5]  # fetched again
    large = sc.broadcast(list(range(100_000)))
    assert sc.parallelize(range(4), 4).map(lambda i: large.value[i * 1000]).collect() == [0, 1000, 2000, 3000]
    bc.destroy()
    with pytest.raises(Exception, match="destroyed"):
        sc.range(2).map(lambda i: bc.value).collect()


def test_accumulators(sc: SparkContext) -> None:
    a = sc.accumulator(1)
    assert a.value == 1
    a.value = 2
    a += 5
    assert a.value == 7
    assert sc.accumulator(1.0).value == 1.0 and sc.accumulator(1j).value == 1j
    rdd = sc.parallelize([1, 2, 3])

    def f(x: int) -> None:
        nonlocal a
        a += x

    rdd.foreach(f)
    assert a.value == 13
    b = sc.accumulator(0)
    rdd.foreach(lambda x: b.add(x))
    assert b.value == 6
    with pytest.raises(RuntimeError, match="cannot be accessed inside tasks"):
        rdd.map(lambda x: a.value).collect()

    def h(x: int) -> None:
        a.value = 7

    with pytest.raises(RuntimeError, match="cannot be accessed inside tasks"):
        rdd.foreach(h)
    with pytest.raises(TypeError):
        sc.accumulator([1.0, 2.0, 3.0])


def test_custom_accumulator_param(sc: SparkContext) -> None:
    class VectorAccumulatorParam(AccumulatorParam):
        def zero(self, value: list) -> list:
            return [0.0] * len(value)

        def addInPlace(self, val1: list, val2: list) -> list:
            for i in range(len(val1)):
                val1[i] += val2[i]
            return val1

    va = sc.accumulator([1.0, 2.0, 3.0], VectorAccumulatorParam())
    assert va.value == [1.0, 2.0, 3.0]

    def g(x: int) -> None:
        nonlocal va
        va += [x] * 3

    sc.parallelize([1, 2, 3]).foreach(g)
    assert va.value == [7.0, 8.0, 9.0]


def test_accumulator_counts_once_per_partition(sc: SparkContext) -> None:
    """A task that fails and is retried contributes its updates once (only the
    successful attempt's updates are applied)."""
    acc = sc.accumulator(0)

    def flaky(x: int) -> int:
        from shoal.spark import TaskContext

        acc.add(1)
        tc = TaskContext.get()
        if x == 0 and tc.attemptNumber() == 0:
            raise OSError("transient")
        return x

    assert sc.parallelize(range(10), 2).map(flaky).count() == 10
    assert acc.value == 10


# --- failures ------------------------------------------------------------------------------
def test_user_exception_reaches_the_driver(sc: SparkContext) -> None:
    def parse(x: int) -> int:
        if x == 7:
            raise ValueError(f"cannot parse record {x}")
        return x

    with pytest.raises(ValueError, match="cannot parse record 7") as info:
        sc.parallelize(range(10), 2).map(parse).collect()
    exc = info.value
    assert type(exc) is ValueError
    assert isinstance(exc.__cause__, RemoteTraceback)
    assert "in parse" in str(exc.__cause__) and "ValueError: cannot parse record 7" in str(exc.__cause__)
    note = " ".join(getattr(exc, "__notes__", []))
    assert "stage" in note and "task" in note
    assert sc.parallelize(range(3)).map(parse).collect() == [0, 1, 2]  # the context still works


@pytest.mark.parametrize("what", ["lock", "socket"])
def test_unpicklable_closure_names_the_variable(sc: SparkContext, what: str) -> None:
    guard_lock = threading.Lock()
    open_socket = socket.socket()
    try:
        if what == "lock":
            rdd = sc.parallelize([1, 2]).map(lambda x: (guard_lock.locked(), x))
            name = "guard_lock"
        else:
            rdd = sc.parallelize([1, 2]).map(lambda x: (open_socket.fileno(), x))
            name = "open_socket"
        with pytest.raises(SerializationError, match=name):
            rdd.collect()
    finally:
        open_socket.close()


def _sleeper(sc: SparkContext, seconds: float) -> tuple[Any, Any]:
    started = sc.accumulator(0)

    def slow(x: int) -> int:
        started.add(1)
        for _ in range(int(seconds * 10)):  # short sleeps: a kill lands between them
            time.sleep(0.1)
        return x

    return slow, started


def _run_in_group(sc: SparkContext, slow: Any, outcome: dict[str, Any], name: str, group: str | None) -> None:
    if group is not None:
        sc.setJobGroup(group, "a job that sleeps")
    t0 = time.monotonic()
    try:
        sc.parallelize(range(4), 2).map(slow).collect()
        outcome[name] = "finished"
    except Exception as exc:  # noqa: BLE001 - the test looks at the type
        outcome[name] = exc
    outcome[name + " seconds"] = time.monotonic() - t0


def test_cancel_job_group(sc: SparkContext) -> None:
    slow, started = _sleeper(sc, 30)
    outcome: dict[str, Any] = {}
    # PySpark's documented pattern: the thread sets its own job group.
    own = threading.Thread(target=_run_in_group, args=(sc, slow, outcome, "own", "to-cancel"))
    own.start()
    time.sleep(1.0)
    sc.cancelJobGroup("to-cancel")
    own.join(20)
    # An InheritableThread runs in the job group of the thread that created it.
    sc.setJobGroup("inherited", "set by the parent thread")
    child = InheritableThread(target=_run_in_group, args=(sc, slow, outcome, "child", None))
    sc.clearJobGroup()
    child.start()
    time.sleep(1.0)
    sc.cancelJobGroup("inherited")
    child.join(20)
    assert not own.is_alive() and not child.is_alive()
    for name in ("own", "child"):
        assert isinstance(outcome[name], JobCancelled) and outcome[name + " seconds"] < 15
    assert started.value == 0  # killed tasks report no accumulator updates
    t0 = time.monotonic()
    assert sc.parallelize([1, 2, 3]).sum() == 6
    assert time.monotonic() - t0 < 10  # the running tasks were killed, executors are free again


def test_cancel_two_concurrent_job_groups(sc: SparkContext) -> None:
    slow, _ = _sleeper(sc, 4)
    outcome: dict[str, Any] = {}
    threads = [threading.Thread(target=_run_in_group, args=(sc, slow, outcome, g, g)) for g in ("g1", "g2")]
    for t in threads:
        t.start()
    time.sleep(1.0)
    sc.cancelJobGroup("g1")
    sc.cancelJobGroup("g2")
    for t in threads:
        t.join(20)
    assert all(isinstance(outcome[g], JobCancelled) for g in ("g1", "g2"))
    t0 = time.monotonic()
    assert sc.parallelize([1, 2, 3]).sum() == 6
    assert time.monotonic() - t0 < 2.5  # no cancelled task still occupies an executor
