"""Compute-engine failures with real processes: executors killed with -9 (local and
as cluster containers), a worker holding shuffle outputs killed between the map and
the reduce stage, a straggler beaten by its speculative copy, a groupByKey that must
spill, Ctrl-C in a driver program, and a task that always fails.

Tasks synchronise with the test through files: a task announces itself with a
marker file (its partition, attempt, pid and executor) and, where the scenario needs
it, waits for a release file (polling with a deadline, in small steps so a kill order
from the driver still interrupts it). The test waits for markers with ``wait_until``.
"""

from __future__ import annotations

import asyncio
import json
import operator
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import psutil
import pytest

from shoal.spark import SparkConf, SparkContext, TaskContext
from tests.conftest import RunningCluster, wait_until

pytestmark = pytest.mark.slow

GATE_LIMIT_S = 60.0  # a gated task gives up after this (the test has failed by then)
POLL_S = 0.02


# --- inside tasks ----------------------------------------------------------------------
def announce(directory: str, kind: str = "start") -> dict[str, Any]:
    """Write this task attempt's marker file: who and where it is."""
    tc = TaskContext.get()
    assert tc is not None
    info = {"partition": tc.partitionId(), "attempt": tc.attemptNumber(), "stage": tc.stageId(),
            "task_id": tc.taskAttemptId(), "pid": os.getpid(),
            "executor": os.environ.get("SHOAL_EXECUTOR_ID", ""), "node": tc.env.node_id}
    path = os.path.join(directory, f"{kind}-{info['task_id']}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(info, f)
    os.replace(path + ".tmp", path)
    return info


def wait_for_file(path: str, limit_s: float = GATE_LIMIT_S) -> None:
    """Block until ``path`` exists; a TimeoutError after ``limit_s`` (never a hang)."""
    deadline = time.monotonic() + limit_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {limit_s:g}s")
        time.sleep(POLL_S)


def gated(directory: str) -> Callable[[Iterator], Iterator]:
    """A mapPartitions function: announce, wait for ``release``, pass records through."""
    def run(it: Iterator) -> Iterator:
        announce(directory)
        wait_for_file(os.path.join(directory, "release"))
        return it

    return run


# --- in the test -----------------------------------------------------------------------
def markers(directory: Path, kind: str = "start") -> list[dict[str, Any]]:
    out = []
    for p in sorted(directory.glob(f"{kind}-*.json")):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            pass
    return sorted(out, key=lambda m: m["task_id"])


def in_background(fn: Callable[[], Any]) -> Future:
    """Run an action in a thread (it blocks until the job ends); its future."""
    fut: Future = Future()

    def run() -> None:
        try:
            fut.set_result(fn())
        except BaseException as exc:  # handed to the test thread
            fut.set_exception(exc)

    threading.Thread(target=run, daemon=True, name="job").start()
    return fut


def base_conf(tmp_path: Path, **settings: str) -> SparkConf:
    conf = (SparkConf().set("spark.shoal.jobsDir", str(tmp_path / "jobs"))
            .set("spark.ui.showConsoleProgress", "false"))
    for key, value in settings.items():
        conf.set(key, value)
    return conf


def app_record(tmp_path: Path, sc: SparkContext) -> dict[str, Any]:
    return json.loads((tmp_path / "jobs" / f"{sc.applicationId}.json").read_text())


def all_tasks(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for st in job["stages"] for t in st["tasks"]]


def executor_host_pid(executor_id: str) -> int:
    """The pid, as this machine sees it, of the executor process with this id (inside
    a container's PID namespace the executor's own ``os.getpid()`` is another number)."""
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = proc.info["cmdline"] or []
            if cmd[1:3] == ["-m", "shoal.compute.executor"] and proc.environ().get("SHOAL_EXECUTOR_ID") == executor_id:
                return proc.pid
        except (psutil.Error, IndexError):
            continue
    raise AssertionError(f"no process for executor {executor_id}")


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its parent counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    try:
        psutil.Process(pid).wait(10)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        raise AssertionError(f"process {pid} survived SIGKILL for 10s") from None


def squares_job(sc: SparkContext, gates: Path, n: int = 20000, parts: int = 4) -> Future:
    rdd = sc.parallelize(range(n), parts).mapPartitions(gated(str(gates))).map(lambda x: x * x)
    return in_background(rdd.sum)


def check_lost_attempt_retried(tmp_path: Path, sc: SparkContext, victim: dict[str, Any]) -> None:
    """The job record: the victim's attempt ended failed (its executor was lost) and
    its partition succeeded on a later attempt; the executor is listed as lost."""
    app = app_record(tmp_path, sc)
    job = app["jobs"][-1]
    assert job["state"] == "succeeded"
    tasks = [t for t in all_tasks(job) if t["partition"] == victim["partition"]]
    lost = next(t for t in tasks if t["task_id"] == victim["task_id"])
    assert lost["executor"] == victim["executor"]
    assert lost["state"] == "failed", lost  # not left "running" after its executor died
    assert "lost" in lost["error"], lost
    retries = [t for t in tasks if t["attempt"] > victim["attempt"] and t["state"] == "succeeded"]
    assert retries, tasks
    assert victim["executor"] in {e["executor"] for e in app["executors_lost"]}


# --- 1. kill -9 an executor mid-stage, local[2] -------------------------------------------
def test_executor_killed_mid_stage_local(tmp_path: Path) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    sc = SparkContext("local[2]", "kill-executor-local", conf=base_conf(tmp_path))
    try:
        job = squares_job(sc, gates)
        wait_until(lambda: len(markers(gates)) >= 2, timeout_s=20)  # both executors busy
        victim = markers(gates)[0]
        assert victim["pid"] == sc._driver.executors[victim["executor"]].info.pid
        kill9(victim["pid"])
        wait_until(lambda: victim["executor"] not in sc._driver.executors, timeout_s=10)
        (gates / "release").touch()
        assert job.result(timeout=30) == sum(x * x for x in range(20000))
        # The dead executor was replaced: two executors again, none of them the victim.
        wait_until(lambda: len(sc._driver.executors) == 2 and victim["executor"] not in sc._driver.executors,
                   timeout_s=10)
    finally:
        sc.stop()
    check_lost_attempt_retried(tmp_path, sc, victim)


# --- 2. kill -9 an executor container mid-stage, cluster -----------------------------------
def test_executor_container_killed_mid_stage_cluster(make_cluster, tmp_path: Path) -> None:
    rc: RunningCluster = make_cluster(workers=2, racks=1)
    gates = tmp_path / "gates"
    gates.mkdir()
    conf = base_conf(tmp_path, **{"spark.executor.instances": "2", "spark.executor.cores": "1",
                                  "spark.executor.memory": "256m", "spark.locality.wait": "0"})
    sc = SparkContext(str(rc.folder), "kill-executor-cluster", conf=conf)
    try:
        assert sc._driver.wait_for_executors(2, 30) == 2
        job = squares_job(sc, gates)
        wait_until(lambda: len(markers(gates)) >= 2, timeout_s=20)
        victim = markers(gates)[0]
        kill9(executor_host_pid(victim["executor"]))
        wait_until(lambda: victim["executor"] not in sc._driver.executors, timeout_s=15)
        (gates / "release").touch()
        assert job.result(timeout=30) == sum(x * x for x in range(20000))
        # A replacement container registers (on any worker: the node is still alive).
        wait_until(lambda: len(sc._driver.executors) == 2, timeout_s=20)
    finally:
        sc.stop()
    check_lost_attempt_retried(tmp_path, sc, victim)


# --- 3. kill a worker holding shuffle outputs between map and reduce -------------------------
@pytest.mark.parametrize("release", ["at-once", "after-node-lost"])
def test_worker_with_map_outputs_killed_before_reduce(make_cluster, tmp_path: Path, release: str) -> None:
    """``at-once``: the reducers fetch while the driver still believes in the node (the
    fetch failure alone must bring the outputs back); ``after-node-lost``: the driver
    has dropped the node's outputs already, the running reducers still hold its old
    addresses."""
    rc: RunningCluster = make_cluster(workers=3, racks=1)
    gates = tmp_path / "gates"
    gates.mkdir()
    conf = base_conf(tmp_path, **{"spark.executor.instances": "2", "spark.executor.cores": "1",
                                  "spark.executor.memory": "256m", "spark.locality.wait": "0",
                                  "spark.shoal.executorTimeout": "5s"})
    sc = SparkContext(str(rc.folder), "kill-worker", conf=conf)
    data = [(i % 101, i) for i in range(40000)]
    expected: dict[int, int] = {}
    for k, v in data:
        expected[k] = expected.get(k, 0) + v
    try:
        assert sc._driver.wait_for_executors(2, 30) == 2
        reduced = sc.parallelize(data, 12).reduceByKey(operator.add, 2).mapPartitions(gated(str(gates)))
        job = in_background(reduced.collect)
        sched = sc._driver.sched

        def map_done_and_reducers_waiting() -> bool:
            outs = list(sched.map_outputs.values())
            return (len(outs) == 1 and all(o is not None for o in outs[0])
                    and len({m["executor"] for m in markers(gates)}) == 2)

        wait_until(map_done_and_reducers_waiting, timeout_s=30)
        statuses = list(sched.map_outputs.values())[0]
        reducers = {m["node"]: m for m in markers(gates)}
        assert len(reducers) == 2  # one executor per worker: spread over two nodes
        # The node holding the most map outputs (at least 6 of 12, more than
        # spark.stage.maxConsecutiveAttempts); the reducer on the other node must fetch from it.
        holders = [st.node_id for st in statuses]
        victim = max(sorted(set(holders)), key=holders.count)
        assert holders.count(victim) >= 6
        lost_maps = {st.map_index for st in statuses if st.node_id == victim}
        assert victim in reducers  # it ran map tasks, so it has an executor
        victim_executor = reducers[victim]["executor"]
        victim_pid = executor_host_pid(victim_executor)
        shuffle_id = next(iter(sched.map_outputs))
        kill9(rc.worker_pid(victim))
        wait_until(lambda: gone(victim_pid), timeout_s=10)  # containers die with it
        if release == "after-node-lost":
            # The container is reported lost (agent timeout): the node's outputs are dropped.
            wait_until(lambda: all(sched.map_outputs[shuffle_id][m] is None for m in lost_maps), timeout_s=20)
        (gates / "release").touch()
        assert dict(job.result(timeout=60)) == expected
        # The driver learns that the node's executor is gone, and replaces it elsewhere.
        wait_until(lambda: all(e.info.node_id != victim for e in list(sc._driver.executors.values())),
                   timeout_s=20)
        wait_until(lambda: len(sc._driver.executors) == 2, timeout_s=20)
    finally:
        sc.stop()
    app = app_record(tmp_path, sc)
    last = app["jobs"][-1]
    assert last["state"] == "succeeded"
    map_stage, reduce_stage = last["stages"][0], last["stages"][-1]
    assert map_stage["kind"] == "shuffle map" and reduce_stage["kind"] == "result"
    # The lost outputs were made again, elsewhere, after the reducers had started; the
    # reduce stage ran again after its fetch failure.
    first_reduce = min(t["start"] for t in reduce_stage["tasks"])
    rerun = {t["partition"] for t in map_stage["tasks"]
             if t["state"] == "succeeded" and t["host"] != victim and t["start"] > first_reduce}
    assert lost_maps <= rerun, (lost_maps, map_stage["tasks"])
    assert len(reduce_stage["attempts"]) >= 2, reduce_stage["attempts"]
    assert any("fetch" in a["failure"].lower() for a in reduce_stage["attempts"]), reduce_stage["attempts"]
    assert victim_executor in {e["executor"] for e in app["executors_lost"]}
    # No attempt is left "running" in the record of a finished job.
    assert all(t["state"] != "running" for t in all_tasks(last)), \
        [t for t in all_tasks(last) if t["state"] == "running"]


# --- 4. speculation: a straggler loses to its copy --------------------------------------------
def straggle_first_attempt(directory: str, slow_partition: int) -> Callable[[Iterator], Iterator]:
    def run(it: Iterator) -> Iterator:
        info = announce(directory)
        if info["partition"] == slow_partition and info["attempt"] == 0:
            # An event that never comes: only the driver's kill order ends this wait.
            wait_for_file(os.path.join(directory, "never"))
        return it

    return run


def test_speculative_copy_beats_straggler(tmp_path: Path) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    sc = SparkContext("local[3]", "speculation", conf=base_conf(tmp_path))
    try:
        assert sc._driver.wait_for_executors(3, 20) == 3
        rdd = sc.parallelize(range(4000), 4).mapPartitions(straggle_first_attempt(str(gates), 0))
        start = time.monotonic()
        total = rdd.map(lambda x: 3 * x + 1).sum()
        elapsed = time.monotonic() - start
        assert total == sum(3 * x + 1 for x in range(4000))
        assert elapsed < 20, f"the job waited for its straggler ({elapsed:.1f}s)"
        # The straggler was interrupted (its executor is free and alive, not replaced).
        wait_until(lambda: all(t.state != "running" for t in sc._driver.sched.attempts.values()), timeout_s=10)
        assert sc.parallelize(range(10), 3).count() == 10
    finally:
        sc.stop()
    app = app_record(tmp_path, sc)
    assert app["executors_lost"] == []  # the loser was interrupted, not its executor killed
    job = app["jobs"][0]
    p0 = [t for t in all_tasks(job) if t["partition"] == 0]
    spec = [t for t in p0 if t["speculative"]]
    orig = [t for t in p0 if not t["speculative"]]
    assert len(spec) == 1 and spec[0]["state"] == "succeeded", p0
    assert len(orig) == 1 and orig[0]["state"] == "killed", p0
    assert orig[0]["attempt"] == 0 and spec[0]["attempt"] == 1
    assert spec[0]["executor"] != orig[0]["executor"]
    assert job["stages"][-1]["speculative"] == 1
    assert job["stages"][-1]["killed_tasks"] == 1


# --- 5. groupByKey over more than the executors' memory ----------------------------------------
GROUP_KEYS = 5003
PAD = "x" * 48


def gen_records(part: int, per_part: int) -> Iterator[tuple[int, str]]:
    base = part * per_part
    for i in range(base, base + per_part):
        yield (i * 7919) % GROUP_KEYS, f"{i:012d}{PAD}"  # 60-byte values


def summarize_group(values: Iterable[str]) -> tuple[int, int, int]:
    n = total = crc = 0
    for v in values:
        n += 1
        total += int(v[:12])
        crc ^= zlib.crc32(v.encode())
    return n, total, crc


def expected_groups(parts: int, per_part: int) -> dict[int, tuple[int, int, int]]:
    out: dict[int, list[int]] = {}
    for p in range(parts):
        for k, v in gen_records(p, per_part):
            acc = out.setdefault(k, [0, 0, 0])
            acc[0] += 1
            acc[1] += int(v[:12])
            acc[2] ^= zlib.crc32(v.encode())
    return {k: (a[0], a[1], a[2]) for k, a in out.items()}


def grouped_summaries(sc: SparkContext, parts: int, per_part: int, reducers: int) -> dict:
    rdd = sc.parallelize(range(parts), parts).flatMap(lambda p: gen_records(p, per_part))
    return dict(rdd.groupByKey(reducers).mapValues(summarize_group).collect())


def check_spilled(tmp_path: Path, sc: SparkContext) -> dict[str, Any]:
    job = app_record(tmp_path, sc)["jobs"][-1]
    assert job["state"] == "succeeded"
    reduce_stage = job["stages"][-1]
    assert reduce_stage["spills"] > 0, reduce_stage
    assert all(t.get("spills", 0) > 0 for t in reduce_stage["tasks"] if t["state"] == "succeeded"), \
        reduce_stage["tasks"]
    return job


def test_group_by_key_spills_past_worker_memory_local(tmp_path: Path) -> None:
    parts, per_part = 4, 250_000  # 1M records, 60 MB of values: far past 32 MiB
    sc = SparkContext("local[2]", "spill-local", conf=base_conf(tmp_path, **{"spark.python.worker.memory": "32m"}))
    try:
        got = grouped_summaries(sc, parts, per_part, 2)
    finally:
        sc.stop()
    assert got == expected_groups(parts, per_part)
    check_spilled(tmp_path, sc)


def test_group_by_key_spills_in_small_containers_cluster(make_cluster, tmp_path: Path) -> None:
    rc: RunningCluster = make_cluster(workers=2, racks=1)
    parts, per_part = 4, 250_000
    conf = base_conf(tmp_path, **{"spark.executor.instances": "2", "spark.executor.cores": "1",
                                  "spark.executor.memory": "128m", "spark.locality.wait": "0"})
    sc = SparkContext(str(rc.folder), "spill-cluster", conf=conf)
    try:
        got = grouped_summaries(sc, parts, per_part, 2)
    finally:
        sc.stop()
    assert got == expected_groups(parts, per_part)
    app = app_record(tmp_path, sc)
    assert app["executors_lost"] == []  # no container was killed for its memory
    job = check_spilled(tmp_path, sc)
    assert all(t["state"] == "succeeded" and t["attempt"] == 0 for t in all_tasks(job))


# --- 6. Ctrl-C in the driver --------------------------------------------------------------
CTRL_C_PROGRAM = textwrap.dedent("""
    import os, sys, time
    from shoal.spark import SparkConf, SparkContext

    gates, jobs = sys.argv[1], sys.argv[2]

    def block(it):
        open(os.path.join(gates, "started-%d" % os.getpid()), "w").close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.02)
        return it

    conf = SparkConf().set("spark.shoal.jobsDir", jobs).set("spark.ui.showConsoleProgress", "false")
    sc = SparkContext("local[2]", "ctrl-c", conf=conf)
    print(sc.applicationId, flush=True)
    sc.parallelize(range(100), 2).mapPartitions(block).count()
    print("job finished", flush=True)
""")


def test_ctrl_c_in_driver_cancels_job_and_releases_executors(tmp_path: Path) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    prog = tmp_path / "prog.py"
    prog.write_text(CTRL_C_PROGRAM)
    driver = subprocess.Popen([sys.executable, str(prog), str(gates), str(tmp_path / "jobs")],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(list(gates.glob("started-*"))) == 2, timeout_s=30)
        # The executors (forked or spawned) are the driver's children that ran the tasks.
        busy = {int(p.name.split("-")[1]) for p in gates.glob("started-*")}
        children = psutil.Process(driver.pid).children(recursive=True)
        executors = [c for c in children if c.pid in busy]
        assert len(executors) == 2, (busy, children)
        sent = time.monotonic()
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=20)
        took = time.monotonic() - sent
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode != 0
    assert "KeyboardInterrupt" in err, err
    assert "job finished" not in out
    assert took < 10, f"the driver took {took:.1f}s to stop"
    wait_until(lambda: all(gone(e.pid) for e in executors), timeout_s=10)
    # The job record does not show the cancelled job as still running.
    app_id = out.split()[0]
    app = json.loads((tmp_path / "jobs" / f"{app_id}.json").read_text())
    assert app["jobs"] and app["jobs"][-1]["state"] == "failed", app["jobs"]
    assert "cancel" in app["jobs"][-1]["failure"], app["jobs"][-1]


