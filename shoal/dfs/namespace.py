"""The NameNode's namespace: directory tree, files, their blocks and lease holders (pure).

Every mutation is a typed, frozen op applied by ONE mutator, :meth:`Namespace.apply`.
Ops carry their own timestamps and the namespace allocates ids from counters that
are part of its state, so the edit log can persist ops and replay them to the same
state. An op that raises changes nothing (all checks run before the first write).

Rules (HDFS semantics; each refusal names the path):

* Paths are normalized by :func:`shoal.dfs.paths.normalize` (``InvalidPath``).
* A file is open ("under construction") iff it has a lease holder. Only the holder
  may ``add_block``/``abandon_block``/``complete`` (else ``LeaseHeld``; a closed or
  recovered file gives ``LeaseExpired``).
* Block ids grow by one from ``first_block_id``; generation stamps from 1000, one
  per new block and one per block reopened by ``append``. Ids are never reused.
* A block's length is ``-1`` until committed by the writer (the next ``add_block``
  or ``complete``) or by a worker report (``CommitBlockLengthOp``, first commit
  wins). Only the last block of an open file may have an unknown length; a closed
  file never has one. File length = sum of known block lengths.
* ``append`` reopens a closed file. If its last block is partial, that block gets
  a new generation stamp and an unknown length; its old (stamp, length) is kept as
  the "prior" so lease recovery can fall back to it: bytes acknowledged before the
  append are never dropped. Meanwhile the file's length still counts the prior
  length, so the writer continues at ``status.length - block.offset`` in the block.
* ``RecoverLeaseOp`` closes an abandoned file: the unknown-length last block is
  dropped (or restored to its prior, if it was reopened by append).
* mtime changes on create/complete/lease recovery of a file and on every
  directory whose entries change (mkdirs, create, rename, delete); atime is set on
  create. Directories report atime 0, as HDFS does.

Lease *timing* is soft state kept by :class:`shoal.dfs.leases.LeaseManager`. The ops,
results and limits are defined in :mod:`shoal.dfs.namespace_ops` (re-exported here), the
tree's nodes and invariants in :mod:`shoal.dfs.inodes`, the image format in
:mod:`shoal.dfs.fsimage`.
"""

from __future__ import annotations

import math

from shoal.dfs import fsimage, paths
from shoal.dfs.fsimage import IMAGE_VERSION
from shoal.dfs.inodes import Block, Dir, File, Inode, check_invariants, path_of, subtree
from shoal.dfs.namespace_ops import (
    BLOCKS_PER_FILE_MAX,
    BLOCK_SIZE_BYTES_MAX,
    DIRECTORY_ITEMS_MAX,
    FIRST_GEN_STAMP,
    REPLICATION_MAX,
    UNKNOWN_LENGTH,
    AbandonBlockOp,
    AddBlockOp,
    AppendOp,
    BlockInfo,
    CommitBlockLengthOp,
    CompleteOp,
    ContentSummary,
    CreateOp,
    DeleteOp,
    FileStatus,
    MkdirsOp,
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
    IsADirectory,
    LeaseExpired,
    LeaseHeld,
    NotADirectory,
)

# The limits, ops and results live in shoal.dfs.namespace_ops (IMAGE_VERSION in
# shoal.dfs.fsimage); they are re-exported here, the import path the rest of shoal uses.
__all__ = [
    "BLOCKS_PER_FILE_MAX", "BLOCK_SIZE_BYTES_MAX", "DIRECTORY_ITEMS_MAX", "FIRST_GEN_STAMP",
    "IMAGE_VERSION", "REPLICATION_MAX", "UNKNOWN_LENGTH",
    "AbandonBlockOp", "AddBlockOp", "AppendOp", "CommitBlockLengthOp", "CompleteOp", "CreateOp",
    "DeleteOp", "MkdirsOp", "NamespaceOp", "RecoverLeaseOp", "RenameOp", "SetReplicationOp",
    "BlockInfo", "ContentSummary", "FileStatus", "OpResult",
    "Namespace",
]


# --- argument checks ------------------------------------------------------------------
def _now(now: float, where: str) -> float:
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
        raise BadRequest(f"{where}: time must be a finite number, got {now!r}")
    return float(now)


