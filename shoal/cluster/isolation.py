"""Container isolation on one agent: cgroups and namespaces where the kernel lets us,
a process session watched by the agent where it does not.

:func:`detect_isolation` picks one isolator per agent and names what it really got:

* **cgroups v2** (one group per container, ``<mount>/shoal/<scope>/<task_id>``, where
  the scope names one agent on this machine) or
  **cgroups v1** (that path in the memory, cpu and, if mounted, pids hierarchies):
  memory limit and CFS CPU quota, as Mesos' ``cgroups/mem`` + ``cgroups/cpu`` isolators
  and YARN's LinuxContainerExecutor with its CGroupsHandler do. The kernel enforces
  memory: a container over its limit is OOM-killed and the group's OOM counter says so.
  When we are root and util-linux ``unshare`` works, each container also gets its own
  PID, mount and UTS namespaces (Mesos' ``namespaces/pid``) with a tiny init as PID 1
  whose child is the task, so signals and exit statuses behave as outside a
  namespace (a bare task as PID 1 would ignore SIGTERM and even a self-sent SIGSEGV).
  The init (``python -I -S``, ~8 MiB) and ``unshare`` count against the memory limit.
  Without namespaces the name says so (``cgroups-v1``, ``cgroups-v2``).
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
import shutil
import signal
import subprocess
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

CGROUP_PARENT = "shoal"  # Mesos --cgroups_root=mesos, YARN's /hadoop-yarn
CGROUP_V2_MOUNT = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 100_000  # Mesos and YARN both use the kernel's default 100 ms period
CFS_QUOTA_MIN_US = 1_000  # the kernel refuses quotas below 1 ms
CPU_SHARES_PER_CPU = 1024
CGROUP_POLL_S = 0.01
CGROUP_DESTROY_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 10.0
MiB = 1024 * 1024

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)  # loaded now: the child between fork and exec must not load libraries
_PAGE = os.sysconf("SC_PAGE_SIZE")

# PID 1 of a container's PID namespace: runs the task as its child in a new session,
# forwards termination signals to the task's process group, reaps orphans, and writes the
# task's real outcome ("exit N", "signal N" or "exec ERRNO") to the file named by argv[1].
# Run with ``python -I -S`` so it starts in ~20 ms and ~8 MiB.
INIT_SOURCE = r"""
import os, signal, sys
status_path, argv = sys.argv[1], sys.argv[2:]
FORWARD = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
child = 0
def forward(signum, frame):
    if child:
        try:
            os.killpg(child, signum)
        except OSError:
            try:
                os.kill(child, signum)
            except OSError:
                pass
for s in FORWARD:
    signal.signal(s, forward)
def report(text):
    with open(status_path + ".tmp", "w") as f:
        f.write(text)
    os.replace(status_path + ".tmp", status_path)
