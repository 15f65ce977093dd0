"""Tests for shoal.cluster.drf: the DRF paper's example, max-min fairness, and the
properties discrete progressive filling guarantees."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.cluster.drf import (
    DrfStep,
    drf_fill,
    drf_schedule,
    fair_order_key,
    max_min_fair,
    weighted_dominant_share,
)
from shoal.cluster.resources import Resources
from shoal.errors import InvalidResources

R = Resources.of
PAPER_CAPACITY = R(cpus=9, mem=18)
PAPER_DEMANDS = [("fw1", R(cpus=1, mem=4)), ("fw2", R(cpus=3, mem=1))]


# --- the paper's example (Ghodsi et al., NSDI 2011, section 4) -------------------------
def test_paper_example_step_by_step() -> None:
    steps = drf_schedule(PAPER_CAPACITY, PAPER_DEMANDS)
    # (chosen, fw1 tasks, fw2 tasks, fw1 <cpu, mem>, fw2 <cpu, mem>, fw1 dom, fw2 dom, total cpu, total mem)
    table = [
        ("fw1", 1, 0, (1, 4), (0, 0), Fraction(2, 9), 0, 1, 4),
        ("fw2", 1, 1, (1, 4), (3, 1), Fraction(2, 9), Fraction(1, 3), 4, 5),
        ("fw1", 2, 1, (2, 8), (3, 1), Fraction(4, 9), Fraction(1, 3), 5, 9),
        ("fw2", 2, 2, (2, 8), (6, 2), Fraction(4, 9), Fraction(2, 3), 8, 10),
        ("fw1", 3, 2, (3, 12), (6, 2), Fraction(2, 3), Fraction(2, 3), 9, 14),
    ]
    assert len(steps) == len(table)
    for n, (step, row) in enumerate(zip(steps, table), start=1):
        chosen, t1, t2, u1, u2, d1, d2, cpu, mem = row
        assert step.step == n and step.framework == chosen
        assert step.tasks == {"fw1": t1, "fw2": t2}
        assert step.used == {"fw1": {"cpus": u1[0], "mem": u1[1]}, "fw2": {"cpus": u2[0], "mem": u2[1]}}
        assert step.shares["fw1"] == {"cpus": u1[0] / 9, "mem": u1[1] / 18}
        assert step.shares["fw2"] == {"cpus": u2[0] / 9, "mem": u2[1] / 18}
        assert step.dominant == {"fw1": float(d1), "fw2": float(d2)}
        assert step.allocated == {"cpus": cpu, "mem": mem}


def test_paper_example_final_allocation() -> None:
    last = drf_schedule(PAPER_CAPACITY, PAPER_DEMANDS)[-1]
    assert [s.framework for s in drf_schedule(PAPER_CAPACITY, PAPER_DEMANDS)] == ["fw1", "fw2", "fw1", "fw2", "fw1"]
    assert last.tasks == {"fw1": 3, "fw2": 2}
    assert last.used == {"fw1": {"cpus": 3, "mem": 12}, "fw2": {"cpus": 6, "mem": 2}}
    assert last.allocated == {"cpus": 9, "mem": 14}
    assert last.dominant["fw1"] == last.dominant["fw2"] == 2 / 3


def test_ties_go_to_the_earlier_listed_framework() -> None:
    order = [s.framework for s in drf_schedule(PAPER_CAPACITY, list(reversed(PAPER_DEMANDS)))]
    assert order[0] == "fw2"  # both at 0: the first listed wins
    # At 2/3 each, fw2 (now listed first) would be picked but its task no longer fits.
    assert drf_schedule(PAPER_CAPACITY, list(reversed(PAPER_DEMANDS)))[-1].tasks == {"fw2": 2, "fw1": 3}
    assert fair_order_key(0.5, 1) < fair_order_key(0.5, 2) < fair_order_key(0.6, 0)


def test_continuous_drf_matches_the_paper() -> None:
    # The paper's continuous solution: x = 3 tasks of fw1, y = 2 of fw2.
    assert drf_fill(PAPER_CAPACITY, PAPER_DEMANDS) == [("fw1", 3.0), ("fw2", 2.0)]
    assert drf_fill(PAPER_CAPACITY, PAPER_DEMANDS, caps=[1, None]) == [("fw1", 1.0), ("fw2", 8 / 3)]


def test_a_framework_whose_task_never_fits_gets_nothing() -> None:
    steps = drf_schedule(R(cpus=4, mem=4), [("big", R(cpus=5)), ("small", R(cpus=1))])
    assert steps[-1].tasks == {"big": 0, "small": 4}
    assert drf_schedule(R(cpus=4), [("big", R(cpus=5))]) == []


def test_drf_schedule_rejects_bad_input() -> None:
    with pytest.raises(InvalidResources, match="demands nothing"):
        drf_schedule(PAPER_CAPACITY, [("fw1", Resources())])
    with pytest.raises(InvalidResources, match="fw1 demands gpus, which the capacity .* lacks"):
        drf_schedule(PAPER_CAPACITY, [("fw1", R(cpus=1, gpus=1))])
    with pytest.raises(InvalidResources, match="given twice"):
        drf_schedule(PAPER_CAPACITY, [("fw1", R(cpus=1)), ("fw1", R(mem=1))])
    with pytest.raises(InvalidResources, match="capacity is empty"):
        drf_schedule(Resources(), [("fw1", R(cpus=1))])
    with pytest.raises(InvalidResources, match="scalar resources only"):
        drf_schedule(PAPER_CAPACITY.with_ranges("ports", [(1, 2)]), [("fw1", R(cpus=1))])
    with pytest.raises(InvalidResources, match="more than 10 tasks"):
        drf_schedule(R(cpus=100), [("fw1", R(cpus=1))], max_steps=10)
    assert len(drf_schedule(R(cpus=10), [("fw1", R(cpus=1))], max_steps=10)) == 10


def test_weighted_dominant_share() -> None:
    total = R(cpus=10, mem=100)
    assert weighted_dominant_share(R(cpus=2, mem=50), total, 1) == 0.5
    assert weighted_dominant_share(R(cpus=2, mem=50), total, 2) == 0.25
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(InvalidResources, match="weight"):
            weighted_dominant_share(R(cpus=1), total, bad)


# --- max-min fairness: DRF with one resource ---------------------------------------------
def test_max_min_example() -> None:
    assert max_min_fair(10, [("A", 1), ("B", 2), ("C", 5), ("D", 6)]) == [
        ("A", 1.0), ("B", 2.0), ("C", 3.5), ("D", 3.5)
    ]


def test_max_min_edges() -> None:
    assert max_min_fair(100, [("A", 1), ("B", 2)]) == [("A", 1.0), ("B", 2.0)]  # everyone satisfied
    assert max_min_fair(0, [("A", 1), ("B", 2)]) == [("A", 0.0), ("B", 0.0)]
    assert max_min_fair(3, [("A", 0), ("B", 5), ("C", 5)]) == [("A", 0.0), ("B", 1.5), ("C", 1.5)]
    assert max_min_fair(1, [("A", 1), ("B", 1), ("C", 1)]) == [("A", 1 / 3), ("B", 1 / 3), ("C", 1 / 3)]
    assert max_min_fair(5, []) == []


@pytest.mark.parametrize(
    ("capacity", "demands", "message"),
    [
        (-1, [("A", 1)], "capacity must not be negative"),
        (float("nan"), [("A", 1)], "capacity must be a finite number"),
        (10, [("A", -1)], "demand of A must not be negative"),
        (10, [("A", float("inf"))], "demand of A must be a finite number"),
        (10, [("A", 1), ("A", 2)], "given twice"),
        (10, [("", 1)], "must not be empty"),
    ],
)
def test_max_min_rejects_bad_input(capacity: float, demands: list, message: str) -> None:
    with pytest.raises(InvalidResources, match=message):
        max_min_fair(capacity, demands)


@given(
    st.integers(0, 1000),
    st.lists(st.integers(0, 500), min_size=1, max_size=8),
)
@settings(max_examples=200, deadline=None)
def test_max_min_is_water_filling(capacity: int, demands: list[int]) -> None:
    """Nobody gets more than asked; the capacity is used up unless everyone is
    satisfied; everyone unsatisfied gets the same amount, at least as much as anyone."""
    named = [(f"f{i}", float(d)) for i, d in enumerate(demands)]
    got = dict(max_min_fair(capacity, named))
    assert all(got[n] <= d + 1e-9 for n, d in named)
    assert sum(got.values()) == pytest.approx(min(capacity, sum(demands)))
    unsatisfied = [got[n] for n, d in named if got[n] < d - 1e-9]
    if unsatisfied:
        level = max(got.values())
        assert all(u == pytest.approx(level) for u in unsatisfied)
    # ... and it is the same computation as DRF with a single resource kind
    if capacity and any(demands):
        as_drf = drf_fill(R(share=capacity), [(n, R(share=1)) for n, _ in named], caps=[d for _, d in named])
        assert as_drf == list(got.items())  # exact: both are the same Fraction arithmetic


# --- properties of discrete progressive filling -------------------------------------------
@st.composite
def problems(draw: st.DrawFn) -> tuple[Resources, list[tuple[str, Resources]]]:
    kinds = draw(st.lists(st.sampled_from(["cpus", "mem", "disk"]), min_size=1, max_size=3, unique=True))
    capacity = R({k: draw(st.integers(1, 40)) for k in kinds})
    demands = []
    for i in range(draw(st.integers(1, 4))):
        d = {k: draw(st.integers(0, 12)) for k in kinds}
        if not any(d.values()):
            d[kinds[0]] = 1
        demands.append((f"f{i}", R(d)))
    return capacity, demands


def fr(x: float) -> Fraction:
    return Fraction(round(x * 1000), 1000)


def per_task(demand: Resources, capacity: Resources) -> Fraction:
    """Dominant share of one task."""
    return max(fr(v) / fr(capacity.get(k)) for k, v in demand.scalars.items())


def left_after(steps: list[DrfStep], n: int, capacity: Resources) -> dict[str, Fraction]:
    """What is free after the first ``n`` steps."""
    used = steps[n - 1].allocated if n else {}
    return {k: fr(v) - fr(used.get(k, 0)) for k, v in capacity.scalars.items()}


def fits(demand: Resources, left: dict[str, Fraction]) -> bool:
    return all(fr(v) <= left[k] for k, v in demand.scalars.items())


def final_tasks(steps: list[DrfStep], demands: list[tuple[str, Resources]]) -> dict[str, int]:
    return steps[-1].tasks if steps else {n: 0 for n, _ in demands}


@given(problems())
@settings(max_examples=300, deadline=None)
def test_no_resource_is_over_committed(problem) -> None:
    capacity, demands = problem
    steps = drf_schedule(capacity, demands)
    tasks = final_tasks(steps, demands)
    for k, cap in capacity.scalars.items():
        used = sum(tasks[n] * fr(d.get(k)) for n, d in demands)
        assert used <= fr(cap)
        if steps:
            assert fr(steps[-1].allocated[k]) == used
    for i, step in enumerate(steps):  # every step is inside the capacity, one task more
        assert all(fr(v) <= fr(capacity.get(k)) for k, v in step.allocated.items())
        assert sum(step.tasks.values()) == i + 1


@given(problems())
@settings(max_examples=300, deadline=None)
def test_pareto_efficient_no_task_fits_at_the_end(problem) -> None:
    """Pareto efficiency: when progressive filling stops, no framework's next task fits
    in what is left, so no framework can get more without another getting less."""
    capacity, demands = problem
    steps = drf_schedule(capacity, demands)
    left = left_after(steps, len(steps), capacity)
    assert not any(fits(d, left) for _, d in demands)


@given(problems())
@settings(max_examples=300, deadline=None)
def test_each_task_goes_to_a_lowest_share_framework_that_fits(problem) -> None:
    """Progressive-filling bottleneck property (envy-freeness up to one task): every
    launch goes to a framework of lowest dominant share among those whose task still
    fits, ties to the earlier-listed. So a framework i ends with less than another
    framework j's share minus one of j's tasks only if i's task no longer fitted (i was
    blocked by a resource it needs) when j launched its last task."""
    capacity, demands = problem
    steps = drf_schedule(capacity, demands)
    names = [n for n, _ in demands]
    delta = {n: per_task(d, capacity) for n, d in demands}
    for t, step in enumerate(steps):
        before = steps[t - 1].tasks if t else dict.fromkeys(names, 0)
        left = left_after(steps, t, capacity)
        j = step.framework
        for i, d in demands:
            if i != j and fits(d, left):
                key_i = (before[i] * delta[i], names.index(i))
                key_j = (before[j] * delta[j], names.index(j))
                assert key_j < key_i, f"step {t + 1}: {j} chosen over {i}"
    # The end-state consequence, checked directly.
    final = final_tasks(steps, demands)
    last = {n: max((t for t, s in enumerate(steps) if s.framework == n), default=None) for n in names}
    for j in names:
        if last[j] is None:
            continue
        for i, d in demands:
            if final[i] * delta[i] < (final[j] - 1) * delta[j]:
                assert not fits(d, left_after(steps, last[j], capacity)), (i, j)


@given(problems())
@settings(max_examples=300, deadline=None)
def test_sharing_incentive_up_to_one_task_per_framework(problem) -> None:
    """Sharing incentive, discrete form. With n frameworks and delta_j the dominant
    share of one task of j, every framework ends with a dominant share above
    (1 - sum_j delta_j) / n: it gets its 1/n of the cluster, less at most one task's
    worth of lumpiness per framework. And a framework whose tasks are at least as big
    (in dominant share) as everyone's runs at least as many tasks as fit in 1/n of
    every resource on its own."""
    capacity, demands = problem
    steps = drf_schedule(capacity, demands)
    tasks = final_tasks(steps, demands)
    n = len(demands)
    delta = {name: per_task(d, capacity) for name, d in demands}
    for name, _ in demands:
        assert tasks[name] * delta[name] > (1 - sum(delta.values())) / n
    biggest = max(delta.values())
    for name, d in demands:
        alone = min(fr(capacity.get(k)) / n / fr(v) for k, v in d.scalars.items())  # tasks in 1/n
        if delta[name] == biggest:
            assert tasks[name] >= int(alone), (name, tasks, int(alone))


def test_naive_sharing_incentive_fails_with_lumpy_tasks() -> None:
    """Why the property above carries the one-task slack: with 10 cpus, fw1's 1-cpu
    tasks would fit 5 times in half the cluster, but fw2's one 6-cpu task overshoots
    half and fw1 ends with 4."""
    steps = drf_schedule(R(cpus=10), [("fw1", R(cpus=1)), ("fw2", R(cpus=6))])
    assert steps[-1].tasks == {"fw1": 4, "fw2": 1}


@given(problems())
@settings(max_examples=200, deadline=None)
def test_continuous_drf_sharing_incentive_and_pareto(problem) -> None:
    """Continuous DRF (no task lumps): every framework's dominant share is at least
    1/n, nothing is over-committed, and every framework is stopped by a resource it
    needs that is used up."""
    capacity, demands = problem
    got = dict(drf_fill(capacity, demands))
    n = len(demands)
    used = {k: sum(got[name] * d.get(k) for name, d in demands) for k in capacity.scalars}
    for k, cap in capacity.scalars.items():
        assert used[k] <= cap * (1 + 1e-9)
    for name, d in demands:
        assert got[name] * float(per_task(d, capacity)) >= 1 / n - 1e-9
        assert any(used[k] >= capacity.get(k) * (1 - 1e-9) for k in d.scalars), name
