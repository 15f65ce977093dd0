"""Job records: what ``shoal jobs`` shows. Each application writes one JSON file
(``<jobs dir>/<app id>.json``, atomically) with its jobs, their stages and every
task attempt: duration, locality, shuffle bytes, spills, retries, speculation."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from shoal.core.node import write_json_atomic

# Records are rewritten at most this often while tasks finish (and always at job and
# stage boundaries), so a large job does not spend its time writing JSON.
FLUSH_INTERVAL_S = 1.0


def default_jobs_dir() -> Path:
    env = os.environ.get("SHOAL_JOBS_DIR")
    if env:
        return Path(env)
    cluster = os.environ.get("SHOAL_CLUSTER")
    if cluster and "://" not in cluster and Path(cluster).is_dir():
        return Path(cluster) / "jobs"
    return Path.home() / ".shoal" / "jobs"


class JobRecorder:
    def __init__(self, app_id: str, app_name: str, master: str, jobs_dir: str | None) -> None:
        self.path = Path(jobs_dir) if jobs_dir else default_jobs_dir()
        self.app: dict[str, Any] = {
            "app_id": app_id, "name": app_name, "master": master, "pid": os.getpid(),
            "start": time.time(), "end": None, "state": "running", "jobs": [], "executors_lost": [],
        }
        self.jobs: dict[int, dict] = {}
        self.stage_job: dict[int, int] = {}
        self.tasks: dict[int, dict] = {}
        self._last_flush = 0.0
        self._dirty = False

    # --- events ----------------------------------------------------------------------------
    def job_started(self, job_id: int, action: str, plans: list) -> None:
        job = {"job_id": job_id, "action": action, "state": "running", "start": time.time(), "end": None,
               "duration_s": None, "failure": "", "stages": []}
        for plan in plans:
            self.stage_job.setdefault(plan.stage_id, job_id)
            job["stages"].append({
                "stage_id": plan.stage_id, "name": plan.name, "kind": "shuffle map" if plan.is_map else "result",
                "num_tasks": plan.num_partitions, "attempts": [], "state": "pending", "tasks": [],
            })
        self.jobs[job_id] = job
        self.app["jobs"].append(job)
        self.flush(force=True)

    def _stage(self, stage_id: int) -> dict | None:
        for job in reversed(self.app["jobs"]):
            for st in job["stages"]:
                if st["stage_id"] == stage_id and job["state"] == "running":
                    return st
        return None

    def stage_started(self, stage_id: int, attempt: int, name: str, num_tasks: int,
                      early: tuple[int, int] | None = None) -> None:
        """``early``: (map outputs available, total) when the stage started before all
        its parents' outputs existed (MapReduce's reduce slow start)."""
        st = self._stage(stage_id)
        if st is not None:
            st["state"] = "running"
            rec = {"attempt": attempt, "tasks": num_tasks, "start": time.time(), "failure": ""}
            if early is not None:
                rec.update(early=True, parents_done=early[0], parents_total=early[1])
            st["attempts"].append(rec)
        self.flush(force=early is not None)

    def stage_ended(self, stage_id: int, attempt: int, failure: str) -> None:
        st = self._stage(stage_id)
        if st is not None:
            st["state"] = "failed" if failure else "succeeded"
            for a in st["attempts"]:
                if a["attempt"] == attempt:
                    a["end"] = time.time()
                    a["failure"] = failure
        self.flush(force=True)

    def task_started(self, att: Any) -> None:
        st = self._stage(att.stage_id)
        rec = {"task_id": att.task_id, "partition": att.partition, "attempt": att.attempt,
               "stage_attempt": att.stage_attempt, "executor": att.executor, "host": att.host,
               "locality": att.locality.name, "speculative": att.speculative, "state": "running",
               "start": time.time(), "duration_s": None, "error": ""}
        self.tasks[att.task_id] = rec
        if st is not None:
            st["tasks"].append(rec)
        self.flush()

    def task_ended(self, res: Any, att: Any) -> None:
        rec = self.tasks.get(res.task_id)
        if rec is None:
            return
        m = res.metrics
        rec.update(state=res.state, duration_s=round(time.time() - rec["start"], 4),
                   records_in=m.records_in, shuffle_read_bytes=m.shuffle_read_bytes,
                   shuffle_read_remote_bytes=m.shuffle_read_remote_bytes, shuffle_write_bytes=m.shuffle_write_bytes,
                   shuffle_write_records=m.shuffle_write_records, spills=m.spills, spilled_bytes=m.spilled_bytes,
                   result_bytes=m.result_bytes)
        if m.status:
            rec["status"] = m.status
        if res.error is not None:
            rec["error"] = f"{res.error.exc_type}: {res.error.message}"
        self.flush()

    def task_killed(self, task_id: int, reason: str) -> None:
        rec = self.tasks.get(task_id)
        if rec is not None and rec["state"] == "running":
            rec.update(state="killed", error=reason, duration_s=round(time.time() - rec["start"], 4))

    def executor_lost(self, executor_id: str, reason: str) -> None:
        self.app["executors_lost"].append({"executor": executor_id, "reason": reason, "time": time.time()})
        for rec in self.tasks.values():
            if rec["executor"] == executor_id and rec["state"] == "running":
                rec.update(state="failed", error=f"executor lost: {reason}",
                           duration_s=round(time.time() - rec["start"], 4))
        self.flush(force=True)

    def job_ended(self, job_id: int, failure: str) -> None:
        job = self.jobs.pop(job_id, None)
        if job is None:
            return
        job["end"] = time.time()
        job["duration_s"] = round(job["end"] - job["start"], 4)
        job["state"] = "failed" if failure else "succeeded"
        job["failure"] = failure
        for st in job["stages"]:
            if st["state"] in ("pending", "running") and not st["attempts"]:
                st["state"] = "skipped"
            summarize_stage(st)
        self.flush(force=True)

    def app_ended(self) -> None:
        self.app["end"] = time.time()
        self.app["state"] = "finished"
        self.flush(force=True)

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < FLUSH_INTERVAL_S:
            return
        self._last_flush = now
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path / f"{self.app['app_id']}.json", self.app)
        except OSError:
            pass  # records are best effort: a read-only home must not fail the job


def summarize_stage(st: dict) -> None:
    tasks = st["tasks"]
    st["shuffle_read_bytes"] = sum(t.get("shuffle_read_bytes", 0) for t in tasks)
    st["shuffle_write_bytes"] = sum(t.get("shuffle_write_bytes", 0) for t in tasks)
    st["spills"] = sum(t.get("spills", 0) for t in tasks)
    st["retries"] = sum(1 for t in tasks if t["attempt"] > 0 and not t["speculative"])
    st["speculative"] = sum(1 for t in tasks if t["speculative"])
    st["failed_tasks"] = sum(1 for t in tasks if t["state"] == "failed")
    st["killed_tasks"] = sum(1 for t in tasks if t["state"] == "killed")
    loc: dict[str, int] = {}
    for t in tasks:
        if t["state"] == "succeeded":
            loc[t["locality"]] = loc.get(t["locality"], 0) + 1
    st["locality"] = loc


def load_apps(jobs_dir: Path) -> list[dict]:
    apps = []
    for p in sorted(jobs_dir.glob("*.json")):
        try:
            apps.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    apps.sort(key=lambda a: a.get("start") or 0)
    return apps
