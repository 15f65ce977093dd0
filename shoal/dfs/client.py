"""The Python API of the distributed file system.

``DFSClient`` talks to the master for metadata and directly to workers for block
bytes. It is thread-safe; open files are not (one thread per file object).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from shoal.core.config import Config
from shoal.core.rpc_client import RpcClient
from shoal.core.sockio import FramedSocket
from shoal.core.wire import Empty
from shoal.dfs import paths
from shoal.dfs import protocol as p
from shoal.dfs.namespace import ContentSummary, FileStatus
from shoal.dfs.streams import DFSReader, DFSWriter
from shoal.errors import BadRequest, FileNotFound, ShoalError

COPY_BUFFER_BYTES = 4 * 1024 * 1024


def dfs_path(path: str) -> str:
    """Accept ``/a/b``, ``shoal:///a/b``, ``shoal://host:port/a/b`` or ``shoal://a/b``
    (the fsspec form, where ``a`` is the first directory); return the normalised path."""
    if path.startswith("shoal://"):
        rest = path[len("shoal://") :]
        if not rest.startswith("/"):
            head, sep, tail = rest.partition("/")
            host, colon, port = head.rpartition(":")
            # Only a HOST:PORT authority is dropped; anything else is a path segment.
            rest = "/" + tail if colon and host and port.isdigit() else "/" + rest
        path = rest
    return paths.normalize(path)


class DFSClient:
    """Files and directories on one cluster."""

    def __init__(self, master: tuple[str, int], secret: bytes, *, node_id: str | None = None) -> None:
        self.master_address = master
        self.secret = secret
        self.rpc = RpcClient(master, secret)
        self.config: Config = self.rpc.call(p.GET_CONFIG, Empty())
        self.rpc.config = self.config.rpc
        # A client running on a worker (an executor, a container) names it, so the
        # first replica lands locally and reads prefer the local copy.
        self.node_id = node_id or os.environ.get("SHOAL_NODE_ID") or None
        self.client_name = f"shoal-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._writers: set[DFSWriter] = set()
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._renewer_stop = threading.Event()

    # --- namespace -----------------------------------------------------------------------
    def mkdirs(self, path: str, parents: bool = True) -> bool:
        return self.rpc.call(p.MKDIRS, p.MkdirsReq(dfs_path(path), parents)).created

    def stat(self, path: str) -> FileStatus:
        return self.rpc.call(p.STAT, p.PathReq(dfs_path(path)))

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
            return True
        except FileNotFound:
            return False

    def listdir(self, path: str) -> list[FileStatus]:
        return self.rpc.call(p.LIST, p.PathReq(dfs_path(path))).entries

    def ls(self, path: str, detail: bool = False) -> list[Any]:
        """fsspec-style listing: paths, or dicts with name/size/type and HDFS fields."""
        entries = self.listdir(path)
        if not detail:
            return [e.path for e in entries]
        return [status_dict(e) for e in entries]

    def rename(self, src: str, dst: str) -> FileStatus:
        return self.rpc.call(p.RENAME, p.RenameReq(dfs_path(src), dfs_path(dst)))

    def delete(self, path: str, recursive: bool = False) -> None:
        self.rpc.call(p.DELETE, p.DeleteReq(dfs_path(path), recursive))

    def du(self, path: str) -> ContentSummary:
        return self.rpc.call(p.CONTENT_SUMMARY, p.PathReq(dfs_path(path)))

    def blocks(self, path: str) -> p.LocatedBlocks:
        return self.rpc.call(p.GET_BLOCK_LOCATIONS, p.GetBlockLocationsReq(dfs_path(path), self.node_id))

    def walk_files(self, path: str) -> Iterator[FileStatus]:
        """Every file below ``path`` (or the file itself), depth first, sorted."""
        status = self.stat(path)
        if status.kind == "file":
            yield status
            return
        for entry in self.listdir(status.path):
            yield from self.walk_files(entry.path)

    def report(self) -> p.ClusterReport:
        return self.rpc.call(p.CLUSTER_REPORT, Empty())

    def fsck(self, path: str = "/") -> p.FsckReport:
        """Every block under ``path`` with its replicas and health."""
        return self.rpc.call(p.FSCK, p.PathReq(dfs_path(path)))

    def decommission(self, node_id: str) -> p.NodeReport:
        """Start draining a worker; poll :meth:`report` until it is ``decommissioned``."""
        return self.rpc.call(p.DECOMMISSION, p.NodeReq(node_id))

    # --- data ----------------------------------------------------------------------------
    def open(
        self,
        path: str,
        mode: str = "rb",
        *,
        replication: int | None = None,
        block_size: int | None = None,
        overwrite: bool = False,
    ) -> DFSReader | DFSWriter:
        """``rb`` to read; ``wb`` to create (``overwrite`` to replace, as ``-f``)."""
        if mode == "rb":
            return DFSReader(self, self.blocks(path))
        if mode in ("wb", "xb"):
            if replication is not None and replication < 1:
                raise BadRequest(f"replication must be at least 1, got {replication}")
            status = self.rpc.call(
                p.CREATE,
                p.CreateReq(dfs_path(path), self.client_name, overwrite, replication or 0, block_size or 0),
            )
            writer = DFSWriter(self, status)
            with self._lock:
                self._writers.add(writer)
                self._start_renewer()
            return writer
        if mode == "ab":
            return self._open_append(path)
        raise BadRequest(f"unsupported mode {mode!r}: use 'rb', 'wb' or 'ab'")

    def _open_append(self, path: str) -> DFSWriter:
        """Append under the single-writer lease; creates the file if it is missing (as
        ``hdfs dfs -appendToFile``)."""
        try:
            status = self.stat(path)
        except FileNotFound:
            return self.open(path, "wb")  # type: ignore[return-value]
        prefix = b""
        in_block = status.length % status.block_size if status.kind == "file" else 0
        partial = in_block % self.config.dfs.bytes_per_checksum
        if partial:
            with self.open(path, "rb") as f:
                f.seek(status.length - partial)
                prefix = f.read(partial)
        resp = self.rpc.call(p.APPEND, p.AppendReq(dfs_path(path), self.client_name))
        if resp.status.length != status.length:
            self._abandon_append(resp.status.path)
            raise BadRequest(f"append to {path}: file changed while opening it; try again")
        try:
            writer = DFSWriter(self, resp.status, append=resp, prefix=prefix)
        except ShoalError:
            self._abandon_append(resp.status.path)
            raise
        with self._lock:
            self._writers.add(writer)
            self._start_renewer()
        return writer

    def _abandon_append(self, path: str) -> None:
        """Close a file reopened for append without new data (its last block keeps its bytes)."""
        try:
            self._complete(path, None)
        except ShoalError:
            pass

    def append(self, local: str | Path | BinaryIO, path: str) -> FileStatus:
        """Append a local file (or binary stream) to a DFS file, streaming."""
        _copy_into(local, lambda: self.open(path, "ab"))
        return self.stat(path)

    def cat(self, path: str) -> bytes:
        with self.open(path, "rb") as f:
            return f.read()

    def put(
        self,
        local: str | Path | BinaryIO,
        path: str,
        *,
        replication: int | None = None,
        block_size: int | None = None,
        overwrite: bool = False,
    ) -> FileStatus:
        """Copy a local file (or binary stream) into the DFS, streaming."""
        _copy_into(local, lambda: self.open(path, "wb", replication=replication, block_size=block_size, overwrite=overwrite))
        return self.stat(path)

    def get(self, path: str, local: str | Path) -> int:
        """Copy a DFS file to a local path, streaming; returns the bytes copied."""
        total = 0
        with self.open(path, "rb") as src:
            fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                buf = bytearray(COPY_BUFFER_BYTES)
                view = memoryview(buf)
                while n := src.readinto(buf):
                    written = 0
                    while written < n:
                        written += os.write(fd, view[written:n])
                    total += n
            finally:
                os.close(fd)
        return total

    def close(self) -> None:
        with self._lock:
            writers = list(self._writers)
        for w in writers:
            try:
                w.close()
            except ShoalError:
                pass
        self._renewer_stop.set()
        self.rpc.close()

    def __enter__(self) -> DFSClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- used by the file objects ------------------------------------------------------
    def _connect_data(self, address: tuple[str, int]) -> FramedSocket:
        return FramedSocket.connect(
            address,
            self.secret,
            timeout_s=self.config.rpc.connect_timeout_s,
            frame_bytes_max=self.config.rpc.frame_bytes_max,
        )

    def _add_block(self, path: str, previous_length: int | None, excluded: list[str]) -> p.LocatedBlock:
        return self.rpc.call(p.ADD_BLOCK, p.AddBlockReq(path, self.client_name, previous_length, excluded, self.node_id))

    def _abandon_block(self, path: str, block_id: int) -> None:
        self.rpc.call(p.ABANDON_BLOCK, p.AbandonBlockReq(path, self.client_name, block_id))

    def _complete(self, path: str, last_length: int | None) -> FileStatus:
        return self.rpc.call(p.COMPLETE, p.CompleteReq(path, self.client_name, last_length))

    def _report_bad_block(self, block_id: int, node_id: str, reason: str) -> None:
        try:
            self.rpc.call(p.REPORT_BAD_BLOCK, p.ReportBadBlockReq(block_id, node_id, reason))
        except ShoalError:
            pass

    def _writer_closed(self, writer: DFSWriter) -> None:
        with self._lock:
            self._writers.discard(writer)

    def _start_renewer(self) -> None:
        if self._renewer is None or not self._renewer.is_alive():
            self._renewer = threading.Thread(target=self._renew_loop, daemon=True, name="lease-renewer")
            self._renewer.start()

    def _renew_loop(self) -> None:
        """Renew this client's lease at half the soft limit while it has files open."""
        interval = self.config.dfs.lease_soft_limit_s / 2
        while not self._renewer_stop.wait(interval):
            with self._lock:
                if not self._writers:
                    self._renewer = None
                    return
            try:
                self.rpc.call(p.RENEW_LEASE, p.RenewLeaseReq(self.client_name))
            except ShoalError:
                pass


def _copy_into(local: str | Path | BinaryIO, open_dfs: Callable[[], DFSWriter | DFSReader]) -> None:
    """Stream a local file (or binary stream) into a DFS writer opened only once the
    local side is readable, so a bad local path leaves nothing behind in the DFS."""
    src = open(local, "rb") if isinstance(local, (str, Path)) else local
    try:
        with open_dfs() as out:
            buf = bytearray(COPY_BUFFER_BYTES)
            view = memoryview(buf)
            while n := src.readinto(buf):
                out.write(view[:n])
    finally:
        if src is not local:
            src.close()


def status_dict(s: FileStatus) -> dict[str, Any]:
    """The fsspec ``info`` shape of a status (``name``, ``size``, ``type`` + HDFS fields)."""
    return {
        "name": s.path,
        "size": s.length,
        "type": s.kind,
        "replication": s.replication,
        "block_size": s.block_size,
        "mtime": s.mtime,
        "owner": s.owner,
        "permission": s.permission,
    }
