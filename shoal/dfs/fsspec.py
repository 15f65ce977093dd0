"""fsspec file system for shoal's DFS, registered as the ``shoal`` protocol.

``fsspec.open("shoal://data/x.csv")``, ``pandas.read_csv("shoal:///data/x.csv")``, dask
and pyarrow (through ``FSSpecHandler``) reach the cluster named by the ``cluster``
storage option (a folder or ``shoal://HOST:PORT``), else ``$SHOAL_CLUSTER``. URLs carry
no authority: ``shoal://data/x.csv`` and ``shoal:///data/x.csv`` both name ``/data/x.csv``.
``mv`` is the master's rename (HDFS rules: it never replaces a file, and a move onto an
existing directory moves into it); ``rm(recursive=True)`` is one recursive delete.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import threading
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
from fsspec.utils import stringify_path

from shoal.cluster.local import resolve
from shoal.dfs.client import DFSClient, status_dict
from shoal.dfs.streams import DFSReader, DFSWriter

COPY_BUFFER_BYTES = 4 * 1024 * 1024

# One DFSClient per (master, secret, process): fsspec caches file system instances
# per thread, but a DFSClient is thread-safe and owns connections and a lease renewer.
_clients: dict[tuple[tuple[str, int], bytes, int], DFSClient] = {}
_clients_lock = threading.Lock()


def dfs_client(cluster: str | os.PathLike | None = None, secret: bytes | str | None = None) -> DFSClient:
    """The shared client of a cluster (a folder, ``shoal://HOST:PORT``, or ``$SHOAL_CLUSTER``)."""
    address = resolve(cluster, secret.encode() if isinstance(secret, str) else secret)
    key = (address.master, address.secret, os.getpid())
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = DFSClient(address.master, address.secret)
        return client


def _has_magic(path: str) -> bool:
    return any(c in path for c in "*?[")


class ShoalFileSystem(AbstractFileSystem):
    """The DFS of one shoal cluster as an fsspec file system."""

    protocol = "shoal"
    root_marker = "/"

    def __init__(
        self,
        cluster: str | os.PathLike | None = None,
        secret: bytes | str | None = None,
        replication: int | None = None,
        block_size: int | None = None,
        **storage_options: Any,
    ) -> None:
        super().__init__(
            cluster=cluster, secret=secret, replication=replication, block_size=block_size, **storage_options
        )
        self.client = dfs_client(cluster, secret)
        self.replication = replication  # defaults for new files; None = the cluster's
        self.dfs_block_size = block_size

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        """``shoal:///a/b``, ``shoal://a/b``, ``a/b`` and ``/a/b/`` all become ``/a/b``."""
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = stringify_path(path)
        for prefix in ("shoal://", "shoal::"):
            if path.startswith(prefix):
                path = path[len(prefix) :]
                break
        return "/" + path.strip("/")

    # --- metadata ------------------------------------------------------------------------
    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        entries = self.client.listdir(self._strip_protocol(path))
        return [status_dict(e) for e in entries] if detail else [e.path for e in entries]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return status_dict(self.client.stat(self._strip_protocol(path)))

    def exists(self, path: str, **kwargs: Any) -> bool:
        try:
            self.info(path)
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False

    def created(self, path: str) -> dt.datetime:
        """The DFS keeps no creation time (as HDFS): this is the modification time."""
        return self.modified(path)

    def modified(self, path: str) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.info(path)["mtime"], tz=dt.timezone.utc)

    def ukey(self, path: str) -> str:
        info = self.info(path)
        return hashlib.sha256(f"{info['name']}\0{info['mtime']!r}\0{info['size']}".encode()).hexdigest()

    # --- namespace changes ---------------------------------------------------------------
    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        if not self.client.mkdirs(self._strip_protocol(path), parents=create_parents):
            raise FileExistsError(f"{path}: already exists")

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        if not self.client.mkdirs(self._strip_protocol(path), parents=True) and not exist_ok:
            raise FileExistsError(f"{path}: already exists")

    def rmdir(self, path: str) -> None:
        path = self._strip_protocol(path)
        if self.info(path)["type"] != "directory":
            raise NotADirectoryError(f"{path}: not a directory")
        self.client.delete(path, recursive=False)

    def rm_file(self, path: str) -> None:
        self.client.delete(self._strip_protocol(path), recursive=False)

    _rm = rm_file

    def rm(self, path: str | list[str], recursive: bool = False, maxdepth: int | None = None) -> None:
        """Delete paths (globs allowed); a directory needs ``recursive`` unless empty."""
        if maxdepth is not None:
            return super().rm(path, recursive=recursive, maxdepth=maxdepth)
        for p in reversed(self.expand_path(path)):  # children before their parents
            self.client.delete(p, recursive=recursive)

    def mv(self, path1: str | list[str], path2: str | list[str], recursive: bool = False,
           maxdepth: int | None = None, **kwargs: Any) -> None:
        """Rename on the master; several sources (a list or glob) move into directory ``path2``."""
        if isinstance(path1, str) and not _has_magic(path1):
            self.client.rename(self._strip_protocol(path1), self._strip_protocol(path2))
            return
        sources = self.expand_path(path1)
        if isinstance(path2, list):
            targets = self._strip_protocol(path2)
        else:
            self.makedirs(path2, exist_ok=True)
            targets = [self._strip_protocol(path2)] * len(sources)
        for src, dst in zip(sources, targets, strict=True):
            self.client.rename(src, dst)

    # --- data ------------------------------------------------------------------------------
    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        """Bytes ``[start, end)`` of a file (negative offsets count from the end)."""
        path = self._strip_protocol(path)
        with DFSReader(self.client, self.client.blocks(path)) as reader:
            size = reader.length
            lo = 0 if start is None else max(0, size + start) if start < 0 else min(start, size)
            hi = size if end is None else max(0, size + end) if end < 0 else min(end, size)
            if lo >= hi:
                return b""
            reader.seek(lo)
            return reader.read(hi - lo)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy by streaming through this client (the DFS has no server-side copy)."""
        src_path, dst_path = self._strip_protocol(path1), self._strip_protocol(path2)
        with DFSReader(self.client, self.client.blocks(src_path)) as src, self._create(dst_path, True) as dst:
            shutil.copyfileobj(src, dst, COPY_BUFFER_BYTES)

    def _create(self, path: str, overwrite: bool, replication: int | None = None,
                block_size: int | None = None) -> DFSWriter:
        writer = self.client.open(
            path, "wb", overwrite=overwrite,
            replication=replication or self.replication, block_size=block_size or self.dfs_block_size,
        )
        assert isinstance(writer, DFSWriter)
        return writer

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, autocommit: bool = True,
              cache_options: dict | None = None, **kwargs: Any) -> ShoalFile:
        """``rb``, ``wb`` (replaces) or ``xb``; ``block_size`` is the buffer size as in fsspec,
        ``replication=`` and ``dfs_block_size=`` override the defaults for a new file."""
        return ShoalFile(self, self._strip_protocol(path), mode, block_size, autocommit,
                         cache_options=cache_options, **kwargs)


class ShoalFile(AbstractBufferedFile):
    """A buffered DFS file: cached ranged reads through one seekable ``DFSReader``, or
    writes streamed to one ``DFSWriter`` (the file is created when opened)."""

    fs: ShoalFileSystem

    def __init__(self, fs: ShoalFileSystem, path: str, mode: str = "rb", block_size: Any = "default",
                 autocommit: bool = True, cache_type: str = "readahead", cache_options: dict | None = None,
                 *, replication: int | None = None, dfs_block_size: int | None = None, **kwargs: Any) -> None:
        if mode not in ("rb", "wb", "xb"):
            raise NotImplementedError(f"shoal files open in 'rb', 'wb' or 'xb', not {mode!r}")
        if not autocommit:
            raise NotImplementedError("shoal files do not support fsspec transactions")
        self._reader: DFSReader | None = None
        self._writer: DFSWriter | None = None
        size = None
        if mode == "rb":
            located = fs.client.blocks(path)
            self._reader = DFSReader(fs.client, located)
            self._details = status_dict(located.status)
            size = located.status.length
        super().__init__(fs, path, mode, block_size, autocommit, cache_type, cache_options, size=size, **kwargs)
        if mode != "rb":
            self._replication, self._dfs_block_size = replication, dfs_block_size
            self.offset = 0  # create now, so a bad path fails at open rather than at close
            try:
                self._initiate_upload()
            except BaseException:
                self.closed = True
                raise

    def _fetch_range(self, start: int, end: int) -> bytes:
        assert self._reader is not None
        self._reader.seek(start)
        return self._reader.read(end - start)

    def _initiate_upload(self) -> None:
        self._writer = self.fs._create(self.path, self.mode == "wb", self._replication, self._dfs_block_size)

    def _upload_chunk(self, final: bool = False) -> bool:
        assert self._writer is not None
        with self.buffer.getbuffer() as view:
            self._writer.write(view)
        if final:
            self._writer.close()
        return True

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._reader is not None:
                self._reader.close()
            if self._writer is not None and not self._writer.closed:
                self._writer.abort()  # a failed close: leave the file to lease recovery
