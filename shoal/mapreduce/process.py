"""Running one Hadoop Streaming command over a stream of input bytes, as Hadoop's
``PipeMapRed`` does for a mapper, reducer or combiner.

The command is split like a shell word list and run without a shell, in its own session
(so its whole process group can be killed, as YARN kills a container's process tree).
Three threads move the bytes: a writer feeds the input to its stdin, the calling thread
reads its stdout in large unaligned chunks, and a stderr thread reads its stderr line by
line, where Hadoop's reporter protocol is understood::

    reporter:counter:<group>,<counter>,<amount>    add amount to a counter
    reporter:status:<message>                      set the task's status

Every other stderr line is kept in a bounded tail (for the failure message) and
appended to the task's stderr log. The run fails (``StreamingCommandFailed``) when the
command cannot be started, exits non-zero, is killed by a signal, or exits with status 0
before reading all its input (writing the rest gets a broken pipe, which fails the task
in Hadoop too).
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from shoal.errors import StreamingCommandFailed

MiB = 1024 * 1024
READ_BYTES = 1 * MiB  # one os.read of the command's stdout
PIPE_BYTES = 1 * MiB  # asked-for capacity of the stdin/stdout pipes (Linux default: 64 KiB)
STDERR_LINE_MAX = 64 * 1024  # a longer stderr line is handled as several lines
STDERR_TAIL_LINES = 20
STDERR_TAIL_CHARS = 4096
# CPython raises an asynchronous exception (the executor's TaskKilled) only between
# bytecodes, never inside a blocking call: waits are sliced so a kill is seen this soon.
KILL_CHECK_S = 0.2
REPORTER_PREFIX = "reporter:"  # Hadoop's stream.stderr.reporter.prefix
_AMOUNT = re.compile(r"[+-]?[0-9]+")  # what Java's Long.parseLong accepts


@dataclass
class ProcessStats:
    """What one run of a streaming command did."""

    input_bytes: int
    output_bytes: int
    exit_code: int
    counters: dict[tuple[str, str], int] = field(default_factory=dict)
    status: str = ""
    stderr_tail: str = ""
    seconds: float = 0.0


def split_command(command: str) -> list[str]:
    """The argv of a streaming command: split like a shell word list (quotes and
    backslashes as in ``sh``) but never run by a shell, as Hadoop Streaming does."""
    try:
        return _split(command)
    except ValueError as e:
        raise StreamingCommandFailed(f"streaming command cannot be parsed: {command!r} ({e})") from None


def _split(command: str) -> list[str]:
    argv = shlex.split(command)
    if not argv:
        raise ValueError("it is empty")
    return argv


def _find_program(name: str, cwd: str, env: dict[str, str]) -> str | None:
    """The absolute path to execute for ``argv[0]``: in ``cwd`` first (where ``-file``
    scripts are shipped: Hadoop puts the task directory first on the PATH), then on
    the command's PATH; a name holding a '/' is relative to ``cwd``. Absolute, because
    the child resolves a relative one after changing to ``cwd``."""
    path = os.path.join(os.path.abspath(cwd), name)
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    if "/" not in name:
        found = shutil.which(name, path=env.get("PATH", os.defpath))
        if found is not None:
            return os.path.abspath(found)
    return None


def _kill_group(pgid: int) -> None:
    """SIGKILL a process group. Callers hold its leader unreaped, so the id is not reused."""
    if pgid <= 0:
        raise ValueError(f"not a process group id: {pgid}")  # killpg(0) would kill our own group
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


class _Run:
    """The state of one run shared by the calling thread, the writer and the stderr thread."""

    def __init__(self, pid: int, role: str, command: str, on_counter: Callable[[str, str, int], None] | None,
                 on_status: Callable[[str], None] | None, log: IO[bytes] | None) -> None:
        self.pid = pid  # also the command's process group id (it leads its own session)
        self.role, self.command = role, command
        self.on_counter, self.on_status, self.log = on_counter, on_status, log
        self.input_bytes = 0
        self.output_bytes = 0
        self.broken_pipe = False
        self.stdin_closed = False
        self.failure: BaseException | None = None  # raised by the input, or by a callback
        self.counters: dict[tuple[str, str], int] = {}
        self.status = ""
        self.tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    def fail(self, exc: BaseException) -> None:
        """Remember the first failure of a helper thread and kill the command, which
        ends the calling thread's wait (the failure is raised there)."""
        if self.failure is None:
            self.failure = exc
        _kill_group(self.pid)

    # --- writer thread -------------------------------------------------------------------
    def feed(self, chunks: Iterable[bytes | memoryview], fd: int) -> None:
        """Write every chunk to the command's stdin, then close it (EOF for the command)."""
        it: Any = None
        try:
            it = iter(chunks)
            for chunk in it:
                view = memoryview(chunk).cast("B")
                size = view.nbytes
                done = 0
                while done < size:
                    done += os.write(fd, view[done:] if done else view)  # releases the GIL
                self.input_bytes += size
        except BrokenPipeError:
            self.broken_pipe = True  # the command closed its stdin; judged by its exit code
        except BaseException as e:  # e.g. the input file vanished: the task fails with it
            self.fail(e)
        finally:
            try:
                close = getattr(it, "close", None)
                if close is not None:
                    close()  # a generator reading a file closes it now, not at GC
            except BaseException as e:
                self.fail(e)
            finally:
                os.close(fd)
                self.stdin_closed = True

    # --- stderr thread -------------------------------------------------------------------
    def drain_stderr(self, fd: int) -> None:
        """Read the command's stderr to EOF, line by line (the reporter protocol)."""
        try:
            with io.open(fd, "rb", buffering=STDERR_LINE_MAX, closefd=False) as f:
                while line := f.readline(STDERR_LINE_MAX):
                    self._stderr_line(line)
        except BaseException as e:  # a callback raised, or the log cannot be written
            self.fail(e)

    def _stderr_line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        if text.startswith(REPORTER_PREFIX) and self._reporter(text[len(REPORTER_PREFIX):]):
            return
        self.tail.append(text[:STDERR_TAIL_CHARS])
        if self.log is not None:
            self.log.write(raw if raw.endswith(b"\n") else raw + b"\n")

    def _reporter(self, rest: str) -> bool:
        """Apply a reporter line (Hadoop trims what follows the prefix); False if malformed."""
        if rest.startswith("counter:"):
            columns = rest[len("counter:"):].strip().split(",")
            if len(columns) != 3 or not _AMOUNT.fullmatch(columns[2]):
                return False
            group, name, amount = columns[0], columns[1], int(columns[2])
            self.counters[(group, name)] = self.counters.get((group, name), 0) + amount
            if self.on_counter is not None:
                self.on_counter(group, name, amount)
            return True
        if rest.startswith("status:"):
            self.status = rest[len("status:"):].strip()
            if self.on_status is not None:
                self.on_status(self.status)
            return True
        return False

    def stderr_tail(self) -> str:
        """The last stderr lines, at most STDERR_TAIL_LINES lines and STDERR_TAIL_CHARS chars."""
        lines = list(self.tail)  # each line is at most STDERR_TAIL_CHARS long
        while len(lines) > 1 and sum(len(line) + 1 for line in lines) - 1 > STDERR_TAIL_CHARS:
            lines.pop(0)
        return "\n".join(lines)

    # --- the calling thread ----------------------------------------------------------------
    def pump(self, out_fd: int, pidfd: int | None, on_output: Callable[[bytes], None]) -> None:
        """Pass stdout to ``on_output`` until it is at EOF and the command has exited.

        The exit is seen on ``pidfd`` (readable once the command exits); without one (not
        Linux 5.3+) it is checked at each wake-up, at least every KILL_CHECK_S.
        """
        poller = select.poll()
        poller.register(out_fd, select.POLLIN)
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)
        stdout_open = running = True
        while stdout_open or running:
            for fd, _ in poller.poll(KILL_CHECK_S * 1000):
                if fd == out_fd:
                    data = os.read(out_fd, READ_BYTES)  # releases the GIL
                    if data:
                        self.output_bytes += len(data)
                        on_output(data)
                    else:
                        stdout_open = False
                        poller.unregister(out_fd)
                else:
                    running = False
                    poller.unregister(fd)
                    self._exited()
            if running and pidfd is None and os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                running = False
                self._exited()

    def _exited(self) -> None:
        """The command exited. It is a zombie until reaped, so its group id is still ours:
        kill what it left running (as YARN kills a container's process tree at the end of a
        task), which also closes the pipes they held. Output already in the pipe is still read."""
        _kill_group(self.pid)


