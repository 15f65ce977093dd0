"""The WebHDFS REST API of real daemons, driven by clients shoal does not contain:
fsspec's ``webhdfs`` file system and raw HTTP (``requests``), checked against the
native client's view of the same cluster.

The daemons publish their HTTP ports in ``address.json`` (key ``http_port``): the
master's in ``DIR/master``, each worker's in ``DIR/workers/wN``.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import crc32c
import pytest
import requests
from fsspec.implementations.webhdfs import WebHDFS

MiB = 1024 * 1024
BLOCK = MiB  # dfs.block_size of the fixture cluster
USER = "test"
FILE_STATUS_KEYS = {
    "accessTime", "blockSize", "childrenNum", "fileId", "group", "length", "modificationTime",
    "owner", "pathSuffix", "permission", "replication", "type",
}


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def http_port(address_file: Path) -> int:
    data = json.loads(address_file.read_text())
    assert "http_port" in data, (
        f"{address_file} has no 'http_port': the daemon does not start its WebHDFS server "
        "(see shoal.dfs.webhdfs / shoal.dfs.webhdfs_data for the wiring)"
    )
    return int(data["http_port"])


class Endpoints:
    """The cluster's WebHDFS addresses, read from its folder."""

    def __init__(self, folder: Path) -> None:
        self.host = json.loads((folder / "master" / "address.json").read_text())["host"]
        self.port = http_port(folder / "master" / "address.json")
        self.base = f"http://{self.host}:{self.port}/webhdfs/v1"
        self.workers: dict[str, int] = {}  # node id -> http port
        for wdir in sorted((folder / "workers").iterdir()):
            node_id = json.loads((wdir / "address.json").read_text())["node_id"]
            self.workers[node_id] = http_port(wdir / "address.json")

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def ep(cluster) -> Endpoints:
    return Endpoints(cluster.folder)


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="module")
def whfs(ep) -> WebHDFS:
    return WebHDFS(ep.host, port=ep.port, user=USER, skip_instance_cache=True)


def call(http: requests.Session, method: str, ep: Endpoints, path: str, op: str, **params) -> requests.Response:
    """One namenode request, redirects not followed."""
    params = {"op": op, "user.name": USER, **params}
    return http.request(method, ep.url(path), params=params, allow_redirects=False, timeout=60)


