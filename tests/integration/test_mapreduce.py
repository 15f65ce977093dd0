"""MapReduce on shoal: Hadoop Streaming through ``shoal mapreduce streaming`` (a real
subprocess, local[N] and on a ``shoal up`` cluster) and the class API
(``MapReduceJob``, local[2] and on the cluster), each result checked against a plain
single-process computation of the same thing. Counters are read from the report the
CLI prints on stderr (Hadoop's layout) and scheduling facts (slow start, speculation,
task status) from the job records (``SHOAL_JOBS_DIR``)."""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shoal.compute.context import ComputeContext
from shoal.errors import JobFailed
from shoal.mapreduce import MapReduceJob
from tests.clitools import SHOAL, fails
from tests.conftest import FAST, RunningCluster

PROGRAMS = Path(__file__).parent / "mr_programs"
MiB = 1024 * 1024
DFS_BLOCK = 64 * 1024


def task_id(kind: str) -> str:
    """A Hadoop task id pattern: ``task_<stamp>_<job seq>_<m|r>_<6 digits>``."""
    return r"task_\d+_\d{4}_" + kind + r"_\d{6}"


# --- helpers -------------------------------------------------------------------------------
def streaming_command(*args: str, jobs_dir: Path, master: str | None = "local[2]",
                      env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """argv and environment of ``shoal mapreduce streaming ARGS -quiet`` (no inherited
    SHOAL_* settings; job records in ``jobs_dir``)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    full["SHOAL_JOBS_DIR"] = str(jobs_dir)
    full.update(env or {})
    argv = [*SHOAL, "mapreduce", "streaming", *args, "-quiet"]
    if master is not None:
        argv += ["-master", master]
    return argv, full


def streaming(*args: str, jobs_dir: Path, master: str | None = "local[2]", env: dict[str, str] | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``shoal mapreduce streaming ARGS`` as a subprocess; bytes out, never raises on status."""
    argv, full = streaming_command(*args, jobs_dir=jobs_dir, master=master, env=env)
    return subprocess.run(argv, env=full, capture_output=True, timeout=timeout)


def ok(res: subprocess.CompletedProcess) -> str:
    """The job succeeded: its stderr (the report)."""
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 0, f"exit {res.returncode}: {err}"
    assert "Traceback" not in err, err
    return err


def failed(res: subprocess.CompletedProcess) -> str:
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 1, f"exit {res.returncode}: {err}"
    assert "Traceback" not in err, err
    return err


def parse_counters(report: str) -> dict[str, dict[str, int]]:
    """Hadoop's listing: ``Counters: N``, then groups (one tab) and ``name=value`` (two
    tabs). Checks that N is the number of counters listed."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Counters: "))
    declared = int(lines[start].split(": ", 1)[1])
    groups: dict[str, dict[str, int]] = {}
    group = None
    for line in lines[start + 1:]:
        if line.startswith("\t\t"):
            name, _, value = line[2:].rpartition("=")
            assert group is not None, line
            groups[group][name] = int(value)
        elif line.startswith("\t"):
            group = line[1:]
            groups[group] = {}
        else:
            break
    assert declared == sum(len(g) for g in groups.values()), report
    return groups


def framework(counters: dict[str, dict[str, int]]) -> dict[str, int]:
    return counters["Map-Reduce Framework"]


def local_parts(out: Path) -> dict[str, list[str]]:
    """A local output directory's part files: name -> lines."""
    return {p.name: p.read_text().splitlines() for p in sorted(out.glob("part-*"))}


def job_record(jobs_dir: Path) -> dict[str, Any]:
    """The only job of the only application recorded in ``jobs_dir``."""
    apps = [json.loads(p.read_text()) for p in jobs_dir.glob("*.json")]
    assert len(apps) == 1, [a["app_id"] for a in apps]
    assert len(apps[0]["jobs"]) == 1, apps[0]["jobs"]
    return apps[0]["jobs"][0]


def stages(job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(map stage, reduce stage) of a job with reducers."""
    kinds = [st["kind"] for st in job["stages"]]
    assert kinds == ["shuffle map", "result"], kinds
    return job["stages"][0], job["stages"][1]


def task_end(t: dict[str, Any]) -> float:
    return t["start"] + t["duration_s"]


def program(tmp_path: Path, name: str) -> str:
    """A copy of mr_programs/NAME, executable, to ship with -file."""
    dst = tmp_path / name
    shutil.copyfile(PROGRAMS / name, dst)
    dst.chmod(0o755)
    return str(dst)


def venv_path_env() -> str:
    """PATH for the commands with this interpreter's directory first, so the scripts'
    ``#!/usr/bin/env python3`` starts it directly (no version-manager shim)."""
    return "PATH=" + os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)])


