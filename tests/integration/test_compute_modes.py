"""The same programs in local[2] and on a `shoal up` cluster (executors as containers),
checked against plain Python computations."""

from __future__ import annotations

import json
import operator
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.spark import SparkConf, SparkContext
from tests.conftest import FAST, RunningCluster

WORDS = [f"w{i}" for i in range(300)]


@pytest.fixture(scope="module")
def dfs_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    rc = RunningCluster(tmp_path_factory.mktemp("compute") / "c", 2, 2, {**FAST, "dfs.block_size": "64K"})
    yield rc
    rc.stop()


@pytest.fixture(scope="module")
def corpus(dfs_cluster: RunningCluster) -> list[str]:
    rng = random.Random(7)
    lines = [" ".join(rng.choice(WORDS[: rng.randint(5, 300)]) for _ in range(rng.randint(0, 14)))
             for _ in range(12000)]
    with dfs_cluster.fs.open("/corpus.txt", "wb") as f:
        f.write(("\n".join(lines) + "\n").encode())
    return lines


@pytest.fixture(scope="module", params=["local[2]", "cluster"])
def sc(request: pytest.FixtureRequest, dfs_cluster: RunningCluster, tmp_path_factory: pytest.TempPathFactory,
       ) -> Iterator[SparkContext]:
    mp = pytest.MonkeyPatch()
    mp.setenv("SHOAL_CLUSTER", str(dfs_cluster.folder))
    jobs = tmp_path_factory.mktemp("jobs")
    conf = (SparkConf().set("spark.shoal.jobsDir", str(jobs)).set("spark.executor.instances", "2")
            .set("spark.executor.memory", "256m").set("spark.task.maxFailures", "2")
            .set("spark.locality.wait", "200ms"))
    master = "local[2]" if request.param == "local[2]" else str(dfs_cluster.folder)
    context = SparkContext(master, f"modes-{request.param}", conf=conf)
    context.jobs_dir = jobs  # type: ignore[attr-defined]
    yield context
    context.stop()
    mp.undo()


def test_word_count_over_dfs_blocks(sc: SparkContext, corpus: list[str]) -> None:
    rdd = sc.textFile("shoal:///corpus.txt")
    assert rdd.getNumPartitions() > 2  # one partition per 64 KiB block
    counts = dict(rdd.flatMap(str.split).map(lambda w: (w, 1)).reduceByKey(operator.add).collect())
    assert counts == Counter(w for line in corpus for w in line.split())
    assert rdd.count() == len(corpus)


def test_joins_match_python(sc: SparkContext) -> None:
    left = [(i % 50, i) for i in range(400)]
    right = [(i % 70, -i) for i in range(0, 300, 3)]
    a, b = sc.parallelize(left, 4), sc.parallelize(right, 3)
    rindex = defaultdict(list)
    for k, w in right:
        rindex[k].append(w)
    expected = sorted((k, (v, w)) for k, v in left for w in rindex.get(k, []))
    assert sorted(a.join(b).collect()) == expected
    lexpected = sorted((k, (v, w)) for k, v in left for w in rindex.get(k, [None]))
    assert sorted(a.leftOuterJoin(b).collect(), key=repr) == sorted(lexpected, key=repr)


def test_sort_by_key_is_globally_ordered(sc: SparkContext) -> None:
    rng = random.Random(3)
    data = [(rng.randrange(10**6), i) for i in range(5000)]
    out = sc.parallelize(data, 5).sortByKey(numPartitions=3).collect()
    assert [k for k, _ in out] == sorted(k for k, _ in data)
    desc = sc.parallelize(data, 5).sortByKey(ascending=False, numPartitions=3).keys().collect()
    assert desc == sorted((k for k, _ in data), reverse=True)


def test_group_by_key_and_cache_with_accumulator(sc: SparkContext) -> None:
    evaluated = sc.accumulator(0)

    def tag(x: int) -> tuple[int, int]:
        evaluated.add(1)
        return (x % 7, x)

    pairs = sc.parallelize(range(1000), 4).map(tag).cache()
    grouped = {k: sorted(v) for k, v in pairs.groupByKey().collect()}
    assert grouped == {k: [x for x in range(1000) if x % 7 == k] for k in range(7)}
    assert pairs.count() == 1000
    assert evaluated.value == 1000  # the second action read the cache


def test_broadcast_and_text_output_on_dfs(sc: SparkContext, dfs_cluster: RunningCluster) -> None:
    names = sc.broadcast({i: f"n{i}" for i in range(10)})
    out = f"shoal:///out-{sc.master.replace('/', '_').replace('[', '').replace(']', '')}"
    sc.parallelize(range(10), 3).map(lambda i: names.value[i]).saveAsTextFile(out)
    back = sc.textFile(out).collect()
    assert sorted(back) == sorted(f"n{i}" for i in range(10))
    assert dfs_cluster.fs.exists(out.replace("shoal://", "") + "/_SUCCESS")


def test_user_error_reaches_the_driver_with_its_type(sc: SparkContext) -> None:
    def boom(x: int) -> int:
        if x == 13:
            raise KeyError(f"bad record {x}")
        return x

    with pytest.raises(KeyError, match="bad record 13") as info:
        sc.parallelize(range(20), 2).map(boom).collect()
    assert "boom" in str(info.value.__cause__)
    assert any("stage" in n for n in getattr(info.value, "__notes__", []))


def test_job_record_shows_locality(sc: SparkContext, corpus: list[str]) -> None:
    sc.textFile("shoal:///corpus.txt").map(len).sum()
    apps = [json.loads(p.read_text()) for p in Path(sc.jobs_dir).glob("*.json")]  # type: ignore[attr-defined]
    app = next(a for a in apps if a["app_id"] == sc.applicationId)
    last = app["jobs"][-1]
    assert last["state"] == "succeeded"
    tasks = last["stages"][-1]["tasks"]
    assert tasks and all(t["state"] == "succeeded" for t in tasks)
    levels = {t["locality"] for t in tasks}
    if sc.master.startswith("local"):
        assert levels <= {"ANY", "NO_PREF", "RACK_LOCAL"}  # executors are not on a DFS node
    else:
        assert "NODE_LOCAL" in levels  # executors run on the workers holding the blocks
