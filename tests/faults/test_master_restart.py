"""The master survives kill -9: every acknowledged namespace operation is recovered.

A client streams mkdirs / put / rm while the master is killed with SIGKILL; the
master restarts on the same port from its edit log (and checkpoint), the workers
re-register and report their replicas, and then everything the client saw succeed
is there (files byte-identical), everything it saw deleted is gone, and nothing else
exists except the one operation in flight at the kill.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import threading
from typing import Any

import psutil
import pytest

from shoal.core.wire import Empty
from shoal.dfs.client import DFSClient
from shoal.dfs.editlog import CHECKPOINT
from shoal.errors import ShoalError

from tests.conftest import RunningCluster, wait_until

ROOT = "/s"


def kill_master(rc: RunningCluster) -> int:
    """SIGKILL the master, wait until it is gone; returns the port it served."""
    address = json.loads((rc.folder / "master" / "address.json").read_text())
    os.kill(address["pid"], signal.SIGKILL)
    try:
        psutil.Process(address["pid"]).wait(10)
    except psutil.NoSuchProcess:
        pass
    return int(address["port"])


def restart_master(rc: RunningCluster, port: int, workers: int) -> DFSClient:
    """Start the master again on ``port``; wait for every worker; a fresh client."""
    rc.local.start_master(port=port)
    fs = rc.connect().fs
    rc.client.close()
    rc.client, rc.fs = fs, fs  # so teardown closes the new one

    def all_live() -> bool:
        try:
            return sum(n.state == "live" for n in fs.report().nodes) == workers
        except ShoalError:
            return False

    wait_until(all_live, timeout_s=30)
    return fs


def namespace_of(fs: DFSClient, path: str = ROOT) -> dict[str, Any]:
    """Every status under ``path`` (inclusive), by path."""
    out = {}
    stack = [path]
    while stack:
        status = fs.stat(stack.pop())
        out[status.path] = status
        if status.kind == "directory":
            stack.extend(e.path for e in fs.listdir(status.path))
    return out


def wait_readable(fs: DFSClient, files: dict[str, bytes]) -> None:
    """Replica locations come from the workers' block reports after re-registration."""

    def located() -> bool:
        return all(b.locations for path in files for b in fs.blocks(path).blocks)

    wait_until(located, timeout_s=30)


class Stream:
    """mkdirs / put / rm in a thread; records what was acknowledged, and the op in flight."""

    def __init__(self, fs: DFSClient, seed: int = 1) -> None:
        self.fs = fs
        self.rng = random.Random(seed)
        self.acked: list[tuple[str, str]] = []
        self.data: dict[str, bytes] = {}
        self.in_flight: tuple[str, str] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _ops(self):
        i = 0
        while True:
            folder = f"{ROOT}/d{i}"
            yield "mkdir", folder
            yield "put", f"{folder}/f"
            if i >= 2 and i % 2 == 0:
                yield "rm", f"{ROOT}/d{i - 2}/f"
            i += 1

    def _run(self) -> None:
        for kind, path in self._ops():
            self.in_flight = (kind, path)
            try:
                if kind == "mkdir":
                    self.fs.mkdirs(path)
                elif kind == "put":
                    data = self.rng.randbytes(self.rng.randint(0, 200_000))
                    with self.fs.open(path, "wb") as f:
                        f.write(data)
                    self.data[path] = data
                else:
                    self.fs.delete(path)
            except BaseException as exc:  # the master went away: this op's fate is unknown
                self.error = exc
                return
            self.acked.append((kind, path))
            self.in_flight = None


