"""Where executors come from. ``local[N]``: N executor processes on this machine,
replaced if one dies. ``shoal://HOST:PORT`` / ``shoal``: containers from the
resource manager (``cluster_backend.py``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
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

    def start(self, driver: Driver) -> None:
        self._driver = driver
        self.app_dir = tempfile.mkdtemp(prefix=f"shoal-{driver.app_id}-")
        for _ in range(self.cores):
            self._spawn()

    def _spawn(self) -> None:
        driver = self._driver
        assert driver is not None
        with self._lock:
            if self._stopping:
                return
            executor_id = f"local-{self._next}"
            self._next += 1
        work = os.path.join(self.app_dir, executor_id)
        os.makedirs(work, exist_ok=True)
        env = dict(os.environ)
        env.update({
            "SHOAL_EXECUTOR_ID": executor_id,
            "SHOAL_EXECUTOR_DRIVER": f"{driver.address[0]}:{driver.address[1]}",
            "SHOAL_EXECUTOR_SECRET": driver.secret.hex(),
            "SHOAL_EXECUTOR_APP_ID": driver.app_id,
            "SHOAL_EXECUTOR_NODE_ID": "localhost",
            "SHOAL_EXECUTOR_WORK_DIR": work,
            "SHOAL_SHUFFLE_DIR": os.path.join(self.app_dir, "shuffle"),
            "SHOAL_EXECUTOR_MEMORY_BYTES": str(self.memory_bytes),
            "SHOAL_EXECUTOR_DIE_WITH_PARENT": "1",
            "SHOAL_EXECUTOR_PYTHONPATH": os.pathsep.join(_user_paths()),
        })
        env.pop("SHOAL_SHUFFLE_SERVICE", None)
        proc = subprocess.Popen([sys.executable, "-m", "shoal.compute.executor"], env=env, cwd=os.getcwd(),
                                stdin=subprocess.DEVNULL)
        with self._lock:
            self.procs[executor_id] = proc
        threading.Thread(target=self._watch, args=(executor_id, proc), daemon=True,
                         name=f"watch-{executor_id}").start()

    def _watch(self, executor_id: str, proc: subprocess.Popen) -> None:
        code = proc.wait()
        with self._lock:
            self.procs.pop(executor_id, None)
            if self._stopping:
                return
            replace = self._replacements < MAX_REPLACEMENTS_PER_SLOT * self.cores
            self._replacements += 1
        driver = self._driver
        assert driver is not None
        reason = f"exited with status {code}" if code >= 0 else f"killed by signal {-code}"
        driver.loop.call_soon_threadsafe(driver.executor_lost, executor_id, f"process {proc.pid} {reason}", False)
        if replace:
            self._spawn()

    def node_alive(self, node_id: str) -> bool:
        return True  # one machine: its shuffle files outlive any executor

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            procs = list(self.procs.values())
        for p in procs:
            try:
                p.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.app_dir:
            shutil.rmtree(self.app_dir, ignore_errors=True)


def _user_paths() -> list[str]:
    """The driver's script directory and working directory, so executors can import
    modules that sit beside the driver program (cloudpickle pickles those by name)."""
    paths = []
    if sys.path and sys.path[0]:
        paths.append(os.path.abspath(sys.path[0]))
    paths.append(os.getcwd())
    return paths
