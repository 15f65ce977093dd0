"""An executor: a long-lived process that runs a driver's tasks one at a time.

It registers with its driver, then long-polls for tasks; each poll carries the
results of the tasks run since the last one. Stage closures arrive once per stage
and are kept. A second thread long-polls the driver's control channel: kill orders
(speculation losers, cancelled jobs) interrupt the running task, cache drops and
shutdown. If the driver goes away, the executor exits.

Run as ``python -m shoal.compute.executor``; settings come from the environment
(``SHOAL_EXECUTOR_*``), set by the local backend or the cluster backend.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
import threading
import time
import traceback

from shoal.compute import serde
from shoal.compute.fastpaths import records_for_count
from shoal.compute.protocol import (
    CONTROL,
    NEXT,
    REGISTER,
    ControlPoll,
    PollTasks,
    RegisterExecutor,
    TaskError,
    TaskLaunch,
    TaskMetrics,
    TaskResult,
)
from shoal.compute.shuffle import ShuffleWriteMetrics, write_map_output
from shoal.compute.taskcontext import BlockManager, ExecutorEnv, TaskContext
from shoal.core.config import RpcConfig
from shoal.core.rpc_client import RpcClient
from shoal.errors import FetchFailed, ShoalError

# How long the executor keeps trying to reach a driver that does not answer.
DRIVER_LOST_AFTER_S = 30.0
DRIVER_RETRY_S = 0.2  # backoff between calls while the driver is briefly unreachable
PROFILE_DIR = os.environ.get("SHOAL_EXECUTOR_PROFILE_DIR", "")


class TaskKilled(BaseException):
    """Raised inside a running task when the driver kills it (BaseException, so user
    code catching Exception does not swallow it)."""


class Executor:
    def __init__(self, env: ExecutorEnv, driver: tuple[str, int], rack: str, slots: int = 1) -> None:
        self.env = env
        self.driver_address = driver
        self.rack = rack
        self.slots = slots
        self.client = RpcClient(driver, env.secret, RpcConfig(frame_bytes_max=1 << 31, call_timeout_s=120.0))
        env.driver = self.client
        self.current_task: int | None = None
        self._lock = threading.Lock()
        self._main_thread = threading.get_ident()
        self.stopping = threading.Event()
        self.poll_wait_s = 2.0
        self.control_wait_s = 2.0

    def run(self) -> None:
        env = self.env
        reg = self.client.call(REGISTER, RegisterExecutor(
            env.executor_id, env.node_id, os.uname().nodename, self.rack, os.getpid(), self.slots,
            env.shuffle_service))
        self.poll_wait_s, self.control_wait_s = reg.poll_wait_s, reg.control_wait_s
        threading.Thread(target=self._control_loop, daemon=True, name="executor-control").start()
        results: list[TaskResult] = []
        last_ok = time.monotonic()
        while not self.stopping.is_set():
            try:
                batch = self.client.call(NEXT, PollTasks(env.executor_id, results, self.poll_wait_s),
                                         timeout_s=self.poll_wait_s + 30.0)
            except ShoalError:
                if time.monotonic() - last_ok > DRIVER_LOST_AFTER_S:
                    return
                self.stopping.wait(DRIVER_RETRY_S)
                continue
            last_ok = time.monotonic()
            results = []
            if batch.shutdown:
                return
            env.stage_blobs.update(batch.stages)
            for launch in batch.tasks:
                results.append(self._profiled(launch) if PROFILE_DIR else self.run_task(launch))

    def _profiled(self, launch: TaskLaunch) -> TaskResult:
        """Run a task under cProfile, stats to $SHOAL_EXECUTOR_PROFILE_DIR (a
        developer aid, like PySpark's spark.python.profile)."""
        import cProfile

        prof = cProfile.Profile()
        result = prof.runcall(self.run_task, launch)
        os.makedirs(PROFILE_DIR, exist_ok=True)
        prof.dump_stats(os.path.join(PROFILE_DIR, f"task-{launch.stage_id}-{launch.partition}-{launch.task_id}.prof"))
        return result

    # --- one task ----------------------------------------------------------------------
    def stage(self, stage_id: int) -> tuple:
        env = self.env
        st = env.stages.get(stage_id)
        if st is None:
            st = env.stages[stage_id] = serde.loads_closure(env.stage_blobs.pop(stage_id))
        return st

    def run_task(self, launch: TaskLaunch) -> TaskResult:
        env = self.env
        start = time.perf_counter()
        metrics = TaskMetrics()
        tc = TaskContext(env, launch.stage_id, launch.stage_attempt, launch.partition, launch.attempt,
                         launch.task_id, launch.map_statuses)
        with self._lock:
            self.current_task = launch.task_id
        try:
            with tc:
                try:
                    kind, rdd, target = self.stage(launch.stage_id)
                    split = rdd.partitions[launch.partition]
                    if kind == "map" and target.extra.get("count_keys") is not None:
                        records = records_for_count(target, lambda: rdd.iterator(split, tc), launch.partition,
                                                    env.memory_limit_bytes)
                    else:
                        records = rdd.iterator(split, tc)
                    if kind == "map":
                        result = self._write_map(launch, target, records, metrics)
                    else:
                        value = target(records)
                        data = _dumps_result(value)
                        metrics.result_bytes = len(data)
                        result = TaskResult(launch.task_id, "succeeded", value=data)
                finally:
                    with self._lock:
                        self.current_task = None
        except TaskKilled:
            return TaskResult(launch.task_id, "killed", metrics=metrics)
        except FetchFailed as exc:
            err = TaskError(type(exc).__name__, str(exc), traceback.format_exc(),
                            fetch_failed=(exc.shuffle_id, exc.map_index, exc.node_id))
            return TaskResult(launch.task_id, "failed", error=err, metrics=metrics)
        except BaseException as exc:  # user code: report it with its traceback
            if isinstance(exc, (KeyboardInterrupt, SystemExit)) and self.stopping.is_set():
                raise
            return TaskResult(launch.task_id, "failed", error=_task_error(exc), metrics=metrics)
        rm = tc.read_metrics
        metrics.shuffle_read_bytes = rm.local_bytes + rm.remote_bytes
        metrics.shuffle_read_remote_bytes = rm.remote_bytes
        metrics.shuffle_read_records = rm.records_read
        metrics.spills += rm.spills
        metrics.spilled_bytes += rm.spilled_bytes
        metrics.duration_s = time.perf_counter() - start
        metrics.status = tc.status
        accs = pickle.dumps(tc.accumulator_updates) if tc.accumulator_updates else b""
        return TaskResult(launch.task_id, result.state, result.value, result.map_status, None, metrics, accs,
                          tc.cached)

    def _write_map(self, launch: TaskLaunch, dep, records, metrics: TaskMetrics) -> TaskResult:
        env = self.env
        wm = ShuffleWriteMetrics()
        writer = dep.map_writer or write_map_output
        status = writer(
            records, dep, root=env.shuffle_root, app_id=env.app_id, map_index=launch.partition,
            node_id=env.node_id, service=env.shuffle_service, work_dir=env.work_dir,
            memory_limit_bytes=env.memory_limit_bytes, metrics=wm,
        )
        metrics.records_in = wm.input_records
        metrics.shuffle_write_bytes = wm.bytes_written
        metrics.shuffle_write_records = wm.records_written
        metrics.spills = wm.spills
        metrics.spilled_bytes = wm.spilled_bytes
        return TaskResult(launch.task_id, "succeeded", map_status=status)

    # --- control channel ---------------------------------------------------------------
    def _control_loop(self) -> None:
        failures_since = None
        while not self.stopping.is_set():
            with self._lock:
                running = [self.current_task] if self.current_task is not None else []
            try:
                reply = self.client.call(CONTROL, ControlPoll(self.env.executor_id, running, self.control_wait_s),
                                         timeout_s=self.control_wait_s + 30.0)
            except ShoalError:
                failures_since = failures_since or time.monotonic()
                if time.monotonic() - failures_since > DRIVER_LOST_AFTER_S:
                    os._exit(3)  # the driver is gone: nobody will collect our results
                self.stopping.wait(DRIVER_RETRY_S)
                continue
            failures_since = None
            if reply.shutdown:
                self.stopping.set()
                os._exit(0)
            for rdd_id in reply.drop_rdds:
                if self.env.blocks is not None:
                    self.env.blocks.drop_rdd(rdd_id)
            with self._lock:
                if self.current_task is not None and self.current_task in reply.kill:
                    _raise_in_thread(self._main_thread, TaskKilled)


def _raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))