def remote_exception(resp: requests.Response, status: int, exception: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()["RemoteException"]
    assert set(body) == {"exception", "javaClassName", "message"}
    assert body["exception"] == exception
    assert body["javaClassName"].endswith("." + exception)
    assert body["message"]
    return body


def md5_md5_crc32c(data: bytes, block_size: int, bytes_per_checksum: int) -> str:
    """HDFS's MD5MD5CRC32C file checksum computed from the bytes alone."""
    blocks = [data[i : i + block_size] for i in range(0, len(data), block_size)]
    file_md5 = hashlib.md5()
    for block in blocks:
        crcs = b"".join(
            struct.pack(">I", crc32c.crc32c(block[i : i + bytes_per_checksum]))
            for i in range(0, len(block), bytes_per_checksum)
        )
        file_md5.update(hashlib.md5(crcs).digest())
    crc_per_block = -(-len(blocks[0]) // bytes_per_checksum) if len(blocks) > 1 else 0
    return (struct.pack(">iq", bytes_per_checksum, crc_per_block) + file_md5.digest()).hex()


# --- through fsspec's WebHDFS client -----------------------------------------------------
def test_put_then_native_and_webhdfs_views_agree(cluster, whfs, tmp_path):
    data = payload(5 * MiB + 12345, seed=1)  # 6 blocks; fsspec uploads CREATE + 2 APPENDs
    local = tmp_path / "data.bin"
    local.write_bytes(data)
    whfs.put(str(local), "/wh/put/data.bin")

    assert cluster.fs.cat("/wh/put/data.bin") == data
    native = cluster.fs.stat("/wh/put/data.bin")
    info = whfs.info("/wh/put/data.bin")
    assert info["type"] == "file" and info["size"] == len(data) == native.length
    assert info["replication"] == native.replication == 3
    assert info["blockSize"] == native.block_size == BLOCK
    assert info["modificationTime"] == int(native.mtime * 1000)
    assert whfs.ls("/wh/put") == cluster.fs.ls("/wh/put") == ["/wh/put/data.bin"]
    [entry] = whfs.ls("/wh/put", detail=True)
    assert entry["size"] == len(data) and entry["pathSuffix"] == "data.bin"
    assert whfs.cat_file("/wh/put/data.bin") == data


@pytest.mark.parametrize(
    "start, end",
    [(0, 10), (BLOCK - 100, BLOCK + 100), (3 * BLOCK + 7, 5 * BLOCK + 9), (5 * MiB, 5 * MiB + 12345), (1, None)],
)
def test_ranged_reads_match_the_native_reader(cluster, whfs, start, end):
    path = "/wh/ranged.bin"
    if not cluster.fs.exists(path):
        cluster.fs.put(io.BytesIO(payload(5 * MiB + 12345, seed=2)), path)
    with cluster.fs.open(path, "rb") as f:
        f.seek(start)
        expected = f.read((end if end is not None else 2**40) - start)
    assert whfs.cat_file(path, start=start, end=end) == expected


def test_mkdir_mv_rm_through_fsspec(cluster, whfs):
    whfs.mkdir("/wh/tree/a/b")
    assert cluster.fs.stat("/wh/tree/a/b").kind == "directory"
    whfs.pipe_file("/wh/tree/a/b/x.txt", b"hello webhdfs")
    assert cluster.fs.cat("/wh/tree/a/b/x.txt") == b"hello webhdfs"

    whfs.mv("/wh/tree/a", "/wh/tree/moved")
    assert not cluster.fs.exists("/wh/tree/a")
    assert cluster.fs.cat("/wh/tree/moved/b/x.txt") == b"hello webhdfs"
    assert whfs.ls("/wh/tree") == cluster.fs.ls("/wh/tree") == ["/wh/tree/moved"]
    assert whfs.content_summary("/wh/tree") == {
        "directoryCount": 3, "fileCount": 1, "length": 13, "quota": -1,
        "spaceConsumed": 13 * 3, "spaceQuota": -1, "typeQuota": {},
    }

    whfs.rm("/wh/tree/moved", recursive=True)
    assert not cluster.fs.exists("/wh/tree/moved")
    assert whfs.ls("/wh/tree") == []
    with pytest.raises(FileNotFoundError):
        whfs.info("/wh/tree/moved")


def test_odd_names_round_trip(cluster, whfs):
    path = "/wh/odd name/ü 100%+#?.txt"
    whfs.pipe_file(path, b"odd")
    assert cluster.fs.cat(path) == b"odd"
    assert whfs.cat_file(path) == b"odd"
    assert whfs.ls("/wh/odd name") == ["/wh/odd name/ü 100%+#?.txt"]


def test_file_checksum_is_md5_of_md5_of_crc32c(cluster, whfs, http, ep):
    data = payload(2 * MiB + 777, seed=3)
    cluster.fs.put(io.BytesIO(data), "/wh/sum1.bin")
    cluster.fs.put(io.BytesIO(data), "/wh/sum2.bin")
    bpc = cluster.fs.config.dfs.bytes_per_checksum
    first = whfs.ukey("/wh/sum1.bin")
    assert first == {
        "algorithm": f"MD5-of-{BLOCK // bpc}MD5-of-{bpc}CRC32C",
        "bytes": md5_md5_crc32c(data, BLOCK, bpc),
        "length": 28,
    }
    assert whfs.ukey("/wh/sum2.bin") == first
    resp = call(http, "GET", ep, "/wh/sum1.bin", "GETFILECHECKSUM")
    assert resp.status_code == 307
    assert urlsplit(resp.headers["Location"]).port in ep.workers.values()


# --- raw HTTP: the protocol itself --------------------------------------------------------
def test_create_is_two_steps_through_a_worker(cluster, http, ep):
    path = "/wh/raw/created.bin"
    step1 = call(http, "PUT", ep, path, "CREATE", overwrite="false", replication="2", blocksize=str(512 * 1024))
    assert step1.status_code == 307 and step1.content == b""
    location = urlsplit(step1.headers["Location"])
    assert location.port in ep.workers.values()
    assert location.path == "/webhdfs/v1" + path
    query = parse_qs(location.query)
    assert query["op"] == ["CREATE"] and query["overwrite"] == ["false"]
    assert query["replication"] == ["2"] and query["blocksize"] == [str(512 * 1024)]
    assert query["user.name"] == [USER]
    assert not cluster.fs.exists(path)  # nothing is created before the data arrives

    data = payload(1_300_000, seed=4)
    step2 = http.put(step1.headers["Location"], data=data, timeout=60)
    assert step2.status_code == 201, step2.text
    assert step2.content == b""
    assert step2.headers["Location"].startswith("webhdfs://") and step2.headers["Location"].endswith(path)
    status = cluster.fs.stat(path)
    assert (status.length, status.replication, status.block_size) == (len(data), 2, 512 * 1024)
    assert cluster.fs.cat(path) == data

    # No overwrite: the worker refuses in step 2, as HDFS.
    again = call(http, "PUT", ep, path, "CREATE")
    refused = http.put(again.headers["Location"], data=b"other", timeout=60)
    remote_exception(refused, 403, "FileAlreadyExistsException")
    assert cluster.fs.cat(path) == data
    # Overwrite: replaced.
    again = call(http, "PUT", ep, path, "CREATE", overwrite="true")
    assert http.put(again.headers["Location"], data=b"other", timeout=60).status_code == 201
    assert cluster.fs.cat(path) == b"other"


def test_create_with_noredirect_answers_the_location(http, ep):
    resp = call(http, "PUT", ep, "/wh/raw/noredirect.txt", "CREATE", noredirect="true")
    assert resp.status_code == 200
    location = resp.json()["Location"]
    assert urlsplit(location).port in ep.workers.values()
    assert http.put(location, data=b"via noredirect", timeout=60).status_code == 201


def test_open_redirects_to_a_holder_of_the_block_read(cluster, http, ep):
    path = "/wh/raw/open.bin"
    data = payload(3 * BLOCK + 5, seed=5)
    cluster.fs.put(io.BytesIO(data), path)
    blocks = cluster.fs.blocks(path).blocks
    for index, offset in [(0, 0), (1, BLOCK + 10), (3, 3 * BLOCK)]:
        holders = {ep.workers[loc.node_id] for loc in blocks[index].locations}
        resp = call(http, "GET", ep, path, "OPEN", offset=str(offset), length="1000")
        assert resp.status_code == 307
        location = urlsplit(resp.headers["Location"])
        assert location.port in holders, (index, location, holders)
        query = parse_qs(location.query)
        assert query["op"] == ["OPEN"] and query["offset"] == [str(offset)] and query["length"] == ["1000"]
        body = http.get(resp.headers["Location"], timeout=60)
        assert body.status_code == 200
        assert body.headers["Content-Type"] == "application/octet-stream"
        assert body.content == data[offset : offset + 1000]

    # Followed redirects: the whole file, the tail, an empty range at the end.
    assert http.get(ep.url(path), params={"op": "OPEN"}, timeout=60).content == data
    tail = http.get(ep.url(path), params={"op": "OPEN", "offset": str(len(data) - 3)}, timeout=60)
    assert tail.content == data[-3:] and tail.headers["Content-Length"] == "3"
    assert http.get(ep.url(path), params={"op": "OPEN", "offset": str(len(data))}, timeout=60).content == b""
    past = http.get(ep.url(path), params={"op": "OPEN", "offset": str(len(data) + 1)}, timeout=60)
    remote_exception(past, 403, "EOFException")

    resp = call(http, "GET", ep, path, "OPEN", noredirect="true")
    assert resp.status_code == 200 and urlsplit(resp.json()["Location"]).port in ep.workers.values()


def test_append_streams_a_chunked_body(cluster, http, ep):
    path = "/wh/raw/appended.bin"
    head = payload(700_000, seed=6)
    cluster.fs.put(io.BytesIO(head), path)
    parts = [payload(300_000, seed=s) for s in range(7, 12)]

    def body() -> Iterator[bytes]:  # no length: chunked transfer encoding
        yield from parts

    step1 = call(http, "POST", ep, path, "APPEND")
    assert step1.status_code == 307 and parse_qs(urlsplit(step1.headers["Location"]).query)["op"] == ["APPEND"]
    step2 = http.post(step1.headers["Location"], data=body(), timeout=60)
    assert step2.status_code == 200, step2.text
    assert cluster.fs.cat(path) == head + b"".join(parts)

    remote_exception(call(http, "POST", ep, "/wh/raw/missing.bin", "APPEND"), 404, "FileNotFoundException")
    assert not cluster.fs.exists("/wh/raw/missing.bin")


def test_json_shapes_of_metadata_ops(cluster, http, ep):
    cluster.fs.mkdirs("/wh/shapes/sub")
    cluster.fs.put(io.BytesIO(b"x" * 1234), "/wh/shapes/f.txt", replication=2)

    st = call(http, "GET", ep, "/wh/shapes/f.txt", "GETFILESTATUS")
    assert st.status_code == 200 and st.headers["Content-Type"].startswith("application/json")
    status = st.json()["FileStatus"]
    assert FILE_STATUS_KEYS <= set(status)
    native = cluster.fs.stat("/wh/shapes/f.txt")
    assert status["type"] == "FILE" and status["pathSuffix"] == ""
    assert (status["length"], status["replication"], status["blockSize"]) == (1234, 2, BLOCK)
    assert status["modificationTime"] == int(native.mtime * 1000)
    assert status["owner"] == native.owner and status["permission"] == native.permission
    assert isinstance(status["fileId"], int) and status["childrenNum"] == 0

    listing = call(http, "GET", ep, "/wh/shapes", "LISTSTATUS").json()["FileStatuses"]["FileStatus"]
    assert [(e["pathSuffix"], e["type"]) for e in listing] == [("f.txt", "FILE"), ("sub", "DIRECTORY")]
    assert [e["pathSuffix"] for e in listing] == [e.path.rsplit("/", 1)[1] for e in cluster.fs.listdir("/wh/shapes")]
    directory = call(http, "GET", ep, "/wh/shapes", "GETFILESTATUS").json()["FileStatus"]
    assert directory["type"] == "DIRECTORY" and directory["childrenNum"] == 2 and directory["length"] == 0
    [itself] = call(http, "GET", ep, "/wh/shapes/f.txt", "LISTSTATUS").json()["FileStatuses"]["FileStatus"]
    assert itself["pathSuffix"] == "" and itself["type"] == "FILE"

    summary = call(http, "GET", ep, "/wh/shapes", "GETCONTENTSUMMARY").json()["ContentSummary"]
    du = cluster.fs.du("/wh/shapes")
    assert summary == {
        "directoryCount": du.directory_count, "fileCount": du.file_count, "length": du.length,
        "quota": -1, "spaceConsumed": du.space_consumed, "spaceQuota": -1, "typeQuota": {},
    }
    assert summary["spaceConsumed"] == 1234 * 2

    assert call(http, "GET", ep, "/", "GETHOMEDIRECTORY").json() == {"Path": f"/user/{USER}"}
    anonymous = http.get(ep.url("/"), params={"op": "GETHOMEDIRECTORY"}, timeout=60).json()
    assert anonymous == {"Path": "/user/dr.who"}

    assert call(http, "PUT", ep, "/wh/shapes/new/deep", "MKDIRS").json() == {"boolean": True}
    assert call(http, "PUT", ep, "/wh/shapes/new/deep", "MKDIRS").json() == {"boolean": True}  # exists: fine
    assert cluster.fs.stat("/wh/shapes/new/deep").kind == "directory"
    renamed = call(http, "PUT", ep, "/wh/shapes/new", "RENAME", destination="/wh/shapes/renamed")
    assert renamed.json() == {"boolean": True}
    assert cluster.fs.exists("/wh/shapes/renamed/deep") and not cluster.fs.exists("/wh/shapes/new")
    # HDFS's rename answers false for a missing source or an existing target.
    assert call(http, "PUT", ep, "/wh/shapes/nope", "RENAME", destination="/wh/shapes/x").json() == {"boolean": False}
    cluster.fs.put(io.BytesIO(b"g"), "/wh/shapes/g.txt")
    assert call(http, "PUT", ep, "/wh/shapes/f.txt", "RENAME", destination="/wh/shapes/g.txt").json() == {
        "boolean": False
    }
    assert cluster.fs.cat("/wh/shapes/g.txt") == b"g"
    invalid = call(http, "PUT", ep, "/wh/shapes/f.txt", "RENAME", destination="/wh/shapes/renamed/../f.txt")
    remote_exception(invalid, 400, "InvalidPathException")

    assert call(http, "DELETE", ep, "/wh/shapes/renamed", "DELETE", recursive="true").json() == {"boolean": True}
    assert not cluster.fs.exists("/wh/shapes/renamed")


def test_errors_are_remote_exceptions(cluster, http, ep):
    cluster.fs.mkdirs("/wh/errors/full/inner")
    cluster.fs.put(io.BytesIO(b"data"), "/wh/errors/file")

    for op in ("GETFILESTATUS", "LISTSTATUS", "GETCONTENTSUMMARY", "OPEN", "GETFILECHECKSUM"):
        remote_exception(call(http, "GET", ep, "/wh/errors/missing", op), 404, "FileNotFoundException")
    remote_exception(call(http, "GET", ep, "/wh/errors/full", "OPEN"), 404, "FileNotFoundException")

    missing = call(http, "DELETE", ep, "/wh/errors/missing", "DELETE")
    assert missing.status_code == 200 and missing.json() == {"boolean": False}
    not_empty = call(http, "DELETE", ep, "/wh/errors/full", "DELETE", recursive="false")
    remote_exception(not_empty, 403, "PathIsNotEmptyDirectoryException")
    assert cluster.fs.exists("/wh/errors/full/inner")
    remote_exception(call(http, "PUT", ep, "/wh/errors/file", "MKDIRS"), 403, "FileAlreadyExistsException")

    remote_exception(call(http, "GET", ep, "/wh/errors", "NOSUCHOP"), 400, "IllegalArgumentException")
    remote_exception(call(http, "GET", ep, "/wh/errors", "MKDIRS"), 400, "IllegalArgumentException")
    remote_exception(call(http, "PUT", ep, "/wh/errors/file", "SETOWNER", owner="x"), 400,
                     "UnsupportedOperationException")
    remote_exception(call(http, "GET", ep, "/wh/errors/file", "OPEN", offset="-1"), 400, "IllegalArgumentException")
    remote_exception(call(http, "PUT", ep, "/wh/errors/x", "CREATE", overwrite="maybe"), 400,
                     "IllegalArgumentException")
    remote_exception(call(http, "PUT", ep, "/wh/errors/x", "RENAME"), 400, "IllegalArgumentException")
    assert call(http, "GET", ep, "/wh/errors", "OPEN", **{"user.name": "bad user!"}).status_code == 400


def test_unreadable_file_is_an_error_not_a_short_body(cluster, http, ep):
    path = "/wh/errors/lost.bin"
    cluster.fs.put(io.BytesIO(payload(BLOCK + 10, seed=13)), path, replication=1)
    first = cluster.fs.blocks(path).blocks[0].block.block_id
    [replica] = list((cluster.folder / "workers").glob(f"*/data/current/finalized/**/blk_{first}"))
    replica.unlink()  # the only copy of the first block is gone
    lost = http.get(ep.url(path), params={"op": "OPEN"}, timeout=60)
    remote_exception(lost, 403, "BlockMissingException")
    cluster.fs.delete(path)
