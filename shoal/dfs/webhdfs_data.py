"""WebHDFS REST API, datanode side: the worker end of OPEN, CREATE, APPEND, GETFILECHECKSUM.

The master redirects data operations here (:mod:`shoal.dfs.webhdfs`). As HDFS's datanode
WebHDFS handler does, the worker then acts as a DFS client: it reads through a
:class:`~shoal.dfs.streams.DFSReader` (its own replica first) and writes through a
:class:`~shoal.dfs.streams.DFSWriter` (first replica on this worker). Blocking DFS calls
run on a bounded thread pool; bytes move in ``WEBHDFS_CHUNK_BYTES`` pieces with at most
two in flight per request, and at most ``WEBHDFS_STREAMS_MAX`` requests move data at
once, so memory never depends on file size.

Each write gets a DFS client of its own (HDFS makes one per request), so a failed upload
holds a lease only on its own file. A CREATE whose body breaks off is deleted; an
APPEND keeps the bytes that arrived (HDFS closes the stream in both cases).

Security: as the namenode side, Hadoop's "simple" mode without authentication; bind to
the worker's own host (loopback unless told otherwise).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web

from shoal.dfs.checksum import chunk_checksums
from shoal.dfs.client import DFSClient
from shoal.dfs.streams import DFSReader, DFSWriter
from shoal.dfs.webhdfs import (
    REPLICATION_PARAM_MAX,
    Params,
    WebHdfsError,
    add_routes,
    file_not_found,
    io_error,
    remote_exceptions,
    request_path,
    start_app,
)
from shoal.errors import IsADirectory, ShoalError

log = logging.getLogger("dfs.webhdfs")

DATANODE_OPS = {"GET": ("OPEN", "GETFILECHECKSUM"), "PUT": ("CREATE",), "POST": ("APPEND",)}
WEBHDFS_CHUNK_BYTES = 1024 * 1024
WEBHDFS_STREAMS_MAX = 64
WEBHDFS_THREADS_MAX = 32
START_TIMEOUT_S = 10.0

T = TypeVar("T")


class DatanodeWebHdfs:
    """Answers the redirected data operations as a DFS client of the cluster."""

    def __init__(self, client_factory: Callable[[], DFSClient]) -> None:
        self.client_factory = client_factory
        self.pool = ThreadPoolExecutor(WEBHDFS_THREADS_MAX, thread_name_prefix="webhdfs")
        self.streams = asyncio.Semaphore(WEBHDFS_STREAMS_MAX)
        self._reader_client: DFSClient | None = None
        self._reader_client_lock = asyncio.Lock()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(fn, *args))

    async def close(self, _app: web.Application | None = None) -> None:
        if self._reader_client is not None:
            await self.run(self._reader_client.close)
            self._reader_client = None
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        params = Params(request)
        op = params.op(request.method, DATANODE_OPS)
        params.user()
        path = request_path(request)
        async with self.streams:
            if op == "OPEN":
                return await self.open(path, params, request)
            if op == "GETFILECHECKSUM":
                return await self.checksum(path)
            if op == "CREATE":
                return await self.create(path, params, request)
            return await self.append(path, params, request)

    async def _shared_client(self) -> DFSClient:
        """One client for reads (thread-safe), made on first use: the master may not be
        up when the worker starts serving."""
        async with self._reader_client_lock:
            if self._reader_client is None:
                self._reader_client = await self.run(self.client_factory)
            return self._reader_client

    async def _open_reader(self, path: str) -> DFSReader:
        client = await self._shared_client()
        try:
            return await self.run(client.open, path, "rb")  # type: ignore[return-value]
        except IsADirectory:
            raise file_not_found(f"Path is not a file: {path}") from None

    # --- OPEN -----------------------------------------------------------------------------
    async def open(self, path: str, params: Params, request: web.Request) -> web.StreamResponse:
        offset = params.integer("offset", 0) or 0
        length = params.integer("length", 0)
        params.integer("buffersize", 1, 2**31 - 1)
        reader = await self._open_reader(path)
        pending: asyncio.Future[bytes] | None = None
        try:
            if offset > reader.length:
                raise WebHdfsError(
                    403, "EOFException", "java.io.EOFException",
                    f"Cannot seek after EOF: offset {offset} is past the length {reader.length} of {path}",
                )
            count = reader.length - offset if length is None else min(length, reader.length - offset)
            reader.seek(offset)
            # The first chunk is read before the headers go out, so a file that cannot be
            # read at all (every replica of its block lost) is a RemoteException, not a
            # short 200.
            remaining = count
            chunk = await self._read(reader, min(WEBHDFS_CHUNK_BYTES, remaining)) if remaining else b""
            response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            response.content_length = count
            await response.prepare(request)
            try:
                # Read the next chunk while this one goes out: two chunks at most.
                while remaining:
                    if not chunk:
                        raise ShoalError(f"{path} ended at {offset + count - remaining}, before {offset + count}")
                    remaining -= len(chunk)
                    if remaining:
                        pending = self._read(reader, min(WEBHDFS_CHUNK_BYTES, remaining))
                    await response.write(chunk)
                    if pending is not None:
                        chunk = await pending
                        pending = None
                await response.write_eof()
            except (ShoalError, OSError) as exc:
                # Headers are out: all that can signal the error is a short body.
                log.warning("WebHDFS OPEN %s at %d+%d broke off: %s", path, offset, count, exc)
                if request.transport is not None:
                    request.transport.close()
            return response
        finally:
            if pending is not None:
                await asyncio.wait([pending])
            await self.run(reader.close)

    def _read(self, reader: DFSReader, size: int) -> asyncio.Future[bytes]:
        return asyncio.ensure_future(self.run(reader.read, size))

    # --- CREATE / APPEND --------------------------------------------------------------------
    async def create(self, path: str, params: Params, request: web.Request) -> web.Response:
        overwrite = params.boolean("overwrite", False)
        replication = params.integer("replication", 1, REPLICATION_PARAM_MAX)
        block_size = params.integer("blocksize", 1)
        params.integer("buffersize", 1, 2**31 - 1)
        client = await self.run(self.client_factory)
        try:
            open_file = partial(client.open, path, "wb", replication=replication, block_size=block_size,
                                overwrite=overwrite)
            try:
                writer: DFSWriter = await self.run(open_file)  # type: ignore[assignment]
            except IsADirectory:
                raise WebHdfsError(
                    403, "FileAlreadyExistsException", "org.apache.hadoop.fs.FileAlreadyExistsException",
                    f"{path} already exists as a directory",
                ) from None
            try:
                await self._copy_body(request, writer)
            except BaseException:
                # All or nothing for a new file: drop what arrived (best effort).
                with suppress(ShoalError, ValueError):
                    await self.run(writer.abort)
                with suppress(ShoalError):
                    await self.run(client.delete, path)
                raise
        finally:
            await self.run(client.close)
        namenode = params.text("namenoderpcaddress") or request.host
        headers = {"Location": f"webhdfs://{namenode}{quote(path, safe='/')}"}
        return web.Response(status=201, headers=headers)

    async def append(self, path: str, params: Params, request: web.Request) -> web.Response:
        params.integer("buffersize", 1, 2**31 - 1)
        client = await self.run(self.client_factory)
        try:
            # DFSClient's "ab" creates a missing file; WebHDFS's APPEND does not.
            status = await self.run(client.stat, path)
            if status.kind != "file":
                raise file_not_found(f"Failed to append to non-file {path}: it is a directory")
            writer: DFSWriter = await self.run(client.open, path, "ab")  # type: ignore[assignment]
            try:
                await self._copy_body(request, writer)
            except _BodyBroken:
                # As HDFS: keep the bytes that arrived and release the file.
                with suppress(ShoalError):
                    await self.run(writer.close)
                raise
        finally:
            await self.run(client.close)
        return web.Response(status=200)

    async def _copy_body(self, request: web.Request, writer: DFSWriter) -> None:
        """Stream the request body into ``writer`` and close it; the body is read while
        the previous chunk is written, so at most two chunks are held."""
        pending: asyncio.Future[int] | None = None
        try:
            while True:
                try:
                    chunk = await _read_chunk(request, WEBHDFS_CHUNK_BYTES)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    raise _BodyBroken(f"the request body broke off: {exc or type(exc).__name__}") from exc
                if pending is not None:
                    await pending
                    pending = None
                if not chunk:
                    break
                pending = asyncio.ensure_future(self.run(writer.write, chunk))
            await self.run(writer.close)
        except _BodyBroken:
            if pending is not None:
                await asyncio.wait([pending])
            raise
        except BaseException:
            if pending is not None:
                await asyncio.wait([pending])
            with suppress(ShoalError, ValueError):
                await self.run(writer.abort)
            raise

    # --- GETFILECHECKSUM -------------------------------------------------------------------
    async def checksum(self, path: str) -> web.Response:
        client = await self._shared_client()
        reader = await self._open_reader(path)
        try:
            result = await self.run(file_checksum, reader, client.config.dfs.bytes_per_checksum)
        finally:
            await self.run(reader.close)
        return web.json_response({"FileChecksum": result})


class _BodyBroken(WebHdfsError):
    """The client's request body ended early or was malformed."""

    def __init__(self, message: str) -> None:
        super().__init__(403, "IOException", "java.io.IOException", message)


