"""Running the peers of bench/compute.py: which can run here, and one timed run of a
peer in its own session (killed with everything it started on a timeout)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from _common import Sample, timed
from _compute_data import RecordsDigest, records_digest
from _compute_programs import program_source

DESCRIPTIONS = {
    "shoal": "shoal.spark SparkContext('local[2]') RDD program",
    "pyspark": "PySpark RDD API, local[2], spark.driver.memory=2g, UI off",
    "pyspark-df": "PySpark DataFrame API, local[2], spark.driver.memory=2g, UI off",
    "dask": "Dask bag, scheduler='processes', num_workers=2",
    "python": "single-process CPython",
    "gnu-sort": "LC_ALL=C sort -S 50% --parallel=2 -o out input",
}
DASK_BLOCKSIZE = 32 * 1024 * 1024
TINY_EXPECTED = sum(x * x for x in range(100))
LOG_TAIL_LINES = 12
GROUP_POLL_S = 0.25


# --- which peers can run -------------------------------------------------------------------
def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])


def _probe_import(module: str, env: dict[str, str]) -> tuple[str | None, str | None]:
    """(version, None) when ``module`` imports in a fresh interpreter, else (None, error)."""
    code = (
        f"import importlib, sys\nm = importlib.import_module({module!r})\n"
        "root = sys.modules[m.__name__.split('.')[0]]\nprint(getattr(root, '__version__', '?'))"
    )
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    except subprocess.TimeoutExpired:
        return None, f"import {module} took more than 120 s"
    if p.returncode != 0:
        last = _tail(p.stderr, 1) or f"exit status {p.returncode}"
        return None, f"import {module} failed: {last}"
    return p.stdout.strip().splitlines()[-1] if p.stdout.strip() else "?", None


def java_status(env: dict[str, str]) -> tuple[str | None, str | None]:
    """(java -version's first line, None), or (None, why PySpark cannot start)."""
    java_home = env.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java", path=env.get("PATH"))
    if not java or not os.access(java, os.X_OK):
        where = f"JAVA_HOME={java_home} has no bin/java" if java_home else "no java on PATH and JAVA_HOME is not set"
        return None, (
            f"Java not found ({where}): the PySpark peers need a Java runtime (17 or newer for PySpark 4), "
            "e.g. apt-get install openjdk-17-jre-headless"
        )
    try:
        p = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{java} -version failed: {exc}"
    if p.returncode != 0:
        return None, f"{java} -version failed: {_tail(p.stderr, 1)}"
    out = (p.stderr or p.stdout).strip().splitlines()
    return (out[0] if out else java), None


def java_too_old(pyspark_version: str | None, java_version: str | None) -> str | None:
    """PySpark 4 needs Java 17+; say so up front rather than as a JVM stack trace."""
    m = re.search(r'version "(\d+)(?:\.(\d+))?', java_version or "")
    if not m or not pyspark_version or not pyspark_version.split(".")[0].isdigit():
        return None
    major = int(m.group(2) or 0) if m.group(1) == "1" else int(m.group(1))  # "1.8.0" is Java 8
    if int(pyspark_version.split(".")[0]) >= 4 and major < 17:
        return f"PySpark {pyspark_version} needs Java 17 or newer; found {java_version}"
    return None


def gnu_sort_status() -> tuple[str | None, str | None]:
    sort = shutil.which("sort")
    if not sort:
        return None, "no sort on PATH"
    try:
        p = subprocess.run([sort, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"sort --version failed: {exc}"
    first = p.stdout.strip().splitlines()[0] if p.stdout.strip() else ""
    if p.returncode != 0 or "GNU" not in first:
        return None, f"sort is not GNU sort ({first or 'no --version'}); --parallel and -S need GNU coreutils"
    return first, None


def peer_status(peers: list[str], env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """For each peer: {"ok": True, versions...} or {"ok": False, "error": ...}."""
    status: dict[str, dict[str, Any]] = {}
    java: tuple[str | None, str | None] | None = None
    pyspark: tuple[str | None, str | None] | None = None
    for peer in peers:
        info: dict[str, Any] = {"ok": True, "description": DESCRIPTIONS[peer]}
        error = None
        if peer == "shoal":
            version, error = _probe_import("shoal.spark", env)
            info["version"] = version
        elif peer in ("pyspark", "pyspark-df"):
            pyspark = pyspark or _probe_import("pyspark", env)
            java = java or java_status(env)
            info["version"], info["java"] = pyspark[0], java[0]
            error = pyspark[1] or java[1] or java_too_old(pyspark[0], java[0])
        elif peer == "dask":
            info["version"], error = _probe_import("dask.bag", env)
        elif peer == "python":
            info["version"] = sys.version.split()[0]
        elif peer == "gnu-sort":
            info["version"], error = gnu_sort_status()
        if error:
            info = {"ok": False, "error": error, "description": DESCRIPTIONS[peer]}
        status[peer] = info
    return status


def peer_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # no host name look-up, loopback only
    env["PYTHONUNBUFFERED"] = "1"
    # Peers import as on a user's machine, from cached bytecode (this sandbox sets
    # PYTHONDONTWRITEBYTECODE, which would make every fresh interpreter recompile the
    # source-tree shoal package while pip-installed packages ship their .pyc).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_shoal() -> float:
    """Byte-compile the shoal package in place (untimed, like a first import would; a
    no-op when its __pycache__ is current). Returns the seconds it took."""
    import compileall

    import shoal

    t0 = time.perf_counter()
    compileall.compile_dir(Path(shoal.__file__).parent, quiet=1)
    return time.perf_counter() - t0


# --- running one peer once -----------------------------------------------------------------
@dataclass
class Run:
    sample: Sample
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)


def session_procs(sid: int) -> list[psutil.Process]:
    """The processes of session ``sid``: a run's process and all it started (PySpark's
    Python daemon moves to a process group of its own, but stays in the session)."""
    procs = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                procs.append(proc)
        except (OSError, psutil.Error):
            continue
    return procs


def end_session(sid: int, grace_s: float) -> int:
    """Wait (untimed) up to ``grace_s`` for what a run left behind (a JVM shutting down,
    pool workers) to exit, then SIGKILL what is left of the run's own session.
    Returns how many processes had to be killed."""
    deadline = time.monotonic() + grace_s
    left = session_procs(sid)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = session_procs(sid)
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=5)
    return len(left)


class SessionCpu(threading.Thread):
    """Polls (4 times a second) the CPU seconds of every process in one session: a JVM
    or a pool worker that its parent never reaps is missing from RUSAGE_CHILDREN."""

    def __init__(self, sid: int) -> None:
        super().__init__(daemon=True)
        self.sid = sid
        self.seen: dict[tuple[int, float], float] = {}  # (pid, create time) -> cpu seconds
        self.done = threading.Event()

    def poll(self) -> None:
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) != self.sid:
                    continue
                t = proc.cpu_times()
                self.seen[(proc.pid, proc.create_time())] = t.user + t.system
            except (OSError, psutil.Error):
                continue

    def run(self) -> None:
        while not self.done.wait(GROUP_POLL_S):
            self.poll()

    def stop(self) -> float:
        self.done.set()
        self.join()
        return sum(self.seen.values())


def run_command(cmd: list[str], env: dict[str, str], log_path: Path, timeout: float) -> tuple[Sample, str | None]:
    """Spawn ``cmd`` in a session of its own, time it to its exit; kill it at ``timeout``.
    The sample's children_cpu_s counts the whole session (the larger of RUSAGE_CHILDREN
    and the polled CPU of its processes)."""
    outcome: dict[str, Any] = {}

    def go() -> None:
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            outcome["pid"] = proc.pid
            poller = SessionCpu(proc.pid)
            poller.start()
            try:
                outcome["rc"] = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                outcome["timeout"] = True
                end_session(proc.pid, grace_s=0.0)
                proc.wait()
            except BaseException:  # interrupted: leave nothing of the run behind
                end_session(proc.pid, grace_s=0.0)
                proc.wait()
                raise
            finally:
                outcome["group_cpu_s"] = poller.stop()

    sample = timed(go)
    missed = max(0.0, outcome.get("group_cpu_s", 0.0) - sample.children_cpu_s)
    sample.children_cpu_s += missed
    sample.other_cpu_s = max(0.0, sample.other_cpu_s - missed)
    if "pid" in outcome:
        end_session(outcome["pid"], grace_s=10.0)
    if outcome.get("timeout"):
        return sample, f"timeout: killed after {timeout:g} s"
    if outcome.get("rc"):
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        return sample, f"exit status {outcome['rc']}: {_tail(text)}"
    return sample, None


@dataclass
class Workload:
    name: str
    input: Path | None
    input_bytes: int
    work: Path
    env: dict[str, str]
    timeout: float
    input_digest: RecordsDigest | None = None
    interrupted: bool = False

    def run_once(self, peer: str, run_no: int) -> Run:
        out, result_path, log_path = run_paths(self.work, f"{self.name}-{peer}-{run_no}")
        if peer == "gnu-sort":
            out.mkdir()
            cmd = ["sort", "-S", "50%", "--parallel=2", "-o", str(out / "part-00000"), str(self.input)]
            env = {**self.env, "LC_ALL": "C"}
        else:
            prog = self.work / "programs" / f"{self.name}_{peer.replace('-', '_')}.py"
            if not prog.exists():
                prog.parent.mkdir(parents=True, exist_ok=True)
                prog.write_text(program_source(peer, self.name))
            options = {"blocksize": DASK_BLOCKSIZE, "spark_local_dir": str(self.work / "spark-local")}
            cmd = [sys.executable, str(prog), str(self.input or "-"), str(out), str(result_path), json.dumps(options)]
            env = self.env
        os.sync()  # untimed: no run inherits another's dirty pages
        sample, error = run_command(cmd, env, log_path, self.timeout)
        run = Run(sample, error)
        if error is None and peer != "gnu-sort":
            try:
                run.result = json.loads(result_path.read_text())
            except (OSError, ValueError) as exc:
                run.error = f"the program exited 0 but left no result ({exc})"
        if run.error is None:
            run.check = self.check(run, out)
        shutil.rmtree(out, ignore_errors=True)
        return run

    def check(self, run: Run, out: Path) -> dict[str, Any]:
        """Untimed checks that need only this run (word counts are compared later)."""
        if self.name == "tiny":
            value = run.result.get("value")
            return {"ok": value == TINY_EXPECTED, "value": value, "expected": TINY_EXPECTED}
        if self.name == "sort":
            files = output_files(out)
            if not files:
                return {"ok": False, "detail": f"no output files in {out}"}
            digest = records_digest(files)
            want = self.input_digest
            assert want is not None
            ok = (
                digest.records == want.records
                and digest.checksum == want.checksum
                and digest.sorted_by_key
                and digest.well_formed
            )
            detail = None if ok else (
                digest.first_problem
                or f"{digest.records} records, checksum {digest.checksum:016x}; input has "
                f"{want.records} records, checksum {want.checksum:016x}"
            )
            return {"ok": ok, "files": len(files), **digest.to_json(), "detail": detail}
        return {}  # wordcount: compared across peers


def output_files(out: Path) -> list[Path]:
    """A Spark-style output folder's data files in part order (part-*, else every visible file)."""
    if not out.is_dir():
        return []
    files = sorted(p for p in out.iterdir() if p.is_file() and p.name.startswith("part-"))
    if not files:
        files = sorted(p for p in out.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
    return files


def warm(path: Path) -> None:
    """Read a file once so that every peer starts with it in the page cache."""
    with open(path, "rb") as f:
        while f.read(16 * 1024 * 1024):
            pass


# --- shared by compute.py and mapreduce.py ----------------------------------------------------
def add_run_args(ap: argparse.ArgumentParser, default_data_dir: Path, data_help: str, seed: int) -> None:
    """--data-dir, --seed, --timeout, --workdir and --keep, as every compute bench takes them."""
    ap.add_argument("--data-dir", type=Path, default=default_data_dir, help=data_help)
    ap.add_argument("--seed", type=int, default=seed, help="seed of the generated inputs")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds one peer run may take before it is killed (default 1800)")
    ap.add_argument(
        "--workdir", type=Path, default=None,
        help="parent folder for outputs, programs and logs (default: the temp dir); a fresh subfolder is "
        "made in it and removed afterwards unless --keep",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work folder (programs, logs)")


def check_run_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    if args.timeout <= 0:
        ap.error("--timeout must be positive")


def run_paths(work: Path, tag: str) -> tuple[Path, Path, Path]:
    """(output folder, result file, log file) of one peer run, fresh: parents made, old ones gone."""
    out = work / "out" / tag
    result_path = work / "results" / f"{tag}.json"
    log_path = work / "logs" / f"{tag}.log"
    for p in (out.parent, result_path.parent, log_path.parent):
        p.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    result_path.unlink(missing_ok=True)
    return out, result_path, log_path
