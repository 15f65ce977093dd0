"""Aggregation and sorting that spill to disk when memory runs short.

:class:`ExternalMerger` is PySpark's ExternalMerger: values combine by key in one
dict; when the process is over its memory limit the dict's items are split by a
second hash into ``SUBPARTITIONS`` files and the dict is dropped. At the end each
file is merged in memory on its own, by a nested merger (another hash) that spills
again if one sub-partition is still too big. :class:`ExternalSorter` sorts records
by key in memory (Timsort is close to linear on the pre-sorted runs map tasks
write) and, over the limit, spills sorted runs and merges them with ``heapq.merge``.

Memory is the process RSS, read from ``/proc/self/statm`` (about 2 µs) every
``CHECK_RECORDS`` records. After a spill, glibc's ``malloc_trim`` returns the freed
memory to the OS, and the threshold rises to the RSS left plus ``SPILL_HEADROOM``
(see :class:`MemoryProbe`): a limit below what the process holds anyway does not
turn every check into a spill.
"""

from __future__ import annotations

import heapq
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, islice
from operator import itemgetter
from typing import Any

import psutil

from shoal.compute.dependencies import Aggregator
from shoal.compute.serde import dumps_batch, read_batches

CHECK_RECORDS = 8192
SPILL_HEADROOM = 1.05
SUBPARTITIONS = 59  # prime, as PySpark's default: spreads keys of any stride
SPILL_BATCH_RECORDS = 1024  # combiners may be big (groupByKey lists): smaller batches
MERGE_DEPTH_MAX = 4  # past this a sub-partition is merged in memory whatever its size
_MISSING = object()


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``: hands memory freed by a spill back to the OS, so RSS
    shows what the process really holds (without it RSS stays at its high mark)."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (ImportError, OSError, AttributeError):  # not glibc (musl, macOS): RSS as it is
        return None


_malloc_trim = _find_malloc_trim()


