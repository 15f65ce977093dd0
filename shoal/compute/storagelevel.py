"""Storage levels for ``persist`` (PySpark's StorageLevel: disk, memory, off-heap,
deserialized, replication)."""

from __future__ import annotations

from typing import ClassVar


class StorageLevel:
    NONE: ClassVar[StorageLevel]
    DISK_ONLY: ClassVar[StorageLevel]
    DISK_ONLY_2: ClassVar[StorageLevel]
    MEMORY_ONLY: ClassVar[StorageLevel]
    MEMORY_ONLY_2: ClassVar[StorageLevel]
    MEMORY_AND_DISK: ClassVar[StorageLevel]
    MEMORY_AND_DISK_2: ClassVar[StorageLevel]
    OFF_HEAP: ClassVar[StorageLevel]

    def __init__(self, useDisk: bool, useMemory: bool, useOffHeap: bool = False, deserialized: bool = False,
                 replication: int = 1) -> None:
        self.useDisk = useDisk
        self.useMemory = useMemory
        self.useOffHeap = useOffHeap
        self.deserialized = deserialized
        self.replication = replication

    def _key(self) -> tuple:
        return (self.useDisk, self.useMemory, self.useOffHeap, self.deserialized, self.replication)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StorageLevel) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "StorageLevel(%s, %s, %s, %s, %s)" % self._key()

    def __str__(self) -> str:
        parts = [name for flag, name in ((self.useDisk, "Disk"), (self.useMemory, "Memory"),
                                          (self.useOffHeap, "OffHeap")) if flag]
        parts.append("Deserialized" if self.deserialized else "Serialized")
        return " ".join(parts) + f" {self.replication}x Replicated"


StorageLevel.NONE = StorageLevel(False, False)
StorageLevel.DISK_ONLY = StorageLevel(True, False)
StorageLevel.DISK_ONLY_2 = StorageLevel(True, False, replication=2)
StorageLevel.MEMORY_ONLY = StorageLevel(False, True)
StorageLevel.MEMORY_ONLY_2 = StorageLevel(False, True, replication=2)
StorageLevel.MEMORY_AND_DISK = StorageLevel(True, True)
StorageLevel.MEMORY_AND_DISK_2 = StorageLevel(True, True, replication=2)
StorageLevel.OFF_HEAP = StorageLevel(True, True, True)