def _int_in(value: object, low: int, high: int, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{where}: {what} must be an integer in {low}..{high}, got {value!r}")
    return value


def _client(client: str, where: str) -> str:
    if not isinstance(client, str) or not client:
        raise BadRequest(f"{where}: client name must be a non-empty string, got {client!r}")
    return client


class Namespace:
    """Directory tree + files + block ownership + lease holders; one mutator, ``apply``."""

    def __init__(self, *, first_block_id: int = 1 << 30) -> None:
        _int_in(first_block_id, 0, 1 << 62, "first_block_id", "namespace")
        self._root = Dir("", None, 0.0)
        self._first_block_id = first_block_id
        self._next_block_id = first_block_id
        self._next_gen_stamp = FIRST_GEN_STAMP
        self._block_owner: dict[int, File] = {}
        self._leases: dict[str, set[File]] = {}  # holder -> its open files

    # --- the mutator ------------------------------------------------------------------
    def apply(self, op: NamespaceOp) -> OpResult:
        """Apply one op; raises a ``shoal.errors`` class and changes nothing on refusal."""
        handler = _HANDLERS.get(type(op))
        if handler is None:
            raise BadRequest(f"not a namespace op: {type(op).__name__}")
        return handler(self, op)

    def _mkdirs(self, op: MkdirsOp) -> OpResult:
        path = paths.normalize(op.path)
        now = _now(op.now, f"mkdirs {path}")
        comps = paths.split(path)
        node, depth = self._descend(comps)
        if depth == len(comps):
            if isinstance(node, File):
                raise FileAlreadyExists(f"mkdirs {path}: {path} exists and is a file")
            if not op.parents:
                raise FileAlreadyExists(f"mkdirs {path}: directory {path} already exists")
            return OpResult(status=self._status(node, path), created=False)
        parent = self._require_dir_parent(node, depth, comps, f"mkdirs {path}")
        if not op.parents and depth < len(comps) - 1:
            raise FileNotFound(
                f"mkdirs {path}: parent {paths.parent(path)} does not exist (use parents=True)"
            )
        self._check_room(parent, f"mkdirs {path}")
        made = self._make_dirs(parent, comps[depth:], now)
        return OpResult(status=self._status(made, path), created=True)

    def _create(self, op: CreateOp) -> OpResult:
        path = paths.normalize(op.path)
        where = f"create {path}"
        now = _now(op.now, where)
        client = _client(op.client, where)
        replication = _int_in(op.replication, 1, REPLICATION_MAX, "replication", where)
        block_size = _int_in(op.block_size, 1, BLOCK_SIZE_BYTES_MAX, "block_size", where)
        comps = paths.split(path)
        if not comps:
            raise IsADirectory(f"{where}: / is a directory")
        node, depth = self._descend(comps)
        removed: tuple[int, ...] = ()
        if depth == len(comps):
            if isinstance(node, Dir):
                raise IsADirectory(f"{where}: {path} is a directory")
            if not op.overwrite:
                raise FileAlreadyExists(f"{where}: {path} exists (overwrite not requested)")
            if node.client is not None and node.client != client:
                raise LeaseHeld(f"{where}: {path} is being written by {node.client}")
            parent = node.parent
            assert parent is not None
            removed = self._forget_file(node)
        else:
            parent = self._require_dir_parent(node, depth, comps, where)
            self._check_room(parent, where)
            parent = self._make_dirs(parent, comps[depth:-1], now)
        file = File(comps[-1], parent, replication, block_size, now, now, client)
        parent.children[file.name] = file
        parent.mtime = now
        self._leases.setdefault(client, set()).add(file)
        return OpResult(status=self._status(file, path), removed_blocks=removed, created=True)

    def _add_block(self, op: AddBlockOp) -> OpResult:
        path = paths.normalize(op.path)
        where = f"add_block {path}"
        _now(op.now, where)
        file = self._open_file(path, op.client, where)
        commit = self._check_last_length(file, op.previous_length, "previous_length", where)
        if len(file.blocks) >= BLOCKS_PER_FILE_MAX:
            raise BadRequest(f"{where}: file has reached the limit of {BLOCKS_PER_FILE_MAX} blocks")
        if commit is not None:
            commit.length, commit.prior = op.previous_length, None  # type: ignore[assignment]
        block = Block(self._next_block_id, self._next_gen_stamp, UNKNOWN_LENGTH)
        self._next_block_id += 1
        self._next_gen_stamp += 1
        file.blocks.append(block)
        self._block_owner[block.block_id] = file
        return OpResult(status=self._status(file, path), block=self._last_block_info(file))

    def _abandon_block(self, op: AbandonBlockOp) -> OpResult:
        path = paths.normalize(op.path)
        where = f"abandon_block {path}"
        file = self._open_file(path, op.client, where)
        last = file.blocks[-1] if file.blocks else None
        if last is None or last.block_id != op.block_id:
            raise BadRequest(f"{where}: block {op.block_id!r} is not the last block of the file")
        if last.length != UNKNOWN_LENGTH:
            raise BadRequest(f"{where}: block {op.block_id} already has a committed length")
        if last.prior is not None:
            raise BadRequest(f"{where}: block {op.block_id} holds data from before the append")
        file.blocks.pop()
        del self._block_owner[last.block_id]
        return OpResult(status=self._status(file, path), removed_blocks=(last.block_id,))

    def _complete(self, op: CompleteOp) -> OpResult:
        path = paths.normalize(op.path)
        where = f"complete {path}"
        now = _now(op.now, where)
        file = self._open_file(path, op.client, where)
        commit = self._check_last_length(file, op.last_length, "last_length", where)
        if commit is not None:
            commit.length, commit.prior = op.last_length, None  # type: ignore[assignment]
        self._close(file, now)
        return OpResult(status=self._status(file, path))

    def _append(self, op: AppendOp) -> OpResult:
        path = paths.normalize(op.path)
        where = f"append {path}"
        _now(op.now, where)
        client = _client(op.client, where)
        file = self._existing_file(path, where)
        if file.client == client:
            raise LeaseHeld(f"{where}: {client} already has {path} open for writing")
        if file.client is not None:
            raise LeaseHeld(f"{where}: {path} is being written by {file.client}")
        file.client = client
        self._leases.setdefault(client, set()).add(file)
        last = file.blocks[-1] if file.blocks else None
        if last is None or last.length >= file.block_size:
            return OpResult(status=self._status(file, path))
        # HDFS bumps the generation stamp of a block reopened for append, so replicas
        # that miss the new bytes are recognisable as stale.
        last.prior = (last.gen_stamp, last.length)
        last.gen_stamp = self._next_gen_stamp
        last.length = UNKNOWN_LENGTH
        self._next_gen_stamp += 1
        return OpResult(status=self._status(file, path), block=self._last_block_info(file))

    def _rename(self, op: RenameOp) -> OpResult:
        src, dst = paths.normalize(op.src), paths.normalize(op.dst)
        where = f"rename {src} -> {dst}"
        now = _now(op.now, where)
        if src == paths.ROOT:
            raise BadRequest(f"{where}: the root directory cannot be renamed")
        node = self._find(paths.split(src))
        if node is None:
            raise FileNotFound(f"{where}: {src} does not exist")
        target = dst
        if isinstance(self._find(paths.split(dst)), Dir) and dst != src:
            target = paths.join(dst, node.name)  # "mv src dir" moves src into dir
        if target == src:
            return OpResult(status=self._status(node, src))
        if isinstance(node, Dir) and paths.is_ancestor(src, target):
            raise BadRequest(f"{where}: cannot move a directory into its own subtree")
        comps = paths.split(target)
        parent_node, depth = self._descend(comps)
        if depth == len(comps):
            raise FileAlreadyExists(f"{where}: {target} already exists")
        new_parent = self._require_dir_parent(parent_node, depth, comps, where)
        if depth < len(comps) - 1:
            raise FileNotFound(f"{where}: parent directory {paths.parent(target)} does not exist")
        if new_parent is not node.parent:
            self._check_room(new_parent, where)
        old_parent = node.parent
        assert old_parent is not None
        del old_parent.children[node.name]
        old_parent.mtime = now
        node.name, node.parent = comps[-1], new_parent
        new_parent.children[node.name] = node
        new_parent.mtime = now
        return OpResult(status=self._status(node, target))

    def _delete(self, op: DeleteOp) -> OpResult:
        path = paths.normalize(op.path)
        where = f"delete {path}"
        now = _now(op.now, where)
        if path == paths.ROOT:
            raise BadRequest(f"{where}: the root directory cannot be deleted")
        node = self._find(paths.split(path))
        if node is None:
            raise FileNotFound(f"{where}: {path} does not exist")
        if isinstance(node, Dir) and node.children and not op.recursive:
            raise DirectoryNotEmpty(f"{where}: directory is not empty (use recursive)")
        removed: list[int] = []
        for inode in subtree(node):
            if isinstance(inode, File):
                removed.extend(self._forget_file(inode))
        parent = node.parent
        assert parent is not None
        del parent.children[node.name]
        parent.mtime = now
        return OpResult(removed_blocks=tuple(removed))

    def _set_replication(self, op: SetReplicationOp) -> OpResult:
        path = paths.normalize(op.path)
        where = f"set_replication {path}"
        replication = _int_in(op.replication, 1, REPLICATION_MAX, "replication", where)
        file = self._existing_file(path, where)
        file.replication = replication
        return OpResult(status=self._status(file, path))

    def _recover_lease(self, op: RecoverLeaseOp) -> OpResult:
        path = paths.normalize(op.path)
        where = f"recover_lease {path}"
        now = _now(op.now, where)
        file = self._existing_file(path, where)
        if file.client is None:
            return OpResult(status=self._status(file, path))
        removed: list[int] = []
        while file.blocks and file.blocks[-1].length == UNKNOWN_LENGTH:
            last = file.blocks[-1]
            if last.prior is not None:  # reopened by append: fall back to what it held
                (last.gen_stamp, last.length), last.prior = last.prior, None
                break
            file.blocks.pop()
            del self._block_owner[last.block_id]
            removed.append(last.block_id)
        self._close(file, now)
        return OpResult(status=self._status(file, path), removed_blocks=tuple(removed))

    def _commit_block_length(self, op: CommitBlockLengthOp) -> OpResult:
        where = f"commit_block_length {op.block_id!r}"
        _int_in(op.block_id, 0, 1 << 63, "block_id", where)
        file = self._block_owner.get(op.block_id)
        limit = file.block_size if file is not None else BLOCK_SIZE_BYTES_MAX
        length = _int_in(op.length, 0, limit, "length", where)
        if file is None:
            return OpResult()
        index = self._block_index(file, op.block_id)
        block = file.blocks[index]
        if block.length == UNKNOWN_LENGTH:
            block.length, block.prior = length, None
        status = self._status(file, path_of(file))
        return OpResult(status=status, block=self._block_info(file, index))

    # --- mutation helpers -----------------------------------------------------------
    def _make_dirs(self, parent: Dir, names: list[str], now: float) -> Dir:
        if names:
            parent.mtime = now
        for name in names:
            child = Dir(name, parent, now)
            parent.children[name] = child
            parent = child
        return parent

    def _forget_file(self, file: File) -> tuple[int, ...]:
        """Drop a file's blocks from the block map and its lease (not its tree entry)."""
        for block in file.blocks:
            del self._block_owner[block.block_id]
        if file.client is not None:
            self._drop_lease(file)
        return tuple(b.block_id for b in file.blocks)

    def _close(self, file: File, now: float) -> None:
        self._drop_lease(file)
        file.client = None
        file.mtime = now

    def _drop_lease(self, file: File) -> None:
        assert file.client is not None
        held = self._leases[file.client]
        held.discard(file)
        if not held:
            del self._leases[file.client]

    # --- lookup helpers ---------------------------------------------------------------
    def _descend(self, comps: list[str]) -> tuple[Inode, int]:
        """Walk as far as the path exists; returns the last inode reached and its depth."""
        node: Inode = self._root
        depth = 0
        while depth < len(comps) and isinstance(node, Dir):
            child = node.children.get(comps[depth])
            if child is None:
                break
            node, depth = child, depth + 1
        return node, depth

    def _find(self, comps: list[str]) -> Inode | None:
        node, depth = self._descend(comps)
        return node if depth == len(comps) else None

    @staticmethod
    def _require_dir_parent(node: Inode, depth: int, comps: list[str], where: str) -> Dir:
        """``node`` is where a walk stopped short; refuse if it stopped at a file."""
        if isinstance(node, File):
            ancestor = "/" + "/".join(comps[:depth])
            raise NotADirectory(f"{where}: {ancestor} is a file, not a directory")
        return node

    @staticmethod
    def _check_room(directory: Dir, where: str) -> None:
        if len(directory.children) >= DIRECTORY_ITEMS_MAX:
            full = f"directory {path_of(directory)} is full ({DIRECTORY_ITEMS_MAX} entries)"
            raise BadRequest(f"{where}: {full}")

    def _existing(self, path: str, where: str) -> Inode:
        node = self._find(paths.split(path))
        if node is None:
            raise FileNotFound(f"{where}: {path} does not exist")
        return node

    def _existing_file(self, path: str, where: str) -> File:
        node = self._existing(path, where)
        if isinstance(node, Dir):
            raise IsADirectory(f"{where}: {path} is a directory")
        return node

    def _open_file(self, path: str, client: str, where: str) -> File:
        """The file ``client`` is writing, or ``LeaseExpired``/``LeaseHeld``."""
        client = _client(client, where)
        file = self._existing_file(path, where)
        if file.client is None:
            raise LeaseExpired(
                f"{where}: {path} is not open for writing (closed, or its lease was recovered)"
            )
        if file.client != client:
            raise LeaseHeld(f"{where}: lease on {path} is held by {file.client}, not {client}")
        return file

    @staticmethod
    def _check_last_length(
        file: File, length: int | None, label: str, where: str
    ) -> Block | None:
        """Validate the writer's commit of the last block; return the block to update."""
        last = file.blocks[-1] if file.blocks else None
        if length is None:
            if last is not None and last.length == UNKNOWN_LENGTH:
                raise BadRequest(f"{where}: {label} is required for block {last.block_id}")
            return None
        if last is None:
            raise BadRequest(f"{where}: {label}={length!r} given but the file has no block")
        _int_in(length, 0, file.block_size, label, where)
        if last.length != UNKNOWN_LENGTH:
            if length != last.length:
                raise BadRequest(
                    f"{where}: {label}={length} conflicts with the committed length "
                    f"{last.length} of block {last.block_id}"
                )
            return None
        if last.prior is not None and length < last.prior[1]:
            raise BadRequest(
                f"{where}: {label}={length} is shorter than block {last.block_id} was "
                f"before the append ({last.prior[1]})"
            )
        return last

    @staticmethod
    def _block_index(file: File, block_id: int) -> int:
        for index in range(len(file.blocks) - 1, -1, -1):
            if file.blocks[index].block_id == block_id:
                return index
        raise AssertionError(f"block {block_id} is mapped to {path_of(file)} but not in it")

    def _last_block_info(self, file: File) -> BlockInfo:
        return self._block_info(file, len(file.blocks) - 1)

    @staticmethod
    def _block_info(file: File, index: int) -> BlockInfo:
        block = file.blocks[index]
        offset = sum(b.visible_length() for b in file.blocks[:index])
        return BlockInfo(block.block_id, block.gen_stamp, block.length, offset)

    @staticmethod
    def _status(node: Inode, path: str) -> FileStatus:
        if isinstance(node, Dir):
            return FileStatus(
                path, "directory", 0, 0, 0, node.mtime, 0.0, False, len(node.children),
                permission="755",
            )
        return FileStatus(
            path, "file", node.length(), node.replication, node.block_size,
            node.mtime, node.atime, node.client is not None, 0,
        )

    # --- queries ----------------------------------------------------------------------
    def stat(self, path: str) -> FileStatus:
        path = paths.normalize(path)
        return self._status(self._existing(path, "stat"), path)

    def list(self, path: str) -> list[FileStatus]:
        """A directory's entries sorted by name; a file lists as itself (as HDFS)."""
        path = paths.normalize(path)
        node = self._existing(path, "list")
        if isinstance(node, File):
            return [self._status(node, path)]
        return [self._status(node.children[n], paths.join(path, n)) for n in sorted(node.children)]

    def blocks(self, path: str) -> list[BlockInfo]:
        path = paths.normalize(path)
        file = self._existing_file(path, "blocks")
        out: list[BlockInfo] = []
        offset = 0
        for block in file.blocks:
            # Readers see the visible length: an appended block's prior length until
            # the appender commits (readers never see a partly written packet).
            out.append(BlockInfo(block.block_id, block.gen_stamp, block.visible_length(), offset))
            offset += block.visible_length()
        return out

    def content_summary(self, path: str) -> ContentSummary:
        path = paths.normalize(path)
        length = files = dirs = space = 0
        for inode in subtree(self._existing(path, "content_summary")):
            if isinstance(inode, Dir):
                dirs += 1
            else:
                files += 1
                file_length = inode.length()
                length += file_length
                space += file_length * inode.replication
        return ContentSummary(length, files, dirs, space)

    def block_count(self) -> int:
        """Blocks in the namespace (what safe mode waits for workers to report)."""
        return len(self._block_owner)

    def block_ids(self) -> list[int]:
        return list(self._block_owner)

    def file_of_block(self, block_id: int) -> str | None:
        file = self._block_owner.get(block_id)
        return None if file is None else path_of(file)

    def replication_of_block(self, block_id: int) -> int | None:
        file = self._block_owner.get(block_id)
        return None if file is None else file.replication

    def block(self, block_id: int) -> BlockInfo | None:
        """Current id/stamp/length/offset of a block (None if no file owns it)."""
        file = self._block_owner.get(block_id)
        return None if file is None else self._block_info(file, self._block_index(file, block_id))

    def under_construction(self) -> list[tuple[str, str]]:
        """(path, lease holder) of every open file, sorted by path."""
        return sorted((path_of(f), client) for client, held in self._leases.items() for f in held)

    def files_leased_by(self, client: str) -> list[str]:
        return sorted(path_of(f) for f in self._leases.get(client, ()))

    def validate(self) -> None:
        """Check every invariant; raise ``AssertionError`` naming the first broken one."""
        check_invariants(
            self._root, self._first_block_id, self._next_block_id, self._next_gen_stamp,
            self._block_owner, self._leases,
        )

    # --- checkpoint -------------------------------------------------------------------
    def to_image(self) -> bytes:
        """The whole state as MessagePack (fsimage); deterministic for equal states."""
        return fsimage.encode(
            self._root, self._first_block_id, self._next_block_id, self._next_gen_stamp
        )

    @classmethod
    def from_image(cls, data: bytes) -> Namespace:
        """Rebuild from :meth:`to_image` output; ``ValueError`` if the image is corrupt."""
        image = fsimage.decode(data)  # msgspec.DecodeError is a ValueError
        try:
            root, block_owner, leases = fsimage.load_tree(image)
            ns = cls(first_block_id=image.first_block_id)
            ns._next_block_id, ns._next_gen_stamp = image.next_block_id, image.next_gen_stamp
            ns._root, ns._block_owner, ns._leases = root, block_owner, leases
            ns.validate()
        except (AssertionError, ValueError) as exc:  # InvalidPath, BadRequest are ValueErrors
            raise ValueError(f"corrupt namespace image: {exc}") from exc
        return ns


_HANDLERS = {
    MkdirsOp: Namespace._mkdirs,
    CreateOp: Namespace._create,
    AddBlockOp: Namespace._add_block,
    AbandonBlockOp: Namespace._abandon_block,
    CompleteOp: Namespace._complete,
    AppendOp: Namespace._append,
    RenameOp: Namespace._rename,
    DeleteOp: Namespace._delete,
    SetReplicationOp: Namespace._set_replication,
    RecoverLeaseOp: Namespace._recover_lease,
    CommitBlockLengthOp: Namespace._commit_block_length,
}
