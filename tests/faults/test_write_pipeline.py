"""A worker killed in the middle of a write pipeline: no acknowledged file is damaged."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from shoal.errors import PipelineError

MiB = 1024 * 1024


@pytest.mark.slow
def test_worker_killed_mid_pipeline(make_cluster) -> None:
    rc = make_cluster(workers=3, racks=2)
    closed = {}
    for i in range(3):
        data = os.urandom(2 * MiB + i)
        with rc.fs.open(f"/done/{i}.bin", "wb") as f:
            f.write(data)
        closed[f"/done/{i}.bin"] = data

    payload = os.urandom(24 * MiB)
    halfway = threading.Event()
    killed = threading.Event()
    outcome: dict[str, object] = {}

    def writer() -> None:
        try:
            with rc.fs.open("/inflight.bin", "wb", replication=3) as f:
                for off in range(0, len(payload), 256 * 1024):
                    f.write(payload[off : off + 256 * 1024])
                    if off >= 6 * MiB and not halfway.is_set():
                        halfway.set()
                        assert killed.wait(30)  # keep writing only once w2 is gone
            outcome["ok"] = True
        except PipelineError as exc:
            outcome["error"] = exc
        finally:
            halfway.set()

    t = threading.Thread(target=writer)
    t.start()
    assert halfway.wait(60)
    os.kill(rc.worker_pid("w2"), signal.SIGKILL)  # every pipeline here includes w2
    killed.set()
    t.join(120)
    assert not t.is_alive()
    if "error" in outcome:
        # A clear, named failure that says which pipeline broke.
        assert "pipeline" in str(outcome["error"]).lower()
    else:
        assert rc.fs.cat("/inflight.bin") == payload
    for path, data in closed.items():
        assert rc.fs.cat(path) == data


@pytest.mark.slow
def test_dead_worker_not_yet_noticed_is_skipped_at_pipeline_setup(make_cluster) -> None:
    """Before the master declares a killed worker dead it may still pick it; the writer
    abandons that block and retries without the worker (HDFS excludedNodes)."""
    rc = make_cluster(workers=3, racks=2, overrides={"dfs.dead_node_interval_s": "600"})
    pid = rc.worker_pid("w1")
    os.kill(pid, signal.SIGKILL)
    data = os.urandom(6 * MiB)
    with rc.fs.open("/around.bin", "wb", replication=2) as f:
        f.write(data)
    for b in rc.fs.blocks("/around.bin").blocks:
        assert "w1" not in {loc.node_id for loc in b.locations}
        assert len(b.locations) == 2
    assert rc.fs.cat("/around.bin") == data
