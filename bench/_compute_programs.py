"""The programs each peer of bench/compute.py runs, as Python source (one process per
run: ``python prog.py INPUT OUTPUT RESULT OPTIONS_JSON``)."""

from __future__ import annotations

# --- the peers' programs -------------------------------------------------------------------
# Each program runs as `python prog.py INPUT OUTPUT RESULT OPTIONS_JSON` and writes a small
# JSON result; ready_s is import + context creation, job_s the rest (both inside the
# interpreter, so the parent's wall time minus their sum is interpreter start and exit).
PRELUDE = '''\
import json, os, sys, time
T_START = time.perf_counter()
INPUT, OUTPUT, RESULT = sys.argv[1:4]
OPTIONS = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}


def report(result, t_ready):
    result["ready_s"] = t_ready - T_START
    result["job_s"] = time.perf_counter() - t_ready
    with open(RESULT, "w") as f:
        json.dump(result, f)


def summary(pairs):
    pairs = list(pairs)
    top = sorted(pairs, key=lambda kv: (-kv[1], kv[0]))[:10]
    return {"distinct": len(pairs), "total": sum(c for _, c in pairs), "top10": [[w, c] for w, c in top]}

'''

SHOAL_CONTEXT = '''\
from shoal.spark import SparkContext


def context(name):
    return SparkContext("local[2]", name)

'''

PYSPARK_CONTEXT = '''\
from pyspark import SparkConf, SparkContext


def context(name):
    conf = (SparkConf().set("spark.driver.memory", "2g").set("spark.ui.enabled", "false")
            .set("spark.local.dir", OPTIONS["spark_local_dir"]))
    sc = SparkContext("local[2]", name, conf=conf)
    sc.setLogLevel("WARN")
    return sc

'''

RDD_BODY = {
    "wordcount": '''\
import operator


def main():
    sc = context("wordcount")
    t_ready = time.perf_counter()
    counts = sc.textFile(INPUT).flatMap(str.split).map(lambda w: (w, 1)).reduceByKey(operator.add)
    result = summary(counts.collect())
    sc.stop()
    report(result, t_ready)
''',
    "sort": '''\
def main():
    sc = context("sort")
    t_ready = time.perf_counter()
    (sc.textFile(INPUT).map(lambda l: (l[:10], l[10:])).sortByKey()
       .map(lambda kv: kv[0] + kv[1]).saveAsTextFile(OUTPUT))
    sc.stop()
    report({}, t_ready)
''',
    "tiny": '''\
def main():
    sc = context("tiny")
    t_ready = time.perf_counter()
    value = sc.parallelize(range(100)).map(lambda x: x * x).sum()
    sc.stop()
    report({"value": value}, t_ready)
''',
}

DF_CONTEXT = '''\
from pyspark.sql import SparkSession, functions as F


def session(name):
    spark = (SparkSession.builder.master("local[2]").appName(name)
             .config("spark.driver.memory", "2g").config("spark.ui.enabled", "false")
             .config("spark.local.dir", OPTIONS["spark_local_dir"]).getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    return spark

'''

DF_BODY = {
    "wordcount": '''\
def main():
    spark = session("wordcount")
    t_ready = time.perf_counter()
    words = spark.read.text(INPUT).select(F.explode(F.split("value", r"\\s+")).alias("word"))
    rows = words.where(F.col("word") != "").groupBy("word").count().collect()
    result = summary((r[0], r[1]) for r in rows)
    spark.stop()
    report(result, t_ready)
''',
    "sort": '''\
def main():
    spark = session("sort")
    t_ready = time.perf_counter()
    spark.read.text(INPUT).orderBy(F.substring("value", 1, 10)).write.text(OUTPUT)
    spark.stop()
    report({}, t_ready)
''',
    "tiny": '''\
def main():
    spark = session("tiny")
    t_ready = time.perf_counter()
    value = spark.range(100).select(F.sum(F.col("id") * F.col("id"))).collect()[0][0]
    spark.stop()
    report({"value": value}, t_ready)
''',
}

DASK_CONTEXT = '''\
import dask
import dask.bag as db

'''

DASK_BODY = {
    "wordcount": '''\
def main():
    dask.config.set(scheduler="processes", num_workers=2)
    t_ready = time.perf_counter()
    bag = db.read_text(INPUT, blocksize=OPTIONS["blocksize"])
    freq = bag.str.split().flatten().frequencies().compute()
    report(summary(freq), t_ready)
''',
    "tiny": '''\
def main():
    dask.config.set(scheduler="processes", num_workers=2)
    t_ready = time.perf_counter()
    value = db.from_sequence(range(100), npartitions=2).map(lambda x: x * x).sum().compute()
    report({"value": value}, t_ready)
''',
}

PYTHON_BODY = {
    "wordcount": '''\
from collections import Counter


def main():
    t_ready = time.perf_counter()
    counts = Counter()
    with open(INPUT, encoding="utf-8") as f:
        while True:
            lines = f.readlines(1 << 24)
            if not lines:
                break
            counts.update("".join(lines).split())
    report(summary(counts.items()), t_ready)
''',
    "sort": '''\
def main():
    t_ready = time.perf_counter()
    with open(INPUT, "rb") as f:
        lines = f.readlines()
    lines.sort()
    os.makedirs(OUTPUT, exist_ok=True)
    with open(os.path.join(OUTPUT, "part-00000"), "wb") as f:
        f.writelines(lines)
    report({}, t_ready)
''',
    "tiny": '''\
def main():
    t_ready = time.perf_counter()
    value = sum(x * x for x in range(100))
    report({"value": value}, t_ready)
''',
}

MAIN_GUARD = '''

if __name__ == "__main__":
    main()
'''


def program_source(peer: str, workload: str) -> str:
    """The Python program a peer runs for a workload (gnu-sort has none)."""
    if peer in ("shoal", "pyspark"):
        head = SHOAL_CONTEXT if peer == "shoal" else PYSPARK_CONTEXT
        body = RDD_BODY[workload]
    elif peer == "pyspark-df":
        head, body = DF_CONTEXT, DF_BODY[workload]
    elif peer == "dask":
        head, body = DASK_CONTEXT, DASK_BODY[workload]
    elif peer == "python":
        head, body = "", PYTHON_BODY[workload]
    else:
        raise ValueError(f"{peer} has no Python program")
    return PRELUDE + head + body + MAIN_GUARD
