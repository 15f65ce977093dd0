"""The class-based MapReduce API: mapper, combiner and reducer are generator methods.

```
class WordCount(MapReduceJob):
    def mapper(self, _, line):    yield from ((w, 1) for w in line.split())
    def combiner(self, w, counts): yield w, sum(counts)
    def reducer(self, w, counts):  yield w, sum(counts)

WordCount.run(input="shoal:///data/books", output="shoal:///out/wc", reducers=4)
```

The mapper gets ``(None, line)`` for each input line (TextInputFormat's value).
Keys are sorted by value (None, bool, int, float, str, bytes and tuples of them;
numbers compare numerically across types) and each reducer call gets one key with
an iterator over its values. Output lines are ``str(key)<TAB>str(value)``, as
Hadoop's TextOutputFormat writes them (a None key or value is left out, with the tab).
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Iterable, Iterator
from itertools import groupby
from typing import IO, Any, TextIO

import pyarrow as pa

from shoal.mapreduce import counters as C
from shoal.mapreduce.collector import Combine
from shoal.mapreduce.conf import MRConf
from shoal.mapreduce.counters import Counters
from shoal.mapreduce.job import JobResult, TaskInfo, TaskLogic, run_job
from shoal.mapreduce.keys import from_sortable, sortable
from shoal.mapreduce.records import hash_partitions, sort_tables

EMIT_RECORDS = 1 << 16  # map output records per batch handed to the collector
WRITE_BYTES = 1 << 20


class MapReduceJob:
    """Subclass and define ``mapper`` (and ``reducer``, optionally ``combiner``);
    ``*_init`` / ``*_final`` hooks run before and after a task's records, and
    ``increment_counter`` / ``set_status`` report like streaming's stderr lines."""

    reducers: int = 1  # default for run(reducers=None); 0 makes a map-only job
    jobconf: dict[str, str] = {}  # Hadoop properties (-D) for every run

    def __init__(self) -> None:
        self._counters: Counters | None = None
        self._status: Callable[[str], None] = lambda msg: None

    # --- what a job defines ----------------------------------------------------------------
    def mapper(self, key: Any, value: str) -> Iterable[tuple[Any, Any]]:
        raise NotImplementedError(f"{type(self).__name__} must define mapper(self, key, value)")

    def combiner(self, key: Any, values: Iterator[Any]) -> Iterable[tuple[Any, Any]]:
        raise NotImplementedError

    def reducer(self, key: Any, values: Iterator[Any]) -> Iterable[tuple[Any, Any]]:
        raise NotImplementedError

    def mapper_init(self) -> None: ...

    def mapper_final(self) -> Iterable[tuple[Any, Any]] | None: ...

    def combiner_init(self) -> None: ...

    def combiner_final(self) -> Iterable[tuple[Any, Any]] | None: ...

    def reducer_init(self) -> None: ...

    def reducer_final(self) -> Iterable[tuple[Any, Any]] | None: ...

    # --- reporting from tasks --------------------------------------------------------------
    def increment_counter(self, group: str, counter: str, amount: int = 1) -> None:
        if self._counters is not None:
            self._counters.incr(group, counter, amount)

    def set_status(self, message: str) -> None:
        self._status(message)

    # --- running ---------------------------------------------------------------------------
    @classmethod
    def has(cls, name: str) -> bool:
        return getattr(cls, name) is not getattr(MapReduceJob, name)

    @classmethod
    def run(cls, input: str | list[str], output: str, reducers: int | None = None, *, master: str | None = None,
            conf: dict[str, str] | None = None, overwrite: bool = False, quiet: bool = False,
            report_to: TextIO | None = None) -> JobResult:
        """Run the job on ``master`` (default: $SHOAL_MASTER, else local[*]) or on the
        active SparkContext; prints Hadoop's counters at the end unless ``quiet``."""
        if not cls.has("mapper"):
            raise TypeError(f"{cls.__name__} must define mapper(self, key, value)")
        from shoal.compute.context import ComputeContext

        props = {**cls.jobconf, **(conf or {})}
        if reducers is None and "mapreduce.job.reduces" not in props and "mapred.reduce.tasks" not in props:
            reducers = cls.reducers
        mrconf = MRConf.from_properties(props, reducers)
        if mrconf.reducers > 0 and not cls.has("reducer"):
            raise TypeError(f"{cls.__name__} has no reducer: define reducer(self, key, values) or run with reducers=0")
        inputs = [input] if isinstance(input, str) else list(input)
        result = run_job(PythonLogic(cls), inputs=inputs, output=output, conf=mrconf,
                         name=mrconf.job_name or cls.__name__, overwrite=overwrite, master=master,
                         ctx=ComputeContext.active())
        if not quiet:
            result.print_report(report_to or sys.stderr)
        return result


