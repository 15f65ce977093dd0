"""The entry point of a compute application (PySpark's SparkContext, the engine
side): creates RDDs, owns the driver and its executors."""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from shoal.compute.driver import Driver, DriverConf
from shoal.compute.rdd import RDD, UnionRDD
from shoal.compute.scheduler import SchedulerConf
from shoal.compute.shared import Accumulator, AccumulatorParam, Broadcast, default_param, dumps_value
from shoal.core.units import parse_size
from shoal.errors import BadRequest, ConfigError

_LOCAL = re.compile(r"^local(?:\[(\*|\d+)(?:\s*,\s*(\d+))?\])?$")
_active_lock = threading.Lock()
_active: ComputeContext | None = None


def _bool(v: Any) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes", "on")


def _seconds(v: Any) -> float:
    s = str(v).strip().lower()
    m = re.fullmatch(r"([0-9.]+)\s*(ms|s|m|min|h)?", s)
    if not m:
        raise ConfigError(f"not a duration: {v!r} (use e.g. 3s, 500ms)")
    n = float(m.group(1))
    return n * {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, None: 1}[m.group(2)]


def _size(v: Any) -> int:
    s = str(v).strip()
    if s and s[-1].lower() in "kmgt" and not s.lower().endswith("b"):
        s = s + "iB"
    return parse_size(s)


