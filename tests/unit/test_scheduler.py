"""Tests for shoal.compute.scheduler: the pure DAGScheduler + TaskSetManagers.

A small simulated cluster (``Sim``) feeds the scheduler events, applies its effects
(a LaunchTask takes a slot, a KillTask frees it, tasks finish when the test says) and
checks invariants after every event (an early reduce task of a slow-start stage
waits for all its map outputs before its plan runs). Scripted scenarios cover each
behaviour; a
hypothesis-driven random schedule (failures, fetch failures, lost executors and
nodes, cancellations, stragglers, several jobs sharing map stages) checks that the
invariants hold and that every job ends exactly once with the outcome the failure
counts predict.
"""

from __future__ import annotations

import random
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shoal.compute.locality import ExecutorPlace, Level, Location, level_of
from shoal.compute.scheduler import (
    ExecutorAdded,
    ExecutorLost,
    JobCancelled,
    JobEnded,
    JobScheduler,
    JobSubmitted,
    KillTask,
    LaunchTask,
    SchedulerConf,
    StageEnded,
    StageSpec,
    StageStarted,
    TaskCompleted,
    TaskFailed,
    TaskSucceeded,
    Tick,
)


# --- the simulated cluster ------------------------------------------------------------------
@dataclass(frozen=True)
class MapStatus:
    node_id: str
    task_id: int


@dataclass
class Running:
    launch: LaunchTask
    host: str
    start: float
    snapshot: dict[int, list[Any]]  # shuffle id -> map statuses the task was given
    # False: an early reduce task (slow start) still waiting for map outputs. It ends
    # its plan's duration after they all exist, reading the statuses of that moment
    # (a real one polls the driver for them).
    ready: bool = True


@dataclass
class Plan:
    """What a launched task will do: finish after ``duration`` with ``outcome``."""

    duration: float = 1.0
    outcome: str = "ok"  # ok | fail | fetch
    fetch_failed: tuple[int, int, str] | None = None  # for "fetch": which input; default: one at random


Decide = Callable[["Sim", LaunchTask], Plan]


def default_decide(sim: Sim, launch: LaunchTask) -> Plan:
    return Plan()


