"""The namespace's in-memory tree (pure): its mutable nodes and the invariants they keep.

These are private state of :class:`shoal.dfs.namespace.Namespace` (and of the image
code in :mod:`shoal.dfs.fsimage`, which turns a tree into bytes and back). Nothing
outside those two modules should hold on to a node: callers see ``FileStatus`` and
``BlockInfo`` values instead.
"""

from __future__ import annotations

import msgspec

from shoal.dfs import paths
from shoal.dfs.namespace_ops import (
    BLOCK_SIZE_BYTES_MAX,
    FIRST_GEN_STAMP,
    REPLICATION_MAX,
    UNKNOWN_LENGTH,
)


class Block(msgspec.Struct, eq=False):
    block_id: int
    gen_stamp: int
    length: int
    prior: tuple[int, int] | None = None  # (gen_stamp, length) before append reopened it

    def visible_length(self) -> int:
        if self.length != UNKNOWN_LENGTH:
            return self.length
        return self.prior[1] if self.prior is not None else 0


class Dir(msgspec.Struct, eq=False):  # eq=False: identity equality and hash
    name: str
    parent: Dir | None
    mtime: float
    children: dict[str, Dir | File] = msgspec.field(default_factory=dict)


class File(msgspec.Struct, eq=False):
    name: str
    parent: Dir
    replication: int
    block_size: int
    mtime: float
    atime: float
    client: str | None  # lease holder; None when closed
    blocks: list[Block] = msgspec.field(default_factory=list)

    def length(self) -> int:
        return sum(b.visible_length() for b in self.blocks)


Inode = Dir | File


def path_of(node: Inode) -> str:
    names: list[str] = []
    while node.parent is not None:
        names.append(node.name)
        node = node.parent
    return "/" + "/".join(reversed(names))


def subtree(node: Inode) -> list[Inode]:
    """The node and everything under it, pre-order, children sorted by name."""
    out: list[Inode] = []
    stack: list[Inode] = [node]
    while stack:
        current = stack.pop()
        out.append(current)
        if isinstance(current, Dir):
            stack.extend(current.children[name] for name in sorted(current.children, reverse=True))
    return out


def check_invariants(
    root: Dir,
    first_block_id: int,
    next_block_id: int,
    next_gen_stamp: int,
    block_owner: dict[int, File],
    leases: dict[str, set[File]],
) -> None:
    """Check every invariant of a namespace's state; ``AssertionError`` names the first
    broken one. ``block_owner`` and ``leases`` are the namespace's indexes, which must
    agree with the tree."""
    def check(ok: bool, message: str) -> None:
        if not ok:
            raise AssertionError(f"namespace invariant broken: {message}")

    check(root.parent is None and root.name == "", "root is malformed")
    check(first_block_id <= next_block_id, "block id counter went back")
    check(FIRST_GEN_STAMP <= next_gen_stamp, "gen stamp counter went back")
    seen: set[int] = set()
    owners: dict[int, File] = {}
    holders: dict[str, set[File]] = {}
    stack: list[Inode] = [root]
    while stack:
        node = stack.pop()
        check(id(node) not in seen, f"{path_of(node)} is reachable twice")
        seen.add(id(node))
        if isinstance(node, Dir):
            for name, child in node.children.items():
                link_ok = child.name == name and child.parent is node
                check(link_ok, f"bad link to {name!r} in {path_of(node)}")
                check(paths.normalize("/" + name) == "/" + name, f"bad name {name!r}")
                stack.append(child)
            continue
        where = path_of(node)
        check(1 <= node.replication <= REPLICATION_MAX, f"{where}: replication")
        check(1 <= node.block_size <= BLOCK_SIZE_BYTES_MAX, f"{where}: block size")
        if node.client is not None:
            check(isinstance(node.client, str) and node.client != "", f"{where}: bad holder")
            holders.setdefault(node.client, set()).add(node)
        for index, block in enumerate(node.blocks):
            at = f"{where} block {block.block_id}"
            check(block.block_id not in owners, f"{at}: owned twice")
            owners[block.block_id] = node
            check(first_block_id <= block.block_id < next_block_id, f"{at}: id")
            check(FIRST_GEN_STAMP <= block.gen_stamp < next_gen_stamp, f"{at}: stamp")
            if block.length == UNKNOWN_LENGTH:
                check(node.client is not None, f"{at}: unknown length in a closed file")
                check(index == len(node.blocks) - 1, f"{at}: unknown length, not last")
            else:
                check(0 <= block.length <= node.block_size, f"{at}: length {block.length}")
                check(block.prior is None, f"{at}: committed but keeps a prior")
            if block.prior is not None:
                prior_stamp, prior_length = block.prior
                prior_ok = 0 <= prior_length < node.block_size and prior_stamp < block.gen_stamp
                check(prior_ok, f"{at}: bad prior {block.prior}")
        if node.client is None:
            closed_length = sum(b.length for b in node.blocks)
            check(node.length() == closed_length, f"{where}: length mismatch")
    check(owners.keys() == block_owner.keys(), "block map has missing or extra ids")
    check(all(block_owner[b] is f for b, f in owners.items()), "block map is wrong")
    check(holders == leases, "lease holders do not match the open files")
