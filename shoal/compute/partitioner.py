"""Partitioners: which reduce partition a key goes to.

``portable_hash`` must agree in every process (driver and executors): Python salts
``hash()`` of str and bytes per process, so those hash with CRC-32 of their bytes;
tuples combine their items' hashes as PySpark's ``portable_hash`` does.
"""

from __future__ import annotations

import bisect
import zlib
from functools import partial
from collections.abc import Callable, Sequence
from typing import Any

_crc32 = zlib.crc32


def portable_hash(x: Any) -> int:
    """A hash of ``x`` that is the same in every Python process."""
    if isinstance(x, str):
        return _crc32(x.encode("utf-8", "surrogatepass"))
    if isinstance(x, bytes):
        return _crc32(x)
    if x is None:
        return 0
    if isinstance(x, tuple):
        h = 0x345678
        for item in x:
            h ^= portable_hash(item)
            h *= 1000003
            h &= 0xFFFFFFFFFFFFFFFF
        h ^= len(x)
        return h
    if isinstance(x, frozenset):
        return sum(portable_hash(i) for i in x) & 0xFFFFFFFFFFFFFFFF
    return hash(x)  # int, float, bool and user types with their own __hash__


class Partitioner:
    """Maps keys to ``num_partitions`` reduce partitions."""

    num_partitions: int

    def partition(self, key: Any) -> int:
        raise NotImplementedError

    def partition_many(self, keys: Sequence[Any]) -> list[int]:
        """The partition of each key, in one call (hot path of every shuffle write)."""
        return list(map(self.partition, keys))


class HashPartitioner(Partitioner):
    """``portable_hash(key) % n``; an optional ``partition_func`` replaces the hash
    (PySpark's ``partitionBy(n, partitionFunc)``)."""

    def __init__(self, num_partitions: int, partition_func: Callable[[Any], int] | None = None) -> None:
        if num_partitions < 1:
            raise ValueError(f"number of partitions must be positive, got {num_partitions}")
        self.num_partitions = num_partitions
        self.partition_func = partition_func

    def partition(self, key: Any) -> int:
        f = self.partition_func or portable_hash
        return f(key) % self.num_partitions

    def partition_many(self, keys: Sequence[Any]) -> list[int]:
        n = self.num_partitions
        if self.partition_func is None and keys and set(map(type, keys)) == {str}:  # one C pass
            crc = _crc32
            return [crc(k.encode("utf-8", "surrogatepass")) % n for k in keys]
        f = self.partition_func or portable_hash
        return [f(k) % n for k in keys]

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, HashPartitioner)
            and other.num_partitions == self.num_partitions
            and other.partition_func is self.partition_func
        )

    def __hash__(self) -> int:
        return hash((HashPartitioner, self.num_partitions))


class RangePartitioner(Partitioner):
    """Keys to ranges between sorted bounds (``sortByKey``), as Spark's
    RangePartitioner: bounds come from a sample of the keys."""

    def __init__(self, bounds: list[Any], ascending: bool = True, keyfunc: Callable[[Any], Any] | None = None) -> None:
        self.bounds = bounds
        self.ascending = ascending
        self.keyfunc = keyfunc
        self.num_partitions = len(bounds) + 1

    def partition(self, key: Any) -> int:
        k = self.keyfunc(key) if self.keyfunc is not None else key
        p = bisect.bisect_left(self.bounds, k)
        return p if self.ascending else self.num_partitions - 1 - p

    def partition_many(self, keys: Sequence[Any]) -> list[int]:
        if self.keyfunc is not None:
            keys = list(map(self.keyfunc, keys))
        parts = list(map(partial(bisect.bisect_left, self.bounds), keys))
        if not self.ascending:
            last = self.num_partitions - 1
            parts = [last - p for p in parts]
        return parts

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, RangePartitioner)
            and other.bounds == self.bounds
            and other.ascending == self.ascending
            and other.keyfunc is self.keyfunc
        )

    def __hash__(self) -> int:
        return hash((RangePartitioner, len(self.bounds)))
