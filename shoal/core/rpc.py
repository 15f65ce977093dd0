"""The asyncio RPC server every daemon's control plane uses.

Per connection: the HMAC challenge first (nothing else is read before it succeeds),
then a loop of length-prefixed request frames. Each request runs as its own task, so
one slow call does not block the others on the connection, bounded by
``rpc.inflight_calls_max``. A frame over the size limit or an undecodable envelope
gets an error reply (id 0) and the connection is closed; the daemon keeps serving.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from shoal.core import wire
from shoal.core.config import RpcConfig
from shoal.errors import AuthenticationError, ProtocolError, RpcTimeout, ShoalError, UnknownMethod

Handler = Callable[[Any], "Awaitable[msgspec.Struct] | msgspec.Struct"]


class RpcServer:
    """Serves registered methods on one TCP port."""

    def __init__(self, secret: bytes, config: RpcConfig, log: logging.Logger) -> None:
        self.secret = secret
        self.config = config
        self.log = log
        self._methods: dict[str, tuple[wire.Method, Handler, bool]] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self.rejected_connections = 0

    def register(self, method: wire.Method, handler: Handler) -> None:
        self._methods[method.name] = (method, handler, inspect.iscoroutinefunction(handler))

    async def call_local(self, method: wire.Method, body: msgspec.Struct) -> msgspec.Struct:
        """Run a registered handler in-process (e.g. from the daemon's HTTP API), with
        the same wrapping (durability, validation) as a call over the wire."""
        entry = self._methods.get(method.name)
        if entry is None:
            raise UnknownMethod(f"no such method: {method.name!r}")
        _, handler, is_async = entry
        return await handler(body) if is_async else handler(body)

    async def start(self, host: str, port: int, sock: socket.socket | None = None) -> tuple[str, int]:
        """Listen on ``host:port``, or on an already bound and listening ``sock``."""
        if sock is not None:
            self._server = await asyncio.start_server(self._serve, sock=sock, limit=2**20)
        else:
            self._server = await asyncio.start_server(self._serve, host, port, limit=2**20)
        sock = self._server.sockets[0]
        addr = sock.getsockname()
        return addr[0], addr[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._connections):
            w.close()
        if self._server is not None:
            await self._server.wait_closed()

    # --- one connection ----------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = "%s:%s" % (writer.get_extra_info("peername") or ("?", "?"))[:2]
        self._connections.add(writer)
        try:
            await asyncio.wait_for(self._handshake(reader, writer, peer), self.config.auth_timeout_s)
        except (AuthenticationError, asyncio.IncompleteReadError, asyncio.TimeoutError, OSError) as exc:
            self.rejected_connections += 1
            self.log.warning("rejected connection from %s: %s", peer, exc or type(exc).__name__)
            self._connections.discard(writer)
            writer.close()
            return
        gate = asyncio.Semaphore(self.config.inflight_calls_max)
        tasks: set[asyncio.Task] = set()
        try:
            while True:
                header = await reader.readexactly(4)
                try:
                    n = wire.frame_length(header, self.config.frame_bytes_max)
                    req = wire.decode_request(await reader.readexactly(n))
                except ProtocolError as exc:
                    self.log.warning("closing connection from %s: %s", peer, exc)
                    writer.write(wire.encode_response(0, None, exc))
                    await writer.drain()
                    break
                await gate.acquire()
                task = asyncio.create_task(self._dispatch(req, writer, gate))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            # A client may half-close after its last request: answer what is in flight.
            if tasks:
                await asyncio.wait(tasks, timeout=self.config.call_timeout_s)
            self._connections.discard(writer)
            writer.close()

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        server_nonce = secrets.token_bytes(wire.NONCE_BYTES)
        writer.write(wire.MAGIC + server_nonce)
        await writer.drain()
        proof = await reader.readexactly(wire.CLIENT_PROOF_BYTES)
        client_nonce, mac = proof[: wire.NONCE_BYTES], proof[wire.NONCE_BYTES :]
        wire.verify(wire.client_proof(self.secret, server_nonce, client_nonce), mac, f"client {peer}")
        writer.write(wire.server_proof(self.secret, server_nonce, client_nonce))
        await writer.drain()

    async def _dispatch(self, req: wire.Request, writer: asyncio.StreamWriter, gate: asyncio.Semaphore) -> None:
        try:
            reply = wire.encode_response(req.id, await self._invoke(req))
        except ShoalError as exc:
            reply = wire.encode_response(req.id, None, exc)
        except Exception as exc:  # a bug in a handler must not take the daemon down
            self.log.exception("handler for %s failed", req.method)
            reply = wire.encode_response(req.id, None, exc)
        finally:
            gate.release()
        if not writer.is_closing():
            writer.write(reply)
            try:
                await writer.drain()
            except ConnectionError:
                pass

    async def _invoke(self, req: wire.Request) -> msgspec.Struct:
        entry = self._methods.get(req.method)
        if entry is None:
            raise UnknownMethod(f"no such method: {req.method!r}")
        method, handler, is_async = entry
        body = method.decode_request(req.body)
        if not is_async:
            return handler(body)
        timeout = req.timeout_s if req.timeout_s > 0 else None
        try:
            return await asyncio.wait_for(handler(body), timeout)
        except asyncio.TimeoutError:
            raise RpcTimeout(f"{req.method} did not finish within {req.timeout_s:g}s") from None
