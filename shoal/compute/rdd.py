"""The RDD: an immutable, partitioned collection defined by its lineage.

Transformations build new RDDs lazily; actions (``rdd_actions.py``) run jobs. Chains
of narrow transformations collapse into one ``PipelinedRDD`` whose function is the
composition (PySpark's PipelinedRDD), so a task runs one fused iterator pipeline and
nothing is materialised between operators. Pair-RDD methods live in ``rdd_pairs.py``.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from shoal.compute.dependencies import (
    Dependency,
    ManyToOneDependency,
    OneToOneDependency,
    RangeDependency,
    ShuffleDependency,
)
from shoal.compute.partitioner import Partitioner
from shoal.compute.rdd_actions import ActionsMixin
from shoal.compute.rdd_pairs import PairsMixin
from shoal.compute.storagelevel import StorageLevel

if TYPE_CHECKING:
    from shoal.compute.context import ComputeContext
    from shoal.compute.taskcontext import TaskContext


def call_site(method: str) -> str:
    """``"method at file.py:12"``: where the user called us (Spark's call site)."""
    frame = sys._getframe(1)
    here = os.path.dirname(__file__)
    while frame is not None and os.path.dirname(frame.f_code.co_filename).startswith(
        (here, os.path.join(os.path.dirname(here), "spark"))
    ):
        frame = frame.f_back
    if frame is None:
        return method
    return f"{method} at {os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


class Partition:
    """One slice of an RDD; subclasses carry what ``compute`` needs."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __getstate__(self) -> dict:
        return {s: getattr(self, s) for cls in type(self).__mro__ for s in getattr(cls, "__slots__", ())}

    def __setstate__(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)


class RDDId(int):
    """An RDD's id: an ``int`` for the engine (cache keys, stage plans) that can also
    be called, as PySpark's ``rdd.id()``."""

    __slots__ = ()

    def __call__(self) -> int:
        return int(self)


class RDD(ActionsMixin, PairsMixin):
    """A Resilient Distributed Dataset (PySpark's API)."""

    def __init__(self, ctx: ComputeContext, deps: list[Dependency], partitioner: Partitioner | None = None,
                 site: str = "") -> None:
        self.ctx = ctx
        self.id = RDDId(ctx._new_rdd_id())
        self.deps = deps
        self.partitioner = partitioner
        self.storage_level: StorageLevel | None = None
        self.checkpoint_dir: str | None = None  # set once checkpointed: lineage is cut
        self._checkpoint_requested = False
        self.is_checkpointed = False  # PySpark: checkpoint() was called
        self._locally_checkpointed = False
        self.name_: str | None = None
        self.site = site
        self._partitions: list[Partition] | None = None

    # --- what subclasses provide ----------------------------------------------------------
    def get_partitions(self) -> list[Partition]:
        raise NotImplementedError

    def compute(self, split: Partition, tc: TaskContext) -> Iterator:
        raise NotImplementedError

    def preferred_locations(self, split: Partition) -> list[tuple[str, str]]:
        """(host, rack) pairs where ``split`` is cheapest to compute."""
        return []

    # --- engine hooks -------------------------------------------------------------------
    @property
    def partitions(self) -> list[Partition]:
        if self._partitions is None:
            self._partitions = self.get_partitions()
        return self._partitions

    def iterator(self, split: Partition, tc: TaskContext) -> Iterator:
        """Records of ``split``: from the cache or a checkpoint when there is one."""
        if self.checkpoint_dir is not None:
            return tc.read_checkpoint(self, split)
        if self.storage_level is not None:
            return tc.cached_or_compute(self, split)
        return self.compute(split, tc)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["ctx"] = None
        state["id"] = int(self.id)  # executors see a plain int (it goes into wire messages)
        if self.checkpoint_dir is not None:
            state["deps"] = []
        return state

    def _narrow_parent(self) -> RDD:
        return self.deps[0].rdd

    # --- identity -------------------------------------------------------------------------
    @property
    def context(self) -> ComputeContext:
        return self.ctx

    def getNumPartitions(self) -> int:
        return len(self.partitions)

    def name(self) -> str | None:
        return self.name_

    def setName(self, name: str) -> RDD:
        self.name_ = name
        return self

    def __repr__(self) -> str:
        return f"{self.name_ or type(self).__name__}[{self.id}] at {self.site or '?'}"

    # --- narrow transformations -----------------------------------------------------------
    def mapPartitionsWithIndex(self, f: Callable[[int, Iterator], Iterable], preservesPartitioning: bool = False,
                               ) -> RDD:
        return PipelinedRDD(self, f, preservesPartitioning, call_site("mapPartitionsWithIndex"))

    def mapPartitionsWithSplit(self, f: Callable[[int, Iterator], Iterable], preservesPartitioning: bool = False,
                               ) -> RDD:
        """Deprecated PySpark alias of ``mapPartitionsWithIndex``."""
        return PipelinedRDD(self, f, preservesPartitioning, call_site("mapPartitionsWithSplit"))

    def mapPartitions(self, f: Callable[[Iterator], Iterable], preservesPartitioning: bool = False) -> RDD:
        return PipelinedRDD(self, lambda _, it: f(it), preservesPartitioning, call_site("mapPartitions"))

    def map(self, f: Callable[[Any], Any], preservesPartitioning: bool = False) -> RDD:
        rdd = PipelinedRDD(self, lambda _, it: map(f, it), preservesPartitioning, call_site("map"))
        rdd.map_func = f
        return rdd

    def flatMap(self, f: Callable[[Any], Iterable], preservesPartitioning: bool = False) -> RDD:
        chain = itertools.chain.from_iterable
        rdd = PipelinedRDD(self, lambda _, it: chain(map(f, it)), preservesPartitioning, call_site("flatMap"))
        rdd.flat_map_func = f
        return rdd

    def filter(self, f: Callable[[Any], bool]) -> RDD:
        return PipelinedRDD(self, lambda _, it: filter(f, it), True, call_site("filter"))

    def glom(self) -> RDD:
        return PipelinedRDD(self, lambda _, it: iter([list(it)]), False, call_site("glom"))

    def keyBy(self, f: Callable[[Any], Any]) -> RDD:
        return self.map(lambda x: (f(x), x))

    def sample(self, withReplacement: bool, fraction: float, seed: int | None = None) -> RDD:
        if fraction < 0:
            raise ValueError(f"fraction must be nonnegative, got {fraction}")
        seed = random.randrange(1 << 62) if seed is None else seed

        def sampler(index: int, it: Iterator) -> Iterator:
            rng = random.Random(seed ^ (index * 0x9E3779B97F4A7C15))
            if withReplacement:
                return _poisson_sample(it, fraction, rng)
            return (x for x in it if rng.random() < fraction)

        return PipelinedRDD(self, sampler, True, call_site("sample"))

    def randomSplit(self, weights: list[float], seed: int | None = None) -> list[RDD]:
        total = float(sum(weights))
        if total <= 0 or any(w < 0 for w in weights):
            raise ValueError(f"weights must be nonnegative with a positive sum, got {weights}")
        seed = random.randrange(1 << 62) if seed is None else seed
        bounds = list(itertools.accumulate(w / total for w in weights))
        lows = [0.0] + bounds[:-1]

        def split_range(lo: float, hi: float) -> Callable[[int, Iterator], Iterator]:
            def f(index: int, it: Iterator) -> Iterator:
                rng = random.Random(seed ^ (index * 0x9E3779B97F4A7C15))
                for x in it:
                    r = rng.random()
                    if lo <= r < hi:
                        yield x
            return f

        return [PipelinedRDD(self, split_range(lo, hi), True, call_site("randomSplit"))
                for lo, hi in zip(lows, bounds)]

    def union(self, other: RDD) -> RDD:
        return self.ctx.union([self, other])

    def __add__(self, other: RDD) -> RDD:
        if not isinstance(other, RDD):
            return NotImplemented
        return self.union(other)

    def cartesian(self, other: RDD) -> RDD:
        return CartesianRDD(self, other)

    def zip(self, other: RDD) -> RDD:
        return ZippedRDD(self, other)

    def zipWithIndex(self) -> RDD:
        counts = self.mapPartitions(lambda it: iter([_count(it)])).collect() if self.getNumPartitions() > 1 else [0]
        starts = [0, *itertools.accumulate(counts)]

        def f(index: int, it: Iterator) -> Iterator:
            return zip(it, itertools.count(starts[index]))

        return PipelinedRDD(self, f, False, call_site("zipWithIndex"))

    def zipWithUniqueId(self) -> RDD:
        n = self.getNumPartitions()

        def f(index: int, it: Iterator) -> Iterator:
            return ((x, i * n + index) for i, x in enumerate(it))

        return PipelinedRDD(self, f, False, call_site("zipWithUniqueId"))

    def coalesce(self, numPartitions: int, shuffle: bool = False) -> RDD:
        if numPartitions < 1:
            raise ValueError(f"number of partitions must be positive, got {numPartitions}")
        if shuffle:
            return self.repartition(numPartitions)
        return CoalescedRDD(self, numPartitions)

    def repartition(self, numPartitions: int) -> RDD:
        if numPartitions < 1:
            raise ValueError(f"number of partitions must be positive, got {numPartitions}")

        def spread(index: int, it: Iterator) -> Iterator:
            start = random.Random(index).randrange(numPartitions)
            return ((start + i, x) for i, x in enumerate(it))

        keyed = PipelinedRDD(self, spread, False, call_site("repartition"))
        return keyed.partitionBy(numPartitions, lambda k: k).values()

    def pipe(self, command: str, env: dict[str, str] | None = None, checkCode: bool = False) -> RDD:
        from shoal.compute.pipe import pipe_partition

        return PipelinedRDD(self, lambda _, it: pipe_partition(command, env, checkCode, it), False,
                            call_site("pipe"))

    def groupBy(self, f: Callable[[Any], Any], numPartitions: int | None = None,
                partitionFunc: Callable[[Any], int] | None = None) -> RDD:
        return self.map(lambda x: (f(x), x)).groupByKey(numPartitions, partitionFunc)

    def distinct(self, numPartitions: int | None = None) -> RDD:
        return (self.map(lambda x: (x, None))
                .reduceByKey(lambda x, _: x, numPartitions)
                .map(lambda kv: kv[0]))

    def intersection(self, other: RDD) -> RDD:
        return (self.map(lambda v: (v, None)).cogroup(other.map(lambda v: (v, None)))
                .filter(lambda kv: len(kv[1][0]) > 0 and len(kv[1][1]) > 0).keys())

    def subtract(self, other: RDD, numPartitions: int | None = None) -> RDD:
        return self.map(lambda x: (x, True)).subtractByKey(other.map(lambda x: (x, True)), numPartitions).keys()

    def sortBy(self, keyfunc: Callable[[Any], Any], ascending: bool = True, numPartitions: int | None = None) -> RDD:
        return self.keyBy(keyfunc).sortByKey(ascending, numPartitions).values()

    # --- persistence ----------------------------------------------------------------------
    def persist(self, storageLevel: StorageLevel = StorageLevel.MEMORY_ONLY) -> RDD:
        if self.storage_level is not None and self.storage_level != storageLevel:
            raise ValueError("cannot change the storage level of an RDD after it was set")
        self.storage_level = storageLevel
        return self

    def cache(self) -> RDD:
        return self.persist(StorageLevel.MEMORY_ONLY)

    def unpersist(self, blocking: bool = False) -> RDD:
        if self.storage_level is not None:
            self.ctx._unpersist(int(self.id))
        self.storage_level = None
        return self

    @property
    def is_cached(self) -> bool:
        return self.storage_level is not None

    def getStorageLevel(self) -> StorageLevel:
        return self.storage_level or StorageLevel.NONE

    def checkpoint(self) -> None:
        """Save this RDD to the checkpoint directory after its next action; its
        lineage is then truncated (Spark's reliable checkpoint)."""
        if self.ctx.checkpoint_dir is None:
            raise ValueError("checkpoint directory has not been set: call setCheckpointDir first")
        self._checkpoint_requested = True
        self.is_checkpointed = True

    def isCheckpointed(self) -> bool:
        """True once the checkpoint has been written (after the next action)."""
        return self.checkpoint_dir is not None

    def localCheckpoint(self) -> None:
        """Keep the computed partitions on the executors (memory, then disk), so later
        actions do not recompute the lineage (Spark's local checkpoint; unlike Spark,
        the lineage stays known, so a lost executor's partitions are recomputed)."""
        if self.storage_level is None:
            self.persist(StorageLevel.MEMORY_AND_DISK)
        self._locally_checkpointed = True

    def isLocallyCheckpointed(self) -> bool:
        return self._locally_checkpointed

    def getCheckpointFile(self) -> str | None:
        return self.checkpoint_dir

    def toDebugString(self) -> bytes:
        """The lineage, one RDD per line, indented at each shuffle boundary (Spark)."""
        lines: list[str] = []

        def walk(rdd: RDD, indent: str, first: bool, shuffle_child: bool) -> None:
            cached = f" [{rdd.storage_level}]" if rdd.storage_level else " []"
            label = f"{type(rdd).__name__}[{rdd.id}] at {rdd.site or '?'}{cached}"
            if rdd.checkpoint_dir:
                label += f" (checkpointed to {rdd.checkpoint_dir})"
            if shuffle_child:
                lines.append(f"{indent[:-3]}+-({rdd.getNumPartitions()}) {label}")
            elif first:
                lines.append(f"({rdd.getNumPartitions()}) {label}")
            else:
                lines.append(f"{indent}|  {label}")
            deps = [] if rdd.checkpoint_dir else rdd.deps
            for dep in deps:
                if isinstance(dep, ShuffleDependency):
                    walk(dep.rdd, indent + "   ", False, True)
                else:
                    walk(dep.rdd, indent, False, False)

        walk(self, " ", True, False)
        return "\n".join(lines).encode()


def _count(it: Iterable) -> int:
    if hasattr(it, "__len__"):
        return len(it)  # type: ignore[arg-type]
    n = 0
    for n, _ in enumerate(it, 1):
        pass
    return n


def _poisson_sample(it: Iterator, fraction: float, rng: random.Random) -> Iterator:
    import math

    limit = math.exp(-fraction)
    for x in it:
        k, p = 0, rng.random()
        while p > limit:  # Knuth's Poisson sampler
            k += 1
            p *= rng.random()
        for _ in range(k):
            yield x


# --- concrete RDDs --------------------------------------------------------------------------
class PipelinedRDD(RDD):
    """A fused chain of narrow per-partition functions over one parent."""

    def __init__(self, prev: RDD, func: Callable[[int, Iterator], Iterable], preserves: bool, site: str) -> None:
        self.map_func: Callable | None = None
        self.flat_map_func: Callable | None = None
        # The RDD this one was built on before fusion: lets reduceByKey see that its
        # input is ``prev.map(lambda w: (w, 1))`` and count ``prev`` directly.
        self.unfused_prev = prev
        if isinstance(prev, PipelinedRDD) and prev._fusable():
            prev_func = prev.func

            def fused(index: int, it: Iterator) -> Iterable:
                return func(index, prev_func(index, it))

            self.func = fused
            self.stages_fused = prev.stages_fused + 1
            parent = prev._narrow_parent()
            self.preserves = preserves and prev.preserves
        else:
            self.func = func
            self.stages_fused = 1
            parent = prev
            self.preserves = preserves
        super().__init__(prev.ctx, [OneToOneDependency(parent)],
                         parent.partitioner if self.preserves else None, site)

    def __getstate__(self) -> dict:
        # What only the driver's planning uses (the unfused chain, the map function)
        # stays out of the stage: ``func`` already holds the fused pipeline.
        state = super().__getstate__()
        state["unfused_prev"] = state["map_func"] = state["flat_map_func"] = None
        return state

    def _fusable(self) -> bool:
        return self.storage_level is None and self.checkpoint_dir is None and not self._checkpoint_requested

    def get_partitions(self) -> list[Partition]:
        return self._narrow_parent().partitions

    def compute(self, split: Partition, tc: TaskContext) -> Iterator:
        return iter(self.func(split.index, self._narrow_parent().iterator(split, tc)))

    def preferred_locations(self, split: Partition) -> list[tuple[str, str]]:
        return self._narrow_parent().preferred_locations(split)


class UnionRDD(RDD):
    """Partitions of all parents, in order."""

    def __init__(self, ctx: ComputeContext, rdds: list[RDD]) -> None:
        deps: list[Dependency] = []
        pos = 0
        for r in rdds:
            n = r.getNumPartitions()
            deps.append(RangeDependency(r, 0, pos, n))
            pos += n
        super().__init__(ctx, deps, site=call_site("union"))

    def get_partitions(self) -> list[Partition]:
        return [Partition(i) for i in range(sum(d.length for d in self.deps))]  # type: ignore[attr-defined]

    def _locate(self, split: Partition) -> tuple[RDD, Partition]:
        for dep in self.deps:
            parents = dep.parents(split.index)  # type: ignore[attr-defined]
            if parents:
                return dep.rdd, dep.rdd.partitions[parents[0]]
        raise IndexError(split.index)

    def compute(self, split: Partition, tc: TaskContext) -> Iterator:
        rdd, part = self._locate(split)
        return rdd.iterator(part, tc)

    def preferred_locations(self, split: Partition) -> list[tuple[str, str]]:
        rdd, part = self._locate(split)
        return rdd.preferred_locations(part)


class CoalescedRDD(RDD):
    """Fewer partitions by concatenating neighbours, without a shuffle."""

    def __init__(self, prev: RDD, n: int) -> None:
        m = prev.getNumPartitions()
        n = max(1, min(n, m)) if m else 1
        groups = [list(range(i * m // n, (i + 1) * m // n)) for i in range(n)]
        super().__init__(prev.ctx, [ManyToOneDependency(prev, groups)], site=call_site("coalesce"))
        self.groups = groups

    def get_partitions(self) -> list[Partition]:
        return [Partition(i) for i in range(len(self.groups))]

    def compute(self, split: Partition, tc: TaskContext) -> Iterator:
        prev = self._narrow_parent()
        return itertools.chain.from_iterable(prev.iterator(prev.partitions[i], tc) for i in self.groups[split.index])

    def preferred_locations(self, split: Partition) -> list[tuple[str, str]]:
        prev = self._narrow_parent()
        out: list[tuple[str, str]] = []
        for i in self.groups[split.index]:
            out.extend(prev.preferred_locations(prev.partitions[i]))
        return out


class CartesianRDD(RDD):
    def __init__(self, a: RDD, b: RDD) -> None:
        na, nb = a.getNumPartitions(), b.getNumPartitions()
        super().__init__(a.ctx, [ManyToOneDependency(a, [[i // nb] for i in range(na * nb)]),
                                 ManyToOneDependency(b, [[i % nb] for i in range(na * nb)])],
                         site=call_site("cartesian"))
        self.nb = nb

    def get_partitions(self) -> list[Partition]:
        return [Partition(i) for i in range(len(self.deps[0].mapping))]  # type: ignore[attr-defined]

    def compute(self, split: Partition, tc: TaskContext) -> Iterator:
        a, b = self.deps[0].rdd, self.deps[1].rdd
        left = a.iterator(a.partitions[split.index // self.nb], tc)
        right = list(b.iterator(b.partitions[split.index % self.nb], tc))
        return ((x, y) for x in left for y in right)


class ZippedRDD(RDD):
    def __init__(self, a: RDD, b: RDD) -> None:
        if a.getNumPartitions() != b.getNumPartitions():
            raise ValueError("Can only zip RDDs with the same number of partitions")
        super().__init__(a.ctx, [OneToOneDependency(a), OneToOneDependency(b)], site=call_site("zip"))

    def get_partitions(self) -> list[Partition]:
        return [Partition(i) for i in range(self.deps[0].rdd.getNumPartitions())]

    def compute(self, split: Partition, tc: TaskContext) -> Iterator:
        a, b = self.deps[0].rdd, self.deps[1].rdd
        left = a.iterator(a.partitions[split.index], tc)
        right = b.iterator(b.partitions[split.index], tc)
        sentinel = object()
        for x, y in itertools.zip_longest(left, right, fillvalue=sentinel):
            if x is sentinel or y is sentinel:
                raise ValueError("Can only zip RDDs with the same number of elements in each partition")
            yield (x, y)


class ShuffledRDD(RDD):
    """The reduce side of a shuffle: reads its partition from every map output."""

    def __init__(self, prev: RDD, dep: ShuffleDependency, site: str) -> None:
        super().__init__(prev.ctx, [dep], dep.partitioner, site)

    @property
    def dep(self) -> ShuffleDependency:
        return self.deps[0]  # type: ignore[return-value]

    def get_partitions(self) -> list[Partition]:
        return [Partition(i) for i in range(self.dep.num_partitions)]

    def compute(self, split: Partition, tc: TaskContext) -> Iterator:
        return tc.read_shuffle(self.dep, split.index)

    def __getstate__(self) -> dict:
        # The reduce stage never computes the map side: ship the dependency without
        # its parent lineage (which belongs to the map stage).
        import dataclasses

        state = super().__getstate__()
        if state["deps"]:
            state["deps"] = [dataclasses.replace(self.dep, rdd=None)]
        return state
