"""``shoal up`` in the foreground: Ctrl-C stops every process cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil

from tests.conftest import wait_until


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_foreground_up_stops_on_ctrl_c(tmp_path) -> None:
    folder = tmp_path / "fg"
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal.cli.main", "up", "--workers", "2", "--cluster", str(folder),
         "--set", "dfs.heartbeat_interval_s=0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("cluster up"), first + proc.stderr.read()
        assert "Ctrl-C" in proc.stdout.readline()
        pids = [e["pid"] for e in json.loads((folder / "cluster.json").read_text())["processes"]]
        assert len(pids) == 3 and all(psutil.pid_exists(p) for p in pids)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped 3 processes" in out
        wait_until(lambda: all(gone(p) for p in pids), timeout_s=15)
    finally:
        if proc.poll() is None:
            proc.kill()
