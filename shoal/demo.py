"""``make demo``: a local cluster stores a generated corpus, shows where it lives, reads it
back, then counts its words with the compute engine (executors as containers on the
workers, one task per block, placed where the block lives), first as a PySpark job,
then as a Hadoop Streaming job run by ``shoal mapreduce streaming``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import shoal
from shoal.cluster.local import LocalCluster
from shoal.core.units import format_size

WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there one all we their been has when who will more no if out so said what up its "
    "about into than them can only other new some could time these two may then do first any my now such like "
    "our over man me even most made after also did many before must through back years where much your way "
    "block replica rack worker master shuffle stage lineage partition heartbeat lease pipeline checksum"
).split()


def corpus_part(seed: int, size: int) -> bytes:
    """Deterministic Zipf-like text: frequent words dominate, as in real prose."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) for rank in range(len(WORDS))]
    words = rng.choices(WORDS, weights, k=size // 4)
    lines, i = [], 0
    while i < len(words):
        n = rng.randint(6, 14)
        lines.append(" ".join(words[i : i + n]))
        i += n
    return ("\n".join(lines) + "\n").encode()


def main(folder: Path | None = None, parts: int = 4, part_bytes: int = 6 * 1024 * 1024) -> int:
    console = Console()
    tmp = None
    if folder is None:
        tmp = tempfile.TemporaryDirectory(prefix="shoal-demo-")
        folder = Path(tmp.name) / "cluster"
    cluster = LocalCluster(folder)
    console.rule("[bold]shoal demo")
    started = time.monotonic()
    cluster.up(workers=3, racks=2, overrides={"dfs.block_size": "2M", "dfs.heartbeat_interval_s": "1"})
    console.print(f"local cluster up in {time.monotonic() - started:.1f}s: master + 3 workers on racks r1, r2 ({folder})")
    try:
        with shoal.connect(folder) as c:
            fs = c.fs
            fs.mkdirs("/demo/corpus")
            digests: dict[str, str] = {}
            t0 = time.monotonic()
            for i in range(parts):
                data = corpus_part(i, part_bytes)
                path = f"/demo/corpus/part-{i:05d}.txt"
                with fs.open(path, "wb", overwrite=True) as f:
                    f.write(data)
                digests[path] = hashlib.sha256(data).hexdigest()
            written = sum(s.length for s in fs.listdir("/demo/corpus"))
            console.print(f"stored {parts} files, {format_size(written)} at replication 3 in {time.monotonic() - t0:.2f}s")

            table = Table(title="where the blocks of /demo/corpus live")
            for col in ("file", "block", "length", "replicas (node@rack)", "racks"):
                table.add_column(col)
            for path in sorted(digests):
                for b in fs.blocks(path).blocks:
                    racks = sorted({n.rack for n in b.locations})
                    table.add_row(
                        path.rsplit("/", 1)[1], f"blk_{b.block.block_id}", format_size(b.block.length),
                        " ".join(n.label() for n in b.locations), ",".join(racks),
                    )
            console.print(table)

            t0 = time.monotonic()
            words: Counter[str] = Counter()
            for path, digest in digests.items():
                data = fs.cat(path)
                if hashlib.sha256(data).hexdigest() != digest:
                    console.print(f"[red]MISMATCH reading back {path}[/red]")
                    return 1
                words.update(data.split())
            console.print(
                f"read back {format_size(written)} in {time.monotonic() - t0:.2f}s: every byte matches "
                "(each chunk checked against its CRC32C)"
            )
            top = ", ".join(f"{w.decode()} {n}" for w, n in words.most_common(5))
            console.print(f"most frequent words: {top}")
            report = fs.report()
            console.print(f"cluster: {report.files} files, {report.blocks} blocks, {report.under_replicated_blocks} under-replicated")
            expected = {w.decode(): n for w, n in words.items()}
            if not word_count(console, folder, expected):
                return 1
            if not streaming_word_count(console, folder, fs, expected):
                return 1
    finally:
        cluster.down()
        console.print("cluster stopped")
        if tmp is not None:
            tmp.cleanup()
    return 0


def word_count(console: Console, folder: Path, expected: dict[str, int]) -> bool:
    """The PySpark word count, on the cluster; checked against the count above."""
    import operator

    from shoal.spark import SparkConf, SparkContext

    console.rule("[bold]word count on the compute engine")
    jobs = folder / "jobs"
    conf = (SparkConf().set("spark.executor.instances", "3").set("spark.executor.memory", "256m")
            .set("spark.shoal.jobsDir", str(jobs)))
    t0 = time.monotonic()
    with SparkContext(str(folder), "demo word count", conf=conf) as sc:
        lines = sc.textFile("shoal:///demo/corpus")
        counts = lines.flatMap(str.split).map(lambda w: (w, 1)).reduceByKey(operator.add)
        top = counts.takeOrdered(10, key=lambda kv: -kv[1])
        counts.saveAsTextFile("shoal:///demo/wordcount")
        everything = dict(counts.collect())
        app = sc.applicationId
    console.print(f"{lines.getNumPartitions()} map tasks (one per block) in {time.monotonic() - t0:.1f}s "
                  "including starting 3 executor containers")
    console.print("lineage:\n" + counts.toDebugString().decode())
    console.print("top 10: " + ", ".join(f"{w} {n}" for w, n in top))
    record = json.loads((jobs / f"{app}.json").read_text())
    first = record["jobs"][0]["stages"][0]
    console.print(f"stage {first['stage_id']} ({first['name']}): locality {first.get('locality')}, "
                  f"shuffle written {format_size(first.get('shuffle_write_bytes', 0))}")
    if everything != expected:
        console.print("[red]MISMATCH: the engine's counts differ from a single-process count[/red]")
        return False
    console.print(f"{len(everything)} distinct words; counts match a single-process Counter exactly; "
                  "saved to shoal:///demo/wordcount (see `shoal jobs`)")
    return True


MAPPER = """import sys
out = sys.stdout.write
for line in sys.stdin:
    words = line.split()
    if words:
        out("\\t1\\n".join(words) + "\\t1\\n")
"""
REDUCER = """import sys
current, total = None, 0
for line in sys.stdin:
    word, _, count = line.partition("\\t")
    if word != current:
        if current is not None:
            print(f"{current}\\t{total}")
        current, total = word, 0
    total += int(count)
if current is not None:
    print(f"{current}\\t{total}")
"""


def streaming_word_count(console: Console, folder: Path, fs: Any, expected: dict[str, int]) -> bool:
    """The same count as a Hadoop Streaming job, run by the `shoal` command."""
    console.rule("[bold]the same count as a Hadoop Streaming job")
    work = folder / "streaming"
    work.mkdir(exist_ok=True)
    (work / "mapper.py").write_text(MAPPER)
    (work / "reducer.py").write_text(REDUCER)
    args = ["mapreduce", "streaming", "-cluster", str(folder), "-input", "/demo/corpus",
            "-output", "/demo/wordcount-streaming", "-mapper", "python3 mapper.py", "-combiner", "python3 reducer.py",
            "-reducer", "python3 reducer.py", "-file", str(work / "mapper.py"), "-file", str(work / "reducer.py"),
            "-numReduceTasks", "2", "-quiet"]
    console.print("$ shoal " + shlex.join(args))
    shoal_cmd = Path(sys.executable).with_name("shoal")
    command = [str(shoal_cmd)] if shoal_cmd.exists() else [sys.executable, "-c", "from shoal.cli.main import main; main()"]
    t0 = time.monotonic()
    proc = subprocess.run(command + args, capture_output=True, text=True,
                          env={**os.environ, "SHOAL_JOBS_DIR": str(folder / "jobs")})
    if proc.returncode != 0:
        console.print(f"[red]the streaming job failed:[/red] {proc.stderr.strip()}")
        return False
    console.print(f"finished in {time.monotonic() - t0:.1f}s; Hadoop's job counters:")
    console.print(proc.stderr.strip(), markup=False, highlight=False)
    got: dict[str, int] = {}
    for st in fs.listdir("/demo/wordcount-streaming"):
        if st.path.rsplit("/", 1)[1].startswith("part-"):
            for line in fs.cat(st.path).decode().splitlines():
                word, _, count = line.partition("\t")
                got[word] = int(count)
    if got != expected:
        console.print("[red]MISMATCH: the streaming job's counts differ from a single-process count[/red]")
        return False
    console.print(f"{len(got)} distinct words in shoal:///demo/wordcount-streaming; counts match exactly")
    return True


if __name__ == "__main__":
    sys.exit(main())