def word_corpus(seed: int, lines: int, vocabulary: int = 400) -> list[str]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocabulary)] + ["alpha", "Beta", "gamma-ray", "x_y", "12", "007"]
    return [" ".join(rng.choice(words[: rng.randint(3, len(words))]) for _ in range(rng.randint(0, 12)))
            + (" " * rng.randint(0, 2)) for _ in range(lines)]


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def counts_of(lines: list[str]) -> dict[str, int]:
    """Output lines ``key<TAB>count`` as a dict; a key is never repeated."""
    out: dict[str, int] = {}
    for line in lines:
        key, count = line.split("\t")
        assert key not in out, f"{key!r} output twice"
        out[key] = int(count)
    return out


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    d = tmp_path / "jobs"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def dfs_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    """One 2-worker cluster for this module's cluster-mode jobs (64 KiB default blocks)."""
    rc = RunningCluster(tmp_path_factory.mktemp("mapreduce") / "c", 2, 1, {**FAST, "dfs.block_size": "64K"})
    yield rc
    rc.stop()


# --- 1. streaming word count with Python scripts --------------------------------------------
def test_streaming_word_count_python_scripts(tmp_path: Path, jobs_dir: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    corpus = [word_corpus(seed, 1500) for seed in (1, 2, 3)]
    for i, lines in enumerate(corpus):
        write_lines(inputs / f"part{i}.txt", lines)
    everything = [line for lines in corpus for line in lines]
    expected = Counter(w for line in everything for w in line.split())
    out = tmp_path / "out"
    res = streaming("-input", str(inputs), "-output", str(out), "-mapper", "wc_mapper.py",
                    "-reducer", "wc_reducer.py", "-file", program(tmp_path, "wc_mapper.py"),
                    "-file", program(tmp_path, "wc_reducer.py"), "-numReduceTasks", "3",
                    "-cmdenv", venv_path_env(), jobs_dir=jobs_dir)
    report = ok(res)
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "part-00000", "part-00001", "part-00002"]
    parts = local_parts(out)
    assert counts_of([line for lines in parts.values() for line in lines]) == expected
    for name, lines in parts.items():  # a reducer reads its keys sorted (as bytes) and keeps that order
        keys = [line.split("\t")[0].encode() for line in lines]
        assert keys == sorted(keys), name
    assert sum(1 for lines in parts.values() if lines) == 3  # hash partitioning spread the words
    counters = parse_counters(report)
    fw = framework(counters)
    assert fw["Map input records"] == len(everything)
    assert fw["Map output records"] == sum(expected.values())
    assert fw["Reduce input records"] == sum(expected.values())
    assert fw["Reduce input groups"] == len(expected)
    assert fw["Reduce output records"] == len(expected)
    assert counters["Job Counters"]["Launched map tasks"] == 3  # one split per small file
    assert counters["Job Counters"]["Launched reduce tasks"] == 3
    assert fw["Shuffled Maps "] == 3 * 3  # (sic) every reducer fetched every map's output
    assert fw["Merged Map outputs"] == 3 * 3
    assert "Combine input records" not in fw  # no combiner
    assert re.search(r"^Job job_\d+_\d{4} completed successfully", report, re.M), report


def test_streaming_word_count_on_the_cluster(tmp_path: Path, jobs_dir: Path, dfs_cluster: RunningCluster) -> None:
    """The same job on a `shoal up` cluster: DFS input in 64 KiB blocks (one map task
    each, where the block lives), scripts shipped with -file into the executor
    containers, a combiner, and the output on the DFS."""
    lines = word_corpus(9, 6000)
    dfs_cluster.fs.mkdirs("/wc/in")
    with dfs_cluster.fs.open("/wc/in/words.txt", "wb", block_size=DFS_BLOCK, overwrite=True) as f:
        f.write(("\n".join(lines) + "\n").encode())
    blocks = len(dfs_cluster.fs.blocks("/wc/in/words.txt").blocks)
    assert blocks > 2
    report = ok(streaming("-input", "/wc/in", "-output", "/wc/out", "-mapper", "wc_mapper.py",
                          "-combiner", "wc_reducer.py", "-reducer", "wc_reducer.py",
                          "-file", program(tmp_path, "wc_mapper.py"), "-file", program(tmp_path, "wc_reducer.py"),
                          "-numReduceTasks", "2", "-cmdenv", venv_path_env(), "-cluster", str(dfs_cluster.folder),
                          master=None, jobs_dir=jobs_dir))
    names = dfs_cluster.fs.ls("/wc/out")
    assert sorted(n.rsplit("/", 1)[1] for n in names) == ["_SUCCESS", "part-00000", "part-00001"]
    got = [line for n in names if "part-" in n for line in dfs_cluster.fs.cat(n).decode().splitlines()]
    assert counts_of(got) == Counter(w for line in lines for w in line.split())
    counters = parse_counters(report)
    assert counters["Job Counters"]["Launched map tasks"] >= blocks
    # Every worker holds a replica of every block here, so every map ran where its block is.
    assert counters["Job Counters"]["Data-local map tasks"] == counters["Job Counters"]["Launched map tasks"]
    fw = framework(counters)
    assert fw["Map input records"] == len(lines)
    assert fw["Combine input records"] == fw["Map output records"] > fw["Combine output records"]


# --- 2. shell tools only, with a combiner ----------------------------------------------------
AWK_MAP = "awk '{for(i=1;i<=NF;i++) print $i \"\\t1\"}'"
AWK_SUM = "awk -F'\\t' '$1 != k { if (NR > 1) print k \"\\t\" s; k = $1; s = 0 } { s += $2 } " \
          "END { if (NR > 0) print k \"\\t\" s }'"