# --- 7. a task that always fails ----------------------------------------------------------
class PoisonRecord(ValueError):
    pass


def test_task_failing_always_fails_job_after_four_attempts(tmp_path: Path) -> None:
    def poison(x: int) -> int:
        if x == 777:
            raise PoisonRecord(f"record {x} is poison")
        return x

    sc = SparkContext("local[2]", "always-fails", conf=base_conf(tmp_path))
    try:
        with pytest.raises(PoisonRecord, match="record 777 is poison") as info:
            sc.parallelize(range(1000), 4).map(poison).collect()
        assert any("failed 4 times" in n for n in getattr(info.value, "__notes__", [])), info.value.__notes__
        # The context is still usable after the failed job.
        assert sc.parallelize(range(10), 2).sum() == 45
    finally:
        sc.stop()
    app = app_record(tmp_path, sc)
    assert app["executors_lost"] == []  # a failing task does not take its executor down
    job = app["jobs"][0]
    assert job["state"] == "failed" and "failed 4 times" in job["failure"]
    bad = [t for t in all_tasks(job) if t["partition"] == 3]  # 777 is in the last of 4 slices
    assert sorted(t["attempt"] for t in bad) == [0, 1, 2, 3], bad
    assert all(t["state"] == "failed" and "PoisonRecord" in t["error"] for t in bad), bad
    assert not any(t["speculative"] for t in bad)


