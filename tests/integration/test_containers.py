"""ContainerRuntime with real processes, cgroups and namespaces (whatever this machine
allows under "auto") and the process fallback: output, exit statuses, environment,
memory limits, kills, cleanup, orphan sweeps and health checks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from shoal.cluster.isolation import CGROUP_NAMES, ISOLATION_CGROUPS_V1_ONLY, ISOLATION_CGROUPS_V2_ONLY
from shoal.cluster.protocol import (
    ISOLATION_CGROUPS_V1,
    ISOLATION_CGROUPS_V2,
    ISOLATION_PROCESS,
    TERMINAL_STATES,
    HealthCheck,
    TaskSpec,
    TaskStatus,
)
from shoal.cluster.containers import ContainerRuntime
from shoal.cluster.resources import Resources
from shoal.errors import BadRequest, DuplicateTask, UnknownTask
from tests.conftest import wait_until

MODES = ["auto", "process"]
GRACE_S = 0.5
REPO = Path(__file__).resolve().parents[2]


class Statuses:
    """Collects on_status calls; waits on a condition for the one a test needs."""

    def __init__(self) -> None:
        self.items: list[TaskStatus] = []
        self.cond = threading.Condition()

    def __call__(self, status: TaskStatus) -> None:
        with self.cond:
            self.items.append(status)
            self.cond.notify_all()

    def of(self, task_id: str) -> list[TaskStatus]:
        with self.cond:
            return [s for s in self.items if s.task_id == task_id]

    def wait(self, task_id: str, pred: Callable[[TaskStatus], bool] = lambda s: s.state in TERMINAL_STATES,
             timeout_s: float = 20.0) -> TaskStatus:
        with self.cond:
            ok = self.cond.wait_for(lambda: any(pred(s) for s in self.items if s.task_id == task_id), timeout_s)
            assert ok, f"no matching status for {task_id} within {timeout_s}s: {self.of_locked(task_id)}"
            return next(s for s in self.items if s.task_id == task_id and pred(s))

    def of_locked(self, task_id: str) -> list[TaskStatus]:
        return [s for s in self.items if s.task_id == task_id]


class Env:
    """Runtimes made by a test, each with its own agent id; all shut down at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.statuses = Statuses()
        self.runtimes: list[ContainerRuntime] = []

    def runtime(self, isolation: str = "auto", agent_id: str | None = None, root: Path | None = None,
                **kw: object) -> ContainerRuntime:
        rt = ContainerRuntime(root or self.root, agent_id=agent_id or f"agent-{uuid.uuid4().hex[:8]}",
                              isolation=isolation, kill_grace_s=GRACE_S, memory_poll_s=0.05,
                              on_status=self.statuses, **kw)  # type: ignore[arg-type]
        self.runtimes.append(rt)
        return rt


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path / "containers")
    yield e
    for rt in reversed(e.runtimes):
        rt.shutdown()


def tid() -> str:
    return f"task-{uuid.uuid4().hex[:10]}"


def spec(task_id: str, command: list[str] | str, *, mem: float = 64, cpus: float = 0.5, ports: list[int] | None = None,
         health: HealthCheck | None = None, env: dict[str, str] | None = None) -> TaskSpec:
    shell = isinstance(command, str)
    res = Resources.of(cpus=cpus, mem=mem)
    if ports:
        res = res.with_ranges("ports", [(p, p) for p in ports])
    return TaskSpec(task_id, task_id, [command] if shell else command, res, shell=shell, env=env or {},
                    health=health)


def read_all(rt: ContainerRuntime, task_id: str, stream: str, chunk: int = 1 << 20) -> bytes:
    out, offset = b"", 0
    while True:
        c = rt.read_output(task_id, stream, offset, chunk)
        out, offset = out + c.data, c.offset
        if c.finished:
            return out
        assert c.data, "read_output returned nothing but not finished after the container ended"


