"""The driver service: the job scheduler's I/O shell.

Executors connect to the driver's RPC server (its own secret, per application).
Everything that touches the scheduler runs on one asyncio loop thread, so the pure
``JobScheduler`` needs no locks; user threads plan stages, pickle closures and then
hand a job to the loop and wait for its future.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import secrets
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from shoal.compute import serde
from shoal.compute.dag import StagePlan, StageRegistry, job_stages, result_stage, to_spec
from shoal.compute.fastpaths import mark_fast_paths
from shoal.compute.jobs import JobRecorder
from shoal.compute.locality import Location
from shoal.compute.progress import ProgressReporter
from shoal.compute.protocol import (
    CONTROL,
    FETCH,
    MAP_OUTPUTS,
    NEXT,
    REGISTER,
    ControlPoll,
    ControlReply,
    Data,
    FetchData,
    MapOutputs,
    MapOutputsRequest,
    MapSegment,
    PollTasks,
    RegisterExecutor,
    Registered,
    TaskBatch,
    TaskError,
    TaskLaunch,
    TaskResult,
)
from shoal.compute.rdd import RDD
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
    StageStarted,
    TaskCompleted,
    TaskFailed,
    TaskSucceeded,
    Tick,
)
from shoal.core.config import RpcConfig
from shoal.core.rpc import RpcServer
from shoal.errors import BadRequest, JobCancelled as JobCancelledError, JobFailed, RemoteTraceback

log = logging.getLogger("compute.driver")

TICK_S = 0.1
CANCEL_WAIT_S = 2.0  # how long Ctrl-C waits for the job's cancellation to be recorded
SERVICE_PROBE_TIMEOUT_S = 0.5  # connecting to a shuffle service after a fetch failed from it  # spark.speculation.interval: how often stragglers and locality waits are checked


class Backend(Protocol):
    """Where executors come from: local processes or containers on a cluster."""

    def start(self, driver: Driver) -> None: ...

    def stop(self) -> None: ...

    def node_alive(self, node_id: str) -> bool: ...


@dataclass
class ExecutorState:
    info: RegisterExecutor
    queue: list[TaskLaunch] = field(default_factory=list)
    stages_sent: set[int] = field(default_factory=set)
    waiter: asyncio.Future | None = None
    control_waiter: asyncio.Future | None = None
    kills: list[int] = field(default_factory=list)
    drops: list[int] = field(default_factory=list)
    last_seen: float = 0.0
    shutdown: bool = False


@dataclass
class JobWaiter:
    job_id: int
    partitions: list[int]
    future: Future
    results: list[Any]
    plans: list[StagePlan]
    group: str | None = None


@dataclass(frozen=True)
class DriverConf:
    scheduler: SchedulerConf = SchedulerConf()
    bind_host: str = "127.0.0.1"
    executor_timeout_s: float = 60.0
    poll_wait_s: float = 2.0
    control_wait_s: float = 1.0
    show_progress: bool = True


class Driver:
    def __init__(self, app_id: str, app_name: str, master: str, conf: DriverConf, backend: Backend,
                 jobs_dir: str | None) -> None:
        self.app_id = app_id
        self.app_name = app_name
        self.conf = conf
        self.backend = backend
        self.secret = secrets.token_bytes(32)
        self.sched = JobScheduler(conf.scheduler)
        self.registry = StageRegistry()
        self._plan_lock = threading.Lock()
        self.stage_blobs: dict[int, bytes] = {}
        self.executors: dict[str, ExecutorState] = {}
        self.jobs: dict[int, JobWaiter] = {}
        self.task_results: dict[int, TaskResult] = {}
        self.cache_locs: dict[tuple[int, int], list[Location]] = {}
        self.slices: dict[int, list[bytes]] = {}
        self.broadcasts: dict[int, bytes] = {}
        self.accumulators: dict[int, Any] = {}
        self.job_ids = itertools.count()
        self.recorder = JobRecorder(app_id, app_name, master, jobs_dir)
        self.progress = ProgressReporter(enabled=conf.show_progress)
        self.executors_ready = threading.Condition()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, daemon=True, name="shoal-driver")
        self.server = RpcServer(self.secret, RpcConfig(frame_bytes_max=1 << 31, inflight_calls_max=4096), log)
        for method, handler in ((REGISTER, self._on_register), (NEXT, self._on_next), (CONTROL, self._on_control),
                                (FETCH, self._on_fetch), (MAP_OUTPUTS, self._on_map_outputs)):
            self.server.register(method, handler)
        self.address: tuple[str, int] = ("", 0)
        self._stopped = False
        # Every map output registration, per shuffle, in order (Hadoop's task completion
        # events), and a future resolved (and replaced) on each: slow-started reduce
        # tasks follow the maps through ``_on_map_outputs``.
        self.map_events: dict[int, list[Any]] = {}
        self._outputs_changed: asyncio.Future | None = None

    # --- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        # Bind first: a backend that forks executors does so before any driver
        # thread exists, and they can dial the port before the server accepts.
        sock = socket.create_server((self.conf.bind_host, 0), backlog=1024)
        self.address = sock.getsockname()[:2]
        prefork = getattr(self.backend, "prefork", None)
        if prefork is not None:
            prefork(self)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start("", 0, sock=sock), self.loop).result()
        self.backend.start(self)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_later(TICK_S, self._tick)
        self.loop.run_forever()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.call_in_loop(self._shutdown_executors).result(timeout=10)
        self.backend.stop()
        self.progress.close()
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    def call_in_loop(self, fn: Callable[[], Any]) -> Future:
        fut: Future = Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the waiting thread
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return fut

    def _shutdown_executors(self) -> None:
        for ex in self.executors.values():
            ex.shutdown = True
            _wake(ex.waiter, None)
            _wake(ex.control_waiter, None)
        for waiter in list(self.jobs.values()):
            if not waiter.future.done():
                waiter.future.set_exception(JobCancelledError("the SparkContext was stopped"))

    def wait_for_executors(self, count: int, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        with self.executors_ready:
            while len(self.executors) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.executors_ready.wait(left)
            return len(self.executors)

    # --- jobs (user threads) -----------------------------------------------------------------
    def run_job(self, rdd: RDD, func: Callable, partitions: list[int] | None, action: str,
                group: str | None = None) -> list:
        if self._stopped:
            raise JobFailed("the SparkContext has been stopped")
        n = rdd.getNumPartitions()
        parts = list(range(n)) if partitions is None else list(partitions)
        for p in parts:
            if not 0 <= p < n:
                raise BadRequest(f"partition {p} does not exist (the RDD has {n})")
        job_id = next(self.job_ids)
        with self._plan_lock:
            final = result_stage(rdd, func, job_id, action, self.registry)
            plans = job_stages(final, self.registry)
            for plan in plans:
                if plan.stage_id not in self.stage_blobs:
                    if plan.shuffle_dep is not None:
                        mark_fast_paths(plan.shuffle_dep)
                    target = plan.shuffle_dep if plan.is_map else plan.func
                    kind = "map" if plan.is_map else "result"
                    self.stage_blobs[plan.stage_id] = serde.dumps_closure((kind, plan.rdd, target),
                                                                           f"the function of {plan.name}")
            specs = [to_spec(p, dict(self.cache_locs)) for p in plans]
        fut: Future = Future()
        waiter = JobWaiter(job_id, parts, fut, [None] * len(parts), plans, group)
        self.recorder.job_started(job_id, action, plans)
        self.call_in_loop(lambda: self._submit(waiter, final.stage_id, specs))
        try:
            results = fut.result()
        except KeyboardInterrupt:
            self.cancel_job(job_id, "cancelled by Ctrl-C")
            try:
                fut.result(timeout=CANCEL_WAIT_S)
            except BaseException:  # the cancellation itself, or a second Ctrl-C
                pass
            raise
        return results

    def cancel_job(self, job_id: int, reason: str) -> None:
        if not self._stopped:
            self.call_in_loop(lambda: self._handle(JobCancelled(job_id, reason)))

    def cancel_jobs(self, predicate: Callable[[str | None], bool], reason: str) -> None:
        """Cancel every running job whose job group satisfies ``predicate``."""
        def run() -> None:
            for job_id in [j for j, w in self.jobs.items() if predicate(w.group)]:
                self._handle(JobCancelled(job_id, reason))

        if not self._stopped:
            self.call_in_loop(run)

    # --- loop thread: scheduler plumbing ------------------------------------------------------
    def _submit(self, waiter: JobWaiter, final_stage: int, specs: list) -> None:
        self.jobs[waiter.job_id] = waiter
        self._handle(JobSubmitted(waiter.job_id, final_stage, waiter.partitions, specs))

    def _tick(self) -> None:
        now = time.monotonic()
        for ex_id, ex in list(self.executors.items()):
            if now - ex.last_seen > self.conf.executor_timeout_s and not ex.shutdown:
                self.executor_lost(ex_id, f"no heartbeat for {self.conf.executor_timeout_s:g}s", False)
        if self.sched.task_sets:
            self._handle(Tick())
        self.progress.refresh()
        self.loop.call_later(TICK_S, self._tick)

    def _handle(self, event: Any) -> None:
        for eff in self.sched.handle(event, time.monotonic()):
            self._apply(eff)

    def _apply(self, eff: Any) -> None:
        if isinstance(eff, LaunchTask):
            self._launch(eff)
        elif isinstance(eff, KillTask):
            ex = self.executors.get(eff.executor)
            if ex is not None:
                queued = [t for t in ex.queue if t.task_id == eff.task_id]
                if queued:  # not sent yet: it never starts
                    ex.queue.remove(queued[0])
                else:
                    ex.kills.append(eff.task_id)
                    _wake(ex.control_waiter, None)
            self.recorder.task_killed(eff.task_id, eff.reason)
        elif isinstance(eff, TaskCompleted):
            self._completed(eff)
        elif isinstance(eff, StageStarted):
            plan = self.registry.by_id[eff.stage_id]
            self.progress.stage_started(eff.stage_id, eff.attempt, plan.name, eff.num_tasks)
            self.recorder.stage_started(eff.stage_id, eff.attempt, plan.name, eff.num_tasks,
                                        early=(eff.parents_done, eff.parents_total) if eff.early else None)
        elif isinstance(eff, StageEnded):
            self.progress.stage_ended(eff.stage_id, eff.failure)
            self.recorder.stage_ended(eff.stage_id, eff.attempt, eff.failure)
        elif isinstance(eff, JobEnded):
            self._job_ended(eff)

    def _launch(self, eff: LaunchTask) -> None:
        ex = self.executors.get(eff.executor)
        plan = self.registry.by_id[eff.stage_id]
        statuses = {sid: list(self.sched.map_outputs.get(sid, [])) for sid in plan.reads}
        launch = TaskLaunch(eff.task_id, eff.stage_id, eff.stage_attempt, eff.partition, eff.attempt, statuses)
        self.recorder.task_started(self.sched.attempts[eff.task_id])
        if ex is None:
            self._handle(TaskFailed(eff.task_id, f"executor {eff.executor} is gone", counts=False))
            return
        ex.queue.append(launch)
        _wake(ex.waiter, None)

    def _completed(self, eff: TaskCompleted) -> None:
        res = self.task_results.get(eff.task_id)
        if res is None:
            return
        if eff.job_id is None and res.map_status is not None:
            plan = self.registry.by_id.get(self.sched.attempts[eff.task_id].stage_id)
            if plan is not None and plan.shuffle_dep is not None:
                self.map_events.setdefault(plan.shuffle_dep.shuffle_id, []).append(res.map_status)
                _wake(self._outputs_changed, None)
        if res.accumulators:
            for aid, update in pickle.loads(res.accumulators).items():
                acc = self.accumulators.get(aid)
                if acc is not None:
                    acc._merge_update(update)
        if eff.job_id is not None:
            waiter = self.jobs.get(eff.job_id)
            if waiter is not None:
                waiter.results[eff.output_index] = res.value

    def _job_ended(self, eff: JobEnded) -> None:
        waiter = self.jobs.pop(eff.job_id, None)
        self.recorder.job_ended(eff.job_id, eff.failure)
        if waiter is not None:
            for plan in waiter.plans:  # a result stage is this job's alone; map stages are shared
                if not plan.is_map:
                    self.registry.by_id.pop(plan.stage_id, None)
                    self.stage_blobs.pop(plan.stage_id, None)
        if waiter is None or waiter.future.done():
            return
        if not eff.failure:
            waiter.future.set_result(waiter.results)
        elif eff.failure.startswith("cancelled") or eff.failure.startswith("job group"):
            waiter.future.set_exception(JobCancelledError(f"job {eff.job_id} {eff.failure}"))
        else:
            waiter.future.set_exception(job_error(eff.job_id, eff.failure, eff.error))

    # --- executors -------------------------------------------------------------------------
    def executor_lost(self, executor_id: str, reason: str, node_lost: bool | None = None) -> None:
        """Called on the loop thread by the backend or the heartbeat check."""
        ex = self.executors.pop(executor_id, None)
        if ex is None or self._stopped:
            return
        _wake(ex.waiter, None)
        _wake(ex.control_waiter, None)
        if node_lost is None:
            node_lost = not self.backend.node_alive(ex.info.node_id)
        for key in list(self.cache_locs):
            self.cache_locs[key] = [loc for loc in self.cache_locs[key] if loc.executor != executor_id]
        log.warning("executor %s lost: %s", executor_id, reason)
        self.recorder.executor_lost(executor_id, reason)
        self._handle(ExecutorLost(executor_id, reason, node_lost))

    async def _on_register(self, req: RegisterExecutor) -> Registered:
        # An executor that starts after stop() began is told to leave at its first poll.
        ex = ExecutorState(req, last_seen=time.monotonic(), shutdown=self._stopped)
        self.executors[req.executor_id] = ex
        with self.executors_ready:
            self.executors_ready.notify_all()
        self._handle(ExecutorAdded(req.executor_id, req.node_id, req.rack, req.slots))
        return Registered(self.app_id, self.conf.poll_wait_s, self.conf.control_wait_s)

    async def _on_next(self, req: PollTasks) -> TaskBatch:
        ex = self.executors.get(req.executor_id)
        if ex is None:
            return TaskBatch(shutdown=True)
        ex.last_seen = time.monotonic()
        for res in req.results:
            self._task_result(ex, res)
        if not ex.queue and not ex.shutdown and req.wait_s > 0:
            ex.waiter = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(ex.waiter), req.wait_s)
            except asyncio.TimeoutError:
                pass
            ex.waiter = None
        if ex.shutdown or req.executor_id not in self.executors:
            return TaskBatch(shutdown=True)
        tasks, ex.queue = ex.queue, []
        blobs = {}
        for t in tasks:
            if t.stage_id not in ex.stages_sent:
                blobs[t.stage_id] = self.stage_blobs[t.stage_id]
                ex.stages_sent.add(t.stage_id)
        return TaskBatch(tasks, blobs)

    def _task_result(self, ex: ExecutorState, res: TaskResult) -> None:
        att = self.sched.attempts.get(res.task_id)
        self.recorder.task_ended(res, att)
        if att is not None:
            self.progress.task_ended(att.stage_id, res)
        if res.state == "succeeded":
            self.task_results[res.task_id] = res
            for key in res.cached:
                self.cache_locs.setdefault(key, []).append(
                    Location(host=ex.info.node_id, executor=ex.info.executor_id, rack=ex.info.rack))
            # Read by the TaskCompleted effect this event yields, if the result counts.
            self._handle(TaskSucceeded(res.task_id, res.map_status))
            self.task_results.pop(res.task_id, None)
        elif res.state == "killed":
            self._handle(TaskFailed(res.task_id, "killed", killed=True))
        else:
            err = res.error or TaskError("Unknown", "task failed", "")
            node_lost = err.fetch_failed is not None and not self._shuffle_service_up(err.fetch_failed)
            self._handle(TaskFailed(res.task_id, f"{err.exc_type}: {err.message}", err, err.fetch_failed,
                                    node_lost=node_lost))

    def _shuffle_service_up(self, fetch: tuple[int, int, str]) -> bool:
        """Whether the shuffle service of the node a fetch failed from still accepts
        connections (a refused connection answers at once)."""
        shuffle_id, map_index, node = fetch
        outs = self.sched.map_outputs.get(shuffle_id) or []
        status = outs[map_index] if 0 <= map_index < len(outs) else None
        service = getattr(status, "service", None)
        if service is None:
            return self.backend.node_alive(node)
        try:
            socket.create_connection(tuple(service), timeout=SERVICE_PROBE_TIMEOUT_S).close()
            return True
        except OSError:
            return False

    async def _on_control(self, req: ControlPoll) -> ControlReply:
        ex = self.executors.get(req.executor_id)
        if ex is None:
            return ControlReply(shutdown=True)
        ex.last_seen = time.monotonic()
        if not ex.kills and not ex.drops and not ex.shutdown and req.wait_s > 0:
            ex.control_waiter = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(ex.control_waiter), req.wait_s)
            except asyncio.TimeoutError:
                pass
            ex.control_waiter = None
        ex.last_seen = time.monotonic()
        kills, ex.kills = ex.kills, []
        drops, ex.drops = ex.drops, []
        return ControlReply(kills, drops, ex.shutdown or req.executor_id not in self.executors)

    async def _on_fetch(self, req: FetchData) -> Data:
        if req.kind == "broadcast":
            data = self.broadcasts.get(req.ident)
            if data is None:
                raise BadRequest(f"broadcast {req.ident} does not exist (destroyed?)")
            return Data(data)
        if req.kind == "slice":
            slices = self.slices.get(req.ident)
            if slices is None or not 0 <= req.index < len(slices):
                raise BadRequest(f"no slice {req.index} of collection {req.ident}")
            return Data(slices[req.index])
        raise BadRequest(f"unknown data kind {req.kind!r}")

    async def _on_map_outputs(self, req: MapOutputsRequest) -> MapOutputs:
        """Map output registrations of a shuffle from ``req.from_event`` on, each cut to
        the caller's reduce partition; waits up to ``wait_s`` for one."""
        deadline = time.monotonic() + max(0.0, min(req.wait_s, 60.0))
        while True:
            outs = self.sched.map_outputs.get(req.shuffle_id)
            if outs is None:
                raise BadRequest(f"unknown shuffle {req.shuffle_id}")
            events = self.map_events.get(req.shuffle_id, [])
            left = deadline - time.monotonic()
            if len(events) > req.from_event or left <= 0 or self._stopped:
                r = req.reduce_index
                if not all(0 <= r < len(st.offsets) - 1 for st in events[req.from_event:]):
                    raise BadRequest(f"no reduce partition {r} in shuffle {req.shuffle_id}")
                new = [MapSegment(st.map_index, st.node_id, st.service, st.data_path, st.offsets[r],
                                  st.offsets[r + 1] - st.offsets[r]) for st in events[req.from_event:]]
                return MapOutputs(new, len(events), len(outs))
            if self._outputs_changed is None or self._outputs_changed.done():
                self._outputs_changed = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._outputs_changed), left)
            except asyncio.TimeoutError:
                pass

    def unpersist(self, rdd_id: int) -> None:
        def run() -> None:
            for key in [k for k in self.cache_locs if k[0] == rdd_id]:
                del self.cache_locs[key]
            for ex in self.executors.values():
                ex.drops.append(rdd_id)
                _wake(ex.control_waiter, None)

        if not self._stopped:
            self.call_in_loop(run)


def _wake(fut: asyncio.Future | None, value: Any) -> None:
    if fut is not None and not fut.done():
        fut.set_result(value)


def job_error(job_id: int, failure: str, error: TaskError | None) -> BaseException:
    """The exception a failed job raises in the driver: the user's own exception
    (same type and message) when it could be brought back, with the remote
    traceback as its cause and the stage/task it came from as a note."""
    where = f"job {job_id} failed: {failure}"
    if error is None:
        return JobFailed(where)
    exc: BaseException | None = None
    if error.pickled:
        try:
            exc = pickle.loads(error.pickled)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        exc = JobFailed(f"{error.exc_type}: {error.message}")
    exc.__cause__ = RemoteTraceback("\n" + error.traceback.rstrip())
    exc.add_note(where)
    return exc
