"""The NameNode's durable metadata: an append-only edit log plus checkpoints (fsimage).

Files in the meta folder (HDFS names; txids zero-padded so names sort)::

    edits_<first>            the segment being written (at most one, the newest)
    edits_<first>-<last>     a finalized segment, every record fsync'd
    fsimage_<txid>           the namespace after transaction <txid>
    in_use.lock              held (flock) by the one process that owns the folder

A segment is a run of records ``[u32 length][u32 crc32c(payload)][payload]``, the
payload MessagePack of ``(txid, op)``; txids are consecutive across segments. An
image is a header (magic, crc32c and length of the body, txid) and
``Namespace.to_image()``. Recovery (:meth:`EditLog.open`) loads the newest image
whose checksum holds, then replays every later record. A bad record at the very end
of the in-progress segment is a write torn by a crash: it is dropped and truncated
away, never half-applied. A bad record with a good one after it, a gap in the
txids, or an op the namespace refuses is corruption: :class:`EditLogCorrupt`.

Appends only buffer; :meth:`EditLog.sync` is the group commit that makes them
durable (one write + fsync in a worker thread covers every caller waiting).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import struct
from pathlib import Path

import msgspec
from crc32c import crc32c

from shoal.core.wire import Empty, Method
from shoal.dfs.namespace import Namespace, NamespaceOp
from shoal.errors import ShoalError

log = logging.getLogger("dfs.editlog")

RECORD_HEADER = struct.Struct(">II")  # payload length, crc32c(payload)
RECORD_BYTES_MAX = 16 * 1024 * 1024  # no op comes near this; a larger length is garbage
IMAGE_MAGIC = b"SHOALFSI"
IMAGE_HEADER = struct.Struct(">8sIQQ")  # magic, crc32c(body), body length, txid
IMAGES_RETAINED = 2  # HDFS dfs.namenode.num.checkpoints.retained
LOCK_FILE = "in_use.lock"
_SEGMENT = re.compile(r"edits_(\d{19})(?:-(\d{19}))?")
_IMAGE = re.compile(r"fsimage_(\d{19})")


class EditLogCorrupt(ShoalError):
    """The metadata on disk cannot be recovered without losing acknowledged operations."""


class EditLogFailed(ShoalError):
    """The edit log cannot be written (a write failed, or another process owns the folder);
    after a failed write the master must stop: its memory is ahead of its disk."""


class CheckpointResp(msgspec.Struct, frozen=True):
    txid: int  # the last transaction the new image contains


# The admin call behind ``shoal dfs checkpoint`` (HDFS ``dfsadmin -saveNamespace``).
CHECKPOINT = Method("dfs.checkpoint", Empty, CheckpointResp)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(tuple[int, NamespaceOp])


def _segment_name(first: int, last: int | None = None) -> str:
    return f"edits_{first:019d}" if last is None else f"edits_{first:019d}-{last:019d}"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _decode_at(data: bytes, pos: int) -> tuple[int, NamespaceOp, int] | None:
    """The record at ``pos`` as (txid, op, end), or None if it is not a whole, valid one."""
    if len(data) - pos < RECORD_HEADER.size:
        return None
    length, crc = RECORD_HEADER.unpack_from(data, pos)
    start, end = pos + RECORD_HEADER.size, pos + RECORD_HEADER.size + length
    if length > RECORD_BYTES_MAX or end > len(data) or crc32c(data[start:end]) != crc:
        return None
    try:
        txid, op = _decoder.decode(data[start:end])
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return txid, op, end


class EditLog:
    """One master's edit log and images in ``folder``; use :meth:`open` to get one."""

    def __init__(self, folder: Path, lock_fd: int, last_txid: int, segment_first: int, image_txid: int) -> None:
        self.folder = folder
        self.last_txid = last_txid  # last txid appended (maybe not yet durable)
        self.synced_txid = last_txid  # last txid on disk
        self.image_txid = image_txid  # txid of the newest image
        self.fsyncs = 0  # how many group commits reached the disk
        self._lock_fd = lock_fd
        self._segment_first = segment_first
        self._fd = self._open_segment(segment_first)
        self._buffer = bytearray()
        self._flush_task: asyncio.Future[None] | None = None
        self._failed: BaseException | None = None

    def _open_segment(self, first: int) -> int:
        return os.open(self.folder / _segment_name(first), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    # --- recovery ----------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: Path) -> tuple[EditLog, Namespace, int]:
        """Recover ``folder``: newest good image + replay; returns (log, namespace, last txid)."""
        folder.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise EditLogFailed(f"{folder} is in use by another master process") from None
        try:
            for tmp in folder.glob("*.tmp"):  # a checkpoint interrupted before its rename
                tmp.unlink()
            namespace, image_txid = cls._load_image(folder)
            last, open_first = cls._replay(folder, namespace, image_txid)
            if open_first is None:  # no in-progress segment: start one
                open_first = last + 1
                (folder / _segment_name(open_first)).touch()
                _fsync_dir(folder)
            return cls(folder, lock_fd, last, open_first, image_txid), namespace, last
        except BaseException:
            os.close(lock_fd)
            raise

    @staticmethod
    def _load_image(folder: Path) -> tuple[Namespace, int]:
        """The newest image whose checksum and contents hold (none: empty at txid 0)."""
        images = sorted(int(m[1]) for f in folder.iterdir() if (m := _IMAGE.fullmatch(f.name)))
        for txid in reversed(images):
            path = folder / f"fsimage_{txid:019d}"
            data = path.read_bytes()
            try:
                if len(data) < IMAGE_HEADER.size:
                    raise ValueError("shorter than its header")
                magic, crc, length, stored = IMAGE_HEADER.unpack_from(data)
                body = data[IMAGE_HEADER.size :]
                if magic != IMAGE_MAGIC or length != len(body) or stored != txid or crc32c(body) != crc:
                    raise ValueError("bad header or checksum mismatch")
                namespace = Namespace.from_image(body)
            except ValueError as exc:
                log.error("ignoring corrupt image %s: %s; falling back to an older one", path.name, exc)
                continue
            log.info("loaded image %s", path.name)
            return namespace, txid
        if images:
            log.error("no valid image in %s; replaying the log from the start", folder)
        return Namespace(), 0

    @staticmethod
    def _replay(folder: Path, namespace: Namespace, image_txid: int) -> tuple[int, int | None]:
        """Apply every record after ``image_txid``; returns (last txid, in-progress segment's first)."""
        segments = sorted(
            (int(m[1]), int(m[2]) if m[2] else None)
            for f in folder.iterdir() if (m := _SEGMENT.fullmatch(f.name))
        )
        last = image_txid
        for index, (first, final) in enumerate(segments):
            if final is not None and final <= image_txid:
                continue
            name = _segment_name(first, final)
            if final is None and index != len(segments) - 1:
                raise EditLogCorrupt(f"{folder / name}: an in-progress segment is not the newest one")
            if first > last + 1:
                raise EditLogCorrupt(f"{folder}: transactions {last + 1}..{first - 1} are missing")
            data = (folder / name).read_bytes()
            pos, expected = 0, first
            while pos < len(data):
                record = _decode_at(data, pos)
                if record is not None and record[0] != expected:
                    raise EditLogCorrupt(f"{folder / name}: txid {record[0]} at byte {pos}, expected {expected}")
                if record is None:
                    if final is not None or EditLog._valid_record_after(data, pos, expected):
                        raise EditLogCorrupt(f"{folder / name}: bad record at byte {pos} (txid {expected})")
                    log.warning("%s: dropping a torn record at byte %d (%d bytes)", name, pos, len(data) - pos)
                    os.truncate(folder / name, pos)
                    break
                txid, op, pos = record
                expected += 1
                if txid <= last:
                    continue  # already in the image
                try:
                    namespace.apply(op)
                except Exception as exc:  # it applied when first logged: the log is damaged
                    raise EditLogCorrupt(f"{folder / name}: txid {txid} ({op!r}) does not replay: {exc}") from exc
                last = txid
            if final is not None and expected - 1 != final:
                raise EditLogCorrupt(f"{folder / name}: ends at txid {expected - 1}, its name says {final}")
            if final is None:
                return last, first
        return last, None

    @staticmethod
    def _valid_record_after(data: bytes, pos: int, expected: int) -> bool:
        """Is there a whole record later than ``pos``? (Then ``pos`` is not a torn tail.)"""
        for start in range(pos + 1, len(data) - RECORD_HEADER.size + 1):
            record = _decode_at(data, start)
            if record is not None and record[0] >= expected:
                return True
        return False

    # --- writing ------------------------------------------------------------------------------
    def append(self, op: NamespaceOp) -> int:
        """Buffer ``op`` as the next transaction (not durable until :meth:`sync`)."""
        if self._failed is not None:
            raise EditLogFailed(f"the edit log in {self.folder} failed earlier: {self._failed}")
        txid = self.last_txid + 1
        payload = _encoder.encode((txid, op))
        self._buffer += RECORD_HEADER.pack(len(payload), crc32c(payload))
        self._buffer += payload
        self.last_txid = txid
        return txid

    @property
    def unsynced(self) -> bool:
        """Are there appended records not yet known to be on disk?"""
        return self.synced_txid < self.last_txid

    @property
    def idle(self) -> bool:
        """Nothing buffered and no flush running: a checkpoint may run."""
        return not self._buffer and (self._flush_task is None or self._flush_task.done())

    @property
    def txns_since_checkpoint(self) -> int:
        return self.last_txid - self.image_txid

    async def sync(self) -> None:
        """Group commit: return once every record appended before this call is on disk.

        One flush runs at a time; callers arriving meanwhile wait for it and the next
        flush takes everything they appended, so one fsync covers many operations. The
        flush is shielded: a cancelled caller does not interrupt a write in progress.
        """
        target = self.last_txid
        while self.synced_txid < target:
            if self._failed is not None:
                raise EditLogFailed(f"the edit log in {self.folder} failed: {self._failed}")
            if self._flush_task is None or self._flush_task.done():
                self._flush_task = asyncio.ensure_future(self._flush())
            await asyncio.shield(self._flush_task)

    async def _flush(self) -> None:
        data, upto = bytes(self._buffer), self.last_txid
        self._buffer.clear()
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._write, data)
        except BaseException as exc:
            self._failed = exc
            log.critical("edit log write failed: %s", exc)
            raise EditLogFailed(f"writing the edit log in {self.folder} failed: {exc}") from exc
        self.synced_txid = upto

    def _write(self, data: bytes) -> None:
        """Write ``data`` at the end of the segment and force it to disk (worker thread)."""
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        if hasattr(os, "fdatasync"):  # the file's size is data: fdatasync persists it too
            os.fdatasync(self._fd)
        else:
            os.fsync(self._fd)
        self.fsyncs += 1

    def flush(self) -> None:
        """Synchronous :meth:`sync`, for callers without an event loop (no flush may be running)."""
        assert self._flush_task is None or self._flush_task.done(), "flush() while sync() runs"
        if self._failed is not None:
            raise EditLogFailed(f"the edit log in {self.folder} failed: {self._failed}")
        if self.unsynced:
            data, upto = bytes(self._buffer), self.last_txid
            self._buffer.clear()
            self._write(data)
            self.synced_txid = upto

    # --- checkpoint -----------------------------------------------------------------------------
    def checkpoint(self, namespace: Namespace) -> int:
        """Save ``namespace`` (the state after ``last_txid``) as an image, roll the segment,
        purge what no retained image needs; returns the image's txid. Call when idle."""
        if not self.idle or self.unsynced:
            raise RuntimeError("checkpoint() needs every record synced first (await sync())")
        txid = self.last_txid
        if txid == self.image_txid and (self.folder / f"fsimage_{txid:019d}").exists():
            return txid
        body = namespace.to_image()
        final = self.folder / f"fsimage_{txid:019d}"
        tmp = final.with_name(final.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(IMAGE_HEADER.pack(IMAGE_MAGIC, crc32c(body), len(body), txid))
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.folder)
        self.image_txid = txid
        if self._segment_first <= txid:  # the segment has records: finalize it, start the next
            os.close(self._fd)
            current = self.folder / _segment_name(self._segment_first)
            os.replace(current, self.folder / _segment_name(self._segment_first, txid))
            self._segment_first = txid + 1
            self._fd = self._open_segment(txid + 1)
            _fsync_dir(self.folder)
        self._purge()
        log.info("checkpoint at txid %d (%d bytes)", txid, len(body))
        return txid

    def _purge(self) -> None:
        """Keep the newest images and every segment the oldest kept image needs to catch up."""
        images = sorted(int(m[1]) for f in self.folder.iterdir() if (m := _IMAGE.fullmatch(f.name)))
        floor = images[-IMAGES_RETAINED] if len(images) >= IMAGES_RETAINED else 0
        for f in self.folder.iterdir():
            if (m := _IMAGE.fullmatch(f.name)) and int(m[1]) < floor:
                f.unlink()
            elif (m := _SEGMENT.fullmatch(f.name)) and m[2] and int(m[2]) <= floor:
                f.unlink()
        _fsync_dir(self.folder)

    def close(self) -> None:
        """Flush what is buffered and release the folder."""
        try:
            if self._failed is None:
                self.flush()
        finally:
            os.close(self._fd)
            os.close(self._lock_fd)
