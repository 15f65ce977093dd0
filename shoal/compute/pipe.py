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
    stdout lines (without newlines). With ``check_code`` a non-zero exit raises.

    The records are pulled in the feeding thread, so that thread runs as part of the
    task too: ``TaskContext.get()``, broadcasts and accumulators work upstream."""
    from shoal.compute.taskcontext import TaskContext

    tc = TaskContext.get()
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.Popen(shlex.split(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=full_env)
    errors: list[BaseException] = []

    def feed() -> None:
        if tc is not None:
            tc.__enter__()  # this thread computes the upstream records of the task
        try:
            assert proc.stdin is not None
            for rec in records:
                proc.stdin.write(str(rec).rstrip("\n").encode("utf-8") + b"\n")
        except BrokenPipeError:
            pass
        except BaseException as exc:  # the user's iterator raised: surface it in the task
            errors.append(exc)
        finally:
            try:
                proc.stdin.close()  # type: ignore[union-attr]
            except BrokenPipeError:
                pass
            if tc is not None:
                tc.__exit__(None, None, None)

    feeder = threading.Thread(target=feed, daemon=True, name="pipe-feed")
    feeder.start()
    assert proc.stdout is not None
    finished = False
    try:
        for line in proc.stdout:
            yield line.decode("utf-8", "replace").rstrip("\n")
        finished = True
    finally:
        if not finished:  # the consumer stopped early (take) or failed: end the command
            proc.kill()
            proc.wait()
        proc.stdout.close()
    feeder.join()
    code = proc.wait()
    if errors:
        raise errors[0]
    if check_code and code:
        raise RuntimeError(f"Pipe function `{command}' exited with error code {code}")
