"""The worker side of the data-transfer protocol: receiving and serving replicas.

Write pipeline (as HDFS's BlockReceiver): each packet is read, forwarded to the next
worker at once, verified against its checksums and written; a responder thread sends
the packet's ack upstream only after the local write *and* the downstream ack, so an
ack at the client means every worker in the pipeline stored the packet. The last
packet finalizes the replica and reports it to the master before it is acked.

Reads (as BlockSender): a header with the checksums of the chunks covering the range,
then the bytes by ``sendfile``; the reader verifies every chunk.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from shoal.core.sockio import FramedSocket
from shoal.dfs.checksum import verify_chunks
from shoal.core.config import Config
from shoal.dfs.namespace import BlockInfo
from shoal.dfs.protocol import (
    LocatedBlock,
    PacketAck,
    PacketHeader,
    PipelineReady,
    ReadBlockOp,
    ReadBlockReply,
    ReplicaReport,
    ReplicateBlock,
    WriteBlockOp,
)
from shoal.errors import ShoalError

if TYPE_CHECKING:
    from shoal.dfs.blockstore import BlockStore

log = logging.getLogger("dfs.transfer")

Connect = Callable[[tuple[str, int]], FramedSocket]
_DONE = object()


class BlockReceiver:
    """Receives one block from upstream, stores it and mirrors it downstream."""

    def __init__(
        self,
        node_id: str,
        store: BlockStore,
        upstream: FramedSocket,
        op: WriteBlockOp,
        connect: Connect,
        on_finalized: Callable[[ReplicaReport], None],
        packet_bytes_max: int,
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.up = upstream
        self.op = op
        self.connect = connect
        self.on_finalized = on_finalized
        self.packet_bytes_max = packet_bytes_max
        self.mirror: FramedSocket | None = None
        self._acks: queue.Queue = queue.Queue()

    def run(self) -> None:
        op = self.op
        if op.downstream:
            target = op.downstream[0]
            try:
                self.mirror = self.connect(target.address)
                self.mirror.send_msg(
                    WriteBlockOp(
                        op.block_id, op.gen_stamp, op.downstream[1:], op.bytes_per_checksum, op.client, op.append_at
                    )
                )
                ready = self.mirror.recv_msg(PipelineReady)
            except ShoalError as exc:
                ready = PipelineReady(False, f"cannot reach {target.node_id}: {exc}", target.node_id)
            if not ready.ok:
                self.up.send_msg(ready)
                self._close_mirror()
                return
        try:
            if op.append_at >= 0:
                writer = self.store.create_append(op.block_id, op.gen_stamp, op.bytes_per_checksum, op.append_at)
            else:
                writer = self.store.create(op.block_id, op.gen_stamp, op.bytes_per_checksum)
        except ShoalError as exc:
            self.up.send_msg(PipelineReady(False, f"{self.node_id}: {exc}", self.node_id))
            self._close_mirror()
            return
        self.up.send_msg(PipelineReady(True))
        responder = threading.Thread(target=self._respond, name=f"responder-{op.block_id}", daemon=True)
        responder.start()
        finished = False
        try:
            finished = self._receive_packets(writer)
        except ShoalError as exc:
            log.warning("block %d: receive failed: %s", op.block_id, exc)
            self._acks.put(PacketAck(-1, False, str(exc), self.node_id))
        except OSError as exc:
            log.warning("block %d: local write failed: %s", op.block_id, exc)
            self._acks.put(PacketAck(-1, False, f"disk error on {self.node_id}: {exc}", self.node_id))
        finally:
            if not finished:
                writer.abort()
            self._acks.put(_DONE)
            responder.join()
            self._close_mirror()

    def _receive_packets(self, writer) -> bool:
        buf = bytearray(self.packet_bytes_max)
        view = memoryview(buf)
        bpc = self.op.bytes_per_checksum
        while True:
            header = self.up.recv_msg(PacketHeader)
            if not 0 <= header.data_len <= self.packet_bytes_max:
                raise ShoalError(f"packet of {header.data_len} bytes exceeds {self.packet_bytes_max}")
            data = view[: header.data_len]
            self.up.recv_exactly_into(data)
            if self.mirror is not None:
                try:
                    self.mirror.send_frame_and_data(header, data)
                except ShoalError:
                    pass  # the responder sees the broken mirror and names it in the ack
            verify_chunks(data, header.checksums, bpc, f"block {self.op.block_id} packet {header.seqno}")
            writer.write(header.offset, data, header.checksums)
            if header.last:
                report = writer.finalize()
                self.on_finalized(report)
                self._acks.put(PacketAck(header.seqno, True))
                return True
            self._acks.put(PacketAck(header.seqno, True))

    def _respond(self) -> None:
        """Send acks upstream in order, each combined with the downstream worker's ack."""
        while True:
            local = self._acks.get()
            if local is _DONE:
                return
            ack = local
            if ack.ok and self.mirror is not None:
                try:
                    down = self.mirror.recv_msg(PacketAck)
                    if not down.ok or down.seqno != ack.seqno:
                        ack = down if not down.ok else PacketAck(ack.seqno, False, "ack out of order", self.op.downstream[0].node_id)
                except ShoalError as exc:
                    bad = self.op.downstream[0].node_id
                    ack = PacketAck(ack.seqno, False, f"lost downstream {bad}: {exc}", bad)
            try:
                self.up.send_msg(ack)
            except ShoalError:
                return
            if not ack.ok:
                self.up.close()
                return

    def _close_mirror(self) -> None:
        if self.mirror is not None:
            self.mirror.close()


