"""The job scheduler's state (pure): task attempts, stages, task sets and jobs, as
Spark's DAGScheduler and TaskSetManagers keep them."""

from __future__ import annotations

from dataclasses import dataclass, field

from shoal.compute.locality import DelayState, Level
from shoal.compute.scheduler_events import StageSpec


@dataclass
class TaskAttempt:
    task_id: int
    stage_id: int
    stage_attempt: int
    partition: int
    attempt: int
    executor: str
    host: str
    locality: Level
    speculative: bool
    start: float
    end: float | None = None
    state: str = "running"  # running | succeeded | failed | killed
    reason: str = ""


@dataclass
class Stage:
    spec: StageSpec
    jobs: set[int] = field(default_factory=set)
    attempts: int = 0
    consecutive_failures: int = 0

    @property
    def stage_id(self) -> int:
        return self.spec.stage_id


@dataclass
class TaskSet:
    stage_id: int
    attempt: int
    partitions: list[int]
    pending: list[int]
    running: dict[int, list[int]] = field(default_factory=dict)  # partition -> task ids
    done: set[int] = field(default_factory=set)
    failures: dict[int, int] = field(default_factory=dict)
    failed_on: dict[int, set[str]] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    speculated: set[int] = field(default_factory=set)
    delay: DelayState = field(default_factory=DelayState)
    zombie: bool = False
    next_attempt: dict[int, int] = field(default_factory=dict)


@dataclass
class Job:
    job_id: int
    final_stage: int
    partitions: list[int]
    finished: set[int] = field(default_factory=set)
