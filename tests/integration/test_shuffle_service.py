"""The shuffle service over real TCP: reducers on "other nodes" fetch map outputs
through it, bad requests get named errors, ``remove_app`` deletes an application's
files, and every worker of a local cluster runs one and tells its containers where."""

from __future__ import annotations

import json
import operator
import os
import random
import socket
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.compute.dependencies import Aggregator, ShuffleDependency
from shoal.compute.partitioner import HashPartitioner, RangePartitioner
from shoal.compute.serde import iter_batches
from shoal.compute.shuffle import (
    MapStatus,
    ShuffleReadMetrics,
    ShuffleWriteMetrics,
    read_reduce_partition,
    write_map_output,
)
from shoal.compute.shuffle_service import (
    FetchReply,
    FetchSegments,
    RemoveApp,
    RemoveReply,
    ShuffleClient,
    ShuffleService,
    parse_address,
)
from shoal.core import wire
from shoal.core.node import read_secret
from shoal.core.sockio import FramedSocket
from shoal.errors import AuthenticationError, BadRequest, ConnectionLost, FetchFailed
from tests.clitools import ok, shoal
from tests.conftest import RunningCluster

SECRET = b"shuffle-test-secret"
APP = "app-remote"
ADD = Aggregator(lambda v: v, operator.add, operator.add, identity_create=True, merge_kind="add")
MiB = 1024 * 1024


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ShuffleService]:
    with ShuffleService(tmp_path / "node-b" / "shuffle", secret=SECRET) as svc:
        yield svc


def write_maps(svc: ShuffleService, dep: ShuffleDependency, inputs: list[list], node: str = "node-b") -> list[MapStatus]:
    return [
        write_map_output(
            iter(recs), dep, root=str(svc.root), app_id=APP, map_index=m, node_id=node, service=svc.address,
            work_dir=str(svc.root.parent / "work"), memory_limit_bytes=1 << 40, metrics=ShuffleWriteMetrics(),
        )
        for m, recs in enumerate(inputs)
    ]


def read(statuses, dep: ShuffleDependency, r: int, tmp_path: Path, local_node: str = "node-a",
         metrics: ShuffleReadMetrics | None = None, secret: bytes = SECRET, limit: int = 1 << 40) -> list:
    return list(read_reduce_partition(
        statuses, dep, r, shuffle_id=dep.shuffle_id, app_id=APP, local_node=local_node, secret=secret,
        work_dir=str(tmp_path / "reduce-work"), memory_limit_bytes=limit, metrics=metrics or ShuffleReadMetrics(),
    ))


def words(n: int, seed: int) -> list[tuple[str, int]]:
    rnd = random.Random(seed)
    return [(f"w{rnd.randrange(3000)}", rnd.randrange(10)) for _ in range(n)]


def raw(svc: ShuffleService) -> FramedSocket:
    conn = FramedSocket.connect(svc.address, SECRET, timeout_s=5, frame_bytes_max=64 * MiB)
    conn.settimeout(5)
    return conn


# --- remote reads ------------------------------------------------------------------------------------
@pytest.mark.parametrize("combine", [True, False])
def test_reducer_on_another_node_fetches_through_the_service(service: ShuffleService, tmp_path: Path,
                                                            combine: bool) -> None:
    dep = ShuffleDependency(None, 3, HashPartitioner(4), ADD, combine)  # type: ignore[arg-type]
    inputs = [words(20000, s) for s in range(3)]
    statuses = write_maps(service, dep, inputs)
    got: dict = {}
    metrics = ShuffleReadMetrics()
    for r in range(4):
        got.update(read(statuses, dep, r, tmp_path, metrics=metrics))
    expected: dict = defaultdict(int)
    for recs in inputs:
        for k, v in recs:
            expected[k] += v
    assert got == expected
    assert metrics.local_bytes == 0 and metrics.remote_bytes == sum(s.offsets[-1] for s in statuses)
    assert metrics.remote_segments == 12


def test_mixed_local_and_remote_sorted(tmp_path: Path) -> None:
    """Two nodes' services; the reducer runs on one (local reads) and fetches from the other."""
    part = RangePartitioner([300, 600])
    dep = ShuffleDependency(None, 4, part, key_ordering=True)  # type: ignore[arg-type]
    rnd = random.Random(1)
    inputs = [[(rnd.randrange(1000), i) for i in range(15000)] for _ in range(4)]
    with ShuffleService(tmp_path / "a", secret=SECRET) as a, ShuffleService(tmp_path / "b", secret=SECRET) as b:
        statuses = write_maps(a, dep, inputs[:2], node="node-a") + [
            s for s in write_maps(b, dep, [[], [], *inputs[2:]], node="node-b")[2:]
        ]
        metrics = ShuffleReadMetrics()
        parts = [read(statuses, dep, r, tmp_path, local_node="node-a", metrics=metrics) for r in range(3)]
    flat = [k for p in parts for k, _ in p]
    assert flat == sorted(k for recs in inputs for k, _ in recs)
    assert metrics.local_bytes > 0 and metrics.remote_bytes > 0


