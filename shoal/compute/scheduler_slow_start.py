"""Hadoop MapReduce's reduce slow start for the job scheduler (pure).

``StageSpec.slow_start`` (mapreduce.job.reduce.slowstart.completedmaps) creates a
stage's task set once that fraction of every parent's map outputs exists: its reduce
tasks launch and fetch map outputs while the other maps still run (the executor polls
the driver for new ones) and reduce once all exist.

- A stage is *early* while it has slow start and a parent lacks an output. That is
  computed, never stored: outputs can be lost again (a node dies, a fetch fails).
- Map tasks come first: early task sets are offered slots after all others.
- Early tasks hold at most all slots but one, so maps always have somewhere to run,
  and never take the last free slot that a pending task of a non-early ancestor (a
  *hungry* map stage) could use.
- Reducer preemption (Hadoop's RMContainerAllocator): while a hungry map stage (pending
  tasks, or a straggler waiting for its speculative copy) has no free slot it could use, the newest early task is killed ("preempted"): the newest
  on an executor the map could use (a retry shuns where it failed), else, when no
  slot is free at all, the newest. The newest are killed too while early tasks hold
  more than all slots but one (an executor was lost). A preempted task is no
  failure: its partition is pending again.
"""

from __future__ import annotations

from typing import Any

from shoal.compute.locality import ExecutorPlace
from shoal.compute.scheduler_state import Stage, TaskAttempt, TaskSet


