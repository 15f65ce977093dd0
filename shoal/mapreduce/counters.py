"""Hadoop job counters: what tasks count, how their counts add up on the driver
(an accumulator: only a task's successful attempt counts, as in Hadoop), and the
report printed when a job ends."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TextIO

from shoal.compute.shared import AccumulatorParam

if TYPE_CHECKING:
    from shoal.compute.shared import Accumulator

# Group names as Hadoop prints them.
JOB = "Job Counters"
FRAMEWORK = "Map-Reduce Framework"
INPUT = "File Input Format Counters"
OUTPUT = "File Output Format Counters"

# Framework counter names (Hadoop's display names), in Hadoop's print order.
MAP_INPUT_RECORDS = "Map input records"
MAP_OUTPUT_RECORDS = "Map output records"
MAP_OUTPUT_BYTES = "Map output bytes"
MAP_OUTPUT_MATERIALIZED_BYTES = "Map output materialized bytes"
COMBINE_INPUT_RECORDS = "Combine input records"
COMBINE_OUTPUT_RECORDS = "Combine output records"
REDUCE_INPUT_GROUPS = "Reduce input groups"
REDUCE_SHUFFLE_BYTES = "Reduce shuffle bytes"
REDUCE_INPUT_RECORDS = "Reduce input records"
REDUCE_OUTPUT_RECORDS = "Reduce output records"
SPILLED_RECORDS = "Spilled Records"
SHUFFLED_MAPS = "Shuffled Maps "  # (sic: Hadoop's display name ends with a space)
MERGED_MAP_OUTPUTS = "Merged Map outputs"
BYTES_READ = "Bytes Read"
BYTES_WRITTEN = "Bytes Written"

LAUNCHED_MAPS = "Launched map tasks"
LAUNCHED_REDUCES = "Launched reduce tasks"
DATA_LOCAL_MAPS = "Data-local map tasks"
RACK_LOCAL_MAPS = "Rack-local map tasks"
OTHER_LOCAL_MAPS = "Other local map tasks"
FAILED_MAPS = "Failed map tasks"
FAILED_REDUCES = "Failed reduce tasks"
KILLED_MAPS = "Killed map tasks"
KILLED_REDUCES = "Killed reduce tasks"
MAP_MILLIS = "Total time spent by all map tasks (ms)"
REDUCE_MILLIS = "Total time spent by all reduce tasks (ms)"

ORDER = {
    JOB: [FAILED_MAPS, FAILED_REDUCES, KILLED_MAPS, KILLED_REDUCES, LAUNCHED_MAPS, LAUNCHED_REDUCES,
          OTHER_LOCAL_MAPS, DATA_LOCAL_MAPS, RACK_LOCAL_MAPS, MAP_MILLIS, REDUCE_MILLIS],
    FRAMEWORK: [MAP_INPUT_RECORDS, MAP_OUTPUT_RECORDS, MAP_OUTPUT_BYTES, MAP_OUTPUT_MATERIALIZED_BYTES,
                COMBINE_INPUT_RECORDS, COMBINE_OUTPUT_RECORDS, REDUCE_INPUT_GROUPS, REDUCE_SHUFFLE_BYTES,
                REDUCE_INPUT_RECORDS, REDUCE_OUTPUT_RECORDS, SPILLED_RECORDS, SHUFFLED_MAPS, MERGED_MAP_OUTPUTS],
    INPUT: [BYTES_READ],
    OUTPUT: [BYTES_WRITTEN],
}
GROUP_ORDER = [JOB, FRAMEWORK, INPUT, OUTPUT]


class Counters:
    """Counts by (group, name). Adding is commutative, so per-task counters merge in
    any order on the driver."""

    __slots__ = ("values", "_lock")

    def __init__(self, values: dict[tuple[str, str], int] | None = None) -> None:
        self.values: dict[tuple[str, str], int] = dict(values or {})
        # A streaming task counts from three threads (stdin writer, stderr reader, main).
        self._lock = threading.Lock()

    def incr(self, group: str, name: str, amount: int = 1) -> None:
        key = (group, name)
        with self._lock:
            self.values[key] = self.values.get(key, 0) + amount

    def get(self, group: str, name: str) -> int:
        return self.values.get((group, name), 0)

    def __getitem__(self, name: str) -> int:
        """A counter by name alone, any group (``counters["Map input records"]``)."""
        found = [v for (_, n), v in self.values.items() if n == name or n.strip() == name]
        if not found:
            raise KeyError(name)
        return sum(found)

    def add_all(self, other: Counters) -> Counters:
        with self._lock:
            for key, v in other.values.items():
                self.values[key] = self.values.get(key, 0) + v
        return self

    def groups(self) -> Iterator[tuple[str, list[tuple[str, int]]]]:
        """Groups in Hadoop's order (framework groups first, then user groups by
        name), each with its counters in Hadoop's order, then by name."""
        by_group: dict[str, dict[str, int]] = {}
        for (group, name), v in self.values.items():
            by_group.setdefault(group, {})[name] = v
        names = [g for g in GROUP_ORDER if g in by_group] + sorted(g for g in by_group if g not in GROUP_ORDER)
        for group in names:
            order = ORDER.get(group, [])
            counts = by_group[group]
            known = [(n, counts[n]) for n in order if n in counts]
            yield group, known + sorted((n, v) for n, v in counts.items() if n not in order)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {group: {n.strip(): v for n, v in items} for group, items in self.groups()}

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"Counters({self.as_dict()!r})"

    def __reduce__(self) -> tuple:
        return (Counters, (self.values,))


class TaskCountersParam(AccumulatorParam):
    """The job's counters as {(task kind, partition): that task's counters}: a task
    that runs again (its map output was lost with its node) replaces its earlier
    counts rather than adding to them, so each task counts once, as in Hadoop."""

    def zero(self, value: dict) -> dict:
        return {}

    def addInPlace(self, value1: dict, value2: dict) -> dict:
        value1.update(value2)
        return value1


def report(acc: Accumulator | None, kind: str, partition: int, counters: Counters) -> None:
    """Hand a task's counters to the job (they count if this attempt's result does)."""
    if acc is not None:
        acc.add({(kind, partition): counters})


def job_total(per_task: dict) -> Counters:
    return merge(per_task.values())


def print_counters(counters: Counters, out: TextIO) -> None:
    """Hadoop's end-of-job listing: ``Counters: N`` then each group, indented."""
    print(f"Counters: {len(counters)}", file=out)
    for group, items in counters.groups():
        print(f"\t{group}", file=out)
        for name, value in items:
            print(f"\t\t{name}={value}", file=out)


def merge(items: Iterable[Counters]) -> Counters:
    out = Counters()
    for c in items:
        out.add_all(c)
    return out
