"""The worker's shuffle service: serves map output segments to reducers on other nodes
(Spark's external shuffle service), and its client.

One thread per connection with blocking sockets, as the data node's transfer port:
after the HMAC handshake the client sends typed requests (MessagePack frames) and
reads, for a fetch, a :class:`FetchReply` header naming each segment's length, then
the segments' bytes back to back, sent with ``sendfile``. The service computes every
path itself from its root, a validated application id and integer ids (a client
never names a file), reads the byte ranges from the index file, and opens every file
before it answers, so a reply is either a clean error or complete data. A bad request
gets an error reply and the connection stays usable; a malformed frame gets an error
reply and a closed connection.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec

from shoal.compute.serde import BATCH_HEADER
from shoal.compute.shuffle_format import U64, check_app_id, check_index, shuffle_paths
from shoal.core.config import RpcConfig
from shoal.core.sockio import FramedSocket, accept_loop
from shoal.errors import AuthenticationError, BadRequest, FetchFailed, ProtocolError, ShoalError

log = logging.getLogger("compute.shuffle_service")

CONNECTIONS_MAX = 256
FETCH_MAPS_MAX = 1024  # map outputs per request; the client splits bigger fetches
IO_TIMEOUT_S = 120.0  # a peer that stops reading or sending for this long is dropped

# Error codes in replies.
BAD_REQUEST = "BadRequest"
OUTPUT_MISSING = "MapOutputMissing"
OUTPUT_UNREADABLE = "MapOutputUnreadable"
PROTOCOL_ERROR = "ProtocolError"


class FetchSegments(msgspec.Struct, tag="fetch", frozen=True):
    """Reduce partitions ``[reduce_start, reduce_end)`` of each listed map output."""

    app_id: str
    shuffle_id: int
    map_indices: list[int]
    reduce_start: int
    reduce_end: int


class RemoveApp(msgspec.Struct, tag="remove_app", frozen=True):
    """Delete every shuffle file of an application (it finished)."""

    app_id: str


ShuffleOp = FetchSegments | RemoveApp


class FetchReply(msgspec.Struct, frozen=True):
    """``ok``: ``lengths[i]`` bytes of map ``map_indices[i]`` follow, in order.
    Otherwise ``error_code`` names the problem and ``map_index`` the map output."""

    ok: bool
    error_code: str = ""
    message: str = ""
    map_index: int = -1
    lengths: list[int] = []


class RemoveReply(msgspec.Struct, frozen=True):
    ok: bool
    error_code: str = ""
    message: str = ""
    removed: bool = False


class _Refused(Exception):
    """A request the service answers with an error reply."""

    def __init__(self, code: str, message: str, map_index: int = -1) -> None:
        super().__init__(message)
        self.code, self.map_index = code, map_index


class ShuffleService:
    """Serves ``<root>/<app_id>/shuffle_<sid>_<map>.{data,index}`` to authenticated peers."""

    def __init__(
        self,
        root: str | Path,
        *,
        secret: bytes,
        host: str = "127.0.0.1",
        port: int = 0,
        config: RpcConfig | None = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.secret = secret
        self.config = config or RpcConfig()
        self._listener = socket.create_server((host, port), backlog=128)
        self.host = host
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(CONNECTIONS_MAX)
        self._conns: set[FramedSocket] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.rejected_connections = 0

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> ShuffleService:
        if self._thread is None:
            self._thread = threading.Thread(target=self._accept_loop, name="shuffle-accept", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and drop every open connection."""
        self._stop.set()
        try:  # shutdown() wakes the thread blocked in accept(); close() alone does not
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> ShuffleService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- connections ------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        accept_loop(self._listener, self._stop, self._slots, self._serve, what="shuffle connections",
                    thread_name="shuffle-conn", log=log)

    def _serve(self, sock: socket.socket, addr: tuple) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        conn: FramedSocket | None = None
        try:
            conn = FramedSocket.accept(
                sock, self.secret, timeout_s=self.config.auth_timeout_s,
                frame_bytes_max=self.config.frame_bytes_max, peer=peer,
            )
            with self._lock:
                self._conns.add(conn)
            while not self._stop.is_set():
                conn.settimeout(None)  # an idle pooled connection may wait for its next request
                op = conn.recv_msg(ShuffleOp)
                conn.settimeout(IO_TIMEOUT_S)
                if isinstance(op, FetchSegments):
                    self._fetch(conn, op)
                else:
                    self._remove_app(conn, op)
        except AuthenticationError as exc:
            self.rejected_connections += 1
            log.warning("rejected shuffle connection from %s: %s", peer, exc)
        except ProtocolError as exc:
            log.warning("closing shuffle connection from %s: %s", peer, exc)
            if conn is not None:
                try:
                    conn.send_msg(FetchReply(False, PROTOCOL_ERROR, str(exc)))
                except ShoalError:
                    pass
        except (ShoalError, OSError) as exc:
            log.debug("shuffle connection from %s ended: %s", peer, exc)
        except Exception:
            log.exception("shuffle connection from %s failed", peer)
        finally:
            if conn is not None:
                with self._lock:
                    self._conns.discard(conn)
                conn.close()
            else:
                sock.close()
            self._slots.release()

    # --- requests ----------------------------------------------------------------------------------
    def _fetch(self, conn: FramedSocket, op: FetchSegments) -> None:
        try:
            self._check_fetch(op)
            segments = [self._locate(op, m) for m in op.map_indices]
        except _Refused as exc:
            conn.send_msg(FetchReply(False, exc.code, str(exc), exc.map_index))
            return
        conn.send_msg(FetchReply(True, lengths=[length for _, _, length in segments]))
        for data_path, offset, length in segments:
            if not length:
                continue
            try:
                f = open(data_path, "rb")
            except OSError as exc:
                # Removed since the header went out (remove_app): hang up; the client
                # fails this map output on the short stream.
                raise ShoalError(f"{data_path} vanished while being served: {exc}") from None
            with f:
                conn.sendfile(f, offset, length)

    @staticmethod
    def _check_fetch(op: FetchSegments) -> None:
        try:
            check_app_id(op.app_id)
            check_index("shuffle id", op.shuffle_id)
            for m in op.map_indices:
                check_index("map index", m)
        except BadRequest as exc:
            raise _Refused(BAD_REQUEST, str(exc)) from None
        if len(op.map_indices) > FETCH_MAPS_MAX:
            raise _Refused(BAD_REQUEST, f"{len(op.map_indices)} map outputs in one request (at most {FETCH_MAPS_MAX})")
        if not 0 <= op.reduce_start <= op.reduce_end:
            raise _Refused(BAD_REQUEST, f"bad reduce range [{op.reduce_start}, {op.reduce_end})")

    def _locate(self, op: FetchSegments, m: int) -> tuple[str, int, int]:
        """(data path, offset, length) of one map output's range, from its index; the
        data file must hold it. Files are opened only while they are sent, so a
        request naming thousands of map outputs holds one descriptor at a time."""
        data_path, index_path = shuffle_paths(str(self.root), op.app_id, op.shuffle_id, m)
        what = f"map output {m} of shuffle {op.shuffle_id} of {op.app_id}"
        try:
            ifd = os.open(index_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise _Refused(OUTPUT_MISSING, f"{what} is not on this node", m) from None
        except OSError as exc:
            raise _Refused(OUTPUT_UNREADABLE, f"{what}: cannot open index: {exc.strerror}", m) from None
        try:
            parts = (os.fstat(ifd).st_size // U64.size - 1) // 2
            if op.reduce_end > parts:
                raise _Refused(BAD_REQUEST, f"{what} has {parts} reduce partitions, not {op.reduce_end}", m)
            start = U64.unpack(os.pread(ifd, U64.size, op.reduce_start * U64.size))[0]
            end = U64.unpack(os.pread(ifd, U64.size, op.reduce_end * U64.size))[0]
        except OSError as exc:
            raise _Refused(OUTPUT_UNREADABLE, f"{what}: cannot read index: {exc.strerror}", m) from None
        except struct.error as exc:  # a short read: a torn index
            raise _Refused(OUTPUT_UNREADABLE, f"{what}: bad index: {exc}", m) from None
        finally:
            os.close(ifd)
        try:
            size = os.stat(data_path).st_size
        except FileNotFoundError:
            raise _Refused(OUTPUT_MISSING, f"{what} has an index but no data file", m) from None
        except OSError as exc:
            raise _Refused(OUTPUT_UNREADABLE, f"{what}: cannot stat data: {exc.strerror}", m) from None
        if end < start or size < end:
            raise _Refused(OUTPUT_UNREADABLE, f"{what}: data file shorter than its index says", m)
        return data_path, start, end - start

    def _remove_app(self, conn: FramedSocket, op: RemoveApp) -> None:
        try:
            check_app_id(op.app_id)
        except BadRequest as exc:
            conn.send_msg(RemoveReply(False, BAD_REQUEST, str(exc)))
            return
        path = self.root / op.app_id
        existed = path.is_dir()
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            conn.send_msg(RemoveReply(False, OUTPUT_UNREADABLE, f"could not remove every file of {op.app_id}"))
            return
        conn.send_msg(RemoveReply(True, removed=existed))


class ShuffleClient:
    """A connection to one shuffle service, opened on first use and reused; one
    request at a time (not thread-safe: use one client per thread)."""

    def __init__(
        self,
        address: tuple[str, int],
        secret: bytes,
        *,
        connect_timeout_s: float = 10.0,
        io_timeout_s: float = IO_TIMEOUT_S,
        frame_bytes_max: int = 64 * 1024 * 1024,
    ) -> None:
        self.address = (address[0], int(address[1]))
        self.secret = secret
        self.connect_timeout_s = connect_timeout_s
        self.io_timeout_s = io_timeout_s
        self.frame_bytes_max = frame_bytes_max
        self._conn: FramedSocket | None = None

    def _connection(self) -> FramedSocket:
        if self._conn is None:
            self._conn = FramedSocket.connect(
                self.address, self.secret, timeout_s=self.connect_timeout_s, frame_bytes_max=self.frame_bytes_max
            )
            self._conn.settimeout(self.io_timeout_s)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ShuffleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, op: msgspec.Struct, reply: type) -> msgspec.Struct:
        conn = self._connection()
        try:
            conn.send_msg(op)
            return conn.recv_msg(reply)
        except BaseException:
            self.close()
            raise

    # --- calls --------------------------------------------------------------------------------------
    def fetch_batches(
        self, app_id: str, shuffle_id: int, map_indices: list[int], reduce_start: int, reduce_end: int | None = None
    ) -> Iterator[tuple[int, bytes]]:
        """Stream ``(map_index, compressed batch payload)`` for each batch of the
        segments, map by map. A refusal or a broken stream raises ``FetchFailed``."""
        if reduce_end is None:
            reduce_end = reduce_start + 1
        for i in range(0, len(map_indices), FETCH_MAPS_MAX):
            yield from self._fetch_some(app_id, shuffle_id, map_indices[i : i + FETCH_MAPS_MAX], reduce_start, reduce_end)

    def _fetch_some(
        self, app_id: str, shuffle_id: int, maps: list[int], reduce_start: int, reduce_end: int
    ) -> Iterator[tuple[int, bytes]]:
        peer = f"{self.address[0]}:{self.address[1]}"
        op = FetchSegments(app_id, shuffle_id, maps, reduce_start, reduce_end)
        try:
            reply = self._request(op, FetchReply)
        except ShoalError as exc:
            raise FetchFailed(f"cannot fetch shuffle {shuffle_id} from {peer}: {exc}", shuffle_id, maps[0] if maps else -1) from None
        assert isinstance(reply, FetchReply)
        if not reply.ok:
            m = reply.map_index if reply.map_index >= 0 else (maps[0] if maps else -1)
            if reply.error_code == PROTOCOL_ERROR:
                self.close()
            raise FetchFailed(f"shuffle service {peer}: {reply.error_code}: {reply.message}", shuffle_id, m)
        if len(reply.lengths) != len(maps):
            self.close()
            raise FetchFailed(f"shuffle service {peer} answered {len(reply.lengths)} segments for {len(maps)}", shuffle_id, maps[0])
        conn = self._conn
        assert conn is not None
        done = False
        m = maps[0] if maps else -1
        try:
            header = bytearray(BATCH_HEADER.size)
            for m, length in zip(maps, reply.lengths):
                remaining = length
                while remaining > 0:
                    conn.recv_exactly_into(memoryview(header))
                    (n,) = BATCH_HEADER.unpack(header)
                    remaining -= BATCH_HEADER.size + n
                    if remaining < 0:
                        raise FetchFailed(f"corrupt segment of map output {m} from {peer}: batch overruns it", shuffle_id, m)
                    payload = bytearray(n)
                    conn.recv_exactly_into(memoryview(payload))
                    yield m, payload  # type: ignore[misc]
            done = True
        except ShoalError as exc:
            if isinstance(exc, FetchFailed):
                raise
            raise FetchFailed(f"fetching map output {m} from {peer} failed: {exc}", shuffle_id, m) from None
        finally:
            if not done:  # closed early or failed mid-stream: the connection is out of step
                self.close()

    def fetch(self, app_id: str, shuffle_id: int, map_indices: list[int], reduce_start: int,
              reduce_end: int | None = None) -> dict[int, bytes]:
        """Each map output's segment as framed batches (``serde.iter_batches`` reads them)."""
        out: dict[int, list[bytes]] = {m: [] for m in map_indices}
        for m, payload in self.fetch_batches(app_id, shuffle_id, map_indices, reduce_start, reduce_end):
            out[m] += (BATCH_HEADER.pack(len(payload)), bytes(payload))
        return {m: b"".join(parts) for m, parts in out.items()}

    def remove_app(self, app_id: str) -> bool:
        """Delete an application's shuffle files; True if it had any on this node."""
        reply = self._request(RemoveApp(app_id), RemoveReply)
        assert isinstance(reply, RemoveReply)
        if not reply.ok:
            if reply.error_code == BAD_REQUEST:
                raise BadRequest(reply.message)
            raise ShoalError(f"{reply.error_code}: {reply.message}")
        return reply.removed


def parse_address(value: str) -> tuple[str, int]:
    """``host:port`` (as in ``SHOAL_SHUFFLE_SERVICE``) to a tuple."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad shuffle service address {value!r}: expected host:port")
    return host.strip("[]"), int(port)
