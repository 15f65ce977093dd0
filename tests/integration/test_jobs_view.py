"""What a user sees of running jobs: the progress bars and `shoal jobs`."""

from __future__ import annotations

import io
import json
import operator
from pathlib import Path
from typing import Any

from rich.console import Console

from shoal.compute.progress import ProgressReporter
from shoal.compute.protocol import TaskMetrics, TaskResult
from tests.clitools import fails, ok, shoal


def test_progress_bar_counts_tasks_records_and_shuffle_bytes() -> None:
    out = io.StringIO()
    progress = ProgressReporter(console=Console(file=out, force_terminal=True, width=160))
    progress.stage_started(3, 0, "reduceByKey at wc.py:5", 2)
    progress.task_ended(3, TaskResult(1, "succeeded", metrics=TaskMetrics(records_in=1500, shuffle_write_bytes=4096)))
    progress.refresh()
    progress.stage_ended(3, "")
    progress.close()
    text = out.getvalue()
    assert "Stage 3 (reduceByKey at wc.py:5)" in text
    assert "1/2" in text and "1,500 records" in text and "4.0 KiB" in text


def test_progress_is_silent_off_a_terminal() -> None:
    assert not ProgressReporter().enabled  # pytest's stderr is not a terminal


def test_shoal_jobs_lists_stages_locality_and_tasks(sc: Any) -> None:
    counts = sc.parallelize(["a b", "b c"], 2).flatMap(str.split).map(lambda w: (w, 1)).reduceByKey(operator.add)
    assert sorted(counts.collect()) == [("a", 1), ("b", 2), ("c", 1)]
    jobs_dir = sc.conf["spark.shoal.jobsDir"]
    apps = json.loads(ok(shoal(None, "jobs", "--dir", jobs_dir, "--json")).stdout)
    app = next(a for a in apps if a["app_id"] == sc.applicationId)
    job = app["jobs"][-1]
    assert job["state"] == "succeeded" and job["action"].startswith("collect at test_jobs_view.py")
    kinds = [(st["kind"], st["state"], len(st["tasks"])) for st in job["stages"]]
    assert kinds == [("shuffle map", "succeeded", 2), ("result", "succeeded", 2)]
    assert job["stages"][0]["shuffle_write_bytes"] > 0 and job["stages"][1]["shuffle_read_bytes"] > 0
    table = ok(shoal(None, "jobs", "--dir", jobs_dir, "--app", sc.applicationId, "--tasks")).stdout.decode()
    assert sc.applicationId in table and "reduceByKey at test_jobs_view.py" in table and "NO_PREF" in table


def test_shoal_jobs_unknown_app_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    assert "no application" in fails(shoal(None, "jobs", "--dir", str(tmp_path / "jobs"), "--app", "app-x"))
