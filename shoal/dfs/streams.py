"""File objects over DFS blocks: the write pipeline and the checksummed reader.

Writing (HDFS DFSOutputStream): bytes are cut into packets that never cross a block
boundary; each packet carries the CRC32C of its chunks and goes to the first worker
of the block's pipeline, at most ``dfs.pipeline_window_packets`` unacknowledged.
Reading (DFSInputStream): one block at a time from the nearest replica, every chunk
verified; a dead worker or a bad checksum moves the read to the next replica.
Memory use is bounded by the window and a read buffer, never by the file size.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from shoal.core.sockio import FramedSocket
from shoal.dfs import protocol as p
from shoal.dfs.checksum import chunk_checksums, verify_chunks
from shoal.dfs.namespace import FileStatus
from shoal.errors import (
    BlockMissing,
    ChecksumError,
    ConnectionLost,
    PipelineError,
    ProtocolError,
    RpcTimeout,
    ShoalError,
    error_from_code,
)

if TYPE_CHECKING:
    from shoal.dfs.client import DFSClient

log = logging.getLogger("dfs.client")

PIPELINE_SETUP_ATTEMPTS = 3
READ_BUFFER_BYTES = 1024 * 1024
# After a seek, ask a worker for this much (or the read's size, if larger) instead of
# the rest of the block: positioned reads (parquet footers) stay cheap.
SEEK_READAHEAD_BYTES = 4 * 1024 * 1024


class WritePipeline:
    """One block's open write pipeline and the thread reading its acks."""

    def __init__(self, conn: FramedSocket, located: p.LocatedBlock, window: int, bpc: int, timeout_s: float) -> None:
        self.conn = conn
        self.located = located
        self.window = window
        self.bpc = bpc
        self.timeout_s = timeout_s
        self.seqno = 0
        self.bytes_sent = 0
        self.error: PipelineError | None = None
        self._inflight: deque[int] = deque()
        self._cond = threading.Condition()
        self._done = False
        self._reader = threading.Thread(target=self._read_acks, daemon=True, name="ack-reader")
        self._reader.start()

    def send(self, data: memoryview, last: bool) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self.error or len(self._inflight) < self.window, self.timeout_s):
                self._fail(f"no ack within {self.timeout_s:g}s")
            if self.error:
                raise self.error
            seqno = self.seqno
            self.seqno += 1
            self._inflight.append(seqno)
            if last:
                self._last_seqno = seqno
        header = p.PacketHeader(seqno, self.bytes_sent, len(data), last, chunk_checksums(data, self.bpc))
        try:
            self.conn.send_frame_and_data(header, data)
        except ShoalError as exc:
            with self._cond:
                self._fail(f"sending to {self.located.locations[0].label()} failed: {exc}")
                raise self.error from None
        self.bytes_sent += len(data)

    def finish(self) -> None:
        """Wait until the last packet is acked by every worker in the pipeline."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.error or self._done, self.timeout_s):
                self._fail(f"the last packet was not acked within {self.timeout_s:g}s")
            if self.error:
                raise self.error
        self.conn.close()

    def abort(self) -> None:
        self.conn.close()

    def _fail(self, why: str) -> None:
        if self.error is None:
            blk = self.located.block.block_id
            self.error = PipelineError(f"write pipeline for block {blk} failed: {why}")
        self._cond.notify_all()

    def _read_acks(self) -> None:
        try:
            while True:
                ack = self.conn.recv_msg(p.PacketAck)
                with self._cond:
                    if not ack.ok:
                        self._fail(ack.error or f"worker {ack.bad_node} failed")
                        return
                    if not self._inflight or self._inflight[0] != ack.seqno:
                        self._fail(f"unexpected ack {ack.seqno}")
                        return
                    self._inflight.popleft()
                    self._cond.notify_all()
                    if ack.seqno == self._last_seqno:
                        self._done = True
                        return
        except ShoalError as exc:
            with self._cond:
                if not self._done:
                    self._fail(str(exc))

    _last_seqno = -1


def open_pipeline(
    connect: Callable[[tuple[str, int]], FramedSocket],
    located: p.LocatedBlock,
    *,
    bytes_per_checksum: int,
    client_name: str,
    window: int,
    timeout_s: float,
    append_at: int = -1,
) -> tuple[WritePipeline | None, p.PipelineReady]:
    """Connect to the block's first target and set up the whole pipeline.

    Returns the open pipeline, or ``None`` with the reason (naming the bad worker when
    known) so a caller can retry without it.
    """
    block, first = located.block, located.locations[0]
    try:
        conn = connect(first.address)
    except ShoalError as exc:
        return None, p.PipelineReady(False, str(exc), first.node_id)
    try:
        conn.send_msg(
            p.WriteBlockOp(
                block.block_id, block.gen_stamp, located.locations[1:], bytes_per_checksum, client_name, append_at
            )
        )
        ready = conn.recv_msg(p.PipelineReady)
    except ShoalError as exc:
        conn.close()
        return None, p.PipelineReady(False, str(exc), first.node_id)
    if not ready.ok:
        conn.close()
        return None, ready
    return WritePipeline(conn, located, window, bytes_per_checksum, timeout_s), ready


class DFSWriter(io.RawIOBase):
    """A file being written: ``write`` bytes, ``close`` to make it visible."""

    def __init__(
        self, client: DFSClient, status: FileStatus, append: p.AppendResp | None = None, prefix: bytes = b""
    ) -> None:
        super().__init__()
        dfs = client.config.dfs
        self.client = client
        self.path = status.path
        self.block_size = status.block_size
        self.replication = status.replication
        self.bpc = dfs.bytes_per_checksum
        self.packet_bytes = dfs.packet_bytes
        self.window = dfs.pipeline_window_packets
        self._buf = bytearray()
        self._pipeline: WritePipeline | None = None
        self._prev_length: int | None = None
        self._written = 0
        self._broken: ShoalError | None = None
        if append is not None:
            self._written = append.status.length
            if append.last_block is not None:
                self._reopen_last_block(append.last_block, append.status.length, prefix)

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._written

    def write(self, data) -> int:  # type: ignore[override]
        self._check_open()
        view = memoryview(data).cast("B")
        total = len(view)
        try:
            while len(view):
                if self._pipeline is None:
                    self._open_block()
                assert self._pipeline is not None
                room = self.block_size - self._pipeline.bytes_sent - len(self._buf)
                want = min(self.packet_bytes, self.block_size - self._pipeline.bytes_sent)
                if self._buf or len(view) < want:
                    take = min(len(view), room, want - len(self._buf))
                    self._buf += view[:take]
                    view = view[take:]
                    if len(self._buf) == want:
                        self._send(memoryview(self._buf))
                        self._buf = bytearray()
                else:
                    self._send(view[:want])
                    view = view[want:]
        except ShoalError as exc:
            self._broken = exc
            raise
        self._written += total
        return total

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._broken is None:
                if self._buf:
                    if self._pipeline is None:
                        self._open_block()
                    self._send(memoryview(self._buf), force_last=True)
                    self._buf = bytearray()
                elif self._pipeline is not None:
                    self._send(memoryview(b""), force_last=True)
                self.client._complete(self.path, self._prev_length)
        except ShoalError as exc:
            self._broken = exc
            raise
        finally:
            if self._pipeline is not None:
                self._pipeline.abort()
            self.client._writer_closed(self)
            super().close()

    def abort(self) -> None:
        """Give up on the file without completing it (the lease recovery closes it)."""
        self._broken = self._broken or PipelineError("aborted")
        self.close()

    # --- internals ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if self._broken is not None:
            raise PipelineError(f"writer for {self.path} failed earlier: {self._broken}")

    def _send(self, data: memoryview, force_last: bool = False) -> None:
        pipe = self._pipeline
        assert pipe is not None
        last = force_last or pipe.bytes_sent + len(data) >= self.block_size
        pipe.send(data, last)
        if last:
            pipe.finish()
            self._prev_length = pipe.bytes_sent
            self._pipeline = None

    def _setup(self, located: p.LocatedBlock, append_at: int = -1) -> tuple[WritePipeline | None, p.PipelineReady]:
        return open_pipeline(
            self.client._connect_data, located, bytes_per_checksum=self.bpc, client_name=self.client.client_name,
            window=self.window, timeout_s=self.client.config.rpc.call_timeout_s, append_at=append_at,
        )

    def _reopen_last_block(self, located: p.LocatedBlock, file_length: int, prefix: bytes) -> None:
        """HDFS append to a partial last block: its holders continue the replica.

        Replicas are rewritten from the last chunk boundary, so the partial chunk's
        existing bytes (``prefix``) are sent again and its checksum covers a whole chunk.
        """
        block = located.block
        in_block = file_length - block.offset
        keep = in_block - in_block % self.bpc
        if len(prefix) != in_block - keep:
            raise PipelineError(f"append to {self.path}: expected {in_block - keep} bytes of the last chunk")
        if not located.locations:
            raise PipelineError(f"append to {self.path}: no live replica of its last block {block.block_id}")
        self._pipeline, ready = self._setup(located, keep)
        if self._pipeline is None:
            raise PipelineError(f"append to {self.path}: {ready.error}")
        self._pipeline.bytes_sent = keep
        self._buf = bytearray(prefix)

    def _open_block(self) -> None:
        excluded: list[str] = []
        last_error = ""
        for _ in range(PIPELINE_SETUP_ATTEMPTS):
            located = self.client._add_block(self.path, self._prev_length, excluded)
            self._pipeline, ready = self._setup(located)
            if self._pipeline is not None:
                return
            last_error = ready.error
            self.client._abandon_block(self.path, located.block.block_id)
            if ready.bad_node:
                excluded.append(ready.bad_node)
            log.warning("pipeline setup for %s failed (%s); retrying without %s", self.path, ready.error, ready.bad_node)
        raise PipelineError(f"could not set up a write pipeline for {self.path}: {last_error}")


class _BlockStream:
    """Verified bytes of one block from one replica, read sequentially."""

    def __init__(self, conn: FramedSocket, node: p.DatanodeInfo, block_id: int, start: int, reply: p.ReadBlockReply) -> None:
        self.conn = conn
        self.node = node
        self.block_id = block_id
        self.bpc = reply.bytes_per_checksum
        self.checksums = memoryview(reply.checksums)
        self.stream_pos = reply.chunk_offset  # block offset of the next byte on the wire
        self.stream_end = reply.chunk_offset + reply.data_len
        self.chunk_index = 0
        self.pos = start  # block offset of the next byte handed out
        self.buf = bytearray(max(self.bpc, READ_BUFFER_BYTES - READ_BUFFER_BYTES % self.bpc))
        self.view = memoryview(self.buf)
        self.lo = self.hi = 0  # verified, unconsumed bytes are buf[lo:hi]

    @property
    def exhausted(self) -> bool:
        return self.lo == self.hi and self.stream_pos >= self.stream_end

    def read_into(self, out: memoryview) -> int:
        if self.lo == self.hi:
            self._fill()
        n = min(len(out), self.hi - self.lo)
        out[:n] = self.view[self.lo : self.lo + n]
        self.lo += n
        self.pos += n
        return n

    def _fill(self) -> None:
        n = min(len(self.buf), self.stream_end - self.stream_pos)
        if n <= 0:
            raise ProtocolError(f"block {self.block_id}: read past the requested range")
        self.conn.recv_exactly_into(self.view[:n])
        chunks = -(-n // self.bpc)
        sums = self.checksums[4 * self.chunk_index : 4 * (self.chunk_index + chunks)]
        verify_chunks(self.view[:n], sums, self.bpc, f"block {self.block_id} on {self.node.label()}")
        skip = max(0, self.pos - self.stream_pos)
        self.lo, self.hi = skip, n
        self.stream_pos += n
        self.chunk_index += chunks

    def close(self) -> None:
        self.conn.close()


class DFSReader(io.RawIOBase):
    """A seekable, checksum-verified reader of one DFS file."""

    def __init__(self, client: DFSClient, located: p.LocatedBlocks) -> None:
        super().__init__()
        self.client = client
        self.path = located.status.path
        self.length = located.status.length
        self.blocks = located.blocks
        self._pos = 0
        self._stream: _BlockStream | None = None
        self._stream_block = -1
        # Replicas that failed for this reader, as (block id, node id): a bad checksum
        # condemns one replica, not every block on that worker.
        self._bad: dict[tuple[int, str], str] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.length + offset
        else:
            raise ValueError(f"invalid whence: {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, b) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("I/O operation on closed file")
        out = memoryview(b).cast("B")
        if self._pos >= self.length or not len(out):
            return 0
        index = self._block_index(self._pos)
        block = self.blocks[index].block
        in_block = self._pos - block.offset
        want = min(len(out), block.length - in_block)
        for _ in range(len(self.blocks[index].locations) + 1):
            stream = self._stream
            if stream is None or self._stream_block != index or stream.pos != in_block or stream.exhausted:
                sequential = stream is not None and stream.pos == in_block and self._stream_block == index
                span = block.length - in_block
                if not sequential and in_block > 0:
                    span = min(span, max(len(out), SEEK_READAHEAD_BYTES))
                stream = self._open_stream(index, in_block, span)
            try:
                n = stream.read_into(out[:want])
            except (ConnectionLost, RpcTimeout, ChecksumError, ProtocolError) as exc:
                self._replica_failed(stream, exc)
                continue
            self._pos += n
            return n
        raise BlockMissing(f"{self.path}: no readable replica of block {block.block_id}")

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        """Up to ``size`` bytes, fewer only at end of file (like a buffered file)."""
        if size is None or size < 0:
            return self.readall()
        buf = bytearray(min(size, max(0, self.length - self._pos)))
        view = memoryview(buf)
        got = 0
        while got < len(buf):
            n = self.readinto(view[got:])
            if not n:
                break
            got += n
        return bytes(view[:got])

    def readall(self) -> bytes:
        out = bytearray()
        chunk = bytearray(READ_BUFFER_BYTES)
        while True:
            n = self.readinto(chunk)
            if not n:
                return bytes(out)
            out += memoryview(chunk)[:n]

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        super().close()

    # --- internals ---------------------------------------------------------------------
    def _block_index(self, pos: int) -> int:
        lo, hi = 0, len(self.blocks) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.blocks[mid].block.offset <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _replica_failed(self, stream: _BlockStream, exc: ShoalError) -> None:
        log.warning("reading block %d from %s failed: %s", stream.block_id, stream.node.label(), exc)
        self._bad[(stream.block_id, stream.node.node_id)] = str(exc)
        if isinstance(exc, ChecksumError):
            self.client._report_bad_block(stream.block_id, stream.node.node_id, str(exc))
        stream.close()
        self._stream = None

    def _open_stream(self, index: int, in_block: int, span: int) -> _BlockStream:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        located = self.blocks[index]
        block = located.block
        for node in located.locations:
            key = (block.block_id, node.node_id)
            if key in self._bad:
                continue
            try:
                conn = self.client._connect_data(node.address)
                conn.send_msg(p.ReadBlockOp(block.block_id, block.gen_stamp, in_block, span))
                reply = conn.recv_msg(p.ReadBlockReply)
            except ShoalError as exc:
                self._bad[key] = str(exc)
                continue
            if not reply.ok:
                conn.close()
                self._bad[key] = str(error_from_code(reply.error_code, reply.error))
                continue
            self._stream = _BlockStream(conn, node, block.block_id, in_block, reply)
            self._stream_block = index
            return self._stream
        tried = "; ".join(
            f"{n.label()}: {self._bad[(block.block_id, n.node_id)]}" for n in located.locations
        ) or "no live replica"
        raise BlockMissing(f"{self.path}: cannot read block {block.block_id} ({tried})")
