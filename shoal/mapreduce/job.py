"""Running a MapReduce job on the compute engine.

A job is two stages of the RDD engine, not a second engine: a shuffle map stage
whose tasks run the mapper over one input split each (one DFS block) and write
their output through the MapReduce collector (sort buffer, spills, combiner), and
a result stage of reduce tasks that start early (slow start), fetch and merge
their partition, run the reducer and commit ``part-NNNNN`` through Hadoop's
output committer. With no reducers the map tasks write the parts themselves.
Scheduling, retries, speculation, locality, lost-node recovery and the shuffle
service are the engine's.

What mapper, combiner and reducer *are* (streaming commands, or methods of a
Python class) is a :class:`TaskLogic`.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, TextIO

import pyarrow as pa

from shoal.compute.committer import OutputCommitter
from shoal.compute.dependencies import ShuffleDependency
from shoal.compute.output import partition_writer
from shoal.compute.partitioner import Partitioner
from shoal.compute.rdd import Partition, ShuffledRDD
from shoal.compute.shared import Accumulator, Broadcast
from shoal.compute.sources import TextFileRDD
from shoal.compute.taskcontext import TaskContext
from shoal.errors import JobCancelled, JobFailed
from shoal.mapreduce import counters as C
from shoal.mapreduce.collector import Combine, MapOutputCollector
from shoal.mapreduce.conf import MRConf
from shoal.mapreduce.counters import Counters, TaskCountersParam
from shoal.mapreduce.records import GroupCounter, sort_tables
from shoal.mapreduce.shuffle_fetch import ReduceInput

if TYPE_CHECKING:
    from shoal.compute.context import ComputeContext
    from shoal.compute.storage import FileSplit

MIB = 1024 * 1024


@dataclass
class TaskInfo:
    """Who a task attempt is, in Hadoop's terms, and where it runs."""

    job_id: str
    task_id: str  # task_<job>_m_000003
    attempt_id: str  # attempt_<job>_m_000003_0
    partition: int
    is_map: bool
    reducers: int
    cwd: str  # the attempt's working directory, shipped files linked in
    split: FileSplit | None = None
    status: Callable[[str], None] = field(default=lambda msg: None)
    sort_buffer_bytes: int = 100 * MIB  # mapreduce.task.io.sort.mb, in bytes


class TaskLogic:
    """What the job's mapper, combiner and reducer do. Map output goes to ``emit`` as
    (p, k, v) tables; reducers read key-sorted (k, v) tables."""

    input_lines = False  # True: map input records are str lines; False: byte chunks of lines

    def map(self, records: Iterable, emit: Callable[[pa.Table], None], task: TaskInfo, counters: Counters) -> None:
        raise NotImplementedError

    def sorter(self, task: TaskInfo) -> Callable[[list], pa.Table]:
        """Turns what ``map`` emitted into one (p, k, v) table sorted by (p, k)."""
        return lambda tables: sort_tables(tables, with_partition=True)

    def combiner(self, task: TaskInfo, counters: Counters) -> Combine | None:
        return None

    def reduce(self, batches: Iterator[pa.Table], out: IO[bytes], task: TaskInfo, counters: Counters) -> tuple[int, int]:
        """Returns (output records, output bytes)."""
        raise NotImplementedError

    def map_only(self, records: Iterable, out: IO[bytes], task: TaskInfo, counters: Counters) -> tuple[int, int]:
        raise NotImplementedError


@dataclass
class JobPlan:
    """What every task of a job needs (pickled into the stage closures)."""

    job_id: str
    logic: TaskLogic
    conf: MRConf
    files: Broadcast | None
    counters: Accumulator
    reducers: int


@dataclass
class JobResult:
    job_id: str
    name: str
    output: str
    counters: Counters
    elapsed_s: float
    maps: int
    reduces: int

    def print_report(self, out: TextIO = sys.stderr) -> None:
        print(f"Job {self.job_id} completed successfully in {self.elapsed_s:.1f} s "
              f"({self.maps} maps, {self.reduces} reduces); output in {self.output}", file=out)
        C.print_counters(self.counters, out)


class FixedPartitioner(Partitioner):
    """The reducer count; MapReduce tasks partition their own output."""

    def __init__(self, n: int) -> None:
        self.num_partitions = n


