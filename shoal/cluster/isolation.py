"""Container isolation on one agent: cgroups and namespaces where the kernel lets us,
a process session watched by the agent where it does not.

This module holds the interface (:class:`Isolator`, :class:`ContainerGroup`), the process
fallback, ``/proc`` parsing, the setup every container's child runs between fork and
exec, and :func:`detect_isolation`, which picks one isolator per agent and names what
it really got:

* **cgroups v2** (one group per container, ``<mount>/shoal/<scope>/<task_id>``, where
  the scope names one agent on this machine) or
  **cgroups v1** (that path in the memory, cpu and, if mounted, pids hierarchies):
  memory limit and CFS CPU quota, as Mesos' ``cgroups/mem`` + ``cgroups/cpu`` isolators
  and YARN's LinuxContainerExecutor with its CGroupsHandler do. The kernel enforces
  memory: a container over its limit is OOM-killed and the group's OOM counter says so
  (:mod:`shoal.cluster.cgroups`). When we are root and util-linux ``unshare`` works,
  each container also gets its own PID, mount and UTS namespaces (Mesos'
  ``namespaces/pid``) with a tiny init as PID 1 whose child is the task, so signals and
  exit statuses behave as outside a namespace (a bare task as PID 1 would ignore
  SIGTERM and even a self-sent SIGSEGV; :mod:`shoal.cluster.nsinit`). The init
  (``python -I -S``, ~8 MiB) and ``unshare`` count against the memory limit. Without
  namespaces the name says so (``cgroups-v1``, ``cgroups-v2``).
* **process fallback**: its own session (``setsid``), rlimits, and memory enforced the
  way YARN's ContainersMonitor does without cgroups: the agent samples the RSS of the
  container's processes and SIGKILLs them over the limit (see ``containers.py``).

Processes join their cgroups between fork and exec (``preexec_fn``), so nothing the task
starts escapes them. Every direct child gets ``PR_SET_PDEATHSIG=SIGKILL``; Linux sends
it when the *thread* that forked the child exits, so containers must be started from a
thread that lives as long as the agent (``ContainerRuntime`` has one launcher thread).
With namespaces, ``unshare --kill-child`` then takes the whole namespace down with it.

Rlimits set in every mode: ``RLIMIT_CORE=0`` (no core dumps filling sandboxes). Not
set on purpose: ``RLIMIT_AS`` (would turn an over-limit into a MemoryError in the task
before the monitor or the OOM killer can report it), ``RLIMIT_NPROC`` (counts every
process of the user, not of the container), ``RLIMIT_FSIZE`` (a per-file bound would
kill tasks writing large logs; disk is not enforced, as in Mesos' default setup).
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from shoal.cluster.protocol import (
    ISOLATION_CGROUPS_V1,
    ISOLATION_CGROUPS_V1_ONLY,
    ISOLATION_CGROUPS_V2,
    ISOLATION_CGROUPS_V2_ONLY,
    ISOLATION_PROCESS,
)
from shoal.cluster.resources import Resources

CGROUP_NAMES = frozenset({ISOLATION_CGROUPS_V1, ISOLATION_CGROUPS_V2, ISOLATION_CGROUPS_V1_ONLY,
                          ISOLATION_CGROUPS_V2_ONLY})

CGROUP_POLL_S = 0.01

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)  # loaded now: the child between fork and exec must not load libraries
_PAGE = os.sysconf("SC_PAGE_SIZE")


# --- /proc helpers -------------------------------------------------------------------------------
class ProcStat(NamedTuple):
    """The fields of ``/proc/<pid>/stat`` the isolators need."""

    pid: int
    state: str
    ppid: int
    session: int
    start_ticks: int
    rss_bytes: int

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X", "x")


def proc_stat(pid: int) -> ProcStat | None:
    """Parse ``/proc/<pid>/stat``; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or ')'.
    rest = raw[raw.rfind(b")") + 2:].split()
    try:
        return ProcStat(pid, rest[0].decode(), int(rest[1]), int(rest[3]), int(rest[19]), int(rest[21]) * _PAGE)
    except (IndexError, ValueError):
        return None


def all_procs() -> list[ProcStat]:
    """One pass over /proc (used once per monitor tick for every session-tracked container)."""
    stats = (proc_stat(int(name)) for name in os.listdir("/proc") if name.isdigit())
    return [st for st in stats if st is not None]


