"""Reads survive a corrupt replica on disk and a worker killed with SIGKILL."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from shoal.dfs.blockstore import BlockStore

MiB = 1024 * 1024


def replica_file(folder, node_id: str, block_id: int):
    data_dir = folder / "workers" / node_id / "data" / "current" / "finalized"
    matches = list(data_dir.rglob(f"blk_{block_id}"))
    assert len(matches) == 1, f"replica of {block_id} not found on {node_id}"
    return matches[0]


@pytest.mark.slow
def test_corrupt_replica_is_skipped(make_cluster) -> None:
    rc = make_cluster(workers=3, racks=2)
    data = os.urandom(3 * MiB + 123)
    with rc.fs.open("/c.bin", "wb", replication=3) as f:
        f.write(data)
    blocks = rc.fs.blocks("/c.bin").blocks
    # Flip bytes in the replica every reader would try first, for every block.
    for b in blocks:
        first = b.locations[0]
        path = replica_file(rc.folder, first.node_id, b.block.block_id)
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
    for _ in range(3):  # replica order is shuffled per request: try several times
        assert rc.fs.cat("/c.bin") == data
    with rc.fs.open("/c.bin", "rb") as f:
        f.seek(MiB + 5)
        assert f.read(2 * MiB) == data[MiB + 5 : 3 * MiB + 5]


@pytest.mark.slow
def test_read_survives_killed_worker(make_cluster) -> None:
    rc = make_cluster(workers=3, racks=2)
    data = os.urandom(4 * MiB)
    with rc.fs.open("/k.bin", "wb", replication=2) as f:
        f.write(data)
    victim = rc.fs.blocks("/k.bin").blocks[0].locations[0].node_id
    pid = rc.worker_pid(victim)
    os.kill(pid, signal.SIGKILL)
    psutil.Process(pid).wait(10) if psutil.pid_exists(pid) else None
    # The master has not yet declared it dead: the reader must fail over by itself.
    assert rc.fs.cat("/k.bin") == data


def test_block_files_are_plain_data(tmp_path) -> None:
    """A replica on disk is the block's bytes, readable without shoal (as HDFS)."""
    store = BlockStore(tmp_path)
    w = store.create(5, 1000, 4096)
    from shoal.dfs.checksum import chunk_checksums

    payload = b"hello shoal\n" * 1000
    w.write(0, memoryview(payload), chunk_checksums(payload, 4096))
    w.finalize()
    assert store.get(5).data_path.read_bytes() == payload