class MapInputRDD(TextFileRDD):
    """One partition per input split (a DFS block), placed where its replicas are;
    records are byte chunks of whole lines (streaming) or str lines."""

    speculation = True  # mapreduce.map.speculative (read by dag.to_spec)

    def __init__(self, ctx: ComputeContext, path: str, lines: bool) -> None:
        super().__init__(ctx, path, 1)
        self.lines = lines

    def compute(self, split: Partition, tc: TaskContext) -> Iterator:
        from shoal.compute.storage import read_split_chunks, read_split_lines

        fs = split.split  # type: ignore[attr-defined]
        return SplitRecords(fs, read_split_lines(fs) if self.lines else read_split_chunks(fs))


class SplitRecords:
    """A split's records, with the split (mappers see its file, offset and length)."""

    def __init__(self, split: FileSplit, records: Iterator) -> None:
        self.split = split
        self._records = records

    def __iter__(self) -> Iterator:
        return self._records


class ReduceRDD(ShuffledRDD):
    """The reduce side: each partition is a :class:`ReduceInput` that fetches (early,
    while maps still run) and merges that partition of every map output."""

    speculation = True  # mapreduce.reduce.speculative (read by dag.to_spec)

    def __init__(self, prev: Any, dep: ShuffleDependency, buffer_fraction: float) -> None:
        super().__init__(prev, dep, "mapreduce reduce")
        self.buffer_fraction = buffer_fraction

    def compute(self, split: Partition, tc: TaskContext) -> Iterator:
        # Sorting what is held takes two more copies of it (concatenated, then ordered):
        # hold a third of the shuffle buffer so the peak stays within it.
        budget = max(1 << 20, int(tc.env.memory_limit_bytes * self.buffer_fraction / 3))
        return ReduceInput(tc, self.dep.shuffle_id, split.index, memory_budget=budget, counters=Counters())


# --- tasks ---------------------------------------------------------------------------------
@contextmanager
def task_workspace(plan: JobPlan, is_map: bool, split: FileSplit | None = None) -> Iterator[TaskInfo]:
    """The attempt's working directory with the job's shipped files linked in
    (Hadoop's distributed cache); removed afterwards."""
    tc = TaskContext.get()
    if tc is None:
        raise RuntimeError("MapReduce tasks run inside the compute engine's tasks")
    kind = "m" if is_map else "r"
    short = plan.job_id[len("job_"):]
    task_id = f"task_{short}_{kind}_{tc.partitionId():06d}"
    attempt_id = f"attempt_{short}_{kind}_{tc.partitionId():06d}_{tc.attemptNumber()}"
    base = os.path.join(tc.env.work_dir, "mapreduce", plan.job_id)
    cwd = os.path.join(base, f"{attempt_id}-{tc.taskAttemptId()}")
    os.makedirs(cwd, exist_ok=True)
    try:
        if plan.files is not None:
            cache = _file_cache(base, plan.files)
            for name in os.listdir(cache):
                os.symlink(os.path.join(cache, name), os.path.join(cwd, name))

        def status(msg: str) -> None:
            tc.status = msg

        yield TaskInfo(plan.job_id, task_id, attempt_id, tc.partitionId(), is_map,
                       plan.reducers, cwd, split, status, plan.conf.sort_mb * MIB)
    finally:
        shutil.rmtree(cwd, ignore_errors=True)


def _file_cache(base: str, files: Broadcast) -> str:
    """The job's ``-file`` files, written once per executor (mode bits kept)."""
    cache = os.path.join(base, "files")
    if os.path.isdir(cache):
        return cache
    tmp = f"{cache}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name, (mode, data) in files.value.items():
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        # Executable, as Hadoop makes a shipped program (``-mapper wc_map.py``).
        os.chmod(path, (mode & 0o777) | 0o555)
    try:
        os.rename(tmp, cache)
    except OSError:  # another task of this executor got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return cache


@dataclass
class MapTaskWriter:
    """The map stage's ``map_writer``: run the mapper over the split into the collector."""

    plan: JobPlan

    def __call__(self, records: Any, dep: ShuffleDependency, *, root: str, app_id: str, map_index: int,
                 node_id: str, service: tuple[str, int] | None, work_dir: str, memory_limit_bytes: int,
                 metrics: Any) -> Any:
        plan = self.plan
        counters = Counters()
        with task_workspace(plan, True, getattr(records, "split", None)) as info:
            collector = MapOutputCollector(
                dep.num_partitions, buffer_bytes=plan.conf.sort_mb * MIB, spill_percent=plan.conf.spill_percent,
                work_dir=work_dir, counters=counters, sort=plan.logic.sorter(info),
                combine=plan.logic.combiner(info, counters),
                min_spills_for_combine=plan.conf.min_spills_for_combine)
            try:
                plan.logic.map(records, collector.add, info, counters)
                spills = len(collector.spills)
                status = collector.commit(root=root, app_id=app_id, shuffle_id=dep.shuffle_id, map_index=map_index,
                                          node_id=node_id, service=service)
            finally:
                collector.discard()
        metrics.input_records += counters.get(C.FRAMEWORK, C.MAP_INPUT_RECORDS)
        metrics.records_written += sum(status.records)
        metrics.bytes_written += status.offsets[-1]
        metrics.spills += spills
        C.report(plan.counters, "m", map_index, counters)
        return status


