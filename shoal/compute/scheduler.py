"""The job scheduler (pure): Spark's DAGScheduler and TaskSetManagers in one state
machine. ``handle(event, now)`` returns effects; it never does I/O.

- A job runs its result stage after the map stages it needs; a map stage whose
  shuffle outputs all exist is skipped (shared across jobs, as Spark does).
- Free slots take pending tasks by locality with delay scheduling (locality.py).
- A failed task is retried, on another executor when there is one, until it has
  failed ``max_task_failures`` times; then its stage and the jobs needing it fail.
- A fetch failure unregisters the lost map output, re-runs the map tasks that
  produced it, then the reduce stage (``max_stage_attempts`` consecutive times).
- A lost node takes its shuffle outputs with it; an executor alone does not (the
  node's shuffle service keeps serving them).
- Speculation: when ``speculation_quantile`` of a stage's tasks are done, a task
  running longer than ``speculation_multiplier`` x the median gets a copy on another
  executor; the first attempt to succeed wins and the other is killed.
- Slow start (Hadoop MapReduce): a stage with ``StageSpec.slow_start`` starts once
  that fraction of its parents' map outputs exists; its tasks yield slots to maps
  (scheduler_slow_start.py has the rules).
"""

from __future__ import annotations

import statistics
from typing import Any

