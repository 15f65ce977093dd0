"""Blocking, authenticated, framed sockets.

Used by the Python client and by the workers' data-transfer threads, where a thread
per stream with blocking ``recv_into`` / ``sendfile`` moves bulk bytes with the least
Python work per byte (the HDFS DataXceiver model). Control RPCs from clients go
through :mod:`shoal.core.rpc_client`, which uses these sockets too.
"""

from __future__ import annotations

import os
import secrets
import logging
import socket
import threading
from collections.abc import Callable
from typing import BinaryIO, TypeVar

import msgspec

from shoal.core import wire
from shoal.errors import ConnectionLost, ProtocolError, RpcTimeout

T = TypeVar("T")

SOCKET_BUFFER_BYTES = 4 * 1024 * 1024


def tune(sock: socket.socket) -> None:
    """Low latency for small frames, big kernel buffers for bulk streams."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER_BYTES)
        except OSError:
            pass


class FramedSocket:
    """One authenticated connection; not thread-safe (one user at a time)."""

    def __init__(self, sock: socket.socket, frame_bytes_max: int, peer: str) -> None:
        self.sock = sock
        self.frame_bytes_max = frame_bytes_max
        self.peer = peer
        self._header = bytearray(4)

    # --- set-up ------------------------------------------------------------------------
    @classmethod
    def connect(
        cls, address: tuple[str, int], secret: bytes, *, timeout_s: float, frame_bytes_max: int
    ) -> FramedSocket:
        """Connect and run the client side of the HMAC challenge."""
        peer = f"{address[0]}:{address[1]}"
        try:
            sock = socket.create_connection(address, timeout=timeout_s)
        except socket.timeout:
            raise RpcTimeout(f"timed out connecting to {peer}") from None
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {peer}: {exc.strerror or exc}") from None
        tune(sock)
        fs = cls(sock, frame_bytes_max, peer)
        try:
            server_nonce = wire.check_server_hello(fs.recv_exactly(wire.SERVER_HELLO_BYTES))
            client_nonce = secrets.token_bytes(wire.NONCE_BYTES)
            sock.sendall(client_nonce + wire.client_proof(secret, server_nonce, client_nonce))
            wire.verify(wire.server_proof(secret, server_nonce, client_nonce), fs.recv_exactly(wire.MAC_BYTES), peer)
        except BaseException:
            fs.close()
            raise
        sock.settimeout(None)
        return fs

    @classmethod
    def accept(
        cls, sock: socket.socket, secret: bytes, *, timeout_s: float, frame_bytes_max: int, peer: str
    ) -> FramedSocket:
        """Run the server side of the HMAC challenge on an accepted socket."""
        tune(sock)
        sock.settimeout(timeout_s)
        fs = cls(sock, frame_bytes_max, peer)
        server_nonce = secrets.token_bytes(wire.NONCE_BYTES)
        sock.sendall(wire.MAGIC + server_nonce)
        proof = fs.recv_exactly(wire.CLIENT_PROOF_BYTES)
        client_nonce, mac = proof[: wire.NONCE_BYTES], proof[wire.NONCE_BYTES :]
        wire.verify(wire.client_proof(secret, server_nonce, client_nonce), mac, f"client {peer}")
        sock.sendall(wire.server_proof(secret, server_nonce, client_nonce))
        sock.settimeout(None)
        return fs

    # --- frames --------------------------------------------------------------------------
    def send_msg(self, msg: msgspec.Struct) -> None:
        self.sendall(wire.frame(wire.encode(msg)))

    def send_frame_and_data(self, msg: msgspec.Struct, data: bytes | memoryview) -> None:
        """A header frame followed by raw bytes, in as few syscalls as possible."""
        head = wire.frame(wire.encode(msg))
        try:
            self.sock.sendmsg([head, data]) if len(data) else self.sock.sendall(head)
        except OSError as exc:
            raise ConnectionLost(f"connection to {self.peer} lost: {exc}") from None

    def recv_frame(self) -> bytes:
        self.recv_exactly_into(memoryview(self._header))
        n = wire.frame_length(bytes(self._header), self.frame_bytes_max)
        return self.recv_exactly(n)

    def recv_msg(self, typ: type[T]) -> T:
        payload = self.recv_frame()
        try:
            return msgspec.msgpack.decode(payload, type=typ)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            name = getattr(typ, "__name__", None) or str(typ)
            raise ProtocolError(f"malformed {name} from {self.peer}: {exc}") from None

    # --- raw bytes -----------------------------------------------------------------------
    def sendall(self, data: bytes | memoryview) -> None:
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise RpcTimeout(f"timed out sending to {self.peer}") from None
        except OSError as exc:
            raise ConnectionLost(f"connection to {self.peer} lost: {exc}") from None

    def sendfile(self, f: BinaryIO, offset: int, count: int) -> None:
        try:
            sent = self.sock.sendfile(f, offset, count)
        except OSError as exc:
            raise ConnectionLost(f"connection to {self.peer} lost: {exc}") from None
        if sent != count:
            raise ConnectionLost(f"short sendfile to {self.peer}: {sent} of {count} bytes")

    def recv_exactly(self, n: int) -> bytes:
        buf = bytearray(n)
        self.recv_exactly_into(memoryview(buf))
        return bytes(buf)

    def recv_exactly_into(self, view: memoryview) -> None:
        pos, n = 0, len(view)
        recv_into = self.sock.recv_into
        try:
            while pos < n:
                got = recv_into(view[pos:], n - pos)
                if got == 0:
                    raise ConnectionLost(f"{self.peer} closed the connection")
                pos += got
        except socket.timeout:
            raise RpcTimeout(f"timed out reading from {self.peer}") from None
        except ConnectionLost:
            raise
        except OSError as exc:
            raise ConnectionLost(f"connection to {self.peer} lost: {exc}") from None

    def settimeout(self, timeout_s: float | None) -> None:
        self.sock.settimeout(timeout_s)

    def close(self) -> None:
        # shutdown() first: it wakes a thread blocked in recv() on this socket, which
        # would otherwise keep reading the fd number after it is reused elsewhere.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def fileno(self) -> int:
        return self.sock.fileno()


def write_all(fd: int, view: memoryview) -> None:
    """``os.write`` until every byte is written."""
    while len(view):
        n = os.write(fd, view)
        view = view[n:]


def accept_loop(listener: socket.socket, stop: threading.Event, slots: threading.Semaphore,
                handle: Callable[[socket.socket, tuple], None], *, what: str, thread_name: str,
                log: logging.Logger) -> None:
    """Accept connections until the listener closes; each gets a thread running
    ``handle`` (which releases its slot), and a connection beyond the slots is
    refused at once rather than queued."""
    while not stop.is_set():
        try:
            sock, addr = listener.accept()
        except OSError:
            return
        if not slots.acquire(blocking=False):
            log.warning("too many %s; refusing %s", what, addr)
            sock.close()
            continue
        threading.Thread(target=handle, args=(sock, addr), daemon=True, name=thread_name).start()
