"""Pure cores do no I/O: they must not import asyncio, socket, time, os or pickle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import shoal

PURE = [
    "dfs/namespace.py",
    "dfs/replication.py",
    "dfs/namespace_ops.py",
    "dfs/inodes.py",
    "dfs/fsimage.py",
    "dfs/placement.py",
    "dfs/leases.py",
    "dfs/paths.py",
    "core/wire.py",
    "cluster/services.py",
    "cluster/services_placement.py",
    "cluster/drf.py",
    "cluster/offers.py",
    "cluster/allocator_events.py",
    "cluster/resources.py",
    "compute/scheduler.py",
    "compute/scheduler_events.py",
    "compute/scheduler_state.py",
    "compute/scheduler_slow_start.py",
    "compute/locality.py",
    "mapreduce/keys.py",
]
FORBIDDEN = {"asyncio", "socket", "time", "os", "pickle", "threading", "subprocess"}


@pytest.mark.parametrize("module", PURE)
def test_pure_core_imports_no_io(module: str) -> None:
    tree = ast.parse((Path(shoal.__file__).parent / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{module} imports {imported & FORBIDDEN}"