async def _read_chunk(request: web.Request, size: int) -> bytearray:
    """Up to ``size`` bytes of the body (fewer only at its end)."""
    buf = bytearray()
    while len(buf) < size:
        part = await request.content.read(size - len(buf))
        if not part:
            break
        buf += part
    return buf


def file_checksum(reader: DFSReader, bytes_per_checksum: int) -> dict[str, Any]:
    """HDFS's MD5MD5CRC32C file checksum: the MD5 of each block's chunk CRC32Cs, then the
    MD5 of those. Equal for equal bytes, block size and bytes-per-checksum (so two shoal
    clusters compare; an HDFS cluster only at the same settings). Reads the whole file."""
    buffer_bytes = max(1, WEBHDFS_CHUNK_BYTES // bytes_per_checksum) * bytes_per_checksum
    file_md5 = hashlib.md5()
    for located in reader.blocks:
        block = located.block
        block_md5 = hashlib.md5()
        reader.seek(block.offset)
        left = block.length
        while left:
            data = reader.read(min(buffer_bytes, left))
            if not data:
                raise ShoalError(f"{reader.path}: block {block.block_id} ended early")
            block_md5.update(chunk_checksums(data, bytes_per_checksum))
            left -= len(data)
        file_md5.update(block_md5.digest())
    first = reader.blocks[0].block.length if reader.blocks else 0
    crc_per_block = -(-first // bytes_per_checksum) if len(reader.blocks) > 1 else 0
    bpc = bytes_per_checksum if reader.blocks else 0
    raw = struct.pack(">iq", bpc, crc_per_block) + file_md5.digest()
    return {"algorithm": f"MD5-of-{crc_per_block}MD5-of-{bpc}CRC32C", "bytes": raw.hex(), "length": len(raw)}


async def start_datanode_http(
    client_factory: Callable[[], DFSClient], host: str, port: int
) -> tuple[web.AppRunner, int]:
    """Serve the worker's WebHDFS data operations on ``host:port`` (0: any free port).

    ``client_factory()`` makes a connected :class:`DFSClient` naming this worker
    (``node_id=``); it is called lazily, once for reads and once per write. Returns the
    runner (``await runner.cleanup()`` to stop) and the bound port.
    """
    api = DatanodeWebHdfs(client_factory)
    app = web.Application(middlewares=[remote_exceptions])
    add_routes(app, api.handle, reads_body=True)
    app.on_cleanup.append(api.close)
    return await start_app(app, host, port)


class DatanodeHttpThread:
    """:func:`start_datanode_http` on an event loop of its own thread, for the worker
    (whose data plane is threads, not asyncio)."""

    def __init__(self, client_factory: Callable[[], DFSClient], host: str, port: int = 0) -> None:
        self.client_factory = client_factory
        self.host = host
        self.requested_port = port
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> int:
        """Bind and serve; returns the bound port (raises if binding failed)."""
        self._thread = threading.Thread(target=self._run, name="webhdfs-http", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise io_error(f"the WebHDFS server did not start within {START_TIMEOUT_S:g}s")
        if self._error is not None:
            raise self._error
        return self.port

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(START_TIMEOUT_S)

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        runner: web.AppRunner | None = None
        try:
            runner, self.port = loop.run_until_complete(
                start_datanode_http(self.client_factory, self.host, self.requested_port)
            )
        except BaseException as exc:
            self._error = exc
        self._ready.set()
        try:
            if runner is not None:
                loop.run_forever()
                loop.run_until_complete(runner.cleanup())
        finally:
            loop.close()


__all__ = ["DatanodeHttpThread", "DatanodeWebHdfs", "file_checksum", "start_datanode_http"]