def send_signal(pid: int, sig: int, group: bool = False) -> None:
    """Signal a process (or with ``group`` its process group); gone or foreign is no error."""
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def signal_name(signum: int) -> str:
    """``SIGKILL`` for 9; ``signal 40`` for numbers without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def make_child_setup(procs_files: list[bytes]) -> Callable[[], None]:
    """The function run in the child between fork and exec: only plain system calls."""
    agent_pid = os.getpid()

    def setup() -> None:
        if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != agent_pid:  # the agent died before prctl took effect
            os._exit(137)
        pid = str(os.getpid()).encode()
        for path in procs_files:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return setup


# --- container groups ----------------------------------------------------------------------------
class ContainerGroup:
    """The processes of one container, however they are tracked."""

    def __init__(self) -> None:
        self.leader = 0  # pid of the direct child (the task, or the unshare wrapper)

    def child_setup(self) -> Callable[[], None]:
        """The ``preexec_fn`` for the container's direct child."""
        return make_child_setup([])

    def started(self, leader: int) -> None:
        self.leader = leader

    def pids(self) -> list[int]:
        """Live (non-zombie) processes of the container."""
        raise NotImplementedError

    def terminate(self) -> None:
        """SIGTERM the task (the first step of a Mesos/YARN kill)."""
        raise NotImplementedError

    def kill_all(self) -> None:
        """SIGKILL every process of the container."""
        for pid in self.pids():
            send_signal(pid, signal.SIGKILL)

    def memory_limit_hit(self, sigkilled: bool) -> bool:
        """True if the kernel killed a process for exceeding the memory limit."""
        return False

    def destroy(self, timeout_s: float) -> bool:
        """Kill every process, wait until none is left, remove the group; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.kill_all()
            if not self.pids() and self._remove():
                return True
            if time.monotonic() >= deadline:
                return False
            # Dying processes leave the group asynchronously and v1 has no event for
            # "empty": re-check at a fixed interval until the deadline.
            time.sleep(CGROUP_POLL_S)

    def _remove(self) -> bool:
        return True


class SessionGroup(ContainerGroup):
    """Process fallback: the container is the session the direct child leads (setsid).

    Members are found by session id, so orphaned grandchildren reparented to init are
    still found (a tree walk from the leader, as YARN's ProcfsBasedProcessTree does, would
    miss them). A task that calls setsid itself escapes, as it would in YARN's default
    executor; cgroups close that hole.
    """

    def __init__(self, leader: int = 0, leader_start_ticks: int | None = None) -> None:
        super().__init__()
        self.leader = leader
        self.leader_start = leader_start_ticks

    def started(self, leader: int) -> None:
        self.leader = leader
        st = proc_stat(leader)
        self.leader_start = st.start_ticks if st else None

    def members(self, procs: list[ProcStat] | None = None) -> list[ProcStat]:
        """Live processes of this session (all of /proc is scanned unless ``procs`` given)."""
        if not self.leader:
            return []
        procs = all_procs() if procs is None else procs
        if self.leader_start is not None:
            lead = next((p for p in procs if p.pid == self.leader), None)
            if lead is not None and lead.start_ticks != self.leader_start:
                return []  # the pid was reused: the container's session cannot exist any more
        lo = self.leader_start or 0
        return [p for p in procs if p.session == self.leader and p.alive and p.start_ticks >= lo]

    def pids(self) -> list[int]:
        return [p.pid for p in self.members()]

    def terminate(self) -> None:
        send_signal(self.leader, signal.SIGTERM, group=True)  # YARN signals the container's process group


# --- isolators -------------------------------------------------------------------------------------
class Isolator:
    """Creates and finds container groups; subclasses per mechanism."""

    name: str = ISOLATION_PROCESS
    enforces_memory = False  # True: the kernel enforces the limit; False: the agent samples RSS
    namespaced = False

    def __init__(self, scope: str, notes: list[str] | None = None) -> None:
        self.scope = scope  # this agent's cgroup folder name, unique on the machine
        self.notes = notes or []  # why detection chose this isolator (for the agent's log)

    def create(self, task_id: str, resources: Resources) -> ContainerGroup:
        """Make the group a new container will join."""
        return SessionGroup()

    def wrap(self, argv: list[str], status_path: Path) -> list[str]:
        """The argv actually executed (namespaced isolators add unshare and init)."""
        return argv

    def attach(self, task_id: str) -> ContainerGroup | None:
        """The group a previous run of this agent left for ``task_id``, if any."""
        return None

    def leftovers(self) -> list[str]:
        """Task ids of groups a previous run of this agent left behind."""
        return []

    def release(self) -> None:
        """Remove this agent's parent groups (when empty) at shutdown."""


class ProcessIsolator(Isolator):
    """Fallback: session + rlimits; memory enforced by the runtime's monitor."""

    name = ISOLATION_PROCESS


# --- detection -------------------------------------------------------------------------------------
def detect_isolation(mode: str, scope: str = "default") -> Isolator:
    """The best isolator this machine allows: ``mode`` "auto", or "process" to force the fallback.

    ``scope`` names this agent's cgroup folder (``shoal/<scope>/``): unique on the machine
    and stable across restarts (``ContainerRuntime`` derives it from the agent id and its
    folder). "auto" tries cgroups v2 (memory and cpu controllers, a child group can be
    created), then v1 (writable memory and cpu hierarchies), each with namespaces when
    root and ``unshare`` works; every probe really creates (and removes) a group.
    """
    if mode == "process":
        return ProcessIsolator(scope, ["isolation=process requested"])
    if mode != "auto":
        raise ValueError(f"unknown isolation mode {mode!r} (expected 'auto' or 'process')")
    notes: list[str] = []
    if not sys.platform.startswith("linux"):
        return ProcessIsolator(scope, ["not Linux: no cgroups"])
    from shoal.cluster.cgroups import detect_cgroups  # here, not at the top: cgroups builds on this module

    return detect_cgroups(scope, notes) or ProcessIsolator(scope, notes)