r, w = os.pipe()
child = os.fork()
if child == 0:
    try:
        for s in FORWARD + (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(s, signal.SIG_DFL)
        os.close(r)
        os.setsid()
        os.execvp(argv[0], argv)
    except OSError as e:
        os.write(w, str(e.errno or 0).encode())
    except BaseException:
        os.write(w, b"0")
    os._exit(127)
os.close(w)
err = os.read(r, 32)
os.close(r)
status = None
while True:
    try:
        pid, st = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    if pid == child:
        status = st
        break
if err:
    report("exec " + err.decode())
    os._exit(127)
if status is not None and os.WIFSIGNALED(status):
    report("signal %d" % os.WTERMSIG(status))
    os._exit(128 + os.WTERMSIG(status))
code = os.WEXITSTATUS(status) if status is not None else 255
report("exit %d" % code)
os._exit(code)
"""


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


def _signal(pid: int, sig: int, group: bool = False) -> None:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _child_setup(procs_files: list[bytes]) -> Callable[[], None]:
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
        return _child_setup([])

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
            _signal(pid, signal.SIGKILL)

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
            time.sleep(CGROUP_POLL_S)  # polling with a deadline, not synchronisation

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
        _signal(self.leader, signal.SIGTERM, group=True)  # YARN signals the container's process group


class CgroupGroup(ContainerGroup):
    """A container's cgroup(s): one dir in v2, one per hierarchy in v1 (memory first)."""

    def __init__(self, dirs: list[Path], version: int, namespaced: bool) -> None:
        super().__init__()
        self.dirs = dirs
        self.version = version
        self.namespaced = namespaced

    def child_setup(self) -> Callable[[], None]:
        return _child_setup([os.fsencode(d / "cgroup.procs") for d in self.dirs])

    def pids(self) -> list[int]:
        stats = (proc_stat(int(pid)) for pid in _read(self.dirs[0] / "cgroup.procs").split())
        return [st.pid for st in stats if st is not None and st.alive]

    def terminate(self) -> None:
        if not self.namespaced:
            _signal(self.leader, signal.SIGTERM, group=True)
            return
        # The leader is unshare: SIGTERM to it would SIGKILL the namespace (--kill-child).
        # Signal our init (the leader's child), which forwards to the task's group.
        stats = [st for st in map(proc_stat, self.pids()) if st is not None]
        targets = [st.pid for st in stats if st.ppid == self.leader]
        if not targets:  # init not forked yet: signal whatever is there but unshare
            targets = [st.pid for st in stats if st.pid != self.leader]
        for pid in targets:
            _signal(pid, signal.SIGTERM)

    def kill_all(self) -> None:
        if self.version == 2 and (self.dirs[0] / "cgroup.kill").exists():
            try:
                _write(self.dirs[0] / "cgroup.kill", "1")
            except OSError:
                pass
        super().kill_all()

    def memory_limit_hit(self, sigkilled: bool) -> bool:
        if self.version == 2:
            return _counter(_read(self.dirs[0] / "memory.events"), "oom_kill") > 0
        text = _read(self.dirs[0] / "memory.oom_control")
        if "oom_kill " in text:  # kernels >= 4.13 count OOM kills per group
            return _counter(text, "oom_kill") > 0
        failcnt = _read(self.dirs[0] / "memory.failcnt").strip()
        return sigkilled and failcnt.isdigit() and int(failcnt) > 0

    def _remove(self) -> bool:
        done = True
        for d in self.dirs:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:  # EBUSY while the kernel still releases the last task
                done = False
        return done


def _counter(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


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


class CgroupIsolator(Isolator):
    """cgroups v1 or v2, optionally with PID/mount/UTS namespaces via ``unshare``."""

    enforces_memory = True

    def __init__(self, scope: str, version: int, mounts: list[Path], unshare: str | None,
                 notes: list[str] | None = None) -> None:
        super().__init__(scope, notes)
        self.version = version
        self.mounts = mounts  # v2: [the unified mount]; v1: memory, cpu[, pids] hierarchies
        self.unshare = unshare
        self.namespaced = unshare is not None
        if version == 2:
            self.name = ISOLATION_CGROUPS_V2 if unshare else ISOLATION_CGROUPS_V2_ONLY
        else:
            self.name = ISOLATION_CGROUPS_V1 if unshare else ISOLATION_CGROUPS_V1_ONLY

    def _agent_dirs(self) -> list[Path]:
        return [m / CGROUP_PARENT / self.scope for m in self.mounts]

    def create(self, task_id: str, resources: Resources) -> ContainerGroup:
        dirs = [d / task_id for d in self._agent_dirs()]
        if any(d.exists() for d in dirs):  # a stale group under this id: start from a fresh one
            CgroupGroup(dirs, self.version, self.namespaced).destroy(CGROUP_DESTROY_TIMEOUT_S)
        for attempt in range(3):  # another agent may remove an empty parent meanwhile
            try:
                if self.version == 2:
                    _enable_v2_controllers(self.mounts[0], [CGROUP_PARENT, self.scope])
                for d in dirs:
                    d.mkdir(parents=True, exist_ok=True)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        group = CgroupGroup(dirs, self.version, self.namespaced)
        try:
            self._limit(dirs, resources)
        except OSError:
            group.destroy(CGROUP_DESTROY_TIMEOUT_S)
            raise
        return group

    def _limit(self, dirs: list[Path], resources: Resources) -> None:
        mem = int(resources.mem * MiB)
        quota = max(CFS_QUOTA_MIN_US, int(resources.cpus * CFS_PERIOD_US)) if resources.cpus > 0 else 0
        if self.version == 2:
            d = dirs[0]
            if mem:
                _write(d / "memory.max", str(mem))
                for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                    if (d / name).exists():
                        _write(d / name, value)
            if quota:
                _write(d / "cpu.max", f"{quota} {CFS_PERIOD_US}")
            return
        memory_dir, cpu_dir = dirs[0], dirs[1]
        if mem:
            _write(memory_dir / "memory.limit_in_bytes", str(mem))
            if (memory_dir / "memory.memsw.limit_in_bytes").exists():  # no swapping past the limit
                _write(memory_dir / "memory.memsw.limit_in_bytes", str(mem))
        if resources.cpus > 0:
            _write(cpu_dir / "cpu.shares", str(max(2, int(resources.cpus * CPU_SHARES_PER_CPU))))
            if (cpu_dir / "cpu.cfs_quota_us").exists():
                _write(cpu_dir / "cpu.cfs_period_us", str(CFS_PERIOD_US))
                _write(cpu_dir / "cpu.cfs_quota_us", str(quota))

    def wrap(self, argv: list[str], status_path: Path) -> list[str]:
        if not self.unshare:
            return argv
        return [self.unshare, *UNSHARE_FLAGS, "--", sys.executable, "-I", "-S", "-c", INIT_SOURCE,
                str(status_path), *argv]

    def attach(self, task_id: str) -> ContainerGroup | None:
        dirs = [d / task_id for d in self._agent_dirs()]
        if not any(d.is_dir() for d in dirs):
            return None
        return CgroupGroup(dirs, self.version, self.namespaced)

    def leftovers(self) -> list[str]:
        found: set[str] = set()
        for d in self._agent_dirs():
            try:
                found.update(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))
            except OSError:
                pass
        return sorted(found)

    def release(self) -> None:
        for d in self._agent_dirs():
            for path in (d, d.parent):
                try:
                    path.rmdir()
                except OSError:
                    pass  # still used by other containers or agents


UNSHARE_FLAGS = ("--pid", "--fork", "--kill-child", "--mount-proc", "--uts", "--mount")


def _enable_v2_controllers(mount: Path, parts: list[str]) -> None:
    """Create ``mount/parts...`` enabling memory and cpu (and pids) for each level's children."""
    d = mount
    for part in [None, *parts]:
        if part is not None:
            d = d / part
            d.mkdir(exist_ok=True)
        available = set(_read(d / "cgroup.controllers").split())
        enabled = set(_read(d / "cgroup.subtree_control").split())
        want = {"memory", "cpu", "pids"} & available
        if want - enabled:
            _write(d / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(want - enabled)))


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
    version, mounts = _probe_v2(notes) or _probe_v1(notes) or (0, [])
    if not version:
        return ProcessIsolator(scope, notes)
    unshare = _probe_unshare(notes)
    return CgroupIsolator(scope, version, mounts, unshare, notes)


