"""Hadoop Streaming: mapper, combiner and reducer are commands that read lines on
stdin and write lines on stdout.

The contract, as Hadoop documents it: the mapper reads its split's lines; each
output line is ``key<TAB>value`` (no tab: the whole line is the key and the value
is empty; ``stream.num.map.output.key.fields`` / ``stream.map.output.field.separator``
move the split point); records are partitioned by key (or by key fields with
KeyFieldBasedPartitioner), sorted by key (or by KeyFieldBasedComparator's
options) and the reducer reads its partition's ``key<TAB>value`` lines with equal
keys adjacent. Its output lines are the job's output. Counters and status come
from stderr lines ``reporter:counter:<group>,<counter>,<amount>`` and
``reporter:status:<message>``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

import pyarrow as pa

from shoal.mapreduce import counters as C
from shoal.mapreduce.collector import Combine
from shoal.mapreduce.conf import MRConf
from shoal.mapreduce.counters import Counters
from shoal.mapreduce.job import TaskInfo, TaskLogic
from shoal.mapreduce.keys import KeyFieldHelper, parse_key_field_options
from shoal.mapreduce.process import run_streaming_command, split_command
from shoal.mapreduce.records import StreamingFormat, lines_array, sort_lines, value_bytes

# Mapper output is turned into Arrow batches this many bytes at a time.
PARSE_BYTES = 8 * 1024 * 1024
OUTPUT_BUFFER_BYTES = 1 << 20

# Hadoop's Java identity classes, as users name them on the command line.
IDENTITY = {
    "org.apache.hadoop.mapred.lib.IdentityMapper": "cat",
    "org.apache.hadoop.mapred.lib.IdentityReducer": "cat",
    "IdentityMapper": "cat",
    "IdentityReducer": "cat",
}


@dataclass
class StreamingLogic(TaskLogic):
    mapper: str
    reducer: str | None
    combiner_command: str | None
    fmt: StreamingFormat = field(default_factory=StreamingFormat)
    partitioner_options: str | None = None  # KeyFieldBasedPartitioner's -k options
    comparator_options: str | None = None  # KeyFieldBasedComparator's options
    key_field_separator: bytes = b"\t"  # how those options split a key into fields
    cmdenv: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)

    input_lines = False

    @classmethod
    def from_conf(cls, mapper: str, reducer: str | None, combiner: str | None, conf: MRConf,
                  keyfield_partitioner: bool, cmdenv: dict[str, str]) -> StreamingLogic:
        """Validates key-field options on the driver, so a typo fails before any task."""
        logic = cls(IDENTITY.get(mapper, mapper), IDENTITY.get(reducer, reducer) if reducer else None,
                    IDENTITY.get(combiner, combiner) if combiner else None,
                    StreamingFormat(conf.map_output_separator, conf.map_output_key_fields, conf.reduce_input_separator),
                    conf.partitioner_options if keyfield_partitioner else None, conf.comparator_options,
                    conf.key_field_separator, dict(cmdenv), dict(conf.properties))
        for command in (logic.mapper, logic.reducer, logic.combiner_command):
            if command is not None:
                split_command(command)  # an unbalanced quote fails here, not in every task
        logic._helpers()
        return logic

    # --- helpers ---------------------------------------------------------------------------
    def _helpers(self) -> tuple[Callable[[bytes], bytes] | None, Callable[[bytes], bytes] | None]:
        """The key-field partitioner's and comparator's functions (ValueError on bad options)."""
        sep = self.key_field_separator
        part = sort = None
        if self.partitioner_options is not None:
            part = KeyFieldHelper(sep, parse_key_field_options(self.partitioner_options)).partition_bytes
        if self.comparator_options is not None:
            sort = KeyFieldHelper(sep, parse_key_field_options(self.comparator_options)).sort_key
        return part, sort

    def env(self, task: TaskInfo) -> dict[str, str]:
        """The task's environment: the executor's, every -D property with each character
        other than letters and digits as "_" (as Hadoop exports them), -cmdenv, and the task's
        identity and input split."""
        env = dict(os.environ)
        for key, value in self.properties.items():
            env[re.sub(r"[^A-Za-z0-9]", "_", key)] = value
        env.update({
            "mapreduce_job_id": task.job_id, "mapreduce_task_id": task.task_id,
            "mapreduce_task_attempt_id": task.attempt_id, "mapreduce_task_partition": str(task.partition),
            "mapreduce_task_ismap": "true" if task.is_map else "false",
        })
        if task.split is not None:
            env.update({"mapreduce_map_input_file": task.split.path,
                        "mapreduce_map_input_start": str(task.split.start),
                        "mapreduce_map_input_length": str(task.split.length)})
        env.update(self.cmdenv)
        return env

    def _run(self, command: str, role: str, chunks: Iterable, on_output: Callable[[bytes], None],
             task: TaskInfo, counters: Counters) -> None:
        run_streaming_command(command, chunks, on_output, role=role, cwd=task.cwd, env=self.env(task),
                              on_counter=counters.incr, on_status=task.status)

    # --- TaskLogic -------------------------------------------------------------------------
    def sorter(self, task: TaskInfo) -> Callable[[list], pa.Table]:
        part_bytes, sort_key = self._helpers()
        fmt, reducers = self.fmt, task.reducers

        def sort(arrays: list) -> pa.Table:
            return sort_lines(pa.chunked_array(arrays, pa.large_binary()), fmt, reducers, part_bytes, sort_key)

        return sort

    def map(self, records: Iterable, emit: Callable[[pa.Table], None], task: TaskInfo, counters: Counters) -> None:
        parser = OutputParser(emit, task.sort_buffer_bytes)
        self._run(self.mapper, "mapper", counted_input(records, counters), parser.feed, task, counters)
        parser.close()
        counters.incr(C.FRAMEWORK, C.MAP_OUTPUT_RECORDS, parser.records)
        counters.incr(C.FRAMEWORK, C.MAP_OUTPUT_BYTES, parser.bytes)

    def combiner(self, task: TaskInfo, counters: Counters) -> Combine | None:
        if self.combiner_command is None:
            return None
        command = self.combiner_command
        sorter = self.sorter(task)

        def combine(table: pa.Table) -> pa.Table:
            out: list[pa.Array] = []
            parser = OutputParser(out.append)
            self._run(command, "combiner", value_bytes(table.column("v")), parser.feed, task, counters)
            parser.close()
            return sorter(out)

        return combine

    def reduce(self, batches: Iterator[pa.Table], out: IO[bytes], task: TaskInfo,
               counters: Counters) -> tuple[int, int]:
        chunks = (view for batch in batches for view in value_bytes(batch.column("v")))
        sink = OutputSink(out)
        assert self.reducer is not None
        self._run(self.reducer, "reducer", chunks, sink.write, task, counters)
        return sink.close()

    def map_only(self, records: Iterable, out: IO[bytes], task: TaskInfo, counters: Counters) -> tuple[int, int]:
        sink = OutputSink(out)
        self._run(self.mapper, "mapper", counted_input(records, counters), sink.write, task, counters)
        n, nbytes = sink.close()
        counters.incr(C.FRAMEWORK, C.MAP_OUTPUT_RECORDS, n)
        return n, nbytes


def counted_input(chunks: Iterable[bytes], counters: Counters) -> Iterator[bytes]:
    """The split's chunks, counting lines ("Map input records") and bytes as they go."""
    lines = nbytes = 0
    try:
        for chunk in chunks:
            lines += chunk.count(b"\n")
            nbytes += len(chunk)
            yield chunk
    finally:
        counters.incr(C.FRAMEWORK, C.MAP_INPUT_RECORDS, lines)
        counters.incr(C.INPUT, C.BYTES_READ, nbytes)


