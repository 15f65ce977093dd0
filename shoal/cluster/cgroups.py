"""cgroup isolation: one group per container under ``<mount>/shoal/<scope>/<task_id>``.

**cgroups v2** uses one dir in the unified hierarchy, **cgroups v1** that path in the
memory, cpu and, if mounted, pids hierarchies. Each gets a memory limit and a CFS CPU
quota, as Mesos' ``cgroups/mem`` + ``cgroups/cpu`` isolators and YARN's
LinuxContainerExecutor with its CGroupsHandler do; the kernel enforces memory (a
container over its limit is OOM-killed and the group's OOM counter says so). With a
working ``unshare`` each container also gets PID, mount and UTS namespaces
(:mod:`shoal.cluster.nsinit`). :func:`detect_cgroups` really creates (and removes) a
group before choosing a version.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from shoal.cluster.isolation import ContainerGroup, Isolator, make_child_setup, proc_stat, send_signal
from shoal.cluster.nsinit import init_argv, probe_unshare
from shoal.cluster.protocol import (
    ISOLATION_CGROUPS_V1,
    ISOLATION_CGROUPS_V1_ONLY,
    ISOLATION_CGROUPS_V2,
    ISOLATION_CGROUPS_V2_ONLY,
)
from shoal.cluster.resources import Resources

CGROUP_PARENT = "shoal"  # Mesos --cgroups_root=mesos, YARN's /hadoop-yarn
CGROUP_V2_MOUNT = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 100_000  # Mesos and YARN both use the kernel's default 100 ms period
CFS_QUOTA_MIN_US = 1_000  # the kernel refuses quotas below 1 ms
CPU_SHARES_PER_CPU = 1024
CGROUP_DESTROY_TIMEOUT_S = 10.0
MiB = 1024 * 1024


def cgroup_scope(agent_id: str, root: Path) -> str:
    """This agent's cgroup folder: its id plus a digest of its container folder, because
    agent ids ("w1") repeat across the local clusters one machine may run at once; an
    agent restarted on the same folder finds its previous run's groups again."""
    digest = hashlib.sha256(os.fsencode(root.resolve())).hexdigest()[:8]
    return f"{agent_id}-{digest}"


# --- groups ----------------------------------------------------------------------------------------
class CgroupGroup(ContainerGroup):
    """A container's cgroup(s): one dir in v2, one per hierarchy in v1 (memory first)."""

    def __init__(self, dirs: list[Path], version: int, namespaced: bool) -> None:
        super().__init__()
        self.dirs = dirs
        self.version = version
        self.namespaced = namespaced

    def child_setup(self) -> Callable[[], None]:
        return make_child_setup([os.fsencode(d / "cgroup.procs") for d in self.dirs])

    def pids(self) -> list[int]:
        stats = (proc_stat(int(pid)) for pid in _read(self.dirs[0] / "cgroup.procs").split())
        return [st.pid for st in stats if st is not None and st.alive]

    def terminate(self) -> None:
        if not self.namespaced:
            send_signal(self.leader, signal.SIGTERM, group=True)
            return
        # The leader is unshare: SIGTERM to it would SIGKILL the namespace (--kill-child).
        # Signal our init (the leader's child), which forwards to the task's group.
        stats = [st for st in map(proc_stat, self.pids()) if st is not None]
        targets = [st.pid for st in stats if st.ppid == self.leader]
        if not targets:  # init not forked yet: signal whatever is there but unshare
            targets = [st.pid for st in stats if st.pid != self.leader]
        for pid in targets:
            send_signal(pid, signal.SIGTERM)

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


# --- isolator --------------------------------------------------------------------------------------
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
        return init_argv(self.unshare, argv, status_path)

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
def detect_cgroups(scope: str, notes: list[str]) -> CgroupIsolator | None:
    """cgroups v2 (memory and cpu controllers, a child group can be created), else v1
    (writable memory and cpu hierarchies), with namespaces when ``unshare`` works; None
    if neither, with the reasons in ``notes``."""
    version, mounts = _probe_v2(notes) or _probe_v1(notes) or (0, [])
    if not version:
        return None
    unshare = probe_unshare(notes)
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


# --- cgroup files ----------------------------------------------------------------------------------
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