@dataclass
class Sim:
    conf: SchedulerConf = field(default_factory=SchedulerConf)
    decide: Decide = default_decide
    tick_s: float = 0.25

    def __post_init__(self) -> None:
        self.sched = JobScheduler(self.conf)
        self.rng = random.Random(0)
        self._lost_tasks: list[int] = []
        self.now = 0.0
        self.execs: dict[str, ExecutorPlace] = {}
        self.slots: dict[str, int] = {}
        self.dead_hosts: set[str] = set()
        self.running: dict[int, Running] = {}
        self.plans: dict[int, tuple[float, Plan]] = {}  # task id -> (end time, plan)
        self.launches: dict[int, LaunchTask] = {}
        self.launch_log: list[tuple[float, LaunchTask]] = []
        self.kills: list[KillTask] = []
        self.killed_ids: set[int] = set()
        self.log: list[tuple[float, Any, list[Any]]] = []
        self.specs: dict[int, StageSpec] = {}
        self.jobs: dict[int, JobSubmitted] = {}
        self.active: set[int] = set()
        self.ended: dict[int, JobEnded] = {}
        self.cancelled: set[int] = set()
        self.results: dict[int, Counter[int]] = {}
        self.map_completed: Counter[tuple[int, int]] = Counter()
        self.latest_attempt: dict[int, int] = {}
        self.stage_started: list[StageStarted] = []
        self.early_launched: set[int] = set()  # tasks launched before their map outputs all existed
        self.stage_ended: dict[tuple[int, int], StageEnded] = {}
        # The failure oracle: what the scheduler must do with the failures we report.
        self.task_failures: Counter[tuple[int, int, int]] = Counter()  # (stage, attempt, partition)
        self.failed_on: dict[tuple[int, int, int], set[str]] = {}
        self.fetch_failed_attempts: dict[int, set[int]] = {}  # stage -> attempts since it last succeeded
        self.expected_aborts: list[tuple[int, str]] = []  # (stage, message fragment) due this event
        self.stale: list[int] = []  # killed task ids whose late reports we may still deliver
        self.zombies: set[tuple[int, int]] = set()  # (stage, attempt) a fetch failure ended
        self.broken: set[MapStatus] = set()  # map outputs a reader failed to fetch
        self._reported: MapStatus | None = None  # the output a fetch failure being sent is about
        # Outputs dropped by a fetch failure about an older output of the same map on the
        # same node: (shuffle, map index, node) cannot tell them apart (nor can Spark's).
        self.ambiguous: set[tuple[int, int]] = set()
        self.attempt_started_at: dict[int, int] = {}  # stage -> index in log of its latest StageStarted
        self.unregistered_at: dict[int, int] = {}  # shuffle -> index in log when an output was last lost

    # --- plan helpers ---------------------------------------------------------------------
    def ancestors(self, stage_id: int) -> set[int]:
        out: set[int] = set()
        stack = [stage_id]
        while stack:
            sid = stack.pop()
            if sid not in out:
                out.add(sid)
                stack.extend(self.specs[sid].parents)
        return out

    def needed_stages(self) -> set[int]:
        out: set[int] = set()
        for j in self.active:
            out |= self.ancestors(self.jobs[j].final_stage)
        return out

    def parent_shuffles(self, stage_id: int) -> list[int]:
        return [self.specs[p].shuffle_id for p in self.specs[stage_id].parents]  # type: ignore[misc]

    def inputs_complete(self, stage_id: int) -> bool:
        return all(o is not None for s in self.parent_shuffles(stage_id) for o in self.sched.map_outputs[s])

    def is_early(self, stage_id: int) -> bool:
        """A slow-start stage while a parent output is missing."""
        return self.specs[stage_id].slow_start is not None and not self.inputs_complete(stage_id)

    def total_slots(self) -> int:
        return sum(self.slots.values())

    def early_running(self) -> list[int]:
        return sorted(t for t, r in self.running.items() if self.is_early(r.launch.stage_id))

    def running_on(self, executor: str) -> list[int]:
        return [t for t, r in self.running.items() if r.launch.executor == executor]

    # --- events -----------------------------------------------------------------------------
    def send(self, event: Any) -> list[Any]:
        before = {s: list(o) for s, o in self.sched.map_outputs.items()}
        self.expected_aborts = []
        self._predict(event)
        effects = self.sched.handle(event, self.now)
        self.log.append((self.now, event, effects))
        for shuffle_id, outs in self.sched.map_outputs.items():
            if any(b is not None and a is None for b, a in zip(before.get(shuffle_id, []), outs)):
                self.unregistered_at[shuffle_id] = len(self.log)
        try:
            for eff in effects:
                self._apply(event, eff)
            self._wake_early_tasks()
            self._check(event, effects, before)
        except AssertionError as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            raise AssertionError(f"{exc} (line {where.lineno}: {where.line})\n--- the last events ---\n"
                                 f"{self.history(40)}") from None
        finally:
            self._reported = None
        return effects

    def history(self, n: int) -> str:
        lines = []
        for when, ev, effs in self.log[-n:]:
            lines.append(f"t={when:.2f} {ev}")
            lines.extend(f"      -> {e}" for e in effs)
        return "\n".join(lines)

    def add_executor(self, executor: str, host: str, rack: str = "", slots: int = 1) -> list[Any]:
        assert host not in self.dead_hosts
        self.execs[executor] = ExecutorPlace(executor, host, rack)
        self.slots[executor] = slots
        return self.send(ExecutorAdded(executor, host, rack, slots))

    def lose_executor(self, executor: str, node_lost: bool = False) -> list[Any]:
        place = self.execs.pop(executor)
        self.slots.pop(executor)
        lost = self.running_on(executor)
        for tid in lost:
            del self.running[tid]
            self.plans.pop(tid, None)
        self._lost_tasks = lost
        effects = self.send(ExecutorLost(executor, "test", node_lost))
        if node_lost:
            self.dead_hosts.add(place.host)
        return effects

    def lose_node(self, host: str) -> list[Any]:
        """The whole machine dies: every executor on it, and the shuffle files."""
        effects: list[Any] = []
        for ex in [e for e, p in sorted(self.execs.items()) if p.host == host]:
            effects += self.lose_executor(ex, node_lost=True)
        self.dead_hosts.add(host)
        return effects

    def submit(self, job_id: int, final_stage: int, partitions: list[int], stages: list[StageSpec]) -> list[Any]:
        for s in stages:
            self.specs.setdefault(s.stage_id, s)
        ev = JobSubmitted(job_id, final_stage, list(partitions), stages)
        self.jobs[job_id] = ev
        self.active.add(job_id)
        self.results[job_id] = Counter()
        return self.send(ev)

    def cancel(self, job_id: int) -> list[Any]:
        if job_id in self.active:
            self.cancelled.add(job_id)
        return self.send(JobCancelled(job_id, "cancelled by test"))

    def finish(self, task_id: int, outcome: str = "ok", **kw: Any) -> list[Any]:
        """Deliver a running task's end: ok, fail (a user error), or fetch (a fetch failure)."""
        run = self.running[task_id]
        assert run.ready or outcome != "ok", f"task {task_id} finished before all its map outputs existed"
        del self.running[task_id]
        self.plans.pop(task_id, None)
        if outcome == "ok":
            lost = self._lost_input(run)
            if lost is not None:
                self._reported = run.snapshot[lost[0]][lost[1]]
                # A dead node's shuffle service refuses connections: say so (node_lost).
                return self.send(TaskFailed(task_id, "FetchFailed", fetch_failed=lost,
                                            node_lost=lost[2] in self.dead_hosts))
            status = None
            if self.specs[run.launch.stage_id].shuffle_id is not None:
                status = MapStatus(run.host, task_id)
            return self.send(TaskSucceeded(task_id, status))
        if outcome == "fail":
            return self.send(TaskFailed(task_id, kw.get("reason", f"ValueError: boom {task_id}"),
                                        error=kw.get("error", ("ValueError", task_id)),
                                        counts=kw.get("counts", True), killed=kw.get("killed", False)))
        if outcome == "fetch":
            ff = kw.get("fetch_failed") or self._any_input(run, self.rng)
            assert ff is not None, "a fetch failure needs a shuffle input"
            # That output is unreadable now (a bad disk, say): whoever reads it fails too.
            status = run.snapshot.get(ff[0], [])[ff[1]] if ff[1] < len(run.snapshot.get(ff[0], [])) else None
            if status is not None and status.node_id == ff[2] and not kw.get("transient"):
                self.broken.add(status)
            self._reported = status
            return self.send(TaskFailed(task_id, "FetchFailed", fetch_failed=ff))
        raise AssertionError(outcome)

    def _lost_input(self, run: Running) -> tuple[int, int, str] | None:
        for shuffle_id in sorted(run.snapshot):
            for i, st_ in enumerate(run.snapshot[shuffle_id]):
                if st_ is None:  # launched while the output was missing: the reader cannot find it
                    return (shuffle_id, i, "")
                if st_.node_id in self.dead_hosts or st_ in self.broken:
                    return (shuffle_id, i, st_.node_id)
        return None

    def _any_input(self, run: Running, rng: random.Random | None = None) -> tuple[int, int, str] | None:
        choices = [(s, i, st_.node_id if st_ is not None else "")
                   for s in sorted(run.snapshot) for i, st_ in enumerate(run.snapshot[s])]
        if not choices:
            return None
        return (rng or random.Random(0)).choice(choices)

    def tick(self, dt: float = 0.0) -> list[Any]:
        self.now += dt
        return self.send(Tick())

    # --- driving ----------------------------------------------------------------------------
    def next_end(self) -> tuple[float, int] | None:
        ends = [(end, tid) for tid, (end, _) in self.plans.items() if tid in self.running]
        return min(ends) if ends else None

    def step(self) -> None:
        """Advance to the next task end (delivering it) or by one tick."""
        nxt = self.next_end()
        if nxt is not None and nxt[0] <= self.now + self.tick_s:
            self.now = max(self.now, nxt[0])
            plan = self.plans[nxt[1]][1]
            self.finish(nxt[1], plan.outcome, fetch_failed=plan.fetch_failed)
        else:
            self.tick(self.tick_s)

    def run(self, max_steps: int = 2000, until: Callable[[], bool] | None = None) -> None:
        until = until or (lambda: not self.active)
        for _ in range(max_steps):
            if until():
                return
            self.step()
        raise AssertionError(f"no progress after {max_steps} steps: active jobs {sorted(self.active)}, "
                             f"running {sorted(self.running)}, task sets {sorted(self.sched.task_sets)}")

    # --- the failure oracle -----------------------------------------------------------------
    def _count_failure(self, tid: int, executor: str) -> None:
        launch = self.launches[tid]
        key = (launch.stage_id, launch.stage_attempt, launch.partition)
        if launch.stage_attempt != self.latest_attempt.get(launch.stage_id):
            return  # an older attempt's straggler: its task set is gone
        if (launch.stage_id, launch.stage_attempt) in self.zombies:
            return  # a fetch failure ended the attempt: like Spark, no more counting
        self.task_failures[key] += 1
        self.failed_on.setdefault(key, set()).add(executor)
        n = self.task_failures[key]
        if n == self.conf.max_task_failures:
            self.expected_aborts.append(
                (launch.stage_id, f"task {launch.partition} in stage {launch.stage_id}.{launch.stage_attempt} "
                                  f"failed {n} times"))

    def _predict(self, event: Any) -> None:
        if isinstance(event, TaskFailed) and event.task_id in self.launches and event.task_id not in self.killed_ids:
            launch = self.launches[event.task_id]
            if event.fetch_failed is not None:
                sid = launch.stage_id
                if launch.stage_attempt == self.latest_attempt.get(sid):
                    seen = self.fetch_failed_attempts.setdefault(sid, set())
                    if launch.stage_attempt not in seen:
                        seen.add(launch.stage_attempt)
                        self.zombies.add((sid, launch.stage_attempt))
                        if len(seen) == self.conf.max_stage_attempts:
                            self.expected_aborts.append((sid, f"stage {sid} failed {len(seen)} times"))
            elif event.counts and not event.killed:
                self._count_failure(event.task_id, launch.executor)
        elif isinstance(event, ExecutorLost):
            for tid in self._lost_tasks:
                self._count_failure(tid, event.executor)
        self._lost_tasks = []

    # --- applying effects -------------------------------------------------------------------
    def _apply(self, event: Any, eff: Any) -> None:
        if isinstance(eff, LaunchTask):
            self._on_launch(eff)
        elif isinstance(eff, KillTask):
            assert eff.task_id in self.running, f"kill of a task that is not running: {eff}"
            assert self.running[eff.task_id].launch.executor == eff.executor
            del self.running[eff.task_id]
            self.plans.pop(eff.task_id, None)
            self.kills.append(eff)
            self.killed_ids.add(eff.task_id)
            self.stale.append(eff.task_id)
        elif isinstance(eff, TaskCompleted):
            launch = self.launches[eff.task_id]
            spec = self.specs[launch.stage_id]
            assert isinstance(event, TaskSucceeded) and event.task_id == eff.task_id
            if eff.job_id is None:
                assert spec.shuffle_id is not None
                assert eff.output_index == launch.partition
                self.map_completed[(spec.shuffle_id, launch.partition)] += 1
            else:
                job = self.jobs[eff.job_id]
                assert eff.job_id in self.active, f"result for ended job {eff.job_id}"
                assert launch.stage_id == job.final_stage
                assert job.partitions[eff.output_index] == launch.partition
                self.results[eff.job_id][eff.output_index] += 1
                assert self.results[eff.job_id][eff.output_index] == 1, f"output {eff.output_index} delivered twice"
        elif isinstance(eff, StageStarted):
            prev = self.latest_attempt.get(eff.stage_id, -1)
            assert eff.attempt == prev + 1, f"stage {eff.stage_id} attempt {eff.attempt} after {prev}"
            assert eff.stage_id in self.needed_stages()
            self.latest_attempt[eff.stage_id] = eff.attempt
            self.attempt_started_at[eff.stage_id] = len(self.log)
            self._check_stage_start(eff)
            self.stage_started.append(eff)
            assert eff.num_tasks > 0
        elif isinstance(eff, StageEnded):
            key = (eff.stage_id, eff.attempt)
            assert key not in self.stage_ended, f"stage {key} ended twice: {self.stage_ended[key]} then {eff}"
            assert self.latest_attempt.get(eff.stage_id, -1) >= eff.attempt
            self.stage_ended[key] = eff
            if not eff.failure:
                self.fetch_failed_attempts.pop(eff.stage_id, None)
        elif isinstance(eff, JobEnded):
            assert eff.job_id not in self.ended, f"job {eff.job_id} ended twice"
            assert eff.job_id in self.active
            self.ended[eff.job_id] = eff
            self.active.discard(eff.job_id)
            if eff.failure:
                explained = eff.job_id in self.cancelled and isinstance(event, JobCancelled) and \
                    event.job_id == eff.job_id
                anc = self.ancestors(self.jobs[eff.job_id].final_stage)
                explained = explained or any(s in anc and frag in eff.failure for s, frag in self.expected_aborts)
                assert explained, f"job {eff.job_id} failed unexpectedly: {eff.failure!r} on {event}"
            else:
                job = self.jobs[eff.job_id]
                assert sorted(self.results[eff.job_id]) == list(range(len(job.partitions)))
        else:
            raise AssertionError(f"unknown effect {eff}")

    def _on_launch(self, eff: LaunchTask) -> None:
        assert eff.executor in self.execs, f"launch on unknown or lost executor: {eff}"
        assert len(self.running_on(eff.executor)) < self.slots[eff.executor], f"slot overflow: {eff}"
        assert eff.task_id not in self.launches
        assert eff.stage_id in self.needed_stages(), f"launch for a stage no job needs: {eff}"
        assert eff.stage_attempt == self.latest_attempt.get(eff.stage_id), eff
        place = self.execs[eff.executor]
        spec = self.specs[eff.stage_id]
        prefs = spec.prefs[eff.partition] if eff.partition < len(spec.prefs) else []
        assert eff.locality == level_of(prefs, place)
        snapshot = {}
        early = self.is_early(eff.stage_id)
        for shuffle_id in self.parent_shuffles(eff.stage_id):
            outs = list(self.sched.map_outputs[shuffle_id])
            # A stage attempt starts with all its inputs; one of them may be lost while
            # it runs (a node died, another stage failed to fetch it): then its tasks,
            # like Spark's, launch and fail to fetch. An early task waits for them.
            if any(o is None for o in outs) and not early:
                assert self.unregistered_at.get(shuffle_id, -1) >= self.attempt_started_at[eff.stage_id], \
                    f"{eff} launched before shuffle {shuffle_id} was complete"
            snapshot[shuffle_id] = outs
        same = [r for r in self.running.values()
                if (r.launch.stage_id, r.launch.stage_attempt, r.launch.partition) ==
                (eff.stage_id, eff.stage_attempt, eff.partition)]
        if eff.speculative:
            assert len(same) == 1, f"speculative copy beside {len(same)} attempts: {eff}"
            assert same[0].launch.executor != eff.executor
        else:
            assert not same, f"a second regular attempt of a running task: {eff}"
            failed = self.failed_on.get((eff.stage_id, eff.stage_attempt, eff.partition), set())
            if eff.executor in failed:
                assert set(self.execs) <= failed, f"retry on {eff.executor} where it failed, others alive: {eff}"
        self.launches[eff.task_id] = eff
        self.launch_log.append((self.now, eff))
        self.running[eff.task_id] = Running(eff, place.host, self.now, snapshot, ready=not early)
        if early:
            self.early_launched.add(eff.task_id)
        plan = self.decide(self, eff)
        self.plans[eff.task_id] = (self.now + plan.duration if not early else float("inf"), plan)

    def _check_stage_start(self, eff: StageStarted) -> None:
        spec = self.specs[eff.stage_id]
        outs = [self.sched.map_outputs[s] for s in self.parent_shuffles(eff.stage_id)]
        assert eff.early == self.is_early(eff.stage_id), eff
        if spec.slow_start is None:
            assert (eff.parents_done, eff.parents_total) == (0, 0)
        else:
            assert eff.parents_done == sum(o is not None for out in outs for o in out), eff
            assert eff.parents_total == sum(len(out) for out in outs), eff
        if eff.early:
            # Hadoop's threshold: that fraction of every parent's maps has finished.
            for out in outs:
                assert sum(o is not None for o in out) / len(out) >= spec.slow_start, eff  # type: ignore[operator]
        else:
            assert self.inputs_complete(eff.stage_id), f"{eff} started before its shuffles were complete"

    def _wake_early_tasks(self) -> None:
        """An early task whose map outputs now all exist polls their statuses and runs."""
        for tid, run in sorted(self.running.items()):
            if not run.ready and self.inputs_complete(run.launch.stage_id):
                run.ready = True
                run.snapshot = {s: list(self.sched.map_outputs[s]) for s in self.parent_shuffles(run.launch.stage_id)}
                plan = self.plans[tid][1]
                self.plans[tid] = (self.now + plan.duration, plan)

    # --- invariants after every event ----------------------------------------------------
    def _check(self, event: Any, effects: list[Any], before: dict[int, list[Any]]) -> None:
        sched_running = {a.task_id for a in self.sched.running_tasks()}
        assert sched_running == set(self.running), (sched_running, set(self.running))
        for ex, slots in self.slots.items():
            assert len(self.running_on(ex)) <= slots
        for run in self.running.values():
            assert run.launch.executor in self.execs
        self._check_slow_start(event)
        # Every running attempt works for a job that still wants it.
        needed = self.needed_stages()
        for run in self.running.values():
            assert run.launch.stage_id in needed, f"task {run.launch} runs for no job after {event}"
        # Map output registrations match TaskCompleted effects one to one.
        completed = Counter((self.specs[self.launches[e.task_id].stage_id].shuffle_id, e.output_index)
                            for e in effects if isinstance(e, TaskCompleted) and e.job_id is None)
        for shuffle_id, outs in self.sched.map_outputs.items():
            old = before.get(shuffle_id, [None] * len(outs))
            for p, (b, a) in enumerate(zip(old, outs)):
                if b is None and a is not None:
                    self.ambiguous.discard((shuffle_id, p))
                    assert completed[(shuffle_id, p)] == 1
                    assert isinstance(event, TaskSucceeded) and a is event.map_status
                else:
                    assert completed[(shuffle_id, p)] == 0
                if b is not None and a is None:
                    by_fetch = isinstance(event, TaskFailed) and (
                        event.fetch_failed == (shuffle_id, p, b.node_id) or
                        (event.node_lost and event.fetch_failed is not None and event.fetch_failed[2] == b.node_id))
                    by_node = isinstance(event, ExecutorLost) and event.node_lost and \
                        b.node_id == self._host_of_lost(event)
                    assert by_fetch or by_node, f"output {shuffle_id}/{p} lost on {event}"
                    if by_fetch and self._reported is not None and self._reported is not b and \
                            b.node_id not in self.dead_hosts:
                        self.ambiguous.add((shuffle_id, p))
                if b is not None and a is not None:
                    assert a is b
        # A job that succeeded left every map output its result stage read in place
        # (an earlier shuffle's may be lost once the stages reading it are done).
        for e in effects:
            if isinstance(e, JobEnded) and not e.failure:
                for sid in self.specs[self.jobs[e.job_id].final_stage].parents:
                    shuffle_id = self.specs[sid].shuffle_id
                    if shuffle_id is not None:
                        outs = self.sched.map_outputs[shuffle_id]
                        assert all(o is not None or (shuffle_id, p) in self.ambiguous for p, o in enumerate(outs))
        # Every abort the failure counts call for happened now (the messages are checked
        # as the jobs end).
        for sid, frag in self.expected_aborts:
            assert not any(sid in self.ancestors(self.jobs[j].final_stage) for j in self.active), \
                f"stage {sid} should have failed its jobs ({frag}) on {event}"

    def _check_slow_start(self, event: Any) -> None:
        early = self.early_running()
        if not early:
            return
        assert len(early) <= self.total_slots() - 1, f"{len(early)} early tasks hold {self.total_slots()} slots"
        free = self.total_slots() - len(self.running)
        for sid in {self.running[t].launch.stage_id for t in early}:
            for parent in self.specs[sid].parents:
                ts = self.sched.task_sets.get(parent)
                if ts is not None and not ts.zombie and ts.pending and not self.is_early(parent):
                    assert free > 0, f"early tasks of stage {sid} hold the slots map stage {parent} needs"

    def _host_of_lost(self, event: ExecutorLost) -> str:
        for _, ev, _ in reversed(self.log):
            if isinstance(ev, ExecutorAdded) and ev.executor == event.executor:
                return ev.host
        return ""

    # --- queries for tests -------------------------------------------------------------------
    def launched(self, effects: list[Any] | None = None, stage: int | None = None) -> list[LaunchTask]:
        src = [e for e in effects if isinstance(e, LaunchTask)] if effects is not None else \
            [eff for _, eff in self.launch_log]
        return [e for e in src if stage is None or e.stage_id == stage]

    def running_of(self, stage: int, partition: int | None = None) -> list[int]:
        return sorted(t for t, r in self.running.items()
                      if r.launch.stage_id == stage and (partition is None or r.launch.partition == partition))