def _dumps_result(value: object) -> bytes:
    try:
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception:
        return serde.dumps_closure(value, "the task's result")


def _task_error(exc: BaseException) -> TaskError:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        pickled = serde.dumps_closure(exc, "exception")
        pickle.loads(pickled)
    except Exception:
        pickled = b""
    return TaskError(type(exc).__qualname__, str(exc), tb, pickled)


def env_from_environment() -> tuple[ExecutorEnv, tuple[str, int], str]:
    e = os.environ
    host, _, port = e["SHOAL_EXECUTOR_DRIVER"].rpartition(":")
    service = e.get("SHOAL_SHUFFLE_SERVICE") or ""
    svc = None
    if service:
        shost, _, sport = service.rpartition(":")
        svc = (shost, int(sport))
    work = e.get("SHOAL_EXECUTOR_WORK_DIR") or e.get("SHOAL_SANDBOX") or "/tmp"
    memory = int(e.get("SHOAL_EXECUTOR_MEMORY_BYTES", str(512 << 20)))
    env = ExecutorEnv(
        executor_id=e["SHOAL_EXECUTOR_ID"], app_id=e["SHOAL_EXECUTOR_APP_ID"],
        node_id=e.get("SHOAL_EXECUTOR_NODE_ID") or e.get("SHOAL_AGENT_ID") or "localhost",
        secret=bytes.fromhex(e["SHOAL_EXECUTOR_SECRET"]),
        shuffle_root=e.get("SHOAL_SHUFFLE_DIR") or os.path.join(work, "shuffle"),
        shuffle_service=svc, work_dir=work, memory_limit_bytes=memory,
        shuffle_secret=bytes.fromhex(e.get("SHOAL_SHUFFLE_SECRET", "")),
    )
    env.blocks = BlockManager(os.path.join(work, f"blocks-{env.executor_id}"), memory)
    return env, (host, int(port)), e.get("SHOAL_EXECUTOR_RACK", "")


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(3)


def main() -> None:
    if os.environ.get("SHOAL_EXECUTOR_DIE_WITH_PARENT") == "1":
        _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    extra_path = os.environ.get("SHOAL_EXECUTOR_PYTHONPATH")
    if extra_path:
        sys.path[:0] = [p for p in extra_path.split(os.pathsep) if p and p not in sys.path]
    slots = int(os.environ.get("SHOAL_EXECUTOR_SLOTS", "1"))
    children = []
    if slots > 1:
        # One process per core (one task at a time each), forked before any thread
        # starts; each registers with the driver as its own executor.
        base = os.environ["SHOAL_EXECUTOR_ID"]
        for i in range(slots):
            if i == slots - 1:
                os.environ["SHOAL_EXECUTOR_ID"] = f"{base}/{i}"
                break
            pid = os.fork()
            if pid == 0:
                os.environ["SHOAL_EXECUTOR_ID"] = f"{base}/{i}"
                children = []
                break
            children.append(pid)
    env, driver, rack = env_from_environment()
    Executor(env, driver, rack, 1).run()
    for pid in children:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    os._exit(0)


if __name__ == "__main__":
    main()
