"""The map side of the sort-based shuffle: one data file and one index per map task.

Three ways to write, chosen by the dependency (Spark's SortShuffleWriter cases):

- combine (aggregator and ``map_side_combine``): values merge into one dict in a
  tight loop; over the memory limit the dict is written out as a spill (its items
  grouped by reduce partition) and dropped. Spills are not merged again on the map
  side: reducers merge combiners anyway, so a key may appear once per spill.
- sort (``key_ordering``): records collect in a list that is sorted in C; reduce
  partitions are then contiguous slices, found by bisecting the range partitioner's
  bounds (no call per record). Each spill is one sorted run per partition.
- plain: records go to per-partition buffers, each full buffer becomes a compressed
  batch held in memory; over the limit the batches go to the spill file.

The final data file is, for each partition in turn, that partition's segments of
every spill (copied file to file, no re-serialization) then its in-memory tail.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, islice
from operator import itemgetter

from shoal.compute.dependencies import ShuffleDependency
from shoal.compute.external import CHECK_RECORDS, SPILL_HEADROOM, MemoryProbe, combine_into, record_sort_key
from shoal.compute.partitioner import RangePartitioner
from shoal.compute.serde import DEFAULT_BATCH_RECORDS, dumps_batch
from shoal.compute.shuffle_format import MapStatus, ShuffleWriteMetrics, commit_map_output, shuffle_paths

WRITE_BUFFER_BYTES = 1024 * 1024
COPY_CHUNK_BYTES = 8 * 1024 * 1024

# One run's output: for each reduce partition, a lazy iterable of framed batches.
Run = list[Iterable[bytes]]


class _Sink:
    """Appends bytes to a file descriptor through a small buffer, tracking the offset,
    and copies ranges of another file into it (``copy_file_range``: in the kernel)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pos = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.pos += len(data)
        if self._pending_bytes >= WRITE_BUFFER_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            _write_all(self.fd, memoryview(data))
            self._pending, self._pending_bytes = [], 0

    def copy_from(self, src_fd: int, offset: int, length: int) -> None:
        self.flush()
        end = offset + length
        while offset < end:
            try:
                n = os.copy_file_range(src_fd, self.fd, min(end - offset, COPY_CHUNK_BYTES), offset)
            except (OSError, AttributeError):  # EXDEV, ENOSYS, old kernels: copy through user space
                n = 0
            if n <= 0:
                data = os.pread(src_fd, min(end - offset, COPY_CHUNK_BYTES), offset)
                if not data:
                    raise OSError(f"spill file ends before offset {end}")
                _write_all(self.fd, memoryview(data))
                n = len(data)
            offset += n
        self.pos += length


def _write_all(fd: int, view: memoryview) -> None:
    while len(view):
        view = view[os.write(fd, view) :]