def map_reduce(n_maps: int = 3, n_reduces: int = 2, map_stage: int = 0, shuffle: int = 0, result_stage: int = 1,
               map_prefs: list[list[Location]] | None = None) -> list[StageSpec]:
    return [StageSpec(map_stage, n_maps, [], shuffle, map_prefs or [], "map"),
            StageSpec(result_stage, n_reduces, [map_stage], None, [], "reduce")]


def cluster(n: int = 3, slots: int = 1, **kw: Any) -> Sim:
    sim = Sim(**kw)
    for i in range(n):
        sim.add_executor(f"e{i}", f"h{i}", f"r{i % 2}", slots)
    return sim


def all_effects(sim: Sim) -> list[Any]:
    return [e for _, _, effs in sim.log for e in effs]


def fail_partition(stage: int, partition: int, times: int) -> Decide:
    """Tasks of ``partition`` fail their first ``times`` attempts; everything else succeeds."""
    def decide(sim: Sim, launch: LaunchTask) -> Plan:
        if launch.stage_id == stage and launch.partition == partition and launch.attempt < times:
            return Plan(0.5, "fail")
        return Plan(1.0)
    return decide


# --- jobs and stages --------------------------------------------------------------------------
def test_result_stage_delivers_each_partition_once_and_ends_the_job_once() -> None:
    sim = cluster(2, slots=2)
    eff = sim.submit(0, 0, [2, 0, 1], [StageSpec(0, 3, [], None, [], "collect")])
    assert StageStarted(0, 0, 3) in eff
    assert sorted(t.partition for t in sim.launched(eff)) == [0, 1, 2]
    sim.run()
    assert sim.ended[0] == JobEnded(0, "", None)
    assert sim.results[0] == Counter({0: 1, 1: 1, 2: 1})
    ends = [e for e in all_effects(sim) if isinstance(e, JobEnded)]
    assert ends == [JobEnded(0, "", None)]
    assert StageEnded(0, 0, "") in all_effects(sim)
    # Output indexes follow the job's partition order: index 0 is partition 2.
    by_index = {e.output_index: sim.launches[e.task_id].partition for e in all_effects(sim)
                if isinstance(e, TaskCompleted)}
    assert by_index == {0: 2, 1: 0, 2: 1}
    assert not sim.sched.task_sets and not sim.sched.running_tasks()


