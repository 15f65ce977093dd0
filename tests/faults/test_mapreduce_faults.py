"""MapReduce jobs surviving failures with real processes: a worker (its datanode,
agent and shuffle service, and the executor containers on it) killed with -9 while
a streaming word count runs on a 3-worker cluster, and tasks whose first attempts
fail. Results are checked against a plain Python word count; what was re-run, in
the job records.

The killed-worker job synchronises with the test through files: each map attempt
leaves a marker, and the maps after the first few wait for a release file (polling
with a deadline), so the test can kill a worker holding finished map outputs while
other maps are still running.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shoal.compute.context import ComputeContext
from shoal.mapreduce.conf import MRConf
from shoal.mapreduce.job import JobResult, run_job
from shoal.mapreduce.streaming import StreamingLogic
from tests.conftest import FAST, RunningCluster, wait_until
from tests.faults.test_compute_faults import in_background, kill9
from tests.integration.test_mapreduce import (
    AWK_SUM,
    PROGRAMS,
    counts_of,
    local_parts,
    parse_counters,
    program,
    streaming,
    word_corpus,
    write_lines,
)

pytestmark = pytest.mark.slow

BLOCK = 64 * 1024
FREE_MAPS = 3  # maps 0..2 run at once; the others wait for the release file


def started_partition(marker: str) -> int:
    """The map partition of a ``start-attempt_<job>_m_<partition>_<n>`` marker."""
    match = re.search(r"_m_(\d{6})_\d+$", marker)
    assert match, marker
    return int(match.group(1))


def dfs_lines(rc: RunningCluster, directory: str) -> list[str]:
    names = [n for n in rc.fs.ls(directory) if n.rsplit("/", 1)[1].startswith("part-")]
    return [line for n in sorted(names) for line in rc.fs.cat(n).decode().splitlines()]


@dataclass
class KilledWorkerRun:
    """A streaming word count during which a worker holding map outputs was killed."""

    rc: RunningCluster
    lines: list[str]
    maps: int
    victim: str
    lost_maps: set[int]
    killed_at: float
    result: JobResult
    app: dict[str, Any]


@pytest.fixture(scope="module")
def killed_worker_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KilledWorkerRun]:
    """On a 3-worker cluster (one 1-core executor each), maps 0..2 run first; once
    their outputs exist and two later maps are running (held at their gate), the
    worker holding the most outputs is killed with -9, then the gate opens."""
    tmp = tmp_path_factory.mktemp("killed-worker")
    rc = RunningCluster(tmp / "c", 3, 1, FAST)
    mp = pytest.MonkeyPatch()
    mp.setenv("SHOAL_CLUSTER", str(rc.folder))
    try:
        gates = tmp / "gates"
        gates.mkdir()
        lines = word_corpus(41, 18000)
        data = "".join(line + "\n" for line in lines).encode()
        maps = -(-len(data) // BLOCK)  # one per 64 KiB block
        assert maps >= FREE_MAPS + 4, maps
        with rc.fs.open("/mr/in.txt", "wb", block_size=BLOCK) as f:
            f.write(data)
        jobs = tmp / "jobs"
        ctx = ComputeContext(str(rc.folder), "mr-kill-worker", {
            "spark.shoal.jobsDir": str(jobs), "spark.ui.showConsoleProgress": "false",
            "spark.executor.instances": "3", "spark.executor.cores": "1", "spark.executor.memory": "256m",
            "spark.locality.wait": "0", "spark.shoal.executorTimeout": "5s", "spark.speculation": "false",
        })
        try:
            assert ctx._driver.wait_for_executors(3, 30) == 3
            script = PROGRAMS / "gated_wc_mapper.sh"
            conf = MRConf.from_properties({}, 2)
            logic = StreamingLogic.from_conf("sh gated_wc_mapper.sh", AWK_SUM, None, conf, False,
                                             {"GATES": str(gates), "FREE_MAPS": str(FREE_MAPS)})
            job = in_background(lambda: run_job(logic, inputs=["shoal:///mr/in.txt"], output="shoal:///mr/out",
                                                conf=conf, name="wc-kill-worker",
                                                files={script.name: (0o755, script.read_bytes())}, ctx=ctx))
            sched = ctx._driver.sched

            def free_maps_done_and_gated_maps_waiting() -> bool:
                outs = list(sched.map_outputs.values())
                gated = [p for p in gates.glob("start-*") if started_partition(p.name) >= FREE_MAPS]
                return len(outs) == 1 and all(o is not None for o in outs[0][:FREE_MAPS]) and len(gated) >= 2

            wait_until(free_maps_done_and_gated_maps_waiting, timeout_s=40)
            statuses = list(sched.map_outputs.values())[0]
            holders = [st.node_id for st in statuses if st is not None]
            victim = max(sorted(set(holders)), key=holders.count)
            lost_maps = {st.map_index for st in statuses if st is not None and st.node_id == victim}
            killed_at = time.time()
            kill9(rc.worker_pid(victim))
            (gates / "release").touch()
            result = job.result(timeout=90)
        finally:
            ctx.stop()
        app = json.loads((jobs / f"{ctx.applicationId}.json").read_text())
        yield KilledWorkerRun(rc, lines, maps, victim, lost_maps, killed_at, result, app)
    finally:
        mp.undo()
        rc.stop()


def test_worker_killed_mid_job_reruns_its_map_outputs(killed_worker_run: KilledWorkerRun) -> None:
    run = killed_worker_run
    expected = Counter(w for line in run.lines for w in line.split())
    assert counts_of(dfs_lines(run.rc, "/mr/out")) == expected
    assert run.rc.fs.exists("/mr/out/_SUCCESS")
    assert run.lost_maps  # the victim held finished map outputs when it died
    assert run.result.counters["Launched map tasks"] > run.maps  # some maps ran twice
    record = run.app["jobs"][-1]
    assert record["state"] == "succeeded"
    map_stage = record["stages"][0]
    assert map_stage["kind"] == "shuffle map"
    # The outputs lost with the worker were made again, elsewhere, after the kill.
    rerun = {t["partition"] for t in map_stage["tasks"]
             if t["state"] == "succeeded" and t["host"] != run.victim and t["start"] > run.killed_at}
    assert run.lost_maps <= rerun, (run.victim, run.lost_maps, map_stage["tasks"])
    # Every partition has a successful attempt, and none is left "running".
    assert {t["partition"] for t in map_stage["tasks"] if t["state"] == "succeeded"} == set(range(run.maps))
    assert all(t["state"] != "running" for st in record["stages"] for t in st["tasks"])
    assert run.app["executors_lost"], run.app["executors_lost"]


def test_worker_killed_mid_job_counts_each_record_once(killed_worker_run: KilledWorkerRun) -> None:
    """Hadoop's job counters are those of each task's last successful attempt: a map
    re-run because its output was lost does not count its input twice."""
    run = killed_worker_run
    words = sum(len(line.split()) for line in run.lines)
    assert run.result.counters["Map input records"] == len(run.lines)
    assert run.result.counters["Map output records"] == words
    assert run.result.counters["Reduce input records"] == words


def test_tasks_failing_on_their_first_attempt_still_succeed(tmp_path: Path) -> None:
    """Every map and reduce task fails its first attempt (exit 1): the job succeeds on
    the retries, with the exact result, and counts the failed attempts."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    corpus = [word_corpus(50 + i, 400) for i in range(3)]
    for i, lines in enumerate(corpus):
        write_lines(inputs / f"f{i}.txt", lines)
    expected = Counter(w for lines in corpus for line in lines for w in line.split())
    jobs = tmp_path / "jobs"
    out = tmp_path / "out"
    script = program(tmp_path, "first_attempt_fails.sh")
    res = streaming("-input", str(inputs), "-output", str(out), "-file", script,
                    "-mapper", "sh first_attempt_fails.sh awk '{ for (i = 1; i <= NF; i++) print $i \"\\t1\" }'",
                    "-reducer", f"sh first_attempt_fails.sh {AWK_SUM}", "-numReduceTasks", "2",
                    "-D", "mapreduce.map.speculative=false", "-D", "mapreduce.reduce.speculative=false",
                    jobs_dir=jobs)
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 0, err
    assert counts_of([line for part in local_parts(out).values() for line in part]) == expected
    job_counters = parse_counters(err)["Job Counters"]
    assert job_counters["Failed map tasks"] == 3
    assert job_counters["Launched map tasks"] == 6
    assert job_counters["Failed reduce tasks"] == 2
    assert job_counters["Launched reduce tasks"] == 4
    [app_file] = jobs.glob("*.json")
    record: dict[str, Any] = json.loads(app_file.read_text())["jobs"][-1]
    assert record["state"] == "succeeded"
    for stage in record["stages"]:
        by_partition: dict[int, list[dict[str, Any]]] = {}
        for t in stage["tasks"]:
            by_partition.setdefault(t["partition"], []).append(t)
        for partition, tasks in by_partition.items():
            states = sorted((t["attempt"], t["state"]) for t in tasks)
            assert states == [(0, "failed"), (1, "succeeded")], (stage["kind"], partition, tasks)
            failed = next(t for t in tasks if t["attempt"] == 0)
            assert "fails on purpose" in failed["error"], failed

