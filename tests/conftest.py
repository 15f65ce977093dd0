"""Shared fixtures: real local clusters on loopback with millisecond-scale timers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import shoal
from shoal.cluster.local import LocalCluster

# Timers scaled down so failures are detected in seconds; sizes small so many-block
# files stay cheap. Tests pass their own overrides on top when they need to.
FAST = {
    "dfs.heartbeat_interval_s": "0.2",
    "dfs.dead_node_interval_s": "3",
    "dfs.block_report_every": "5",
    "dfs.block_size": "1M",
    "dfs.packet_bytes": "256K",
    "dfs.bytes_per_checksum": "64K",
    "dfs.replication_timeout_s": "5",
    "cluster.allocation_interval_s": "0.2",
    "cluster.agent_timeout_s": "3",
    "cluster.poll_wait_s": "1",
    "cluster.framework_timeout_s": "4",
    "cluster.offer_timeout_s": "5",
    "cluster.decline_filter_s": "1",
    "cluster.backoff_s": "0.2",
    "cluster.backoff_max_s": "2",
    "cluster.kill_grace_s": "1",
}


class RunningCluster:
    """A started local cluster and a connected client."""

    def __init__(self, folder: Path, workers: int, racks: int, overrides: dict[str, str], **up: Any) -> None:
        self.folder = folder
        self.local = LocalCluster(folder)
        self.local.up(workers=workers, racks=racks, overrides=overrides, **up)
        self.client = shoal.connect(folder)
        self.fs = self.client.fs

    def connect(self) -> shoal.Cluster:
        return shoal.connect(self.folder)

    def worker_pid(self, node_id: str) -> int:
        return next(e["pid"] for e in self.local.processes if e["id"] == node_id)

    def stop(self) -> None:
        self.client.close()
        self.local.down()


def wait_until(predicate: Callable[[], bool], timeout_s: float = 20.0, interval_s: float = 0.05) -> None:
    """Poll ``predicate`` until it is true or the deadline passes (then fail)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s")


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., RunningCluster]]:
    """Factory: ``make_cluster(workers=3, racks=2, **{"dfs.x": "v"})``; stopped at teardown."""
    started: list[RunningCluster] = []

    def make(workers: int = 3, racks: int = 2, overrides: dict[str, str] | None = None, **up: Any) -> RunningCluster:
        folder = tmp_path / f"cluster{len(started)}"
        rc = RunningCluster(folder, workers, racks, {**FAST, **(overrides or {})}, **up)
        started.append(rc)
        return rc

    yield make
    for rc in started:
        rc.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    """One 4-worker, 2-rack cluster shared by a test module."""
    rc = RunningCluster(tmp_path_factory.mktemp("shared") / "c", 4, 2, FAST)
    yield rc
    rc.stop()


@pytest.fixture(scope="module")
def sc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local[2] SparkContext per test module (starting one costs ~1 s; only one may
    be active in a process at a time): few retries, no progress bar, job records and
    checkpoints in temporary folders."""
    from shoal.spark import SparkConf, SparkContext

    conf = (SparkConf().setMaster("local[2]").setAppName("rdd-tests")
            .set("spark.task.maxFailures", "2")
            .set("spark.ui.showConsoleProgress", "false")
            .set("spark.shoal.jobsDir", str(tmp_path_factory.mktemp("jobs"))))
    context = SparkContext(conf=conf)
    context.setCheckpointDir(str(tmp_path_factory.mktemp("checkpoints")))
    yield context
    context.stop()
