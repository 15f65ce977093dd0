"""A worker's replicas on disk: one data file and one checksum (meta) file per block.

Layout (as HDFS's datanode): ``current/rbw/`` holds replicas being written;
``current/finalized/subdirA/subdirB/blk_<id>`` plus ``blk_<id>_<genstamp>.meta`` hold
complete ones. A replica is renamed into ``finalized`` only when its last packet is
written, so a half-written replica is never visible; leftovers in ``rbw`` from a crash
are discarded at start-up (the writer's lease recovery decides the file's length).
"""

from __future__ import annotations

import os
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from shoal.core.sockio import write_all
from shoal.dfs.protocol import ReplicaReport
from shoal.errors import BadRequest, ChecksumError, ReplicaNotFound

META_MAGIC = b"SHCK"
META_VERSION = 1
META_HEADER = struct.Struct(">4sHI")
BLOCK_ID_MAX = 2**63 - 1
_DATA_RE = re.compile(r"^blk_(\d+)$")
_META_RE = re.compile(r"^blk_(\d+)_(\d+)\.meta$")


def check_block_id(block_id: int) -> int:
    """Block ids come off the wire: never let one become a path unvalidated."""
    if not isinstance(block_id, int) or isinstance(block_id, bool) or not 0 <= block_id <= BLOCK_ID_MAX:
        raise BadRequest(f"invalid block id: {block_id!r}")
    return block_id


@dataclass(frozen=True)
class Replica:
    """A finalized replica: where its files are and what it holds."""

    block_id: int
    gen_stamp: int
    length: int
    data_path: Path
    meta_path: Path
    bytes_per_checksum: int


