"""What a running task sees: its ids, its executor's cache, broadcasts and shuffle
settings. ``TaskContext.get()`` is PySpark's way to reach it from user code."""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shoal.compute import serde
from shoal.compute.shuffle import MapStatus, ShuffleReadMetrics, read_reduce_partition
from shoal.compute.storagelevel import StorageLevel

if TYPE_CHECKING:
    from shoal.compute.dependencies import ShuffleDependency
    from shoal.compute.rdd import RDD, Partition
    from shoal.core.rpc_client import RpcClient

_current = threading.local()


@dataclass
class BlockManager:
    """Cached partitions of one executor: in memory, or on its local disk."""

    directory: str
    memory_limit_bytes: int
    memory: dict[tuple[int, int], list] = field(default_factory=dict)
    on_disk: dict[tuple[int, int], str] = field(default_factory=dict)

    def get(self, key: tuple[int, int]) -> list | None:
        if key in self.memory:
            return self.memory[key]
        path = self.on_disk.get(key)
        if path is not None and os.path.exists(path):
            with open(path, "rb") as f:
                return [x for batch in serde.read_batches(f) for x in batch]
        return None

    def put(self, key: tuple[int, int], values: list, level: StorageLevel) -> None:
        if level.useMemory and (not level.useDisk or rss_bytes() < self.memory_limit_bytes):
            self.memory[key] = values
            return
        if level.useDisk:
            os.makedirs(self.directory, exist_ok=True)
            path = os.path.join(self.directory, f"rdd_{key[0]}_{key[1]}")
            with open(path, "wb") as f:
                serde.write_batches(f, values)
            self.on_disk[key] = path

    def drop_rdd(self, rdd_id: int) -> None:
        for key in [k for k in self.memory if k[0] == rdd_id]:
            del self.memory[key]
        for key in [k for k in self.on_disk if k[0] == rdd_id]:
            try:
                os.unlink(self.on_disk.pop(key))
            except OSError:
                pass


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class ExecutorEnv:
    """Process-wide state of one executor."""

    executor_id: str
    app_id: str
    node_id: str
    secret: bytes
    shuffle_root: str
    shuffle_service: tuple[str, int] | None
    work_dir: str
    memory_limit_bytes: int
    # The cluster secret, for the workers' shuffle services (the driver has its own).
    shuffle_secret: bytes = b""
    driver: RpcClient | None = None
    blocks: BlockManager | None = None
    broadcasts: dict[int, Any] = field(default_factory=dict)
    stage_blobs: dict[int, bytes] = field(default_factory=dict)
    stages: dict[int, Any] = field(default_factory=dict)


class TaskContext:
    """The context of the task running in this thread (PySpark's TaskContext)."""

    def __init__(self, env: ExecutorEnv, stage_id: int, stage_attempt: int, partition: int, attempt: int,
                 task_id: int, map_statuses: dict[int, list[MapStatus | None]]) -> None:
        self.env = env
        self._stage_id = stage_id
        self._stage_attempt = stage_attempt
        self._partition = partition
        self._attempt = attempt
        self._task_id = task_id
        self.map_statuses = map_statuses
        self.accumulator_updates: dict[int, Any] = {}
        self.cached: list[tuple[int, int]] = []
        self.read_metrics = ShuffleReadMetrics()
        self.local_properties: dict[str, str] = {}
        self.status = ""  # set by the task (MapReduce's reporter:status), kept in its record

    # --- PySpark API -----------------------------------------------------------------------
    @classmethod
    def get(cls) -> TaskContext | None:
        return getattr(_current, "tc", None)

    def partitionId(self) -> int:
        return self._partition

    def stageId(self) -> int:
        return self._stage_id

    def attemptNumber(self) -> int:
        return self._attempt

    def taskAttemptId(self) -> int:
        return self._task_id

    def getLocalProperty(self, key: str) -> str | None:
        return self.local_properties.get(key)

    def __enter__(self) -> TaskContext:
        _current.tc = self
        return self

    def __exit__(self, *exc: object) -> None:
        _current.tc = None

    # --- engine hooks ----------------------------------------------------------------------
    def cached_or_compute(self, rdd: RDD, split: Partition) -> Iterator:
        blocks = self.env.blocks
        key = (rdd.id, split.index)
        assert blocks is not None and rdd.storage_level is not None
        values = blocks.get(key)
        if values is not None:
            return iter(values)
        values = list(rdd.compute(split, self))
        blocks.put(key, values, rdd.storage_level)
        self.cached.append(key)
        return iter(values)

    def read_checkpoint(self, rdd: RDD, split: Partition) -> Iterator:
        from shoal.compute.sources import read_checkpoint_partition

        assert rdd.checkpoint_dir is not None
        return read_checkpoint_partition(rdd.checkpoint_dir, split.index)

    def read_shuffle(self, dep: ShuffleDependency, reduce_index: int) -> Iterator:
        statuses = self.map_statuses.get(dep.shuffle_id)
        if statuses is None:
            raise RuntimeError(f"no map outputs known for shuffle {dep.shuffle_id}")
        env = self.env
        return read_reduce_partition(
            statuses, dep, reduce_index, shuffle_id=dep.shuffle_id, app_id=env.app_id, local_node=env.node_id,
            secret=env.shuffle_secret or env.secret, work_dir=env.work_dir, memory_limit_bytes=env.memory_limit_bytes,
            metrics=self.read_metrics,
        )

    def map_output_events(self, shuffle_id: int, reduce_index: int, from_event: int, wait_s: float) -> Any:
        """Map outputs of a shuffle registered since ``from_event`` (a ``MapOutputs``),
        waiting up to ``wait_s`` for one: how a slow-started reduce task follows the
        maps still running."""
        from shoal.compute.protocol import MAP_OUTPUTS, MapOutputsRequest

        assert self.env.driver is not None
        return self.env.driver.call(MAP_OUTPUTS, MapOutputsRequest(shuffle_id, reduce_index, from_event, wait_s),
                                    timeout_s=wait_s + 30.0)

    def fetch_data(self, kind: str, ident: int, index: int = 0) -> bytes:
        from shoal.compute.protocol import FETCH, FetchData

        assert self.env.driver is not None
        return self.env.driver.call(FETCH, FetchData(kind, ident, index)).data

    def broadcast_value(self, bid: int) -> Any:
        env = self.env
        if bid not in env.broadcasts:
            env.broadcasts[bid] = pickle.loads(self.fetch_data("broadcast", bid))
        return env.broadcasts[bid]