def test_launches_fill_free_slots_and_never_a_lost_executor() -> None:
    sim = cluster(2, slots=2, decide=lambda s, t: Plan(1.0))
    eff = sim.submit(0, 0, list(range(10)), [StageSpec(0, 10, [], None)])
    assert Counter(t.executor for t in sim.launched(eff)) == Counter({"e0": 2, "e1": 2})
    sim.lose_executor("e0")
    sim.run()
    assert sim.ended[0].failure == ""
    lost_at = next(i for i, (_, ev, _) in enumerate(sim.log) if isinstance(ev, ExecutorLost))
    later = [e for _, _, effs in sim.log[lost_at:] for e in effs if isinstance(e, LaunchTask)]
    assert later and all(t.executor == "e1" for t in later)


class GreedyScheduler(JobScheduler):
    """A broken scheduler: it ignores how busy executors are."""

    def _free_executors(self) -> list[ExecutorPlace]:
        return [p for _, p in sorted(self.executors.items())]


def test_the_harness_catches_a_slot_overflow() -> None:
    sim = cluster(2)
    sim.sched = GreedyScheduler(sim.conf)
    for ex, place in sim.execs.items():
        sim.sched.handle(ExecutorAdded(ex, place.host, place.rack, 1), 0.0)
    with pytest.raises(AssertionError, match="slot overflow"):
        sim.submit(0, 0, [0, 1, 2], [StageSpec(0, 3, [], None)])


def test_empty_job_ends_at_once() -> None:
    sim = cluster(1)
    eff = sim.submit(0, 0, [], [StageSpec(0, 3, [], None, [], "nothing")])
    assert JobEnded(0, "", None) in eff
    assert not sim.launched(eff)


def test_map_stage_runs_before_reduce_and_registers_every_output_once() -> None:
    sim = cluster(3)
    eff = sim.submit(0, 1, [0, 1], map_reduce(3, 2))
    assert {t.stage_id for t in sim.launched(eff)} == {0}
    assert 1 in sim.sched.waiting
    sim.run()
    assert not sim.ended[0].failure
    assert sim.map_completed == Counter({(0, 0): 1, (0, 1): 1, (0, 2): 1})
    outs = sim.sched.map_outputs[0]
    assert all(isinstance(o, MapStatus) for o in outs)
    last_map_end = max(t for t, ev, effs in sim.log if any(isinstance(e, TaskCompleted) and e.job_id is None
                                                            for e in effs))
    first_reduce = min(t for t, launch in sim.launch_log if launch.stage_id == 1)
    assert first_reduce >= last_map_end
    assert [e for e in all_effects(sim) if isinstance(e, StageEnded)] == [StageEnded(0, 0), StageEnded(1, 0)]


def test_two_level_shuffle_chain() -> None:
    sim = cluster(3, slots=2)
    stages = [StageSpec(0, 4, [], 0, [], "m0"), StageSpec(1, 3, [0], 1, [], "m1"), StageSpec(2, 2, [1], None)]
    sim.submit(0, 2, [0, 1], stages)
    sim.run()
    assert not sim.ended[0].failure
    assert all(o is not None for o in sim.sched.map_outputs[0] + sim.sched.map_outputs[1])
    order = [sim.launches[t].stage_id for t in sorted(sim.launches)]
    assert order == sorted(order)  # stage 0, then 1, then 2


# --- task failures ------------------------------------------------------------------------------
@pytest.mark.parametrize("failures", [1, 3])
def test_fewer_than_max_task_failures_still_succeed(failures: int) -> None:
    sim = cluster(3, decide=fail_partition(0, 1, failures))
    sim.submit(0, 0, [0, 1, 2], [StageSpec(0, 3, [], None)])
    sim.run()
    assert sim.ended[0].failure == ""
    assert len(sim.launched(stage=0)) == 3 + failures
    assert sim.results[0] == Counter({0: 1, 1: 1, 2: 1})


def test_max_task_failures_fail_the_job_naming_stage_and_task() -> None:
    sim = cluster(3, decide=fail_partition(0, 1, 99))
    sim.submit(0, 0, [0, 1, 2], [StageSpec(0, 3, [], None)])
    sim.run()
    end = sim.ended[0]
    assert "task 1 in stage 0.0 failed 4 times" in end.failure
    last = max(sim.launches[t].task_id for t in sim.launches if sim.launches[t].partition == 1)
    assert end.error == ("ValueError", last)  # the user's exception from the last failure
    assert len([t for t in sim.launched() if t.partition == 1]) == 4
    assert StageEnded(0, 0, end.failure) in all_effects(sim)


def test_failed_job_kills_its_other_running_tasks() -> None:
    def decide(sim: Sim, launch: LaunchTask) -> Plan:
        return Plan(0.5, "fail") if launch.partition == 0 else Plan(100.0)
    sim = cluster(6, decide=decide)  # partition 0 fails on 4 executors while 1 and 2 run
    sim.submit(0, 0, [0, 1, 2], [StageSpec(0, 3, [], None)])
    sim.run(until=lambda: 0 in sim.ended)
    assert "failed 4 times" in sim.ended[0].failure and sim.now < 100
    assert not sim.running and not sim.sched.running_tasks()
    assert {k.task_id for k in sim.kills} >= {t.task_id for t in sim.launched() if t.partition in (1, 2)}


def test_retries_avoid_the_executor_where_the_task_failed() -> None:
    sim = cluster(4, decide=fail_partition(0, 0, 3))
    sim.submit(0, 0, [0], [StageSpec(0, 1, [], None)])
    sim.run()
    assert not sim.ended[0].failure
    execs = [t.executor for t in sim.launched()]
    assert len(execs) == 4 and len(set(execs)) == 4


def test_retry_uses_the_failed_executor_when_it_is_the_only_one() -> None:
    sim = cluster(1, decide=fail_partition(0, 0, 2))
    sim.submit(0, 0, [0], [StageSpec(0, 1, [], None)])
    sim.run()
    assert not sim.ended[0].failure
    assert [t.executor for t in sim.launched()] == ["e0", "e0", "e0"]


def test_killed_or_non_counting_failures_do_not_count() -> None:
    sim = cluster(2)
    sim.submit(0, 0, [0], [StageSpec(0, 1, [], None)])
    for i in range(6):
        (tid,) = sim.running_of(0)
        sim.finish(tid, "fail", killed=i % 2 == 0, counts=i % 2 == 0)
    assert 0 not in sim.ended
    (tid,) = sim.running_of(0)
    sim.finish(tid)
    assert sim.ended[0].failure == ""


# --- fetch failures ------------------------------------------------------------------------------
def start_reduce(sim: Sim, n_maps: int = 3, n_reduces: int = 2) -> list[int]:
    eff = sim.submit(0, 1, list(range(n_reduces)), map_reduce(n_maps, n_reduces))
    for t in sim.launched(eff):
        sim.finish(t.task_id)
    sim.run(until=lambda: len(sim.running_of(1)) == n_reduces)
    return sim.running_of(1)