class SlowStart:
    """The slow-start rules, mixed into JobScheduler: they read its state and use its
    ``stage_available``, ``_ancestors``, ``_kill``, ``_submit_stage`` and
    ``_check_stage_done``."""

    stages: dict[int, Stage]
    map_outputs: dict[int, list[Any]]
    task_sets: dict[int, TaskSet]
    waiting: set[int]
    executors: dict[str, ExecutorPlace]
    slots: dict[str, int]
    busy: dict[str, set[int]]
    attempts: dict[int, TaskAttempt]

    # --- queries -------------------------------------------------------------------------
    def parents_progress(self, stage_id: int) -> tuple[int, int]:
        """Map outputs available, and in all, over the stage's parents."""
        done = total = 0
        for parent in self.stages[stage_id].spec.parents:
            pspec = self.stages[parent].spec
            outs = self.map_outputs.get(pspec.shuffle_id, []) if pspec.shuffle_id is not None else []
            done += sum(1 for o in outs if o is not None)
            total += len(outs) if pspec.shuffle_id is not None else pspec.num_partitions
        return done, total

    def slow_start_due(self, stage_id: int) -> bool:
        """Whether a slow-start stage may start: every parent has at least the
        ``slow_start`` fraction of its map outputs (Hadoop counts completed maps)."""
        spec = self.stages[stage_id].spec
        if spec.slow_start is None:
            return False
        for parent in spec.parents:
            shuffle_id = self.stages[parent].spec.shuffle_id
            if shuffle_id is None:
                return False  # no map outputs to fetch early: wait for it
            outs = self.map_outputs.get(shuffle_id, [])
            if outs and sum(1 for o in outs if o is not None) / len(outs) < spec.slow_start:
                return False
        return True

    def is_early(self, stage_id: int) -> bool:
        """A slow-start stage while some parent output is missing."""
        stage = self.stages.get(stage_id)
        if stage is None or stage.spec.slow_start is None:
            return False
        return any(not self.stage_available(p) for p in stage.spec.parents)  # type: ignore[attr-defined]

    def early_stages(self) -> set[int]:
        """Early stages with a task set or a running task (a fetch-failed attempt's)."""
        ids = set(self.task_sets) | {self.attempts[t].stage_id for tids in self.busy.values() for t in tids}
        return {sid for sid in ids if self.is_early(sid)}

    def _early_running(self, early: set[int]) -> list[TaskAttempt]:
        """Running tasks of early stages, oldest first."""
        atts = [self.attempts[t] for tids in self.busy.values() for t in tids]
        return sorted((a for a in atts if a.stage_id in early), key=lambda a: (a.start, a.task_id))

    def _shuns(self, ts: TaskSet, partition: int, executor: str) -> bool:
        """A retry avoids the executors it failed on while there is anywhere else to go."""
        failed = ts.failed_on.get(partition, ())
        return executor in failed and len(self.executors) > 1 and any(e not in failed for e in self.executors)

    def _hungry(self, early: set[int]) -> list[TaskSet]:
        """Live task sets of non-early ancestors of early stages that want a slot: for
        pending tasks, or for the speculative copy of a straggler (Hadoop preempts
        reducers for those too: a straggling map would hold up every reducer)."""
        ancestors: set[int] = set()
        for sid in early:
            ancestors.update(self._ancestors(sid))  # type: ignore[attr-defined]
        out = [self.task_sets.get(sid) for sid in sorted(ancestors - early)]
        return [ts for ts in out if ts is not None and not ts.zombie and (ts.pending or self._stragglers(ts))
                and any(self._usable(ts, ex) for ex in self.executors)]

    def _stragglers(self, ts: TaskSet) -> list[TaskAttempt]:
        """The lone running attempts of partitions marked for a speculative copy."""
        out = []
        for p in sorted(ts.speculated):
            tids = ts.running.get(p, [])
            if p not in ts.done and len(tids) == 1:
                out.append(self.attempts[tids[0]])
        return out

    def _usable(self, ts: TaskSet, executor: str) -> bool:
        """Whether a pending task, or a straggler's copy, of ``ts`` may run on
        ``executor`` (a copy never beside its original: same rule as launching)."""
        if any(not self._shuns(ts, p, executor) for p in ts.pending):
            return True
        place = self.executors.get(executor)
        if place is None:
            return False
        for orig in self._stragglers(ts):
            if orig.executor == executor:
                continue
            if orig.host == place.host and any(e.host != orig.host for e in self.executors.values()):
                continue
            return True
        return False

    def _slot_for(self, ts: TaskSet, taken: str | None) -> bool:
        """Whether ``ts`` could use some free slot (beside one on ``taken``).
        Locality is no obstacle: its wait runs out."""
        for ex in self.executors:
            free = self.slots.get(ex, 0) - len(self.busy.get(ex, ())) - (1 if ex == taken else 0)
            if free > 0 and self._usable(ts, ex):
                return True
        return False

    def _early_may_launch(self, place: ExecutorPlace, n_early: int, early: set[int]) -> bool:
        """The cap, and the last usable slot of every hungry map stage stays free
        (taking it would only get the task preempted at once)."""
        if n_early >= sum(self.slots.values()) - 1:
            return False
        return all(self._slot_for(ts, place.executor) for ts in self._hungry(early))

    # --- actions -------------------------------------------------------------------------
    def _recheck_slow_starts(self, now: float) -> None:
        """Start a waiting slow-start stage whose threshold now holds, and run again the
        lost parent outputs of an early one (its tasks wait for them: no fetch failure
        will report the loss). Cheap: only slow-start stages are looked at."""
        live = {sid for sid, ts in self.task_sets.items() if not ts.zombie}
        for sid in sorted(self.waiting | live):
            stage = self.stages.get(sid)
            if stage is not None and stage.spec.slow_start is not None and stage.jobs:
                self._submit_stage(sid, now)  # type: ignore[attr-defined]

    def _preempt(self, now: float) -> bool:
        """Kill early tasks over the cap, then for maps with no slot; True if any."""
        early = self.early_stages()
        running = self._early_running(early) if early else []
        if not running:
            return False
        killed = False
        while len(running) > max(0, sum(self.slots.values()) - 1):
            self._preempt_task(running.pop(), "preempted: early reduce tasks hold all slots but one at most", now)
            killed = True
        for ts in self._hungry(early):
            while running and not self._slot_for(ts, None):
                useful = [a for a in running if self._usable(ts, a.executor)]
                if useful:
                    victim = useful[-1]
                elif not any(n > len(self.busy.get(ex, ())) for ex, n in self.slots.items()):
                    victim = running[-1]
                else:
                    break
                running.remove(victim)
                self._preempt_task(victim, f"preempted: map tasks of stage {ts.stage_id} need a slot", now)
                killed = True
        return killed

    def _preempt_task(self, att: TaskAttempt, reason: str, now: float) -> None:
        """Kill a task without counting a failure; its partition is pending again."""
        self._kill(att.task_id, reason, now)  # type: ignore[attr-defined]
        ts = self.task_sets.get(att.stage_id)
        if ts is None or ts.attempt != att.stage_attempt:
            return  # an older attempt's: the live one runs the partition if it must
        running = ts.running.get(att.partition, [])
        if att.task_id in running:
            running.remove(att.task_id)
        if not running and att.partition not in ts.done and att.partition not in ts.pending and not ts.zombie:
            ts.pending.append(att.partition)
        self._check_stage_done(att.stage_id, now)  # type: ignore[attr-defined]  (a zombie may be drained)