def test_streaming_word_count_awk_with_combiner(tmp_path: Path, jobs_dir: Path) -> None:
    lines = word_corpus(4, 4000, vocabulary=60)
    write_lines(tmp_path / "in.txt", lines)
    expected = Counter(w for line in lines for w in line.split())
    out = tmp_path / "out"
    report = ok(streaming("-input", str(tmp_path / "in.txt"), "-output", str(out), "-mapper", AWK_MAP,
                          "-combiner", AWK_SUM, "-reducer", AWK_SUM, "-D", "mapred.reduce.tasks=2",  # Hadoop 1 name
                          jobs_dir=jobs_dir))
    parts = local_parts(out)
    assert sorted(parts) == ["part-00000", "part-00001"]
    assert counts_of([line for part in parts.values() for line in part]) == expected
    counters = parse_counters(report)
    assert counters["Job Counters"]["Launched reduce tasks"] == 2
    fw = framework(counters)
    assert fw["Map output records"] == sum(expected.values())
    assert fw["Combine input records"] == fw["Map output records"]
    # One split, few distinct words: the combiner leaves about one record per word.
    assert len(expected) <= fw["Combine output records"] < fw["Combine input records"]
    assert fw["Reduce input records"] == fw["Combine output records"]
    assert fw["Reduce output records"] == len(expected)


def test_streaming_command_runs_without_a_shell(tmp_path: Path, jobs_dir: Path) -> None:
    """The command is split like a shell word list but no shell runs it: ``$HOME`` in
    an unquoted word reaches awk as is, and the quoted program keeps its spaces."""
    write_lines(tmp_path / "in.txt", ["a b", "c\td", ""])
    out = tmp_path / "out"
    ok(streaming("-input", str(tmp_path / "in.txt"), "-output", str(out), "-numReduceTasks", "0",
                 "-mapper", "awk -v tag=$HOME '{ print tag \"|\" $0 }'", jobs_dir=jobs_dir))
    assert sorted(line for part in local_parts(out).values() for line in part) == \
        sorted(["$HOME|a b", "$HOME|c\td", "$HOME|"])


# --- 3. secondary sort -------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["n", "nr"])
def test_streaming_secondary_sort(tmp_path: Path, jobs_dir: Path, order: str) -> None:
    """Hadoop's documented secondary sort: partition on the customer only, sort on
    customer then numeric timestamp (ascending, or descending with ``nr``)."""
    rng = random.Random(11)
    records = []
    for c in range(30):
        for ts in rng.sample(range(1, 2_000_000), rng.randint(1, 40)):  # 1..7 digits: text order differs
            records.append((f"cust{c:02d}", ts, f"{rng.randint(1, 99999) / 100:.2f}"))
    rng.shuffle(records)
    (tmp_path / "in.csv").write_text("".join(f"{c},{ts},{amount}\n" for c, ts, amount in records))
    out = tmp_path / "out"
    ok(streaming("-input", str(tmp_path / "in.csv"), "-output", str(out),
                 "-mapper", "tr , '\\t'", "-reducer", "cat", "-numReduceTasks", "4",
                 "-D", "stream.num.map.output.key.fields=2",
                 "-D", "mapreduce.partition.keypartitioner.options=-k1,1",
                 "-partitioner", "org.apache.hadoop.mapred.lib.KeyFieldBasedPartitioner",
                 "-D", "mapreduce.job.output.key.comparator.class="
                       "org.apache.hadoop.mapreduce.lib.partition.KeyFieldBasedComparator",
                 "-D", f"mapreduce.partition.keycomparator.options=-k1,1 -k2,2{order}",
                 jobs_dir=jobs_dir))
    parts = local_parts(out)
    assert len(parts) == 4
    owner: dict[str, str] = {}
    for name, lines in parts.items():
        for line in lines:
            customer = line.split("\t")[0]
            assert owner.setdefault(customer, name) == name, f"{customer} is in {owner[customer]} and {name}"
    assert len(set(owner.values())) > 1  # the customers were spread over several reducers
    sign = -1 if order == "nr" else 1
    for name, lines in parts.items():
        mine = [r for r in records if owner.get(r[0]) == name]
        want = [f"{c}\t{ts}\t{a}" for c, ts, a in sorted(mine, key=lambda r: (r[0], sign * r[1]))]
        assert lines == want, name
    assert sorted(owner) == sorted({r[0] for r in records})


# --- 4. the class API ------------------------------------------------------------------------
class WordCountJob(MapReduceJob):
    def mapper(self, _: Any, line: str) -> Iterator[tuple[str, int]]:
        words = line.split()
        if not words:
            self.increment_counter("Lines", "blank")
        for w in words:
            self.increment_counter("Words", "letters", len(w))
            yield w, 1

    def combiner(self, word: str, counts: Iterator[int]) -> Iterator[tuple[str, int]]:
        yield word, sum(counts)

    def reducer(self, word: str, counts: Iterator[int]) -> Iterator[tuple[str, int]]:
        yield word, sum(counts)