class MapOutputWriter:
    """Writes one map task's records; ``write`` may be called once."""

    def __init__(
        self,
        dep: ShuffleDependency,
        *,
        work_dir: str,
        memory_limit_bytes: int,
        metrics: ShuffleWriteMetrics,
        batch_records: int = DEFAULT_BATCH_RECORDS,
        check_records: int = CHECK_RECORDS,
        spill_headroom: float = SPILL_HEADROOM,
    ) -> None:
        self.dep = dep
        self.partitioner = dep.partitioner
        self.parts = dep.num_partitions
        self.work_dir = work_dir
        self.metrics = metrics
        self.batch_records = batch_records
        self.probe = MemoryProbe(memory_limit_bytes, check_records, spill_headroom)
        self.records = [0] * self.parts  # written per partition (spills and tail)
        self.segments: list[list[tuple[int, int]]] = [[] for _ in range(self.parts)]
        self._spill_path: str | None = None
        self._spill: _Sink | None = None
        self._count = 0  # input records read so far
        self._bytes_written = 0

    # --- entry point ---------------------------------------------------------------------------
    def write(
        self,
        records: Iterable[tuple],
        *,
        root: str,
        app_id: str,
        map_index: int,
        node_id: str,
        service: tuple[str, int] | None,
    ) -> MapStatus:
        data_path, index_path = shuffle_paths(root, app_id, self.dep.shuffle_id, map_index)
        dep = self.dep
        try:
            if dep.aggregator is not None and dep.map_side_combine:
                tail = self._combine(records)
            elif dep.key_ordering:
                tail = self._sort(records)
            else:
                tail = self._plain(records)
            offsets, counts = self._commit(tail, data_path, index_path)
        finally:
            self._close_spill()
            self.probe.close()
        m = self.metrics
        m.input_records += self._count
        m.records_written += sum(self.records)
        m.bytes_written += self._bytes_written
        service = tuple(service) if service is not None else None  # type: ignore[assignment]
        return MapStatus(map_index, node_id, service, data_path, offsets, counts)

    def _chunks(self, records: Iterable[tuple]) -> Iterator[list]:
        it, n = iter(records), self.batch_records
        while chunk := list(islice(it, n)):
            self._count += len(chunk)
            yield chunk

    def _over_memory(self) -> bool:
        probe = self.probe
        return probe.due(self._count) and probe.over(self._count)

    # --- the three ways ----------------------------------------------------------------------------
    def _combine(self, records: Iterable[tuple]) -> Run:
        agg = self.dep.aggregator
        assert agg is not None
        d: dict = {}
        for chunk in self._chunks(records):
            combine_into(d, chunk, agg, False)
            if self._over_memory():
                self._spill_run(self._dict_run(d))
                d = {}
                self.probe.spilled(self._count)
        return self._dict_run(d)

    def _sort(self, records: Iterable[tuple]) -> Run:
        buf: list = []
        for chunk in self._chunks(records):
            buf += chunk
            if self._over_memory():
                self._spill_run(self._sorted_run(buf))
                buf = []
                self.probe.spilled(self._count)
        return self._sorted_run(buf)

    def _plain(self, records: Iterable[tuple]) -> Run:
        parts, size = self.parts, self.batch_records
        bufs: list[list] = [[] for _ in range(parts)]
        appends = [b.append for b in bufs]
        held: list[list[bytes]] = [[] for _ in range(parts)]  # full batches, compressed
        partition_many = self.partitioner.partition_many
        key0 = itemgetter(0)
        for chunk in self._chunks(records):
            if parts == 1:
                bufs[0] += chunk
            else:
                for p, rec in zip(partition_many(list(map(key0, chunk))), chunk):
                    appends[p](rec)
            for p, buf in enumerate(bufs):
                while len(buf) >= size:
                    held[p].append(self._dump(p, buf[:size]))
                    del buf[:size]
            if self._over_memory():
                for p, buf in enumerate(bufs):
                    if buf:
                        held[p].append(self._dump(p, buf))
                        buf.clear()
                self._spill_run(held)
                held = [[] for _ in range(parts)]
                self.probe.spilled(self._count)
        return [chain(held[p], self._batches(p, bufs[p])) for p in range(parts)]

    # --- runs: per-partition batches ------------------------------------------------------------------
    def _dump(self, p: int, records: list) -> bytes:
        self.records[p] += len(records)
        return dumps_batch(records)

    def _batches(self, p: int, records: Sequence) -> Iterator[bytes]:
        size = self.batch_records
        for i in range(0, len(records), size):
            yield self._dump(p, records[i : i + size])

    def _dict_run(self, d: dict) -> Run:
        """The dict's items grouped by partition (one partition_many call for all keys)."""
        if not d:
            return [() for _ in range(self.parts)]
        if self.parts == 1:
            return [self._batches(0, list(d.items()))]
        groups: list[list] = [[] for _ in range(self.parts)]
        appends = [g.append for g in groups]
        for p, item in zip(self.partitioner.partition_many(list(d)), d.items()):
            appends[p](item)
        d.clear()
        return [self._batches(p, groups[p]) for p in range(self.parts)]

    def _sorted_run(self, buf: list) -> Run:
        """Sort in C; each partition is then a slice (range partitioner) or a stable
        distribution of the sorted list (any other partitioner)."""
        dep, parts = self.dep, self.parts
        key = record_sort_key(dep.sort_keyfunc)
        part = self.partitioner
        if parts == 1:
            buf.sort(key=key, reverse=not dep.ascending)
            return [self._batches(0, buf)]
        if (
            isinstance(part, RangePartitioner)
            and part.keyfunc is dep.sort_keyfunc
            and part.ascending == dep.ascending
        ):
            buf.sort(key=key)  # ascending: partition p holds bounds[p-1] < k <= bounds[p]
            cuts, lo = [0], 0
            for bound in part.bounds:
                lo = bisect_right(buf, bound, lo, key=key)
                cuts.append(lo)
            cuts.append(len(buf))
            if dep.ascending:
                return [self._slice_batches(p, buf, cuts[p], cuts[p + 1], False) for p in range(parts)]
            last = parts - 1  # descending: partition q is ascending range last - q, reversed
            return [self._slice_batches(q, buf, cuts[last - q], cuts[last - q + 1], True) for q in range(parts)]
        buf.sort(key=key, reverse=not dep.ascending)
        groups: list[list] = [[] for _ in range(parts)]
        appends = [g.append for g in groups]
        for p, rec in zip(part.partition_many(list(map(itemgetter(0), buf))), buf):
            appends[p](rec)
        return [self._batches(p, groups[p]) for p in range(parts)]

    def _slice_batches(self, p: int, buf: list, start: int, end: int, reverse: bool) -> Iterator[bytes]:
        if start >= end:
            return
        seg = buf[start:end]
        if reverse:
            seg.reverse()
        yield from self._batches(p, seg)

    # --- spill file and commit ---------------------------------------------------------------------
    def _spill_run(self, run: Run) -> None:
        """Write a run to the spill file, remembering each partition's segment."""
        if self._spill is None:
            os.makedirs(self.work_dir, exist_ok=True)
            fd, self._spill_path = tempfile.mkstemp(prefix="shuffle-spill-", dir=self.work_dir)
            self._spill = _Sink(fd)
        sink = self._spill
        before = sink.pos
        for p, blobs in enumerate(run):
            start = sink.pos
            for blob in blobs:
                sink.write(blob)
            if sink.pos > start:
                self.segments[p].append((start, sink.pos - start))
        sink.flush()
        if sink.pos > before:
            self.metrics.spills += 1
            self.metrics.spilled_bytes += sink.pos - before

    def _close_spill(self) -> None:
        if self._spill is not None:
            os.close(self._spill.fd)
            self._spill = None
        if self._spill_path is not None:
            try:
                os.unlink(self._spill_path)
            except FileNotFoundError:
                pass
            self._spill_path = None

    def _commit(self, tail: Run, data_path: str, index_path: str) -> tuple[list[int], list[int]]:
        """Write the data under a temporary name, then commit it (first attempt wins)."""
        os.makedirs(os.path.dirname(data_path), exist_ok=True)
        tmp_data = data_path + f".{os.getpid()}-{secrets.token_hex(6)}.tmp"
        try:
            offsets = self._write_data(tail, tmp_data)
        except BaseException:
            try:
                os.unlink(tmp_data)
            except FileNotFoundError:
                pass
            raise
        self._bytes_written = offsets[-1]
        return commit_map_output(tmp_data, data_path, index_path, offsets, list(self.records))

    def _write_data(self, tail: Run, path: str) -> list[int]:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            out = _Sink(fd)
            spill_fd = self._spill.fd if self._spill is not None else -1
            offsets = [0]
            for p in range(self.parts):
                for start, length in self.segments[p]:
                    out.copy_from(spill_fd, start, length)
                for blob in tail[p]:
                    out.write(blob)
                offsets.append(out.pos)
            out.flush()
            return offsets
        finally:
            os.close(fd)


