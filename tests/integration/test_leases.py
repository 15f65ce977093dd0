"""The single-writer lease: held while a writer lives, recovered after it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from shoal.errors import LeaseHeld
from tests.conftest import wait_until

MiB = 1024 * 1024

WRITER = textwrap.dedent(
    """
    import sys, shoal
    c = shoal.connect(sys.argv[1])
    data = bytes(range(256)) * (4096 * int(sys.argv[3]))
    f = c.fs.open(sys.argv[2], "wb")
    f.write(data[: int(2.5 * 1024 * 1024)])
    print("written", flush=True)
    sys.stdin.read()   # block until killed
    """
)


def start_writer(folder, path: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder), path, "3"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "written"
    return proc


@pytest.mark.slow
def test_lease_recovered_after_writer_killed(make_cluster) -> None:
    rc = make_cluster(
        workers=3, racks=2, overrides={"dfs.lease_soft_limit_s": "1", "dfs.lease_hard_limit_s": "3"}
    )
    expected = (bytes(range(256)) * (4096 * 3))[: 2 * MiB]

    taken = start_writer(rc.folder, "/taken.bin")
    orphan = start_writer(rc.folder, "/orphan.bin")
    # While the writer is alive, nobody else may write the file.
    with pytest.raises(LeaseHeld):
        rc.fs.open("/taken.bin", "wb", overwrite=True)
    assert rc.fs.stat("/orphan.bin").under_construction

    for proc in (taken, orphan):
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    # Past the soft limit another client may take over the file (HDFS soft-limit recovery).
    def overwrite() -> bool:
        try:
            with rc.fs.open("/taken.bin", "wb", overwrite=True) as f:
                f.write(b"new owner")
            return True
        except LeaseHeld:
            return False

    wait_until(overwrite, timeout_s=15)
    assert rc.fs.cat("/taken.bin") == b"new owner"

    # Past the hard limit the master closes the orphan on its own, keeping the
    # complete blocks and dropping the one whose pipeline never finished.
    wait_until(lambda: not rc.fs.stat("/orphan.bin").under_construction, timeout_s=20)
    status = rc.fs.stat("/orphan.bin")
    assert status.length == 2 * MiB
    assert rc.fs.cat("/orphan.bin") == expected