@pytest.mark.slow
def test_acknowledged_ops_survive_master_kill(make_cluster) -> None:
    rc = make_cluster(workers=3, racks=2)
    rc.fs.mkdirs(ROOT)
    stream = Stream(rc.connect().fs)
    stream.thread.start()
    wait_until(lambda: len(stream.acked) >= 40 or stream.error is not None, timeout_s=60)
    assert stream.error is None, stream.error
    port = kill_master(rc)
    stream.thread.join(60)
    assert not stream.thread.is_alive() and stream.error is not None
    stream.fs.close()

    fs = restart_master(rc, port, workers=3)
    dirs = {p for k, p in stream.acked if k == "mkdir"}
    removed = {p for k, p in stream.acked if k == "rm"}
    # An rm in flight when the master died may or may not have happened.
    maybe_removed = {stream.in_flight[1]} if stream.in_flight and stream.in_flight[0] == "rm" else set()
    files = {p: stream.data[p] for k, p in stream.acked if k == "put" and p not in removed | maybe_removed}
    wait_readable(fs, files)

    for path in dirs:
        assert fs.stat(path).kind == "directory", path
    for path, data in files.items():
        status = fs.stat(path)
        assert not status.under_construction and status.length == len(data), path
        assert fs.cat(path) == data, path
    for path in removed:
        assert not fs.exists(path), path
    unexpected = set(namespace_of(fs)) - dirs - set(files) - {ROOT}
    in_flight = {stream.in_flight[1]} if stream.in_flight else set()
    assert unexpected <= in_flight, unexpected

    # The restarted master takes writes again and keeps them across another restart.
    fs.mkdirs(f"{ROOT}/after")
    fs.put(io.BytesIO(b"after the restart"), f"{ROOT}/after/f")
    port = kill_master(rc)
    fs = restart_master(rc, port, workers=3)
    wait_readable(fs, {f"{ROOT}/after/f": b""})
    assert fs.cat(f"{ROOT}/after/f") == b"after the restart"


@pytest.mark.slow
def test_checkpoint_then_kill_recovers_the_same_namespace(make_cluster) -> None:
    rc = make_cluster(workers=3, racks=2)
    rng = random.Random(2)
    files: dict[str, bytes] = {}
    for i in range(12):
        rc.fs.mkdirs(f"/c/d{i}/sub")
        files[f"/c/d{i}/f"] = rng.randbytes(rng.randint(1, 150_000))
        with rc.fs.open(f"/c/d{i}/f", "wb") as f:
            f.write(files[f"/c/d{i}/f"])
    rc.fs.delete("/c/d3", recursive=True)
    rc.fs.rename("/c/d4", "/c/moved")
    files = {p.replace("/c/d4/", "/c/moved/"): d for p, d in files.items() if not p.startswith("/c/d3/")}

    txid = rc.fs.rpc.call(CHECKPOINT, Empty()).txid
    meta = rc.folder / "master" / "meta"
    assert (meta / f"fsimage_{txid:019d}").exists()
    # Some operations after the checkpoint live only in the edit log.
    rc.fs.mkdirs("/c/late")
    rc.fs.delete("/c/d5/f")
    del files["/c/d5/f"]
    before = namespace_of(rc.fs, "/c")

    port = kill_master(rc)
    fs = restart_master(rc, port, workers=3)
    assert namespace_of(fs, "/c") == before
    wait_readable(fs, files)
    for path, data in files.items():
        assert fs.cat(path) == data, path
    assert fs.rpc.call(CHECKPOINT, Empty()).txid > txid


@pytest.mark.slow
def test_clean_shutdown_checkpoints(make_cluster) -> None:
    """SIGTERM saves an image of everything, so the next start replays no edits."""
    rc = make_cluster(workers=1, racks=1, overrides={"dfs.replication": "1"})
    for i in range(20):
        rc.fs.mkdirs(f"/t/{i}")
    before = namespace_of(rc.fs, "/t")
    address = json.loads((rc.folder / "master" / "address.json").read_text())
    os.kill(address["pid"], signal.SIGTERM)
    psutil.Process(address["pid"]).wait(20)
    meta = rc.folder / "master" / "meta"
    names = sorted(f.name for f in meta.iterdir())
    assert any(n.startswith("fsimage_") for n in names), names
    (current,) = [n for n in names if n.startswith("edits_") and "-" not in n]
    assert (meta / current).stat().st_size == 0  # every edit is in the image
    fs = restart_master(rc, int(address["port"]), workers=1)
    assert namespace_of(fs, "/t") == before


@pytest.mark.slow
def test_periodic_checkpoint_by_transaction_count(make_cluster) -> None:
    rc = make_cluster(workers=1, racks=1, overrides={"dfs.replication": "1", "dfs.checkpoint_txns": "10"})
    meta = rc.folder / "master" / "meta"

    def newest_image() -> int:
        # Only finished images: a checkpoint in progress writes fsimage_<txid>.tmp first.
        return max((int(f.name[len("fsimage_"):]) for f in meta.glob("fsimage_*") if f.name[len("fsimage_"):].isdigit()),
                   default=0)

    for i in range(25):
        rc.fs.mkdirs(f"/p/{i}")
    # Checked on the master's timer tick: the first image holds at least 10 transactions.
    wait_until(lambda: newest_image() >= 10)
    before = namespace_of(rc.fs, "/p")
    port = kill_master(rc)
    fs = restart_master(rc, port, workers=1)
    assert namespace_of(fs, "/p") == before