class ComputeContext:
    """Create once per application; ``stop()`` (or a ``with`` block) releases the
    executors."""

    def __init__(self, master: str | None = None, appName: str | None = None,
                 conf: dict[str, str] | None = None) -> None:
        global _active
        submitted = os.environ.get("SHOAL_SUBMIT_CONF")
        # ``shoal submit --conf`` settings, overridden by what the program sets itself.
        self.conf: dict[str, str] = {**(json.loads(submitted) if submitted else {}), **dict(conf or {})}
        self.master = master or self.conf.get("spark.master") or os.environ.get("SHOAL_MASTER") or "local[*]"
        self.appName = appName or self.conf.get("spark.app.name") or "shoal"
        self.applicationId = f"app-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"
        self._rdd_ids = itertools.count()
        self._shuffle_ids = itertools.count()
        self._shared_ids = itertools.count()
        self.checkpoint_dir: str | None = None
        self._job_group: threading.local = threading.local()
        self._local_properties: threading.local = threading.local()
        self._stopped = False
        with _active_lock:
            if _active is not None and not _active._stopped:
                raise ValueError(
                    f"Cannot run multiple SparkContexts at once; existing SparkContext(app={_active.appName}, "
                    f"master={_active.master})")
            self._start_driver()
            _active = self

    def _start_driver(self) -> None:
        from shoal.compute.backends import make_backend

        c = self.conf
        sched = SchedulerConf(
            max_task_failures=int(c.get("spark.task.maxFailures", 4)),
            max_stage_attempts=int(c.get("spark.stage.maxConsecutiveAttempts", 4)),
            locality_wait_s=_seconds(c.get("spark.locality.wait", "3s")),
            speculation=_bool(c.get("spark.speculation", "true")),
            speculation_quantile=float(c.get("spark.speculation.quantile", 0.75)),
            speculation_multiplier=float(c.get("spark.speculation.multiplier", 1.5)),
            speculation_min_s=_seconds(c.get("spark.speculation.minTaskRuntime", "100ms")),
        )
        backend, parallelism, max_failures = make_backend(self.master, self)
        if max_failures is not None:
            sched = SchedulerConf(**{**sched.__dict__, "max_task_failures": max_failures})
        self._parallelism = int(c.get("spark.default.parallelism", parallelism))
        self.conf_default_parallelism_set = "spark.default.parallelism" in c
        dconf = DriverConf(
            scheduler=sched,
            bind_host=backend.bind_host,
            executor_timeout_s=_seconds(c.get("spark.shoal.executorTimeout", "60s")),
            show_progress=_bool(c.get("spark.ui.showConsoleProgress", "true")),
        )
        self._driver = Driver(self.applicationId, self.appName, self.master, dconf, backend,
                              c.get("spark.shoal.jobsDir"))
        self._driver.start()

    # --- ids and config ---------------------------------------------------------------------
    def _new_rdd_id(self) -> int:
        return next(self._rdd_ids)

    def _new_shuffle_id(self) -> int:
        return next(self._shuffle_ids)

    @property
    def defaultParallelism(self) -> int:
        return self._parallelism

    @property
    def defaultMinPartitions(self) -> int:
        return min(self._parallelism, 2)

    @property
    def executor_memory_bytes(self) -> int:
        return _size(self.conf.get("spark.python.worker.memory", "512m"))

    def getConf(self) -> dict[str, str]:
        return dict(self.conf)

    @property
    def version(self) -> str:
        from importlib.metadata import version

        return version("shoal")

    @property
    def uiWebUrl(self) -> None:
        return None

    def setLogLevel(self, logLevel: str) -> None:
        import logging

        level = getattr(logging, logLevel.upper(), None)
        if not isinstance(level, int):
            raise ValueError(f"unknown log level {logLevel!r}")
        logging.getLogger("compute").setLevel(level)

    # --- creating RDDs ----------------------------------------------------------------------
    def parallelize(self, c: Iterable, numSlices: int | None = None) -> RDD:
        from shoal.compute.sources import ParallelCollectionRDD

        return ParallelCollectionRDD(self, c, numSlices or self.defaultParallelism)

    def range(self, start: int, end: int | None = None, step: int = 1, numSlices: int | None = None) -> RDD:
        if end is None:
            start, end = 0, start
        return self.parallelize(range(start, end, step), numSlices)

    def textFile(self, name: str, minPartitions: int | None = None, use_unicode: bool = True) -> RDD:
        from shoal.compute.sources import TextFileRDD

        return TextFileRDD(self, name, minPartitions if minPartitions is not None else self.defaultMinPartitions)

    def wholeTextFiles(self, path: str, minPartitions: int | None = None, use_unicode: bool = True) -> RDD:
        from shoal.compute.sources import WholeTextFilesRDD

        return WholeTextFilesRDD(self, path, minPartitions or self.defaultMinPartitions)

    def pickleFile(self, name: str, minPartitions: int | None = None) -> RDD:
        from shoal.compute.sources import PickleFileRDD

        return PickleFileRDD(self, name, minPartitions or self.defaultMinPartitions)

    def emptyRDD(self) -> RDD:
        from shoal.compute.sources import EmptyRDD

        return EmptyRDD(self)

    def union(self, rdds: list[RDD]) -> RDD:
        rdds = list(rdds)
        if not rdds:
            raise ValueError("union needs at least one RDD")
        return UnionRDD(self, rdds)

    # --- shared variables -------------------------------------------------------------------
    def broadcast(self, value: Any) -> Broadcast:
        bid = next(self._shared_ids)
        self._driver.broadcasts[bid] = dumps_value(value)
        return Broadcast(self, bid, value)

    def _destroy_broadcast(self, bid: int) -> None:
        self._driver.broadcasts.pop(bid, None)

    def accumulator(self, value: Any, accum_param: AccumulatorParam | None = None) -> Accumulator:
        acc = Accumulator(next(self._shared_ids), value, accum_param or default_param(value))
        self._driver.accumulators[acc.aid] = acc
        return acc

    def _store_slices(self, rdd_id: int, slices: list[bytes]) -> None:
        self._driver.slices[rdd_id] = slices

    # --- jobs ---------------------------------------------------------------------------------
    def run_job(self, rdd: RDD, func: Callable[[Iterator], Any], partitions: list[int] | None = None,
                action: str = "") -> list:
        """Run ``func`` on each requested partition; return the results in order."""
        from shoal.compute.rdd import call_site

        if self._stopped:
            from shoal.errors import JobFailed

            raise JobFailed("Cannot call methods on a stopped SparkContext")
        site = call_site(action or "runJob")
        group = getattr(self._job_group, "group", None)
        try:
            blobs = self._driver.run_job(rdd, func, partitions, site, group)
        except KeyboardInterrupt:
            # Ctrl-C: the job was cancelled; release the executors before leaving.
            self.stop()
            raise
        import pickle

        results = [pickle.loads(b) for b in blobs]
        self._after_job(rdd)
        return results

    def _after_job(self, rdd: RDD) -> None:
        """Reliable checkpoints requested on this lineage are written after the job."""
        from shoal.compute.dag import stage_inputs

        _, rdds = stage_inputs(rdd)
        for r in rdds:
            if r._checkpoint_requested and r.checkpoint_dir is None:
                self._write_checkpoint(r)

    def _write_checkpoint(self, rdd: RDD) -> None:
        assert self.checkpoint_dir is not None
        directory = f"{self.checkpoint_dir.rstrip('/')}/rdd-{rdd.id}"
        rdd._checkpoint_requested = False
        self.run_job(rdd, lambda it, d=directory: _write_part(d, it), None, "checkpoint")
        rdd.checkpoint_dir = directory

    def setCheckpointDir(self, dirName: str) -> None:
        if "://" not in dirName:
            os.makedirs(dirName, exist_ok=True)
        self.checkpoint_dir = f"{dirName.rstrip('/')}/{self.applicationId}"

    def _unpersist(self, rdd_id: int) -> None:
        self._driver.unpersist(rdd_id)

    def setJobGroup(self, groupId: str, description: str, interruptOnCancel: bool = False) -> None:
        self._job_group.group = groupId

    def clearJobGroup(self) -> None:
        self._job_group.group = None

    def cancelJobGroup(self, groupId: str) -> None:
        self._driver.cancel_jobs(lambda g: g == groupId, f"cancelled: job group {groupId!r} was cancelled")

    def cancelAllJobs(self) -> None:
        self._driver.cancel_jobs(lambda g: True, "cancelled: all jobs were cancelled")

    def setLocalProperty(self, key: str, value: str | None) -> None:
        props = getattr(self._local_properties, "props", None) or {}
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
        self._local_properties.props = props

    def getLocalProperty(self, key: str) -> str | None:
        return (getattr(self._local_properties, "props", None) or {}).get(key)

    # --- life cycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        global _active
        if self._stopped:
            return
        self._stopped = True
        try:
            self._driver.recorder.app_ended()
            self._driver.stop()
        finally:
            with _active_lock:
                if _active is self:
                    _active = None

    def __enter__(self) -> ComputeContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        if not getattr(self, "_stopped", True):
            try:
                self.stop()
            except Exception:
                pass

    @classmethod
    def active(cls) -> ComputeContext | None:
        return _active if _active is not None and not _active._stopped else None


def _write_part(directory: str, it: Iterator) -> int:
    from shoal.compute.sources import write_checkpoint_partition
    from shoal.compute.taskcontext import TaskContext

    tc = TaskContext.get()
    assert tc is not None
    return write_checkpoint_partition(directory, tc.partitionId(), it)


def parse_local_master(master: str) -> tuple[int, int | None] | None:
    """``local`` / ``local[N]`` / ``local[*]`` / ``local[N,F]`` -> (N, F)."""
    m = _LOCAL.match(master.strip())
    if not m:
        return None
    n = m.group(1)
    cores = os.cpu_count() or 1 if n == "*" else int(n or 1)
    if cores < 1:
        raise BadRequest(f"local master needs at least one core: {master!r}")
    return cores, int(m.group(2)) if m.group(2) else None
