"""The fsspec file system (``shoal://`` URLs) on a real 4-worker cluster, driven through
fsspec itself, pandas, pyarrow and dask: what they write is what they read back."""

from __future__ import annotations

import datetime as dt
import pickle
import random
from collections.abc import Iterator

import dask
import dask.dataframe as dd
import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from shoal.dfs.fsspec import ShoalFileSystem
from shoal.errors import ClusterNotFound, DirectoryNotEmpty

MiB = 1024 * 1024
BLOCK = MiB  # dfs.block_size of the fixture cluster


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture(scope="module")
def opts(cluster) -> dict[str, str]:
    return {"cluster": str(cluster.folder)}


@pytest.fixture(scope="module")
def fs(opts) -> ShoalFileSystem:
    return ShoalFileSystem(**opts)


@pytest.fixture
def env_cluster(cluster, monkeypatch) -> Iterator[None]:
    """``SHOAL_CLUSTER`` names the cluster; no storage options anywhere."""
    monkeypatch.setenv("SHOAL_CLUSTER", str(cluster.folder))
    ShoalFileSystem.clear_instance_cache()
    yield
    ShoalFileSystem.clear_instance_cache()


# --- paths and registration ----------------------------------------------------------------
@pytest.mark.parametrize(
    "url, path",
    [
        ("shoal:///data/x.csv", "/data/x.csv"),
        ("shoal://data/x.csv", "/data/x.csv"),
        ("/data/x.csv", "/data/x.csv"),
        ("data/x.csv", "/data/x.csv"),
        ("shoal:///data/dir/", "/data/dir"),
        ("shoal://", "/"),
        ("shoal:///", "/"),
    ],
)
def test_strip_protocol(url, path):
    assert ShoalFileSystem._strip_protocol(url) == path


def test_registered_through_entry_point(fs, opts):
    assert fsspec.get_filesystem_class("shoal") is ShoalFileSystem
    assert fsspec.filesystem("shoal", **opts) is fsspec.filesystem("shoal", **opts)  # cached per options
    assert fsspec.filesystem("shoal", **opts).client is fs.client  # one DFSClient per cluster
    assert fs.unstrip_protocol("/data/x.csv") == "shoal:///data/x.csv"
    assert pickle.loads(pickle.dumps(fs)) is fs


def test_found_through_shoal_cluster(env_cluster):
    with fsspec.open("shoal://env/hello.txt", "w") as f:
        f.write("hello from $SHOAL_CLUSTER\n")
    fs = fsspec.filesystem("shoal")
    assert fs.cat_file("/env/hello.txt") == b"hello from $SHOAL_CLUSTER\n"
    df = pd.DataFrame({"a": [1, 2, 3]})
    df.to_csv("shoal:///env/df.csv", index=False)
    pd.testing.assert_frame_equal(pd.read_csv("shoal://env/df.csv"), df)


def test_no_cluster_is_an_error(monkeypatch):
    monkeypatch.delenv("SHOAL_CLUSTER", raising=False)
    ShoalFileSystem.clear_instance_cache()
    try:
        with pytest.raises(ClusterNotFound):
            fsspec.filesystem("shoal")
    finally:
        ShoalFileSystem.clear_instance_cache()


# --- fsspec.open ---------------------------------------------------------------------------
def test_fsspec_open_write_then_read(fs, opts):
    data = b"id,name\n" + b"".join(b"%d,row-%d\n" % (i, i) for i in range(50_000))
    with fsspec.open("shoal://data/x.csv", "wb", **opts) as f:
        f.write(data)
    with fsspec.open("shoal://data/x.csv", "rb", **opts) as f:
        assert f.size == len(data)
        assert f.read() == data
    with fsspec.open("shoal:///data/x.csv", "rt", **opts) as f:
        assert f.readline() == "id,name\n"
    assert fs.info("shoal:///data/x.csv")["size"] == len(data)


def test_wb_replaces_xb_refuses(fs):
    fs.pipe_file("/data/replace.bin", b"first version, longer")
    with fs.open("/data/replace.bin", "wb") as f:
        f.write(b"second")
    assert fs.cat_file("/data/replace.bin") == b"second"
    with pytest.raises(FileExistsError):
        fs.open("/data/replace.bin", "xb")
    with fs.open("/data/fresh.bin", "xb") as f:
        f.write(b"x")
    assert fs.cat_file("/data/fresh.bin") == b"x"


def test_write_options(fs, cluster):
    with fs.open("/opts/r2.bin", "wb", replication=2, dfs_block_size=2 * MiB) as f:
        f.write(payload(5 * MiB, 7))
    info = fs.info("/opts/r2.bin")
    assert (info["replication"], info["block_size"], info["size"]) == (2, 2 * MiB, 5 * MiB)
    assert len(cluster.fs.blocks("/opts/r2.bin").blocks) == 3
    fs2 = ShoalFileSystem(cluster=str(cluster.folder), replication=1)
    fs2.pipe_file("/opts/r1.bin", b"one copy")
    assert fs.info("/opts/r1.bin")["replication"] == 1


