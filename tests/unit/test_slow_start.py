"""Tests for Hadoop's reduce slow start in the job scheduler (scheduler_slow_start.py).

They reuse the simulated cluster of test_scheduler.py: there an early reduce task
waits until all its map outputs exist, then runs its plan, and after every event the
harness checks that early tasks hold at most all slots but one, never every slot
while a parent map task is pending, and finish only once their inputs all exist.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shoal.compute.scheduler import (
    JobSubmitted,
    SchedulerConf,
    KillTask,
    LaunchTask,
    StageEnded,
    StageSpec,
    StageStarted,
    TaskCompleted,
    TaskFailed,
)
from tests.unit.test_scheduler import Decide, Plan, Sim, World, all_effects, cluster, prefer, run_world, worlds


def mr(n_maps: int, n_reduces: int, slow_start: float | None) -> list[StageSpec]:
    return [StageSpec(0, n_maps, [], 0, [], "map"),
            StageSpec(1, n_reduces, [0], None, [], "reduce", slow_start=slow_start)]


def map_durations(*durations: float, reduce: float = 1.0) -> Decide:
    """Map partition p runs ``durations[p]`` seconds (the last value for the rest)."""
    def decide(sim: Sim, launch: LaunchTask) -> Plan:
        if launch.stage_id == 0:
            return Plan(durations[min(launch.partition, len(durations) - 1)])
        return Plan(reduce)
    return decide


def started(sim: Sim, stage: int) -> list[StageStarted]:
    return [s for s in sim.stage_started if s.stage_id == stage]


def map_done_times(sim: Sim) -> list[float]:
    return [t for t, _, effs in sim.log for e in effs if isinstance(e, TaskCompleted) and e.job_id is None]


def preempted(sim: Sim) -> list[KillTask]:
    return [k for k in sim.kills if k.reason.startswith("preempted")]


# --- starting early ---------------------------------------------------------------------------
def test_reduce_stage_starts_early_at_the_threshold_and_reduces_after_the_last_map() -> None:
    # No speculation here: the straggling map would be copied (see the test below).
    sim = cluster(4, decide=map_durations(*[1.0] * 9, 5.0), conf=SchedulerConf(speculation=False))
    eff = sim.submit(0, 1, [0, 1, 2], mr(10, 3, 0.2))
    assert [s.stage_id for s in eff if isinstance(s, StageStarted)] == [0]
    assert 1 in sim.sched.waiting
    first, second = sorted(sim.running_of(0))[:2]
    eff = sim.finish(first)
    assert not [s for s in eff if isinstance(s, StageStarted)]
    eff = sim.finish(second)
    assert StageStarted(1, 0, 3, early=True, parents_done=2, parents_total=10) in eff
    assert 1 not in sim.sched.waiting and sim.sched.is_early(1)
    # Map tasks are pending: the freed slot goes to one, none to a reducer.
    assert [t.stage_id for t in sim.launched(eff)] == [0]
    sim.run()
    assert sim.ended[0].failure == ""
    assert sim.results[0] == Counter({0: 1, 1: 1, 2: 1})
    last_map_launch = max(t for t, launch in sim.launch_log if launch.stage_id == 0)
    reduce_launches = [t for t, launch in sim.launch_log if launch.stage_id == 1]
    assert min(reduce_launches) >= last_map_launch  # maps first
    assert min(reduce_launches) < max(map_done_times(sim))  # ... but reducers start before the last map ends
    assert not preempted(sim)
    assert [e for e in all_effects(sim) if isinstance(e, StageEnded)] == [StageEnded(0, 0), StageEnded(1, 0)]


def test_slow_start_zero_starts_with_its_parents_and_fills_spare_slots() -> None:
    sim = cluster(3, decide=map_durations(5.0))
    eff = sim.submit(0, 1, [0, 1, 2], mr(2, 3, 0.0))
    assert [s for s in eff if isinstance(s, StageStarted)] == \
        [StageStarted(0, 0, 2), StageStarted(1, 0, 3, early=True, parents_done=0, parents_total=2)]
    # Two maps, then one reducer: all slots but one at most go to early reducers.
    assert [t.stage_id for t in sim.launched(eff)] == [0, 0, 1]
    (reducer,) = sim.running_of(1)
    sim.run(until=lambda: not sim.running_of(0))
    assert sim.launches[reducer].stage_attempt == 0 and reducer in sim.running  # waited, then runs
    sim.run()
    assert sim.ended[0].failure == ""
    assert sim.results[0] == Counter({0: 1, 1: 1, 2: 1})


def test_early_tasks_hold_all_slots_but_one_at_most() -> None:
    sim = cluster(2, slots=2, decide=map_durations(5.0))
    eff = sim.submit(0, 1, list(range(6)), mr(1, 6, 0.0))
    assert sorted(t.stage_id for t in sim.launched(eff)) == [0, 1, 1, 1]
    assert len(sim.early_running()) == 3
    sim.run()
    assert sim.ended[0].failure == ""


def test_a_single_slot_launches_nothing_early() -> None:
    sim = cluster(1)
    eff = sim.submit(0, 1, [0, 1], mr(3, 2, 0.0))
    assert StageStarted(1, 0, 2, early=True, parents_done=0, parents_total=3) in eff
    sim.run()
    assert sim.ended[0].failure == ""
    first_reduce = min(t for t, launch in sim.launch_log if launch.stage_id == 1)
    assert first_reduce >= max(map_done_times(sim))
    assert not sim.kills


def test_threshold_of_one_is_no_early_start() -> None:
    sim = cluster(3)
    sim.submit(0, 1, [0, 1], mr(4, 2, 1.0))
    sim.run()
    assert sim.ended[0].failure == ""
    assert started(sim, 1) == [StageStarted(1, 0, 2, early=False, parents_done=4, parents_total=4)]


def test_every_parent_must_reach_the_threshold() -> None:
    sim = Sim(decide=lambda s, t: Plan(1.0 if t.stage_id == 0 else 3.0))
    for i in range(4):
        sim.add_executor(f"e{i}", f"h{i}")
    stages = [StageSpec(0, 2, [], 0, [], "quick"), StageSpec(1, 2, [], 1, [], "slow"),
              StageSpec(2, 2, [0, 1], None, [], "join", slow_start=0.5)]
    sim.submit(0, 2, [0, 1], stages)
    sim.run(until=lambda: bool(started(sim, 2)))
    assert sim.now == 3.0  # stage 0 was all done at 1; stage 1 reached half at 3
    assert started(sim, 2) == [StageStarted(2, 0, 2, early=True, parents_done=3, parents_total=4)]
    sim.run()
    assert sim.ended[0].failure == ""


def test_without_slow_start_the_scheduler_behaves_as_before() -> None:
    # slow_start=1.0 never starts early: the same run as without slow start, but for
    # the parent counts its StageStarted carries.
    def play(slow_start: float | None) -> list[object]:
        sim = cluster(3, slots=2, decide=map_durations(1.0, 2.0, 3.0))
        sim.submit(0, 1, [0, 1, 2], mr(5, 3, slow_start))
        sim.run()
        out = []
        for _, ev, effs in sim.log:
            out.append(ev if not isinstance(ev, JobSubmitted) else None)
            out.extend(dataclasses.replace(e, parents_done=0, parents_total=0) if isinstance(e, StageStarted) else e
                       for e in effs)
        return out

    assert play(None) == play(1.0)


# --- preemption -------------------------------------------------------------------------------
def test_lost_executor_preempts_the_newest_early_reducer_for_the_map_it_ran() -> None:
    sim = cluster(2, slots=2, decide=map_durations(1.0, 20.0))
    sim.submit(0, 1, [0, 1, 2], mr(2, 3, 0.5))
    sim.run(until=lambda: len(sim.running_of(1)) == 3)
    assert sim.sched.is_early(1) and len(sim.early_running()) == 3
    (slow_map,) = sim.running_of(0)
    lost = sim.launches[slow_map].executor
    survivors = [t for t in sim.running_of(1) if sim.launches[t].executor != lost]
    eff = sim.lose_executor(lost)
    kills = [k for k in eff if isinstance(k, KillTask)]
    # Two slots are left: one early reducer at most, and the map gets the other.
    assert [k.task_id for k in kills] == [max(survivors)]
    assert kills[0].reason.startswith("preempted")
    assert [(t.stage_id, t.partition) for t in sim.launched(eff)] == [(0, 1)]
    victim = sim.launches[max(survivors)]
    assert victim.partition in sim.sched.task_sets[1].pending
    # The executor's late report of the kill changes nothing: no failure counts (the
    # reducer on the lost executor's does).
    sim.send(TaskFailed(victim.task_id, "killed", killed=True))
    assert victim.partition in sim.sched.task_sets[1].pending
    assert victim.partition not in sim.sched.task_sets[1].failures
    sim.run()
    assert sim.ended[0].failure == ""
    assert sim.results[0] == Counter({0: 1, 1: 1, 2: 1})


def test_map_retry_preempts_an_early_reducer_on_an_executor_it_may_use() -> None:
    # The slow map fails; its retry shuns that executor while another is alive, and
    # the other's slots are held by early reducers: the newest of those goes.
    def decide(sim: Sim, launch: LaunchTask) -> Plan:
        if launch.stage_id == 0 and launch.partition == 1:
            return Plan(10.0, "fail" if launch.attempt == 0 else "ok")
        return Plan(1.0)
    sim = Sim(decide=decide)
    sim.add_executor("e0", "h0", slots=2)
    sim.add_executor("e1", "h1", slots=2)
    sim.submit(0, 1, [0, 1, 2], mr(2, 3, 0.5))
    sim.run(until=lambda: len(sim.running_of(1)) == 3)
    (slow_map,) = sim.running_of(0)
    failed_on = sim.launches[slow_map].executor
    other = ({"e0", "e1"} - {failed_on}).pop()
    on_other = [t for t in sim.running_of(1) if sim.launches[t].executor == other]
    assert len(on_other) == 2  # the other executor is full
    eff = sim.finish(slow_map, "fail")
    kills = [k for k in eff if isinstance(k, KillTask)]
    assert [(k.task_id, k.executor) for k in kills] == [(max(on_other), other)]
    assert kills[0].reason == "preempted: map tasks of stage 0 need a slot"
    assert [(t.stage_id, t.partition, t.executor) for t in sim.launched(eff)] == [(0, 1, other)]
    sim.run()
    assert sim.ended[0].failure == ""
    assert sim.results[0] == Counter({0: 1, 1: 1, 2: 1})


def test_lost_node_while_reducers_wait_runs_the_finished_parent_again() -> None:
    # Stage 0 is done (its outputs on hA) while stage 1 runs; the join's reducers
    # wait. hA dies: no fetch failure will tell, so the scheduler runs stage 0 again.
    sim = Sim(decide=lambda s, t: Plan(1.0 if t.stage_id == 0 else 10.0 if t.stage_id == 1 else 2.0))
    sim.add_executor("e0", "hA", slots=2)
    sim.add_executor("e1", "hB", slots=2)
    stages = [StageSpec(0, 2, [], 0, [prefer("hA"), prefer("hA")], "quick"),
              StageSpec(1, 1, [], 1, [prefer("hB")], "slow"),
              StageSpec(2, 2, [0, 1], None, [], "join", slow_start=0.0)]
    sim.submit(0, 2, [0, 1], stages)
    sim.run(until=lambda: all(o is not None for o in sim.sched.map_outputs[0]) and bool(sim.running_of(2)))
    assert {o.node_id for o in sim.sched.map_outputs[0]} == {"hA"}
    waiting = sim.running_of(2)
    sim.lose_node("hA")
    assert sim.sched.map_outputs[0] == [None, None]
    assert started(sim, 0)[-1].attempt == 1
    sim.run()
    assert sim.ended[0].failure == ""
    assert not [e for e in all_effects(sim) if isinstance(e, TaskFailed)]
    assert all(o.node_id == "hB" for o in sim.sched.map_outputs[0])
    assert all(t in sim.launches for t in waiting)


# --- failures -----------------------------------------------------------------------------------
def fetch_fail_early(sim: Sim, outputs_before: int) -> list[object]:
    """Two reducers wait early on four maps; the first reports a fetch failure of
    map output 0 once ``outputs_before`` outputs exist."""
    sim.submit(0, 1, [0, 1], mr(4, 2, 0.5))
    sim.run(until=lambda: len(sim.running_of(1)) == 2 and
            sum(o is not None for o in sim.sched.map_outputs[0]) == outputs_before)
    assert sim.sched.is_early(1)
    r0 = sim.running_of(1)[0]
    eff = sim.finish(r0, "fetch", fetch_failed=(0, 0, sim.sched.map_outputs[0][0].node_id))
    assert sim.sched.map_outputs[0][0] is None
    assert StageEnded(1, 0, "fetch failed: FetchFailed") in eff
    assert (0, 0) in [(t.stage_id, t.partition) for t in sim.launched(eff)]  # the map runs again
    return eff


def test_fetch_failure_of_an_early_reducer_restarts_the_stage_early_at_once() -> None:
    sim = cluster(3, slots=2, decide=map_durations(1.0, 1.0, 2.0, 8.0, reduce=2.0))
    eff = fetch_fail_early(sim, 3)
    # Two of four outputs are still there: the next attempt starts early at once.
    assert StageStarted(1, 1, 2, early=True, parents_done=2, parents_total=4) in eff
    sim.run()
    assert sim.ended[0].failure == ""
    assert sim.results[0] == Counter({0: 1, 1: 1})


def test_fetch_failure_of_an_early_reducer_waits_for_the_threshold_again() -> None:
    sim = cluster(3, slots=2, decide=map_durations(1.0, 1.0, 4.0, 8.0, reduce=2.0))
    eff = fetch_fail_early(sim, 2)
    assert not [s for s in eff if isinstance(s, StageStarted) and s.stage_id == 1]
    assert 1 in sim.sched.waiting  # one output of four: below the threshold
    sim.run(until=lambda: len(started(sim, 1)) == 2)
    assert started(sim, 1)[1] == StageStarted(1, 1, 2, early=True, parents_done=2, parents_total=4)
    sim.run()
    assert sim.ended[0].failure == ""
    assert sim.results[0] == Counter({0: 1, 1: 1})


def test_failing_early_reducers_still_fail_the_job_after_max_task_failures() -> None:
    def decide(sim: Sim, launch: LaunchTask) -> Plan:
        return Plan(1.0, "fail") if launch.stage_id == 1 and launch.partition == 0 else Plan(3.0)
    sim = cluster(3, decide=decide)
    sim.submit(0, 1, [0, 1], mr(3, 2, 0.0))
    sim.run()
    assert "task 0 in stage 1.0 failed 4 times" in sim.ended[0].failure
    assert not sim.running and not sim.sched.task_sets


def test_cancel_kills_waiting_early_reducers() -> None:
    sim = cluster(3, decide=map_durations(20.0))
    sim.submit(0, 1, [0, 1], mr(1, 2, 0.0))
    reducers = set(sim.running_of(1))
    assert len(reducers) == 2
    eff = sim.cancel(0)
    assert {k.task_id for k in eff if isinstance(k, KillTask)} == set(sim.launches)  # the map and both reducers
    assert not sim.running and not sim.sched.task_sets and not sim.sched.waiting


def test_early_reducer_is_preempted_for_a_straggling_maps_speculative_copy() -> None:
    # 4 slots: the straggler holds one and early reducers the other three; when the
    # straggler is marked, a reducer gives its slot to the copy (Hadoop preempts
    # reducers for any map attempt that cannot get a container).
    def decide(sim: Sim, launch: LaunchTask) -> Plan:
        if launch.stage_id == 0:
            return Plan(30.0 if launch.partition == 9 and not launch.speculative else 1.0)
        return Plan(1.0)

    sim = cluster(4, decide=decide)
    sim.submit(0, 1, [0, 1, 2], mr(10, 3, 0.2))
    sim.run()
    assert sim.ended[0].failure == ""
    copies = [t for t in sim.launched(stage=0) if t.speculative]
    assert [c.partition for c in copies] == [9]
    kills = preempted(sim)
    assert kills and all(sim.launches[k.task_id].stage_id == 1 for k in kills)
    assert max(map_done_times(sim)) < 10.0  # the copy won; nobody waited 30 s for the straggler


def test_a_stage_that_does_not_speculate_gets_no_copies() -> None:
    # mapreduce.map.speculative=false: the straggler runs alone, the job still ends.
    specs = mr(4, 1, None)
    specs[0] = dataclasses.replace(specs[0], speculation=False)
    sim = cluster(4, decide=map_durations(1.0, 1.0, 1.0, 30.0))
    sim.submit(0, 1, [0], specs)
    sim.run()
    assert sim.ended[0].failure == ""
    assert not [t for t in sim.launched(stage=0) if t.speculative]


def test_no_speculation_while_reducers_wait_for_maps() -> None:
    sim = cluster(4, slots=2, decide=map_durations(1.0, 1.0, 1.0, 30.0))
    sim.submit(0, 1, [0, 1, 2], mr(4, 3, 0.0))
    sim.run()
    assert sim.ended[0].failure == ""
    assert not [t for t in sim.launched(stage=1) if t.speculative]


# --- random schedules -------------------------------------------------------------------------
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.sampled_from([None, 0.0, 0.05, 0.5, 1.0]), st.randoms(use_true_random=False))
def test_random_schedules_with_slow_start_end_every_job_once(world: World, slow_start: float | None,
                                                             rng: random.Random) -> None:
    stages = {sid: dataclasses.replace(spec, slow_start=slow_start) if spec.parents else spec
              for sid, spec in world.stages.items()}
    sim = run_world(dataclasses.replace(world, stages=stages), rng)
    event(f"early starts: {min(3, sum(1 for s in sim.stage_started if s.early))}")
    event(f"preempted: {bool(preempted(sim))}")
    event(f"early launches: {min(3, len(sim.early_launched))}")

