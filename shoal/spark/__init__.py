"""PySpark's RDD API on shoal's engine: ``from shoal.spark import SparkContext``.

``shoal submit`` puts a ``pyspark`` package on the path that re-exports this one,
so PySpark RDD programs run unmodified.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from shoal.compute.context import ComputeContext
from shoal.compute.partitioner import portable_hash
from shoal.compute.rdd import RDD
from shoal.compute.shared import Accumulator, AccumulatorParam, Broadcast
from shoal.compute.stats import StatCounter
from shoal.compute.storagelevel import StorageLevel
from shoal.compute.taskcontext import TaskContext
from shoal.spark.conf import SparkConf

__all__ = [
    "SparkContext", "SparkConf", "RDD", "StorageLevel", "Broadcast", "Accumulator", "AccumulatorParam",
    "TaskContext", "StatCounter", "portable_hash", "SparkFiles", "InheritableThread",
]


class SparkContext(ComputeContext):
    """``SparkContext(master, appName, conf=SparkConf())`` as in PySpark; the
    master is ``local[N]``, ``shoal`` or ``shoal://HOST:PORT``."""

    def __init__(self, master: str | None = None, appName: str | None = None, sparkHome: str | None = None,
                 pyFiles: list[str] | None = None, environment: dict[str, str] | None = None, batchSize: int = 0,
                 serializer: Any = None, conf: SparkConf | None = None, gateway: Any = None, jsc: Any = None,
                 profiler_cls: Any = None) -> None:
        settings = conf.getAll() if conf is not None else []
        d = dict(settings)
        self._start_ms = int(time.time() * 1000)
        super().__init__(master or d.get("spark.master"), appName or d.get("spark.app.name"), d)
        self._spark_conf = conf or SparkConf()
        for path in pyFiles or []:
            self.addPyFile(path)

    @classmethod
    def getOrCreate(cls, conf: SparkConf | None = None) -> SparkContext:
        active = ComputeContext.active()
        if active is not None:
            return active  # type: ignore[return-value]
        return cls(conf=conf)

    def getConf(self) -> SparkConf:  # type: ignore[override]
        c = SparkConf()
        c.setAll(self.conf.items())
        c.set("spark.master", self.master).set("spark.app.name", self.appName)
        return c

    def runJob(self, rdd: RDD, partitionFunc: Callable[[Iterator], Iterable], partitions: list[int] | None = None,
               allowLocal: bool = False) -> list:
        """Run ``partitionFunc`` on the given partitions (default: all) and return
        the concatenation of what it returned for each, in partition order."""
        results = self.run_job(rdd, lambda it: list(partitionFunc(it)), partitions, "runJob")
        return [x for part in results for x in part]

    def getCheckpointDir(self) -> str | None:
        """The directory checkpoints are written to (``None`` until set)."""
        return self.checkpoint_dir

    def __repr__(self) -> str:
        return f"<SparkContext master={self.master} appName={self.appName}>"

    @property
    def startTime(self) -> int:
        return self._start_ms

    @property
    def sparkUser(self) -> str:
        import getpass

        return getpass.getuser()

    def addPyFile(self, path: str) -> None:
        """Make a module file importable on executors (shipped by value)."""
        import importlib
        import importlib.util
        import os
        import sys

        import cloudpickle

        directory = os.path.dirname(os.path.abspath(path))
        if directory not in sys.path:
            sys.path.insert(0, directory)
        name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.find_spec(name)
        if spec is not None:
            module = importlib.import_module(name)
            cloudpickle.register_pickle_by_value(module)

    def addFile(self, path: str, recursive: bool = False) -> None:
        SparkFiles._files.append(path)


class InheritableThread(threading.Thread):
    """A thread that runs with the job group and local properties of the thread that
    created it (PySpark's ``InheritableThread``), so ``cancelJobGroup`` reaches the
    jobs it starts."""

    def __init__(self, target: Callable[..., Any] | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, target=target, **kwargs)
        ctx = ComputeContext.active()
        self._inherited: tuple[ComputeContext, str | None, dict[str, str]] | None = None
        if ctx is not None:
            self._inherited = (ctx, getattr(ctx._job_group, "group", None),
                               dict(getattr(ctx._local_properties, "props", None) or {}))

    def run(self) -> None:
        if self._inherited is not None:
            ctx, group, props = self._inherited
            ctx._job_group.group = group
            ctx._local_properties.props = props
        super().run()


class SparkFiles:
    _files: list[str] = []

    @classmethod
    def get(cls, filename: str) -> str:
        import os

        for f in cls._files:
            if os.path.basename(f) == filename:
                return os.path.abspath(f)
        raise FileNotFoundError(filename)

    @classmethod
    def getRootDirectory(cls) -> str:
        import os

        return os.getcwd()

