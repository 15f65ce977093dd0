"""The compute engine's file I/O on a real 4-worker cluster: one split per DFS block
with its replicas' hosts, lines crossing block boundaries read exactly once, input
globs and directories on the DFS, and the output committer on shoal:// paths."""

from __future__ import annotations

import gzip
import multiprocessing
import pickle
import random
from collections.abc import Iterator

import pytest

from shoal.cluster.local import resolve
from shoal.compute import input_paths, storage
from shoal.compute.committer import OutputCommitter, write_pickle_partition, write_text_partition
from shoal.compute.storage import (
    FileSplit,
    pickle_splits,
    read_pickle_file,
    read_split_lines,
    read_whole_file,
    resolve_input,
    text_splits,
    whole_text_files,
)
from shoal.errors import FileAlreadyExists, FileNotFound, IsADirectory

BLOCK = 100_000  # an odd block size: lines cross block boundaries anywhere


def put(dfs, path: str, data: bytes, block_size: int = BLOCK) -> None:
    with dfs.open(path, "wb", block_size=block_size, overwrite=True) as f:
        f.write(data)


def reference_lines(data: bytes) -> list[str]:
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [(ln[:-1] if ln.endswith(b"\r") else ln).decode("utf-8", "replace") for ln in lines]


def random_text(seed: int, size: int) -> bytes:
    r = random.Random(seed)
    words = ["alpha", "β", "gamma€", "𝄞", "", "x" * 300, "end\r"]
    out, n = [], 0
    while n < size:
        line = " ".join(r.choices(words, k=r.randint(0, 12)))
        out.append(line)
        n += len(line.encode()) + 1
    return ("\n".join(out) + "\n").encode()


def read_all(splits: list[FileSplit]) -> list[str]:
    return [line for s in splits for line in read_split_lines(s)]


@pytest.fixture(scope="module")
def dfs(cluster):
    return cluster.fs


@pytest.fixture(scope="module")
def target(cluster) -> str:
    return str(cluster.folder)


@pytest.fixture
def default_cluster(target) -> Iterator[None]:
    input_paths.set_default_cluster(target)
    yield
    input_paths.set_default_cluster(None)


# --- splits ----------------------------------------------------------------------------------
def test_one_split_per_block_with_replica_hosts(dfs, target):
    data = random_text(1, 5 * BLOCK + 40_000)
    put(dfs, "/st/blocks.txt", data)
    located = dfs.blocks("/st/blocks.txt")
    assert len(located.blocks) == 6 and located.blocks[-1].block.length >= BLOCK // 10
    splits = text_splits("shoal:///st/blocks.txt", 2, cluster=target)
    assert len(splits) == len(located.blocks)
    nodes = {n.node_id: n.rack for lb in located.blocks for n in lb.locations}
    for split, lb in zip(splits, located.blocks):
        assert (split.path, split.cluster, split.file_length) == ("shoal:///st/blocks.txt", target, len(data))
        assert (split.start, split.length) == (lb.block.offset, lb.block.length)
        assert sorted(split.hosts) == sorted(n.node_id for n in lb.locations)
        assert len(split.hosts) == 3  # the cluster's replication
        assert split.racks == [nodes[h] for h in split.hosts]
    assert len({r for n, r in nodes.items()}) == 2  # the fixture's two racks


def test_last_small_block_folds_into_the_previous_split(dfs, target):
    put(dfs, "/st/slop.txt", random_text(2, 2 * BLOCK + 5_000)[: 2 * BLOCK + 5_000])
    splits = text_splits("shoal:///st/slop.txt", 1, cluster=target)
    assert [(s.start, s.length) for s in splits] == [(0, BLOCK), (BLOCK, BLOCK + 5_000)]  # Hadoop's SPLIT_SLOP


def test_lines_across_block_boundaries_read_exactly_once(dfs, target):
    data = random_text(3, 7 * BLOCK + 12_345)
    put(dfs, "/st/lines.txt", data)
    offsets = [lb.block.offset for lb in dfs.blocks("/st/lines.txt").blocks[1:]]
    assert any(data[o - 1 : o] != b"\n" for o in offsets)  # some line does cross a block boundary
    expected = reference_lines(data)
    for min_partitions in (1, 8, 23, 200):
        splits = text_splits("shoal:///st/lines.txt", min_partitions, cluster=target)
        assert sum(s.length for s in splits) == len(data)
        assert read_all(splits) == expected, min_partitions


def test_gzip_on_the_dfs_is_one_split(dfs, target):
    data = b"".join(b"%d %s\n" % (i, random.Random(i).randbytes(20).hex().encode()) for i in range(20_000))
    put(dfs, "/st/gz/part.txt.gz", gzip.compress(data, 1))
    splits = text_splits("shoal:///st/gz", 10, cluster=target)
    assert len(splits) == 1 and len(dfs.blocks("/st/gz/part.txt.gz").blocks) > 2
    assert len(splits[0].hosts) == 3
    assert read_all(splits) == reference_lines(data)


# --- inputs ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tree(dfs) -> str:
    files = {
        "/in/a.txt": b"a1\na2\n", "/in/b.txt": b"b1\n", "/in/c.log": b"c1\n", "/in/_SUCCESS": b"",
        "/in/.crc": b"x\n", "/in2/a.txt": b"A\n", "/deep/sub/x.txt": b"x\n",
    }
    for path, data in files.items():
        put(dfs, path, data)
    return "shoal://"


