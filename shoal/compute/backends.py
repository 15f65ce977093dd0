"""Where executors come from. ``local[N]``: N executor processes on this machine,
replaced if one dies. ``shoal://HOST:PORT`` / ``shoal``: containers from the
resource manager (``cluster_backend.py``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING

from shoal.errors import BadRequest

if TYPE_CHECKING:
    from shoal.compute.context import ComputeContext
    from shoal.compute.driver import Driver

# A local executor that died is replaced, up to this many times per executor slot,
# so a crash loop (e.g. a broken environment) does not spin forever.
MAX_REPLACEMENTS_PER_SLOT = 4
STOP_GRACE_S = 5.0


def make_backend(master: str, ctx: ComputeContext) -> tuple[object, int, int | None]:
    """The backend for a master URL, the default parallelism, and a task failure
    limit given in the URL (``local[N,F]``)."""
    from shoal.compute.context import parse_local_master

    local = parse_local_master(master)
    if local is not None:
        cores, failures = local
        # Departure from Spark: local mode retries failed tasks like a cluster does
        # (executors are real processes that can die), unless local[N,F] says otherwise.
        return LocalBackend(cores, ctx.executor_memory_bytes), cores, failures
    if master == "shoal" or master.startswith("shoal://") or os.path.isdir(master):
        from shoal.compute.cluster_backend import ClusterBackend

        backend = ClusterBackend(master, ctx)
        return backend, backend.default_parallelism, None
    raise BadRequest(f"unknown master {master!r}: use local, local[N], local[*], shoal or shoal://HOST:PORT")


class LocalBackend:
    """N executor processes, children of the driver (they die with it)."""

    bind_host = "127.0.0.1"
    advertise_host = "127.0.0.1"

    def __init__(self, cores: int, memory_bytes: int) -> None:
        self.cores = cores
        self.memory_bytes = memory_bytes
        self.app_dir = ""
        self.procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self._replacements = 0
        self._next = 0
        self._driver: Driver | None = None
        self._forked: dict[str, int] = {}
        self._reaped: dict[str, threading.Event] = {}  # set by each forked executor's watcher

    def prefork(self, driver: Driver) -> None:
        """Fork the first executors now, before the driver starts any thread: a
        fork costs milliseconds where a new interpreter costs ~200 ms of start-up
        and imports (the one-line job's whole budget)."""
        self._driver = driver
        self.app_dir = tempfile.mkdtemp(prefix=f"shoal-{driver.app_id}-")
        if os.environ.get("SHOAL_EXECUTOR_START", "fork") != "fork":
            return
        sys.stdout.flush()
        sys.stderr.flush()
        for _ in range(self.cores):
            executor_id, env = self._executor_env()
            pid = os.fork()
            if pid == 0:
                _run_forked_executor(env)
            self._forked[executor_id] = pid
            self._reaped[executor_id] = threading.Event()

    def start(self, driver: Driver) -> None:
        if self._driver is None:
            self.prefork(driver)
        for executor_id, pid in list(self._forked.items()):
            threading.Thread(target=self._watch_pid, args=(executor_id, pid), daemon=True,
                             name=f"watch-{executor_id}").start()
        for _ in range(self.cores - len(self._forked)):
            self._spawn()

    def _executor_env(self) -> tuple[str, dict[str, str]]:
        driver = self._driver
        assert driver is not None
        with self._lock:
            executor_id = f"local-{self._next}"
            self._next += 1
        work = os.path.join(self.app_dir, executor_id)
        os.makedirs(work, exist_ok=True)
        return executor_id, {
            "SHOAL_EXECUTOR_ID": executor_id,
            "SHOAL_EXECUTOR_DRIVER": f"{self.advertise_host}:{driver.address[1]}",
            "SHOAL_EXECUTOR_SECRET": driver.secret.hex(),
            "SHOAL_EXECUTOR_APP_ID": driver.app_id,
            "SHOAL_EXECUTOR_NODE_ID": "localhost",
            "SHOAL_EXECUTOR_WORK_DIR": work,
            "SHOAL_SHUFFLE_DIR": os.path.join(self.app_dir, "shuffle"),
            "SHOAL_EXECUTOR_MEMORY_BYTES": str(self.memory_bytes),
            "SHOAL_EXECUTOR_DIE_WITH_PARENT": "1",
            "SHOAL_EXECUTOR_PYTHONPATH": os.pathsep.join(_user_paths()),
        }

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping:
                return
        executor_id, extra = self._executor_env()
        env = dict(os.environ)
        env.update(extra)
        env.pop("SHOAL_SHUFFLE_SERVICE", None)
        proc = subprocess.Popen([sys.executable, "-m", "shoal.compute.executor"], env=env, cwd=os.getcwd(),
                                stdin=subprocess.DEVNULL)
        with self._lock:
            self.procs[executor_id] = proc
        threading.Thread(target=self._watch, args=(executor_id, proc), daemon=True,
                         name=f"watch-{executor_id}").start()

    def _watch_pid(self, executor_id: str, pid: int) -> None:
        try:
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            code = 0
        self._reaped[executor_id].set()
        self._exited(executor_id, pid, code)

    def _watch(self, executor_id: str, proc: subprocess.Popen) -> None:
        code = proc.wait()
        with self._lock:
            self.procs.pop(executor_id, None)
        self._exited(executor_id, proc.pid, code)

    def _exited(self, executor_id: str, pid: int, code: int) -> None:
        driver = self._driver
        assert driver is not None
        with self._lock:
            self._forked.pop(executor_id, None)
            if self._stopping or driver._stopped:
                return
            replace = self._replacements < MAX_REPLACEMENTS_PER_SLOT * self.cores
            self._replacements += 1
        reason = f"exited with status {code}" if code >= 0 else f"killed by signal {-code}"
        driver.loop.call_soon_threadsafe(driver.executor_lost, executor_id, f"process {pid} {reason}", False)
        if replace:
            self._spawn()

    def node_alive(self, node_id: str) -> bool:
        return True  # one machine: its shuffle files outlive any executor

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            procs = list(self.procs.values())
            forked = [(pid, self._reaped[eid]) for eid, pid in self._forked.items()]
        deadline = time.monotonic() + STOP_GRACE_S
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for pid, reaped in forked:
            _wait_or_kill(pid, reaped, deadline)
        if self.app_dir:
            shutil.rmtree(self.app_dir, ignore_errors=True)


def _wait_or_kill(pid: int, reaped: threading.Event, deadline: float) -> None:
    """Wait for a forked executor's watcher to reap it, else kill it."""
    if reaped.wait(max(0.0, deadline - time.monotonic())):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _run_forked_executor(env: dict[str, str]) -> None:
    """The body of a forked executor: never returns into the driver's code."""
    code = 0
    try:
        os.environ.update(env)
        os.environ.pop("SHOAL_SHUFFLE_SERVICE", None)
        from shoal.compute.executor import main

        main()
    except BaseException:  # report and leave: the driver sees the exit status
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def _user_paths() -> list[str]:
    """The driver's script directory and working directory, so executors can import
    modules that sit beside the driver program (cloudpickle pickles those by name)."""
    paths = []
    if sys.path and sys.path[0]:
        paths.append(os.path.abspath(sys.path[0]))
    paths.append(os.getcwd())
    return paths