class PythonLogic(TaskLogic):
    """Runs a MapReduceJob's methods inside the engine's tasks."""

    input_lines = True

    def __init__(self, job_cls: type[MapReduceJob]) -> None:
        self.job_cls = job_cls

    def _job(self, task: TaskInfo, counters: Counters) -> MapReduceJob:
        job = self.job_cls()
        job._counters = counters
        job._status = task.status
        return job

    def map(self, records: Iterable, emit: Callable[[pa.Table], None], task: TaskInfo, counters: Counters) -> None:
        job = self._job(task, counters)
        batch = _Batcher(task.reducers, emit, f"{self.job_cls.__name__}.mapper")
        lines = 0
        job.mapper_init()
        mapper = job.mapper
        for line in records:
            lines += 1
            batch.extend(mapper(None, line))
        batch.extend(job.mapper_final() or ())
        batch.flush()
        counters.incr(C.FRAMEWORK, C.MAP_INPUT_RECORDS, lines)
        counters.incr(C.FRAMEWORK, C.MAP_OUTPUT_RECORDS, batch.records)
        counters.incr(C.FRAMEWORK, C.MAP_OUTPUT_BYTES, batch.bytes)

    def combiner(self, task: TaskInfo, counters: Counters) -> Combine | None:
        if not self.job_cls.has("combiner"):
            return None

        def combine(table: pa.Table) -> pa.Table:
            job = self._job(task, counters)
            out: list[pa.Table] = []
            batch = _Batcher(task.reducers, out.append, f"{self.job_cls.__name__}.combiner")
            job.combiner_init()
            for key, values in _groups([table]):
                batch.extend(job.combiner(key, values))
            batch.extend(job.combiner_final() or ())
            batch.flush()
            return sort_tables(out, with_partition=True)

        return combine

    def reduce(self, batches: Iterator[pa.Table], out: IO[bytes], task: TaskInfo,
               counters: Counters) -> tuple[int, int]:
        job = self._job(task, counters)
        writer = _LineWriter(out, f"{self.job_cls.__name__}.reducer")
        job.reducer_init()
        for key, values in _groups(batches):
            writer.write_all(job.reducer(key, values))
        writer.write_all(job.reducer_final() or ())
        return writer.close()

    def map_only(self, records: Iterable, out: IO[bytes], task: TaskInfo, counters: Counters) -> tuple[int, int]:
        job = self._job(task, counters)
        writer = _LineWriter(out, f"{self.job_cls.__name__}.mapper")
        lines = 0
        job.mapper_init()
        for line in records:
            lines += 1
            writer.write_all(job.mapper(None, line))
        writer.write_all(job.mapper_final() or ())
        records, nbytes = writer.close()
        counters.incr(C.FRAMEWORK, C.MAP_INPUT_RECORDS, lines)
        counters.incr(C.FRAMEWORK, C.MAP_OUTPUT_RECORDS, records)
        return records, nbytes


def _pair(item: Any, where: str) -> tuple[Any, Any]:
    if type(item) is tuple and len(item) == 2:
        return item
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    raise TypeError(f"{where} must yield (key, value) pairs, not {type(item).__name__}: {item!r:.80}")


class _Batcher:
    """Encodes (key, value) pairs into (p, k, v) tables of EMIT_RECORDS rows."""

    def __init__(self, reducers: int, emit: Callable[[pa.Table], None], where: str) -> None:
        self.reducers, self.emit, self.where = reducers, emit, where
        self.keys: list[bytes] = []
        self.values: list[bytes] = []
        self.records = self.bytes = 0

    def extend(self, pairs: Iterable[Any]) -> None:
        keys, values, dumps, where = self.keys, self.values, pickle.dumps, self.where
        for item in pairs:
            key, value = item if type(item) is tuple and len(item) == 2 else _pair(item, where)
            keys.append(sortable(key))
            values.append(dumps(value, 5))
            if len(keys) >= EMIT_RECORDS:
                self.flush()
                keys, values = self.keys, self.values

    def flush(self) -> None:
        if not self.keys:
            return
        k = pa.array(self.keys, pa.large_binary())
        v = pa.array(self.values, pa.large_binary())
        self.records += len(k)
        self.bytes += k.nbytes + v.nbytes
        self.emit(pa.table({"p": pa.array(hash_partitions(k, self.reducers), pa.int32()), "k": k, "v": v}))
        self.keys, self.values = [], []


def _groups(batches: Iterable[pa.Table]) -> Iterator[tuple[Any, Iterator[Any]]]:
    """(key, values) per run of equal keys over key-sorted tables, values unpickled lazily."""
    rows = ((k, v) for t in batches for k, v in zip(t.column("k").to_pylist(), t.column("v").to_pylist()))
    loads = pickle.loads
    for kbytes, group in groupby(rows, key=lambda kv: kv[0]):
        yield from_sortable(kbytes), (loads(v) for _, v in group)


class _LineWriter:
    """``str(key)<TAB>str(value)`` lines to the task's output file."""

    def __init__(self, out: IO[bytes], where: str) -> None:
        self.out, self.where = out, where
        self.parts: list[str] = []
        self.size = 0
        self.records = self.bytes = 0

    def write_all(self, pairs: Iterable[Any]) -> None:
        parts = self.parts
        for item in pairs:
            key, value = _pair(item, self.where)
            # TextOutputFormat leaves out a null key or value, and then the tab.
            line = f"{value}\n" if key is None else f"{key}\n" if value is None else f"{key}\t{value}\n"
            parts.append(line)
            self.size += len(line)
            if self.size >= WRITE_BYTES:
                self._flush()
                parts = self.parts

    def _flush(self) -> None:
        if self.parts:
            data = "".join(self.parts).encode()
            self.out.write(data)
            self.records += len(self.parts)
            self.bytes += len(data)
            self.parts, self.size = [], 0

    def close(self) -> tuple[int, int]:
        self._flush()
        return self.records, self.bytes
