"""WebHDFS REST API, namenode side: ``http://MASTER:PORT/webhdfs/v1/<path>?op=...``.

Hadoop's WebHDFS protocol with its JSON shapes, status codes and two-step data
operations, so that Hadoop tools, fsspec's ``webhdfs`` file system and ``curl`` work
unchanged. Metadata operations are answered here, on the master's event loop, through
:meth:`RpcServer.call_local` (the same handlers and edit-log durability as an RPC).
Data operations (OPEN, CREATE, APPEND, GETFILECHECKSUM) answer ``307 Temporary
Redirect`` to a worker's WebHDFS port (:mod:`shoal.dfs.webhdfs_data`), which moves the
bytes as a DFS client, as HDFS's datanodes do; ``noredirect=true`` gets ``200
{"Location": url}`` instead (Hadoop 3).

Security: this is Hadoop's "simple" mode, without authentication. ``user.name`` is taken
at its word and only names the home directory; every file is owned by the cluster
(``shoal``), and anyone who can reach the port can read, write and delete every file.
The server binds to the same host as the RPC server (loopback unless told otherwise);
do not expose it beyond hosts you trust.

Not supported (answered ``400 UnsupportedOperationException``): permissions, owners,
times, xattrs, ACLs, snapshots, symlinks, delegation tokens, CONCAT, TRUNCATE and
SETREPLICATION (the master has no RPC for it yet).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
from aiohttp import web

from shoal.core.rpc import RpcServer
from shoal.core.wire import Method
from shoal.dfs import paths
from shoal.dfs import protocol as p
from shoal.dfs.namespace import ContentSummary, FileStatus
from shoal.errors import (
    AuthenticationError,
    BadRequest,
    BlockMissing,
    ChecksumError,
    ConfigError,
    ConnectionLost,
    DirectoryNotEmpty,
    FileAlreadyExists,
    FileNotFound,
    InvalidPath,
    IsADirectory,
    LeaseExpired,
    LeaseHeld,
    NotADirectory,
    RpcTimeout,
    SafeMode,
    ShoalError,
)

log = logging.getLogger("dfs.webhdfs")

PREFIX = "/webhdfs/v1"
ANONYMOUS_USER = "dr.who"  # Hadoop's user when a request names none
DEFAULT_GROUP = "supergroup"
ROOT_FILE_ID = 16385  # HDFS's root inode id
# Hadoop's UserParam pattern (dfs.webhdfs.user.provider.user.pattern).
USER_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]*[$]?$")
QUERY_CHARS_MAX = 16 * 1024
REPLICATION_PARAM_MAX = 32767  # a Java short, as Hadoop's ReplicationParam
SHUTDOWN_TIMEOUT_S = 5.0

# Ops this server knows by HTTP method; Hadoop's ops shoal does not implement.
NAMENODE_OPS = {
    "GET": ("OPEN", "GETFILESTATUS", "LISTSTATUS", "GETCONTENTSUMMARY", "GETFILECHECKSUM", "GETHOMEDIRECTORY"),
    "PUT": ("CREATE", "MKDIRS", "RENAME"),
    "POST": ("APPEND",),
    "DELETE": ("DELETE",),
}
UNSUPPORTED_OPS = frozenset(
    {
        "SETREPLICATION", "SETOWNER", "SETPERMISSION", "SETTIMES", "CREATESYMLINK", "CONCAT", "TRUNCATE",
        "GETDELEGATIONTOKEN", "RENEWDELEGATIONTOKEN", "CANCELDELEGATIONTOKEN", "GETACLSTATUS", "SETACL",
        "MODIFYACLENTRIES", "REMOVEACLENTRIES", "REMOVEDEFAULTACL", "REMOVEACL", "GETXATTRS", "SETXATTR",
        "REMOVEXATTR", "LISTXATTRS", "CHECKACCESS", "CREATESNAPSHOT", "DELETESNAPSHOT", "RENAMESNAPSHOT",
        "GETFILEBLOCKLOCATIONS", "GET_BLOCK_LOCATIONS", "LISTSTATUS_BATCH", "GETTRASHROOT", "GETSERVERDEFAULTS",
        "GETSTORAGEPOLICY", "SETSTORAGEPOLICY", "UNSETSTORAGEPOLICY", "GETALLSTORAGEPOLICY", "GETQUOTAUSAGE",
        "SETQUOTA", "SETQUOTABYSTORAGETYPE", "UNSETECPOLICY", "SETECPOLICY", "GETECPOLICY", "ALLOWSNAPSHOT",
        "DISALLOWSNAPSHOT", "GETSNAPSHOTDIFF", "GETSNAPSHOTTABLEDIRECTORYLIST", "GETSNAPSHOTLIST",
        "GETSTATUS", "SATISFYSTORAGEPOLICY", "GETLINKTARGET", "GETFILELINKSTATUS",
    }
)

# WebHDFS addresses of the live workers: a mapping node id -> (host, http port), which
# lets OPEN and APPEND redirect to a worker holding the block, or a list of
# (host, http port), matched to replica holders by host.
DatanodeHttpAddresses = Callable[[], "Mapping[str, tuple[str, int]] | Sequence[tuple[str, int]]"]


# --- errors: Hadoop's RemoteException ---------------------------------------------------
class WebHdfsError(Exception):
    """An error answered as ``{"RemoteException": ...}`` with Hadoop's status code."""

    def __init__(self, status: int, exception: str, java_class: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.exception = exception
        self.java_class = java_class
        self.message = message


def illegal_argument(message: str) -> WebHdfsError:
    return WebHdfsError(400, "IllegalArgumentException", "java.lang.IllegalArgumentException", message)


def io_error(message: str) -> WebHdfsError:
    return WebHdfsError(403, "IOException", "java.io.IOException", message)


def file_not_found(message: str) -> WebHdfsError:
    return WebHdfsError(404, "FileNotFoundException", "java.io.FileNotFoundException", message)


# Hadoop's ExceptionHandler: SecurityException 401, FileNotFoundException 404, other
# IOExceptions 403, IllegalArgument/UnsupportedOperation 400, anything else 500. Most
# specific class first.
_ERROR_TABLE: list[tuple[type[ShoalError], int, str]] = [
    (FileNotFound, 404, "java.io.FileNotFoundException"),
    (IsADirectory, 404, "java.io.FileNotFoundException"),  # HDFS: "Path is not a file"
    (FileAlreadyExists, 403, "org.apache.hadoop.fs.FileAlreadyExistsException"),
    (DirectoryNotEmpty, 403, "org.apache.hadoop.fs.PathIsNotEmptyDirectoryException"),
    (NotADirectory, 403, "org.apache.hadoop.fs.ParentNotDirectoryException"),
    (LeaseHeld, 403, "org.apache.hadoop.hdfs.protocol.AlreadyBeingCreatedException"),
    (LeaseExpired, 403, "org.apache.hadoop.hdfs.server.namenode.LeaseExpiredException"),
    (SafeMode, 403, "org.apache.hadoop.hdfs.server.namenode.SafeModeException"),
    (ChecksumError, 403, "org.apache.hadoop.fs.ChecksumException"),
    (BlockMissing, 403, "org.apache.hadoop.hdfs.BlockMissingException"),
    (RpcTimeout, 403, "java.net.SocketTimeoutException"),
    (ConnectionLost, 403, "java.net.ConnectException"),
    (AuthenticationError, 401, "java.lang.SecurityException"),
    (InvalidPath, 400, "org.apache.hadoop.fs.InvalidPathException"),
    (BadRequest, 400, "java.lang.IllegalArgumentException"),
    (ConfigError, 400, "java.lang.IllegalArgumentException"),
    (ShoalError, 403, "java.io.IOException"),
]


def to_webhdfs_error(exc: BaseException) -> WebHdfsError:
    """Map any error to the RemoteException Hadoop would send for it."""
    if isinstance(exc, WebHdfsError):
        return exc
    for cls, status, java_class in _ERROR_TABLE:
        if isinstance(exc, cls):
            return WebHdfsError(status, java_class.rsplit(".", 1)[1], java_class, str(exc) or type(exc).__name__)
    return WebHdfsError(500, "RuntimeException", "java.lang.RuntimeException", f"{type(exc).__name__}: {exc}")


def error_response(err: WebHdfsError) -> web.Response:
    body = {"RemoteException": {"exception": err.exception, "javaClassName": err.java_class, "message": err.message}}
    return web.json_response(body, status=err.status)


@web.middleware
async def remote_exceptions(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Every failure becomes a RemoteException (a bug: 500 and a logged traceback)."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except (WebHdfsError, ShoalError) as exc:
        return error_response(to_webhdfs_error(exc))
    except Exception as exc:
        log.exception("WebHDFS %s %s failed", request.method, request.path_qs)
        return error_response(to_webhdfs_error(exc))


# --- requests: path and parameters ------------------------------------------------------
class Params:
    """The query string with Hadoop's rules: names case-insensitive, typed values."""

    def __init__(self, request: web.Request) -> None:
        if len(request.query_string) > QUERY_CHARS_MAX:
            raise illegal_argument(f"query string of {len(request.query_string)} characters is over {QUERY_CHARS_MAX}")
        self.values: dict[str, str] = {k.lower(): v for k, v in request.query.items()}

    def op(self, method: str, known: Mapping[str, Sequence[str]]) -> str:
        raw = self.values.get("op")
        if not raw:
            raise illegal_argument('Invalid value for webhdfs parameter "op": no op given')
        op = raw.upper()
        if op in known.get(method, ()):
            return op
        if op in UNSUPPORTED_OPS:
            raise WebHdfsError(
                400, "UnsupportedOperationException", "java.lang.UnsupportedOperationException",
                f"op={op} is not supported by shoal's WebHDFS",
            )
        allowed = ", ".join(known.get(method, ())) or "none"
        raise illegal_argument(f'Invalid value for webhdfs parameter "op": {op} is not a {method} operation '
                               f"(allowed: {allowed})")

    def text(self, name: str) -> str | None:
        value = self.values.get(name)
        return value if value not in (None, "", "null") else None

    def boolean(self, name: str, default: bool) -> bool:
        value = self.text(name)
        if value is None:
            return default
        if value.lower() not in ("true", "false"):
            raise _invalid(name, f'Failed to parse "{value[:64]}" to Boolean.')
        return value.lower() == "true"

    def integer(self, name: str, low: int, high: int = 2**63 - 1) -> int | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            number = int(value, 10)
        except ValueError:
            raise _invalid(name, f'"{value[:64]}" is not an integer') from None
        if not low <= number <= high:
            raise _invalid(name, f"{number} is not in {low}..{high}")
        return number

    def user(self) -> str:
        user = self.text("user.name") or ANONYMOUS_USER
        if not USER_NAME_RE.match(user) or len(user) > 255:
            raise illegal_argument(f'Invalid value for webhdfs parameter "user.name": "{user[:64]}"')
        return user

    def passthrough(self, *names: str) -> dict[str, str]:
        """The named parameters that were given, for a redirect URL."""
        return {n: self.values[n] for n in names if self.text(n) is not None}


def _invalid(name: str, why: str) -> WebHdfsError:
    return illegal_argument(f'Invalid value for webhdfs parameter "{name}": {why}')


def request_path(request: web.Request) -> str:
    """The DFS path of a ``/webhdfs/v1/<path>`` request, normalised (``InvalidPath`` -> 400)."""
    raw = request.match_info.get("path", "")
    return paths.normalize("/" + raw)


def data_url(address: tuple[str, int], path: str, params: Mapping[str, str]) -> str:
    host, port = address
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}{PREFIX}{quote(path, safe='/')}?{urlencode(params)}"


async def _no_continue(request: web.Request) -> None:
    """Never invite a body: the namenode answers before reading one (Jetty sends
    ``100 Continue`` only when a servlet reads), so ``curl -T`` sees the redirect
    before it uploads anything."""
    return None


def add_routes(
    app: web.Application, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], *, reads_body: bool
) -> None:
    expect = None if reads_body else _no_continue
    app.router.add_route("*", PREFIX, handler, expect_handler=expect)
    app.router.add_route("*", PREFIX + "/{path:.*}", handler, expect_handler=expect)