def test_fetch_failure_reruns_only_the_lost_map_output_then_the_reduce_stage() -> None:
    sim = cluster(3, slots=2)
    r0, r1 = start_reduce(sim)
    outs = list(sim.sched.map_outputs[0])
    # A blip: r1 still reads that output fine.
    eff = sim.finish(r0, "fetch", fetch_failed=(0, 1, outs[1].node_id), transient=True)
    assert sim.sched.map_outputs[0] == [outs[0], None, outs[2]]
    assert [e for e in eff if isinstance(e, StageEnded)] == [StageEnded(1, 0, "fetch failed: FetchFailed")]
    assert StageStarted(0, 1, 1) in eff
    assert [(t.stage_id, t.partition) for t in sim.launched(eff)] == [(0, 1)]
    # The other reduce task of the failed attempt still finishes its partition.
    sim.finish(r1)
    assert sim.results[0] == Counter({1: 1})
    sim.run()
    assert sim.ended[0].failure == ""
    assert sim.results[0] == Counter({0: 1, 1: 1})
    assert sim.map_completed == Counter({(0, 0): 1, (0, 1): 2, (0, 2): 1})
    second = [s for s in sim.stage_started if s.stage_id == 1]
    assert second == [StageStarted(1, 0, 2), StageStarted(1, 1, 1)]  # only the missing partition


def test_consecutive_fetch_failures_fail_the_job() -> None:
    def decide(sim: Sim, launch: LaunchTask) -> Plan:
        return Plan(1.0, "fetch") if launch.stage_id == 1 else Plan(1.0)
    sim = cluster(2, decide=decide)
    sim.submit(0, 1, [0], map_reduce(2, 1))
    sim.run()
    assert "stage 1 failed 4 times on fetch failures" in sim.ended[0].failure
    assert len([s for s in sim.stage_started if s.stage_id == 1]) == 4
    assert len(sim.launched(stage=1)) == 4


def test_fetch_failures_count_even_when_the_other_reduce_tasks_succeed() -> None:
    # Each attempt of the reduce stage has one task fail to fetch while the others
    # finish: the attempts still fail consecutively.
    def decide(sim: Sim, launch: LaunchTask) -> Plan:
        if launch.stage_id == 1 and launch.partition == 0:
            return Plan(0.5, "fetch")
        return Plan(1.0)
    sim = cluster(4, decide=decide)
    sim.submit(0, 1, [0, 1, 2], map_reduce(2, 3))
    sim.run()
    assert "stage 1 failed 4 times" in sim.ended[0].failure


def test_task_failures_after_a_fetch_failure_ended_the_attempt_do_not_count() -> None:
    sim = cluster(3, slots=2, decide=lambda s, t: Plan(1.0 if t.stage_id == 0 else 30.0))
    r0, r1 = start_reduce(sim)
    for _ in range(3):
        sim.finish(r1, "fail")
        (r1,) = [t for t in sim.running_of(1, partition=1)]
    assert sim.launches[r1].attempt == 3
    sim.finish(r0, "fetch", fetch_failed=(0, 0, sim.sched.map_outputs[0][0].node_id), transient=True)
    sim.finish(r1, "fail")  # the 4th failure, but in an attempt that had already failed
    assert 0 not in sim.ended
    sim.run()
    assert sim.ended[0].failure == ""
    assert sim.results[0] == Counter({0: 1, 1: 1})


def test_fewer_fetch_failures_than_max_stage_attempts_succeed() -> None:
    def decide(sim: Sim, launch: LaunchTask) -> Plan:
        if launch.stage_id == 1 and launch.partition == 0 and launch.stage_attempt < 3:
            return Plan(0.5, "fetch")
        return Plan(1.0)
    sim = cluster(3, decide=decide)
    sim.submit(0, 1, [0, 1], map_reduce(2, 2))
    sim.run()
    assert sim.ended[0].failure == ""
    assert sim.results[0] == Counter({0: 1, 1: 1})


# --- lost executors and nodes ------------------------------------------------------------------
def test_lost_executor_tasks_are_retried_elsewhere() -> None:
    sim = cluster(3)
    eff = sim.submit(0, 0, [0, 1], [StageSpec(0, 2, [], None)])
    on_e0 = [t for t in sim.launched(eff) if t.executor == "e0"]
    assert len(on_e0) == 1
    eff = sim.lose_executor("e0")
    (retry,) = sim.launched(eff)
    assert retry.partition == on_e0[0].partition and retry.executor == "e2" and retry.attempt == 1
    sim.run()
    assert sim.ended[0].failure == ""


def test_lost_executor_alone_keeps_its_map_outputs() -> None:
    sim = cluster(3, slots=2)
    start_reduce(sim)
    outs = list(sim.sched.map_outputs[0])
    n_maps = len(sim.launched(stage=0))
    sim.lose_executor("e0", node_lost=False)
    assert sim.sched.map_outputs[0] == outs
    sim.run()
    assert sim.ended[0].failure == ""
    assert len(sim.launched(stage=0)) == n_maps
    assert all(a is b for a, b in zip(sim.sched.map_outputs[0], outs))


def test_lost_node_recomputes_the_map_outputs_it_held() -> None:
    sim = cluster(3, slots=2)
    sim.submit(0, 1, [0, 1], map_reduce(6, 2))
    sim.run(until=lambda: bool(sim.running_of(1)))
    outs = list(sim.sched.map_outputs[0])
    on_h0 = [p for p, o in enumerate(outs) if o.node_id == "h0"]
    assert on_h0
    before = len(sim.launched(stage=0))
    sim.lose_node("h0")
    assert [p for p, o in enumerate(sim.sched.map_outputs[0]) if o is None] == on_h0
    sim.run()
    assert sim.ended[0].failure == ""
    rerun = sorted(t.partition for t in sim.launched(stage=0)[before:])
    assert rerun == on_h0
    assert all(o.node_id != "h0" for o in sim.sched.map_outputs[0])


def test_lost_node_during_map_stage_reruns_finished_outputs_there() -> None:
    sim = cluster(2, slots=1)
    eff = sim.submit(0, 1, [0], map_reduce(3, 1))
    first = {t.executor: t for t in sim.launched(eff)}
    sim.finish(first["e0"].task_id)  # its output lives on h0; the next map task starts there
    assert sim.sched.map_outputs[0][first["e0"].partition] is not None
    sim.lose_node("h0")
    assert sim.sched.map_outputs[0][first["e0"].partition] is None
    sim.add_executor("e9", "h9")
    sim.run()
    assert sim.ended[0].failure == ""
    assert all(o.node_id != "h0" for o in sim.sched.map_outputs[0])


def test_lost_node_takes_a_finished_parent_of_a_waiting_stage() -> None:
    # The reduce stage waits for two map stages; the quick one's output is lost with
    # its node while the slow one runs. No reducer ran, so no fetch failure will tell:
    # the scheduler must run the lost map again when the slow one is done.
    sim = Sim(decide=lambda s, t: Plan(10.0 if t.stage_id == 0 else 1.0))
    sim.add_executor("e0", "hA", slots=2)
    sim.add_executor("e1", "hB", slots=2)
    stages = [StageSpec(0, 1, [], 0, [prefer("hB")], "slow"), StageSpec(1, 1, [], 1, [prefer("hA")], "quick"),
              StageSpec(2, 2, [0, 1], None, [], "reduce")]
    sim.submit(0, 2, [0, 1], stages)
    sim.run(until=lambda: sim.sched.map_outputs[1][0] is not None)
    assert sim.sched.map_outputs[1][0].node_id == "hA"
    sim.lose_node("hA")
    assert sim.sched.map_outputs[1] == [None]
    sim.run()
    assert sim.ended[0].failure == ""
    assert len(sim.launched(stage=1)) == 2


def test_fetch_failure_about_an_output_already_recomputed_elsewhere_keeps_it() -> None:
    # Two jobs read one shuffle. Its map output on hA dies with the node; job 1's
    # reducer reports it first and the map runs again elsewhere. Job 0's reducer, of
    # its stage's current attempt, then reports the old output: the new one stays.
    sim = Sim(decide=lambda s, t: Plan(1.0 if t.stage_id == 0 else 30.0))
    for ex, host in (("e0", "hA"), ("e1", "hB"), ("e2", "hC")):
        sim.add_executor(ex, host, slots=2)
    m = StageSpec(0, 2, [], 0, [prefer("hA"), prefer("hB")], "map")
    sim.submit(0, 1, [0], [m, StageSpec(1, 1, [0], None, [prefer("hB")], "r0")])
    sim.submit(1, 2, [0], [m, StageSpec(2, 1, [0], None, [prefer("hC")], "r1")])
    sim.run(until=lambda: bool(sim.running_of(1)) and bool(sim.running_of(2)))
    (r0,), (r1,) = sim.running_of(1), sim.running_of(2)
    sim.lose_node("hA")
    sim.finish(r1)  # fails to fetch map 0 from hA
    sim.run(until=lambda: sim.sched.map_outputs[0][0] is not None)
    new = sim.sched.map_outputs[0][0]
    maps = len(sim.launched(stage=0))
    sim.finish(r0)  # fails to fetch map 0 from hA too
    assert sim.sched.map_outputs[0][0] is new
    assert StageStarted(1, 1, 1) in sim.log[-1][2]  # its inputs are all there: on again at once
    sim.run()
    assert sim.ended[0].failure == "" and sim.ended[1].failure == ""
    assert len(sim.launched(stage=0)) == maps


