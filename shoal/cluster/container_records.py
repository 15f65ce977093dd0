"""What a container leaves on disk for later: its folder's records and their upkeep.

Each container has a folder ``root/<task_id>/`` (so ids must be safe file names, see
:func:`check_name`). Besides its ``stdout``, ``stderr`` and ``sandbox/``, it holds
``container.json`` (a :class:`ContainerRecord`: what a later run of the agent needs to
find and kill leftovers) and, once ended, ``status.json`` (its terminal status). Records
are written atomically (a rename); a missing or torn one reads as None.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from pathlib import Path
from typing import TypeVar

import msgspec

from shoal.cluster.protocol import TaskSpec, TaskStatus
from shoal.errors import BadRequest

RECORD_FILE = "container.json"
STATUS_FILE = "status.json"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
T = TypeVar("T")


class ContainerRecord(msgspec.Struct):
    """``container.json``: what a later run of the agent needs to find leftovers."""

    spec: TaskSpec
    framework_id: str
    pid: int = 0
    start_ticks: int | None = None
    isolation: str = ""


def check_name(what: str, value: str) -> None:
    """Ids become folder and cgroup names: no separators, no dot-dot, bounded length."""
    if not NAME_RE.fullmatch(value):
        raise BadRequest(f"bad {what} {value!r}: use up to 200 letters, digits, '.', '_' and '-'")


def save_record(folder: Path, record: ContainerRecord) -> None:
    _save(folder / RECORD_FILE, record)


def load_record(folder: Path) -> ContainerRecord | None:
    return _load(folder / RECORD_FILE, ContainerRecord)


def save_status(folder: Path, status: TaskStatus) -> None:
    _save(folder / STATUS_FILE, status)


def load_status(folder: Path) -> TaskStatus | None:
    return _load(folder / STATUS_FILE, TaskStatus)


def folders_oldest_first(root: Path, skip: set[str]) -> list[Path]:
    """The container folders under ``root`` but those named in ``skip``, oldest first."""
    folders = [(_mtime(e), e) for e in root.iterdir() if e.is_dir() and e.name not in skip]
    return [folder for _, folder in sorted(folders)]


def read_chunk(path: Path, offset: int, max_bytes: int) -> tuple[bytes, int]:
    """Up to ``max_bytes`` of ``path`` from ``offset``, and the file's size (a missing file is empty)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            return f.read(max_bytes), size
    except FileNotFoundError:
        return b"", 0


def remove_tree(path: Path, log: logging.Logger) -> None:
    """Remove a folder, absent or not; failures are logged, and what can go goes."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:  # absent, or removed concurrently (an orphan sweep)
        shutil.rmtree(path, ignore_errors=True)
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)
        shutil.rmtree(path, ignore_errors=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _save(path: Path, value: object) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        tmp.write_bytes(msgspec.json.encode(value))
        os.replace(tmp, path)
    except FileNotFoundError:  # the folder was removed meanwhile (a concurrent sweep)
        tmp.unlink(missing_ok=True)


def _load(path: Path, kind: type[T]) -> T | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=kind)
    except (OSError, msgspec.DecodeError):
        return None
