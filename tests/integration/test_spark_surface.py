"""The PySpark surface around RDDs: SparkConf, SparkContext life cycle (one active
context, context manager, stop, getOrCreate), SparkSession.builder and
spark.read.text, and PySpark programs run unmodified by `shoal submit`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.compute.context import ComputeContext
from shoal.errors import JobFailed
from shoal.spark import SparkConf, SparkContext
from shoal.spark.sql import Row, SparkSession

SHOAL = str(Path(sys.executable).with_name("shoal"))


@pytest.fixture
def quiet_conf(tmp_path: Path) -> SparkConf:
    return (SparkConf().set("spark.ui.showConsoleProgress", "false")
            .set("spark.shoal.jobsDir", str(tmp_path / "jobs")).set("spark.task.maxFailures", "1"))


def test_spark_conf() -> None:
    conf = SparkConf().setMaster("local[2]").setAppName("app").set("spark.executor.memory", "1g")
    conf.setAll([("a", 1), ("b", "two")]).setIfMissing("a", 5).setExecutorEnv("K", "V")
    assert conf.get("spark.master") == "local[2]" and conf.get("spark.app.name") == "app"
    assert conf.get("a") == "1" and conf.get("missing") is None and conf.get("missing", "d") == "d"
    assert conf.contains("b") and not conf.contains("c")
    assert ("spark.executorEnv.K", "V") in conf.getAll()
    assert "spark.executor.memory=1g" in conf.toDebugString().splitlines()


def test_context_life_cycle(quiet_conf: SparkConf) -> None:
    with SparkContext("local[2]", "life", conf=quiet_conf) as sc:
        assert ComputeContext.active() is sc and SparkContext.getOrCreate() is sc
        assert sc.master == "local[2]" and sc.appName == "life" and sc.defaultParallelism == 2
        assert sc.defaultMinPartitions == 2 and sc.getConf().get("spark.app.name") == "life"
        assert sc.getConf().get("spark.task.maxFailures") == "1"
        assert repr(sc) == "<SparkContext master=local[2] appName=life>"
        with pytest.raises(ValueError, match="Cannot run multiple SparkContexts at once"):
            SparkContext("local[1]", "second", conf=quiet_conf)
        rdd = sc.parallelize([1, 2, 3])
        assert rdd.sum() == 6
    assert ComputeContext.active() is None
    with pytest.raises(JobFailed, match="stopped"):
        rdd.sum()
    sc.stop()  # stopping twice is harmless
    with SparkContext(conf=quiet_conf.setMaster("local[1]").setAppName("again")) as sc2:
        assert sc2.defaultParallelism == 1 and sc2.parallelize(range(4)).count() == 4


def test_spark_session_builder_and_read_text(quiet_conf: SparkConf, tmp_path: Path) -> None:
    data = tmp_path / "input.txt"
    data.write_text("first line\nsecond line\n\nlast\n")
    builder = SparkSession.builder.master("local[2]").appName("session")
    for key, value in quiet_conf.getAll():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    try:
        sc = spark.sparkContext
        assert isinstance(sc, SparkContext) and sc.master == "local[2]" and sc.appName == "session"
        assert SparkSession.builder.getOrCreate().sparkContext is sc  # the active one
        assert SparkSession.getActiveSession().sparkContext is sc
        df = spark.read.text(str(data))
        rows = df.rdd.collect()
        assert rows == [Row(value="first line"), Row(value="second line"), Row(value=""), Row(value="last")]
        assert [r.value for r in rows] == ["first line", "second line", "", "last"]
        assert rows[0]["value"] == "first line" and rows[0].asDict() == {"value": "first line"}
        assert df.columns == ["value"] and df.count() == 4
        assert df.rdd.map(lambda r: len(r.value)).sum() == 25
        whole = spark.read.text(str(data), wholetext=True).collect()
        assert whole == [Row(value="first line\nsecond line\n\nlast\n")]
        with pytest.raises(NotImplementedError):
            df.select("value")
    finally:
        spark.stop()
    assert ComputeContext.active() is None


JOB = '''\
import sys

import pyspark
from pyspark import SparkConf, SparkContext, StorageLevel
from pyspark.sql import SparkSession

from wordhelper import normalize

spark = SparkSession.builder.appName("submitted").getOrCreate()
sc = spark.sparkContext
assert isinstance(sc, SparkContext) and pyspark.SparkContext is SparkContext
print("pyspark from", pyspark.__file__)
lines = spark.read.text(sys.argv[1]).rdd.map(lambda row: row.value)
words = lines.flatMap(lambda line: line.split()).map(normalize).persist(StorageLevel.MEMORY_ONLY)
counts = words.map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b)
for word, n in sorted(counts.collect()):
    print(word, n)
print("master", sc.master, "parallelism", sc.defaultParallelism, "app", sc.appName)
counts.saveAsTextFile(sys.argv[2])
if len(sys.argv) > 3:
    words.map(lambda w: 1 // 0).count()
spark.stop()
'''

HELPER = '''\
def normalize(word):
    return word.strip(".,!").lower()
'''


def submit(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SHOAL_JOBS_DIR": str(tmp_path / "jobs")}
    env.pop("SHOAL_MASTER", None)
    env.pop("SHOAL_SUBMIT_CONF", None)
    return subprocess.run([SHOAL, "submit", "--master", "local[2]", "--conf", "spark.task.maxFailures=1",
                           str(tmp_path / "app" / "job.py"), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_shoal_submit_runs_a_pyspark_program(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "job.py").write_text(JOB)
    (app / "wordhelper.py").write_text(HELPER)  # imported by the job, used in its tasks
    (tmp_path / "words.txt").write_text("The cat, the hat.\nA cat!\n")
    proc = submit(tmp_path, str(tmp_path / "words.txt"), str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0].startswith("pyspark from ") and os.path.join("shoal", "spark", "shim") in out[0]
    assert out[1:] == ["a 1", "cat 2", "hat 1", "the 2", "master local[2] parallelism 2 app submitted"]
    saved = sorted(line for p in (tmp_path / "out").glob("part-*") for line in p.read_text().splitlines())
    assert saved == ["('a', 1)", "('cat', 2)", "('hat', 1)", "('the', 2)"]
    assert (tmp_path / "out" / "_SUCCESS").exists()
    failed = submit(tmp_path, str(tmp_path / "words.txt"), str(tmp_path / "out2"), "fail")
    assert failed.returncode != 0
    assert "ZeroDivisionError" in failed.stderr and "integer division or modulo by zero" in failed.stderr