@dataclass
class ReduceWrite:
    """A reduce task's body (inside the output committer's task protocol)."""

    plan: JobPlan

    def __call__(self, out: IO[bytes], inp: ReduceInput) -> tuple[int, int]:
        counters = inp.counters
        try:
            with task_workspace(self.plan, False) as info:
                inp.fetch_all()
                n, nbytes = self.plan.logic.reduce(_counted(inp.sorted_batches(), counters), out, info, counters)
        finally:
            inp.close()  # run files, also when the fetch failed or the task was killed (preempted)
        counters.incr(C.FRAMEWORK, C.REDUCE_OUTPUT_RECORDS, n)
        counters.incr(C.OUTPUT, C.BYTES_WRITTEN, nbytes)
        C.report(self.plan.counters, "r", info.partition, counters)
        return n, nbytes


def _counted(batches: Iterator[pa.Table], counters: Counters) -> Iterator[pa.Table]:
    groups = GroupCounter()
    try:
        for batch in batches:
            counters.incr(C.FRAMEWORK, C.REDUCE_INPUT_RECORDS, batch.num_rows)
            groups.feed(batch.column("k"))
            yield batch
    finally:
        counters.incr(C.FRAMEWORK, C.REDUCE_INPUT_GROUPS, groups.groups)


@dataclass
class MapOnlyWrite:
    """A map task of a job with no reducers: its output is the job's output."""

    plan: JobPlan

    def __call__(self, out: IO[bytes], records: Any) -> tuple[int, int]:
        counters = Counters()
        with task_workspace(self.plan, True, getattr(records, "split", None)) as info:
            n, nbytes = self.plan.logic.map_only(records, out, info, counters)
        counters.incr(C.OUTPUT, C.BYTES_WRITTEN, nbytes)
        C.report(self.plan.counters, "m", info.partition, counters)
        return n, nbytes


# --- the driver side -----------------------------------------------------------------------
def new_job_id(app_id: str, seq: int) -> str:
    """Hadoop's ``job_<cluster timestamp>_<sequence>``: the application's start time
    and random suffix make it unique across driver processes."""
    digits = re.sub(r"\D", "", app_id.split("-")[1] if app_id.count("-") >= 2 else app_id)[:14]
    suffix = app_id.rsplit("-", 1)[-1]
    tag = f"{int(suffix, 16) % 10000:04d}" if re.fullmatch(r"[0-9a-f]+", suffix) else "0000"
    return f"job_{digits or time.strftime('%Y%m%d%H%M%S')}{tag}_{seq:04d}"


_job_seq = iter(range(1, 1 << 30))


def run_job(logic: TaskLogic, *, inputs: list[str], output: str, conf: MRConf, name: str,
            files: dict[str, tuple[int, bytes]] | None = None, overwrite: bool = False,
            master: str | None = None, ctx: ComputeContext | None = None,
            engine_conf: dict[str, str] | None = None) -> JobResult:
    """Run one job to completion: the output's ``_SUCCESS`` is written only if every
    task succeeded. Raises ``FileAlreadyExists`` (output exists, no ``overwrite``),
    ``FileNotFound`` (input missing) or ``JobFailed`` naming the failed task."""
    from shoal.compute.context import ComputeContext

    own = ctx is None
    if ctx is None:
        ctx = ComputeContext(master, appName=name, conf={
            "spark.task.maxFailures": str(max(conf.map_max_attempts, conf.reduce_max_attempts)),
            "spark.speculation": "true" if conf.map_speculative or conf.reduce_speculative else "false",
            **(engine_conf or {}),
        })
    try:
        return _run(ctx, logic, inputs, output, conf, name, files or {}, overwrite)
    finally:
        if own:
            ctx.stop()


