"""Shared pieces of the command line: cluster option, JSON output, error handling."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec

from shoal.errors import ShoalError

DEFAULT_CLUSTER = "shoal-cluster"
F = TypeVar("F", bound=Callable[..., Any])


def cluster_target(value: str | None) -> str:
    """``--cluster``, else ``SHOAL_CLUSTER``, else ``./shoal-cluster``."""
    return value or os.environ.get("SHOAL_CLUSTER") or DEFAULT_CLUSTER


cluster_option = click.option(
    "--cluster",
    "-c",
    "cluster",
    metavar="DIR|shoal://HOST:PORT",
    default=None,
    help="Cluster folder or master address (default: $SHOAL_CLUSTER, else ./shoal-cluster).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def print_json(data: Any) -> None:
    click.echo(json.dumps(msgspec.to_builtins(data), indent=2, sort_keys=False))


def fail(message: str) -> None:
    click.echo(f"shoal: error: {message}", err=True)
    sys.exit(1)


def friendly_errors(fn: F) -> F:
    """Turn expected failures into one clear line and exit status 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ShoalError as exc:
            fail(f"{exc} [{exc.code}]")
        except BrokenPipeError:
            sys.stderr.close()
            sys.exit(0)
        except OSError as exc:  # local files: missing, not a directory, no permission, disk full
            fail(f"{exc.strerror or exc}: {exc.filename}" if getattr(exc, "filename", None) else str(exc))

    return wrapper  # type: ignore[return-value]


def fmt_time(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def connect(cluster: str | None):
    import shoal

    return shoal.connect(cluster_target(cluster))


def local_path(p: str) -> Path:
    return Path(p).expanduser()