def test_buffered_reads_seek_across_blocks(fs):
    data = payload(3 * BLOCK + 123, 11)
    fs.pipe_file("/seek/f.bin", data)
    with fs.open("/seek/f.bin", "rb", block_size=64 * 1024) as f:
        assert f.seek(0, 2) == len(data) and f.tell() == len(data)
        assert f.read(10) == b""
        for pos in (BLOCK - 5, 2 * BLOCK - 1, 17, 3 * BLOCK + 100, 0):
            f.seek(pos)
            assert f.read(200_000) == data[pos : pos + 200_000]
        f.seek(-50, 2)
        assert f.read() == data[-50:]
        buf = bytearray(BLOCK + 10)
        f.seek(BLOCK // 2)
        assert f.readinto(buf) == len(buf) and bytes(buf) == data[BLOCK // 2 : BLOCK // 2 + len(buf)]


# --- pandas, pyarrow, dask -------------------------------------------------------------------
def test_pandas_csv_roundtrip(opts):
    n = 40_000
    df = pd.DataFrame({"i": np.arange(n), "x": np.linspace(0.0, 1.0, n), "s": [f"v{i % 97}" for i in range(n)]})
    df.to_csv("shoal:///data/df.csv", index=False, storage_options=opts)
    back = pd.read_csv("shoal:///data/df.csv", storage_options=opts)
    pd.testing.assert_frame_equal(back, df)


def test_pyarrow_parquet_across_blocks(fs, cluster):
    rng = np.random.default_rng(5)
    n = 600_000  # ~10 MB of incompressible columns: several 1 MiB blocks
    table = pa.table({"id": np.arange(n), "x": rng.random(n), "y": rng.integers(0, 1 << 40, n)})
    arrow_fs = pafs.PyFileSystem(pafs.FSSpecHandler(fs))
    pq.write_table(table, "data/t.parquet", filesystem=arrow_fs, row_group_size=100_000)
    size = fs.info("/data/t.parquet")["size"]
    assert size > 4 * BLOCK
    assert len(cluster.fs.blocks("/data/t.parquet").blocks) == -(-size // BLOCK)
    assert pq.read_table("/data/t.parquet", filesystem=fs).equals(table)
    column = pq.read_table("shoal:///data/t.parquet", filesystem=arrow_fs, columns=["x"]).column("x")
    assert column.equals(table.column("x"))
    with fs.open("shoal:///data/t.parquet", "rb") as f:  # footer read through the buffered file
        meta = pq.ParquetFile(f).metadata
        assert (meta.num_rows, meta.num_row_groups) == (n, 6)
    back = pd.read_parquet("shoal:///data/t.parquet", storage_options={"cluster": str(cluster.folder)})
    pd.testing.assert_frame_equal(back, table.to_pandas())


def test_dask_read_csv_glob(fs, opts):
    parts = []
    for i in range(4):
        rows = 80_000 if i == 2 else 500 * (i + 1)  # one part spans two blocks and splits
        part = pd.DataFrame({"part": i, "k": np.arange(rows), "v": np.arange(rows) * 0.5})
        part.to_csv(f"shoal:///data/parts/{i}.csv", index=False, storage_options=opts)
        parts.append(part)
    assert fs.info("/data/parts/2.csv")["size"] > BLOCK
    ddf = dd.read_csv("shoal:///data/parts/*.csv", storage_options=opts, blocksize=300_000)
    assert ddf.npartitions > 4
    with dask.config.set(scheduler="synchronous"):
        got = ddf.compute()
    want = pd.concat(parts)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))


# --- namespace operations ------------------------------------------------------------------------
def test_ls_info_exists_makedirs(fs):
    fs.makedirs("shoal:///ns/a/b")
    fs.makedirs("/ns/a/b", exist_ok=True)
    with pytest.raises(FileExistsError):
        fs.makedirs("/ns/a/b")
    with pytest.raises(FileExistsError):
        fs.mkdir("/ns/a")
    with pytest.raises(FileNotFoundError):
        fs.mkdir("/ns/missing/c", create_parents=False)
    fs.mkdir("/ns/a/c", create_parents=False)
    fs.pipe_file("/ns/a/f.txt", b"12345")
    assert fs.ls("/ns/a", detail=False) == ["/ns/a/b", "/ns/a/c", "/ns/a/f.txt"]
    entries = {e["name"]: e for e in fs.ls("shoal://ns/a")}
    assert entries["/ns/a/b"]["type"] == "directory"
    info = entries["/ns/a/f.txt"]
    assert (info["type"], info["size"], info["replication"], info["block_size"]) == ("file", 5, 3, BLOCK)
    assert fs.info("/ns/a/f.txt") == info
    assert fs.ls("/ns/a/f.txt", detail=False) == ["/ns/a/f.txt"]  # a file lists as itself
    assert fs.exists("shoal://ns/a/f.txt") and fs.isfile("/ns/a/f.txt") and fs.isdir("/ns/a")
    assert not fs.exists("/ns/nope") and not fs.exists("/ns/a/f.txt/below")
    assert fs.find("/ns") == ["/ns/a/f.txt"]
    assert fs.glob("shoal:///ns/a/*.txt") == ["/ns/a/f.txt"]
    assert fs.du("/ns") == 5
    for call in (fs.info, fs.ls, fs.cat_file, fs.open, fs.rm, fs.modified):
        with pytest.raises(FileNotFoundError):
            call("/ns/nope")


def test_rm(fs):
    fs.pipe({"/rm/d/x": b"x", "/rm/d/y": b"y", "/rm/d/e/z": b"z", "/rm/f": b"f"})
    fs.rm("/rm/f")
    assert not fs.exists("/rm/f")
    fs.rm_file("/rm/d/x")
    assert fs.ls("/rm/d", detail=False) == ["/rm/d/e", "/rm/d/y"]
    with pytest.raises(DirectoryNotEmpty):
        fs.rm("/rm/d")
    with pytest.raises(OSError):
        fs.rmdir("/rm/d")
    fs.rm("/rm/d/*", recursive=True)  # a glob; each match is one recursive delete
    assert fs.ls("/rm/d") == []
    fs.rm("/rm/d")  # an empty directory needs no recursive
    fs.mkdir("/rm/d/empty")
    fs.rmdir("/rm/d/empty")
    fs.pipe({"/rm/d/e/z": b"z"})
    fs.rm("shoal://rm/d", recursive=True)
    assert not fs.exists("/rm/d")
    with pytest.raises(FileNotFoundError):
        fs.rm("/rm/d", recursive=True)


def test_mv_is_a_native_rename(fs, cluster):
    data = payload(2 * BLOCK + 9, 3)
    fs.pipe_file("/mv/src.bin", data)
    blocks = [b.block.block_id for b in cluster.fs.blocks("/mv/src.bin").blocks]
    fs.mv("shoal://mv/src.bin", "/mv/dst.bin")
    assert not fs.exists("/mv/src.bin")
    assert [b.block.block_id for b in cluster.fs.blocks("/mv/dst.bin").blocks] == blocks  # not a copy
    assert fs.cat_file("/mv/dst.bin") == data
    fs.pipe_file("/mv/other", b"o")
    with pytest.raises(FileExistsError):  # HDFS rename never replaces a file
        fs.rename("/mv/other", "/mv/dst.bin")
    fs.makedirs("/mv/into")
    fs.mv("/mv/other", "/mv/into")  # onto a directory: moves inside
    assert fs.cat_file("/mv/into/other") == b"o"
    fs.mv("/mv/into", "/mv/moved", recursive=True)
    assert fs.find("/mv") == ["/mv/dst.bin", "/mv/moved/other"]
    fs.pipe({"/mv/g/a.txt": b"a", "/mv/g/b.txt": b"b"})
    fs.mv("/mv/g/*.txt", "/mv/txt")
    assert fs.ls("/mv/txt", detail=False) == ["/mv/txt/a.txt", "/mv/txt/b.txt"]
    with pytest.raises(FileNotFoundError):
        fs.mv("/mv/nope", "/mv/x")


def test_cp_times_and_ukey(fs):
    fs.pipe_file("/meta/a", b"version 1")
    key = fs.ukey("/meta/a")
    modified = fs.modified("/meta/a")
    assert isinstance(modified, dt.datetime) and modified.tzinfo is not None
    assert abs((dt.datetime.now(dt.timezone.utc) - modified).total_seconds()) < 60
    assert fs.created("/meta/a") == modified
    assert fs.ukey("/meta/a") == key
    fs.pipe_file("/meta/a", b"version 22")
    assert fs.ukey("/meta/a") != key
    fs.cp_file("/meta/a", "/meta/b")
    assert fs.cat_file("/meta/b") == b"version 22"


def test_cat_file_ranges_across_blocks(fs):
    data = payload(2 * BLOCK + 1000, 9)
    fs.pipe_file("/cat/f.bin", data)
    cases = [
        (None, None), (BLOCK - 10, BLOCK + 10), (BLOCK, BLOCK + 1), (BLOCK - 1, 2 * BLOCK + 1),
        (0, 1), (-20, None), (-BLOCK - 5, -BLOCK + 5), (2 * BLOCK + 999, None), (5, 5), (10, 3),
        (len(data) + 10, None), (0, len(data) + 10),
    ]
    for start, end in cases:
        assert fs.cat_file("shoal://cat/f.bin", start=start, end=end) == data[start:end], (start, end)
    assert fs.cat("/cat/f.bin") == data
    assert fs.read_block("/cat/f.bin", BLOCK - 3, 6) == data[BLOCK - 3 : BLOCK + 3]
