"""Running a Hadoop Streaming command (shoal.mapreduce.process): bytes in and out, the
reporter protocol on stderr, Hadoop's failure rules, and kills that leave no process,
thread or file descriptor behind."""

from __future__ import annotations

import array
import ctypes
import os
import select
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import psutil
import pytest

from shoal.compute.executor import TaskKilled
from shoal.errors import StreamingCommandFailed
from shoal.mapreduce.process import ProcessStats, run_streaming_command, split_command

MiB = 1024 * 1024
PY = sys.executable
PIDFD_OPEN = os.pidfd_open  # kept: one test hides os.pidfd_open from the code under test


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every test ends with no child process, helper thread or descriptor left over."""
    before = open_fds()
    # Other tests' fixtures (executors, daemons) may be children of this process too.
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    assert [p for p in psutil.Process().children(recursive=True) if p.pid not in children] == []
    assert [t.name for t in threading.enumerate() if t.name.endswith(("-stdin", "-stderr"))] == []
    assert open_fds() == before


def env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], **extra}


def run(command: str, data: bytes | Iterable[bytes] = b"", cwd: str = "/tmp", **kw: object) -> tuple[bytes, ProcessStats]:
    out: list[bytes] = []
    chunks = [data] if isinstance(data, bytes) else data
    stats = run_streaming_command(command, chunks, out.append, role=kw.pop("role", "mapper"), cwd=cwd,  # type: ignore[arg-type]
                                  env=kw.pop("env", env()), **kw)  # type: ignore[arg-type]
    return b"".join(out), stats


def fails(command: str, data: bytes | Iterable[bytes] = b"", **kw: object) -> str:
    with pytest.raises(StreamingCommandFailed) as info:
        run(command, data, **kw)
    return str(info.value)


def is_gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie left to init), waiting for a SIGKILL
    sent to it to take effect: a killed process closes its pipes just before it exits."""
    try:
        fd = PIDFD_OPEN(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], 10)[0])  # readable once it exited
    finally:
        os.close(fd)


# --- commands ----------------------------------------------------------------------------------
def test_split_command_is_shell_words_without_a_shell() -> None:
    assert split_command("python3 wc_map.py") == ["python3", "wc_map.py"]
    assert split_command("awk '{print $1}'") == ["awk", "{print $1}"]
    assert split_command('grep -v "a b" x\\ y') == ["grep", "-v", "a b", "x y"]
    assert split_command("cat | wc") == ["cat", "|", "wc"]  # no shell: '|' is an argument
    with pytest.raises(StreamingCommandFailed, match="cannot be parsed"):
        split_command("awk '{print")
    with pytest.raises(StreamingCommandFailed, match="empty"):
        split_command("   ")


def test_bytes_pass_through_unchanged_in_both_directions() -> None:
    data = os.urandom(6 * MiB) + b"\n"  # more than every pipe holds: both sides must flow at once
    chunks = [data[i : i + 700_000] for i in range(0, len(data), 700_000)]
    out, stats = run("cat", chunks)
    assert out == data
    assert (stats.input_bytes, stats.output_bytes, stats.exit_code) == (len(data), len(data), 0)
    assert stats.counters == {} and stats.status == "" and stats.stderr_tail == ""
    assert stats.seconds > 0


def test_memoryview_and_empty_chunks() -> None:
    numbers = array.array("i", range(1000))
    out, stats = run("cat", [memoryview(b"ab\n"), b"", memoryview(numbers), memoryview(b"xyz")[1:]])
    assert out == b"ab\n" + numbers.tobytes() + b"yz"
    assert stats.input_bytes == 3 + 4000 + 2


def test_quoted_arguments_reach_the_program() -> None:
    out, _ = run("awk '{print $1}'", b"a b\nc d\n")
    assert out == b"a\nc\n"


def test_environment_is_exactly_env_and_cwd_is_the_working_directory(tmp_path: Path) -> None:
    out, _ = run("env", env=env(X="1 2"))
    assert sorted(out.decode().splitlines()) == [f"PATH={os.environ['PATH']}", "X=1 2"]
    out, _ = run("pwd", cwd=str(tmp_path))
    assert out.decode().strip() == str(tmp_path)


def test_the_command_leads_its_own_session() -> None:
    out, _ = run(f"{PY} -c 'import os; print(os.getsid(0) == os.getpid() == os.getpgid(0))'")
    assert out == b"True\n"


