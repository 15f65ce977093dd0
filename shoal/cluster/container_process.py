"""A container's process: starting it in its group, and what its end means.

:func:`spawn` runs a task's command in a fresh folder (``sandbox/`` as its cwd, output
straight to ``stdout``/``stderr``) inside a group from the agent's isolator, with the
environment from :func:`environment`; every failure to start becomes a
:class:`SpawnError` whose message is the task's ``failed`` status. :func:`read_outcome`
and :func:`terminal_state` turn how the process ended into the terminal state Mesos
would report.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from pathlib import Path

from shoal.cluster.container_records import ContainerRecord, save_record
from shoal.cluster.isolation import ContainerGroup, Isolator, proc_stat, signal_name
from shoal.cluster.nsinit import parse_init_status
from shoal.cluster.protocol import TaskSpec
from shoal.cluster.resources import Resources

DESTROY_TIMEOUT_S = 10.0  # to kill every process of a container and remove its groups
INIT_STATUS = "init.status"  # where a namespaced container's init writes the task's outcome


class SpawnError(Exception):
    """The container's process could not start; the message says why (for its status)."""


def environment(spec: TaskSpec, sandbox: Path, host: str, agent_id: str,
                node_env: dict[str, str] | None = None) -> dict[str, str]:
    """The agent's environment without SHOAL_* (secrets), the task's, then the runtime's facts.

    ``node_env`` holds the worker's own facts for every container (its shuffle service's
    ``SHOAL_SHUFFLE_SERVICE=host:port`` and ``SHOAL_SHUFFLE_DIR``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env.update(spec.env)
    env.update(node_env or {})
    env.update(HOST=host, SANDBOX=str(sandbox), SHOAL_SANDBOX=str(sandbox), SHOAL_TASK_ID=spec.task_id,
               SHOAL_AGENT_ID=agent_id)
    ports = [port for lo, hi in spec.resources.ports() for port in range(lo, hi + 1)]
    for i, port in enumerate(ports):  # Marathon's PORT0, PORT1, ... and PORT
        env[f"PORT{i}"] = str(port)
    if ports:
        env["PORT"] = str(ports[0])
    return env


def spawn(spec: TaskSpec, framework_id: str, folder: Path, env: dict[str, str], isolator: Isolator,
          log: logging.Logger) -> tuple[subprocess.Popen[bytes], ContainerGroup]:
    """Create ``folder/sandbox``, record the container, and start its process in a new group.

    Must be called from a thread that lives as long as the agent (PR_SET_PDEATHSIG).
    Raises :class:`SpawnError` (nothing left running) when the command cannot start.
    """
    sandbox = folder / "sandbox"
    sandbox.mkdir(parents=True)
    save_record(folder, ContainerRecord(spec, framework_id, isolation=isolator.name))
    if not spec.command or not spec.command[0]:
        raise SpawnError("the task has an empty command")
    argv = ["/bin/sh", "-c", " ".join(spec.command)] if spec.shell else list(spec.command)
    problem = exec_problem(argv[0], env.get("PATH", os.defpath), sandbox)
    if problem:
        raise SpawnError(f"cannot run {argv[0]!r}: {os.strerror(problem)}")
    try:
        group = isolator.create(spec.task_id, spec.resources)
    except OSError as exc:
        raise SpawnError(f"cannot isolate container: {exc}") from None
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    out = os.open(folder / "stdout", flags, 0o644)
    err = os.open(folder / "stderr", flags, 0o644)
    try:
        proc = subprocess.Popen(
            isolator.wrap(argv, folder / INIT_STATUS), cwd=sandbox, env=env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=err, close_fds=True,
            start_new_session=True, preexec_fn=group.child_setup(),
        )
    except OSError as exc:
        group.destroy(DESTROY_TIMEOUT_S)
        raise SpawnError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
    except subprocess.SubprocessError as exc:
        group.destroy(DESTROY_TIMEOUT_S)
        raise SpawnError(f"cannot isolate container: {exc}") from None
    finally:
        os.close(out)
        os.close(err)
    group.started(proc.pid)
    st = proc_stat(proc.pid)
    try:  # before anything else: a kill -9 of the agent from here on leaves a findable record
        save_record(folder, ContainerRecord(spec, framework_id, proc.pid, st.start_ticks if st else None,
                                            isolator.name))
    except OSError as exc:
        log.error("container %s: cannot write its record: %s", spec.task_id, exc)
    return proc, group


def exec_problem(argv0: str, path: str, cwd: Path) -> int | None:
    """The errno execvp would fail with (ENOENT, EACCES), checked before anything starts."""
    if "/" in argv0:
        target = argv0 if os.path.isabs(argv0) else os.path.join(cwd, argv0)
        if not os.path.exists(target):
            return errno.ENOENT
        return errno.EACCES if os.path.isdir(target) or not os.access(target, os.X_OK) else None
    denied = False
    for d in path.split(os.pathsep):
        candidate = os.path.join(d or str(cwd), argv0)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return None
        denied = denied or os.path.exists(candidate)
    return errno.EACCES if denied else errno.ENOENT


def read_outcome(folder: Path, namespaced: bool, returncode: int) -> tuple[str, int]:
    """How the task ended: ("exit", code), ("signal", signum) or ("exec", errno). With
    namespaces the direct child is ``unshare``, so the real outcome is our init's report."""
    outcome = None
    if namespaced:
        try:
            outcome = parse_init_status((folder / INIT_STATUS).read_text())
        except OSError:
            pass
    if outcome is None:
        outcome = ("exit", returncode) if returncode >= 0 else ("signal", -returncode)
    return outcome


def terminal_state(spec: TaskSpec, outcome: tuple[str, int], oom: bool) -> tuple[str, str]:
    """(state, message) of a task that ended by itself: exit 0 -> finished; non-zero, a
    signal, a failed exec or the memory limit -> failed."""
    kind, value = outcome
    if oom:
        return "failed", memory_message(spec.resources)
    if kind == "exec":
        argv0 = "/bin/sh" if spec.shell else spec.command[0]
        return "failed", f"cannot run {argv0!r}: {os.strerror(value)}"
    if kind == "exit":
        return ("finished" if value == 0 else "failed"), f"exited with status {value}"
    return "failed", f"terminated by signal {signal_name(value)}"


def memory_message(resources: Resources) -> str:
    return f"container exceeded its memory limit ({resources.mem:g} MiB)"