def container_pids(task_id: str) -> set[int]:
    """Live processes carrying the container's SHOAL_TASK_ID (found independently of the runtime)."""
    found = set()
    for p in psutil.process_iter():
        try:
            if p.environ().get("SHOAL_TASK_ID") == task_id and p.status() != psutil.STATUS_ZOMBIE:
                found.add(p.pid)
        except psutil.Error:
            pass
    return found


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def cgroup_mounts() -> list[Path]:
    """Every cgroup hierarchy mounted here (v1 per controller, and v2), read from /proc."""
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        f = line.split()
        if f[2] in ("cgroup", "cgroup2"):
            mounts.append(Path(f[1]))
    return mounts


def cgroup_dirs(agent_id: str, task_id: str | None = None) -> list[Path]:
    """Existing cgroup dirs of this agent (``shoal/<agent_id>-<digest of its folder>``), or
    of one of its containers, in any hierarchy. Agent ids are unique per test."""
    agent_dirs = [d for m in cgroup_mounts() for d in (m / "shoal").glob(f"{agent_id}-*")]
    return [d / task_id for d in agent_dirs if (d / task_id).exists()] if task_id else agent_dirs


def expected_auto_isolation() -> str:
    """What "auto" must give, judged from the machine rather than from the code under test."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    root = os.geteuid() == 0
    namespaces = root and shutil.which("unshare") is not None
    if v2.exists() and {"memory", "cpu"} <= set(v2.read_text().split()) and os.access("/sys/fs/cgroup", os.W_OK):
        return ISOLATION_CGROUPS_V2 if namespaces else ISOLATION_CGROUPS_V2_ONLY
    v1 = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        f = line.split()
        if f[2] == "cgroup":
            for opt in f[3].split(","):
                v1[opt] = f[1]
    if "memory" in v1 and "cpu" in v1 and all(os.access(v1[c], os.W_OK) for c in ("memory", "cpu")):
        return ISOLATION_CGROUPS_V1 if namespaces else ISOLATION_CGROUPS_V1_ONLY
    return ISOLATION_PROCESS


# --- isolation ---------------------------------------------------------------------------------------
def test_isolation_names_what_it_got(env: Env) -> None:
    assert env.runtime("auto").isolation == expected_auto_isolation()
    assert env.runtime("process").isolation == ISOLATION_PROCESS


def test_cgroup_limits_applied_while_running(env: Env) -> None:
    rt = env.runtime("auto")
    t = tid()
    rt.launch(spec(t, ["sleep", "1000"], mem=96, cpus=0.25), "fw")
    env.statuses.wait(t, lambda s: s.state == "running")
    dirs = cgroup_dirs(rt.agent_id, t)
    if rt.isolation in (ISOLATION_CGROUPS_V1, ISOLATION_CGROUPS_V1_ONLY):
        mem = next(d for d in dirs if (d / "memory.limit_in_bytes").exists())
        cpu = next(d for d in dirs if (d / "cpu.cfs_quota_us").exists())
        assert int((mem / "memory.limit_in_bytes").read_text()) == 96 * 1024 * 1024
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == 25_000
        assert int((cpu / "cpu.cfs_period_us").read_text()) == 100_000
        wait_until(lambda: len((mem / "cgroup.procs").read_text().split()) >= 1, 5)
    elif rt.isolation in (ISOLATION_CGROUPS_V2, ISOLATION_CGROUPS_V2_ONLY):
        (d,) = dirs
        assert int((d / "memory.max").read_text()) == 96 * 1024 * 1024
        assert (d / "cpu.max").read_text().split() == ["25000", "100000"]
    else:
        assert dirs == []
    rt.kill(t)
    env.statuses.wait(t)
    assert cgroup_dirs(rt.agent_id, t) == []


# --- output and exit statuses -----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_output_round_trip_with_offsets(env: Env, mode: str) -> None:
    rt = env.runtime(mode)
    t = tid()
    big = 200_000
    rt.launch(spec(t, f"echo hello; printf 'x%.0s' $(seq {big}) >&2; pwd"), "fw")
    end = env.statuses.wait(t)
    assert (end.state, end.message, end.exit_code) == ("finished", "exited with status 0", 0)
    first = rt.read_output(t, "stdout", 0, 3)
    assert (first.data, first.offset, first.finished) == (b"hel", 3, False)
    rest = rt.read_output(t, "stdout", 3, 1 << 20)
    sandbox = rt.root / t / "sandbox"
    assert rest.data == b"lo\n" + str(sandbox).encode() + b"\n" and rest.finished
    assert read_all(rt, t, "stderr", chunk=30_000) == b"x" * big
    past = rt.read_output(t, "stderr", big + 10, 100)
    assert past.data == b"" and past.finished
    assert not sandbox.exists(), "the sandbox must be removed when the container ends"
    with pytest.raises(BadRequest):
        rt.read_output(t, "stdin", 0, 10)


@pytest.mark.parametrize("mode", MODES)
def test_exit_statuses(env: Env, mode: str) -> None:
    rt = env.runtime(mode)
    ok, bad, segv = tid(), tid(), tid()
    rt.launch(spec(ok, ["true"]), "fw")
    rt.launch(spec(bad, "exit 3"), "fw")
    rt.launch(spec(segv, "kill -SEGV $$"), "fw")
    s = env.statuses.wait(ok)
    assert (s.state, s.message, s.exit_code) == ("finished", "exited with status 0", 0)
    assert [x.state for x in env.statuses.of(ok)] == ["running", "finished"]
    s = env.statuses.wait(bad)
    assert (s.state, s.message, s.exit_code) == ("failed", "exited with status 3", 3)
    s = env.statuses.wait(segv)
    assert (s.state, s.message, s.exit_code) == ("failed", "terminated by signal SIGSEGV", None)
    assert rt.status(bad).message == "exited with status 3" and rt.status(segv) == s


@pytest.mark.parametrize("mode", MODES)
def test_command_that_cannot_run_fails(env: Env, mode: str, tmp_path: Path) -> None:
    rt = env.runtime(mode)
    missing, noexec = tid(), tid()
    rt.launch(spec(missing, ["nosuchcmd-shoal"]), "fw")  # launch does not raise for user errors
    plain = tmp_path / "not-executable"
    plain.write_text("echo hi\n")
    rt.launch(spec(noexec, [str(plain)]), "fw")
    s = env.statuses.wait(missing)
    assert (s.state, s.message) == ("failed", "cannot run 'nosuchcmd-shoal': No such file or directory")
    s = env.statuses.wait(noexec)
    assert (s.state, s.message) == ("failed", f"cannot run '{plain}': Permission denied")
    assert rt.reports() == [] and rt.used() == Resources()


@pytest.mark.parametrize("mode", MODES)
def test_environment(env: Env, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_CLUSTER_SECRET", "do-not-leak")
    monkeypatch.setenv("SHOAL_TEST_VISIBLE", "no")
    rt = env.runtime(mode)
    t = tid()
    rt.launch(spec(t, ["env"], ports=[31007, 31009], env={"GREETING": "hi"}), "fw")
    assert env.statuses.wait(t).state == "finished"
    got = dict(line.split("=", 1) for line in read_all(rt, t, "stdout").decode().splitlines() if "=" in line)
    assert got["PORT0"] == got["PORT"] == "31007" and got["PORT1"] == "31009"
    assert got["SHOAL_TASK_ID"] == t and got["GREETING"] == "hi"
    assert got["SANDBOX"] == got["SHOAL_SANDBOX"] == str(rt.root / t / "sandbox")
    assert "HOST" in got and "SHOAL_CLUSTER_SECRET" not in got and "SHOAL_TEST_VISIBLE" not in got


# --- memory limit --------------------------------------------------------------------------------------------
HOG = "import time\nb = b'x' * (200 * 1024 * 1024)\nprint('allocated', flush=True)\ntime.sleep(60)\n"


@pytest.mark.parametrize("mode", MODES)
def test_memory_hog_is_killed_with_yarns_message(env: Env, mode: str) -> None:
    rt = env.runtime(mode)
    t = tid()
    rt.launch(spec(t, [sys.executable, "-c", HOG], mem=64), "fw")
    s = env.statuses.wait(t)
    assert (s.state, s.message) == ("failed", "container exceeded its memory limit (64 MiB)")
    assert container_pids(t) == set()
    assert cgroup_dirs(rt.agent_id, t) == []


# --- kill and cleanup ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_kill_ends_killed_and_leaves_no_process(env: Env, mode: str) -> None:
    rt = env.runtime(mode)
    t = tid()
    # The task spawns a grandchild in the background and waits for it.
    rt.launch(spec(t, "sleep 1000 & echo started; wait"), "fw")
    wait_until(lambda: rt.read_output(t, "stdout", 0, 100).data == b"started\n", 10)
    assert not rt.read_output(t, "stdout", 0, 100).finished
    pids = container_pids(t)
    assert any(psutil.Process(p).name() == "sleep" for p in pids), "the background grandchild should be running"
    if rt.isolation in CGROUP_NAMES:
        assert cgroup_dirs(rt.agent_id, t), "a cgroup isolation must have made groups for the container"
    assert rt.status(t).state == "running" and rt.used() == Resources.of(cpus=0.5, mem=64)
    rt.kill(t, "asked to stop")
    s = env.statuses.wait(t)
    assert (s.state, s.message) == ("killed", "asked to stop")
    assert alive(pids) == set() and container_pids(t) == set()
    assert cgroup_dirs(rt.agent_id, t) == []
    assert not (rt.root / t / "sandbox").exists() and (rt.root / t / "stdout").exists()
    assert rt.reports() == [] and rt.used() == Resources()
    rt.kill(t)  # killing an ended container is a no-op


@pytest.mark.parametrize("mode", MODES)
def test_kill_escalates_to_sigkill_when_sigterm_is_ignored(env: Env, mode: str) -> None:
    rt = env.runtime(mode)
    t = tid()
    rt.launch(spec(t, "trap '' TERM; echo ready; sleep 1000 & wait"), "fw")
    wait_until(lambda: rt.read_output(t, "stdout", 0, 100).data == b"ready\n", 10)
    started = time.monotonic()
    rt.kill(t, "stop")
    s = env.statuses.wait(t)
    assert (s.state, s.message) == ("killed", "stop")
    assert time.monotonic() - started >= GRACE_S * 0.9
    assert container_pids(t) == set()


def test_ids_errors_and_relaunch(env: Env) -> None:
    rt = env.runtime("process")
    t = tid()
    rt.launch(spec(t, ["sleep", "1000"]), "fw")
    with pytest.raises(DuplicateTask):
        rt.launch(spec(t, ["true"]), "fw")
    for bad in ("../escape", "", "a/b"):
        with pytest.raises(BadRequest):
            rt.launch(spec(bad, ["true"]), "fw")
    with pytest.raises(UnknownTask):
        rt.kill("no-such-task")
    with pytest.raises(UnknownTask):
        rt.status("no-such-task")
    with pytest.raises(UnknownTask):
        rt.read_output("no-such-task", "stdout", 0, 1)
    rt.kill(t)
    assert env.statuses.wait(t).state == "killed"
    rt.launch(spec(t, "echo again"), "fw2")  # an ended id may be reused (service instances are)
    assert env.statuses.wait(t, lambda s: s.state == "finished").framework_id == "fw2"
    assert read_all(rt, t, "stdout") == b"again\n"


@pytest.mark.parametrize("mode", MODES)
def test_shutdown_kills_running_containers_and_removes_everything(env: Env, mode: str) -> None:
    rt = env.runtime(mode)
    tasks = [tid() for _ in range(3)]
    for t in tasks:
        rt.launch(spec(t, "sleep 1000 & wait"), "fw")
    for t in tasks:
        env.statuses.wait(t, lambda s: s.state == "running")
    wait_until(lambda: all(container_pids(t) for t in tasks), 10)
    pids = set().union(*(container_pids(t) for t in tasks))
    rt.shutdown()
    for t in tasks:
        s = env.statuses.wait(t, timeout_s=0.1)
        assert (s.state, s.message) == ("killed", "agent shutdown")
    assert alive(pids) == set()
    assert cgroup_dirs(rt.agent_id) == []
    assert list(rt.root.iterdir()) == []


# --- orphans --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_sweep_orphans_cleans_a_previous_runtimes_leftovers(env: Env, mode: str) -> None:
    """Simulation: the first runtime is simply abandoned (never shut down) and a second
    one starts on the same folder with the same agent id. This leaves *more* behind than
    a real kill -9 would (there, PR_SET_PDEATHSIG also kills the direct child), so the
    sweep must find everything from groups and records alone. The first runtime stays
    alive in this process and sees its container die; it is shut down at teardown."""
    agent_id = f"agent-{uuid.uuid4().hex[:8]}"
    first = env.runtime(mode, agent_id=agent_id)
    t = tid()
    first.launch(spec(t, "sleep 1000 & echo started; wait"), "fw")
    wait_until(lambda: first.read_output(t, "stdout", 0, 100).data == b"started\n", 10)
    pids = container_pids(t)
    assert pids
    second = env.runtime(mode, agent_id=agent_id)
    assert second.sweep_orphans() == 1
    assert alive(pids) == set() and container_pids(t) == set()
    assert cgroup_dirs(agent_id, t) == []
    assert not (second.root / t / "sandbox").exists()
    lost = second.status(t)
    assert lost.state == "lost" and "agent restarted" in lost.message
    assert read_all(second, t, "stdout") == b"started\n"
    assert second.sweep_orphans() == 0


def test_sweep_leaves_other_agents_with_the_same_id_alone(env: Env, tmp_path: Path) -> None:
    """Local clusters on one machine all have a "w1": groups are scoped by the agent's folder."""
    agent_id = f"agent-{uuid.uuid4().hex[:8]}"
    first = env.runtime("auto", agent_id=agent_id, root=tmp_path / "cluster-a")
    t = tid()
    first.launch(spec(t, ["sleep", "1000"]), "fw")
    env.statuses.wait(t, lambda s: s.state == "running")
    other = env.runtime("auto", agent_id=agent_id, root=tmp_path / "cluster-b")
    assert other.sweep_orphans() == 0
    assert first.status(t).state == "running" and container_pids(t)