def test_program_is_looked_up_in_cwd_then_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "wc_map.py"
    script.write_text(f"#!{PY}\nimport sys\nfor line in sys.stdin: print(len(line.split()))\n")
    script.chmod(0o755)
    assert run("wc_map.py", b"a b\nc\n", cwd=str(tmp_path))[0] == b"2\n1\n"
    assert run("./wc_map.py", b"a\n", cwd=str(tmp_path))[0] == b"1\n"
    assert run(f"{PY} wc_map.py", b"a b c\n", cwd=str(tmp_path))[0] == b"3\n"
    monkeypatch.chdir(tmp_path.parent)  # a relative working directory
    assert run("./wc_map.py", b"a\n", cwd=tmp_path.name)[0] == b"1\n"
    assert run("wc_map.py", b"a\n", cwd=tmp_path.name)[0] == b"1\n"
    (tmp_path / "cat").write_text("#!/bin/sh\nwhile read -r line; do :; done\necho not the real cat\n")
    (tmp_path / "cat").chmod(0o755)
    # The task directory comes first, as Hadoop puts it first on the PATH: a shipped
    # program wins over the system's of the same name.
    assert run("cat", b"real\n", cwd=str(tmp_path))[0] == b"not the real cat\n"
    assert run("tr a b", b"a\n", cwd=str(tmp_path))[0] == b"b\n"  # not shipped: from PATH


def test_missing_or_unrunnable_programs_are_named(tmp_path: Path) -> None:
    assert fails("nosuch --flag") == "mapper command not found: 'nosuch'"
    assert fails("./nosuch", role="reducer") == "reducer command not found: './nosuch'"
    (tmp_path / "plain.py").write_text("print(1)\n")
    msg = fails("plain.py", cwd=str(tmp_path), role="combiner")
    assert msg.startswith("combiner command is not executable: 'plain.py'")
    (tmp_path / "orphan.py").write_text("#!/no/such/interpreter\n")
    (tmp_path / "orphan.py").chmod(0o755)
    assert fails("orphan.py", cwd=str(tmp_path)).startswith("mapper command could not be started: 'orphan.py'")
    assert fails("awk '{print").startswith("mapper command cannot be parsed: ")
    msg = fails("cat", cwd=str(tmp_path / "gone"))
    assert msg == f"mapper command could not be started: 'cat' (No such file or directory: {tmp_path / 'gone'})"


# --- how a command ends ------------------------------------------------------------------------
def test_non_zero_exit_fails_with_the_stderr_tail() -> None:
    msg = fails(f"{PY} -c 'import sys; sys.stdin.read(); print(\"boom\", file=sys.stderr); sys.exit(3)'",
                b"x\n" * 1000)
    first, *rest = msg.split("\n")
    assert first.startswith("mapper ") and first.endswith(" exited with status 3")
    assert rest == ["boom"]
    assert fails("false", role="reducer") == "reducer 'false' exited with status 1"


def test_killed_by_a_signal() -> None:
    assert fails("sh -c 'kill -9 $$'") == 'mapper "sh -c \'kill -9 $$\'" was killed by signal 9 (SIGKILL)'
    assert fails("sh -c 'kill -TERM $$'").endswith("was killed by signal 15 (SIGTERM)")


def test_exiting_before_reading_all_the_input_fails_as_in_hadoop() -> None:
    msg = fails("head -1", [b"line\n" * 100_000] * 40)  # far more than the pipe holds
    assert msg == "mapper 'head -1' exited before reading all its input (Hadoop fails such tasks: Broken pipe)"
    # A command that did read everything may exit 0 without printing anything.
    assert run("sh -c 'cat > /dev/null'", [b"x" * MiB] * 8)[0] == b""


def test_a_command_that_leaves_a_background_process_ends_with_it_killed() -> None:
    out, _ = run("sh -c 'sleep 1000 & echo $!'")
    assert is_gone(int(out))


# --- stderr: the reporter protocol and the tail ----------------------------------------------------
def test_reporter_counters_and_status(tmp_path: Path) -> None:
    lines = [
        "reporter:counter:Words,Seen,5", "reporter:counter:Words,Seen,-2", "reporter:counter:Other,Bad lines,1",
        "reporter:status:halfway", "ordinary line", "reporter:counter:Words,Seen,x",
        "reporter:counter:only,two", "reporter:unknown:1", "reporter:status:  done  ",
    ]
    script = tmp_path / "r.py"
    script.write_text("import sys\nsys.stdin.read()\n" + "".join(f"print({ln!r}, file=sys.stderr)\n" for ln in lines)
                      + "sys.stderr.buffer.write(b'bad \\xff utf-8\\n')\nprint('out')\n")
    seen: list[tuple[str, str, int]] = []
    statuses: list[str] = []
    log = tmp_path / "stderr.log"
    log.write_bytes(b"earlier attempt\n")
    out, stats = run(f"{PY} r.py", b"in\n", cwd=str(tmp_path), on_counter=lambda *c: seen.append(c),
                     on_status=statuses.append, stderr_log=str(log))
    assert out == b"out\n"
    assert stats.counters == {("Words", "Seen"): 3, ("Other", "Bad lines"): 1}
    assert seen == [("Words", "Seen", 5), ("Words", "Seen", -2), ("Other", "Bad lines", 1)]
    assert statuses == ["halfway", "done"] and stats.status == "done"
    ordinary = ["ordinary line", "reporter:counter:Words,Seen,x", "reporter:counter:only,two", "reporter:unknown:1",
                "bad \ufffd utf-8"]
    assert stats.stderr_tail.split("\n") == ordinary
    assert log.read_bytes() == b"earlier attempt\n" + "\n".join(ordinary[:-1]).encode() + b"\nbad \xff utf-8\n"


