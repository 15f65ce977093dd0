"""Sort-based shuffle: the interface the driver and the executors code against.

The format and shared types are in :mod:`shoal.compute.shuffle_format`, the writer
in :mod:`shoal.compute.shuffle_write`, the reader in :mod:`shoal.compute.shuffle_read`
and the worker-side server in :mod:`shoal.compute.shuffle_service`.
"""

from __future__ import annotations

from collections.abc import Iterable

from shoal.compute.dependencies import ShuffleDependency
from shoal.compute.shuffle_format import (  # noqa: F401  (re-exported)
    APP_ID_RE,
    ID_MAX,
    U64,
    MapStatus,
    ShuffleReadMetrics,
    ShuffleWriteMetrics,
    check_app_id,
    check_index,
    decode_index,
    encode_index,
    read_committed,
    shuffle_paths,
)
from shoal.compute.shuffle_read import read_partition as read_reduce_partition  # noqa: F401
from shoal.compute.shuffle_write import MapOutputWriter


def write_map_output(
    records: Iterable[tuple],
    dep: ShuffleDependency,
    *,
    root: str,
    app_id: str,
    map_index: int,
    node_id: str,
    service: tuple[str, int] | None,
    work_dir: str,
    memory_limit_bytes: int,
    metrics: ShuffleWriteMetrics,
) -> MapStatus:
    """Partition (and combine, and sort) one map task's records into its data file."""
    writer = MapOutputWriter(dep, work_dir=work_dir, memory_limit_bytes=memory_limit_bytes, metrics=metrics)
    return writer.write(records, root=root, app_id=app_id, map_index=map_index, node_id=node_id, service=service)