# --- shared stages ----------------------------------------------------------------------------
def test_second_job_over_the_same_shuffle_skips_the_map_stage() -> None:
    sim = cluster(2)
    sim.submit(0, 1, [0, 1], map_reduce(3, 2))
    sim.run()
    maps = len(sim.launched(stage=0))
    eff = sim.submit(1, 2, [0, 1], map_reduce(3, 2, result_stage=2))
    assert not [t for t in sim.launched(eff) if t.stage_id == 0]
    assert not [s for s in eff if isinstance(s, StageStarted) and s.stage_id == 0]
    assert StageStarted(2, 0, 2) in eff
    sim.run()
    assert sim.ended[1].failure == "" and len(sim.launched(stage=0)) == maps == 3


def test_concurrent_jobs_share_one_run_of_the_map_stage() -> None:
    sim = cluster(2)
    sim.submit(0, 1, [0, 1], map_reduce(3, 2))
    sim.submit(1, 2, [1], map_reduce(3, 2, result_stage=2))
    sim.run()
    assert sim.ended[0].failure == "" and sim.ended[1].failure == ""
    assert sorted(t.partition for t in sim.launched(stage=0)) == [0, 1, 2]
    assert sim.results[1] == Counter({0: 1})


# --- speculation ------------------------------------------------------------------------------
def straggler(partition: int, slow: float, copy: float) -> Decide:
    def decide(sim: Sim, launch: LaunchTask) -> Plan:
        if launch.partition == partition:
            return Plan(copy if launch.speculative else slow)
        return Plan(1.0)
    return decide


@pytest.mark.parametrize("copy_wins", [True, False])
def test_straggler_gets_one_speculative_copy_and_the_loser_is_killed(copy_wins: bool) -> None:
    sim = cluster(4, decide=straggler(3, 10.0, 1.0 if copy_wins else 50.0))
    sim.submit(0, 0, [0, 1, 2, 3], [StageSpec(0, 4, [], None)])
    sim.run()
    assert sim.ended[0].failure == ""
    spec = [t for t in sim.launched() if t.speculative]
    assert len(spec) == 1 and spec[0].partition == 3
    (orig,) = [t for t in sim.launched() if t.partition == 3 and not t.speculative]
    assert spec[0].executor != orig.executor
    when = next(t for t, launch in sim.launch_log if launch.speculative)
    assert 1.5 < when <= 2.0  # 1.5 x the median (1 s) after the first tick past it
    loser = orig if copy_wins else spec[0]
    assert [k.task_id for k in sim.kills] == [loser.task_id]
    assert sim.results[0] == Counter({0: 1, 1: 1, 2: 1, 3: 1})


def test_no_speculation_before_the_quantile_is_done() -> None:
    # Two of four tasks are slow: only half are done, below the 75% quantile.
    def decide(sim: Sim, launch: LaunchTask) -> Plan:
        return Plan(10.0 if launch.partition >= 2 else 1.0)
    sim = cluster(4, decide=decide)
    sim.submit(0, 0, [0, 1, 2, 3], [StageSpec(0, 4, [], None)])
    sim.run()
    assert not [t for t in sim.launched() if t.speculative]


def test_no_speculation_when_disabled() -> None:
    sim = cluster(4, decide=straggler(3, 10.0, 1.0), conf=SchedulerConf(speculation=False))
    sim.submit(0, 0, [0, 1, 2, 3], [StageSpec(0, 4, [], None)])
    sim.run()
    assert not [t for t in sim.launched() if t.speculative]


def test_speculative_map_copy_registers_the_output_once() -> None:
    sim = cluster(4, decide=lambda s, t: Plan(8.0 if t.stage_id == 0 and t.partition == 3 and not t.speculative
                                              else 1.0))
    sim.submit(0, 1, [0], map_reduce(4, 1))
    sim.run()
    assert sim.ended[0].failure == ""
    assert len([t for t in sim.launched() if t.speculative]) == 1
    assert sim.map_completed[(0, 3)] == 1


# --- cancellation -----------------------------------------------------------------------------
def test_cancel_kills_the_jobs_tasks_and_leaves_other_jobs_alone() -> None:
    sim = cluster(4, decide=lambda s, t: Plan(5.0))
    sim.submit(0, 0, [0, 1], [StageSpec(0, 2, [], None)])
    sim.submit(1, 1, [0, 1, 2], [StageSpec(1, 3, [], None)])
    job0 = set(sim.running_of(0))
    job1 = set(sim.running_of(1))
    assert len(job0) == 2 and len(job1) == 2
    eff = sim.cancel(0)
    assert {k.task_id for k in eff if isinstance(k, KillTask)} == job0
    ended = [e for e in eff if isinstance(e, JobEnded)]
    assert len(ended) == 1 and ended[0].job_id == 0 and ended[0].failure.startswith("cancelled")
    assert job1 <= set(sim.running_of(1))
    assert len(sim.launched(eff)) == 1  # a freed slot goes to job 1's third task
    sim.run()
    assert sim.ended[1].failure == "" and sim.results[1] == Counter({0: 1, 1: 1, 2: 1})
    assert sim.cancel(0) == [] or not [e for e in sim.log[-1][2] if isinstance(e, JobEnded)]


def test_cancel_keeps_a_map_stage_another_job_needs() -> None:
    sim = cluster(3, decide=lambda s, t: Plan(2.0))
    sim.submit(0, 1, [0, 1], map_reduce(3, 2))
    sim.submit(1, 2, [0], map_reduce(3, 2, result_stage=2))
    maps = set(sim.running_of(0))
    eff = sim.cancel(0)
    assert not [e for e in eff if isinstance(e, KillTask)]
    assert set(sim.running_of(0)) == maps
    sim.run()
    assert sim.ended[0].failure.startswith("cancelled") and sim.ended[1].failure == ""
    assert not sim.launched(stage=1)


def test_cancel_after_a_fetch_failure_kills_the_failed_attempts_tasks() -> None:
    sim = cluster(3, slots=2, decide=lambda s, t: Plan(1.0 if t.stage_id == 0 else 20.0))
    r0, r1 = start_reduce(sim)
    sim.finish(r0, "fetch", fetch_failed=(0, 0, sim.sched.map_outputs[0][0].node_id))
    sim.run(until=lambda: len(sim.stage_started) == 4)  # map re-run, then reduce attempt 1
    # r1 still runs in the failed attempt, so its partition is run again too.
    assert sim.stage_started[-1] == StageStarted(1, 1, 2)
    sim.cancel(0)
    assert r1 in sim.killed_ids
    assert not sim.running and not sim.sched.running_tasks()


# --- delay scheduling -------------------------------------------------------------------------
def prefer(host: str, rack: str = "", executor: str = "") -> list[Location]:
    return [Location(host=host, executor=executor, rack=rack)]


def one_stage(n: int, prefs: list[list[Location]]) -> list[StageSpec]:
    return [StageSpec(0, n, [], None, prefs, "scan")]


def test_task_waits_for_its_preferred_host_then_goes_anywhere() -> None:
    sim = Sim(decide=lambda s, t: Plan(10.0))
    sim.add_executor("e0", "hA", slots=1)
    sim.add_executor("e1", "hB", slots=1)
    eff = sim.submit(0, 0, [0, 1], one_stage(2, [prefer("hA"), prefer("hA")]))
    assert [(t.partition, t.executor, t.locality) for t in sim.launched(eff)] == [(0, "e0", Level.NODE_LOCAL)]
    assert not sim.launched(sim.tick(2.9))  # e1 is free, but the wait has not expired
    (late,) = sim.launched(sim.tick(0.1))  # t = 3.0 = spark.locality.wait
    assert (late.partition, late.executor, late.locality) == (1, "e1", Level.ANY)


def test_task_takes_its_preferred_host_when_it_frees_up_within_the_wait() -> None:
    sim = Sim(decide=lambda s, t: Plan(2.0 if t.partition == 0 else 10.0))
    sim.add_executor("e0", "hA")
    sim.add_executor("e1", "hB")
    sim.submit(0, 0, [0, 1], one_stage(2, [prefer("hA"), prefer("hA")]))
    sim.run()
    assert [(t.partition, t.executor, t.locality) for t in sim.launched()] == \
        [(0, "e0", Level.NODE_LOCAL), (1, "e0", Level.NODE_LOCAL)]
    assert sim.launch_log[1][0] == 2.0