def test_dfs_globs_directories_and_lists(tree, target, tmp_path):
    r = lambda p, **kw: [path for path, _ in resolve_input(p, cluster=target, **kw)]  # noqa: E731
    assert r("shoal:///in") == ["shoal:///in/a.txt", "shoal:///in/b.txt", "shoal:///in/c.log"]
    assert r("shoal://in/") == r("shoal:///in")  # the fsspec form
    assert r("shoal:///in/*.txt") == ["shoal:///in/a.txt", "shoal:///in/b.txt"]
    assert r("shoal:///in/[!a].*") == ["shoal:///in/b.txt", "shoal:///in/c.log"]
    assert r("shoal:///in*/a.txt") == ["shoal:///in/a.txt", "shoal:///in2/a.txt"]
    assert r("shoal:///in/{c,a}.*") == ["shoal:///in/a.txt", "shoal:///in/c.log"]
    assert r("shoal:///in/*") == r("shoal:///in")  # _SUCCESS and .crc are hidden
    assert r("shoal:///deep", recursive=True) == ["shoal:///deep/sub/x.txt"]
    local = tmp_path / "l.txt"
    local.write_text("local\n")
    assert r(f"shoal:///in2,{local},shoal:///in/b.txt") == ["shoal:///in2/a.txt", str(local), "shoal:///in/b.txt"]
    assert resolve_input("shoal:///in/a.txt", cluster=target) == [("shoal:///in/a.txt", 6)]
    with pytest.raises(IsADirectory, match="not a file: shoal:///deep/sub"):
        resolve_input("shoal:///deep", cluster=target)
    with pytest.raises(FileNotFound, match="input path does not exist: shoal:///nope"):
        resolve_input("shoal:///nope", cluster=target)
    with pytest.raises(FileNotFound, match=r"input path does not exist: shoal:///in/\*\.csv"):
        text_splits("shoal:///in/*.csv", 2, cluster=target)


def test_cluster_from_environment_and_default(tree, target, monkeypatch, default_cluster):
    assert read_all(text_splits("shoal:///in/a.txt", 1)) == ["a1", "a2"]  # set_default_cluster
    input_paths.set_default_cluster(None)
    monkeypatch.setenv("SHOAL_CLUSTER", target)
    splits = text_splits("shoal:///in", 1)
    assert splits[0].cluster is None
    assert read_all(splits) == ["a1", "a2", "b1", "c1"]


def test_host_port_authority(tree, target):
    host, port = resolve(target).master
    url = f"shoal://{host}:{port}/in/b.txt"
    splits = text_splits(url, 1, cluster=target)
    assert [s.path for s in splits] == [url]
    assert read_all(splits) == ["b1"]
    assert read_whole_file(url, cluster=target) == "b1\n"


def test_whole_text_files_on_the_dfs(tree, target):
    groups = whole_text_files("shoal:///in,shoal:///in2", 2, cluster=target)
    flat = [p for g in groups for p, _ in g]
    assert flat == ["shoal:///in/a.txt", "shoal:///in/b.txt", "shoal:///in/c.log", "shoal:///in2/a.txt"]
    assert [read_whole_file(p, cluster=target) for p in flat] == ["a1\na2\n", "b1\n", "c1\n", "A\n"]


# --- output ----------------------------------------------------------------------------------
def test_committer_on_the_dfs(dfs, target):
    out = "shoal:///out/job1"
    c = OutputCommitter(out, cluster=target, block_size=BLOCK)
    c.setup_job()
    assert dfs.stat("/out/job1/_temporary").kind == "directory"
    big = [f"row {i} {'é' * (i % 50)}" for i in range(30_000)]
    for attempt, records in ((0, ["loser"]), (1, big)):
        with c.open_task_output(0, attempt) as f:
            write_text_partition(f, records)
    assert c.commit_task(0, 1) is True
    assert c.commit_task(0, 0) is False
    with c.open_task_output(1, 0) as f:
        write_text_partition(f, ["one"])
    assert c.commit_task(1, 0) is True
    c.commit_job()
    assert sorted(dfs.ls("/out/job1")) == ["/out/job1/_SUCCESS", "/out/job1/part-00000", "/out/job1/part-00001"]
    assert dfs.stat("/out/job1/_SUCCESS").length == 0
    assert len(dfs.blocks("/out/job1/part-00000").blocks) > 1  # block_size passed through
    assert read_all(text_splits(out, 4, cluster=target)) == big + ["one"]
    with pytest.raises(FileAlreadyExists, match="output directory shoal:///out/job1 already exists"):
        OutputCommitter(out, cluster=target).setup_job()
    again = OutputCommitter(out, overwrite=True, cluster=target)
    again.setup_job()
    assert dfs.ls("/out/job1") == ["/out/job1/_temporary"]
    with again.open_task_output(0, 0) as f:
        f.write(b"partial\n")
    again.abort_job()
    assert dfs.ls("/out/job1") == []


def _executor(committer_bytes: bytes, partition: int) -> None:
    """A task in a fresh process: unpickle the committer, write, commit."""
    committer = pickle.loads(committer_bytes)
    with committer.open_task_output(partition, 0) as f:
        write_pickle_partition(f, [(partition, i) for i in range(10_000)])
    assert committer.commit_task(partition, 0)


def test_committer_shipped_to_other_processes(dfs, target):
    c = OutputCommitter("shoal:///out/pickled", cluster=target)
    c.setup_job()
    blob = pickle.dumps(c)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_executor, args=(blob, p)) for p in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    c.commit_job()
    splits = pickle_splits("shoal:///out/pickled", 2, cluster=target)
    assert [s.path.rsplit("/", 1)[1] for s in splits] == ["part-00000", "part-00001", "part-00002"]
    assert [list(read_pickle_file(s)) for s in splits] == [[(p, i) for i in range(10_000)] for p in range(3)]
