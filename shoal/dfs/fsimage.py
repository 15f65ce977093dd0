"""The namespace checkpoint (fsimage) format (pure): a namespace tree <-> MessagePack.

Used by :meth:`shoal.dfs.namespace.Namespace.to_image` and ``from_image``. An image
is the id/stamp counters plus every inode in pre-order with children sorted by name,
so equal states encode to equal bytes. Decoding rebuilds the tree and its block and
lease indexes but does not check invariants: ``Namespace.from_image`` does that.
"""

from __future__ import annotations

import msgspec

from shoal.dfs import paths
from shoal.dfs.inodes import Block, Dir, File, Inode, path_of, subtree

IMAGE_VERSION = 1


class _ImageBlock(msgspec.Struct, frozen=True, array_like=True):
    block_id: int
    gen_stamp: int
    length: int
    prior: tuple[int, int] | None = None  # (gen_stamp, length) before an append


class _ImageDir(msgspec.Struct, frozen=True, array_like=True, tag="d"):
    path: str
    mtime: float


class _ImageFile(msgspec.Struct, frozen=True, array_like=True, tag="f"):
    path: str
    mtime: float
    atime: float
    replication: int
    block_size: int
    client: str | None
    blocks: tuple[_ImageBlock, ...]


class Image(msgspec.Struct, frozen=True):
    version: int
    first_block_id: int
    next_block_id: int
    next_gen_stamp: int
    inodes: tuple[_ImageDir | _ImageFile, ...]  # pre-order, children sorted by name


def encode(root: Dir, first_block_id: int, next_block_id: int, next_gen_stamp: int) -> bytes:
    """The tree under ``root`` and the counters as MessagePack; deterministic."""
    inodes: list[_ImageDir | _ImageFile] = []
    for node in subtree(root):
        path = path_of(node)
        if isinstance(node, Dir):
            inodes.append(_ImageDir(path, node.mtime))
        else:
            blocks = tuple(
                _ImageBlock(b.block_id, b.gen_stamp, b.length, b.prior) for b in node.blocks
            )
            inodes.append(_ImageFile(
                path, node.mtime, node.atime, node.replication, node.block_size,
                node.client, blocks,
            ))
    image = Image(IMAGE_VERSION, first_block_id, next_block_id, next_gen_stamp, tuple(inodes))
    return msgspec.msgpack.encode(image)


def decode(data: bytes) -> Image:
    """Parse an image; ``msgspec.DecodeError`` (a ``ValueError``) if it is malformed."""
    return msgspec.msgpack.decode(data, type=Image)


def load_tree(image: Image) -> tuple[Dir, dict[int, File], dict[str, set[File]]]:
    """The image's tree (its root) with its block-owner and lease-holder indexes;
    ``ValueError`` if the image is not a well-formed tree of this version."""
    if image.version != IMAGE_VERSION:
        raise ValueError(f"version {image.version} is not {IMAGE_VERSION}")
    if not image.inodes or image.inodes[0] != _ImageDir("/", image.inodes[0].mtime):
        raise ValueError("it does not start with the root directory")
    root = Dir("", None, image.inodes[0].mtime)
    block_owner: dict[int, File] = {}
    leases: dict[str, set[File]] = {}
    for record in image.inodes[1:]:
        comps = paths.split(record.path)
        parent = _find(root, comps[:-1]) if comps else None
        if not isinstance(parent, Dir) or comps[-1] in parent.children:
            raise ValueError(f"{record.path} has no parent directory, or is listed twice")
        if isinstance(record, _ImageDir):
            parent.children[comps[-1]] = Dir(comps[-1], parent, record.mtime)
            continue
        blocks = [Block(b.block_id, b.gen_stamp, b.length, b.prior) for b in record.blocks]
        file = File(
            comps[-1], parent, record.replication, record.block_size,
            record.mtime, record.atime, record.client, blocks,
        )
        parent.children[file.name] = file
        for block in file.blocks:
            block_owner[block.block_id] = file
        if file.client is not None:
            leases.setdefault(file.client, set()).add(file)
    return root, block_owner, leases


def _find(root: Dir, comps: list[str]) -> Inode | None:
    node: Inode | None = root
    for name in comps:
        node = node.children.get(name) if isinstance(node, Dir) else None
    return node
