"""Health checks of running containers (Marathon/Mesos): when to probe, how to count.

:class:`HealthState` holds one container's schedule and verdict: checks start at launch;
failures are ignored until the task has passed once or the check's ``grace_s`` has gone
by (Marathon's grace period); then ``max_failures`` consecutive failures mean the task
must be killed. :func:`probe` runs one check ("http": GET on the task's first port must
answer 2xx/3xx; "cmd": a shell command in the task's sandbox and environment must exit
0). The container runtime runs probes on a small thread pool and acts on the verdicts.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from shoal.cluster.isolation import SessionGroup, signal_name
from shoal.cluster.protocol import HealthCheck
from shoal.cluster.resources import Resources

HEALTH_BODY_MAX_BYTES = 64 * 1024


@dataclass(eq=False)
class HealthState:
    """One container's health checks; the runtime guards it with its lock."""

    healthy: bool | None = None  # None: not checked yet (or no health check)
    failures: int = 0  # consecutive failures that counted
    next_at: float = 0.0  # monotonic time of the next probe
    grace_until: float = 0.0  # monotonic end of the grace period
    busy: bool = False  # a probe is running

    def start(self, hc: HealthCheck, now: float) -> None:
        """The task is running: schedule its first probe."""
        # Marathon: checks start right away; failures only count once the task
        # has been healthy or its grace period is over.
        self.grace_until = now + hc.grace_s
        self.next_at = now + min(hc.interval_s, hc.grace_s)

    def due(self, now: float) -> bool:
        return not self.busy and self.next_at <= now

    def probe_done(self, hc: HealthCheck, now: float) -> None:
        """A probe returned: the next one is ``interval_s`` from now."""
        self.busy = False
        self.next_at = now + hc.interval_s

    def record(self, hc: HealthCheck, ok: bool, reason: str, now: float) -> tuple[str | None, bool]:
        """Count a probe's result: (the status message if ``healthy`` changed, whether the
        task has failed ``max_failures`` checks in a row and must be killed)."""
        change, give_up = None, False
        if ok:
            self.failures = 0
            if self.healthy is not True:
                self.healthy, change = True, "health check passed"
        elif self.healthy is None and now < self.grace_until:
            pass  # still starting up: within the grace period and never healthy yet
        else:
            self.failures += 1
            if self.healthy is not False:
                self.healthy, change = False, f"health check failed: {reason}"
            give_up = self.failures >= hc.max_failures
        return change, give_up


def probe(hc: HealthCheck, resources: Resources, sandbox: Path, env: dict[str, str]) -> tuple[bool, str]:
    """Run one check of a task with ``resources`` (its ports), ``sandbox`` and ``env``:
    (passed, what happened)."""
    if hc.kind == "http":
        ports = resources.ports()
        if not ports:
            return False, "http check needs a port, and the task has none"
        url = f"http://127.0.0.1:{ports[0][0]}{hc.path}"
        conn = http.client.HTTPConnection("127.0.0.1", ports[0][0], timeout=hc.timeout_s)
        try:
            conn.request("GET", hc.path or "/")
            resp = conn.getresponse()
            resp.read(HEALTH_BODY_MAX_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            return False, f"GET {url}: {exc}"
        finally:
            conn.close()
        return 200 <= resp.status < 400, f"GET {url} returned HTTP {resp.status}"
    proc = subprocess.Popen(["/bin/sh", "-c", hc.command], cwd=sandbox, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=SessionGroup().child_setup())
    try:
        rc = proc.wait(timeout=hc.timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
        return False, f"command {hc.command!r} timed out after {hc.timeout_s:g}s"
    if rc < 0:
        return False, f"command {hc.command!r} terminated by signal {signal_name(-rc)}"
    return rc == 0, f"command {hc.command!r} exited with status {rc}"