class OutputParser:
    """Cuts a command's stdout (arbitrary chunks) into arrays of whole lines, each
    keeping its ``\n``; a last line without one still counts."""

    def __init__(self, emit: Callable[[pa.Array], None], sort_buffer_bytes: int = PARSE_BYTES * 8) -> None:
        # Batches small enough that a small sort buffer still spills several times.
        self.batch_bytes = max(64 * 1024, min(PARSE_BYTES, sort_buffer_bytes // 8))
        self.emit = emit
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.records = 0
        self.bytes = 0

    def feed(self, chunk: bytes) -> None:
        self.pending.append(chunk)
        self.pending_bytes += len(chunk)
        if self.pending_bytes >= self.batch_bytes:
            data = b"".join(self.pending)
            cut = data.rfind(b"\n") + 1
            self.pending = [data[cut:]] if cut < len(data) else []
            self.pending_bytes = len(data) - cut
            if cut:
                self._batch(data[:cut] if cut < len(data) else data)

    def close(self) -> None:
        data = b"".join(self.pending)
        self.pending, self.pending_bytes = [], 0
        if data and not data.endswith(b"\n"):
            data += b"\n"
        if data:
            self._batch(data)

    def _batch(self, data: bytes) -> None:
        if b"\r\n" in data:  # Hadoop's line reader ends a line at "\r\n" too
            data = data.replace(b"\r\n", b"\n")
        lines = lines_array(data)
        self.records += len(lines)
        self.bytes += len(data)
        self.emit(lines)


class OutputSink:
    """Writes a command's stdout to the task's output file, counting lines."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.records = 0
        self.bytes = 0
        self.last = b"\n"

    def write(self, chunk: bytes) -> None:
        if chunk:
            self.out.write(chunk)
            self.records += chunk.count(b"\n")
            self.bytes += len(chunk)
            self.last = chunk[-1:]

    def close(self) -> tuple[int, int]:
        if self.last != b"\n":  # a last line without a newline is still a record
            self.write(b"\n")
        return self.records, self.bytes
