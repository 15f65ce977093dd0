"""The ``shoal`` command line, run as a real subprocess against a real cluster.

Every command is found through ``SHOAL_CLUSTER`` (or ``-c``); inspection commands
print parseable JSON with ``--json``; every expected failure is one line on stderr
starting with ``shoal: error:`` and exit status 1, never a traceback.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import psutil
import pytest

from shoal.cluster.local import stop_cluster
from tests.clitools import fails, ok, out_json, shoal

RACK_OF = {"w1": "r1", "w2": "r2", "w3": "r1", "w4": "r2"}

MiB = 1024 * 1024
@pytest.fixture(scope="module")
def local_data(tmp_path_factory) -> tuple[Path, bytes]:
    data = random.Random(7).randbytes(2 * MiB + MiB // 2 + 17)  # 3 blocks of 1 MiB
    path = tmp_path_factory.mktemp("local") / "data.bin"
    path.write_bytes(data)
    return path, data


# --- file commands ------------------------------------------------------------------------------
def test_put_ls_cat_get(cluster, local_data, tmp_path):
    c = cluster.folder
    src, data = local_data
    ok(shoal(c, "fs", "put", str(src), "/cli/a/data.bin"))
    assert cluster.fs.cat("/cli/a/data.bin") == data

    assert ok(shoal(c, "fs", "ls", "/cli/a")).stdout.decode().splitlines() == ["/cli/a/data.bin"]
    long = ok(shoal(c, "fs", "ls", "-l", "/cli/a")).stdout.decode().splitlines()
    assert len(long) == 1
    fields = long[0].split()
    assert fields[0] == "-rw-r--r--"
    assert fields[1] == "3"  # replication
    assert fields[4] == str(len(data))
    assert fields[-1] == "/cli/a/data.bin"
    human = ok(shoal(c, "fs", "ls", "-l", "-h", "/cli")).stdout.decode().splitlines()
    assert len(human) == 1 and human[0].startswith("d") and human[0].endswith(" /cli/a")

    listing = out_json(shoal(c, "fs", "ls", "--json", "/cli/a"))
    assert [e["path"] for e in listing] == ["/cli/a/data.bin"]
    assert listing[0]["kind"] == "file"
    assert listing[0]["length"] == len(data)
    assert listing[0]["replication"] == 3
    assert listing[0]["block_size"] == MiB

    assert ok(shoal(c, "fs", "cat", "/cli/a/data.bin")).stdout == data

    dst = tmp_path / "copy.bin"
    ok(shoal(c, "fs", "get", "/cli/a/data.bin", str(dst)))
    assert dst.read_bytes() == data
    # An existing local file needs -f.
    dst.write_bytes(b"keep me")
    fails(shoal(c, "fs", "get", "/cli/a/data.bin", str(dst)), "FileAlreadyExists")
    assert dst.read_bytes() == b"keep me"
    ok(shoal(c, "fs", "get", "-f", "/cli/a/data.bin", str(dst)))
    assert dst.read_bytes() == data
    # get into a local directory keeps the DFS name.
    ok(shoal(c, "fs", "get", "/cli/a/data.bin", str(tmp_path)))
    assert (tmp_path / "data.bin").read_bytes() == data


def test_put_variants(cluster, local_data):
    c = cluster.folder
    src, data = local_data
    # From stdin.
    ok(shoal(c, "fs", "put", "-", "/cli/put/stdin.bin", stdin=data[:1000]))
    assert cluster.fs.cat("/cli/put/stdin.bin") == data[:1000]
    # Into an existing directory: the local name is kept.
    ok(shoal(c, "fs", "mkdir", "-p", "/cli/put/dir"))
    ok(shoal(c, "fs", "put", str(src), "/cli/put/dir"))
    assert cluster.fs.cat("/cli/put/dir/data.bin") == data
    # Existing file: refused without -f, replaced with -f.
    fails(shoal(c, "fs", "put", "-", "/cli/put/stdin.bin", stdin=b"new"), "FileAlreadyExists")
    assert cluster.fs.cat("/cli/put/stdin.bin") == data[:1000]
    ok(shoal(c, "fs", "put", "-f", "-", "/cli/put/stdin.bin", stdin=b"new"))
    assert cluster.fs.cat("/cli/put/stdin.bin") == b"new"
    # Per-file replication and block size.
    ok(shoal(c, "fs", "put", "-r", "2", "--block-size", "512K", str(src), "/cli/put/custom"))
    status = cluster.fs.stat("/cli/put/custom")
    assert (status.replication, status.block_size, status.length) == (2, 512 * 1024, len(data))
    assert all(len(b.locations) == 2 for b in cluster.fs.blocks("/cli/put/custom").blocks)
    # cat of several files concatenates them.
    both = ok(shoal(c, "fs", "cat", "/cli/put/stdin.bin", "/cli/put/stdin.bin")).stdout
    assert both == b"newnew"


def test_mkdir_mv_rm(cluster):
    c = cluster.folder
    ok(shoal(c, "fs", "mkdir", "-p", "/cli/m/x/y"))
    ok(shoal(c, "fs", "mkdir", "-p", "/cli/m/x/y"))  # -p: no error when it exists
    assert out_json(shoal(c, "fs", "stat", "--json", "/cli/m/x/y"))["kind"] == "directory"
    fails(shoal(c, "fs", "mkdir", "/cli/m/x"), "FileAlreadyExists")
    fails(shoal(c, "fs", "mkdir", "/cli/m/nope/deeper"), "FileNotFound")
    ok(shoal(c, "fs", "mkdir", "/cli/m/one", "/cli/m/two"))

    ok(shoal(c, "fs", "put", "-", "/cli/m/x/f", stdin=b"payload"))
    ok(shoal(c, "fs", "mv", "/cli/m/x/f", "/cli/m/x/g"))  # rename a file
    assert not cluster.fs.exists("/cli/m/x/f")
    assert cluster.fs.cat("/cli/m/x/g") == b"payload"
    ok(shoal(c, "fs", "mv", "/cli/m/x", "/cli/m/one"))  # a directory into a directory
    assert cluster.fs.cat("/cli/m/one/x/g") == b"payload"
    assert cluster.fs.ls("/cli/m") == ["/cli/m/one", "/cli/m/two"]

    fails(shoal(c, "fs", "rm", "/cli/m/one"), "DirectoryNotEmpty")
    assert cluster.fs.exists("/cli/m/one/x/g")
    ok(shoal(c, "fs", "rm", "/cli/m/two"))  # empty directory
    ok(shoal(c, "fs", "rm", "-r", "/cli/m"))
    assert not cluster.fs.exists("/cli/m")
    fails(shoal(c, "fs", "ls", "/cli/m"), "FileNotFound")


def test_du_stat_blocks(cluster, local_data):
    c = cluster.folder
    src, data = local_data
    ok(shoal(c, "fs", "put", str(src), "/cli/du/d/data.bin"))
    ok(shoal(c, "fs", "put", "-r", "1", "-", "/cli/du/small", stdin=b"x" * 1000))

    rows = out_json(shoal(c, "fs", "du", "--json", "/cli/du"))
    by_path = {r["path"]: r for r in rows}
    assert set(by_path) == {"/cli/du/d", "/cli/du/small"}
    assert by_path["/cli/du/d"] == {
        "path": "/cli/du/d", "length": len(data), "space_consumed": 3 * len(data), "files": 1, "directories": 1,
    }
    assert by_path["/cli/du/small"]["length"] == 1000
    assert by_path["/cli/du/small"]["space_consumed"] == 1000
    total = out_json(shoal(c, "fs", "du", "-s", "--json", "/cli/du"))
    assert total == [
        {"path": "/cli/du", "length": len(data) + 1000, "space_consumed": 3 * len(data) + 1000,
         "files": 2, "directories": 2},
    ]
    plain = ok(shoal(c, "fs", "du", "/cli/du")).stdout.decode().splitlines()
    assert plain[0].split() == [str(len(data)), str(3 * len(data)), "/cli/du/d"]
    human = ok(shoal(c, "fs", "du", "-h", "-s", "/cli/du")).stdout.decode()
    assert "MiB" in human and human.split()[-1] == "/cli/du"

    st = out_json(shoal(c, "fs", "stat", "--json", "/cli/du/d/data.bin"))
    assert (st["path"], st["kind"], st["length"], st["replication"], st["block_size"]) == (
        "/cli/du/d/data.bin", "file", len(data), 3, MiB,
    )
    assert st["under_construction"] is False
    text = ok(shoal(c, "fs", "stat", "/cli/du/d/data.bin")).stdout.decode()
    assert f"length: {len(data)}" in text and "type: file" in text

    blocks = out_json(shoal(c, "fs", "blocks", "--json", "/cli/du/d/data.bin"))
    assert [b["offset"] for b in blocks] == [0, MiB, 2 * MiB]
    assert [b["length"] for b in blocks] == [MiB, MiB, len(data) - 2 * MiB]
    for b in blocks:
        assert len(b["replicas"]) == 3
        assert len({r["node"] for r in b["replicas"]}) == 3
        assert {r["rack"] for r in b["replicas"]} == {"r1", "r2"}
        for r in b["replicas"]:
            assert r["rack"] == RACK_OF[r["node"]]
            assert re.fullmatch(r"127\.0\.0\.1:\d+", r["address"])
    expected_ids = [lb.block.block_id for lb in cluster.fs.blocks("/cli/du/d/data.bin").blocks]
    assert [b["block_id"] for b in blocks] == expected_ids
    table = ok(shoal(c, "fs", "blocks", "/cli/du/d/data.bin")).stdout.decode()
    for bid in expected_ids:
        assert f"blk_{bid}" in table


def test_nodes_json(cluster):
    report = out_json(shoal(cluster.folder, "nodes", "--json"))
    nodes = report["nodes"]
    assert [n["node_id"] for n in nodes] == ["w1", "w2", "w3", "w4"]
    assert all(n["state"] == "live" for n in nodes)
    assert {n["node_id"]: n["rack"] for n in nodes} == RACK_OF
    recorded = {e["id"]: e["pid"] for e in json.loads((cluster.folder / "cluster.json").read_text())["processes"]}
    for n in nodes:
        assert n["pid"] == recorded[n["node_id"]]
        assert psutil.pid_exists(n["pid"])
        assert n["capacity_bytes"] > 0 and 0 < n["data_port"] < 65536
    table = ok(shoal(cluster.folder, "nodes")).stdout.decode()
    assert "4 workers" in table and all(w in table for w in RACK_OF)


def test_config_of_a_running_cluster(cluster):
    lines = ok(shoal(cluster.folder, "config")).stdout.decode().splitlines()
    values = {}
    for line in lines:
        key, _, rest = line.partition(" = ")
        values[key] = rest
    # Values the cluster was started with are marked; defaults are not.
    assert values["dfs.block_size"] == "1048576  (set)"
    assert values["dfs.heartbeat_interval_s"] == "0.2  (set)"
    assert values["dfs.replication"] == "3"
    assert "rpc.frame_bytes_max" in values
    as_json = out_json(shoal(cluster.folder, "config", "--json"))
    assert as_json["dfs.block_size"] == MiB
    assert as_json["dfs.replication"] == 3
    assert set(as_json) == set(values)


def test_config_without_a_cluster_applies_and_marks_set(tmp_path):
    lines = ok(shoal(tmp_path, "config", "--set", "dfs.replication=2", "--set", "dfs.block_size=64M")).stdout
    values = dict(line.split(" = ", 1) for line in lines.decode().splitlines())
    assert values["dfs.replication"] == "2  (set)"
    assert values["dfs.block_size"] == f"{64 * MiB}  (set)"
    assert values["dfs.heartbeat_interval_s"] == "3.0"  # the HDFS default, unmarked
    fails(shoal(tmp_path, "config", "--set", "nope.x=1"), "ConfigError")
    fails(shoal(tmp_path, "config", "--set", "dfs.replication=many"), "ConfigError")
    fails(shoal(tmp_path, "config", "--set", "novalue"), "ConfigError")


def test_config_rejects_bad_set_on_a_running_cluster(cluster):
    fails(shoal(cluster.folder, "config", "--set", "nope.x=1"), "ConfigError")


# --- errors ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def error_tree(cluster):
    fs = cluster.fs
    fs.mkdirs("/cli/err/dir/sub")
    with fs.open("/cli/err/file", "wb") as f:
        f.write(b"content")
    return "/cli/err"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["fs", "cat", "/cli/err/missing"], "FileNotFound"),
        (["fs", "stat", "/cli/err/missing"], "FileNotFound"),
        (["fs", "ls", "/cli/err/missing"], "FileNotFound"),
        (["fs", "du", "/cli/err/missing"], "FileNotFound"),
        (["fs", "blocks", "/cli/err/missing"], "FileNotFound"),
        (["fs", "mv", "/cli/err/missing", "/cli/err/x"], "FileNotFound"),
        (["fs", "rm", "/cli/err/missing"], "FileNotFound"),
        (["fs", "rm", "/cli/err/dir"], "DirectoryNotEmpty"),
        (["fs", "mkdir", "/cli/err/dir"], "FileAlreadyExists"),
        (["fs", "mv", "/cli/err/dir", "/cli/err/dir/sub"], "BadRequest"),
        (["fs", "cat", "/cli/err/dir"], "IsADirectory"),
        (["fs", "mkdir", "-p", "/cli/err/file/sub"], "NotADirectory"),
        (["fs", "ls", "/cli/../etc"], "InvalidPath"),
        (["fs", "mkdir", "-p", "/cli//x"], "InvalidPath"),
        (["fs", "stat", "relative/path"], "InvalidPath"),
        (["fs", "rm", "-r", "/cli/./err"], "InvalidPath"),
        (["fs", "rm", "-r", "/"], "BadRequest"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_errors_are_one_line(cluster, error_tree, args, code):
    fails(shoal(cluster.folder, *args), code)
    # Nothing was changed by the refused command.
    assert cluster.fs.cat("/cli/err/file") == b"content"
    assert cluster.fs.ls("/cli/err/dir") == ["/cli/err/dir/sub"]


def test_put_existing_without_force(cluster, error_tree, local_data):
    src, _ = local_data
    line = fails(shoal(cluster.folder, "fs", "put", str(src), "/cli/err/file"), "FileAlreadyExists")
    assert "/cli/err/file" in line
    assert cluster.fs.cat("/cli/err/file") == b"content"


def test_local_file_errors(cluster, error_tree, tmp_path):
    c = cluster.folder
    line = fails(shoal(c, "fs", "put", str(tmp_path / "no-such-file"), "/cli/err/new"))
    assert "no-such-file" in line
    fails(shoal(c, "fs", "put", str(tmp_path), "/cli/err/new"))  # a local directory
    assert not cluster.fs.exists("/cli/err/new")
    # A failed get leaves no local file behind.
    fails(shoal(c, "fs", "get", "/cli/err/missing", str(tmp_path / "out")), "FileNotFound")
    assert not (tmp_path / "out").exists()


def test_local_not_a_directory_is_one_line(cluster, error_tree, tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    fails(shoal(cluster.folder, "fs", "get", "/cli/err/file", str(plain / "out")))
    fails(shoal(cluster.folder, "fs", "put", str(plain / "in"), "/cli/err/new"))


def test_no_cluster(tmp_path):
    for args in (["nodes"], ["fs", "ls", "/"], ["fs", "cat", "/x"], ["down"]):
        line = fails(shoal(tmp_path / "nowhere", *args), "ClusterNotFound")
        assert "nowhere" in line
    # -c wins over SHOAL_CLUSTER.
    fails(shoal(None, "nodes", "-c", str(tmp_path / "elsewhere")), "ClusterNotFound")


# --- up / down -----------------------------------------------------------------------------------
def test_up_detach_and_down(tmp_path):
    folder = tmp_path / "c"
    fast = [
        "--set", "dfs.heartbeat_interval_s=0.2",
        "--set", "dfs.dead_node_interval_s=3",
        "--set", "dfs.block_size=1M",
    ]
    try:
        res = ok(shoal(None, "up", "--detach", "-n", "2", "--racks", "1", "-c", str(folder), *fast, timeout=90))
        assert b"cluster up" in res.stdout
        processes = json.loads((folder / "cluster.json").read_text())["processes"]
        assert sorted(e["id"] for e in processes) == ["master", "w1", "w2"]
        pids = [e["pid"] for e in processes]
        assert all(psutil.pid_exists(pid) for pid in pids)

        nodes = out_json(shoal(folder, "nodes", "--json"))["nodes"]
        assert [(n["node_id"], n["rack"], n["state"]) for n in nodes] == [("w1", "r1", "live"), ("w2", "r1", "live")]
        # The cluster works, and its config shows the --set values as set.
        ok(shoal(folder, "fs", "put", "-", "/hello", stdin=b"hello world"))
        assert ok(shoal(folder, "fs", "cat", "/hello")).stdout == b"hello world"
        config = ok(shoal(folder, "config")).stdout.decode()
        assert "dfs.heartbeat_interval_s = 0.2  (set)" in config.splitlines()

        # A second `up` on a running folder is refused.
        fails(shoal(None, "up", "--detach", "-n", "1", "-c", str(folder), timeout=90), "ClusterAlreadyRunning")
        assert all(psutil.pid_exists(pid) for pid in pids)
        assert json.loads((folder / "cluster.json").read_text())["processes"] == processes

        res = ok(shoal(folder, "down"))
        assert b"stopped 3 processes" in res.stdout
        for pid in pids:
            assert not _running(pid), f"pid {pid} still running after shoal down"
        assert json.loads((folder / "cluster.json").read_text())["processes"] == []
        # Stopping again is harmless; talking to the stopped cluster is a clean error.
        assert b"no processes were running" in ok(shoal(folder, "down")).stdout
        fails(shoal(folder, "nodes", "--json"))
    finally:
        stop_cluster(folder)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