def test_stderr_tail_is_bounded() -> None:
    msg = fails(f"{PY} -c 'import sys\nfor i in range(1000): print(i, file=sys.stderr)\nsys.exit(1)'")
    assert msg.split("\n")[1:] == [str(i) for i in range(980, 1000)]
    msg = fails(f"{PY} -c 'import sys\nfor i in range(30): print(str(i) * 1000, file=sys.stderr)\nsys.exit(1)'")
    tail = msg.split("\n", 1)[1]
    assert len(tail) <= 4096 and tail.endswith("29" * 500)
    msg = fails(f"{PY} -c 'import sys; print(\"x\" * 9000, file=sys.stderr); sys.exit(1)'")
    assert msg.split("\n")[1] == "x" * 4096  # one long line is cut, not dropped


# --- exceptions and kills -----------------------------------------------------------------------------
def test_an_exception_from_the_input_kills_the_command_and_propagates() -> None:
    def chunks() -> Iterator[bytes]:
        yield b"first\n"
        raise FileNotFoundError("input vanished")

    for command in ("cat", "sleep 1000"):  # reading its input, or not
        with pytest.raises(FileNotFoundError, match="input vanished"):
            run(command, chunks())


def test_an_exception_from_on_output_kills_the_command_and_propagates() -> None:
    def on_output(data: bytes) -> None:
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        run_streaming_command("yes", [], on_output, role="mapper", cwd="/tmp", env=env())
    with pytest.raises(KeyboardInterrupt):
        run_streaming_command("yes", [], lambda b: (_ for _ in ()).throw(KeyboardInterrupt()), role="mapper",
                              cwd="/tmp", env=env())


def test_an_exception_from_a_callback_kills_the_command_and_propagates() -> None:
    def on_counter(group: str, name: str, amount: int) -> None:
        raise RuntimeError("counter refused")

    with pytest.raises(RuntimeError, match="counter refused"):
        run("sh -c 'echo reporter:counter:a,b,1 >&2; exec sleep 1000'", on_counter=on_counter)


def test_the_input_generator_is_closed_when_the_command_stops_reading() -> None:
    closed = threading.Event()

    def chunks() -> Iterator[bytes]:
        try:
            while True:
                yield b"y\n" * 65536
        finally:
            closed.set()

    assert fails("head -1", chunks()).endswith("(Hadoop fails such tasks: Broken pipe)")
    assert closed.is_set()


@pytest.mark.parametrize("command", [
    "sh -c 'sleep 1000 & echo $$ $!; wait'",  # silent, waiting on a child of its own
    "sh -c 'echo $$ $$; exec cat'",  # reading its input, which never ends
])
def test_an_async_kill_reaps_the_whole_group(command: str) -> None:
    seen = b""
    started = threading.Event()
    result: dict[str, BaseException] = {}

    def on_output(data: bytes) -> None:
        nonlocal seen
        seen += data
        if b"\n" in seen:
            started.set()

    def endless() -> Iterator[bytes]:
        while True:
            yield b"z\n" * 1000

    def task() -> None:
        try:
            run_streaming_command(command, endless(), on_output, role="mapper", cwd="/tmp", env=env())
        except BaseException as e:
            result["exc"] = e

    thread = threading.Thread(target=task)
    thread.start()
    assert started.wait(30)
    pids = [int(p) for p in seen.split(b"\n")[0].split()]
    killed_at = time.monotonic()
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(TaskKilled))
    thread.join(30)
    assert not thread.is_alive()
    assert time.monotonic() - killed_at < 5  # seen within a poll slice, not when the command ends
    assert isinstance(result.get("exc"), TaskKilled)
    assert all(is_gone(pid) for pid in pids)


def test_without_pidfd_the_exit_is_still_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "pidfd_open")  # as on kernels before Linux 5.3
    data = os.urandom(3 * MiB)
    assert run("cat", data)[0] == data
    out, _ = run("sh -c 'sleep 1000 & echo $!'")  # holds stdout after the command exits
    assert is_gone(int(out))
    assert fails("false") == "mapper 'false' exited with status 1"