from shoal.compute.locality import ExecutorPlace, Level, allowed_level, level_of, note_launch, valid_levels
from shoal.compute.scheduler_events import (  # noqa: F401  (re-exported)
    Effect,
    Event,
    ExecutorAdded,
    ExecutorLost,
    JobCancelled,
    JobEnded,
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
from shoal.compute.scheduler_slow_start import SlowStart
from shoal.compute.scheduler_state import Job, Stage, TaskAttempt, TaskSet  # noqa: F401  (re-exported)


class JobScheduler(SlowStart):
    """All jobs, stages, task sets and executors of one driver."""

    def __init__(self, conf: SchedulerConf | None = None) -> None:
        self.conf = conf or SchedulerConf()
        self.stages: dict[int, Stage] = {}
        self.shuffle_stage: dict[int, int] = {}  # shuffle id -> map stage id
        self.map_outputs: dict[int, list[Any]] = {}  # shuffle id -> status per map partition
        self.outputs_ready: dict[int, float] = {}  # shuffle id -> when its last output registered
        self.jobs: dict[int, Job] = {}
        self.task_sets: dict[int, TaskSet] = {}  # stage id -> its live task set
        self.waiting: set[int] = set()  # stages waiting for parents
        self.executors: dict[str, ExecutorPlace] = {}
        self.slots: dict[str, int] = {}
        self.busy: dict[str, set[int]] = {}
        self.attempts: dict[int, TaskAttempt] = {}
        self._next_task = 0
        self._out: list[Effect] = []

    # --- entry point ---------------------------------------------------------------------
    def handle(self, event: Event, now: float) -> list[Effect]:
        self._out = []
        handler = getattr(self, "_on_" + type(event).__name__)
        handler(event, now)
        if isinstance(event, (TaskSucceeded, TaskFailed, ExecutorLost)):
            # Map outputs may have registered (or been lost): slow-start thresholds.
            self._recheck_slow_starts(now)
        self._schedule(now)
        # Preemption frees slots for maps: only non-early tasks take them now, so each
        # round kills at least one early task and the loop ends.
        while self._preempt(now):
            self._schedule(now, early=False)
        out, self._out = self._out, []
        return out

    # --- queries -------------------------------------------------------------------------
    def stage_available(self, stage_id: int) -> bool:
        spec = self.stages[stage_id].spec
        if spec.shuffle_id is None:
            return False
        outs = self.map_outputs.get(spec.shuffle_id)
        return outs is not None and all(o is not None for o in outs)

    def missing_partitions(self, stage_id: int) -> list[int]:
        spec = self.stages[stage_id].spec
        if spec.shuffle_id is not None:
            outs = self.map_outputs.setdefault(spec.shuffle_id, [None] * spec.num_partitions)
            return [p for p, o in enumerate(outs) if o is None]
        missing: list[int] = []
        for job_id in sorted(self.stages[stage_id].jobs):
            job = self.jobs[job_id]
            if job.final_stage == stage_id:
                missing.extend(p for p in job.partitions if p not in job.finished)
        return sorted(set(missing))

    def running_tasks(self) -> list[TaskAttempt]:
        return [a for a in self.attempts.values() if a.state == "running"]

    # --- events --------------------------------------------------------------------------
    def _on_JobSubmitted(self, ev: JobSubmitted, now: float) -> None:
        for spec in ev.stages:
            if spec.stage_id not in self.stages:
                self.stages[spec.stage_id] = Stage(spec)
                if spec.shuffle_id is not None:
                    self.shuffle_stage[spec.shuffle_id] = spec.stage_id
                    self.map_outputs.setdefault(spec.shuffle_id, [None] * spec.num_partitions)
        job = Job(ev.job_id, ev.final_stage, list(ev.partitions))
        self.jobs[ev.job_id] = job
        for sid in self._ancestors(ev.final_stage):
            self.stages[sid].jobs.add(ev.job_id)
        if not job.partitions:
            self._finish_job(job, "")
            return
        self._submit_stage(ev.final_stage, now)

    def _on_JobCancelled(self, ev: JobCancelled, now: float) -> None:
        job = self.jobs.get(ev.job_id)
        if job is not None:
            self._finish_job(job, ev.reason or "cancelled")

    def _on_ExecutorAdded(self, ev: ExecutorAdded, now: float) -> None:
        self.executors[ev.executor] = ExecutorPlace(ev.executor, ev.host, ev.rack)
        self.slots[ev.executor] = ev.slots
        self.busy.setdefault(ev.executor, set())

    def _on_ExecutorLost(self, ev: ExecutorLost, now: float) -> None:
        place = self.executors.pop(ev.executor, None)
        self.slots.pop(ev.executor, None)
        for task_id in sorted(self.busy.pop(ev.executor, set())):
            self._task_failed(task_id, f"executor {ev.executor} lost: {ev.reason}", None, now, counts=True)
        if ev.node_lost and place is not None:
            # The machine is gone, whether or not its other executors were reported yet.
            self._node_outputs_lost(place.host, now)

    def _on_TaskSucceeded(self, ev: TaskSucceeded, now: float) -> None:
        att = self.attempts.get(ev.task_id)
        if att is None or att.state != "running":
            return
        att.state, att.end = "succeeded", now
        self._release(att)
        stage = self.stages.get(att.stage_id)
        ts = self.task_sets.get(att.stage_id)
        if ts is not None and ts.attempt != att.stage_attempt and att.partition in ts.pending:
            # A straggler of an earlier attempt of this stage finished the partition.
            ts.pending.remove(att.partition)
            ts.done.add(att.partition)
        if ts is not None and ts.attempt == att.stage_attempt:
            running = ts.running.get(att.partition, [])
            if att.task_id in running:
                running.remove(att.task_id)
            if att.partition not in ts.done:
                ts.done.add(att.partition)
                ts.durations.append(now - self._run_start(att))
            for other in ts.running.pop(att.partition, []):
                self._kill(other, "another attempt of this task succeeded", now)
        if stage is None:
            return
        spec = stage.spec
        if spec.shuffle_id is not None:
            outs = self.map_outputs[spec.shuffle_id]
            if outs[att.partition] is None:
                outs[att.partition] = ev.map_status
                if all(o is not None for o in outs):
                    self.outputs_ready[spec.shuffle_id] = now
                self._out.append(TaskCompleted(att.task_id, None, att.partition))
            self._check_stage_done(spec.stage_id, now)
            return
        for job_id in sorted(stage.jobs):
            job = self.jobs.get(job_id)
            if job is None or job.final_stage != spec.stage_id or att.partition not in job.partitions:
                continue
            if att.partition in job.finished:
                continue
            job.finished.add(att.partition)
            self._out.append(TaskCompleted(att.task_id, job_id, job.partitions.index(att.partition)))
            if len(job.finished) == len(set(job.partitions)):
                self._finish_job(job, "")
        self._check_stage_done(spec.stage_id, now)

    def _on_TaskFailed(self, ev: TaskFailed, now: float) -> None:
        att = self.attempts.get(ev.task_id)
        if att is None or att.state != "running":
            return
        if ev.fetch_failed is not None:
            self._fetch_failed(att, ev, now)
            return
        self._task_failed(ev.task_id, ev.reason, ev.error, now, counts=ev.counts and not ev.killed,
                          killed=ev.killed)

    def _on_Tick(self, ev: Tick, now: float) -> None:
        if self.conf.speculation:
            self._find_speculatable(now)

    # --- stages --------------------------------------------------------------------------
    def _ancestors(self, stage_id: int) -> list[int]:
        seen: list[int] = []
        stack = [stage_id]
        while stack:
            sid = stack.pop()
            if sid in seen:
                continue
            seen.append(sid)
            stack.extend(self.stages[sid].spec.parents)
        return seen

    def _missing_parents(self, stage_id: int) -> list[int]:
        return [p for p in self.stages[stage_id].spec.parents if not self.stage_available(p)]

    def _submit_stage(self, stage_id: int, now: float) -> None:
        spec = self.stages[stage_id].spec
        if stage_id in self.task_sets and not self.task_sets[stage_id].zombie:
            if spec.slow_start is not None:
                # Its tasks may wait for a parent output lost since it started early.
                for parent in self._missing_parents(stage_id):
                    self._submit_stage(parent, now)
            return
        missing = self._missing_parents(stage_id)
        if missing:
            self.waiting.add(stage_id)
            for parent in missing:
                self._submit_stage(parent, now)
            if not self.slow_start_due(stage_id):
                return
        self.waiting.discard(stage_id)
        parts = self.missing_partitions(stage_id)
        if not parts:
            self._check_waiting(now)
            return
        stage = self.stages[stage_id]
        stage.attempts += 1
        ts = TaskSet(stage_id, stage.attempts - 1, parts, list(parts))
        ts.delay.last_launch = now
        self.task_sets[stage_id] = ts
        done, total = self.parents_progress(stage_id) if spec.slow_start is not None else (0, 0)
        self._out.append(StageStarted(stage_id, ts.attempt, len(parts), bool(missing), done, total))

    def _check_stage_done(self, stage_id: int, now: float) -> None:
        ts = self.task_sets.get(stage_id)
        if ts is not None and ts.zombie:
            # A fetch failure already ended this attempt: its last straggler finishing
            # is no success (the stage waits in ``waiting`` to run again).
            if not any(ts.running.values()):
                del self.task_sets[stage_id]
            return
        if ts is None or ts.pending or any(ts.running.values()):
            return
        stage = self.stages[stage_id]
        if stage.spec.shuffle_id is not None and not self.stage_available(stage_id):
            # Outputs were lost while it ran (a node died): run the missing ones again.
            missing = self.missing_partitions(stage_id)
            ts.pending.extend(p for p in missing if p not in ts.pending)
            return
        del self.task_sets[stage_id]
        stage.consecutive_failures = 0
        self._out.append(StageEnded(stage_id, ts.attempt))
        self._check_waiting(now)

    def _check_waiting(self, now: float) -> None:
        for sid in sorted(self.waiting):
            if sid in self.stages and self.stages[sid].jobs:
                # Submits it, or again the parents it still misses: a lost node may have
                # taken the outputs of a parent that had finished, and no fetch failure
                # will report that while this stage waits.
                self._submit_stage(sid, now)

    def _abort_stage(self, stage_id: int, reason: str, error: Any, now: float) -> None:
        stage = self.stages[stage_id]
        ts = self.task_sets.pop(stage_id, None)
        self._out.append(StageEnded(stage_id, ts.attempt if ts else stage.attempts - 1, reason))
        for job_id in sorted(stage.jobs):
            job = self.jobs.get(job_id)
            if job is not None:
                self._finish_job(job, reason, error)

    def _finish_job(self, job: Job, failure: str, error: Any = None) -> None:
        self.jobs.pop(job.job_id, None)
        unneeded: set[int] = set()
        for sid in self._ancestors(job.final_stage):
            stage = self.stages.get(sid)
            if stage is None:
                continue
            stage.jobs.discard(job.job_id)
            if not stage.jobs:
                unneeded.add(sid)
                self.waiting.discard(sid)
                ts = self.task_sets.pop(sid, None)
                # A zombie (fetch-failed) attempt has had its StageEnded already.
                if ts is not None and not ts.zombie and \
                        not any(isinstance(e, StageEnded) and e.stage_id == sid for e in self._out):
                    self._out.append(StageEnded(sid, ts.attempt, failure))
        # Kill every attempt still running for a stage no job needs now: the live task
        # set's, an aborted one's, and stragglers of attempts a fetch failure replaced.
        for tid in sorted(t for tids in self.busy.values() for t in tids):
            if self.attempts[tid].stage_id in unneeded:
                self._kill(tid, "job ended", None)
        # A result stage belongs to its job alone: forget it (map stages stay, for reuse).
        for sid in unneeded:
            if self.stages[sid].spec.shuffle_id is None:
                del self.stages[sid]
        self._out.append(JobEnded(job.job_id, failure, error))

    # --- failures ------------------------------------------------------------------------
    def _task_failed(self, task_id: int, reason: str, error: Any, now: float, *, counts: bool,
                     killed: bool = False) -> None:
        att = self.attempts[task_id]
        if att.state != "running":
            return
        att.state, att.end, att.reason = ("killed" if killed else "failed"), now, reason
        self._release(att)
        ts = self.task_sets.get(att.stage_id)
        if ts is None or ts.attempt != att.stage_attempt:
            return
        running = ts.running.get(att.partition, [])
        if task_id in running:
            running.remove(task_id)
        if att.partition in ts.done:
            return
        if counts and not ts.zombie:  # a fetch failure ended this attempt: Spark counts no more
            ts.failures[att.partition] = ts.failures.get(att.partition, 0) + 1
            ts.failed_on.setdefault(att.partition, set()).add(att.executor)
            if ts.failures[att.partition] >= self.conf.max_task_failures:
                msg = (f"task {att.partition} in stage {att.stage_id}.{att.stage_attempt} failed "
                       f"{ts.failures[att.partition]} times; most recent failure on executor "
                       f"{att.executor}: {reason}")
                self._abort_stage(att.stage_id, msg, error, now)
                return
        if not running and att.partition not in ts.pending and not ts.zombie:
            ts.pending.append(att.partition)
        self._check_stage_done(att.stage_id, now)

    def _fetch_failed(self, att: TaskAttempt, ev: TaskFailed, now: float) -> None:
        att.state, att.end, att.reason = "failed", now, ev.reason
        self._release(att)
        shuffle_id, map_index, node = ev.fetch_failed  # type: ignore[misc]
        stage = self.stages.get(att.stage_id)
        ts = self.task_sets.get(att.stage_id)
        if stage is None or att.stage_attempt != stage.attempts - 1:
            # Like Spark, ignore a fetch failure from an older attempt of the stage: a
            # newer one runs (or ran) with newer map outputs, which this must not drop.
            return
        if ts is not None and ts.attempt == att.stage_attempt:
            running = ts.running.get(att.partition, [])
            if att.task_id in running:
                running.remove(att.task_id)
            if not ts.zombie:
                ts.zombie = True
                stage.consecutive_failures += 1
                if stage.consecutive_failures >= self.conf.max_stage_attempts:
                    # _abort_stage ends this attempt (one StageEnded, with the reason).
                    self._abort_stage(att.stage_id, f"stage {att.stage_id} failed {stage.consecutive_failures} "
                                      f"times on fetch failures; most recent: {ev.reason}", None, now)
                    return
                self._out.append(StageEnded(att.stage_id, ts.attempt, f"fetch failed: {ev.reason}"))
        outs = self.map_outputs.get(shuffle_id)
        if outs is not None and 0 <= map_index < len(outs):
            # Only the output the reader failed to get: a late report from an older
            # attempt must not drop one recomputed elsewhere since (Spark checks the
            # location too).
            cur = outs[map_index]
            if cur is not None and getattr(cur, "node_id", node) == node:
                outs[map_index] = None
        if ev.node_lost and node:
            self._node_outputs_lost(node, now)
        map_stage = self.shuffle_stage.get(shuffle_id)
        if map_stage is not None:
            mts = self.task_sets.get(map_stage)
            if mts is not None and not mts.zombie:
                for p in self.missing_partitions(map_stage):
                    if p not in mts.pending and not mts.running.get(p):
                        mts.done.discard(p)
                        mts.pending.append(p)
        # The reduce stage waits for its parents again, then runs its missing tasks.
        self.waiting.add(att.stage_id)
        if ts is not None and ts.zombie and not any(ts.running.values()):
            self.task_sets.pop(att.stage_id, None)
        for parent in self._missing_parents(att.stage_id):
            self._submit_stage(parent, now)
        self._check_waiting(now)

    def _node_outputs_lost(self, host: str, now: float) -> None:
        for shuffle_id, outs in self.map_outputs.items():
            changed = False
            for i, st in enumerate(outs):
                if st is not None and getattr(st, "node_id", None) == host:
                    outs[i] = None
                    changed = True
            sid = self.shuffle_stage.get(shuffle_id)
            if changed and sid is not None and sid in self.task_sets:
                ts = self.task_sets[sid]
                for p in self.missing_partitions(sid):
                    if p not in ts.pending and not ts.running.get(p):
                        ts.done.discard(p)
                        ts.pending.append(p)

    # --- launching -----------------------------------------------------------------------
    def _release(self, att: TaskAttempt) -> None:
        busy = self.busy.get(att.executor)
        if busy is not None:
            busy.discard(att.task_id)

    def _kill(self, task_id: int, reason: str, now: float | None) -> None:
        att = self.attempts.get(task_id)
        if att is None or att.state != "running":
            return
        att.state, att.reason = "killed", reason
        att.end = now if now is not None else att.start
        self._release(att)
        self._out.append(KillTask(task_id, att.executor, reason))

    def _free_executors(self) -> list[ExecutorPlace]:
        free = [p for e, p in sorted(self.executors.items()) if len(self.busy.get(e, ())) < self.slots.get(e, 0)]
        # Spread work: least loaded executors first.
        return sorted(free, key=lambda p: len(self.busy.get(p.executor, ())))

    def _schedule(self, now: float, early: bool = True) -> None:
        """Offer free slots to task sets; ``early``: early task sets get them too."""
        if not self.task_sets or not self._free_executors():
            return
        waits = {Level.PROCESS_LOCAL: self.conf.locality_wait_s, Level.NODE_LOCAL: self.conf.locality_wait_s,
                 Level.NO_PREF: 0.0, Level.RACK_LOCAL: self.conf.locality_wait_s}
        # Launching changes no map output: which stages are early holds for this pass.
        early_ids = self.early_stages()
        n_early = len(self._early_running(early_ids)) if early_ids else 0
        progress = True
        while progress:
            progress = False
            for place in self._free_executors():
                for ts in self._ordered_task_sets(early_ids):
                    is_early = ts.stage_id in early_ids
                    if is_early and not (early and self._early_may_launch(place, n_early, early_ids)):
                        break  # the rest are early too
                    if self._launch_one(ts, place, waits, now):
                        n_early += is_early
                        progress = True
                        break

    def _ordered_task_sets(self, early: set[int]) -> list[TaskSet]:
        """By job, then stage; early task sets last (maps before early reducers)."""
        def first_job(ts: TaskSet) -> int:
            jobs = self.stages[ts.stage_id].jobs
            return min(jobs) if jobs else 1 << 60

        live = [ts for ts in self.task_sets.values() if not ts.zombie]
        return sorted(live, key=lambda ts: (ts.stage_id in early, first_job(ts), ts.stage_id))

    def _launch_one(self, ts: TaskSet, place: ExecutorPlace, waits: dict, now: float) -> bool:
        spec = self.stages[ts.stage_id].spec
        prefs = spec.prefs
        places = list(self.executors.values())
        if ts.pending:
            levels = valid_levels((prefs[p] if p < len(prefs) else [] for p in ts.pending), places)
            allowed = allowed_level(ts.delay, levels, waits, now)
            best: tuple[Level, int] | None = None
            for idx, p in enumerate(ts.pending):
                if self._shuns(ts, p, place.executor):
                    continue
                lv = level_of(prefs[p] if p < len(prefs) else [], place)
                if lv <= allowed or lv == Level.NO_PREF:
                    if best is None or lv < best[0]:
                        best = (lv, idx)
                        if lv == Level.PROCESS_LOCAL:
                            break
            if best is not None:
                lv, idx = best
                p = ts.pending.pop(idx)
                if lv != Level.NO_PREF:
                    note_launch(ts.delay, levels, lv, now)
                self._start(ts, p, place, lv, False, now)
                return True
            return False
        # Nothing pending: a speculative copy of a straggler, never beside its original.
        for p in sorted(ts.speculated):
            tids = ts.running.get(p, [])
            if p in ts.done or len(tids) != 1:
                continue
            orig = self.attempts[tids[0]]
            if orig.executor == place.executor:
                continue
            if orig.host == place.host and any(h.host != orig.host for h in places):
                continue
            lv = level_of(prefs[p] if p < len(prefs) else [], place)
            self._start(ts, p, place, lv, True, now)
            return True
        return False

    def _start(self, ts: TaskSet, partition: int, place: ExecutorPlace, level: Level, speculative: bool,
               now: float) -> None:
        task_id = self._next_task
        self._next_task += 1
        attempt = ts.next_attempt.get(partition, 0)
        ts.next_attempt[partition] = attempt + 1
        att = TaskAttempt(task_id, ts.stage_id, ts.attempt, partition, attempt, place.executor, place.host,
                          level, speculative, now)
        self.attempts[task_id] = att
        ts.running.setdefault(partition, []).append(task_id)
        self.busy.setdefault(place.executor, set()).add(task_id)
        self._out.append(LaunchTask(task_id, ts.stage_id, ts.attempt, partition, attempt, place.executor,
                                    level, speculative))

    def _run_start(self, att: TaskAttempt) -> float:
        """When a task began its own work: a slow-started reduce task waits for the
        maps first, and that wait is not a straggler's slowness."""
        spec = self.stages[att.stage_id].spec
        if spec.slow_start is None:
            return att.start
        ready = [self.outputs_ready.get(self.stages[p].spec.shuffle_id, att.start)  # type: ignore[arg-type]
                 for p in spec.parents if p in self.stages]
        return max([att.start, *ready])

    def _find_speculatable(self, now: float) -> None:
        c = self.conf
        for ts in self.task_sets.values():
            if ts.zombie or not ts.durations or self.is_early(ts.stage_id):
                continue  # an early task set's tasks wait for maps: none is a straggler
            if not self.stages[ts.stage_id].spec.speculation:
                continue
            if len(ts.done) < c.speculation_quantile * len(ts.partitions) or len(ts.done) == 0:
                continue
            threshold = max(c.speculation_min_s, c.speculation_multiplier * statistics.median(ts.durations))
            for p, tids in ts.running.items():
                if p in ts.done or p in ts.speculated or len(tids) != 1:
                    continue
                if now - self._run_start(self.attempts[tids[0]]) > threshold:
                    ts.speculated.add(p)