# --- 8. stop while the executors are still starting ------------------------------------------
def test_stop_while_executors_start_is_quick_and_leaves_none(tmp_path: Path, monkeypatch) -> None:
    """Executors that register after ``stop()`` began are told to shut down too: stop
    does not sit out its kill grace period, and no executor outlives the context. The
    driver holds every registration until stop() is under way (the executors it knew
    were told to leave), so they register late whatever the machine's speed."""
    from shoal.compute import driver as driver_module

    register = driver_module.Driver._on_register

    async def late_register(self, req):  # type: ignore[no-untyped-def]
        while not getattr(self.backend, "_stopping", self._stopped):
            await asyncio.sleep(0.005)
        return await register(self, req)

    monkeypatch.setattr(driver_module.Driver, "_on_register", late_register)
    me = psutil.Process()
    before = {c.pid for c in me.children(recursive=True)}
    sc = SparkContext("local[2]", "quick-stop", conf=base_conf(tmp_path))
    executors = [c for c in me.children(recursive=True) if c.pid not in before]
    assert len(executors) == 2
    assert not sc._driver.executors
    start = time.monotonic()
    sc.stop()
    took = time.monotonic() - start
    wait_until(lambda: all(gone(e.pid) for e in executors), timeout_s=10)
    assert took < 3, f"stop() took {took:.1f}s"
