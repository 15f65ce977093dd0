"""MapReduce and Hadoop Streaming on shoal's compute engine: the same scheduler,
shuffle service and executors as the RDD API (see docs/mapreduce.md).

``from shoal.mapreduce import MapReduceJob`` for the class API; ``shoal mapreduce
streaming`` (or :func:`run_streaming`) for streaming jobs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shoal.mapreduce.api import MapReduceJob
    from shoal.mapreduce.counters import Counters
    from shoal.mapreduce.job import JobResult

__all__ = ["MapReduceJob", "Counters", "JobResult"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package must not pull Arrow into every ``shoal`` command.
    if name == "MapReduceJob":
        from shoal.mapreduce.api import MapReduceJob

        return MapReduceJob
    if name == "Counters":
        from shoal.mapreduce.counters import Counters

        return Counters
    if name == "JobResult":
        from shoal.mapreduce.job import JobResult

        return JobResult
    raise AttributeError(name)
