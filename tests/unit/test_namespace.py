"""The NameNode namespace: one rule per test, plus a random-sequence model check."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.dfs import paths
from shoal.dfs.leases import LEASE_HARD_LIMIT_S, LEASE_SOFT_LIMIT_S, LeaseManager
from shoal.dfs.namespace import (
    BLOCK_SIZE_BYTES_MAX,
    FIRST_GEN_STAMP,
    REPLICATION_MAX,
    AbandonBlockOp,
    AddBlockOp,
    AppendOp,
    BlockInfo,
    CommitBlockLengthOp,
    CompleteOp,
    ContentSummary,
    CreateOp,
    DeleteOp,
    MkdirsOp,
    Namespace,
    NamespaceOp,
    OpResult,
    RecoverLeaseOp,
    RenameOp,
    SetReplicationOp,
)
from shoal.errors import (
    BadRequest,
    DirectoryNotEmpty,
    FileAlreadyExists,
    FileNotFound,
    InvalidPath,
    IsADirectory,
    LeaseExpired,
    LeaseHeld,
    NotADirectory,
    ShoalError,
)

BS = 1024  # block size used by most tests
FIRST = 1 << 30


def refused(ns: Namespace, op: NamespaceOp, error: type[Exception], *names: str) -> str:
    """Apply an op that must fail with ``error``; check it changed nothing."""
    before = ns.to_image()
    with pytest.raises(error) as info:
        ns.apply(op)
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert ns.to_image() == before
    ns.validate()
    message = str(info.value)
    for name in names:
        assert name in message, message
    return message


def create(ns: Namespace, path: str, client: str = "c1", *, now: float = 1.0, **kw: object) -> OpResult:
    args: dict = {"replication": 3, "block_size": BS, "overwrite": False} | kw
    return ns.apply(CreateOp(path, client, now=now, **args))


def write_file(ns: Namespace, path: str, lengths: list[int], client: str = "c1", now: float = 1.0) -> list[int]:
    """Create, add one block per length, complete; returns the block ids."""
    create(ns, path, client, now=now)
    ids: list[int] = []
    previous: int | None = None
    for length in lengths:
        ids.append(ns.apply(AddBlockOp(path, client, previous, now)).block.block_id)  # type: ignore[union-attr]
        previous = length
    ns.apply(CompleteOp(path, client, previous, now + 1))
    ns.validate()
    return ids


# --- purity -------------------------------------------------------------------------------
@pytest.mark.parametrize("module", ["namespace.py", "leases.py", "paths.py"])
def test_core_modules_do_no_io(module: str) -> None:
    source = (Path(paths.__file__).parent / module).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "socket", "time", "os", "pickle", "random"}


# --- mkdirs -------------------------------------------------------------------------------
def test_mkdirs_with_parents_creates_ancestors_and_is_idempotent() -> None:
    ns = Namespace()
    result = ns.apply(MkdirsOp("/a/b/c/", True, 5.0))
    assert result.created and result.status is not None
    assert result.status.path == "/a/b/c" and result.status.kind == "directory"
    assert [s.path for s in ns.list("/a")] == ["/a/b"]
    assert ns.stat("/").mtime == 5.0 and ns.stat("/a/b").mtime == 5.0
    again = ns.apply(MkdirsOp("/a/b", True, 9.0))
    assert not again.created and again.status == ns.stat("/a/b")
    assert ns.stat("/a").mtime == 5.0  # nothing changed
    assert not ns.apply(MkdirsOp("/", True, 9.0)).created
    ns.validate()


def test_mkdirs_without_parents_needs_parent_and_refuses_existing() -> None:
    ns = Namespace()
    refused(ns, MkdirsOp("/a/b", False, 1.0), FileNotFound, "/a/b", "/a")
    assert ns.apply(MkdirsOp("/a", False, 1.0)).created
    assert ns.apply(MkdirsOp("/a/b", False, 2.0)).created
    assert ns.stat("/a").mtime == 2.0
    refused(ns, MkdirsOp("/a/b", False, 3.0), FileAlreadyExists, "/a/b")
    refused(ns, MkdirsOp("/", False, 3.0), FileAlreadyExists)


def test_mkdirs_through_or_onto_a_file() -> None:
    ns = Namespace()
    create(ns, "/f")
    for parents in (True, False):
        refused(ns, MkdirsOp("/f", parents, 2.0), FileAlreadyExists, "/f")
        refused(ns, MkdirsOp("/f/x", parents, 2.0), NotADirectory, "/f/x", "/f is a file")
    refused(ns, MkdirsOp("/f/x/y", True, 2.0), NotADirectory, "/f")


def test_bad_arguments_are_refused() -> None:
    ns = Namespace()
    refused(ns, MkdirsOp("a/b", True, 1.0), InvalidPath, "a/b")
    refused(ns, MkdirsOp("/a/../b", True, 1.0), InvalidPath)
    refused(ns, MkdirsOp("/a", True, math.nan), BadRequest, "/a")
    refused(ns, MkdirsOp("/a", True, math.inf), BadRequest)
    with pytest.raises(BadRequest):
        ns.apply("mkdir /a")  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        Namespace(first_block_id=-1)


# --- create -------------------------------------------------------------------------------
def test_create_makes_parents_and_opens_the_file() -> None:
    ns = Namespace()
    result = create(ns, "/a/b/f", "c1", now=7.0, replication=2)
    status = result.status
    assert result.created and status is not None
    assert (status.kind, status.length, status.replication, status.block_size) == ("file", 0, 2, BS)
    assert status.under_construction and status.mtime == 7.0 and status.atime == 7.0
    assert (status.owner, status.permission, status.children) == ("shoal", "644", 0)
    assert ns.stat("/a/b").kind == "directory" and ns.stat("/a/b").permission == "755"
    assert ns.stat("/a/b").mtime == 7.0 and ns.stat("/").mtime == 7.0
    assert ns.under_construction() == [("/a/b/f", "c1")]
    assert ns.files_leased_by("c1") == ["/a/b/f"]
    ns.validate()


def test_create_refusals() -> None:
    ns = Namespace()
    ns.apply(MkdirsOp("/d", True, 1.0))
    create(ns, "/f")
    refused(ns, CreateOp("/", "c1", 3, BS, True, 2.0), IsADirectory, "/")
    refused(ns, CreateOp("/d", "c1", 3, BS, True, 2.0), IsADirectory, "/d")
    refused(ns, CreateOp("/f", "c1", 3, BS, False, 2.0), FileAlreadyExists, "/f")
    refused(ns, CreateOp("/f/x", "c1", 3, BS, False, 2.0), NotADirectory, "/f/x")
    refused(ns, CreateOp("/f", "c2", 3, BS, True, 2.0), LeaseHeld, "/f", "c1")
    for replication in (0, REPLICATION_MAX + 1, True, 2.5):
        refused(ns, CreateOp("/g", "c1", replication, BS, False, 2.0), BadRequest, "/g", "replication")  # type: ignore[arg-type]
    for block_size in (0, -1, BLOCK_SIZE_BYTES_MAX + 1):
        refused(ns, CreateOp("/g", "c1", 3, block_size, False, 2.0), BadRequest, "block_size")
    refused(ns, CreateOp("/g", "", 3, BS, False, 2.0), BadRequest, "client")
    refused(ns, CreateOp("/new/g", "c1", 3, BS, False, math.nan), BadRequest)
    assert ns.stat("/").children == 2


def test_create_overwrite_removes_old_blocks() -> None:
    ns = Namespace()
    old = write_file(ns, "/f", [BS, 10])
    result = create(ns, "/f", "c2", now=5.0, overwrite=True)
    assert result.removed_blocks == tuple(old)
    assert all(ns.file_of_block(b) is None for b in old)
    assert ns.stat("/f").length == 0 and ns.under_construction() == [("/f", "c2")]
    # the same client may overwrite the file it is still writing
    block = ns.apply(AddBlockOp("/f", "c2", None, 6.0)).block
    assert block is not None
    again = create(ns, "/f", "c2", now=7.0, overwrite=True)
    assert again.removed_blocks == (block.block_id,)
    assert ns.files_leased_by("c2") == ["/f"] and ns.blocks("/f") == []
    ns.validate()


# --- blocks -------------------------------------------------------------------------------
def test_block_ids_and_gen_stamps_count_up_and_lengths_commit() -> None:
    ns = Namespace()
    create(ns, "/f")
    b0 = ns.apply(AddBlockOp("/f", "c1", None, 2.0)).block
    assert b0 == BlockInfo(FIRST, FIRST_GEN_STAMP, -1, 0)
    b1 = ns.apply(AddBlockOp("/f", "c1", BS, 3.0)).block
    assert b1 == BlockInfo(FIRST + 1, FIRST_GEN_STAMP + 1, -1, BS)
    assert ns.stat("/f").length == BS
    done = ns.apply(CompleteOp("/f", "c1", 100, 9.0)).status
    assert done is not None and done.length == BS + 100 and not done.under_construction
    assert done.mtime == 9.0 and done.atime == 1.0
    assert ns.blocks("/f") == [BlockInfo(FIRST, 1000, BS, 0), BlockInfo(FIRST + 1, 1001, 100, BS)]
    assert ns.under_construction() == [] and ns.files_leased_by("c1") == []
    other = Namespace(first_block_id=7)
    create(other, "/g")
    assert other.apply(AddBlockOp("/g", "c1", None, 1.0)).block == BlockInfo(7, 1000, -1, 0)
    ns.validate()


def test_add_block_and_complete_length_rules() -> None:
    ns = Namespace()
    create(ns, "/f")
    refused(ns, AddBlockOp("/f", "c1", 0, 2.0), BadRequest, "/f", "no block")
    refused(ns, CompleteOp("/f", "c1", 5, 2.0), BadRequest, "/f")
    ns.apply(AddBlockOp("/f", "c1", None, 2.0))
    refused(ns, AddBlockOp("/f", "c1", None, 2.0), BadRequest, "previous_length")
    refused(ns, AddBlockOp("/f", "c1", BS + 1, 2.0), BadRequest, "previous_length")
    refused(ns, AddBlockOp("/f", "c1", -1, 2.0), BadRequest)
    refused(ns, CompleteOp("/f", "c1", None, 2.0), BadRequest, "last_length")
    refused(ns, CompleteOp("/f", "c1", BS + 1, 2.0), BadRequest)
    ns.apply(CompleteOp("/f", "c1", 0, 3.0))
    assert ns.stat("/f").length == 0
    # an empty file completes with no block at all
    create(ns, "/e")
    assert ns.apply(CompleteOp("/e", "c1", None, 3.0)).status.length == 0  # type: ignore[union-attr]


def test_writer_ops_need_the_lease() -> None:
    ns = Namespace()
    ns.apply(MkdirsOp("/d", True, 1.0))
    create(ns, "/f", "c1")
    ns.apply(AddBlockOp("/f", "c1", None, 2.0))
    write_file(ns, "/closed", [5])
    ops = [
        lambda p, c: AddBlockOp(p, c, None, 3.0),
        lambda p, c: CompleteOp(p, c, None, 3.0),
        lambda p, c: AbandonBlockOp(p, c, FIRST),
    ]
    for make in ops:
        refused(ns, make("/f", "c2"), LeaseHeld, "/f", "c1")
        refused(ns, make("/closed", "c1"), LeaseExpired, "/closed")
        refused(ns, make("/missing", "c1"), FileNotFound, "/missing")
        refused(ns, make("/d", "c1"), IsADirectory, "/d")
        refused(ns, make("/f", ""), BadRequest)


def test_abandon_block_drops_only_the_uncommitted_last_block() -> None:
    ns = Namespace()
    create(ns, "/f")
    first = ns.apply(AddBlockOp("/f", "c1", None, 2.0)).block
    second = ns.apply(AddBlockOp("/f", "c1", 10, 2.0)).block
    assert first is not None and second is not None
    refused(ns, AbandonBlockOp("/f", "c1", first.block_id), BadRequest, "not the last block")
    result = ns.apply(AbandonBlockOp("/f", "c1", second.block_id))
    assert result.removed_blocks == (second.block_id,)
    assert ns.file_of_block(second.block_id) is None
    refused(ns, AbandonBlockOp("/f", "c1", first.block_id), BadRequest, "committed")
    third = ns.apply(AddBlockOp("/f", "c1", None, 3.0)).block  # previous already committed
    assert third is not None and third.block_id == second.block_id + 1  # ids never reused
    ns.apply(CompleteOp("/f", "c1", 3, 4.0))
    assert [b.length for b in ns.blocks("/f")] == [10, 3]


def test_known_previous_length_must_match() -> None:
    ns = Namespace()
    create(ns, "/f")
    block = ns.apply(AddBlockOp("/f", "c1", None, 2.0)).block
    assert block is not None
    ns.apply(CommitBlockLengthOp(block.block_id, 40))
    refused(ns, AddBlockOp("/f", "c1", 41, 3.0), BadRequest, "conflicts")
    assert ns.apply(AddBlockOp("/f", "c1", 40, 3.0)).status.length == 40  # type: ignore[union-attr]


# --- append -------------------------------------------------------------------------------
def test_append_reopens_partial_last_block_with_new_gen_stamp() -> None:
    ns = Namespace()
    ids = write_file(ns, "/f", [BS, 100])
    result = ns.apply(AppendOp("/f", "c2", 5.0))
    assert result.status is not None and result.status.under_construction
    assert result.status.length == BS + 100  # bytes before the append stay visible
    block = result.block
    assert block is not None and block.block_id == ids[1]
    assert block.gen_stamp == FIRST_GEN_STAMP + 2 and block.length == -1 and block.offset == BS
    assert result.status.length - block.offset == 100  # where the writer continues
    assert ns.files_leased_by("c2") == ["/f"]
    refused(ns, CompleteOp("/f", "c2", 99, 6.0), BadRequest, "before the append")
    ns.apply(CompleteOp("/f", "c2", 300, 6.0))
    assert ns.blocks("/f")[-1] == BlockInfo(ids[1], FIRST_GEN_STAMP + 2, 300, BS)
    assert ns.stat("/f").length == BS + 300
    ns.validate()


def test_append_with_full_or_no_last_block_returns_no_block() -> None:
    ns = Namespace()
    write_file(ns, "/full", [BS])
    write_file(ns, "/empty", [])
    for path in ("/full", "/empty"):
        result = ns.apply(AppendOp(path, "c2", 3.0))
        assert result.block is None and result.status.under_construction  # type: ignore[union-attr]
    # the known last block needs no previous_length
    added = ns.apply(AddBlockOp("/full", "c2", None, 4.0)).block
    assert added is not None and added.offset == BS
    ns.validate()


def test_append_refusals() -> None:
    ns = Namespace()
    ns.apply(MkdirsOp("/d", True, 1.0))
    create(ns, "/open", "c1")
    refused(ns, AppendOp("/open", "c1", 2.0), LeaseHeld, "/open", "already")
    refused(ns, AppendOp("/open", "c2", 2.0), LeaseHeld, "/open", "c1")
    refused(ns, AppendOp("/missing", "c1", 2.0), FileNotFound, "/missing")
    refused(ns, AppendOp("/d", "c1", 2.0), IsADirectory, "/d")
    refused(ns, AppendOp("/open", "", 2.0), BadRequest)


def test_recovery_after_append_restores_the_old_block() -> None:
    ns = Namespace()
    ids = write_file(ns, "/f", [100])
    ns.apply(AppendOp("/f", "c2", 5.0))
    result = ns.apply(RecoverLeaseOp("/f", 9.0))
    assert result.removed_blocks == ()
    assert ns.blocks("/f") == [BlockInfo(ids[0], FIRST_GEN_STAMP, 100, 0)]
    assert not ns.stat("/f").under_construction and ns.stat("/f").mtime == 9.0
    # with a worker-reported length, recovery keeps the appended bytes
    appended = ns.apply(AppendOp("/f", "c3", 10.0)).block
    assert appended is not None
    ns.apply(CommitBlockLengthOp(ids[0], 150))
    ns.apply(RecoverLeaseOp("/f", 11.0))
    assert ns.blocks("/f") == [BlockInfo(ids[0], appended.gen_stamp, 150, 0)]
    ns.validate()


# --- lease recovery and worker-reported lengths ------------------------------------------
def test_recover_lease_drops_unknown_trailing_block_and_closes() -> None:
    ns = Namespace()
    create(ns, "/f", "c1")
    first = ns.apply(AddBlockOp("/f", "c1", None, 2.0)).block
    second = ns.apply(AddBlockOp("/f", "c1", BS, 3.0)).block
    assert first is not None and second is not None
    result = ns.apply(RecoverLeaseOp("/f", 8.0))
    assert result.removed_blocks == (second.block_id,)
    assert result.status is not None and not result.status.under_construction
    assert result.status.length == BS and result.status.mtime == 8.0
    assert ns.under_construction() == [] and ns.files_leased_by("c1") == []
    assert ns.file_of_block(second.block_id) is None
    refused(ns, AddBlockOp("/f", "c1", None, 9.0), LeaseExpired, "/f")
    before = ns.to_image()
    assert ns.apply(RecoverLeaseOp("/f", 10.0)).status == ns.stat("/f")  # closed: no-op
    assert ns.to_image() == before
    refused(ns, RecoverLeaseOp("/nope", 1.0), FileNotFound, "/nope")
    refused(ns, RecoverLeaseOp("/", 1.0), IsADirectory, "/")
    ns.validate()


def test_commit_block_length_first_commit_wins() -> None:
    ns = Namespace()
    create(ns, "/f")
    block = ns.apply(AddBlockOp("/f", "c1", None, 2.0)).block
    assert block is not None
    result = ns.apply(CommitBlockLengthOp(block.block_id, 77))
    assert result.block == BlockInfo(block.block_id, block.gen_stamp, 77, 0)
    before = ns.to_image()
    ns.apply(CommitBlockLengthOp(block.block_id, 78))  # conflicting: ignored
    ns.apply(CommitBlockLengthOp(block.block_id, 77))  # same: ignored
    assert ns.apply(CommitBlockLengthOp(12345, 5)) == OpResult()  # unknown block: ignored
    assert ns.to_image() == before
    refused(ns, CommitBlockLengthOp(block.block_id, -1), BadRequest)
    refused(ns, CommitBlockLengthOp(block.block_id, BS + 1), BadRequest)
    recovered = ns.apply(RecoverLeaseOp("/f", 3.0))
    assert recovered.removed_blocks == () and recovered.status.length == 77  # type: ignore[union-attr]
    ns.validate()


# --- rename -------------------------------------------------------------------------------
def test_rename_file_and_into_directory() -> None:
    ns = Namespace()
    ids = write_file(ns, "/a/f", [10])
    ns.apply(MkdirsOp("/b", True, 2.0))
    moved = ns.apply(RenameOp("/a/f", "/a/g", 3.0)).status
    assert moved is not None and moved.path == "/a/g" and moved.mtime == 2.0  # the file's own mtime stays
    assert ns.stat("/a").mtime == 3.0
    into = ns.apply(RenameOp("/a/g", "/b", 4.0)).status
    assert into is not None and into.path == "/b/g"
    assert ns.stat("/a").mtime == 4.0 and ns.stat("/b").mtime == 4.0
    assert ns.file_of_block(ids[0]) == "/b/g"
    ns.apply(RenameOp("/b", "/a", 5.0))  # a directory moves into a directory, carrying its files
    assert ns.file_of_block(ids[0]) == "/a/b/g"
    ns.apply(RenameOp("/a", "/z", 6.0))
    assert ns.file_of_block(ids[0]) == "/z/b/g" and ns.replication_of_block(ids[0]) == 3
    assert [s.path for s in ns.list("/")] == ["/z"]
    ns.validate()


def test_rename_refusals_and_no_ops() -> None:
    ns = Namespace()
    ns.apply(MkdirsOp("/a/b/c", True, 1.0))
    write_file(ns, "/f", [1])
    write_file(ns, "/a/g", [1])
    write_file(ns, "/a/f", [1])
    refused(ns, RenameOp("/missing", "/x", 2.0), FileNotFound, "/missing")
    refused(ns, RenameOp("/", "/x", 2.0), BadRequest, "root")
    refused(ns, RenameOp("/a", "/a/b", 2.0), BadRequest, "subtree")
    refused(ns, RenameOp("/a", "/a/b/c/d", 2.0), BadRequest, "subtree")
    refused(ns, RenameOp("/f", "/a/g", 2.0), FileAlreadyExists, "/a/g")
    refused(ns, RenameOp("/f", "/a", 2.0), FileAlreadyExists, "/a/f")  # into /a: /a/f exists
    refused(ns, RenameOp("/f", "/nope/x", 2.0), FileNotFound, "/nope")
    refused(ns, RenameOp("/a/g", "/f/x", 2.0), NotADirectory, "/f")
    refused(ns, RenameOp("/a/g", "/f/x/y", 2.0), NotADirectory, "/f")
    refused(ns, RenameOp("/f", "/f/x", 2.0), NotADirectory, "/f")
    before = ns.to_image()
    assert ns.apply(RenameOp("/f", "/f/", 3.0)).status == ns.stat("/f")
    assert ns.apply(RenameOp("/a/g", "/a", 3.0)).status == ns.stat("/a/g")  # target is src
    assert ns.apply(RenameOp("/a", "/a", 3.0)).status == ns.stat("/a")
    assert ns.to_image() == before


def test_rename_open_file_lease_follows_the_inode() -> None:
    ns = Namespace()
    create(ns, "/f", "c1")
    block = ns.apply(AddBlockOp("/f", "c1", None, 2.0)).block
    assert block is not None
    ns.apply(RenameOp("/f", "/g", 3.0))
    assert ns.under_construction() == [("/g", "c1")] and ns.files_leased_by("c1") == ["/g"]
    assert ns.file_of_block(block.block_id) == "/g"
    refused(ns, CompleteOp("/f", "c1", 1, 4.0), FileNotFound, "/f")
    assert ns.apply(CompleteOp("/g", "c1", 1, 4.0)).status.length == 1  # type: ignore[union-attr]


# --- delete -------------------------------------------------------------------------------
def test_delete_file_and_directories() -> None:
    ns = Namespace()
    ids = write_file(ns, "/d/f", [BS, 5])
    create(ns, "/d/e/open", "c2")
    open_block = ns.apply(AddBlockOp("/d/e/open", "c2", None, 2.0)).block
    assert open_block is not None
    refused(ns, DeleteOp("/d", False, 3.0), DirectoryNotEmpty, "/d")
    refused(ns, DeleteOp("/missing", True, 3.0), FileNotFound, "/missing")
    refused(ns, DeleteOp("/", True, 3.0), BadRequest, "root")
    result = ns.apply(DeleteOp("/d", True, 4.0))
    assert sorted(result.removed_blocks) == sorted([*ids, open_block.block_id])
    assert all(ns.file_of_block(b) is None for b in result.removed_blocks)
    assert ns.under_construction() == [] and ns.files_leased_by("c2") == []
    assert ns.stat("/").mtime == 4.0 and ns.stat("/").children == 0
    ns.apply(MkdirsOp("/empty", True, 5.0))
    assert ns.apply(DeleteOp("/empty", False, 6.0)).removed_blocks == ()
    more = write_file(ns, "/x", [3])
    assert ns.apply(DeleteOp("/x", False, 7.0)).removed_blocks == tuple(more)
    refused(ns, AddBlockOp("/d/e/open", "c2", None, 8.0), FileNotFound)
    ns.validate()


# --- replication --------------------------------------------------------------------------
def test_set_replication() -> None:
    ns = Namespace()
    ids = write_file(ns, "/f", [4])
    ns.apply(MkdirsOp("/d", True, 1.0))
    assert ns.apply(SetReplicationOp("/f", 5)).status.replication == 5  # type: ignore[union-attr]
    assert ns.replication_of_block(ids[0]) == 5 and ns.replication_of_block(42) is None
    refused(ns, SetReplicationOp("/d", 2), IsADirectory, "/d")
    refused(ns, SetReplicationOp("/nope", 2), FileNotFound, "/nope")
    refused(ns, SetReplicationOp("/f", 0), BadRequest, "/f")
    refused(ns, SetReplicationOp("/f", REPLICATION_MAX + 1), BadRequest, "/f")


# --- queries ------------------------------------------------------------------------------
def test_list_stat_blocks_and_content_summary() -> None:
    ns = Namespace()
    write_file(ns, "/d/b", [BS, 10])
    write_file(ns, "/d/a", [7])
    ns.apply(MkdirsOp("/d/c/e", True, 1.0))
    create(ns, "/d/c/open")
    ns.apply(AddBlockOp("/d/c/open", "c1", None, 2.0))
    assert [s.path for s in ns.list("/d")] == ["/d/a", "/d/b", "/d/c"]
    assert ns.list("/d/a") == [ns.stat("/d/a")]
    assert ns.stat("/d").children == 3 and ns.stat("/d/c").children == 2
    with pytest.raises(FileNotFound):
        ns.stat("/d/zz")
    with pytest.raises(FileNotFound):
        ns.list("/d/a/x")  # below a file: not found (as HDFS getFileInfo)
    with pytest.raises(IsADirectory):
        ns.blocks("/d")
    with pytest.raises(InvalidPath):
        ns.stat("d")
    assert [b.offset for b in ns.blocks("/d/b")] == [0, BS]
    assert ns.content_summary("/d") == ContentSummary(BS + 17, 3, 3, 3 * (BS + 17))
    assert ns.content_summary("/d/a") == ContentSummary(7, 1, 0, 21)
    assert ns.content_summary("/") == ContentSummary(BS + 17, 3, 4, 3 * (BS + 17))
    assert ns.block(FIRST) == ns.blocks("/d/b")[0] and ns.block(1) is None


def test_validate_catches_corruption() -> None:
    ns = Namespace()
    ids = write_file(ns, "/f", [3])
    ns._block_owner.pop(ids[0])  # noqa: SLF001 - deliberately corrupt the state
    with pytest.raises(AssertionError, match="block map"):
        ns.validate()


# --- checkpoint and replay ----------------------------------------------------------------
def _busy_namespace() -> tuple[Namespace, list[NamespaceOp]]:
    ops: list[NamespaceOp] = [
        MkdirsOp("/a/b", True, 1.0),
        CreateOp("/a/b/f", "c1", 3, BS, False, 2.0),
        AddBlockOp("/a/b/f", "c1", None, 3.0),
        AddBlockOp("/a/b/f", "c1", BS, 4.0),
        CompleteOp("/a/b/f", "c1", 12, 5.0),
        AppendOp("/a/b/f", "c2", 6.0),
        CreateOp("/open", "c3", 1, 2 * BS, False, 7.0),
        AddBlockOp("/open", "c3", None, 8.0),
        RenameOp("/a/b", "/", 9.0),
        CreateOp("/gone", "c1", 2, BS, False, 10.0),
        AddBlockOp("/gone", "c1", None, 10.5),
        AbandonBlockOp("/gone", "c1", FIRST + 3),
        DeleteOp("/gone", False, 11.0),
        SetReplicationOp("/b/f", 4),
        CommitBlockLengthOp(FIRST + 2, 99),
        MkdirsOp("/empty/dir", True, 12.0),
    ]
    ns = Namespace()
    for op in ops:
        ns.apply(op)
        ns.validate()
    return ns, ops


def test_image_round_trip_is_exact_and_keeps_counters() -> None:
    ns, _ = _busy_namespace()
    image = ns.to_image()
    restored = Namespace.from_image(image)
    restored.validate()
    assert restored.to_image() == image
    assert restored.under_construction() == ns.under_construction() == [("/b/f", "c2"), ("/open", "c3")]
    for path in ("/", "/b", "/b/f", "/open", "/empty/dir"):
        assert restored.stat(path) == ns.stat(path)
    assert restored.blocks("/b/f") == ns.blocks("/b/f")
    assert restored.file_of_block(FIRST + 1) == "/b/f"
    # the counters survive: both allocate the same next block and stamp
    follow = CreateOp("/next", "c9", 3, BS, False, 20.0), AddBlockOp("/next", "c9", None, 21.0)
    results = [[n.apply(op) for op in follow] for n in (ns, restored)]
    assert results[0] == results[1] and results[0][1].block.block_id == FIRST + 4  # type: ignore[union-attr]
    assert ns.to_image() == restored.to_image()


def test_ops_replay_from_their_encoding_to_the_same_state() -> None:
    ns, ops = _busy_namespace()
    decoder = msgspec.msgpack.Decoder(NamespaceOp)
    replayed = Namespace()
    for op in ops:
        decoded = decoder.decode(msgspec.msgpack.encode(op))
        assert decoded == op
        replayed.apply(decoded)
    assert replayed.to_image() == ns.to_image()


@pytest.mark.parametrize(
    "data",
    [b"", b"\x01\x02", msgspec.msgpack.encode({"version": 99})],
)
def test_corrupt_image_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        Namespace.from_image(data)


def test_image_with_broken_invariants_is_refused() -> None:
    ns, _ = _busy_namespace()
    image = msgspec.msgpack.decode(ns.to_image())
    image["next_block_id"] = FIRST  # every block id would be out of range
    with pytest.raises(ValueError, match="corrupt"):
        Namespace.from_image(msgspec.msgpack.encode(image))
    image = msgspec.msgpack.decode(ns.to_image())
    image["inodes"] = [rec for rec in image["inodes"] if rec[1] != "/b"]  # orphans /b/f
    with pytest.raises(ValueError, match="parent"):
        Namespace.from_image(msgspec.msgpack.encode(image))


# --- lease timing -------------------------------------------------------------------------
def test_lease_manager_timing() -> None:
    leases = LeaseManager()
    assert LEASE_SOFT_LIMIT_S < LEASE_HARD_LIMIT_S
    assert leases.holder_expired("ghost", 0.0, 60.0)  # nothing vouches for it
    leases.renew("c1", 10.0)
    leases.renew("c2", 5.0)
    leases.renew("c1", 8.0)  # renewals never move back
    assert leases.last_renewal("c1") == 10.0
    assert not leases.holder_expired("c1", 70.0, 60.0)
    assert leases.holder_expired("c1", 70.5, 60.0)
    assert leases.expired_clients(70.5, 60.0) == ["c2", "c1"]
    assert leases.expired_clients(66.0, 60.0) == ["c2"]
    leases.forget("c2")
    assert leases.clients() == ["c1"]
    with pytest.raises(BadRequest):
        leases.renew("", 1.0)
    with pytest.raises(BadRequest):
        leases.renew("c1", math.nan)


def test_soft_limit_recovery_flow() -> None:
    """The service's sequence when a second writer finds a quiet holder."""
    ns, leases = Namespace(), LeaseManager()
    create(ns, "/f", "c1", now=0.0)
    leases.renew("c1", 0.0)
    ns.apply(AddBlockOp("/f", "c1", None, 1.0))
    leases.renew("c1", 1.0)
    now = 1.0 + LEASE_SOFT_LIMIT_S + 1
    with pytest.raises(LeaseHeld):
        ns.apply(AppendOp("/f", "c2", now))
    assert leases.holder_expired("c1", now, LEASE_SOFT_LIMIT_S)
    for path in ns.files_leased_by("c1"):
        ns.apply(RecoverLeaseOp(path, now))
    leases.forget("c1")
    assert ns.apply(AppendOp("/f", "c2", now)).status.under_construction  # type: ignore[union-attr]
    assert ns.under_construction() == [("/f", "c2")]


