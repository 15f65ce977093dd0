"""The namespace's public vocabulary (pure): its limits, its ops and its results.

:class:`shoal.dfs.namespace.Namespace` applies the ops; the edit log persists them
(they are tagged msgspec structs, so a ``NamespaceOp`` union round-trips through
MessagePack); the RPC protocol carries the results. Everything here is re-exported
by :mod:`shoal.dfs.namespace`, which remains the import path callers use.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "BLOCKS_PER_FILE_MAX",
    "BLOCK_SIZE_BYTES_MAX",
    "DIRECTORY_ITEMS_MAX",
    "FIRST_GEN_STAMP",
    "REPLICATION_MAX",
    "UNKNOWN_LENGTH",
    "AbandonBlockOp",
    "AddBlockOp",
    "AppendOp",
    "BlockInfo",
    "CommitBlockLengthOp",
    "CompleteOp",
    "ContentSummary",
    "CreateOp",
    "DeleteOp",
    "FileStatus",
    "MkdirsOp",
    "NamespaceOp",
    "OpResult",
    "RecoverLeaseOp",
    "RenameOp",
    "SetReplicationOp",
]

REPLICATION_MAX = 512
BLOCK_SIZE_BYTES_MAX = 1 << 40
BLOCKS_PER_FILE_MAX = 1 << 20  # HDFS: dfs.namenode.fs-limits.max-blocks-per-file
DIRECTORY_ITEMS_MAX = 1 << 20  # HDFS: dfs.namenode.fs-limits.max-directory-items
FIRST_GEN_STAMP = 1000
UNKNOWN_LENGTH = -1


# --- ops (the edit log's records) -----------------------------------------------------
class MkdirsOp(msgspec.Struct, frozen=True, tag=True):
    path: str
    parents: bool
    now: float


class CreateOp(msgspec.Struct, frozen=True, tag=True):
    path: str
    client: str
    replication: int
    block_size: int
    overwrite: bool
    now: float


class AddBlockOp(msgspec.Struct, frozen=True, tag=True):
    """Commit the previous last block's length (if any), allocate the next block."""

    path: str
    client: str
    previous_length: int | None
    now: float


class AbandonBlockOp(msgspec.Struct, frozen=True, tag=True):
    """Drop the file's last block, still of unknown length (its pipeline failed)."""

    path: str
    client: str
    block_id: int


class CompleteOp(msgspec.Struct, frozen=True, tag=True):
    """Commit the last block's length, close the file and release the lease."""

    path: str
    client: str
    last_length: int | None
    now: float


class AppendOp(msgspec.Struct, frozen=True, tag=True):
    """Reopen a closed file for writing; returns its last block if that is partial."""

    path: str
    client: str
    now: float


class RenameOp(msgspec.Struct, frozen=True, tag=True):
    src: str
    dst: str
    now: float


class DeleteOp(msgspec.Struct, frozen=True, tag=True):
    path: str
    recursive: bool
    now: float


class SetReplicationOp(msgspec.Struct, frozen=True, tag=True):
    path: str
    replication: int


class RecoverLeaseOp(msgspec.Struct, frozen=True, tag=True):
    """Close an abandoned file, dropping a trailing block of unknown length."""

    path: str
    now: float


class CommitBlockLengthOp(msgspec.Struct, frozen=True, tag=True):
    """A worker reported a finalized replica: fix an unknown length (first wins)."""

    block_id: int
    length: int


NamespaceOp = (
    MkdirsOp
    | CreateOp
    | AddBlockOp
    | AbandonBlockOp
    | CompleteOp
    | AppendOp
    | RenameOp
    | DeleteOp
    | SetReplicationOp
    | RecoverLeaseOp
    | CommitBlockLengthOp
)


# --- results --------------------------------------------------------------------------
class BlockInfo(msgspec.Struct, frozen=True):
    block_id: int
    gen_stamp: int
    length: int  # UNKNOWN_LENGTH (-1) while not yet committed
    offset: int  # byte offset of the block in its file


class FileStatus(msgspec.Struct, frozen=True):
    path: str
    kind: str  # "file" | "directory"
    length: int
    replication: int
    block_size: int
    mtime: float
    atime: float
    under_construction: bool
    children: int  # directories: number of entries; files: 0
    owner: str = "shoal"
    permission: str = "644"


class ContentSummary(msgspec.Struct, frozen=True):
    length: int
    file_count: int
    directory_count: int
    space_consumed: int  # sum of length * replication


class OpResult(msgspec.Struct, frozen=True):
    status: FileStatus | None = None
    block: BlockInfo | None = None
    removed_blocks: tuple[int, ...] = ()
    created: bool = False
