"""Dependencies between RDDs: narrow ones stay inside a stage, a shuffle one
splits the lineage into a map stage and a reduce stage (Spark's model)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shoal.compute.partitioner import Partitioner

if TYPE_CHECKING:
    from shoal.compute.rdd import RDD


@dataclass(frozen=True)
class Aggregator:
    """How values of one key combine (Spark's ``Aggregator``): ``reduceByKey`` is
    ``(identity, f, f)``; ``groupByKey`` builds lists."""

    create_combiner: Callable[[Any], Any]
    merge_value: Callable[[Any, Any], Any]
    merge_combiners: Callable[[Any, Any], Any]
    # True when create_combiner is the identity (reduceByKey, foldByKey-like):
    # lets the combine loops skip a call per record.
    identity_create: bool = False
    # "add" when merge_value and merge_combiners are both addition of numbers, so a
    # counting loop (collections.Counter) may replace the generic one.
    merge_kind: str = ""


class Dependency:
    rdd: RDD


class NarrowDependency(Dependency):
    """Each child partition depends on a few parent partitions, known statically."""

    def __init__(self, rdd: RDD) -> None:
        self.rdd = rdd

    def parents(self, partition: int) -> list[int]:
        raise NotImplementedError


class OneToOneDependency(NarrowDependency):
    def parents(self, partition: int) -> list[int]:
        return [partition]


class RangeDependency(NarrowDependency):
    """Child partitions [out_start, out_start+length) are parent [in_start, ...) (union)."""

    def __init__(self, rdd: RDD, in_start: int, out_start: int, length: int) -> None:
        super().__init__(rdd)
        self.in_start, self.out_start, self.length = in_start, out_start, length

    def parents(self, partition: int) -> list[int]:
        if self.out_start <= partition < self.out_start + self.length:
            return [partition - self.out_start + self.in_start]
        return []


class ManyToOneDependency(NarrowDependency):
    """Any static mapping (coalesce, cartesian, zip): ``mapping[child] -> parents``."""

    def __init__(self, rdd: RDD, mapping: list[list[int]]) -> None:
        super().__init__(rdd)
        self.mapping = mapping

    def parents(self, partition: int) -> list[int]:
        return self.mapping[partition]


@dataclass(eq=False)
class ShuffleDependency(Dependency):
    """The map side of a shuffle: the parent's (key, value) records are partitioned
    by ``partitioner``, combined map-side when ``map_side_combine``, and sorted by
    key within each reduce partition when ``key_ordering`` (sortByKey)."""

    rdd: RDD
    shuffle_id: int
    partitioner: Partitioner
    aggregator: Aggregator | None = None
    map_side_combine: bool = False
    # sortByKey: reducers see their partition sorted by key (keyfunc, ascending).
    key_ordering: bool = False
    ascending: bool = True
    sort_keyfunc: Callable[[Any], Any] | None = None
    extra: dict = field(default_factory=dict)
    # Writes a map task's output instead of the RDD engine's writer (MapReduce's sort
    # buffer and spills): same signature and result as ``shuffle.write_map_output``.
    map_writer: Callable[..., Any] | None = None
    # Hadoop's reduce slow start: the reading stage may start once this fraction of
    # the map tasks is done (its tasks then poll the driver for the other outputs).
    slow_start: float | None = None

    @property
    def num_partitions(self) -> int:
        return self.partitioner.num_partitions