# --- random sequences against a reference model -------------------------------------------
PATHS = ["/", "/a", "/b", "/a/b", "/a/c", "/b/a", "/a/b/c"]
CLIENTS = ["c1", "c2"]


class Model:
    """Which paths exist, their kind, and who holds each open file."""

    def __init__(self) -> None:
        self.kind: dict[str, str] = {"/": "dir"}
        self.holder: dict[str, str] = {}

    def walk_error(self, path: str) -> tuple[type[ShoalError] | None, bool]:
        """(NotADirectory if a file is met before the first missing ancestor, parent exists)."""
        comps = paths.split(path)
        for depth in range(1, len(comps)):
            prefix = "/" + "/".join(comps[:depth])
            kind = self.kind.get(prefix)
            if kind is None:
                return None, False
            if kind == "file":
                return NotADirectory, False
        return None, True

    def subtree(self, path: str) -> list[str]:
        return [p for p in self.kind if paths.is_ancestor(path, p)]

    def mkdirs(self, path: str, parents: bool) -> type[ShoalError] | None:
        kind = self.kind.get(path)
        if kind == "file":
            return FileAlreadyExists
        if kind == "dir":
            return None if parents else FileAlreadyExists
        error, parent_exists = self.walk_error(path)
        if error:
            return error
        if not parents and not parent_exists:
            return FileNotFound
        self._make_parents(path)
        self.kind[path] = "dir"
        return None

    def _make_parents(self, path: str) -> None:
        comps = paths.split(path)
        for depth in range(1, len(comps)):
            self.kind.setdefault("/" + "/".join(comps[:depth]), "dir")

    def create(self, path: str, client: str, overwrite: bool) -> type[ShoalError] | None:
        kind = self.kind.get(path)
        if kind == "dir":
            return IsADirectory
        if kind == "file":
            if not overwrite:
                return FileAlreadyExists
            if self.holder.get(path, client) != client:
                return LeaseHeld
        else:
            error, _ = self.walk_error(path)
            if error:
                return error
            self._make_parents(path)
        self.kind[path] = "file"
        self.holder[path] = client
        return None

    def writer_op(self, path: str, client: str) -> type[ShoalError] | None:
        kind = self.kind.get(path)
        if kind is None:
            return FileNotFound
        if kind == "dir":
            return IsADirectory
        if path not in self.holder:
            return LeaseExpired
        return None if self.holder[path] == client else LeaseHeld

    def append(self, path: str, client: str) -> type[ShoalError] | None:
        kind = self.kind.get(path)
        if kind is None:
            return FileNotFound
        if kind == "dir":
            return IsADirectory
        if path in self.holder:
            return LeaseHeld
        self.holder[path] = client
        return None

    def rename(self, src: str, dst: str) -> type[ShoalError] | None:
        if src == "/":
            return BadRequest
        if src not in self.kind:
            return FileNotFound
        if dst == src:
            return None
        target = paths.join(dst, paths.basename(src)) if self.kind.get(dst) == "dir" else dst
        if target == src:
            return None
        if self.kind[src] == "dir" and paths.is_ancestor(src, target):
            return BadRequest
        if target in self.kind:
            return FileAlreadyExists
        error, parent_exists = self.walk_error(target)
        if error or not parent_exists:
            return error or FileNotFound
        for old in self.subtree(src):
            new = target + old[len(src):]
            self.kind[new] = self.kind.pop(old)
            if old in self.holder:
                self.holder[new] = self.holder.pop(old)
        return None

    def delete(self, path: str, recursive: bool) -> type[ShoalError] | None:
        if path == "/":
            return BadRequest
        if path not in self.kind:
            return FileNotFound
        doomed = self.subtree(path)
        if len(doomed) > 1 and not recursive:
            return DirectoryNotEmpty
        for p in doomed:
            del self.kind[p]
            self.holder.pop(p, None)
        return None


