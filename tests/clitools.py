"""Running the ``shoal`` command line as a real subprocess in tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SHOAL = [sys.executable, "-m", "shoal.cli.main"]


def shoal(folder: Path | str | None, *args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``shoal ARGS`` with ``SHOAL_CLUSTER=folder``; bytes out, never raises on status."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    if folder is not None:
        env["SHOAL_CLUSTER"] = str(folder)
    env["COLUMNS"] = "200"  # keep rich tables on one line per row
    return subprocess.run(
        [*SHOAL, *args], env=env, input=stdin if stdin is not None else b"", capture_output=True, timeout=timeout
    )


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, f"exit {res.returncode}: {res.stderr.decode(errors='replace')}"
    assert b"Traceback" not in res.stderr
    return res


def out_json(res: subprocess.CompletedProcess):
    return json.loads(ok(res).stdout)


def fails(res: subprocess.CompletedProcess, code: str | None = None) -> str:
    """Exit 1 with exactly one ``shoal: error:`` line (ending ``[code]`` if given)."""
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 1, f"exit {res.returncode}; stderr: {err!r}; stdout: {res.stdout[:500]!r}"
    assert "Traceback" not in err and b"Traceback" not in res.stdout, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("shoal: error: "), lines[0]
    if code is not None:
        assert lines[0].endswith(f"[{code}]"), lines[0]
    return lines[0]
