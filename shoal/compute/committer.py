"""Writing the output files of compute jobs (``saveAsTextFile``, ``saveAsPickleFile``),
on local files and on the DFS (paths as in :mod:`shoal.compute.storage`).

Outputs (``OutputCommitter``), as Hadoop's ``FileOutputCommitter`` (algorithm 1)
    ``setup_job`` refuses an existing output path (or deletes it with ``overwrite``) and
    makes ``<out>/_temporary``; a task attempt writes
    ``<out>/_temporary/attempt_<partition>_<attempt>/part-NNNNN<ext>``; ``commit_task``
    moves it to ``<out>/part-NNNNN<ext>`` with a rename that never replaces (DFS rename;
    ``link`` + ``unlink`` locally), so the first attempt to commit wins and later ones get
    ``False`` (their output is deleted); ``commit_job`` removes ``_temporary`` and writes an
    empty ``_SUCCESS``; ``abort_job`` only removes ``_temporary``.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import os
import shutil
from collections.abc import Iterable
from itertools import islice
from typing import IO, Any

from shoal.compute import serde
from shoal.compute.input_paths import _parse, _target, dfs_client_for
from shoal.compute.storage import SUCCESS, TEMPORARY, TEXT_BATCH_RECORDS
from shoal.errors import FileAlreadyExists, FileNotFound


def _encode_batch(batch: list) -> bytes:
    """Records as ``saveAsTextFile`` lines: bytes as they are, str as UTF-8, the rest str()."""
    batch.append("")
    try:
        return "\n".join(batch).encode("utf-8", "replace")
    except TypeError:
        pass
    if not any(isinstance(x, (bytes, bytearray, memoryview)) for x in batch):
        return "\n".join(map(str, batch)).encode("utf-8", "replace")
    return b"\n".join(
        bytes(x) if isinstance(x, (bytes, bytearray, memoryview)) else str(x).encode("utf-8", "replace")
        for x in batch
    )


def write_text_partition(f: IO[bytes], records: Iterable, batch_records: int = TEXT_BATCH_RECORDS) -> tuple[int, int]:
    """Write records as text lines (``str(rec) + "\\n"``, UTF-8; bytes records raw), a
    batch of ``batch_records`` per write; returns ``(records, bytes)`` written."""
    it = iter(records)
    count = written = 0
    while batch := list(islice(it, batch_records)):
        count += len(batch)
        data = _encode_batch(batch)
        f.write(data)
        written += len(data)
    return count, written


def write_pickle_partition(
    f: IO[bytes], records: Iterable, batch_records: int = serde.DEFAULT_BATCH_RECORDS
) -> tuple[int, int]:
    """``saveAsPickleFile``: framed, compressed pickled batches (``serde.write_batches``)."""
    return serde.write_batches(f, records, batch_records)


class _CompressedWriter(io.RawIOBase):
    """A compressing writer that closes the raw file under it."""

    def __init__(self, codec: str, raw: IO[bytes]) -> None:
        super().__init__()
        self.raw = raw
        self.stream: IO[bytes] = (
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) if codec == "gzip" else bz2.BZ2File(raw, "wb")
        )

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:  # type: ignore[override]
        return self.stream.write(data)

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.stream.close()
        finally:
            self.raw.close()
            super().close()


class _LocalOut:
    @staticmethod
    def exists(path: str) -> bool:
        return os.path.lexists(path)

    @staticmethod
    def delete(path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    @staticmethod
    def mkdirs(path: str) -> None:
        os.makedirs(path, exist_ok=True)

    @staticmethod
    def create(path: str) -> IO[bytes]:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return open(path, "wb")

    @staticmethod
    def create_empty(path: str, exclusive: bool) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC), 0o644)
        except FileExistsError:
            return False
        os.close(fd)
        return True

    @staticmethod
    def rename_noreplace(src: str, dst: str) -> bool:
        """Move ``src`` to ``dst`` unless ``dst`` exists (atomically: link, then unlink)."""
        try:
            os.link(src, dst)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            # No hard links here: claim the name, then replace the placeholder.
            if not _LocalOut.create_empty(dst, exclusive=True):
                return False
            os.replace(src, dst)
            return True
        os.unlink(src)
        return True


class _DFSOut:
    def __init__(self, client: Any, replication: int | None, block_size: int | None) -> None:
        self.client = client
        self.replication = replication
        self.block_size = block_size

    def exists(self, path: str) -> bool:
        return self.client.exists(path)

    def delete(self, path: str) -> None:
        try:
            self.client.delete(path, recursive=True)
        except FileNotFound:
            pass

    def mkdirs(self, path: str) -> None:
        self.client.mkdirs(path)

    def create(self, path: str) -> IO[bytes]:
        return self.client.open(path, "wb", overwrite=True, replication=self.replication, block_size=self.block_size)

    def create_empty(self, path: str, exclusive: bool) -> bool:
        try:
            self.client.open(path, "wb", overwrite=not exclusive, replication=self.replication).close()
        except FileAlreadyExists:
            return False
        return True

    def rename_noreplace(self, src: str, dst: str) -> bool:
        try:
            self.client.rename(src, dst)  # HDFS rename never replaces a file
        except FileAlreadyExists:
            return False
        return True


class OutputCommitter:
    """Hadoop ``FileOutputCommitter`` for ``saveAsTextFile`` / ``saveAsPickleFile``.

    Picklable: only the path and options are pickled; the file system (a DFS client)
    is found again lazily in each process. ``extension`` is appended to part names
    (``part-00000.txt``); ``codec`` (``"gzip"`` or ``"bz2"``) compresses each part and
    defaults the extension to ``.gz``/``.bz2``, which the readers decompress.
    """

    def __init__(
        self,
        path: str,
        overwrite: bool = False,
        *,
        extension: str = "",
        codec: str | None = None,
        cluster: str | os.PathLike | None = None,
        replication: int | None = None,
        block_size: int | None = None,
    ) -> None:
        if codec not in (None, "gzip", "bz2"):
            raise ValueError(f"unsupported output codec {codec!r}: use 'gzip' or 'bz2'")
        self.path = path
        self.overwrite = overwrite
        self.codec = codec
        self.extension = extension or {"gzip": ".gz", "bz2": ".bz2", None: ""}[codec]
        self.cluster = _target(cluster)
        self.replication = replication
        self.block_size = block_size
        self._loc = _parse(path)
        self._out: _LocalOut | _DFSOut | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_out"] = None
        return state

    def __repr__(self) -> str:
        return f"OutputCommitter({self._loc.display()!r})"

    # --- paths ---
    @property
    def output_path(self) -> str:
        """The output directory in reader form."""
        return self._loc.url()

    def _join(self, *names: str) -> str:
        return "/".join([self._loc.path.rstrip("/"), *names])

    def part_name(self, partition: int) -> str:
        return f"part-{partition:05d}{self.extension}"

    def _attempt_dir(self, partition: int, attempt_id: Any) -> str:
        return self._join(TEMPORARY, f"attempt_{partition:05d}_{attempt_id}")

    def task_output_path(self, partition: int, attempt_id: Any) -> str:
        return self._attempt_dir(partition, attempt_id) + "/" + self.part_name(partition)

    def _fs(self) -> _LocalOut | _DFSOut:
        if self._out is None:
            if self._loc.dfs:
                client = dfs_client_for(self._loc.authority, self.cluster)
                self._out = _DFSOut(client, self.replication, self.block_size)
            else:
                self._out = _LocalOut()
        return self._out

    # --- driver ---
    def setup_job(self) -> None:
        """Refuse an existing output (or delete it with ``overwrite``); make ``_temporary``."""
        fs = self._fs()
        if fs.exists(self._loc.path):
            if not self.overwrite:
                raise FileAlreadyExists(f"output directory {self._loc.display()} already exists")
            fs.delete(self._loc.path)
        fs.mkdirs(self._join(TEMPORARY))

    def commit_job(self) -> None:
        """Remove ``_temporary`` and mark the output complete with an empty ``_SUCCESS``."""
        fs = self._fs()
        fs.delete(self._join(TEMPORARY))
        fs.create_empty(self._join(SUCCESS), exclusive=False)

    def abort_job(self) -> None:
        """Remove ``_temporary`` (committed parts stay, as Hadoop); no ``_SUCCESS``."""
        self._fs().delete(self._join(TEMPORARY))

    # --- executors ---
    def open_task_output(self, partition: int, attempt_id: Any) -> IO[bytes]:
        """A new binary file for one task attempt's output (closed by the caller before
        :meth:`commit_task`)."""
        raw = self._fs().create(self.task_output_path(partition, attempt_id))
        return _CompressedWriter(self.codec, raw) if self.codec else raw

    def commit_task(self, partition: int, attempt_id: Any) -> bool:
        """Publish the attempt's output as ``part-NNNNN``; ``False`` (and its output
        deleted) if another attempt of the partition committed first. An attempt that
        wrote nothing publishes an empty part."""
        fs = self._fs()
        src = self.task_output_path(partition, attempt_id)
        dst = self._join(self.part_name(partition))
        won = False
        try:
            if fs.exists(src):
                won = fs.rename_noreplace(src, dst)
            elif fs.exists(dst):
                won = False
            elif not fs.exists(self._join(TEMPORARY)):
                raise FileNotFound(f"commit of {src}: the job's {TEMPORARY} directory is gone (job aborted?)")
            else:
                won = fs.create_empty(dst, exclusive=True)
            return won
        finally:
            fs.delete(self._attempt_dir(partition, attempt_id))
            if not won and fs.exists(self._join(SUCCESS)):
                fs.delete(self._join(TEMPORARY))  # a late attempt after commit_job: leave no _temporary

    def abort_task(self, partition: int, attempt_id: Any) -> None:
        """Delete a failed attempt's output."""
        self._fs().delete(self._attempt_dir(partition, attempt_id))