_client_st = st.sampled_from(CLIENTS)
_length = st.sampled_from([None, 0, 100, BS, BS + 1])
_mostly = st.sampled_from([True, True, True, True, False])
_OP_KINDS = [
    "mkdirs", "create", "create", "add_block", "add_block", "add_block", "complete",
    "complete", "abandon", "append", "append", "rename", "rename", "delete",
    "set_replication", "recover", "commit",
]


def _draw_op(data: st.DataObject, ns: Namespace, model: Model, now: float) -> NamespaceOp:
    """One op, biased towards paths that exist and clients that hold leases."""
    def draw(strategy: st.SearchStrategy, label: str) -> object:
        return data.draw(strategy, label=label)

    any_path = st.sampled_from(PATHS + sorted(model.kind))
    closed = sorted(p for p, k in model.kind.items() if k == "file" and p not in model.holder)
    kind = draw(st.sampled_from(_OP_KINDS), "op")
    if kind in ("add_block", "complete", "abandon") and model.holder and draw(_mostly, "open"):
        path = draw(st.sampled_from(sorted(model.holder)), "path")
        client = draw(st.sampled_from([model.holder[path]] * 2 + CLIENTS), "client")
    elif kind == "append" and closed and draw(_mostly, "closed"):
        path, client = draw(st.sampled_from(closed), "path"), draw(_client_st, "client")
    else:
        path, client = draw(any_path, "path"), draw(_client_st, "client")
    if kind == "mkdirs":
        return MkdirsOp(path, draw(st.booleans(), "parents"), now)
    if kind == "create":
        return CreateOp(path, client, draw(st.sampled_from([1, 3]), "r"), BS, draw(st.booleans(), "ow"), now)
    if kind == "add_block":
        return AddBlockOp(path, client, draw(_length, "previous_length"), now)
    if kind == "complete":
        return CompleteOp(path, client, draw(_length, "last_length"), now)
    if kind == "abandon":
        ids = [b.block_id for b in ns.blocks(path)] if model.kind.get(path) == "file" else []
        return AbandonBlockOp(path, client, draw(st.sampled_from([*ids[-1:], FIRST]), "block_id"))
    if kind == "append":
        return AppendOp(path, client, now)
    if kind == "rename":
        return RenameOp(path, draw(any_path, "dst"), now)
    if kind == "delete":
        return DeleteOp(path, draw(st.booleans(), "recursive"), now)
    if kind == "set_replication":
        return SetReplicationOp(path, draw(st.sampled_from([0, 2]), "replication"))
    if kind == "recover":
        return RecoverLeaseOp(path, now)
    block_id = draw(st.integers(FIRST, FIRST + 20), "block_id")
    return CommitBlockLengthOp(block_id, draw(st.sampled_from([0, 50, BS + 1]), "length"))


