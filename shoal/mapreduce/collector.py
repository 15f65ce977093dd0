"""The map side of a MapReduce shuffle (Hadoop's MapOutputBuffer).

Map output collects in a sort buffer of ``mapreduce.task.io.sort.mb``; when it is
``mapreduce.map.sort.spill.percent`` full, its records are sorted by (partition,
key), run through the combiner if there is one, and spilled to a file of
per-partition segments. At the end the last records are spilled too and, when
there is more than one spill, the spills are merged partition by partition into
the map task's one output file (combining again when there were at least
``mapreduce.map.combine.minspills`` spills). Every record written to a spill or to
the merged file counts in "Spilled Records", so the counter shows what a too-small
sort buffer costs, as in Hadoop.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from shoal.compute.shuffle_format import MapStatus, commit_map_output, shuffle_paths
from shoal.compute.shuffle_read import Segment, read_local_segment
from shoal.mapreduce import counters as C
from shoal.mapreduce.records import PKV_SCHEMA, decode, encode, partition_bounds, sort_tables

# Hadoop accounts 16 bytes of metadata per record in the sort buffer (kvmeta).
RECORD_META_BYTES = 16

# Runs a combiner over a table sorted by (p, k) and returns its output as a table
# sorted the same way, with the partition of every output record.
Combine = Callable[[pa.Table], pa.Table]


class MapOutputCollector:
    """Buffers, sorts, combines and spills one map task's output; ``commit`` writes
    the task's data file and index where the shuffle service serves them."""

    def __init__(self, partitions: int, *, buffer_bytes: int, spill_percent: float, work_dir: str,
                 counters: C.Counters, sort: Callable[[list], pa.Table] | None = None,
                 combine: Combine | None = None, min_spills_for_combine: int = 3) -> None:
        self.partitions = partitions
        # Buffered items (tables or arrays) -> one (p, k, v) table sorted by (p, k).
        self.sort = sort or (lambda items: sort_tables(items, with_partition=True))
        self.threshold = max(1, int(buffer_bytes * spill_percent))
        self.work_dir = work_dir
        self.counters = counters
        self.combine = combine
        self.min_spills_for_combine = min_spills_for_combine
        self.buffer: list[pa.Table | pa.Array] = []
        self.buffered = 0
        # Each spill: (path, segment (offset, length) per partition, records per partition).
        self.spills: list[tuple[str, list[tuple[int, int]], list[int]]] = []

    def add(self, batch: pa.Table | pa.Array) -> None:
        """Collect a batch of map output (what ``sort`` takes); spills when the buffer is full."""
        if len(batch) == 0:
            return
        self.buffer.append(batch)
        self.buffered += batch.nbytes + RECORD_META_BYTES * len(batch)
        if self.buffered >= self.threshold:
            self._spill()

    def _sorted_buffer(self) -> pa.Table:
        table = self.sort(self.buffer) if self.buffer else PKV_SCHEMA.empty_table()
        self.buffer, self.buffered = [], 0
        if self.combine is not None and table.num_rows:
            table = self._combined(table)
        return table

    def _combined(self, table: pa.Table) -> pa.Table:
        self.counters.incr(C.FRAMEWORK, C.COMBINE_INPUT_RECORDS, table.num_rows)
        assert self.combine is not None
        out = self.combine(table)
        self.counters.incr(C.FRAMEWORK, C.COMBINE_OUTPUT_RECORDS, out.num_rows)
        return out

    def _spill(self) -> None:
        table = self._sorted_buffer()
        path = os.path.join(self.work_dir, f"spill-{os.getpid()}-{secrets.token_hex(6)}.out")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb", buffering=1 << 20) as f:
                segments, counts = _write_partitions(f, table, self.partitions)
        except BaseException:
            _unlink(path)
            raise
        self.spills.append((path, segments, counts))
        self.counters.incr(C.FRAMEWORK, C.SPILLED_RECORDS, table.num_rows)

    def commit(self, *, root: str, app_id: str, shuffle_id: int, map_index: int, node_id: str,
               service: tuple[str, int] | None) -> MapStatus:
        """Write the final output (one spill, or the merge of all spills) and publish
        it; the first attempt of a map task to commit wins."""
        data_path, index_path = shuffle_paths(root, app_id, shuffle_id, map_index)
        os.makedirs(os.path.dirname(data_path), exist_ok=True)
        tmp = data_path + f".{os.getpid()}-{secrets.token_hex(6)}.tmp"
        try:
            with open(tmp, "wb", buffering=1 << 20) as f:
                if not self.spills:
                    table = self._sorted_buffer()
                    segments, counts = _write_partitions(f, table, self.partitions)
                    self.counters.incr(C.FRAMEWORK, C.SPILLED_RECORDS, table.num_rows)
                else:
                    if self.buffer:
                        self._spill()
                    segments, counts = self._merge_spills(f)
            self.discard()
            offsets = [0] + [off + length for off, length in segments]
            self.counters.incr(C.FRAMEWORK, C.MAP_OUTPUT_MATERIALIZED_BYTES, offsets[-1])
            # No fsync: a map output lost with its node is computed again (as Hadoop).
            offsets, counts = commit_map_output(tmp, data_path, index_path, offsets, counts)
        except BaseException:
            _unlink(tmp)
            self.discard()
            raise
        return MapStatus(map_index, node_id, tuple(service) if service else None, data_path, offsets, counts)

    def _merge_spills(self, f) -> tuple[list[tuple[int, int]], list[int]]:
        if len(self.spills) == 1:
            path, segments, counts = self.spills[0]
            # One spill is the output as it is (Hadoop renames it): copy, no re-count.
            with open(path, "rb") as src:
                while chunk := src.read(1 << 22):
                    f.write(chunk)
            return segments, counts
        combine = self.combine is not None and len(self.spills) >= self.min_spills_for_combine
        out_segments: list[tuple[int, int]] = []
        out_counts: list[int] = []
        pos = 0
        for p in range(self.partitions):
            pieces = []
            for path, segments, _ in self.spills:
                off, length = segments[p]
                if length:
                    seg = Segment(-1, "", path, off, length)
                    pieces.extend(decode(payload) for payload in read_local_segment(seg, -1))
            table = sort_tables(pieces, with_partition=False)
            if combine and table.num_rows:
                with_p = table.add_column(0, "p", pa.array(np.full(table.num_rows, p, np.int32)))
                table = self._combined(with_p)
            n = table.num_rows
            length = 0
            if n:
                blob = encode(table)
                f.write(blob)
                length = len(blob)
            out_segments.append((pos, length))
            out_counts.append(n)
            pos += length
            self.counters.incr(C.FRAMEWORK, C.SPILLED_RECORDS, n)
        return out_segments, out_counts

    def discard(self) -> None:
        """Remove spill files (after commit, or when the task fails or is killed)."""
        for path, _, _ in self.spills:
            _unlink(path)
        self.spills = []
        self.buffer, self.buffered = [], 0


def _write_partitions(f, table: pa.Table, partitions: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Write each partition's rows of a (p, k, v) table sorted by partition as one
    framed payload; returns the (offset, length) and record count per partition."""
    bounds = partition_bounds(table, partitions) if table.num_rows else [0] * (partitions + 1)
    segments: list[tuple[int, int]] = []
    counts: list[int] = []
    pos = 0
    for p in range(partitions):
        lo, hi = int(bounds[p]), int(bounds[p + 1])
        length = 0
        if hi > lo:
            blob = encode(table.slice(lo, hi - lo))
            f.write(blob)
            length = len(blob)
        segments.append((pos, length))
        counts.append(hi - lo)
        pos += length
    return segments, counts


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