def test_local_node_without_the_file_falls_back_to_the_service(service: ShuffleService, tmp_path: Path) -> None:
    dep = ShuffleDependency(None, 5, HashPartitioner(2))  # type: ignore[arg-type]
    statuses = write_maps(service, dep, [words(5000, 1)])
    moved = [MapStatus(s.map_index, s.node_id, s.service, "/nonexistent/x.data", s.offsets, s.records) for s in statuses]
    metrics = ShuffleReadMetrics()
    assert sorted(read(moved, dep, 0, tmp_path, local_node="node-b", metrics=metrics)) == sorted(
        read(statuses, dep, 0, tmp_path, local_node="node-b"))
    assert metrics.remote_bytes > 0 and metrics.local_bytes == 0


def test_client_reuses_its_connection(service: ShuffleService) -> None:
    dep = ShuffleDependency(None, 6, HashPartitioner(3))  # type: ignore[arg-type]
    statuses = write_maps(service, dep, [words(3000, s) for s in range(2)])
    with ShuffleClient(service.address, SECRET) as client:
        first = client.fetch(APP, 6, [0, 1], 0)
        conn = client._conn
        second = client.fetch(APP, 6, [0, 1], 1, 3)  # a range of reduce partitions
        assert client._conn is conn
    for m, st_ in enumerate(statuses):
        with open(st_.data_path, "rb") as f:
            data = f.read()
        assert first[m] == data[st_.offsets[0] : st_.offsets[1]]
        assert second[m] == data[st_.offsets[1] : st_.offsets[3]]
        assert sum(len(b) for b in iter_batches(second[m])) == st_.records[1] + st_.records[2]


