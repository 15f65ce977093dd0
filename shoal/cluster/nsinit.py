"""PID-namespace isolation: ``unshare`` and the tiny init that runs as PID 1.

When we are root and util-linux ``unshare`` works, a cgroup isolator starts each
container as ``unshare --pid --fork --kill-child --mount-proc --uts --mount`` running
:data:`INIT_SOURCE`, whose child is the task (Mesos' ``namespaces/pid``). The init makes
signals and exit statuses behave as outside a namespace (a bare task as PID 1 would
ignore SIGTERM and even a self-sent SIGSEGV) and writes the task's real outcome to a
file, read back with :func:`parse_init_status`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PROBE_TIMEOUT_S = 10.0
UNSHARE_FLAGS = ("--pid", "--fork", "--kill-child", "--mount-proc", "--uts", "--mount")

# PID 1 of a container's PID namespace: runs the task as its child in a new session,
# forwards termination signals to the task's process group, reaps orphans, and writes the
# task's real outcome ("exit N", "signal N" or "exec ERRNO") to the file named by argv[1].
# Run with ``python -I -S`` so it starts in ~20 ms and ~8 MiB.
INIT_SOURCE = r"""
import os, signal, sys
status_path, argv = sys.argv[1], sys.argv[2:]
FORWARD = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
child = 0
def forward(signum, frame):
    if child:
        try:
            os.killpg(child, signum)
        except OSError:
            try:
                os.kill(child, signum)
            except OSError:
                pass
for s in FORWARD:
    signal.signal(s, forward)
def report(text):
    with open(status_path + ".tmp", "w") as f:
        f.write(text)
    os.replace(status_path + ".tmp", status_path)
r, w = os.pipe()
child = os.fork()
if child == 0:
    try:
        for s in FORWARD + (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(s, signal.SIG_DFL)
        os.close(r)
        os.setsid()
        os.execvp(argv[0], argv)
    except OSError as e:
        os.write(w, str(e.errno or 0).encode())
    except BaseException:
        os.write(w, b"0")
    os._exit(127)
os.close(w)
err = os.read(r, 32)
os.close(r)
status = None
while True:
    try:
        pid, st = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    if pid == child:
        status = st
        break
if err:
    report("exec " + err.decode())
    os._exit(127)
if status is not None and os.WIFSIGNALED(status):
    report("signal %d" % os.WTERMSIG(status))
    os._exit(128 + os.WTERMSIG(status))
code = os.WEXITSTATUS(status) if status is not None else 255
report("exit %d" % code)
os._exit(code)
"""


def init_argv(unshare: str, argv: list[str], status_path: Path) -> list[str]:
    """``argv`` run as the child of our init in new PID, mount and UTS namespaces."""
    return [unshare, *UNSHARE_FLAGS, "--", sys.executable, "-I", "-S", "-c", INIT_SOURCE, str(status_path), *argv]


def parse_init_status(text: str) -> tuple[str, int] | None:
    """The init's report: ("exit", code), ("signal", signum) or ("exec", errno)."""
    kind, _, value = text.strip().partition(" ")
    if kind in ("exit", "signal", "exec") and value.lstrip("-").isdigit():
        return kind, int(value)
    return None


def probe_unshare(notes: list[str]) -> str | None:
    """The ``unshare`` binary if it can make the namespaces here (root, util-linux with
    --kill-child and --mount-proc, a trial run); else None, with the reason in ``notes``."""
    if os.geteuid() != 0:
        notes.append("namespaces: not root")
        return None
    binary = shutil.which("unshare")
    if binary is None:
        notes.append("namespaces: no unshare binary")
        return None
    try:
        helptext = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S).stdout
        missing = [f for f in ("--kill-child", "--mount-proc") if f not in helptext]
        if missing:
            notes.append(f"namespaces: unshare lacks {', '.join(missing)}")
            return None
        rc = subprocess.run([binary, *UNSHARE_FLAGS, "--", sys.executable, "-I", "-S", "-c", "pass"],
                            capture_output=True, timeout=PROBE_TIMEOUT_S).returncode
    except (OSError, subprocess.SubprocessError) as exc:
        notes.append(f"namespaces: unshare failed: {exc}")
        return None
    if rc != 0:
        notes.append(f"namespaces: unshare exited with status {rc}")
        return None
    return binary