AGENT_SCRIPT = """
import sys, threading
from pathlib import Path
from shoal.cluster.containers import ContainerRuntime
from shoal.cluster.protocol import TaskSpec
from shoal.cluster.resources import Resources
root, agent_id, mode, task_id = sys.argv[1:5]
running = threading.Event()
rt = ContainerRuntime(Path(root), agent_id=agent_id, isolation=mode,
                      on_status=lambda s: s.state == "running" and running.set())
rt.launch(TaskSpec(task_id, "t", ["sleep 1000 & echo started; wait"], Resources.of(cpus=0.1, mem=64), shell=True), "fw")
running.wait(20)
print("launched", flush=True)
threading.Event().wait()
"""


@pytest.mark.parametrize("mode", MODES)
def test_sweep_after_the_agent_was_killed_with_sigkill(env: Env, mode: str) -> None:
    """A real agent process is kill -9'd: PR_SET_PDEATHSIG kills the direct child (and with
    namespaces the whole PID namespace); whatever is left (background processes in the
    fallback, cgroups in any case) is removed by the next run's sweep."""
    agent_id, t = f"agent-{uuid.uuid4().hex[:8]}", tid()
    agent = subprocess.Popen([sys.executable, "-c", AGENT_SCRIPT, str(env.root), agent_id, mode, t],
                             stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert agent.stdout is not None and agent.stdout.readline() == b"launched\n"
        out = env.root / t / "stdout"
        wait_until(lambda: out.exists() and out.read_bytes() == b"started\n", 10)
        pids = container_pids(t)
        assert pids
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
    finally:
        agent.kill()
        agent.wait()
    second = env.runtime(mode, agent_id=agent_id)
    if second.isolation in CGROUP_NAMES:
        wait_until(lambda: alive(pids) == set(), 10)  # the namespace died with the agent
        assert cgroup_dirs(agent_id, t), "the dead agent's cgroups are left for the sweep"
    else:
        assert alive(pids), "the background sleep outlives the agent without cgroups"
    assert second.sweep_orphans() == 1
    assert alive(pids) == set() and container_pids(t) == set()
    assert cgroup_dirs(agent_id, t) == []
    assert second.status(t).state == "lost"


# --- health checks ------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_http_health_check_becomes_healthy(env: Env) -> None:
    rt = env.runtime("auto")
    t = tid()
    hc = HealthCheck("http", path="/", interval_s=0.1, timeout_s=1.0, grace_s=0.0, max_failures=100)
    rt.launch(spec(t, f"exec {sys.executable} -m http.server $PORT0 --bind 127.0.0.1", ports=[free_port()],
                   health=hc, mem=128), "fw")
    s = env.statuses.wait(t, lambda s: s.healthy is True)
    assert s.state == "running" and s.message == "health check passed"
    assert rt.status(t).healthy is True
    rt.kill(t)
    assert env.statuses.wait(t).state == "killed"


def test_cmd_health_check_failing_kills_the_task(env: Env) -> None:
    rt = env.runtime("auto")
    t = tid()
    hc = HealthCheck("cmd", command="false", interval_s=0.05, timeout_s=1.0, grace_s=0.0, max_failures=3)
    rt.launch(spec(t, ["sleep", "1000"], health=hc), "fw")
    s = env.statuses.wait(t)
    assert s.state == "failed" and s.message == "health check failed: command 'false' exited with status 1"
    assert s.healthy is False
    assert any(x.state == "running" and x.healthy is False for x in env.statuses.of(t))
    assert container_pids(t) == set()


def test_cmd_health_check_runs_in_sandbox_with_task_env(env: Env) -> None:
    rt = env.runtime("process")
    t = tid()
    hc = HealthCheck("cmd", command='test -f ready && test "$SHOAL_TASK_ID" = "$EXPECT"', interval_s=0.05,
                     timeout_s=1.0, grace_s=0.0, max_failures=1000)
    rt.launch(spec(t, "sleep 0.3; touch ready; sleep 1000", health=hc, env={"EXPECT": t}), "fw")
    env.statuses.wait(t, lambda s: s.healthy is True)
    rt.kill(t)
    env.statuses.wait(t)


@pytest.mark.slow
def test_only_the_most_recent_ended_containers_keep_their_output(env: Env) -> None:
    from shoal.cluster.containers import ENDED_KEPT

    rt = env.runtime("process")
    tasks = [tid() for _ in range(ENDED_KEPT + 3)]
    for t in tasks:
        rt.launch(spec(t, ["true"]), "fw")
    for t in tasks:
        env.statuses.wait(t)
    wait_until(lambda: len(list(rt.root.iterdir())) == ENDED_KEPT, 10)
    with env.statuses.cond:
        ended_order = [s.task_id for s in env.statuses.items if s.state in TERMINAL_STATES]
    for t in ended_order[:3]:
        with pytest.raises(UnknownTask):
            rt.status(t)
        assert not (rt.root / t).exists()
    for t in ended_order[3:]:
        assert rt.status(t).state == "finished" and (rt.root / t / "stdout").exists()
