"""The job scheduler's vocabulary (pure): its configuration, the stage specs the
driver submits, the events it handles and the effects it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shoal.compute.locality import Level, Location


# --- configuration and plan ----------------------------------------------------------
@dataclass(frozen=True)
class SchedulerConf:
    max_task_failures: int = 4  # spark.task.maxFailures
    max_stage_attempts: int = 4  # spark.stage.maxConsecutiveAttempts
    locality_wait_s: float = 3.0  # spark.locality.wait
    speculation: bool = True
    speculation_quantile: float = 0.75  # spark.speculation.quantile
    speculation_multiplier: float = 1.5  # spark.speculation.multiplier
    speculation_min_s: float = 0.1  # spark.speculation.minTaskRuntime


@dataclass
class StageSpec:
    """What the driver knows about a stage when it submits a job."""

    stage_id: int
    num_partitions: int
    parents: list[int]
    shuffle_id: int | None = None  # set for a shuffle map stage
    prefs: list[list[Location]] = field(default_factory=list)
    name: str = ""
    # Hadoop's reduce slow start (mapreduce.job.reduce.slowstart.completedmaps), for a
    # stage whose parents are shuffle map stages: its tasks launch once this fraction
    # of every parent's map outputs exists, and fetch while the other maps still run.
    # None: they launch when all of them exist (Spark's behaviour).
    slow_start: float | None = None
    # Whether its stragglers may get speculative copies (when the conf speculates at
    # all): Hadoop sets this per kind of task (mapreduce.map/reduce.speculative).
    speculation: bool = True


# --- events ------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobSubmitted:
    job_id: int
    final_stage: int
    partitions: list[int]
    stages: list[StageSpec]


@dataclass(frozen=True)
class JobCancelled:
    job_id: int
    reason: str


@dataclass(frozen=True)
class ExecutorAdded:
    executor: str
    host: str
    rack: str = ""
    slots: int = 1


@dataclass(frozen=True)
class ExecutorLost:
    executor: str
    reason: str
    node_lost: bool = False  # its node's shuffle outputs are gone too


@dataclass(frozen=True)
class TaskSucceeded:
    task_id: int
    map_status: Any = None  # for a shuffle map task: where its output is


@dataclass(frozen=True)
class TaskFailed:
    task_id: int
    reason: str
    error: Any = None  # the user's exception, pickled, for the job's failure
    fetch_failed: tuple[int, int, str] | None = None  # (shuffle_id, map_index, node_id)
    killed: bool = False
    counts: bool = True  # counts toward max_task_failures
    # The fetch failed because the node's shuffle service is gone: every output on
    # that node is lost, not just the one map output (Spark does the same with an
    # external shuffle service).
    node_lost: bool = False


@dataclass(frozen=True)
class Tick:
    """Time passed: locality waits may have expired, tasks may be stragglers."""


Event = JobSubmitted | JobCancelled | ExecutorAdded | ExecutorLost | TaskSucceeded | TaskFailed | Tick


# --- effects -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LaunchTask:
    task_id: int
    stage_id: int
    stage_attempt: int
    partition: int
    attempt: int
    executor: str
    locality: Level
    speculative: bool


@dataclass(frozen=True)
class KillTask:
    task_id: int
    executor: str
    reason: str


@dataclass(frozen=True)
class TaskCompleted:
    """A task's result counts (first success of its partition): deliver its value to
    the job (result stage) and apply its accumulator updates."""

    task_id: int
    job_id: int | None
    output_index: int


@dataclass(frozen=True)
class StageStarted:
    stage_id: int
    attempt: int
    num_tasks: int
    early: bool = False  # slow start: created before every parent output existed
    # For a slow-start stage: its parents' map outputs available / total at the start.
    parents_done: int = 0
    parents_total: int = 0


@dataclass(frozen=True)
class StageEnded:
    stage_id: int
    attempt: int
    failure: str = ""


@dataclass(frozen=True)
class JobEnded:
    job_id: int
    failure: str = ""  # empty: succeeded
    error: Any = None  # the user exception that failed it, as reported by the task


Effect = LaunchTask | KillTask | TaskCompleted | StageStarted | StageEnded | JobEnded
