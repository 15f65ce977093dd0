"""The agent's container supervisor (Mesos' containerizer, YARN's ContainerManager).

Each task runs in one container: a folder ``root/<task_id>/`` holding ``stdout`` and
``stderr`` (the process writes straight to them) and ``sandbox/`` (its cwd), and a group
of processes isolated by :mod:`shoal.cluster.isolation`. Threads: one launcher (every
container is forked from it, so PR_SET_PDEATHSIG only fires when the agent dies), one
waiter per container, one monitor (kill escalation, the fallback memory monitor, health
check scheduling) and a small pool running health checks (:mod:`shoal.cluster.health`).

Terminal states follow Mesos: exit 0 -> finished; non-zero or an unrequested signal ->
failed; a requested kill -> killed; over the memory limit -> failed with the message YARN
gives. When a container ends, its processes, cgroups and sandbox are gone before its
terminal status is published; its output is kept for the last ``ENDED_KEPT`` containers
(their records on disk: :mod:`shoal.cluster.container_records`).
"""

from __future__ import annotations

import logging
import queue
import signal
import socket
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from shoal.cluster import orphans
from shoal.cluster.cgroups import cgroup_scope
from shoal.cluster.container_process import (
    DESTROY_TIMEOUT_S,
    INIT_STATUS,
    SpawnError,
    environment,
    memory_message,
    read_outcome,
    spawn,
    terminal_state,
)
from shoal.cluster.container_records import ContainerRecord, check_name, read_chunk, remove_tree, save_status
from shoal.cluster.health import HealthState, probe
from shoal.cluster.isolation import ContainerGroup, SessionGroup, all_procs, detect_isolation
from shoal.cluster.protocol import ContainerReport, OutputChunk, TaskSpec, TaskStatus
from shoal.cluster.resources import Resources
from shoal.errors import BadRequest, ConfigError, ContainerError, DuplicateTask, UnknownTask

ENDED_KEPT = 200  # output folders of ended containers kept for reading
OUTPUT_READ_MAX_BYTES = 4 * 1024 * 1024
MONITOR_IDLE_S = 1.0
HEALTH_WORKERS = 4
SHUTDOWN_SLACK_S = 5.0
STREAMS = ("stdout", "stderr")
MiB = 1024 * 1024


@dataclass(eq=False)
class _Container:
    spec: TaskSpec
    framework_id: str
    folder: Path
    status: TaskStatus
    group: ContainerGroup | None = None
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    end_reason: tuple[str, str] | None = None  # (state, message), set once when the runtime stops it
    kill_at: float | None = None  # monotonic deadline of the SIGKILL after SIGTERM
    escalated: bool = False
    reaped: bool = False
    ended: bool = False
    health: HealthState = field(default_factory=HealthState)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def task_id(self) -> str:
        return self.spec.task_id

    @property
    def running(self) -> bool:
        return self.proc is not None and not self.reaped


