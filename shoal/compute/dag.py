"""Splitting a job's lineage into stages at shuffle dependencies (pure).

A stage is the longest chain of narrow dependencies ending at an RDD: its tasks run
the fused chain on one partition each. A shuffle dependency ends the chain; its map
side becomes a ShuffleMapStage, shared by every job that needs the same shuffle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shoal.compute.dependencies import NarrowDependency, ShuffleDependency
from shoal.compute.locality import Location
from shoal.compute.rdd import RDD
from shoal.compute.scheduler import StageSpec


@dataclass
class StagePlan:
    """A stage with the RDD objects its tasks run (the driver keeps these)."""

    stage_id: int
    rdd: RDD
    shuffle_dep: ShuffleDependency | None  # the map side it writes (ShuffleMapStage)
    parents: list[int]
    reads: list[int]  # shuffle ids whose outputs its tasks fetch
    name: str
    func: Any = None  # a result stage's per-partition function
    job_id: int | None = None

    @property
    def num_partitions(self) -> int:
        return self.rdd.getNumPartitions()

    @property
    def is_map(self) -> bool:
        return self.shuffle_dep is not None


@dataclass
class StageRegistry:
    """Every map stage by shuffle id, so later jobs reuse them; stage ids."""

    map_stages: dict[int, StagePlan] = field(default_factory=dict)
    by_id: dict[int, StagePlan] = field(default_factory=dict)
    next_id: int = 0

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def stage_inputs(rdd: RDD) -> tuple[list[ShuffleDependency], list[RDD]]:
    """The shuffle dependencies a stage ending at ``rdd`` reads, and its RDDs."""
    shuffles: list[ShuffleDependency] = []
    rdds: list[RDD] = []
    seen: set[int] = set()
    stack = [rdd]
    while stack:
        r = stack.pop()
        if r.id in seen:
            continue
        seen.add(r.id)
        rdds.append(r)
        if r.checkpoint_dir is not None:
            continue
        for dep in r.deps:
            if isinstance(dep, ShuffleDependency):
                if all(s.shuffle_id != dep.shuffle_id for s in shuffles):
                    shuffles.append(dep)
            else:
                stack.append(dep.rdd)
    return shuffles, rdds


def map_stage_for(dep: ShuffleDependency, reg: StageRegistry) -> StagePlan:
    existing = reg.map_stages.get(dep.shuffle_id)
    if existing is not None:
        return existing
    parents_deps, _ = stage_inputs(dep.rdd)
    parents = [map_stage_for(d, reg).stage_id for d in parents_deps]
    plan = StagePlan(reg.new_id(), dep.rdd, dep, parents, [d.shuffle_id for d in parents_deps],
                     dep_site(dep))
    reg.map_stages[dep.shuffle_id] = plan
    reg.by_id[plan.stage_id] = plan
    return plan


def dep_site(dep: ShuffleDependency) -> str:
    return dep.extra.get("site") or dep.rdd.site or f"shuffle {dep.shuffle_id}"


def result_stage(rdd: RDD, func: Any, job_id: int, name: str, reg: StageRegistry) -> StagePlan:
    deps, _ = stage_inputs(rdd)
    parents = [map_stage_for(d, reg).stage_id for d in deps]
    plan = StagePlan(reg.new_id(), rdd, None, parents, [d.shuffle_id for d in deps], name, func, job_id)
    reg.by_id[plan.stage_id] = plan
    return plan


def job_stages(final: StagePlan, reg: StageRegistry) -> list[StagePlan]:
    """The final stage and every ancestor, parents first."""
    out: list[StagePlan] = []
    seen: set[int] = set()

    def visit(plan: StagePlan) -> None:
        if plan.stage_id in seen:
            return
        seen.add(plan.stage_id)
        for pid in plan.parents:
            visit(reg.by_id[pid])
        out.append(plan)

    visit(final)
    return out


def preferred_locations(rdd: RDD, index: int, cache_locs: dict[tuple[int, int], list[Location]],
                        depth: int = 0) -> list[Location]:
    """Where partition ``index`` of ``rdd`` would be cheapest to compute: a cached
    copy, the RDD's own data placement, else its first narrow parent's (Spark)."""
    cached = cache_locs.get((rdd.id, index))
    if cached:
        return cached
    own = rdd.preferred_locations(rdd.partitions[index])
    if own:
        return [Location(host=h, rack=r) for h, r in own]
    if depth > 50 or rdd.checkpoint_dir is not None:
        return []
    for dep in rdd.deps:
        if isinstance(dep, NarrowDependency):
            for parent in dep.parents(index):
                locs = preferred_locations(dep.rdd, parent, cache_locs, depth + 1)
                if locs:
                    return locs
    return []


def to_spec(plan: StagePlan, cache_locs: dict[tuple[int, int], list[Location]]) -> StageSpec:
    n = plan.num_partitions
    prefs = [preferred_locations(plan.rdd, i, cache_locs) for i in range(n)]
    spec = StageSpec(plan.stage_id, n, list(plan.parents),
                     plan.shuffle_dep.shuffle_id if plan.shuffle_dep else None, prefs, plan.name)
    # MapReduce turns speculation off per kind of task (mapreduce.map/reduce.speculative).
    spec.speculation = bool(getattr(plan.rdd, "speculation", True))
    # Hadoop's reduce slow start, when every shuffle the stage reads asks for it.
    shuffles, _ = stage_inputs(plan.rdd)
    starts = [d.slow_start for d in shuffles]
    if starts and all(s is not None for s in starts):
        spec.slow_start = min(starts)  # type: ignore[type-var]
    return spec