def _probe_group(parent: Path, check: Callable[[Path], None], v2: bool = False) -> None:
    """Create a throwaway child group under ``parent/shoal``, run ``check`` on it, remove it
    (and ``shoal`` too if the probe created it)."""
    base = parent / CGROUP_PARENT
    probe = base / f".probe-{os.getpid()}-{time.monotonic_ns()}"
    created_base = not base.exists()
    try:
        if v2:
            _enable_v2_controllers(parent, [CGROUP_PARENT])
        base.mkdir(exist_ok=True)
        probe.mkdir()
        try:
            check(probe)
        finally:
            probe.rmdir()
    finally:
        if created_base:
            try:
                base.rmdir()
            except OSError:
                pass


def _probe_v2(notes: list[str]) -> tuple[int, list[Path]] | None:
    controllers = set(_read(CGROUP_V2_MOUNT / "cgroup.controllers").split())
    if not {"memory", "cpu"} <= controllers:
        notes.append(f"cgroup v2: no memory+cpu controllers at {CGROUP_V2_MOUNT}")
        return None

    def check(probe: Path) -> None:
        got = set(_read(probe / "cgroup.controllers").split())
        if not {"memory", "cpu"} <= got:
            raise OSError(f"child group has controllers {sorted(got)}")

    try:
        _probe_group(CGROUP_V2_MOUNT, check, v2=True)
    except OSError as exc:
        notes.append(f"cgroup v2: cannot create a group with memory+cpu: {exc}")
        return None
    return 2, [CGROUP_V2_MOUNT]