def _expected(model: Model, op: NamespaceOp) -> tuple[type[ShoalError] | None, bool]:
    """(the error the model predicts, whether BadRequest is also acceptable)."""
    if isinstance(op, MkdirsOp):
        return model.mkdirs(op.path, op.parents), False
    if isinstance(op, CreateOp):
        return (IsADirectory if op.path == "/" else model.create(op.path, op.client, op.overwrite)), False
    if isinstance(op, (AddBlockOp, AbandonBlockOp, CompleteOp)):
        return model.writer_op(op.path, op.client), True
    if isinstance(op, AppendOp):
        return model.append(op.path, op.client), False
    if isinstance(op, RenameOp):
        return model.rename(op.src, op.dst), False
    if isinstance(op, DeleteOp):
        return model.delete(op.path, op.recursive), False
    if isinstance(op, CommitBlockLengthOp):
        return None, True
    if isinstance(op, SetReplicationOp) and op.replication == 0:
        return BadRequest, False  # arguments are checked before the path is looked up
    kind = model.kind.get(op.path)
    error = FileNotFound if kind is None else IsADirectory if kind == "dir" else None
    return error, False


def _tree(ns: Namespace) -> dict[str, str]:
    out: dict[str, str] = {}
    pending = ["/"]
    while pending:
        path = pending.pop()
        status = ns.stat(path)
        out[path] = "dir" if status.kind == "directory" else "file"
        if status.kind == "directory":
            pending.extend(child.path for child in ns.list(path))
    return out