async def start_app(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0: any free port); returns the runner and the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    assert runner.addresses, "the WebHDFS site did not bind"
    return runner, runner.addresses[0][1]


# --- JSON shapes ------------------------------------------------------------------------
def file_id(path: str) -> int:
    """A stable id for ``fileId``: shoal has no inode numbers, so this derives from the
    path (HDFS's ids survive a rename; these change with it). JavaScript-safe."""
    if path == paths.ROOT:
        return ROOT_FILE_ID
    digest = hashlib.blake2b(path.encode(), digest_size=8).digest()
    return ROOT_FILE_ID + 1 + int.from_bytes(digest, "big") % (2**53 - ROOT_FILE_ID - 1)


def file_status_json(status: FileStatus, path_suffix: str) -> dict[str, Any]:
    """Hadoop's ``FileStatus`` object (times in milliseconds)."""
    is_dir = status.kind == "directory"
    return {
        "accessTime": 0 if is_dir else int(status.atime * 1000),
        "blockSize": 0 if is_dir else status.block_size,
        "childrenNum": status.children if is_dir else 0,
        "fileId": file_id(status.path),
        "group": DEFAULT_GROUP,
        "length": 0 if is_dir else status.length,
        "modificationTime": int(status.mtime * 1000),
        "owner": status.owner,
        "pathSuffix": path_suffix,
        "permission": status.permission,
        "replication": 0 if is_dir else status.replication,
        "storagePolicy": 0,
        "type": "DIRECTORY" if is_dir else "FILE",
    }