def _v1_mounts() -> dict[str, Path]:
    """controller -> mount point of each cgroup v1 hierarchy (from /proc/self/mounts)."""
    out: dict[str, Path] = {}
    for line in _read(Path("/proc/self/mounts")).splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "cgroup":
            for opt in fields[3].split(","):
                out.setdefault(opt, Path(fields[1]))
    return out


def _probe_v1(notes: list[str]) -> tuple[int, list[Path]] | None:
    found = _v1_mounts()
    if "memory" not in found or "cpu" not in found:
        notes.append("cgroup v1: memory or cpu hierarchy not mounted")
        return None
    mounts = [found["memory"], found["cpu"]]
    if "pids" in found:
        mounts.append(found["pids"])
    mounts = list(dict.fromkeys(mounts))  # co-mounted controllers share one hierarchy
    if len(mounts) == 1:  # memory and cpu co-mounted: keep indexes 0 (memory) and 1 (cpu) valid
        mounts = [mounts[0], mounts[0]]
    try:
        _probe_group(found["memory"], lambda p: _write(p / "memory.limit_in_bytes", str(64 * MiB)))
        for m in set(mounts[1:]) - {found["memory"]}:
            _probe_group(m, lambda p: None)
    except OSError as exc:
        notes.append(f"cgroup v1: cannot create groups: {exc}")
        return None
    return 1, mounts


def _probe_unshare(notes: list[str]) -> str | None:
    if os.geteuid() != 0:
        notes.append("namespaces: not root")
        return None
    binary = shutil.which("unshare")
    if binary is None:
        notes.append("namespaces: no unshare binary")
        return None
    try:
        helptext = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S).stdout
        missing = [f for f in ("--kill-child", "--mount-proc") if f not in helptext]
        if missing:
            notes.append(f"namespaces: unshare lacks {', '.join(missing)}")
            return None
        rc = subprocess.run([binary, *UNSHARE_FLAGS, "--", sys.executable, "-I", "-S", "-c", "pass"],
                            capture_output=True, timeout=PROBE_TIMEOUT_S).returncode
    except (OSError, subprocess.SubprocessError) as exc:
        notes.append(f"namespaces: unshare failed: {exc}")
        return None
    if rc != 0:
        notes.append(f"namespaces: unshare exited with status {rc}")
        return None
    return binary


def parse_init_status(text: str) -> tuple[str, int] | None:
    """The init's report: ("exit", code), ("signal", signum) or ("exec", errno)."""
    kind, _, value = text.strip().partition(" ")
    if kind in ("exit", "signal", "exec") and value.lstrip("-").isdigit():
        return kind, int(value)
    return None