def serve_read(store: BlockStore, conn: FramedSocket, op: ReadBlockOp) -> None:
    """Send a replica range: checksums in the header, then the bytes by sendfile."""
    try:
        replica = store.get(op.block_id)
        if op.offset < 0 or op.length < 0 or op.offset + op.length > replica.length:
            conn.send_msg(
                ReadBlockReply(
                    False,
                    "BadRequest",
                    f"range {op.offset}+{op.length} outside block {op.block_id} of {replica.length} bytes",
                )
            )
            return
        bpc = replica.bytes_per_checksum
        start = op.offset - op.offset % bpc
        end = min(replica.length, -(-(op.offset + op.length) // bpc) * bpc)
        first_chunk = start // bpc
        count = -(-(end - start) // bpc)
        checksums = store.read_checksums(replica, first_chunk, count)
    except ShoalError as exc:
        conn.send_msg(ReadBlockReply(False, exc.code, str(exc)))
        return
    conn.send_msg(ReadBlockReply(True, "", "", start, end - start, bpc, checksums))
    if end > start:
        with open(replica.data_path, "rb") as f:
            conn.sendfile(f, start, end - start)


def send_replica(store: BlockStore, command: ReplicateBlock, connect: Connect, config: Config) -> None:
    """Push a local replica through a write pipeline to ``command.targets``.

    Every chunk is verified against the stored checksums before it leaves, so a
    corrupt replica is never copied (it raises :class:`ChecksumError` instead).
    """
    from shoal.dfs.streams import open_pipeline

    replica = store.get(command.block_id)
    if replica.length != command.length:
        raise ShoalError(f"block {command.block_id}: local replica has {replica.length} bytes, master expects {command.length}")
    bpc = replica.bytes_per_checksum
    packet = max(bpc, config.dfs.packet_bytes - config.dfs.packet_bytes % bpc)
    located = LocatedBlock(BlockInfo(command.block_id, replica.gen_stamp, replica.length, 0), list(command.targets))
    pipe, ready = open_pipeline(
        connect, located, bytes_per_checksum=bpc, client_name="replication",
        window=config.dfs.pipeline_window_packets, timeout_s=config.rpc.call_timeout_s,
    )
    if pipe is None:
        raise ShoalError(f"pipeline to {command.targets[0].node_id} refused: {ready.error}")
    try:
        buf = bytearray(packet)
        view = memoryview(buf)
        with open(replica.data_path, "rb") as f:
            offset = 0
            while True:
                n = f.readinto(buf)
                last = offset + n >= replica.length
                chunks = -(-n // bpc)
                sums = store.read_checksums(replica, offset // bpc, chunks)
                verify_chunks(view[:n], sums, bpc, f"local replica of block {command.block_id}")
                pipe.send(view[:n], last)
                offset += n
                if last:
                    break
        pipe.finish()
    finally:
        pipe.abort()