class MemoryProbe:
    """The process RSS, cheaply; when to look at it next; and whether to spill.

    After a spill the threshold becomes ``max(limit, RSS * headroom)`` (PySpark's
    ``_next_limit``): memory the allocator kept after the spill is reused by the next
    records, so the next spill comes when the data grows past what the last one freed.
    """

    def __init__(self, limit_bytes: int, check_records: int = CHECK_RECORDS, headroom: float = SPILL_HEADROOM) -> None:
        self.limit_bytes = limit_bytes
        self.threshold = limit_bytes
        self.check_records = max(1, check_records)
        self.headroom = headroom
        self._next = self.check_records
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._fd = -1
        self._proc: psutil.Process | None = None
        try:
            self._fd = os.open("/proc/self/statm", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:  # not Linux
            self._proc = psutil.Process()

    def rss(self) -> int:
        if self._fd >= 0:
            return int(os.pread(self._fd, 128, 0).split()[1]) * self._page
        return (self._proc or psutil.Process()).memory_info().rss

    def due(self, count: int) -> bool:
        """True when ``count`` (records seen so far) reached the next check."""
        return count >= self._next

    def over(self, count: int) -> bool:
        """At a check: is the process over its threshold? Schedules the next check."""
        self._next = count + self.check_records
        return self.rss() > self.threshold

    def spilled(self, count: int) -> None:
        """After a spill (and after the spilled data was dropped)."""
        if _malloc_trim is not None:
            _malloc_trim(0)  # a few ms, once per spill
        self.threshold = max(self.limit_bytes, int(self.rss() * self.headroom))
        self._next = count + self.check_records

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            self.close()


def combine_into(d: dict, records: list, agg: Aggregator, combined: bool) -> None:
    """Merge ``(key, value)`` records into ``d`` (the hot loop of every aggregation).

    ``combined``: the values are combiners already (merge_combiners), else raw values.
    """
    get = d.get
    if agg.merge_kind == "add" and (combined or agg.identity_create):
        # (collections._count_elements is no faster for word counts: the dict dominates.)
        missing = _MISSING
        for k, v in records:  # '+' inline: works for numbers, strings and lists alike
            old = get(k, missing)
            d[k] = v if old is missing else old + v
        return
    missing = _MISSING
    if combined or agg.identity_create:
        merge = agg.merge_combiners if combined else agg.merge_value
        for k, v in records:
            old = get(k, missing)
            d[k] = v if old is missing else merge(old, v)
        return
    create, merge = agg.create_combiner, agg.merge_value
    for k, v in records:
        old = get(k, missing)
        d[k] = create(v) if old is missing else merge(old, v)


class ExternalMerger:
    """Combine records by key within a memory limit, spilling to ``work_dir``."""

    def __init__(
        self,
        aggregator: Aggregator,
        *,
        work_dir: str,
        memory_limit_bytes: int,
        depth: int = 0,
        check_records: int = CHECK_RECORDS,
        spill_headroom: float = SPILL_HEADROOM,
    ) -> None:
        self.agg = aggregator
        self.work_dir = work_dir
        self.memory_limit_bytes = memory_limit_bytes
        self.depth = depth
        self.check_records = check_records
        self.spill_headroom = spill_headroom
        self.data: dict = {}
        self.spills = 0
        self.spilled_bytes = 0
        self._count = 0
        self._probe = MemoryProbe(memory_limit_bytes, check_records, spill_headroom)
        self._dir: str | None = None

    # --- input ---------------------------------------------------------------------------------
    def merge_batches(self, batches: Iterable[list], combined: bool) -> None:
        """Add batches of ``(key, value)``; values are combiners when ``combined``."""
        agg, probe, can_spill = self.agg, self._probe, self.depth < MERGE_DEPTH_MAX
        for batch in batches:
            combine_into(self.data, batch, agg, combined)
            self._count += len(batch)
            if can_spill and probe.due(self._count) and probe.over(self._count):
                self._spill()
                probe.spilled(self._count)

    def merge_values(self, records: Iterable[tuple]) -> None:
        self.merge_batches(_chunks(records, self.check_records), combined=False)

    def merge_combiners(self, records: Iterable[tuple]) -> None:
        self.merge_batches(_chunks(records, self.check_records), combined=True)

    # --- output --------------------------------------------------------------------------------
    def items(self) -> Iterator[tuple]:
        """Every ``(key, combiner)``, once each. Without spills this is the dict's own
        iterator (no Python frame per item); with spills, a generator that removes
        the spill files as it goes (``close()`` it when stopping early)."""
        if not self.spills:
            self._probe.close()
            return iter(self.data.items())
        return self._merge_spills()

    def _merge_spills(self) -> Iterator[tuple]:
        try:
            self._spill()  # everything on disk: each sub-partition is then merged alone
            self._probe.spilled(self._count)
            self._probe.close()
            assert self._dir is not None
            for i in range(SUBPARTITIONS):
                path = os.path.join(self._dir, str(i))
                if not os.path.exists(path):
                    continue
                # The limit of a nested merger is where this one got to spill at.
                sub = ExternalMerger(
                    self.agg, work_dir=self._dir, memory_limit_bytes=self._probe.threshold,
                    depth=self.depth + 1, check_records=self.check_records, spill_headroom=self.spill_headroom,
                )
                try:
                    with open(path, "rb") as f:
                        sub.merge_batches(read_batches(f), combined=True)
                    os.unlink(path)
                    yield from sub.items()
                finally:
                    self.spills += sub.spills
                    self.spilled_bytes += sub.spilled_bytes
                    sub.cleanup()
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        self.data = {}
        self._probe.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # --- spilling --------------------------------------------------------------------------------
    def _spill(self) -> None:
        """Append the dict's items to sub-partition files by a second hash; drop the dict."""
        if not self.data:
            return
        if self._dir is None:
            os.makedirs(self.work_dir, exist_ok=True)
            self._dir = tempfile.mkdtemp(prefix=f"merge{self.depth}-", dir=self.work_dir)
        groups: list[list] = [[] for _ in range(SUBPARTITIONS)]
        appends = [g.append for g in groups]
        salt, n = self.depth + 0x5EED, SUBPARTITIONS
        for item in self.data.items():
            appends[hash((salt, item[0])) % n](item)
        self.data = {}  # a new dict: clear() would keep the big hash table allocated
        for i, group in enumerate(groups):
            if not group:
                continue
            with open(os.path.join(self._dir, str(i)), "ab") as f:
                for j in range(0, len(group), SPILL_BATCH_RECORDS):
                    blob = dumps_batch(group[j : j + SPILL_BATCH_RECORDS])
                    f.write(blob)
                    self.spilled_bytes += len(blob)
            groups[i] = []
        self.spills += 1


class ExternalSorter:
    """Sort ``(key, value)`` records by key (or ``keyfunc(key)``), spilling sorted runs."""

    def __init__(
        self,
        *,
        work_dir: str,
        memory_limit_bytes: int,
        keyfunc: Callable[[Any], Any] | None = None,
        ascending: bool = True,
        check_records: int = CHECK_RECORDS,
        spill_headroom: float = SPILL_HEADROOM,
    ) -> None:
        self.work_dir = work_dir
        self.sort_key = record_sort_key(keyfunc)
        self.reverse = not ascending
        self.check_records = check_records
        self.buffer: list = []
        self.spills = 0
        self.spilled_bytes = 0
        self._count = 0
        self._probe = MemoryProbe(memory_limit_bytes, check_records, spill_headroom)
        self._runs: list[str] = []
        self._dir: str | None = None

    def add_batches(self, batches: Iterable[list]) -> None:
        probe = self._probe
        for batch in batches:
            self.buffer += batch
            self._count += len(batch)
            if probe.due(self._count) and probe.over(self._count):
                self._spill()
                probe.spilled(self._count)

    def add(self, records: Iterable[tuple]) -> None:
        self.add_batches(_chunks(records, self.check_records))

    def sorted_records(self) -> Iterator[tuple]:
        """Every record, sorted. Without spills, the sorted list's own iterator; with
        spills, a generator merging the runs that removes them when done (or closed)."""
        self._probe.close()
        buf, self.buffer = self.buffer, []
        buf.sort(key=self.sort_key, reverse=self.reverse)
        if not self._runs:
            return iter(buf)
        return self._merge_runs(buf)

    def _merge_runs(self, buf: list) -> Iterator[tuple]:
        try:
            files = [open(path, "rb") for path in self._runs]
            try:
                runs = [chain.from_iterable(read_batches(f)) for f in files]
                yield from heapq.merge(*runs, buf, key=self.sort_key, reverse=self.reverse)
            finally:
                for f in files:
                    f.close()
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        self.buffer = []
        self._probe.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._runs = []

    def _spill(self) -> None:
        if not self.buffer:
            return
        if self._dir is None:
            os.makedirs(self.work_dir, exist_ok=True)
            self._dir = tempfile.mkdtemp(prefix="sort-", dir=self.work_dir)
        buf, self.buffer = self.buffer, []
        buf.sort(key=self.sort_key, reverse=self.reverse)
        path = os.path.join(self._dir, f"run{len(self._runs)}")
        with open(path, "wb") as f:
            for j in range(0, len(buf), CHECK_RECORDS):
                blob = dumps_batch(buf[j : j + CHECK_RECORDS])
                f.write(blob)
                self.spilled_bytes += len(blob)
        self._runs.append(path)
        self.spills += 1


def record_sort_key(keyfunc: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    """The sort key of a ``(key, value)`` record: its key, through ``keyfunc`` if any."""
    if keyfunc is None:
        return itemgetter(0)
    return lambda record: keyfunc(record[0])


def _chunks(records: Iterable[tuple], size: int) -> Iterator[list]:
    it = iter(records)
    while True:
        chunk = list(islice(it, size))
        if not chunk:
            return
        yield chunk