class ContainerRuntime:
    """Launches, supervises, kills and cleans up this agent's containers."""

    def __init__(self, root: Path, *, agent_id: str, isolation: str = "auto", kill_grace_s: float = 3.0,
                 memory_poll_s: float = 0.2, on_status: Callable[[TaskStatus], None] = lambda s: None,
                 log: logging.Logger | None = None, host: str | None = None,
                 node_env: dict[str, str] | None = None) -> None:
        check_name("agent id", agent_id)
        self.node_env = dict(node_env or {})  # set in every container's environment
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.agent_id = agent_id
        self.kill_grace_s = kill_grace_s
        self.memory_poll_s = memory_poll_s
        self.log = log or logging.getLogger("shoal.cluster.containers")
        self._on_status = on_status
        self._host = host or socket.gethostname()
        try:
            self._isolator = detect_isolation(isolation, cgroup_scope(agent_id, self.root))
        except ValueError as exc:
            raise ConfigError(f"cluster.isolation: {exc}") from None
        self.isolation: str = self._isolator.name
        notes = "; ".join(self._isolator.notes)
        self.log.info("containers isolated by %s%s", self.isolation, f" ({notes})" if notes else "")
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._emit_lock = threading.Lock()  # status callbacks in the order states changed
        self._live: dict[str, _Container] = {}
        self._ended: OrderedDict[str, _Container] = OrderedDict()
        self._closing = False
        self._stopping = False
        self._next_memory_check = 0.0
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._health_pool = ThreadPoolExecutor(HEALTH_WORKERS, thread_name_prefix=f"health-{agent_id}")
        self._launcher = threading.Thread(target=self._launcher_loop, name=f"launcher-{agent_id}", daemon=True)
        self._monitor = threading.Thread(target=self._monitor_loop, name=f"monitor-{agent_id}", daemon=True)
        self._launcher.start()
        self._monitor.start()

    # --- public interface ---------------------------------------------------------------------
    def launch(self, spec: TaskSpec, framework_id: str) -> None:
        """Start a container in the background; problems with the command end it as failed."""
        check_name("task id", spec.task_id)
        with self._lock:
            if self._closing:
                raise ContainerError("the container runtime is shut down")
            if spec.task_id in self._live:
                raise DuplicateTask(f"task {spec.task_id!r} is already running on agent {self.agent_id}")
            self._ended.pop(spec.task_id, None)  # a relaunch under the same id replaces the old run
            status = TaskStatus(spec.task_id, "staging", self.agent_id, framework_id, "", None, None, time.time())
            c = _Container(spec, framework_id, self.root / spec.task_id, status)
            self._live[spec.task_id] = c
            self._jobs.put(lambda: self._start(c))

    def kill(self, task_id: str, reason: str = "killed") -> None:
        """SIGTERM the task, SIGKILL it after ``kill_grace_s`` (Mesos' kill grace period)."""
        with self._lock:
            c = self._live.get(task_id)
            if c is None:
                if task_id in self._ended:
                    return
                raise UnknownTask(f"no container {task_id!r} on agent {self.agent_id}")
        self._stop_container(c, ("killed", reason))

    def reports(self) -> list[ContainerReport]:
        with self._lock:
            return [ContainerReport(c.spec, c.framework_id, c.status) for c in self._live.values()]

    def status(self, task_id: str) -> TaskStatus:
        with self._lock:
            c = self._live.get(task_id) or self._ended.get(task_id)
            if c is None:
                raise UnknownTask(f"no container {task_id!r} on agent {self.agent_id}")
            return c.status

    def used(self) -> Resources:
        with self._lock:
            specs = [c.spec.resources for c in self._live.values()]
        total = Resources()
        for r in specs:
            total = total + r
        return total

    def read_output(self, task_id: str, stream: str, offset: int, max_bytes: int) -> OutputChunk:
        """Bytes of ``stdout``/``stderr`` from ``offset``; ``finished`` once ended and read to the end."""
        if stream not in STREAMS:
            raise BadRequest(f"unknown output stream {stream!r} (expected stdout or stderr)")
        if offset < 0 or max_bytes < 0:
            raise BadRequest("offset and max_bytes must not be negative")
        with self._lock:
            c = self._live.get(task_id) or self._ended.get(task_id)
            if c is None:
                raise UnknownTask(f"no container {task_id!r} on agent {self.agent_id}")
            ended, path = c.ended, c.folder / stream
        data, size = read_chunk(path, offset, min(max_bytes, OUTPUT_READ_MAX_BYTES))
        end = offset + len(data)
        return OutputChunk(data, end, ended and end >= size)

    def sweep_orphans(self) -> int:
        """Kill and clean up containers a previous run of this agent left (it was kill -9'd),
        recording them as ``lost``; ended ones stay readable (:mod:`shoal.cluster.orphans`).
        Returns how many were killed."""
        with self._lock:
            live_ids = set(self._live)
        swept = orphans.sweep(self.root, self._isolator, live_ids, self.agent_id, self.log, self._adopt_ended)
        if swept:
            self.log.warning("killed %d containers left by a previous run: %s", len(swept), ", ".join(sorted(swept)))
        return len(swept)

    def _adopt_ended(self, folder: Path, record: ContainerRecord, status: TaskStatus) -> None:
        """A container of a previous run, ended: its output stays readable."""
        c = _Container(record.spec, record.framework_id, folder, status, ended=True)
        c.done.set()
        with self._lock:
            if folder.name not in self._live and folder.name not in self._ended:
                self._ended[folder.name] = c
                self._prune_locked()

    def shutdown(self) -> None:
        """Kill every container (with the grace period), wait, and remove everything it made."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            targets = list(self._live.values())
        for c in targets:
            self._stop_container(c, ("killed", "agent shutdown"))
        deadline = time.monotonic() + self.kill_grace_s + DESTROY_TIMEOUT_S + SHUTDOWN_SLACK_S
        for c in targets:
            c.done.wait(max(0.0, deadline - time.monotonic()))
        self._jobs.put(None)
        self._launcher.join(SHUTDOWN_SLACK_S)
        self._run_pending_jobs()  # folder removals queued by containers that ended late
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
            leftovers = list(self._live.values())
            folders = [c.folder for c in leftovers] + [c.folder for c in self._ended.values()]
        self._monitor.join(SHUTDOWN_SLACK_S)
        self._health_pool.shutdown(wait=True, cancel_futures=True)
        for c in leftovers:
            self.log.error("container %s did not end in time; destroying it", c.task_id)
            if c.group is not None:
                c.group.destroy(DESTROY_TIMEOUT_S)
        self._run_pending_jobs()
        for folder in folders:
            self._rmtree(folder)
        self._isolator.release()

    # --- launching ----------------------------------------------------------------------------------
    def _launcher_loop(self) -> None:
        self._run_jobs(block=True)

    def _run_pending_jobs(self) -> None:
        self._run_jobs(block=False)

    def _run_jobs(self, block: bool) -> None:
        """Launches and folder removals, in order; ``block``: until the None sentinel."""
        while True:
            try:
                job = self._jobs.get(block)
            except queue.Empty:
                return
            if job is None:
                if block:
                    return
                continue
            try:
                job()
            except Exception:
                self.log.exception("container launcher job failed")

    def _start(self, c: _Container) -> None:
        try:
            self._start_process(c)
        except Exception as exc:
            self.log.exception("cannot start container %s", c.task_id)
            if c.proc is None:
                self._end(c, "failed", f"cannot start container: {exc}", None)

    def _start_process(self, c: _Container) -> None:
        self._rmtree(c.folder)  # a previous run under the same id
        with self._lock:
            reason = c.end_reason
        if reason is not None:  # killed while staging
            self._end(c, reason[0], reason[1], None)
            return
        c.env = environment(c.spec, c.folder / "sandbox", self._host, self.agent_id, self.node_env)
        try:
            proc, group = spawn(c.spec, c.framework_id, c.folder, c.env, self._isolator, self.log)
        except SpawnError as exc:
            self._end(c, "failed", str(exc), None)
            return
        spec = c.spec
        with self._lock:
            c.proc, c.group = proc, group
            killed_meanwhile = c.end_reason is not None
            if spec.health is not None:
                c.health.start(spec.health, time.monotonic())
            self._wake.notify_all()
        # The waiter starts first: from here on the container always ends through it. A
        # "running" published after its terminal status is dropped, so order holds.
        threading.Thread(target=self._wait, args=(c,), name=f"container-{spec.task_id}", daemon=True).start()
        self._publish(c, "running", "")
        if killed_meanwhile:
            self._stop_container(c, c.end_reason or ("killed", "killed"))

    # --- ending -------------------------------------------------------------------------------------
    def _wait(self, c: _Container) -> None:
        try:
            assert c.proc is not None
            self._finish(c, c.proc.wait())
        except Exception as exc:
            self.log.exception("supervising container %s failed", c.task_id)
            if not c.ended:
                if c.group is not None:
                    c.group.destroy(DESTROY_TIMEOUT_S)
                self._end(c, "failed", f"container supervision failed: {exc}", None)

    def _finish(self, c: _Container, returncode: int) -> None:
        """The direct child exited: collect the outcome, destroy the group, publish."""
        outcome = read_outcome(c.folder, self._isolator.namespaced, returncode)
        with self._lock:
            c.reaped = True
        group = c.group
        assert group is not None
        oom = group.memory_limit_hit(sigkilled=outcome == ("signal", signal.SIGKILL))
        if not group.destroy(DESTROY_TIMEOUT_S):
            self.log.error("container %s: processes or cgroups left after %ss", c.task_id, DESTROY_TIMEOUT_S)
        with self._lock:
            reason = c.end_reason
        state, message = reason if reason is not None else terminal_state(c.spec, outcome, oom)
        self._end(c, state, message, outcome[1] if outcome[0] == "exit" else None)

    def _end(self, c: _Container, state: str, message: str, exit_code: int | None) -> None:
        """Record a terminal state (processes and groups already gone) and publish it."""
        self._remove_sandbox(c.folder)
        try:
            (c.folder / INIT_STATUS).unlink(missing_ok=True)
        except OSError:
            pass
        with self._emit_lock:
            with self._lock:
                status = TaskStatus(c.task_id, state, self.agent_id, c.framework_id, message,  # type: ignore[arg-type]
                                    exit_code, c.health.healthy, time.time())
                c.status, c.ended = status, True
                if self._live.get(c.task_id) is c:
                    del self._live[c.task_id]
                    self._ended[c.task_id] = c
                    self._prune_locked()
                self._wake.notify_all()
            if c.folder.is_dir():
                save_status(c.folder, status)
            self._emit(status)
        c.done.set()
        self.log.info("container %s %s: %s", c.task_id, state, message)

    def _prune_locked(self) -> None:
        """Forget the oldest ended containers beyond ENDED_KEPT; their folders are removed by
        the launcher thread, in order with launches (so a relaunch's new folder is safe)."""
        while len(self._ended) > ENDED_KEPT:
            _, old = self._ended.popitem(last=False)
            self._jobs.put(lambda folder=old.folder: self._rmtree(folder))

    def _remove_sandbox(self, folder: Path) -> None:
        self._rmtree(folder / "sandbox")

    def _rmtree(self, path: Path) -> None:
        remove_tree(path, self.log)

    # --- status ---------------------------------------------------------------------------------------
    def _publish(self, c: _Container, state: str, message: str) -> None:
        """A non-terminal change (running, health); dropped once the container has ended."""
        with self._emit_lock:
            with self._lock:
                if c.ended:
                    return
                status = TaskStatus(c.task_id, state, self.agent_id, c.framework_id, message,  # type: ignore[arg-type]
                                    None, c.health.healthy, time.time())
                c.status = status
            self._emit(status)

    def _emit(self, status: TaskStatus) -> None:
        try:
            self._on_status(status)
        except Exception:
            self.log.exception("status callback failed for %s", status.task_id)

    # --- killing --------------------------------------------------------------------------------------
    def _stop_container(self, c: _Container, reason: tuple[str, str]) -> None:
        """Stop with SIGTERM and a grace period; the first reason given is the one reported."""
        with self._lock:
            if c.end_reason is None:
                c.end_reason = reason
            group = c.group if c.running and c.kill_at is None else None
            if group is not None:
                c.kill_at = time.monotonic() + self.kill_grace_s
                self._wake.notify_all()
        if group is not None:
            group.terminate()

    def _force_stop(self, c: _Container, reason: tuple[str, str]) -> None:
        """SIGKILL now (the memory limit, as the kernel's OOM killer would)."""
        with self._lock:
            if c.end_reason is None:
                c.end_reason = reason
            c.escalated = True
            if not c.running or c.group is None:
                return
            group = c.group
        group.kill_all()

    # --- monitor: kill escalation, fallback memory limit, health scheduling ---------------------------
    def _monitor_loop(self) -> None:
        while True:
            try:
                if not self._monitor_tick():
                    return
            except Exception:
                self.log.exception("container monitor error")
                with self._lock:
                    self._wake.wait(MONITOR_IDLE_S)

    def _monitor_tick(self) -> bool:
        with self._lock:
            if self._stopping:
                return False
            now = time.monotonic()
            running = [c for c in self._live.values() if c.running]
            due_kill = [c for c in running if c.kill_at is not None and not c.escalated and c.kill_at <= now]
            for c in due_kill:
                c.escalated = True
            due_health = [c for c in running if c.spec.health is not None and c.end_reason is None
                          and c.health.due(now)]
            for c in due_health:
                c.health.busy = True
            watched = [] if self._isolator.enforces_memory else [c for c in running if c.spec.resources.mem > 0]
            memory_due = bool(watched) and now >= self._next_memory_check
            if memory_due:
                self._next_memory_check = now + self.memory_poll_s
        for c in due_kill:
            self.log.info("container %s did not stop within %ss of SIGTERM; sending SIGKILL", c.task_id,
                          self.kill_grace_s)
            assert c.group is not None
            c.group.kill_all()
        for c in due_health:
            self._health_pool.submit(self._health_check, c)
        if memory_due:
            self._check_memory(watched)
        with self._lock:
            if self._stopping:
                return False
            now = time.monotonic()
            wake = [now + MONITOR_IDLE_S]
            for c in self._live.values():
                if not c.running:
                    continue
                if c.kill_at is not None and not c.escalated:
                    wake.append(c.kill_at)
                if c.spec.health is not None and c.end_reason is None and not c.health.busy:
                    wake.append(c.health.next_at)
                if not self._isolator.enforces_memory and c.spec.resources.mem > 0:
                    wake.append(self._next_memory_check)
            self._wake.wait(max(0.0, min(wake) - now))
        return True

    def _check_memory(self, watched: list[_Container]) -> None:
        """YARN ContainersMonitor: sum the RSS of each container's processes; kill over the limit."""
        procs = all_procs()
        for c in watched:
            group = c.group
            if not isinstance(group, SessionGroup):
                continue
            rss = sum(p.rss_bytes for p in group.members(procs))
            limit = c.spec.resources.mem * MiB
            if rss > limit:
                self.log.warning("container %s uses %.1f MiB of memory, over its limit of %g MiB; killing it",
                                 c.task_id, rss / MiB, c.spec.resources.mem)
                self._force_stop(c, ("failed", memory_message(c.spec.resources)))

    # --- health checks (Marathon/Mesos) ----------------------------------------------------------------
    def _health_check(self, c: _Container) -> None:
        try:
            hc = c.spec.health
            assert hc is not None
            try:
                ok, reason = probe(hc, c.spec.resources, c.folder / "sandbox", c.env)
            except Exception as exc:
                self.log.exception("health check of %s raised", c.task_id)
                ok, reason = False, f"check error: {exc}"
            with self._lock:
                now = time.monotonic()
                c.health.probe_done(hc, now)
                self._wake.notify_all()
                if c.ended or c.end_reason is not None or not c.running:
                    return
                change, give_up = c.health.record(hc, ok, reason, now)
            if change:
                self._publish(c, "running", change)
            if give_up:
                self.log.warning("container %s failed %d health checks in a row (%s); killing it", c.task_id,
                                 hc.max_failures, reason)
                self._stop_container(c, ("failed", f"health check failed: {reason}"))
        except Exception:
            self.log.exception("health check bookkeeping failed for %s", c.task_id)

