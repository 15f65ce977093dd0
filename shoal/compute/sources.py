"""RDDs that read data: driver collections, ranges, text and pickle files,
checkpoints."""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from shoal.compute import serde
from shoal.compute.rdd import RDD, Partition, call_site

if TYPE_CHECKING:
    from shoal.compute.context import ComputeContext
    from shoal.compute.storage import FileSplit
    from shoal.compute.taskcontext import TaskContext


class ParallelCollectionRDD(RDD):
    """``parallelize``: slices of a driver-side collection. Ranges travel inside the
    stage (they are tiny); other data stays in the driver and each task fetches its
    own slice, so a big collection is not copied to every executor."""

    def __init__(self, ctx: ComputeContext, data: Iterable, num_slices: int) -> None:
        super().__init__(ctx, [], site=call_site("parallelize"))
        if num_slices < 1:
            raise ValueError(f"number of slices must be positive, got {num_slices}")
        self.ranges: list[range] | None = None
        if isinstance(data, range):
            n = len(data)
            self.ranges = [data[i * n // num_slices : (i + 1) * n // num_slices] for i in range(num_slices)]
            self.num_slices = num_slices
        else:
            items = data if isinstance(data, list) else list(data)
            n = len(items)
            slices = [items[i * n // num_slices : (i + 1) * n // num_slices] for i in range(num_slices)]
            ctx._store_slices(self.id, [serde.dumps_batch(s) for s in slices])
            self.num_slices = num_slices
            # The driver keeps the slices as long as this RDD exists (its stage plans
            # hold it while a job may run it), then frees them.
            weakref.finalize(self, _drop_slices, ctx, int(self.id))

    def get_partitions(self) -> list[Partition]:
        return [Partition(i) for i in range(self.num_slices)]

    def compute(self, split: Partition, tc: TaskContext) -> Iterator:
        if self.ranges is not None:
            return iter(self.ranges[split.index])
        return iter(next(serde.iter_batches(tc.fetch_data("slice", self.id, split.index))))


def _drop_slices(ctx: ComputeContext, rdd_id: int) -> None:
    slices = getattr(getattr(ctx, "_driver", None), "slices", None)
    if slices is not None:
        slices.pop(rdd_id, None)


class FilePartition(Partition):
    __slots__ = ("split",)

    def __init__(self, index: int, split: FileSplit) -> None:
        super().__init__(index)
        self.split = split


class TextFileRDD(RDD):
    """``textFile``: one partition per input split (a DFS block; 32 MiB of a local
    file), placed where the block's replicas are."""

    def __init__(self, ctx: ComputeContext, path: str, min_partitions: int) -> None:
        super().__init__(ctx, [], site=call_site("textFile"))
        self.path = path
        self.min_partitions = min_partitions

    def get_partitions(self) -> list[Partition]:
        from shoal.compute.storage import text_splits

        return [FilePartition(i, s) for i, s in enumerate(text_splits(self.path, self.min_partitions))]

    def compute(self, split: Partition, tc: TaskContext) -> Iterator:
        from shoal.compute.storage import read_split_lines

        return read_split_lines(split.split)  # type: ignore[attr-defined]

    def preferred_locations(self, split: Partition) -> list[tuple[str, str]]:
        return _split_locations(split.split)  # type: ignore[attr-defined]


def _split_locations(s: FileSplit) -> list[tuple[str, str]]:
    """(host, rack) of the nodes holding a split's bytes (none for local files)."""
    racks = list(s.racks) + [""] * (len(s.hosts) - len(s.racks))
    return list(zip(s.hosts, racks))


class FileGroupPartition(Partition):
    __slots__ = ("files",)

    def __init__(self, index: int, files: list[tuple[str, int]]) -> None:
        super().__init__(index)
        self.files = files


class WholeTextFilesRDD(RDD):
    """``wholeTextFiles``: (path, content) per file; the path as Spark prints it
    (``file:/abs/path`` or the ``shoal://`` URL). Files are grouped into about
    ``minPartitions`` partitions; no file is cut."""

    def __init__(self, ctx: ComputeContext, path: str, min_partitions: int) -> None:
        from shoal.compute.input_paths import _target

        super().__init__(ctx, [], site=call_site("wholeTextFiles"))
        self.path = path
        self.min_partitions = min_partitions
        self.cluster = _target(None)  # the driver's default cluster, for the executors

    def get_partitions(self) -> list[Partition]:
        from shoal.compute.storage import whole_text_files

        groups = whole_text_files(self.path, self.min_partitions, cluster=self.cluster)
        return [FileGroupPartition(i, g) for i, g in enumerate(groups)]

    def compute(self, split: Partition, tc: TaskContext) -> Iterator:
        from shoal.compute.storage import read_whole_file

        for path, _ in split.files:  # type: ignore[attr-defined]
            yield path, read_whole_file(path, self.cluster)


class PickleFileRDD(RDD):
    """``pickleFile``: what ``saveAsPickleFile`` wrote, one partition per part file
    (files are not cut: ``minPartitions`` does not split them)."""

    def __init__(self, ctx: ComputeContext, path: str, min_partitions: int) -> None:
        super().__init__(ctx, [], site=call_site("pickleFile"))
        self.path = path
        self.min_partitions = min_partitions

    def get_partitions(self) -> list[Partition]:
        from shoal.compute.storage import pickle_splits

        return [FilePartition(i, s) for i, s in enumerate(pickle_splits(self.path, self.min_partitions))]

    def compute(self, split: Partition, tc: TaskContext) -> Iterator:
        from shoal.compute.storage import read_pickle_file

        return read_pickle_file(split.split)  # type: ignore[attr-defined]

    def preferred_locations(self, split: Partition) -> list[tuple[str, str]]:
        return _split_locations(split.split)  # type: ignore[attr-defined]


class EmptyRDD(RDD):
    def __init__(self, ctx: ComputeContext) -> None:
        super().__init__(ctx, [], site=call_site("emptyRDD"))

    def get_partitions(self) -> list[Partition]:
        return []

    def compute(self, split: Partition, tc: TaskContext) -> Iterator:
        return iter(())


def checkpoint_part_path(directory: str, index: int) -> str:
    return f"{directory.rstrip('/')}/part-{index:05d}"


def write_checkpoint_partition(directory: str, index: int, records: Iterator[Any]) -> int:
    """Write one partition of a checkpoint (atomically: temp name, then rename)."""
    import fsspec

    path = checkpoint_part_path(directory, index)
    tmp = path + ".tmp-" + str(id(records))
    fs, _, _ = fsspec.get_fs_token_paths(path)
    fs.makedirs(directory, exist_ok=True)
    with fs.open(tmp, "wb") as f:
        n, _ = serde.write_batches(f, records)
    if fs.exists(path):
        fs.rm(tmp)
    else:
        fs.mv(tmp, path)
    return n


def read_checkpoint_partition(directory: str, index: int) -> Iterator[Any]:
    import fsspec

    with fsspec.open(checkpoint_part_path(directory, index), "rb") as f:
        for batch in serde.read_batches(f):
            yield from batch
