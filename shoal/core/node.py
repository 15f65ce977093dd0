"""What every daemon process shares: logging to its folder, the event loop, the secret."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from shoal.errors import ClusterNotFound

SECRET_FILE = "secret"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: structured, greppable, parseable."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(folder: Path, name: str, level: int = logging.INFO) -> logging.Logger:
    """Log JSON lines to ``folder/<name>.log`` (and warnings to stderr)."""
    folder.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.handlers.clear()
    handler = logging.FileHandler(folder / f"{name}.log")
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    stderr = logging.StreamHandler()
    stderr.setLevel(logging.ERROR)
    stderr.setFormatter(logging.Formatter(f"{name}: %(message)s"))
    root.addHandler(stderr)
    root.setLevel(level)
    return logging.getLogger(name)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run a daemon's main coroutine on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def create_secret(folder: Path) -> bytes:
    """Make a new random cluster secret readable only by its owner."""
    path = folder / SECRET_FILE
    secret = secrets.token_hex(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


def read_secret(path: Path) -> bytes:
    try:
        secret = path.read_bytes().strip()
    except FileNotFoundError:
        raise ClusterNotFound(f"no cluster secret at {path}") from None
    if not secret:
        raise ClusterNotFound(f"cluster secret file {path} is empty")
    return secret


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` so readers see the old or the new content, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def wall_clock() -> float:
    return time.time()