class ReplicaWriter:
    """Appends verified packets to a replica-being-written, then finalizes it."""

    def __init__(
        self, store: BlockStore, block_id: int, gen_stamp: int, bytes_per_checksum: int, base: Replica | None = None,
        keep: int = 0,
    ) -> None:
        self.store = store
        self.block_id = block_id
        self.gen_stamp = gen_stamp
        self.bytes_per_checksum = bytes_per_checksum
        self.data_path = store.rbw / f"blk_{block_id}"
        self.meta_path = store.rbw / f"blk_{block_id}_{gen_stamp}.meta"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self._data_fd = os.open(self.data_path, flags, 0o644)
        self._meta_fd = os.open(self.meta_path, flags, 0o644)
        write_all(self._meta_fd, memoryview(META_HEADER.pack(META_MAGIC, META_VERSION, bytes_per_checksum)))
        self.length = 0
        self._closed = False
        if base is not None and keep:
            # Append: start from a copy of the finalized replica's first ``keep`` bytes,
            # so readers keep the old replica until the new one is finalized.
            with open(base.data_path, "rb") as src:
                copied = 0
                while copied < keep:
                    n = os.sendfile(self._data_fd, src.fileno(), copied, keep - copied)
                    if n == 0:
                        raise ChecksumError(f"block {block_id}: replica shorter than {keep} bytes")
                    copied += n
            write_all(self._meta_fd, memoryview(store.read_checksums(base, 0, keep // bytes_per_checksum)))
            self.length = keep

    def write(self, offset: int, data: memoryview, checksums: bytes) -> None:
        """Store one packet; packets arrive in order and start on chunk boundaries."""
        if offset != self.length:
            raise BadRequest(f"packet at offset {offset} but replica has {self.length} bytes")
        if self.length % self.bytes_per_checksum:
            raise BadRequest("a packet followed a partial chunk")
        write_all(self._data_fd, data)
        write_all(self._meta_fd, memoryview(checksums))
        self.length += len(data)

    def finalize(self) -> ReplicaReport:
        """Close, optionally fsync, and move into ``finalized``: the replica becomes visible."""
        if self.store.sync_on_close:
            os.fsync(self._data_fd)
            os.fsync(self._meta_fd)
        self._close_fds()
        data_dst, meta_dst = self.store.finalized_paths(self.block_id, self.gen_stamp)
        data_dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.meta_path, meta_dst)
        os.replace(self.data_path, data_dst)
        if self.store.sync_on_close:
            _fsync_dir(data_dst.parent)
        replica = Replica(self.block_id, self.gen_stamp, self.length, data_dst, meta_dst, self.bytes_per_checksum)
        self.store._add(replica)
        return ReplicaReport(self.block_id, self.gen_stamp, self.length)

    def abort(self) -> None:
        """Drop a replica whose write failed."""
        self._close_fds()
        for p in (self.data_path, self.meta_path):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def _close_fds(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._data_fd)
            os.close(self._meta_fd)


class BlockStore:
    """Every replica one worker holds, indexed in memory."""

    def __init__(self, root: Path, *, sync_on_close: bool = False) -> None:
        self.root = root
        self.sync_on_close = sync_on_close
        self.rbw = root / "current" / "rbw"
        self.finalized = root / "current" / "finalized"
        self._lock = threading.Lock()
        self._replicas: dict[int, Replica] = {}
        self.rbw.mkdir(parents=True, exist_ok=True)
        self.finalized.mkdir(parents=True, exist_ok=True)
        for leftover in self.rbw.iterdir():
            leftover.unlink()
        self._scan()

    def finalized_paths(self, block_id: int, gen_stamp: int) -> tuple[Path, Path]:
        check_block_id(block_id)
        folder = self.finalized / f"subdir{(block_id >> 16) & 0x1F}" / f"subdir{(block_id >> 8) & 0x1F}"
        return folder / f"blk_{block_id}", folder / f"blk_{block_id}_{gen_stamp}.meta"

    def create(self, block_id: int, gen_stamp: int, bytes_per_checksum: int) -> ReplicaWriter:
        check_block_id(block_id)
        if bytes_per_checksum <= 0 or bytes_per_checksum > 16 * 1024 * 1024:
            raise BadRequest(f"invalid bytes_per_checksum: {bytes_per_checksum}")
        return ReplicaWriter(self, block_id, gen_stamp, bytes_per_checksum)

    def create_append(self, block_id: int, gen_stamp: int, bytes_per_checksum: int, keep: int) -> ReplicaWriter:
        """A writer that continues an existing replica after its first ``keep`` bytes."""
        base = self.get(block_id)
        if base.bytes_per_checksum != bytes_per_checksum:
            raise BadRequest(f"block {block_id}: append with {bytes_per_checksum}-byte chunks, replica uses {base.bytes_per_checksum}")
        if keep < 0 or keep > base.length or keep % bytes_per_checksum:
            raise BadRequest(f"block {block_id}: cannot append at {keep} (replica has {base.length} bytes)")
        return ReplicaWriter(self, block_id, gen_stamp, bytes_per_checksum, base, keep)

    def get(self, block_id: int) -> Replica:
        check_block_id(block_id)
        with self._lock:
            replica = self._replicas.get(block_id)
        if replica is None:
            raise ReplicaNotFound(f"no replica of block {block_id} here")
        return replica

    def read_checksums(self, replica: Replica, first_chunk: int, count: int) -> bytes:
        with open(replica.meta_path, "rb") as f:
            header = f.read(META_HEADER.size)
            magic, version, bpc = META_HEADER.unpack(header)
            if magic != META_MAGIC or version != META_VERSION:
                raise ChecksumError(f"block {replica.block_id}: bad checksum file header")
            f.seek(META_HEADER.size + 4 * first_chunk)
            data = f.read(4 * count)
        if len(data) != 4 * count:
            raise ChecksumError(f"block {replica.block_id}: checksum file is truncated")
        return data

    def delete(self, block_id: int) -> bool:
        check_block_id(block_id)
        with self._lock:
            replica = self._replicas.pop(block_id, None)
        if replica is None:
            return False
        for p in (replica.data_path, replica.meta_path):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        return True

    def report(self) -> list[ReplicaReport]:
        with self._lock:
            return [ReplicaReport(r.block_id, r.gen_stamp, r.length) for r in self._replicas.values()]

    def used_bytes(self) -> int:
        with self._lock:
            return sum(r.length for r in self._replicas.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._replicas)

    def _add(self, replica: Replica) -> None:
        with self._lock:
            old = self._replicas.get(replica.block_id)
            self._replicas[replica.block_id] = replica
        if old is not None and old.meta_path != replica.meta_path:
            try:
                old.meta_path.unlink()
            except FileNotFoundError:
                pass

    def _scan(self) -> None:
        """Rebuild the index from ``finalized`` (pairs of data + meta files)."""
        metas: dict[int, tuple[int, Path]] = {}
        datas: dict[int, Path] = {}
        for dirpath, _, files in os.walk(self.finalized):
            for name in files:
                if m := _META_RE.match(name):
                    bid, gs = int(m.group(1)), int(m.group(2))
                    if bid not in metas or metas[bid][0] < gs:
                        metas[bid] = (gs, Path(dirpath) / name)
                elif m := _DATA_RE.match(name):
                    datas[int(m.group(1))] = Path(dirpath) / name
        for bid, data_path in datas.items():
            if bid not in metas:
                data_path.unlink()
                continue
            gs, meta_path = metas[bid]
            with open(meta_path, "rb") as f:
                header = f.read(META_HEADER.size)
            if len(header) != META_HEADER.size:
                continue
            _, _, bpc = META_HEADER.unpack(header)
            self._replicas[bid] = Replica(bid, gs, data_path.stat().st_size, data_path, meta_path, bpc)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