def content_summary_json(summary: ContentSummary) -> dict[str, Any]:
    return {
        "ContentSummary": {
            "directoryCount": summary.directory_count,
            "fileCount": summary.file_count,
            "length": summary.length,
            "quota": -1,
            "spaceConsumed": summary.space_consumed,
            "spaceQuota": -1,
            "typeQuota": {},
        }
    }


def boolean_json(value: bool) -> web.Response:
    return web.json_response({"boolean": value})


# --- the namenode handler ---------------------------------------------------------------
class NamenodeWebHdfs:
    """Answers ``/webhdfs/v1`` on the master: metadata here, data by redirect."""

    def __init__(
        self,
        server: RpcServer,
        datanodes: DatanodeHttpAddresses,
        rpc_address: tuple[str, int] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.server = server
        self.datanodes = datanodes
        self.rpc_address = rpc_address
        self.rng = rng or random.Random()
        self.ops: dict[str, Callable[[str, Params, web.Request], Awaitable[web.StreamResponse]]] = {
            "OPEN": self.open,
            "GETFILESTATUS": self.get_file_status,
            "LISTSTATUS": self.list_status,
            "GETCONTENTSUMMARY": self.get_content_summary,
            "GETFILECHECKSUM": self.get_file_checksum,
            "GETHOMEDIRECTORY": self.get_home_directory,
            "CREATE": self.create,
            "MKDIRS": self.mkdirs,
            "RENAME": self.rename,
            "APPEND": self.append,
            "DELETE": self.delete,
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        params = Params(request)
        op = params.op(request.method, NAMENODE_OPS)
        params.user()  # validated as Hadoop does, even where unused
        return await self.ops[op](request_path(request), params, request)

    async def _call(self, method: Method, body: msgspec.Struct) -> Any:
        return await self.server.call_local(method, body)

    # --- metadata ----------------------------------------------------------------------
    async def get_file_status(self, path: str, params: Params, request: web.Request) -> web.Response:
        status = await self._call(p.STAT, p.PathReq(path))
        return web.json_response({"FileStatus": file_status_json(status, "")})

    async def list_status(self, path: str, params: Params, request: web.Request) -> web.Response:
        listing = await self._call(p.LIST, p.PathReq(path))
        # A file lists as itself with an empty suffix, as in HDFS.
        entries = [file_status_json(e, "" if e.path == path else paths.basename(e.path)) for e in listing.entries]
        return web.json_response({"FileStatuses": {"FileStatus": entries}})

    async def get_content_summary(self, path: str, params: Params, request: web.Request) -> web.Response:
        return web.json_response(content_summary_json(await self._call(p.CONTENT_SUMMARY, p.PathReq(path))))

    async def get_home_directory(self, path: str, params: Params, request: web.Request) -> web.Response:
        return web.json_response({"Path": f"/user/{params.user()}"})

    async def mkdirs(self, path: str, params: Params, request: web.Request) -> web.Response:
        params.text("permission")  # accepted and ignored: shoal has no permissions yet
        try:
            await self._call(p.MKDIRS, p.MkdirsReq(path, True))
        except FileAlreadyExists as exc:  # a file is in the way
            raise WebHdfsError(
                403, "FileAlreadyExistsException", "org.apache.hadoop.fs.FileAlreadyExistsException",
                f"Path is not a directory: {path} ({exc})",
            ) from None
        return boolean_json(True)

    async def rename(self, path: str, params: Params, request: web.Request) -> web.Response:
        destination = params.text("destination")
        if destination is None:
            raise illegal_argument("Required param destination for op: RENAME is null or empty")
        destination = paths.normalize(destination)
        try:
            await self._call(p.RENAME, p.RenameReq(path, destination))
        except (FileNotFound, FileAlreadyExists, NotADirectory) as exc:
            # HDFS's rename(src, dst) answers false for a missing source, an existing
            # target or a missing target parent, rather than an exception.
            log.info("WebHDFS RENAME %s -> %s: false (%s)", path, destination, exc)
            return boolean_json(False)
        return boolean_json(True)

    async def delete(self, path: str, params: Params, request: web.Request) -> web.Response:
        recursive = params.boolean("recursive", False)
        if path == paths.ROOT:
            return boolean_json(False)  # HDFS refuses to delete the root with false
        try:
            await self._call(p.DELETE, p.DeleteReq(path, recursive))
        except FileNotFound:
            return boolean_json(False)
        return boolean_json(True)

    # --- data: redirect to a worker ------------------------------------------------------
    async def open(self, path: str, params: Params, request: web.Request) -> web.Response:
        offset = params.integer("offset", 0) or 0
        params.integer("length", 0)
        params.integer("buffersize", 1, 2**31 - 1)
        located = await self._locate_file(path)
        # HDFS: a worker holding the block where the read starts, else any live one.
        block = next((b for b in reversed(located.blocks) if b.block.offset <= offset), None)
        target = self._choose(block.locations if block is not None else [])
        return self._redirect(
            params, target, path, "OPEN", {"offset": str(offset), **params.passthrough("length", "buffersize")}
        )

    async def get_file_checksum(self, path: str, params: Params, request: web.Request) -> web.Response:
        located = await self._locate_file(path)
        target = self._choose(located.blocks[0].locations if located.blocks else [])
        return self._redirect(params, target, path, "GETFILECHECKSUM", {})

    async def create(self, path: str, params: Params, request: web.Request) -> web.Response:
        # Validated here as Hadoop's namenode does; the file is created by the worker in
        # step 2, when the body arrives (a client sends no body in step 1).
        overwrite = params.boolean("overwrite", False)
        params.integer("replication", 1, REPLICATION_PARAM_MAX)
        params.integer("blocksize", 1)
        params.integer("buffersize", 1, 2**31 - 1)
        extra = {"overwrite": "true" if overwrite else "false"}
        extra.update(params.passthrough("replication", "blocksize", "permission", "buffersize"))
        return self._redirect(params, self._choose([]), path, "CREATE", extra)

    async def append(self, path: str, params: Params, request: web.Request) -> web.Response:
        params.integer("buffersize", 1, 2**31 - 1)
        located = await self._locate_file(path)
        # A worker holding the last block continues its replica locally.
        target = self._choose(located.blocks[-1].locations if located.blocks else [])
        return self._redirect(params, target, path, "APPEND", params.passthrough("buffersize"))

    async def _locate_file(self, path: str) -> p.LocatedBlocks:
        try:
            return await self._call(p.GET_BLOCK_LOCATIONS, p.GetBlockLocationsReq(path))
        except IsADirectory:
            raise file_not_found(f"Path is not a file: {path}") from None

    def _choose(self, holders: Sequence[p.DatanodeInfo]) -> tuple[str, int]:
        """The WebHDFS address of the first holder serving it, else a random live worker."""
        known = self.datanodes()
        if isinstance(known, Mapping):
            for node in holders:
                if node.node_id in known:
                    return known[node.node_id]
            candidates = list(known.values())
        else:
            candidates = list(known)
            hosts = {node.host for node in holders}
            local = [a for a in candidates if a[0] in hosts]
            candidates = local or candidates
        if not candidates:
            raise io_error("Failed to find datanode, suggest to check cluster health: no live worker serves WebHDFS")
        return self.rng.choice(candidates)

    def _redirect(
        self, params: Params, target: tuple[str, int], path: str, op: str, extra: Mapping[str, str]
    ) -> web.Response:
        query = {"op": op, **params.passthrough("user.name", "doas")}
        if self.rpc_address is not None:
            query["namenoderpcaddress"] = f"{self.rpc_address[0]}:{self.rpc_address[1]}"
        query.update(extra)
        url = data_url(target, path, query)
        if params.boolean("noredirect", False):
            return web.json_response({"Location": url})
        return web.Response(status=307, headers={"Location": url, "Content-Type": "application/octet-stream"})


async def start_namenode_http(
    server: RpcServer,
    host: str,
    port: int,
    datanodes: DatanodeHttpAddresses,
    *,
    rpc_address: tuple[str, int] | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve WebHDFS for the master's namespace on ``host:port`` (0: any free port).

    ``datanodes()`` names the live workers' WebHDFS addresses (see
    :data:`DatanodeHttpAddresses`); ``rpc_address`` is passed to workers in redirects as
    Hadoop's ``namenoderpcaddress``. Returns the runner (``await runner.cleanup()`` to
    stop) and the bound port. Runs on the caller's event loop: the master's.
    """
    api = NamenodeWebHdfs(server, datanodes, rpc_address)
    app = web.Application(middlewares=[remote_exceptions])
    add_routes(app, api.handle, reads_body=False)
    return await start_app(app, host, port)
