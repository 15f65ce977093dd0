"""Dominant Resource Fairness math, shared by the offer allocator and the CLI (pure).

DRF (Ghodsi et al., "Dominant Resource Fairness: Fair Allocation of Multiple Resource
Types", NSDI 2011) gives each framework its *dominant share*: the largest fraction of
any one resource kind it holds. The fair order offers next to the framework with the
lowest dominant share, divided by its weight (weighted DRF).

Tie-break rule (used everywhere: the allocator, :func:`drf_schedule`, the CLI): when
two frameworks have equal weighted dominant shares, the one registered earlier wins,
i.e. the lower registration sequence number; in :func:`drf_schedule` and
:func:`drf_fill` that sequence is the position in the ``demands`` list. The sort key
is :func:`fair_order_key`.

:func:`drf_schedule` is the paper's discrete progressive filling (one task at a time);
:func:`drf_fill` is its continuous form (water-filling), and :func:`max_min_fair` is
exactly :func:`drf_fill` with a single resource kind, which is what max-min fairness
is. Exact rational arithmetic (:class:`fractions.Fraction`) is used inside so that
ties really are ties; results are returned as floats.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from fractions import Fraction

import msgspec

from shoal.cluster.resources import SCALE, Resources, dominant_share
from shoal.errors import InvalidResources

MAX_STEPS = 100_000  # drf_schedule refuses to simulate more tasks than this


def weighted_dominant_share(allocated: Resources, total: Resources, weight: float) -> float:
    """Dominant share of ``allocated`` in ``total`` divided by ``weight`` (weighted DRF).

    A framework of weight 2 is entitled to twice the dominant share of one of weight 1,
    so dividing by the weight puts both on one scale for the fair order.
    """
    if not (weight > 0 and math.isfinite(weight)):
        raise InvalidResources(f"weight must be a positive number, got {weight!r}")
    return dominant_share(allocated, total) / weight


def fair_order_key(weighted_share: float, seq: int) -> tuple[float, int]:
    """Sort key of the fair order: lowest weighted dominant share first, then the
    lower registration sequence number (earlier registration) first."""
    return (weighted_share, seq)


class DrfStep(msgspec.Struct, frozen=True, gc=False):
    """The state after one task launch of :func:`drf_schedule`.

    ``used``/``shares`` map framework -> resource kind -> amount held / fraction of the
    capacity held; every capacity kind appears for every framework.
    """

    step: int  # 1-based
    framework: str  # who launched a task in this step
    used: dict[str, dict[str, float]]
    shares: dict[str, dict[str, float]]
    dominant: dict[str, float]  # framework -> dominant share after the step
    tasks: dict[str, int]  # framework -> tasks launched so far
    allocated: dict[str, float]  # kind -> total allocated over all frameworks


def _exact(value: float) -> Fraction:
    # Resources keep three decimals (fixed point), so this is the exact value meant.
    return Fraction(round(value * SCALE), SCALE)


def _check_inputs(capacity: Resources, demands: Sequence[tuple[str, Resources]]) -> None:
    if capacity.ranges or any(d.ranges for _, d in demands):
        raise InvalidResources("DRF here takes scalar resources only (no ranges such as ports)")
    if capacity.is_empty():
        raise InvalidResources("the capacity is empty: give at least one resource, e.g. cpus=9,mem=18")
    seen: set[str] = set()
    for name, demand in demands:
        if not name:
            raise InvalidResources("a framework name must not be empty")
        if name in seen:
            raise InvalidResources(f"framework {name!r} is given twice")
        seen.add(name)
        if demand.is_empty():
            raise InvalidResources(f"framework {name}'s task demands nothing; it could run infinitely many tasks")
        missing = sorted(set(demand.scalars) - set(capacity.scalars))
        if missing:
            raise InvalidResources(
                f"framework {name} demands {', '.join(missing)}, which the capacity ({capacity.format()}) lacks"
            )


def drf_schedule(
    capacity: Resources, demands: list[tuple[str, Resources]], max_steps: int = MAX_STEPS
) -> list[DrfStep]:
    """Discrete progressive filling as in the DRF paper: repeatedly launch one task of
    the framework with the lowest dominant share whose next task still fits in what is
    left (ties: earlier in ``demands``), until no framework's task fits.

    ``demands`` is (framework, per-task demand). Raises :class:`InvalidResources` for a
    task that demands nothing, a kind the capacity lacks, duplicate names, or a run
    longer than ``max_steps`` tasks.
    """
    _check_inputs(capacity, demands)
    kinds = sorted(capacity.scalars)
    cap = {k: _exact(capacity.scalars[k]) for k in kinds}
    need = [{k: _exact(v) for k, v in d.scalars.items()} for _, d in demands]
    per_task = [max(n[k] / cap[k] for k in n) for n in need]  # dominant share of one task
    names = [name for name, _ in demands]
    left = dict(cap)
    tasks = [0] * len(demands)
    # Heap of (dominant share, position). A framework whose task does not fit now never
    # fits again (what is left only shrinks), so it is dropped for good.
    heap = [(Fraction(0), i) for i in range(len(demands))]
    steps: list[DrfStep] = []
    while heap:
        _, i = heapq.heappop(heap)
        if any(v > left[k] for k, v in need[i].items()):
            continue
        if len(steps) >= max_steps:
            raise InvalidResources(f"more than {max_steps} tasks would launch; use larger per-task demands")
        for k, v in need[i].items():
            left[k] -= v
        tasks[i] += 1
        heapq.heappush(heap, (tasks[i] * per_task[i], i))
        steps.append(_record(len(steps) + 1, names[i], names, kinds, cap, need, tasks, left))
    return steps


def _record(
    step: int, chosen: str, names: list[str], kinds: list[str], cap: dict[str, Fraction],
    need: list[dict[str, Fraction]], tasks: list[int], left: dict[str, Fraction],
) -> DrfStep:
    used = {
        name: {k: float(tasks[i] * need[i].get(k, 0)) for k in kinds} for i, name in enumerate(names)
    }
    shares = {
        name: {k: float(tasks[i] * need[i].get(k, 0) / cap[k]) for k in kinds} for i, name in enumerate(names)
    }
    return DrfStep(
        step=step,
        framework=chosen,
        used=used,
        shares=shares,
        dominant={name: max(shares[name].values(), default=0.0) for name in names},
        tasks=dict(zip(names, tasks)),
        allocated={k: float(cap[k] - left[k]) for k in kinds},
    )


def _progressive_fill(
    capacity: dict[str, Fraction], demands: list[dict[str, Fraction]], caps: list[Fraction | None]
) -> list[Fraction]:
    """Continuous progressive filling: raise the dominant share of every framework that
    is still growing at the same rate; a framework stops when it reaches its cap (in
    tasks) or when a resource its task needs is used up. Returns tasks per framework."""
    n = len(demands)
    tasks = [Fraction(0)] * n
    used = {k: Fraction(0) for k in capacity}
    # A framework needing a kind of zero capacity cannot grow at all.
    active = {i for i in range(n) if caps[i] != 0 and all(capacity[k] > 0 for k in demands[i])}
    per_task = {i: max(demands[i][k] / capacity[k] for k in demands[i]) for i in active}
    level = Fraction(0)  # the common dominant share of the active frameworks
    while active:
        # Resources consumed per unit of dominant share, summed over the active frameworks.
        rate = {k: Fraction(0) for k in capacity}
        for i in active:
            for k, v in demands[i].items():
                rate[k] += v / per_task[i]
        stops = [caps[i] * per_task[i] for i in active if caps[i] is not None]  # type: ignore[operator]
        stops += [level + (capacity[k] - used[k]) / r for k, r in rate.items() if r > 0]
        new_level = min(stops)
        for k, r in rate.items():
            used[k] += (new_level - level) * r
        level = new_level
        for i in active:
            tasks[i] = level / per_task[i]
        # Each pass stops at least one framework: the one whose cap gave the minimum, or
        # every user of the resource that ran out.
        active = {
            i for i in active
            if not (caps[i] is not None and tasks[i] >= caps[i])
            and all(used[k] < capacity[k] for k in demands[i])
        }
    return tasks


def drf_fill(
    capacity: Resources, demands: list[tuple[str, Resources]], caps: Sequence[float | None] | None = None
) -> list[tuple[str, float]]:
    """Continuous DRF (water-filling): the number of tasks, possibly fractional, each
    framework gets when dominant shares rise together until each framework reaches its
    cap (``caps[i]`` tasks; ``None``: unbounded) or a resource its task needs runs out."""
    _check_inputs(capacity, demands)
    caps = list(caps) if caps is not None else [None] * len(demands)
    if len(caps) != len(demands):
        raise InvalidResources(f"{len(caps)} caps given for {len(demands)} frameworks")
    exact_caps: list[Fraction | None] = []
    for c in caps:
        if c is not None and not (math.isfinite(c) and c >= 0):
            raise InvalidResources(f"a cap must be a finite number >= 0, got {c!r}")
        exact_caps.append(None if c is None else Fraction(repr(float(c))))
    cap = {k: _exact(v) for k, v in capacity.scalars.items()}
    need = [{k: _exact(v) for k, v in d.scalars.items()} for _, d in demands]
    return [(name, float(t)) for (name, _), t in zip(demands, _progressive_fill(cap, need, exact_caps))]


def max_min_fair(capacity: float, demands: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Max-min fair shares of one divisible resource: DRF with a single resource kind.

    Each framework's "task" is one unit of the resource and its demand is its cap in
    tasks, so :func:`_progressive_fill` (the same code as :func:`drf_fill`) raises
    everyone's share equally until a demand is met or the capacity runs out. With
    capacity 10 and demands A=1, B=2, C=5, D=6 this gives A 1, B 2, C 3.5, D 3.5.
    """
    exact_capacity = _exact_amount("capacity", capacity)
    seen: set[str] = set()
    exact_demands: list[Fraction | None] = []
    for name, demand in demands:
        if not name:
            raise InvalidResources("a framework name must not be empty")
        if name in seen:
            raise InvalidResources(f"framework {name!r} is given twice")
        seen.add(name)
        exact_demands.append(_exact_amount(f"the demand of {name}", demand))
    one_unit = {"share": Fraction(1)}
    tasks = _progressive_fill({"share": exact_capacity}, [one_unit] * len(demands), exact_demands)
    return [(name, float(t)) for (name, _), t in zip(demands, tasks)]


def _exact_amount(what: str, value: float) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidResources(f"{what} must be a finite number, got {value!r}")
    if value < 0:
        raise InvalidResources(f"{what} must not be negative, got {value:g}")
    return Fraction(repr(float(value)))