def test_locality_walks_node_then_rack_then_any() -> None:
    sim = Sim(decide=lambda s, t: Plan(100.0))
    sim.add_executor("e0", "hA", "r0")
    sim.add_executor("e1", "hB", "r0")
    sim.add_executor("e2", "hC", "r1")
    sim.submit(0, 0, [0, 1, 2], one_stage(3, [prefer("hA", "r0")] * 3))
    sim.run(max_steps=100, until=lambda: len(sim.launches) == 3)
    got = [(when, t.executor, t.locality) for when, t in sim.launch_log]
    assert got == [(0.0, "e0", Level.NODE_LOCAL), (3.0, "e1", Level.RACK_LOCAL), (6.0, "e2", Level.ANY)]


def test_no_wait_when_no_executor_is_on_a_preferred_host() -> None:
    sim = Sim()
    sim.add_executor("e0", "hA", "r0")
    sim.add_executor("e1", "hB", "r1")
    eff = sim.submit(0, 0, [0, 1], one_stage(2, [prefer("hZ"), prefer("hY")]))
    assert sorted((t.executor, t.locality) for t in sim.launched(eff)) == [("e0", Level.ANY), ("e1", Level.ANY)]


def test_rack_local_without_wait_when_the_host_is_gone_but_its_rack_is_not() -> None:
    sim = Sim()
    sim.add_executor("e0", "hA", "r0")
    sim.add_executor("e1", "hB", "r1")
    eff = sim.submit(0, 0, [0, 1], one_stage(2, [prefer("hZ", "r1"), prefer("hZ", "r1")]))
    assert [(t.executor, t.locality) for t in sim.launched(eff)] == [("e1", Level.RACK_LOCAL)]


def test_cached_partition_runs_process_local_on_its_executor() -> None:
    sim = Sim()
    for i in range(3):
        sim.add_executor(f"e{i}", "hA", slots=2)  # one host: only the executor tells them apart
    prefs = [prefer("hA", executor="e2"), prefer("hA", executor="e1")]
    eff = sim.submit(0, 0, [0, 1], one_stage(2, prefs))
    assert sorted((t.partition, t.executor, t.locality) for t in sim.launched(eff)) == \
        [(0, "e2", Level.PROCESS_LOCAL), (1, "e1", Level.PROCESS_LOCAL)]


def test_cached_partition_waits_for_its_executor_then_takes_its_host() -> None:
    sim = Sim(decide=lambda s, t: Plan(100.0))
    sim.add_executor("e0", "hA")
    sim.add_executor("e1", "hA")
    sim.add_executor("e2", "hB")
    prefs = [prefer("hA", executor="e0")] * 3
    sim.submit(0, 0, [0, 1, 2], one_stage(3, prefs))
    sim.run(max_steps=100, until=lambda: len(sim.launches) == 3)
    got = [(when, t.executor, t.locality) for when, t in sim.launch_log]
    assert got == [(0.0, "e0", Level.PROCESS_LOCAL), (3.0, "e1", Level.NODE_LOCAL), (6.0, "e2", Level.ANY)]


def test_no_pref_tasks_launch_at_once_beside_waiting_ones() -> None:
    sim = Sim(decide=lambda s, t: Plan(10.0))
    sim.add_executor("e0", "hA")
    sim.add_executor("e1", "hB")
    sim.add_executor("e2", "hC")
    eff = sim.submit(0, 0, [0, 1, 2, 3], one_stage(4, [prefer("hA"), prefer("hA"), [], []]))
    got = sorted((t.partition, t.executor, t.locality) for t in sim.launched(eff))
    assert got[0] == (0, "e0", Level.NODE_LOCAL)
    assert [(p, lv) for p, _, lv in got[1:]] == [(2, Level.NO_PREF), (3, Level.NO_PREF)]


def test_locality_wait_restarts_after_a_local_launch() -> None:
    # hA's slot frees at t=2 and takes a second local task: the wait to go elsewhere
    # restarts from there (t=5), not from the stage's start.
    sim = Sim(decide=lambda s, t: Plan(2.0 if t.partition == 0 else 100.0))
    sim.add_executor("e0", "hA")
    sim.add_executor("e1", "hB")
    sim.submit(0, 0, [0, 1, 2], one_stage(3, [prefer("hA")] * 3))
    sim.run(max_steps=100, until=lambda: len(sim.launches) == 3)
    assert [(when, t.executor) for when, t in sim.launch_log] == [(0.0, "e0"), (2.0, "e0"), (5.0, "e1")]


def test_locality_wait_survives_a_change_in_the_valid_levels() -> None:
    # After waiting out NODE_LOCAL the task set may go RACK_LOCAL. Launching the last
    # task that preferred a live host drops NODE_LOCAL from the valid levels: the
    # task set must stay at RACK_LOCAL (Spark re-finds its level), not slide to ANY.
    sim = Sim(decide=lambda s, t: Plan(100.0))
    sim.add_executor("e0", "hA", "r0")
    sim.add_executor("e1", "hB", "r0")
    sim.add_executor("e2", "hC", "r1")
    prefs = [prefer("hA", "r0"), prefer("hA", "r0"), prefer("hZ", "r0")]
    sim.submit(0, 0, [0, 1, 2], one_stage(3, prefs))
    sim.run(max_steps=100, until=lambda: len(sim.launches) == 3)
    got = [(when, t.partition, t.executor, t.locality) for when, t in sim.launch_log]
    assert got == [(0.0, 0, "e0", Level.NODE_LOCAL), (3.0, 1, "e1", Level.RACK_LOCAL), (6.0, 2, "e2", Level.ANY)]


# --- races with lost nodes ----------------------------------------------------------------------
def test_node_lost_takes_outputs_even_with_another_executor_on_the_node_still_listed() -> None:
    sim = Sim()
    sim.add_executor("e0", "hA")
    sim.add_executor("e1", "hA")
    sim.add_executor("e2", "hB", slots=2)
    sim.submit(0, 1, [0], map_reduce(4, 1))
    sim.run(until=lambda: bool(sim.running_of(1)))
    on_a = [p for p, o in enumerate(sim.sched.map_outputs[0]) if o.node_id == "hA"]
    assert on_a
    # The machine died: the first of its executors to be reported says so.
    sim.lose_executor("e0", node_lost=True)
    sim.dead_hosts.add("hA")
    assert [p for p, o in enumerate(sim.sched.map_outputs[0]) if o is None] == on_a
    sim.lose_executor("e1", node_lost=False)  # say, a heartbeat timeout
    sim.run()
    assert sim.ended[0].failure == ""
    assert len([s for s in sim.stage_started if s.stage_id == 1]) <= 2


def test_late_fetch_failure_from_an_old_attempt_keeps_the_recomputed_output() -> None:
    sim = Sim(decide=lambda s, t: Plan(1.0 if t.stage_id == 0 else 30.0))
    for ex, host in (("e0", "hA"), ("e1", "hB"), ("e2", "hC")):
        sim.add_executor(ex, host, slots=2)
    stages = [StageSpec(0, 3, [], 0, [prefer("hA"), prefer("hB"), prefer("hC")], "map"),
              StageSpec(1, 2, [0], None, [prefer("hB"), prefer("hC")], "reduce")]
    sim.submit(0, 1, [0, 1], stages)
    sim.run(until=lambda: len(sim.running_of(1)) == 2)
    assert [o.node_id for o in sim.sched.map_outputs[0]] == ["hA", "hB", "hC"]
    r0, r1 = sim.running_of(1)
    sim.lose_node("hA")
    sim.finish(r0, "fetch", fetch_failed=(0, 0, "hA"))
    sim.run(until=lambda: sim.sched.map_outputs[0][0] is not None)
    new = sim.sched.map_outputs[0][0]
    assert new.node_id != "hA"
    maps = len(sim.launched(stage=0))
    # r1, of the failed attempt, read the old statuses and reports the same failure.
    sim.finish(r1, "fetch", fetch_failed=(0, 0, "hA"))
    assert sim.sched.map_outputs[0][0] is new
    sim.run()
    assert sim.ended[0].failure == ""
    assert len(sim.launched(stage=0)) == maps
    assert len([s for s in sim.stage_started if s.stage_id == 1]) == 2