class ShoutJob(MapReduceJob):
    """Map-only: (number of words, the line upper-cased)."""

    reducers = 0

    def mapper(self, _: Any, line: str) -> Iterator[tuple[int, str]]:
        yield len(line.split()), line.upper()


class HalfWordsJob(MapReduceJob):
    """Lines by half their word count: int and float keys (0, 0.5, 1, 1.5, ...)."""

    def mapper(self, _: Any, line: str) -> Iterator[tuple[float, int]]:
        n = len(line.split())
        yield (n // 2 if n % 2 == 0 else n / 2), 1

    def reducer(self, key: float, ones: Iterator[int]) -> Iterator[tuple[float, int]]:
        yield key, sum(ones)


class BareValuesJob(MapReduceJob):
    def mapper(self, _: Any, line: str) -> Iterator[str]:
        yield line  # not a (key, value) pair

    def reducer(self, key: Any, values: Iterator[Any]) -> Iterator[tuple[Any, Any]]:
        yield key, list(values)


@dataclass
class Mode:
    """Where a class-API job runs and where its files are: local paths in local[2],
    ``shoal:///`` paths on the cluster."""

    name: str
    ctx: ComputeContext
    root: Path | None  # local mode: a folder
    rc: RunningCluster | None  # cluster mode: the cluster

    def path(self, name: str) -> str:
        if self.rc is not None:
            return f"shoal:///classapi/{name}"
        assert self.root is not None
        return str(self.root / name)

    def write(self, name: str, lines: list[str]) -> str:
        data = "".join(line + "\n" for line in lines).encode()
        if self.rc is not None:
            with self.rc.fs.open(f"/classapi/{name}", "wb", block_size=DFS_BLOCK, overwrite=True) as f:
                f.write(data)
        else:
            Path(self.path(name)).write_bytes(data)
        return self.path(name)

    def listing(self, out: str) -> list[str]:
        if self.rc is not None:
            return sorted(p.rsplit("/", 1)[1] for p in self.rc.fs.ls(out.replace("shoal://", "")))
        return sorted(os.listdir(out)) if os.path.isdir(out) else []

    def parts(self, out: str) -> dict[str, list[str]]:
        names = [n for n in self.listing(out) if n.startswith("part-")]
        if self.rc is not None:
            base = out.replace("shoal://", "")
            return {n: self.rc.fs.cat(f"{base}/{n}").decode().splitlines() for n in names}
        return {n: Path(out, n).read_text().splitlines() for n in names}


@pytest.fixture(scope="class", params=["local[2]", "cluster"])
def mode(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mode]:
    """An active context for the class's jobs (``MapReduceJob.run`` uses it)."""
    mp = pytest.MonkeyPatch()
    conf = {"spark.shoal.jobsDir": str(tmp_path_factory.mktemp("jobs")), "spark.ui.showConsoleProgress": "false",
            "spark.task.maxFailures": "2"}
    rc: RunningCluster | None = None
    root: Path | None = None
    if request.param == "cluster":
        rc = request.getfixturevalue("dfs_cluster")
        mp.setenv("SHOAL_CLUSTER", str(rc.folder))
        conf.update({"spark.executor.instances": "2", "spark.executor.memory": "256m",
                     "spark.locality.wait": "200ms"})
        master = str(rc.folder)
    else:
        root = tmp_path_factory.mktemp("classapi")
        master = "local[2]"
    ctx = ComputeContext(master, f"mr-class-api-{request.param}", conf)
    try:
        yield Mode(request.param, ctx, root, rc)
    finally:
        ctx.stop()
        mp.undo()


class TestClassAPI:
    def test_word_count_with_combiner_and_user_counters(self, mode: Mode) -> None:
        lines = word_corpus(5, 9000)
        src = mode.write("wc.txt", lines)
        out = mode.path("wc-out")
        result = WordCountJob.run(input=src, output=out, reducers=3, quiet=True)
        expected = Counter(w for line in lines for w in line.split())
        parts = mode.parts(out)
        assert sorted(parts) == ["part-00000", "part-00001", "part-00002"]
        assert "_SUCCESS" in mode.listing(out)
        assert counts_of([line for part in parts.values() for line in part]) == expected
        for name, part in parts.items():  # each reducer's keys in sorted order
            keys = [line.split("\t")[0] for line in part]
            assert keys == sorted(keys), name
        c = result.counters
        assert c.get("Words", "letters") == sum(len(w) * n for w, n in expected.items())
        assert c.get("Lines", "blank") == sum(1 for line in lines if not line.split())
        assert c["Map input records"] == len(lines)
        assert c["Map output records"] == sum(expected.values())
        assert c["Combine input records"] == c["Map output records"]
        assert c["Combine output records"] < c["Combine input records"]
        assert c["Reduce input records"] == c["Combine output records"]
        assert c["Reduce input groups"] == c["Reduce output records"] == len(expected)
        assert c["Launched map tasks"] == result.maps and c["Launched reduce tasks"] == 3
        if mode.rc is not None:
            assert result.maps > 1  # one map per 64 KiB DFS block
            assert c["Data-local map tasks"] >= 1

    def test_map_only_job_writes_mapper_pairs(self, mode: Mode) -> None:
        lines = word_corpus(6, 3000)
        src = mode.write("shout.txt", lines)
        out = mode.path("shout-out")
        result = ShoutJob.run(input=src, output=out, quiet=True)
        parts = mode.parts(out)
        assert len(parts) == result.maps and result.reduces == 0
        got = [line for part in parts.values() for line in part]
        assert Counter(got) == Counter(f"{len(line.split())}\t{line.upper()}" for line in lines)
        assert result.counters["Map input records"] == len(lines)
        assert result.counters["Launched map tasks"] == result.maps
        assert "Launched reduce tasks" not in result.counters.as_dict().get("Job Counters", {})

    def test_map_only_job_counts_map_output_records(self, mode: Mode) -> None:
        lines = word_corpus(7, 500)
        result = ShoutJob.run(input=mode.write("count.txt", lines), output=mode.path("count-out"), quiet=True)
        assert result.counters["Map output records"] == len(lines)

    def test_numeric_keys_reach_the_reducer_in_numeric_order(self, mode: Mode) -> None:
        lines = word_corpus(9, 2000)
        out = mode.path("half-out")
        HalfWordsJob.run(input=mode.write("half.txt", lines), output=out, reducers=1, quiet=True)
        halves = Counter(len(line.split()) / 2 for line in lines)
        want = [f"{int(k) if k == int(k) else k}\t{n}" for k, n in sorted(halves.items())]
        assert len(want) > 10  # two-digit keys: text order would differ
        assert mode.parts(out) == {"part-00000": want}

    def test_mapper_yielding_non_pairs_fails_the_job(self, mode: Mode) -> None:
        src = mode.write("bare.txt", ["one line", "two"])
        out = mode.path("bare-out")
        with pytest.raises(JobFailed) as info:
            BareValuesJob.run(input=src, output=out, quiet=True)
        message = str(info.value)
        assert "TypeError" in message and "BareValuesJob.mapper" in message, message
        assert "(key, value) pairs" in message, message
        assert re.search(r"map task " + task_id("m"), message), message
        assert isinstance(info.value.__cause__, TypeError), repr(info.value.__cause__)
        assert "_SUCCESS" not in mode.listing(out)


def test_class_api_run_starts_and_stops_its_own_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an active context ``run(master=...)`` makes one for the job (and stops
    it), and prints Hadoop's report with the user's counter groups."""
    assert ComputeContext.active() is None
    lines = word_corpus(8, 500)
    write_lines(tmp_path / "in.txt", lines)
    report = io.StringIO()
    monkeypatch.setenv("SHOAL_JOBS_DIR", str(tmp_path / "jobs"))
    result = WordCountJob.run(input=str(tmp_path / "in.txt"), output=str(tmp_path / "out"), reducers=2,
                              master="local[2]", report_to=report)
    assert ComputeContext.active() is None
    expected = Counter(w for line in lines for w in line.split())
    assert counts_of([line for part in local_parts(tmp_path / "out").values() for line in part]) == expected
    counters = parse_counters(report.getvalue())
    assert counters["Words"]["letters"] == sum(len(w) * n for w, n in expected.items())
    assert counters["Map-Reduce Framework"]["Reduce output records"] == len(expected)
    assert result.counters["Reduce output records"] == len(expected)


# --- 5. split boundaries ------------------------------------------------------------------------
def random_lines(seed: int, n: int, max_len: int) -> list[bytes]:
    rng = random.Random(seed)
    alphabet = "abcdefghij klmnop\tqrstuvwxyzé€ 0123456789"
    return [("".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len)))).encode() for _ in range(n)]


def mid_line_boundaries(data: bytes, block: int) -> int:
    """How many split boundaries fall inside a line (not right after a newline)."""
    return sum(1 for b in range(block, len(data), block) if data[b - 1:b] != b"\n")


def boundary_text(block: int, boundaries: int) -> tuple[bytes, list[bytes]]:
    """Text over ``boundaries`` block boundaries, and its lines (without terminators).
    Most boundaries fall inside a line; at the 2nd a line starts exactly on it; at the
    4th a ``\\r\\n`` is cut between its two bytes; a line longer than two blocks starts
    in the 6th block. One line in ten ends ``\\r\\n``; the last has no newline."""
    rng = random.Random(21)
    filler = random_lines(22, 500, 300)
    data = bytearray()
    lines: list[bytes] = []

    def add(body: bytes, end: bytes = b"\n") -> None:
        data.extend(body + end)
        lines.append(body)

    b = 1
    while b <= boundaries:
        target = b * block
        while target - len(data) > 400:
            add(rng.choice(filler), b"\r\n" if rng.random() < 0.1 else b"\n")
        gap = target - len(data)
        if b == 2:
            add(b"e" * (gap - 1))
            assert len(data) == target
        elif b == 4:
            add(b"c" * (gap - 1), b"\r\n")
            assert data[target - 1:target + 1] == b"\r\n"
        elif b == 6:
            add(b"L" * (gap + 2 * block + 1234))
            b += 2
        b += 1
    for _ in range(150):
        add(rng.choice(filler))
    add(b"the last line, without a newline", b"")
    return bytes(data), lines


def test_split_boundaries_dfs_blocks(tmp_path: Path, jobs_dir: Path, dfs_cluster: RunningCluster) -> None:
    """Lines crossing 64 KiB DFS block boundaries are read by exactly one map task
    each (Hadoop's LineRecordReader rule), whatever the boundary cuts: a cat map-only
    job on the cluster outputs each line once, \\r\\n as \\n."""
    data, lines = boundary_text(DFS_BLOCK, 11)
    with dfs_cluster.fs.open("/split/in.txt", "wb", block_size=DFS_BLOCK, overwrite=True) as f:
        f.write(data)
    blocks = -(-len(data) // DFS_BLOCK)
    assert len(dfs_cluster.fs.blocks("/split/in.txt").blocks) == blocks == 12
    report = ok(streaming("-input", "/split/in.txt", "-output", "/split/out", "-mapper", "cat",
                          "-numReduceTasks", "0", "-cluster", str(dfs_cluster.folder), master=None,
                          jobs_dir=jobs_dir))
    names = dfs_cluster.fs.ls("/split/out")
    assert "/split/out/_SUCCESS" in names
    parts = [n for n in names if n.rsplit("/", 1)[1].startswith("part-")]
    assert len(parts) == blocks
    text = b"".join(dfs_cluster.fs.cat(n) for n in sorted(parts))
    assert text.endswith(b"\n") and b"\r" not in text
    assert Counter(text.split(b"\n")[:-1]) == Counter(lines)
    counters = parse_counters(report)
    assert counters["Job Counters"]["Launched map tasks"] == blocks
    assert counters["Job Counters"]["Data-local map tasks"] == blocks
    assert framework(counters)["Map input records"] == len(lines)
    assert framework(counters)["Map output records"] == len(lines)


def test_split_boundaries_large_local_file(tmp_path: Path, jobs_dir: Path) -> None:
    """A local file of 36 MiB is two splits (local files split at 32 MiB, Hadoop's
    fs.local.block.size); the line crossing 32 MiB is output once."""
    rng = random.Random(5)
    chunk = random_lines(9, 3000, 200)
    average = sum(len(line) + 7 for line in chunk) / len(chunk)
    n = int(37 * MiB / average)  # 32 MiB, then the rest: over Hadoop's 10% slop, so a split of its own
    lines = [line + b"%d" % i for i, line in enumerate(rng.choices(chunk, k=n))]  # every line distinct
    data = b"".join(line + b"\n" for line in lines)
    assert 32 * MiB * 1.1 < len(data) < 64 * MiB and mid_line_boundaries(data, 32 * MiB) == 1
    (tmp_path / "big.txt").write_bytes(data)
    out = tmp_path / "out"
    report = ok(streaming("-input", str(tmp_path / "big.txt"), "-output", str(out), "-mapper", "cat",
                          "-numReduceTasks", "0", jobs_dir=jobs_dir))
    parts = sorted(out.glob("part-*"))
    assert [p.name for p in parts] == ["part-00000", "part-00001"]
    got = sorted(line for p in parts for line in p.read_bytes().split(b"\n")[:-1])
    assert got == sorted(lines)
    counters = parse_counters(report)
    assert counters["Job Counters"]["Launched map tasks"] == 2
    assert framework(counters)["Map input records"] == len(lines)


# --- 6. errors ---------------------------------------------------------------------------------
def small_input(folder: Path, name: str = "in.txt") -> str:
    write_lines(folder / name, ["a b c", "b c", "c"])
    return str(folder / name)


def old_output(folder: Path) -> Path:
    """An output directory left by an earlier job: two parts and _SUCCESS."""
    out = folder / "old-out"
    out.mkdir()
    for name, text in (("part-00000", "old 1\n"), ("part-00001", "old 2\n"), ("_SUCCESS", "")):
        (out / name).write_text(text)
    return out


@dataclass
class Failure:
    res: subprocess.CompletedProcess
    out: Path


# Command lines that must fail, by name: (args after -input/-output, master).
FAILING = {
    "mapper-boom": ["-mapper", "sh -c 'echo boom >&2; exit 1'",
                    "-D", "mapreduce.map.maxattempts=2", "-D", "mapreduce.reduce.maxattempts=2"],
    "reducer-exit-3": ["-mapper", "cat", "-reducer", "sh -c 'cat >/dev/null; echo reduce-trouble >&2; exit 3'",
                       "-D", "mapreduce.map.maxattempts=2", "-D", "mapreduce.reduce.maxattempts=2"],
    "no-such-mapper": ["-mapper", "nosuchcommand --flag",
                       "-D", "mapreduce.map.maxattempts=1", "-D", "mapreduce.reduce.maxattempts=1"],
    "missing-input": ["-mapper", "cat"],
    "output-exists": ["-mapper", "cat"],
    "unknown-option": ["-mapper", "cat", "-bogus"],
    "bad-reducers": ["-mapper", "cat", "-numReduceTasks", "many"],
    "bad-property": ["-mapper", "cat", "-D", "mapreduce.task.io.sort.mb=lots"],
    "bad-partitioner": ["-mapper", "cat", "-partitioner", "com.example.MyPartitioner"],
}


@pytest.fixture(scope="module")
def failures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Failure]:
    """Every FAILING command line, run side by side (they are independent and most of
    each run is the command's start-up)."""
    started = {}
    for name, args in FAILING.items():
        folder = tmp_path_factory.mktemp(name)
        src = str(folder / "nope.txt") if name == "missing-input" else small_input(folder)
        out = old_output(folder) if name == "output-exists" else folder / "out"
        jobs = folder / "jobs"
        argv, env = streaming_command("-input", src, "-output", str(out), *args, jobs_dir=jobs, master="local[1]")
        started[name] = (subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE), out)
    done = {}
    for name, (proc, out) in started.items():
        stdout, stderr = proc.communicate(timeout=120)
        done[name] = Failure(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), out)
    return done


def test_failing_mapper_names_its_task_and_stderr(failures: dict[str, Failure]) -> None:
    f = failures["mapper-boom"]
    err = failed(f.res)
    assert re.search(r"map task " + task_id("m") + " failed 2 times", err), err  # mapreduce.map.maxattempts
    assert "exited with status 1" in err and "boom" in err, err  # the command's stderr tail
    assert not (f.out / "_SUCCESS").exists()
    assert not list(f.out.glob("part-*"))


def test_failing_reducer_names_a_reduce_task(failures: dict[str, Failure]) -> None:
    f = failures["reducer-exit-3"]
    err = failed(f.res)
    assert re.search(r"reduce task " + task_id("r") + " failed 2 times", err), err
    assert "exited with status 3" in err and "reduce-trouble" in err, err
    assert not (f.out / "_SUCCESS").exists()


def test_unknown_mapper_command_is_not_found(failures: dict[str, Failure]) -> None:
    err = failed(failures["no-such-mapper"].res)
    assert "not found" in err and "'nosuchcommand'" in err, err
    assert re.search(r"map task " + task_id("m") + " failed 1 times", err), err


def test_missing_input_is_one_line(failures: dict[str, Failure]) -> None:
    f = failures["missing-input"]
    line = fails(f.res)
    assert "does not exist" in line and "nope.txt" in line, line
    assert not f.out.exists()


def test_existing_output_is_refused_in_one_line(failures: dict[str, Failure]) -> None:
    f = failures["output-exists"]
    line = fails(f.res)
    assert "already exists" in line and str(f.out) in line, line
    assert sorted(p.name for p in f.out.iterdir()) == ["_SUCCESS", "part-00000", "part-00001"]
    assert (f.out / "part-00000").read_text() == "old 1\n"


@pytest.mark.parametrize("name, words", [
    ("unknown-option", ["unknown option", "-bogus"]),
    ("bad-reducers", ["-numReduceTasks", "many"]),
    ("bad-property", ["mapreduce.task.io.sort.mb", "lots"]),
    ("bad-partitioner", ["unsupported -partitioner", "com.example.MyPartitioner"]),
])
def test_bad_command_line_is_one_line(failures: dict[str, Failure], name: str, words: list[str]) -> None:
    f = failures[name]
    line = fails(f.res)
    assert all(w in line for w in words), line
    assert not f.out.exists()


def test_overwrite_replaces_an_existing_output(tmp_path: Path, jobs_dir: Path) -> None:
    out = old_output(tmp_path)
    ok(streaming("-input", small_input(tmp_path), "-output", str(out), "-mapper", "tr a-z A-Z",
                 "-numReduceTasks", "0", "-overwrite", jobs_dir=jobs_dir))
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "part-00000"]  # the old parts are gone
    assert (out / "part-00000").read_text().splitlines() == ["A B C", "B C", "C"]


