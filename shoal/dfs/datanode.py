"""The worker's file-system service: data port, heartbeats and block reports.

Bulk transfers run one thread per connection with blocking sockets (HDFS's
DataXceiver model): ``recv_into`` and ``sendfile`` release the GIL, so several
streams proceed in parallel with little Python work per byte. Heartbeats run on
their own thread; the master's commands ride on the heartbeat replies.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
from pathlib import Path

import msgspec

from shoal.core.config import Config
from shoal.core.rpc_client import RpcClient
from shoal.core.sockio import FramedSocket, accept_loop
from shoal.dfs import protocol as p
from shoal.dfs.blockstore import BlockStore
from shoal.dfs.scanner import BlockScanner
from shoal.dfs.transfer import BlockReceiver, send_replica, serve_read
from shoal.core import wire
from shoal.errors import AuthenticationError, ChecksumError, ProtocolError, ShoalError

log = logging.getLogger("dfs.datanode")

XCEIVERS_MAX = 256


class DataNode:
    """Stores replicas and serves them; reports to the master."""

    def __init__(
        self,
        *,
        node_id: str,
        rack: str,
        data_dir: Path,
        host: str,
        master: tuple[str, int],
        secret: bytes,
        config: Config,
        port: int = 0,
    ) -> None:
        self.node_id = node_id
        self.rack = rack
        self.data_dir = data_dir
        self.host = host
        self.secret = secret
        self.config = config
        self.store = BlockStore(data_dir, sync_on_close=config.dfs.sync_on_close)
        self.master = RpcClient(master, secret, config.rpc)
        self._listener = socket.create_server((host, port), backlog=128)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._xceivers = threading.BoundedSemaphore(XCEIVERS_MAX)
        self._active = 0
        self._active_lock = threading.Lock()
        self.info = p.DatanodeInfo(node_id, host, self.port, rack)
        self.rejected_connections = 0
        self._accepting = False

    # --- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Open the data port, register with the master, start heartbeating.

        Safe to call again after a failed registration (the master was not up yet).
        """
        if not self._accepting:
            self._accepting = True
            threading.Thread(target=self._accept_loop, name="xceiver-accept", daemon=True).start()
        self._register()
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        scanner = BlockScanner(self.store, self.config.dfs, self.report_bad, self._stop)
        threading.Thread(target=scanner.run, name="block-scanner", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        try:
            self._listener.close()
        except OSError:
            pass
        self.master.close()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stop.wait(timeout)

    # --- control plane ---------------------------------------------------------------------
    def _register(self) -> None:
        usage = shutil.disk_usage(self.data_dir)
        resp = self.master.call(
            p.REGISTER,
            p.RegisterReq(self.info, usage.total, self._remaining(usage.free), os.getpid()),
        )
        # The master's timers win so that every node agrees on them.
        self.config = resp.config
        log.info("registered with master as %s on rack %s (data port %d)", self.node_id, self.rack, self.port)

    def _remaining(self, free: int) -> int:
        return max(0, free - self.config.dfs.reserved_bytes)

    def _heartbeat_loop(self) -> None:
        beats = 0
        while not self._stop.wait(self.config.dfs.heartbeat_interval_s):
            full = beats % self.config.dfs.block_report_every == 0
            try:
                self._heartbeat(full)
                beats += 1
            except ShoalError as exc:
                log.warning("heartbeat to master failed: %s", exc)

    def _heartbeat(self, full_report: bool) -> None:
        usage = shutil.disk_usage(self.data_dir)
        with self._active_lock:
            active = self._active
        req = p.HeartbeatReq(
            self.node_id,
            usage.total,
            self.store.used_bytes(),
            self._remaining(usage.free),
            active,
            self.store.report() if full_report else None,
        )
        resp = self.master.call(p.HEARTBEAT, req)
        if resp.reregister:
            self._register()
            self._heartbeat(True)
            return
        for command in resp.commands:
            self._execute(command)

    def _execute(self, command: p.Command) -> None:
        if isinstance(command, p.DeleteReplicas):
            deleted = sum(self.store.delete(b) for b in command.block_ids)
            log.info("deleted %d of %d replicas on the master's command", deleted, len(command.block_ids))
        elif isinstance(command, p.ReplicateBlock):
            threading.Thread(target=self._replicate, args=(command,), daemon=True, name="replicate").start()

    def _replicate(self, command: p.ReplicateBlock) -> None:
        """Copy a local replica down a pipeline of targets, verifying it on the way out."""
        with self._active_lock:
            self._active += 1
        try:
            send_replica(self.store, command, self._connect, self.config)
            log.info("copied block %d to %s", command.block_id, ",".join(t.node_id for t in command.targets))
        except ChecksumError as exc:
            self.report_bad(command.block_id, str(exc))
        except (ShoalError, OSError) as exc:
            log.warning("copying block %d failed: %s", command.block_id, exc)
        finally:
            with self._active_lock:
                self._active -= 1

    def report_bad(self, block_id: int, reason: str) -> None:
        """A local replica failed verification: the master repairs it from a good copy."""
        log.warning("replica of block %d is corrupt: %s", block_id, reason)
        try:
            self.master.call(p.REPORT_BAD_BLOCK, p.ReportBadBlockReq(block_id, self.node_id, reason))
        except ShoalError as exc:
            log.warning("could not report corrupt block %d: %s", block_id, exc)

    def report_received(self, report: p.ReplicaReport) -> None:
        """Tell the master a replica is complete (before the last packet is acked)."""
        self.master.call(p.BLOCK_RECEIVED, p.BlockReceivedReq(self.node_id, [report]))

    # --- data plane ------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        accept_loop(self._listener, self._stop, self._xceivers, self._xceive, what="transfers",
                    thread_name="xceiver", log=log)

    def _xceive(self, sock: socket.socket, addr: tuple) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        with self._active_lock:
            self._active += 1
        conn: FramedSocket | None = None
        try:
            conn = FramedSocket.accept(
                sock,
                self.secret,
                timeout_s=self.config.rpc.auth_timeout_s,
                frame_bytes_max=self.config.rpc.frame_bytes_max,
                peer=peer,
            )
            op = conn.recv_msg(p.DataOp)
            if isinstance(op, p.WriteBlockOp):
                BlockReceiver(
                    self.node_id,
                    self.store,
                    conn,
                    op,
                    self._connect,
                    self.report_received,
                    self.config.dfs.packet_bytes,
                ).run()
            else:
                serve_read(self.store, conn, op)
                # Keep the connection for the reader's next range until it closes.
                while True:
                    serve_read(self.store, conn, conn.recv_msg(p.ReadBlockOp))
        except AuthenticationError as exc:
            self.rejected_connections += 1
            log.warning("rejected data connection from %s: %s", peer, exc)
        except ProtocolError as exc:
            # A malformed or oversized frame: say why, then hang up (architecture, section 4).
            log.warning("closing data connection from %s: %s", peer, exc)
            if conn is not None:
                try:
                    conn.sendall(wire.encode_response(0, None, exc))
                except ShoalError:
                    pass
        except (ShoalError, OSError, msgspec.MsgspecError) as exc:
            log.debug("data connection from %s ended: %s", peer, exc)
        except Exception:
            log.exception("data connection from %s failed", peer)
        finally:
            if conn is not None:
                conn.close()
            else:
                sock.close()
            with self._active_lock:
                self._active -= 1
            self._xceivers.release()

    def _connect(self, address: tuple[str, int]) -> FramedSocket:
        return FramedSocket.connect(
            address,
            self.secret,
            timeout_s=self.config.rpc.connect_timeout_s,
            frame_bytes_max=self.config.rpc.frame_bytes_max,
        )