def test_late_fetch_failure_from_an_old_attempt_is_ignored_even_on_the_same_host() -> None:
    # The lost output is recomputed on the same (preferred) host, so only the stage
    # attempt tells the late report apart from a new failure (Spark ignores it).
    sim = Sim(decide=lambda s, t: Plan(1.0 if t.stage_id == 0 else 30.0))
    for ex, host in (("e0", "hA"), ("e1", "hB"), ("e2", "hC")):
        sim.add_executor(ex, host, slots=2)
    stages = [StageSpec(0, 3, [], 0, [prefer("hA"), prefer("hB"), prefer("hC")], "map"),
              StageSpec(1, 2, [0], None, [prefer("hB"), prefer("hC")], "reduce")]
    sim.submit(0, 1, [0, 1], stages)
    sim.run(until=lambda: len(sim.running_of(1)) == 2)
    r0, r1 = sim.running_of(1)
    sim.finish(r0, "fetch", fetch_failed=(0, 0, "hA"))
    sim.run(until=lambda: sim.sched.map_outputs[0][0] is not None)
    new = sim.sched.map_outputs[0][0]
    assert new.node_id == "hA"
    maps = len(sim.launched(stage=0))
    eff = sim.finish(r1, "fetch", fetch_failed=(0, 0, "hA"))
    assert sim.sched.map_outputs[0][0] is new
    assert not [e for e in eff if isinstance(e, (StageEnded, StageStarted, LaunchTask))]
    sim.run()
    assert sim.ended[0].failure == ""
    assert len(sim.launched(stage=0)) == maps
    assert len([s for s in sim.stage_started if s.stage_id == 1]) == 2


def test_job_succeeds_when_an_earlier_shuffle_is_lost_after_its_reader_finished() -> None:
    sim = Sim(decide=lambda s, t: Plan(1.0 if t.stage_id != 2 else 5.0))
    sim.add_executor("e0", "h0")
    sim.add_executor("e1", "h1")
    stages = [StageSpec(0, 1, [], 0, [prefer("h1")], "m0"), StageSpec(1, 1, [0], 1, [prefer("h0")], "m1"),
              StageSpec(2, 1, [1], None, [prefer("h0")], "result")]
    sim.submit(0, 2, [0], stages)
    sim.run(until=lambda: bool(sim.running_of(2)))
    sim.lose_node("h1")  # takes shuffle 0, which stage 1 has read already
    assert sim.sched.map_outputs[0] == [None]
    sim.run()
    assert sim.ended[0].failure == ""
    assert len(sim.launched(stage=0)) == 1


# --- random schedules -------------------------------------------------------------------------
@dataclass
class World:
    executors: list[tuple[str, str, str, int]]  # id, host, rack, slots
    stages: dict[int, StageSpec]
    jobs: list[tuple[int, list[int]]]  # final stage, partitions
    ops: list[str]
    p_fail: float
    p_fetch: float
    p_straggle: float
    speculation: bool
    failures: int


@st.composite
def worlds(draw: st.DrawFn) -> World:
    n_hosts = draw(st.integers(2, 4))
    n_racks = draw(st.integers(0, 2))
    executors = []
    for h in range(n_hosts):
        for k in range(draw(st.integers(1, 2))):
            rack = f"r{h % n_racks}" if n_racks else ""
            executors.append((f"e{h}{k}", f"h{h}", rack, draw(st.integers(1, 2))))
    hosts = [f"h{h}" for h in range(n_hosts + 1)]  # one host with no executor

    def prefs(n: int) -> list[list[Location]]:
        out = []
        for _ in range(n):
            chosen = draw(st.lists(st.sampled_from(hosts), max_size=2, unique=True))
            out.append([Location(host=h, rack=f"r{int(h[1:]) % n_racks}" if n_racks else "") for h in chosen])
        return out

    n0 = draw(st.integers(1, 5))
    n1 = draw(st.integers(1, 4))
    stages = {0: StageSpec(0, n0, [], 0, prefs(n0), "m0"),
              1: StageSpec(1, n1, draw(st.sampled_from([[], [0]])), 1, prefs(n1), "m1")}
    jobs = []
    for j in range(draw(st.integers(1, 3))):
        sid = 10 + j
        n = draw(st.integers(1, 5))
        parents = draw(st.sampled_from([[0], [1], [0, 1], [1], []]))
        stages[sid] = StageSpec(sid, n, parents, None, prefs(n), f"job{j}")
        parts = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
        jobs.append((sid, parts))
    ops = draw(st.lists(st.sampled_from(["step"] * 10 + ["lose", "node", "add", "cancel", "stale", "submit"]),
                        min_size=20, max_size=80))
    return World(executors, stages, jobs, ops, draw(st.sampled_from([0.05, 0.15, 0.3, 0.5])),
                 draw(st.sampled_from([0.15, 0.3, 0.5])), draw(st.sampled_from([0.0, 0.15, 0.3])), draw(st.booleans()),
                 draw(st.integers(0, 20)))


def job_stages(world: World, final: int) -> list[StageSpec]:
    out, stack = [], [final]
    while stack:
        sid = stack.pop()
        if all(s.stage_id != sid for s in out):
            out.append(world.stages[sid])
            stack.extend(world.stages[sid].parents)
    return out[::-1]


def run_world(world: World, rng: random.Random) -> Sim:
    """Play a random world to its end; check every job ended once, as predicted."""
    budget = [world.failures]  # injected failures left: then tasks only fail for lost inputs

    def decide(sim: Sim, launch: LaunchTask) -> Plan:
        duration = rng.uniform(5.0, 15.0) if rng.random() < world.p_straggle else rng.uniform(0.5, 2.0)
        if budget[0] > 0 and rng.random() < world.p_fail:
            budget[0] -= 1
            return Plan(duration / 2, "fail")
        if budget[0] > 0 and world.stages[launch.stage_id].parents and rng.random() < world.p_fetch:
            budget[0] -= 1
            return Plan(duration / 2, "fetch")
        return Plan(duration)

    conf = SchedulerConf(locality_wait_s=1.0, speculation=world.speculation)
    sim = Sim(conf=conf, decide=decide)
    sim.rng = rng
    for ex, host, rack, slots in world.executors:
        sim.add_executor(ex, host, rack, slots)
    to_submit = list(enumerate(world.jobs))
    fresh = iter(range(100, 10_000))

    def submit_next() -> None:
        j, (final, parts) = to_submit.pop(0)
        sim.submit(j, final, parts, job_stages(world, final))

    submit_next()
    for op in world.ops:
        if op == "step":
            sim.step()
        elif op == "lose" and sim.execs:
            sim.lose_executor(rng.choice(sorted(sim.execs)))
        elif op == "node" and sim.execs:
            sim.lose_node(rng.choice(sorted({p.host for p in sim.execs.values()})))
        elif op == "add":
            live = sorted({p.host for p in sim.execs.values()})
            n = next(fresh)
            host = rng.choice(live) if live and rng.random() < 0.5 else f"h{n}"
            rack = next((p.rack for p in sim.execs.values() if p.host == host), rng.choice(["", "r0", "r1"]))
            sim.add_executor(f"x{n}", host, rack, rng.randint(1, 2))
        elif op == "cancel" and sim.active:
            sim.cancel(rng.choice(sorted(sim.active)))
        elif op == "stale" and sim.stale:
            tid = sim.stale.pop(rng.randrange(len(sim.stale)))
            launch = sim.launches[tid]
            if rng.random() < 0.5:
                sim.send(TaskFailed(tid, "killed", killed=True))
            else:
                sim.send(TaskSucceeded(tid, MapStatus(sim.execs[launch.executor].host, tid)
                                       if launch.executor in sim.execs else None))
        elif op == "submit" and to_submit:
            submit_next()
    while to_submit:
        submit_next()
    while len(sim.execs) < 2:
        n = next(fresh)
        sim.add_executor(f"x{n}", f"h{n}", "r0", 2)
    sim.run(max_steps=5000)
    assert sorted(sim.ended) == list(range(len(world.jobs)))
    ends = [e.job_id for e in all_effects(sim) if isinstance(e, JobEnded)]
    assert sorted(ends) == sorted(set(ends))
    for j, end in sim.ended.items():
        if not end.failure:
            assert sorted(sim.results[j]) == list(range(len(world.jobs[j][1])))
    assert not sim.running and not sim.sched.running_tasks()
    assert not sim.sched.task_sets and not sim.sched.waiting and not sim.sched.jobs
    assert all(not b for b in sim.sched.busy.values())
    return sim


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.randoms(use_true_random=False))
def test_random_schedules_keep_the_invariants_and_end_every_job_once(world: World, rng: random.Random) -> None:
    sim = run_world(world, rng)
    evs = [ev for _, ev, _ in sim.log]
    event(f"jobs failed: {sum(1 for e in sim.ended.values() if e.failure and 'cancelled' not in e.failure)}")
    event(f"fetch failures: {min(3, sum(1 for e in evs if isinstance(e, TaskFailed) and e.fetch_failed))}")
    event(f"speculative: {bool([t for t in sim.launched() if t.speculative])}")
    event(f"stage attempts > 1: {any(s.attempt for s in sim.stage_started)}")
    event(f"events: {len(sim.log) // 100 * 100}")

