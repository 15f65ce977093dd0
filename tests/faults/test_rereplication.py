"""Dead workers, corrupt replicas, returning nodes and decommissioning: data survives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from tests.conftest import wait_until

MiB = 1024 * 1024
SMALL_BLOCKS = {"dfs.block_size": "256K", "dfs.packet_bytes": "128K", "dfs.replication_max_streams": "4"}


def write(rc, path: str, size: int, replication: int = 3) -> bytes:
    data = os.urandom(size)
    with rc.fs.open(path, "wb", replication=replication) as f:
        f.write(data)
    return data


def kill(rc, node_id: str) -> None:
    pid = rc.worker_pid(node_id)
    os.kill(pid, signal.SIGKILL)
    try:
        psutil.Process(pid).wait(10)
    except psutil.NoSuchProcess:
        pass


def fully_healthy(rc, path: str, replication: int, avoid: set[str] = frozenset()) -> bool:
    report = rc.fs.fsck(path)
    for f in report.files:
        for b in f.blocks:
            nodes = {r.split("@")[0] for r in b.replicas}
            if b.status != "healthy" or len(nodes) != replication or nodes & avoid:
                return False
    return report.healthy


@pytest.mark.slow
def test_one_worker_killed_everything_re_replicated(make_cluster) -> None:
    rc = make_cluster(workers=4, racks=2, overrides=SMALL_BLOCKS)
    data = write(rc, "/fifty.bin", 50 * 256 * 1024)
    assert len(rc.fs.blocks("/fifty.bin").blocks) == 50
    victim = "w2"
    kill(rc, victim)
    wait_until(lambda: fully_healthy(rc, "/fifty.bin", 3, {victim}), timeout_s=60, interval_s=0.2)
    assert rc.fs.cat("/fifty.bin") == data
    states = {n.node_id: n.state for n in rc.fs.report().nodes}
    assert states[victim] == "dead"


@pytest.mark.slow
def test_two_workers_killed_at_once_no_block_lost(make_cluster) -> None:
    rc = make_cluster(workers=5, racks=2, overrides=SMALL_BLOCKS)
    data = write(rc, "/twenty.bin", 20 * 256 * 1024)
    kill(rc, "w1")
    kill(rc, "w4")
    wait_until(lambda: fully_healthy(rc, "/twenty.bin", 3, {"w1", "w4"}), timeout_s=60, interval_s=0.2)
    assert rc.fs.cat("/twenty.bin") == data


@pytest.mark.slow
def test_corrupt_replica_found_by_scanner_and_repaired(make_cluster) -> None:
    rc = make_cluster(
        workers=4, racks=2,
        overrides={**SMALL_BLOCKS, "dfs.scan_period_s": "0.5", "dfs.scanner_bytes_per_s": "64M"},
    )
    data = write(rc, "/rot.bin", 4 * 256 * 1024)
    block = rc.fs.blocks("/rot.bin").blocks[1]
    bad_node = block.locations[0].node_id
    finalized = rc.folder / "workers" / bad_node / "data" / "current" / "finalized"
    path = next(finalized.rglob(f"blk_{block.block.block_id}"))
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0x55
    path.write_bytes(bytes(raw))

    def repaired() -> bool:
        b = next(x for x in rc.fs.fsck("/rot.bin").files[0].blocks if x.block_id == block.block.block_id)
        holders = {r.split("@")[0] for r in b.replicas}
        return b.status == "healthy" and len(holders) == 3 and bad_node not in holders and not b.corrupt

    wait_until(repaired, timeout_s=60, interval_s=0.2)
    # The corrupt replica file itself is deleted once a good copy exists.
    wait_until(lambda: not path.exists(), timeout_s=30)
    assert rc.fs.cat("/rot.bin") == data


@pytest.mark.slow
def test_all_replicas_corrupt_is_reported_never_served(make_cluster) -> None:
    rc = make_cluster(workers=3, racks=2, overrides=SMALL_BLOCKS)
    write(rc, "/doomed.bin", 256 * 1024, replication=2)
    block = rc.fs.blocks("/doomed.bin").blocks[0]
    for loc in block.locations:
        finalized = rc.folder / "workers" / loc.node_id / "data" / "current" / "finalized"
        path = next(finalized.rglob(f"blk_{block.block.block_id}"))
        raw = bytearray(path.read_bytes())
        raw[7] ^= 0xFF
        path.write_bytes(bytes(raw))
    from shoal.errors import BlockMissing

    with pytest.raises(BlockMissing, match="checksum"):
        rc.fs.cat("/doomed.bin")
    wait_until(lambda: rc.fs.fsck("/doomed.bin").totals["corrupt"] == 1, timeout_s=20)
    assert rc.fs.fsck("/doomed.bin").healthy is False
    cli = subprocess.run(
        [sys.executable, "-m", "shoal.cli.main", "fs", "fsck", "/", "--cluster", str(rc.folder)],
        capture_output=True, text=True,
    )
    assert cli.returncode == 1
    assert "corrupt" in cli.stdout and "CORRUPT" in cli.stdout


@pytest.mark.slow
def test_returning_node_excess_trimmed(make_cluster) -> None:
    rc = make_cluster(workers=4, racks=2, overrides=SMALL_BLOCKS)
    data = write(rc, "/back.bin", 10 * 256 * 1024)
    doomed = write(rc, "/gone-while-dead.bin", 2 * 256 * 1024)
    located = rc.fs.blocks("/gone-while-dead.bin").blocks
    doomed_blocks = [b.block.block_id for b in located]
    # The victim holds a replica of the file deleted while it is dead (placement is
    # random: a fixed worker may hold none of its blocks).
    victim = located[0].locations[0].node_id
    rack = next(n.rack for n in rc.fs.report().nodes if n.node_id == victim)
    victim_dir = rc.folder / "workers" / victim / "data" / "current" / "finalized"
    on_victim = [b for b in doomed_blocks if list(victim_dir.rglob(f"blk_{b}"))]
    kill(rc, victim)
    wait_until(lambda: fully_healthy(rc, "/back.bin", 3, {victim}), timeout_s=60, interval_s=0.2)
    # A file deleted while the worker was dead: its block report will name replicas
    # the master no longer knows, which must be deleted.
    rc.fs.delete("/gone-while-dead.bin")
    assert doomed and on_victim
    rc.local.start_worker(victim, rack)
    wait_until(lambda: any(n.node_id == victim and n.state == "live" for n in rc.fs.report().nodes), timeout_s=30)
    # Its block report briefly makes blocks 4x replicated; the excess is removed.
    def trimmed() -> bool:
        report = rc.fs.fsck("/back.bin")
        return all(len(b.replicas) == 3 and b.status == "healthy" for b in report.files[0].blocks)

    wait_until(trimmed, timeout_s=60, interval_s=0.2)
    assert rc.fs.cat("/back.bin") == data
    wait_until(lambda: not any(list(victim_dir.rglob(f"blk_{b}")) for b in on_victim), timeout_s=30)


@pytest.mark.slow
def test_decommission_drains_a_node(make_cluster) -> None:
    rc = make_cluster(workers=4, racks=2, overrides=SMALL_BLOCKS)
    data = write(rc, "/drain.bin", 8 * 256 * 1024)
    node = rc.fs.blocks("/drain.bin").blocks[0].locations[0].node_id
    assert rc.fs.decommission(node).state == "decommissioning"
    wait_until(
        lambda: next(n for n in rc.fs.report().nodes if n.node_id == node).state == "decommissioned",
        timeout_s=60, interval_s=0.2,
    )
    # Every block now has 3 replicas on the other nodes.
    for b in rc.fs.fsck("/drain.bin").files[0].blocks:
        others = {r.split("@")[0] for r in b.replicas} - {node}
        assert len(others) >= 3
    kill(rc, node)
    assert rc.fs.cat("/drain.bin") == data
