"""After a restart the master waits in safe mode until workers report their blocks."""

from __future__ import annotations

import os

import pytest

import shoal
from shoal.cluster.local import LocalCluster, stop_cluster
from shoal.errors import SafeMode
from tests.conftest import FAST, wait_until


@pytest.mark.slow
def test_whole_cluster_restart_keeps_data_and_uses_safe_mode(tmp_path) -> None:
    folder = tmp_path / "c"
    lc = LocalCluster(folder)
    lc.up(workers=3, racks=2, overrides=FAST)
    data = os.urandom(3 * 1024 * 1024 + 7)
    with shoal.connect(folder) as c:
        c.fs.put(__import__("io").BytesIO(data), "/keep/data.bin")
        c.fs.mkdirs("/keep/empty")
    stop_cluster(folder)

    # Master alone: the namespace is back, but no block has a live replica yet.
    lc = LocalCluster(folder)
    lc.start_master()
    try:
        with shoal.connect(folder) as c:
            assert c.fs.stat("/keep/data.bin").length == len(data)
            assert c.fs.exists("/keep/empty")
            with pytest.raises(SafeMode, match="safe mode"):
                c.fs.mkdirs("/new")
            with pytest.raises(SafeMode):
                c.fs.delete("/keep", recursive=True)
            assert c.fs.fsck("/").safe_mode is True
            for i in range(1, 4):
                lc.start_worker(f"w{i}", f"r{(i - 1) % 2 + 1}")

            def writable() -> bool:
                try:
                    c.fs.mkdirs("/new")
                    return True
                except SafeMode:
                    return False

            wait_until(writable, timeout_s=30)
            assert c.fs.cat("/keep/data.bin") == data
            assert c.fs.fsck("/").healthy
    finally:
        lc.down()
