"""A thread-safe, multiplexed RPC client over one authenticated connection.

Calls from many threads share the connection: each request carries an id, a reader
thread routes each reply to its waiting caller. A lost connection fails the calls in
flight with :class:`ConnectionLost`; the next call reconnects.
"""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

import msgspec

from shoal.core import wire
from shoal.core.config import RpcConfig
from shoal.core.sockio import FramedSocket
from shoal.errors import ConnectionLost, RpcTimeout, ShoalError, error_from_code

Req = TypeVar("Req", bound=msgspec.Struct)
Resp = TypeVar("Resp", bound=msgspec.Struct)


class RpcClient:
    """Calls typed :class:`~shoal.core.wire.Method` s on one daemon."""

    def __init__(self, address: tuple[str, int], secret: bytes, config: RpcConfig | None = None) -> None:
        self.address = address
        self.secret = secret
        self.config = config or RpcConfig()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._conn: FramedSocket | None = None
        self._pending: dict[int, tuple[wire.Method, Future]] = {}
        self._closed = False

    def call(self, method: wire.Method[Req, Resp], body: Req, timeout_s: float | None = None) -> Resp:
        """Send ``body`` and wait for the reply; remote errors re-raise as their own class."""
        timeout = self.config.call_timeout_s if timeout_s is None else timeout_s
        fut: Future = Future()
        with self._lock:
            if self._closed:
                raise ConnectionLost("client is closed")
            conn = self._connection()
            req_id = next(self._ids)
            self._pending[req_id] = (method, fut)
            try:
                conn.sendall(wire.encode_request(req_id, method, body, timeout))
            except ShoalError:
                self._pending.pop(req_id, None)
                self._drop(conn)
                raise
        try:
            return fut.result(timeout)
        except FutureTimeout:
            with self._lock:
                self._pending.pop(req_id, None)
            raise RpcTimeout(
                f"{method.name} to {self.address[0]}:{self.address[1]} got no reply in {timeout:g}s"
            ) from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._drop(self._conn)

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals (called with the lock held) ---------------------------------------
    def _connection(self) -> FramedSocket:
        if self._conn is None:
            self._conn = FramedSocket.connect(
                self.address,
                self.secret,
                timeout_s=self.config.connect_timeout_s,
                frame_bytes_max=self.config.frame_bytes_max,
            )
            threading.Thread(target=self._read_loop, args=(self._conn,), daemon=True, name="rpc-reader").start()
        return self._conn

    def _drop(self, conn: FramedSocket) -> None:
        conn.close()
        if self._conn is conn:
            self._conn = None
        pending, self._pending = self._pending, {}
        for _, fut in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLost(f"connection to {conn.peer} lost"))

    def _read_loop(self, conn: FramedSocket) -> None:
        try:
            while True:
                resp = wire.decode_response(conn.recv_frame())
                with self._lock:
                    entry = self._pending.pop(resp.id, None)
                if entry is None:
                    if resp.id == 0 and resp.error_code:
                        raise error_from_code(resp.error_code, resp.error_message)
                    continue
                method, fut = entry
                if resp.error_code is not None:
                    fut.set_exception(error_from_code(resp.error_code, resp.error_message))
                else:
                    try:
                        fut.set_result(method.decode_response(resp.body))
                    except ShoalError as exc:
                        fut.set_exception(exc)
        except Exception as exc:  # connection closed, protocol error: fail everything in flight
            with self._lock:
                pending, self._pending = self._pending, {}
                if self._conn is conn:
                    self._conn = None
            conn.close()
            for _, fut in pending.values():
                if not fut.done():
                    fut.set_exception(
                        exc if isinstance(exc, ShoalError) else ConnectionLost(f"connection to {conn.peer} lost: {exc}")
                    )