# --- 7. counters and the job record --------------------------------------------------------------
def test_small_sort_buffer_spills_and_reporter_lines(tmp_path: Path, jobs_dir: Path) -> None:
    """With a 1 MiB sort buffer a map task spills several times and merges its spills
    (Spilled Records counts both); the merged output is still sorted. A mapper's
    ``reporter:`` stderr lines become counters and the task's status in the record."""
    rng = random.Random(13)
    lines = [f"k{rng.randrange(50000):05d}\t{'v' * rng.randint(5, 40)}{i}" for i in range(120_000)]
    write_lines(tmp_path / "in.txt", lines)
    assert (tmp_path / "in.txt").stat().st_size > 4 * MiB
    out = tmp_path / "out"
    report = ok(streaming("-input", str(tmp_path / "in.txt"), "-output", str(out),
                          "-mapper", "reporter_mapper.py", "-file", program(tmp_path, "reporter_mapper.py"),
                          "-cmdenv", venv_path_env(), "-reducer", "cat", "-numReduceTasks", "2",
                          "-D", "mapreduce.task.io.sort.mb=1", jobs_dir=jobs_dir))
    parts = local_parts(out)
    assert Counter(line for part in parts.values() for line in part) == Counter(lines)
    for name, part in parts.items():
        keys = [line.split("\t")[0] for line in part]
        assert keys == sorted(keys), name
    counters = parse_counters(report)
    fw = framework(counters)
    assert fw["Map output records"] == len(lines)
    assert fw["Spilled Records"] > fw["Map output records"]
    assert counters["Grp"] == {"Name": 3 * (len(lines) // 100)}  # the malformed line counts nothing
    job = job_record(jobs_dir)
    map_stage, _ = stages(job)
    [task] = [t for t in map_stage["tasks"] if t["state"] == "succeeded"]
    assert task["spills"] > 1, task
    assert task.get("status") == f"copied {len(lines)} lines", task


# --- 8. slow start ------------------------------------------------------------------------------
# Every map sleeps a little; map 6 (of 7, local[3]) longer, so it runs alone at the end.
SLOW_MAPPER = "sh -c 'sleep 0.05; if [ \"$mapreduce_task_partition\" = 6 ]; then sleep 0.6; fi; exec cat'"


def slow_start_job(tmp_path: Path, jobs_dir: Path, fraction: str) -> dict[str, Any]:
    inputs = tmp_path / "in"
    inputs.mkdir()
    lines = word_corpus(17, 700)
    for i in range(7):
        write_lines(inputs / f"f{i}.txt", lines[i * 100:(i + 1) * 100])
    out = tmp_path / "out"
    ok(streaming("-input", str(inputs), "-output", str(out), "-mapper", SLOW_MAPPER, "-reducer", "cat",
                 "-numReduceTasks", "2", "-D", f"mapreduce.job.reduce.slowstart.completedmaps={fraction}",
                 "-D", "mapreduce.map.speculative=false", master="local[3]", jobs_dir=jobs_dir))
    got = [line for part in local_parts(out).values() for line in part]
    assert Counter(got) == Counter(line if "\t" in line else line + "\t" for line in lines)
    return job_record(jobs_dir)


def test_slow_start_reducers_start_before_the_last_map_ends(tmp_path: Path, jobs_dir: Path) -> None:
    job = slow_start_job(tmp_path, jobs_dir, "0.1")
    map_stage, reduce_stage = stages(job)
    last_map_end = max(task_end(t) for t in map_stage["tasks"] if t["state"] == "succeeded")
    assert len(map_stage["tasks"]) == 7
    assert min(t["start"] for t in reduce_stage["tasks"]) < last_map_end, job
    [attempt] = reduce_stage["attempts"]
    assert attempt["start"] < last_map_end
    if "early" in attempt:  # recorded by newer engines: the stage began before its parents' outputs existed
        assert attempt["early"] is True, attempt
        assert 1 <= attempt["parents_done"] < 7, attempt


def test_slow_start_one_waits_for_every_map(tmp_path: Path, jobs_dir: Path) -> None:
    job = slow_start_job(tmp_path, jobs_dir, "1.0")
    map_stage, reduce_stage = stages(job)
    last_map_end = max(task_end(t) for t in map_stage["tasks"] if t["state"] == "succeeded")
    # 1 ms: the record rounds durations to 0.1 ms.
    assert min(t["start"] for t in reduce_stage["tasks"]) >= last_map_end - 1e-3, job
    [attempt] = reduce_stage["attempts"]
    if "early" in attempt:
        assert attempt["early"] is False, attempt


# --- 9. speculation -------------------------------------------------------------------------------
@pytest.mark.parametrize("reducers, straggle_steps", [(1, 600), (2, 600)])
def test_straggling_map_is_beaten_by_its_speculative_copy(tmp_path: Path, jobs_dir: Path, reducers: int,
                                                          straggle_steps: int) -> None:
    """Map 0's first attempt straggles until it is killed (at most straggle_steps x
    50 ms); maps 1-3 are quick, so once 3 of 4 are done (the 0.75 quantile) a copy of
    map 0 runs on a free slot of local[3] and wins. With one reducer started early
    (slow start) a slot is still free for the copy; two early reducers take both
    slots the straggler leaves, and one is preempted for the copy."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    corpus = [word_corpus(30 + i, 80) for i in range(4)]
    for i, lines in enumerate(corpus):
        write_lines(inputs / f"f{i}.txt", lines)
    expected = Counter(w for lines in corpus for line in lines for w in line.split())
    out = tmp_path / "out"
    report = ok(streaming("-input", str(inputs), "-output", str(out),
                          "-mapper", "sh straggler.sh", "-file", program(tmp_path, "straggler.sh"),
                          "-cmdenv", f"STRAGGLE_STEPS={straggle_steps}", "-reducer", AWK_SUM,
                          "-numReduceTasks", str(reducers), master="local[3]", jobs_dir=jobs_dir))
    assert counts_of([line for part in local_parts(out).values() for line in part]) == expected
    job = job_record(jobs_dir)
    map_stage, _ = stages(job)
    p0 = [t for t in map_stage["tasks"] if t["partition"] == 0]
    spec = [t for t in p0 if t["speculative"]]
    assert [t["state"] for t in spec] == ["succeeded"], p0
    assert [t["state"] for t in p0 if t["attempt"] == 0] == ["killed"], p0
    assert parse_counters(report)["Job Counters"]["Killed map tasks"] >= 1