def test_reducers_in_parallel_and_one_stopping_early(service: ShuffleService, tmp_path: Path) -> None:
    import threading

    dep = ShuffleDependency(None, 11, HashPartitioner(3))  # type: ignore[arg-type]
    statuses = write_maps(service, dep, [words(40000, s) for s in range(4)])
    expected = [sorted(read(statuses, dep, r, tmp_path, local_node="node-b")) for r in range(3)]
    early = read_reduce_partition(statuses, dep, 0, shuffle_id=11, app_id=APP, local_node="node-a", secret=SECRET,
                                  work_dir=str(tmp_path / "w"), memory_limit_bytes=1 << 40,
                                  metrics=ShuffleReadMetrics())
    next(early)
    early.close()  # type: ignore[attr-defined]  # its fetchers stop; the service is not disturbed
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def reducer(r: int) -> None:
        try:
            results[r] = sorted(read(statuses, dep, r % 3, tmp_path / f"r{r}"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=reducer, args=(r,)) for r in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert all(results[r] == expected[r % 3] for r in range(6))


# --- failures --------------------------------------------------------------------------------------------
def test_fetch_failures_name_map_and_node(service: ShuffleService, tmp_path: Path) -> None:
    dep = ShuffleDependency(None, 8, HashPartitioner(2))  # type: ignore[arg-type]
    statuses = write_maps(service, dep, [words(2000, s) for s in range(3)])
    os.unlink(statuses[1].data_path)
    os.unlink(statuses[1].data_path.replace(".data", ".index"))
    with pytest.raises(FetchFailed) as info:
        read(statuses, dep, 0, tmp_path)
    assert (info.value.map_index, info.value.node_id, info.value.shuffle_id) == (1, "node-b", 8)
    assert "MapOutputMissing" in str(info.value)
    with pytest.raises(FetchFailed):  # wrong secret: the handshake fails
        read([statuses[0]], dep, 0, tmp_path, secret=b"wrong")
    # A map output that changed size since its status was taken is not trusted.
    stale = MapStatus(0, "node-b", statuses[0].service, statuses[0].data_path,
                      [0, statuses[0].offsets[1] + 5, statuses[0].offsets[2] + 5], statuses[0].records)
    with pytest.raises(FetchFailed) as info:
        read([stale], dep, 0, tmp_path)
    assert info.value.map_index == 0
    service.stop()
    with pytest.raises(FetchFailed) as info:  # connection refused
        read([statuses[2]], dep, 0, tmp_path)
    assert (info.value.map_index, info.value.node_id) == (0, "node-b")  # index in the status list


def test_bad_requests_get_named_errors_and_the_connection_survives(service: ShuffleService) -> None:
    dep = ShuffleDependency(None, 9, HashPartitioner(2))  # type: ignore[arg-type]
    write_maps(service, dep, [words(1000, 1)])
    (service.root.parent / "secret.txt").write_text("outside the root")
    conn = raw(service)
    try:
        for op, code in [
            (FetchSegments("../x", 9, [0], 0, 1), "BadRequest"),
            (FetchSegments("..", 9, [0], 0, 1), "BadRequest"),
            (FetchSegments("a/b", 9, [0], 0, 1), "BadRequest"),
            (FetchSegments(APP, -1, [0], 0, 1), "BadRequest"),
            (FetchSegments(APP, 9, [-3], 0, 1), "BadRequest"),
            (FetchSegments(APP, 9, [0], 1, 0), "BadRequest"),
            (FetchSegments(APP, 9, [0], 0, 3), "BadRequest"),  # only 2 partitions
            (FetchSegments(APP, 12345, [0], 0, 1), "MapOutputMissing"),  # unknown shuffle
            (FetchSegments(APP, 9, [0, 7], 0, 1), "MapOutputMissing"),
            (FetchSegments("other-app", 9, [0], 0, 1), "MapOutputMissing"),
        ]:
            conn.send_msg(op)
            reply = conn.recv_msg(FetchReply)
            assert (reply.ok, reply.error_code) == (False, code), (op, reply)
        assert reply.map_index == 0
        conn.send_msg(FetchSegments(APP, 12345, [0, 4], 0, 1))
        assert conn.recv_msg(FetchReply).map_index == 0
        conn.send_msg(RemoveApp("../x"))
        assert conn.recv_msg(RemoveReply).error_code == "BadRequest"
        conn.send_msg(FetchSegments(APP, 9, [0], 0, 2))  # still in step: a good request works
        reply = conn.recv_msg(FetchReply)
        assert reply.ok and len(conn.recv_exactly(reply.lengths[0])) == reply.lengths[0]
    finally:
        conn.close()
    assert (service.root.parent / "secret.txt").exists()


def test_malformed_frames_get_an_error_and_a_closed_connection(service: ShuffleService) -> None:
    conn = raw(service)
    conn.sendall(wire.frame(b"\xc1garbage"))
    assert conn.recv_msg(FetchReply).error_code == "ProtocolError"
    with pytest.raises(Exception):
        conn.recv_frame()
    conn.close()
    conn = raw(service)
    conn.sendall(wire.frame(wire.encode({"type": "format_disk"})))  # unknown request kind
    assert conn.recv_msg(FetchReply).error_code == "ProtocolError"
    conn.close()
    with pytest.raises((AuthenticationError, ConnectionLost)):  # the service hangs up on it
        FramedSocket.connect(service.address, b"not the secret", timeout_s=5, frame_bytes_max=MiB)
    assert service.rejected_connections == 1
    sock = socket.create_connection(service.address, timeout=5)  # silence, then hang up
    sock.close()
    with ShuffleClient(service.address, SECRET) as client:  # still serving
        assert client.remove_app("nothing-here") is False


def test_remove_app_deletes_its_files(service: ShuffleService, tmp_path: Path) -> None:
    dep = ShuffleDependency(None, 10, HashPartitioner(2))  # type: ignore[arg-type]
    statuses = write_maps(service, dep, [words(1000, s) for s in range(2)])
    keep = service.root / "other-app"
    keep.mkdir()
    (keep / "shuffle_0_0.data").write_bytes(b"")
    with ShuffleClient(service.address, SECRET) as client:
        with pytest.raises(BadRequest):
            client.remove_app("../x")
        assert client.remove_app(APP) is True
        assert not (service.root / APP).exists() and keep.exists()
        assert client.remove_app(APP) is False
        with pytest.raises(FetchFailed, match="MapOutputMissing"):
            client.fetch(APP, 10, [0], 0)
    with pytest.raises(FetchFailed):
        read(statuses, dep, 0, tmp_path)


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:7077") == ("127.0.0.1", 7077)
    assert parse_address("[::1]:80") == ("::1", 80)
    with pytest.raises(ValueError):
        parse_address("nohost")


# --- the worker runs one --------------------------------------------------------------------------------
def test_worker_runs_a_shuffle_service_and_tells_containers(make_cluster) -> None:
    rc: RunningCluster = make_cluster(workers=1, racks=1, resources="cpus:2;mem:1024")
    wdir = rc.folder / "workers" / "w1"
    address = json.loads((wdir / "address.json").read_text())
    secret = read_secret(rc.folder / "secret")
    with ShuffleClient((address["host"], address["shuffle_port"]), secret) as client:
        assert client.remove_app("no-such-app") is False
    res = ok(shoal(rc.folder, "run", "--mem", "32M", "--", "sh", "-c",
                   "echo $SHOAL_SHUFFLE_SERVICE; echo $SHOAL_SHUFFLE_DIR"))
    service, folder = res.stdout.decode().split()
    assert parse_address(service) == (address["host"], address["shuffle_port"])
    assert Path(folder) == (wdir / "shuffle").resolve() and Path(folder).is_dir()