@settings(max_examples=200, deadline=None, database=None)
@given(st.data())
def test_random_op_sequences_match_the_model(data: st.DataObject) -> None:
    ns, model = Namespace(), Model()
    applied: list[bytes] = []  # what an edit log would hold
    for step in range(data.draw(st.integers(0, 40), label="steps")):
        op = _draw_op(data, ns, model, float(step))
        before = ns.to_image()
        expected, bad_request_ok = _expected(model, op)
        try:
            ns.apply(op)
            error: type[Exception] | None = None
            applied.append(msgspec.msgpack.encode(op))
        except ShoalError as exc:
            error = type(exc)
            assert ns.to_image() == before, f"{op} failed with {exc!r} but changed state"
        if error is None and isinstance(op, (CompleteOp, RecoverLeaseOp)):
            model.holder.pop(op.path, None)  # the file is closed now
        if error is BadRequest and bad_request_ok and expected is None:
            error = None  # a length/replication the model does not track: refused, no change
        assert error is expected, f"step {step} {op}: got {error}, model says {expected}"
        ns.validate()
        assert _tree(ns) == model.kind
        assert ns.under_construction() == sorted(model.holder.items())
    image = ns.to_image()
    assert Namespace.from_image(image).to_image() == image
    replayed, decoder = Namespace(), msgspec.msgpack.Decoder(NamespaceOp)
    for record in applied:
        replayed.apply(decoder.decode(record))
    assert replayed.to_image() == image