def _join(thread: threading.Thread | None) -> BaseException | None:
    """Join a thread in slices; a kill arriving meanwhile is returned, not raised, so
    that cleaning up always finishes."""
    late = None
    while thread is not None and thread.is_alive():
        try:
            thread.join(KILL_CHECK_S)
        except BaseException as e:
            late = late or e
    return late


def _grow_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size or the user's pipe quota: keep the default


def run_streaming_command(
    command: str,
    chunks: Iterable[bytes | memoryview],
    on_output: Callable[[bytes], None],
    *,
    role: str,
    cwd: str,
    env: dict[str, str],
    on_counter: Callable[[str, str, int], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    stderr_log: str | None = None,
) -> ProcessStats:
    """Run a streaming ``command`` (``role``: mapper, reducer or combiner) with ``chunks``
    on its stdin, passing its stdout to ``on_output`` in chunks not aligned to lines.

    ``env`` is the command's whole environment and ``cwd`` its working directory.
    ``on_counter`` and ``on_status`` are called on the stderr thread. An exception
    from ``chunks``, ``on_output`` or a callback, or one raised in the calling thread
    (the executor's ``TaskKilled``, ``KeyboardInterrupt``), kills the command's process
    group and is re-raised once the command is reaped and the threads joined.
    """
    started = time.monotonic()
    try:
        argv = _split(command)
    except ValueError as e:
        raise StreamingCommandFailed(f"{role} command cannot be parsed: {command!r} ({e})") from None
    program = _find_program(argv[0], cwd, env)
    if program is None:
        local = os.path.join(cwd, argv[0])
        if os.path.isfile(local) and not os.access(local, os.X_OK):
            raise StreamingCommandFailed(
                f"{role} command is not executable: {argv[0]!r} (in {cwd}; chmod +x it, "
                f"or name its interpreter: 'python3 {argv[0]}')")
        raise StreamingCommandFailed(f"{role} command not found: {argv[0]!r}")
    log = open(stderr_log, "ab") if stderr_log else None
    fds: list[int] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        in_r, in_w = os.pipe()  # close-on-exec: no other child inherits them
        fds += [in_r, in_w]
        out_r, out_w = os.pipe()
        fds += [out_r, out_w]
        err_r, err_w = os.pipe()
        fds += [err_r, err_w]
        _grow_pipe(in_w)
        _grow_pipe(out_r)
        try:
            proc = subprocess.Popen(
                argv, executable=program, stdin=in_r, stdout=out_w, stderr=err_w, cwd=cwd, env=env,
                close_fds=True, start_new_session=True)
        except OSError as e:
            detail = e.strerror or str(e)
            if e.filename not in (None, program):
                detail += f": {e.filename}"  # e.g. the working directory
            elif e.errno == errno.ENOENT:
                detail += ": is the interpreter on its '#!' line installed?"
            raise StreamingCommandFailed(f"{role} command could not be started: {command!r} ({detail})") from None
        for fd in (in_r, out_w, err_w):  # the child's ends: EOF comes when the command's close
            fds.remove(fd)
            os.close(fd)
        run = _Run(proc.pid, role, command, on_counter, on_status, log)
        return _supervise(run, proc, chunks, on_output, in_w, out_r, err_r, fds, started)
    finally:
        if proc is not None and proc.returncode is None:  # interrupted before _supervise took it
            _kill_group(proc.pid)
            proc.wait()
        for fd in fds:
            os.close(fd)
        if log is not None:
            log.close()


def _supervise(run: _Run, proc: subprocess.Popen[bytes], chunks: Iterable[bytes | memoryview],
               on_output: Callable[[bytes], None], in_w: int, out_r: int, err_r: int,
               fds: list[int], started: float) -> ProcessStats:
    """Move the bytes until the command is done, reap it, and judge how it ended.
    ``fds`` are closed by the caller (``in_w`` only if the writer did not close it)."""
    writer = stderr = None
    pidfd: int | None = None
    late: BaseException | None = None
    try:
        try:
            pidfd = os.pidfd_open(proc.pid)
            fds.append(pidfd)
        except (AttributeError, OSError):
            pidfd = None
        stderr = threading.Thread(target=run.drain_stderr, args=(err_r,), name=f"{run.role}-stderr", daemon=True)
        stderr.start()
        writer = threading.Thread(target=run.feed, args=(chunks, in_w), name=f"{run.role}-stdin", daemon=True)
        writer.start()  # the writer closes in_w when the input ends: the command's EOF
        run.pump(out_r, pidfd, on_output)
    finally:
        # Normal end: the group's leftovers were killed at exit. Any exception: the
        # command is killed here. Either way the leader is not reaped yet (ids safe).
        _kill_group(proc.pid)
        late = _join(writer)
        late = _join(stderr) or late
        while proc.returncode is None:
            try:
                proc.wait()
            except BaseException as e:
                late = late or e
        if run.stdin_closed:
            fds.remove(in_w)
    if late is not None:
        raise late
    if run.failure is not None:
        raise run.failure
    tail = run.stderr_tail()
    code = proc.returncode
    what = f"{run.role} {run.command!r}"
    if code < 0:
        first = f"{what} was killed by signal {-code} ({_signal_name(-code)})"
    elif code > 0:
        first = f"{what} exited with status {code}"
    elif run.broken_pipe:
        first = f"{what} exited before reading all its input (Hadoop fails such tasks: Broken pipe)"
    else:
        return ProcessStats(run.input_bytes, run.output_bytes, code, run.counters, run.status, tail,
                            time.monotonic() - started)
    raise StreamingCommandFailed(first + ("\n" + tail if tail else ""))


__all__ = ["ProcessStats", "StreamingCommandFailed", "run_streaming_command", "split_command"]
