"""``RDD.pipe``: stream a partition through an external command (one per partition)."""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
from collections.abc import Iterator
from typing import Any


def pipe_partition(command: str, env: dict[str, str] | None, check_code: bool, records: Iterator[Any]) -> Iterator[str]:
    """Write ``str(record)`` lines to the command's stdin from a thread; yield its
    stdout lines (without newlines). With ``check_code`` a non-zero exit raises."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.Popen(shlex.split(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=full_env)
    errors: list[BaseException] = []

    def feed() -> None:
        try:
            assert proc.stdin is not None
            for rec in records:
                proc.stdin.write(str(rec).encode() + b"\n")
        except BrokenPipeError:
            pass
        except BaseException as exc:  # the user's iterator raised: surface it in the task
            errors.append(exc)
        finally:
            try:
                proc.stdin.close()  # type: ignore[union-attr]
            except BrokenPipeError:
                pass

    feeder = threading.Thread(target=feed, daemon=True, name="pipe-feed")
    feeder.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        yield line.decode("utf-8", "replace").rstrip("\n")
    feeder.join()
    code = proc.wait()
    if errors:
        raise errors[0]
    if check_code and code:
        raise RuntimeError(f"Pipe function `{command}' exited with error code {code}")