def _run(ctx: ComputeContext, logic: TaskLogic, inputs: list[str], output: str, conf: MRConf, name: str,
         files: dict[str, tuple[int, bytes]], overwrite: bool) -> JobResult:
    job_id = new_job_id(ctx.applicationId, next(_job_seq))
    committer = OutputCommitter(output, overwrite=overwrite, codec=conf.output_codec)
    source = MapInputRDD(ctx, ",".join(inputs), logic.input_lines)
    source.speculation = conf.map_speculative
    maps = source.getNumPartitions()  # a missing input fails here, before any output exists
    acc = ctx.accumulator({}, TaskCountersParam())
    plan = JobPlan(job_id, logic, conf, ctx.broadcast(files) if files else None, acc, conf.reducers)
    shuffle_id = None
    if conf.reducers == 0:
        rdd: Any = source
        func = partition_writer(committer, MapOnlyWrite(plan))
    else:
        shuffle_id = ctx._new_shuffle_id()
        dep = ShuffleDependency(source, shuffle_id, FixedPartitioner(conf.reducers),
                                map_writer=MapTaskWriter(plan), slow_start=conf.slow_start)
        rdd = ReduceRDD(source, dep, conf.shuffle_buffer_percent)
        rdd.speculation = conf.reduce_speculative
        func = partition_writer(committer, ReduceWrite(plan))
    committer.setup_job()
    action = f"mapreduce {job_id} {name}".strip()
    start = time.monotonic()
    try:
        ctx.run_job(rdd, func, None, action)
    except (KeyboardInterrupt, JobCancelled):
        committer.abort_job()
        raise
    except BaseException as exc:
        committer.abort_job()
        raise JobFailed(_failure_message(job_id, exc, ctx, shuffle_id)) from exc
    committer.commit_job()
    elapsed = time.monotonic() - start
    counters = C.job_total(acc.value)
    counters.add_all(job_counters(ctx, action, shuffle_id is not None))
    return JobResult(job_id, name, committer.output_path, counters, elapsed, maps, conf.reducers)


def _failure_message(job_id: str, exc: BaseException, ctx: ComputeContext, shuffle_id: int | None) -> str:
    """"Job ... failed: map task task_..._m_000003 failed 4 times; most recent failure
    on executor 1: StreamingCommandFailed: mapper ... exited with status 1" (the
    engine's reason, with its task named the Hadoop way)."""
    notes = [n for n in getattr(exc, "__notes__", []) if re.match(r"job \d+ failed: ", n)]
    detail = notes[-1].split(": ", 1)[1] if notes else f"{type(exc).__name__}: {exc}"
    map_stage = None
    if shuffle_id is not None:
        plan = ctx._driver.registry.map_stages.get(shuffle_id)
        map_stage = plan.stage_id if plan is not None else None
    short = job_id[len("job_"):]

    def task_name(m: re.Match) -> str:
        is_map = shuffle_id is None or int(m.group(2)) == map_stage
        return f"{'map' if is_map else 'reduce'} task task_{short}_{'m' if is_map else 'r'}_{int(m.group(1)):06d}"

    return f"Job {job_id} failed: " + re.sub(r"task (\d+) in stage (\d+)\.\d+", task_name, detail, count=1)


def job_counters(ctx: ComputeContext, action: str, has_reduce: bool) -> Counters:
    """Hadoop's "Job Counters" from the job's record: launched, failed and killed
    attempts, and where map tasks ran relative to their input."""
    out = Counters()
    jobs = [j for j in ctx._driver.recorder.app["jobs"] if j["action"].startswith(action)]
    if not jobs:
        return out
    for st in jobs[-1]["stages"]:
        is_map = st["kind"] == "shuffle map" or not has_reduce
        for t in st["tasks"]:
            out.incr(C.JOB, C.LAUNCHED_MAPS if is_map else C.LAUNCHED_REDUCES)
            if t["state"] == "failed":
                out.incr(C.JOB, C.FAILED_MAPS if is_map else C.FAILED_REDUCES)
            elif t["state"] == "killed":
                out.incr(C.JOB, C.KILLED_MAPS if is_map else C.KILLED_REDUCES)
            out.incr(C.JOB, C.MAP_MILLIS if is_map else C.REDUCE_MILLIS, int((t["duration_s"] or 0) * 1000))
            if is_map:
                level = t["locality"]
                if level in ("PROCESS_LOCAL", "NODE_LOCAL"):
                    out.incr(C.JOB, C.DATA_LOCAL_MAPS)
                elif level == "RACK_LOCAL":
                    out.incr(C.JOB, C.RACK_LOCAL_MAPS)
                elif level == "ANY":
                    out.incr(C.JOB, C.OTHER_LOCAL_MAPS)
    return out
