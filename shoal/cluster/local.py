"""Local clusters: a master and N workers as separate processes under one folder.

Folder layout::

    DIR/secret             cluster secret (0600)
    DIR/config.json        --set overrides shared by every node
    DIR/cluster.json       the running processes (written by ``shoal up``)
    DIR/master/            master log, address.json
    DIR/workers/wN/        worker log, address.json, data/

The same daemons start by hand (``shoal master``, ``shoal worker``) on real machines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from shoal.core.config import load_config, save_overrides
from shoal.core.node import create_secret, read_secret, write_json_atomic
from shoal.core.wire import Empty
from shoal.errors import ClusterAlreadyRunning, ClusterNotFound, ClusterStartFailed, ShoalError

CLUSTER_FILE = "cluster.json"
START_TIMEOUT_S = 60.0
PORTS_BASE = 31000  # Mesos' default port range starts here
WORKER_PORTS = 100  # ports per local worker, disjoint between workers of one machine
STOP_TIMEOUT_S = 10.0
POLL_S = 0.05  # how often start-up waits re-check their condition


@dataclass(frozen=True)
class ClusterAddress:
    """How to reach a cluster's master."""

    master: tuple[str, int]
    secret: bytes
    folder: Path | None = None


def resolve(target: str | os.PathLike | None = None, secret: bytes | None = None) -> ClusterAddress:
    """A cluster folder, or ``shoal://host:port`` (secret from the argument or
    ``SHOAL_SECRET`` / ``SHOAL_SECRET_FILE``); ``None`` means ``SHOAL_CLUSTER``."""
    target = target if target is not None else os.environ.get("SHOAL_CLUSTER")
    if not target:
        raise ClusterNotFound("no cluster given: pass --cluster DIR (or shoal://HOST:PORT) or set SHOAL_CLUSTER")
    text = os.fspath(target)
    if text.startswith("shoal://"):
        hostport = text[len("shoal://") :].rstrip("/")
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise ClusterNotFound(f"bad cluster address {text!r}: expected shoal://HOST:PORT")
        if secret is None:
            if os.environ.get("SHOAL_SECRET"):
                secret = os.environ["SHOAL_SECRET"].encode()
            elif os.environ.get("SHOAL_SECRET_FILE"):
                secret = read_secret(Path(os.environ["SHOAL_SECRET_FILE"]))
            else:
                raise ClusterNotFound(f"no secret for {text}: pass one or set SHOAL_SECRET / SHOAL_SECRET_FILE")
        return ClusterAddress((host, int(port)), secret)
    folder = Path(text)
    address_file = folder / "master" / "address.json"
    if not address_file.exists():
        raise ClusterNotFound(f"no cluster in {folder} (start one with: shoal up --cluster {folder})")
    addr = json.loads(address_file.read_text())
    return ClusterAddress((addr["host"], int(addr["port"])), secret or read_secret(folder / "secret"), folder)


def _daemon_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "shoal.cli.main", *args]


def _spawn(cmd: list[str], folder: Path) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    out = open(folder / "daemon.out", "ab")
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        out.close()


def _first_exit(procs: list[subprocess.Popen], interval_s: float) -> subprocess.Popen | None:
    """Block up to ``interval_s`` on the daemons' exit; return one that has exited.

    This is the poll interval of the start-up waits below: it wakes at once if the
    first daemon (the master) dies, and otherwise lets the caller re-check its condition.
    """
    if procs and procs[0].poll() is None:
        try:
            procs[0].wait(interval_s)
        except subprocess.TimeoutExpired:
            pass
    return next((proc for proc in procs if proc.poll() is not None), None)


def _wait_for_address(path: Path, proc: subprocess.Popen, what: str, deadline: float) -> dict[str, Any]:
    """Wait for a daemon to publish its bound address (or to die trying)."""
    while True:
        if path.exists():
            data = json.loads(path.read_text())
            if data.get("pid") == proc.pid:
                return data
        if time.monotonic() >= deadline:
            raise ClusterStartFailed(f"{what} did not start within {START_TIMEOUT_S:g}s; see {path.parent}")
        if _first_exit([proc], POLL_S) is not None:
            raise ClusterStartFailed(f"{what} exited with status {proc.returncode}; see {path.parent / 'daemon.out'}")


def _alive(entry: dict[str, Any]) -> bool:
    try:
        proc = psutil.Process(entry["pid"])
        return abs(proc.create_time() - entry["started"]) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError):
        return False


def running_processes(folder: Path) -> list[dict[str, Any]]:
    """The cluster's recorded processes that are still alive."""
    path = folder / CLUSTER_FILE
    if not path.exists():
        return []
    return [e for e in json.loads(path.read_text()).get("processes", []) if _alive(e)]


class LocalCluster:
    """Starts and stops the daemons of one cluster folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.processes: list[dict[str, Any]] = []
        self._popen: dict[int, subprocess.Popen] = {}
        self.default_resources = ""  # Mesos --resources for every worker (detected kinds otherwise)
        self.worker_resources: dict[str, str] = {}  # per worker id
        self.worker_attributes: dict[str, str] = {}

    def up(
        self,
        *,
        workers: int = 3,
        racks: int = 1,
        overrides: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        resources: str = "",
        worker_resources: dict[str, str] | None = None,
        worker_attributes: dict[str, str] | None = None,
    ) -> None:
        """Start a master and ``workers`` workers on racks r1..rR; wait until all are live.

        ``resources`` (Mesos syntax) applies to every worker, ``worker_resources`` and
        ``worker_attributes`` to the worker ids they name (w1, w2, ...).
        """
        if workers < 1 or racks < 1:
            raise ClusterStartFailed("need at least one worker and one rack")
        self.default_resources = resources
        self.worker_resources = dict(worker_resources or {})
        self.worker_attributes = dict(worker_attributes or {})
        if running_processes(self.folder):
            raise ClusterAlreadyRunning(f"a cluster is already running in {self.folder} (stop it with shoal down)")
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "secret").exists():
            create_secret(self.folder)
        if overrides is not None:
            save_overrides(self.folder, overrides)
        load_config(self.folder)  # fail early on a bad key or value
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            master = self.start_master(host, deadline)
            for i in range(1, workers + 1):
                self.start_worker(f"w{i}", f"r{(i - 1) % racks + 1}", (master["host"], master["port"]), host)
            self.wait_for_workers(workers, deadline)
        except BaseException:
            self.down()
            raise

    def start_master(self, host: str = "127.0.0.1", deadline: float | None = None, port: int = 0) -> dict[str, Any]:
        """Start the master; ``port`` lets a restarted master rebind the port its workers know."""
        mdir = self.folder / "master"
        (mdir / "address.json").unlink(missing_ok=True)
        cmd = _daemon_cmd(
            "master", "--dir", str(mdir), "--config-dir", str(self.folder),
            "--secret-file", str(self.folder / "secret"), "--host", host, "--port", str(port),
        )
        proc = _spawn(cmd, mdir)
        self._record("master", "master", proc)
        return _wait_for_address(mdir / "address.json", proc, "master", deadline or time.monotonic() + START_TIMEOUT_S)

    def start_worker(
        self,
        node_id: str,
        rack: str,
        master: tuple[str, int] | None = None,
        host: str = "127.0.0.1",
        resources: str | None = None,
        attributes: str | None = None,
    ) -> int:
        """Start worker ``node_id``; workers ``wN`` of one machine get disjoint port ranges
        (``WORKER_PORTS`` each from 31000) so their containers never fight over a port."""
        if master is None:
            master = resolve(self.folder).master
        wdir = self.folder / "workers" / node_id
        resources = resources if resources is not None else self.worker_resources.get(node_id, self.default_resources)
        attributes = attributes if attributes is not None else self.worker_attributes.get(node_id, "")
        if "ports" not in (resources or "") and node_id[1:].isdigit():
            first = PORTS_BASE + (int(node_id[1:]) - 1) * WORKER_PORTS
            resources = ";".join(filter(None, [resources, f"ports:[{first}-{first + WORKER_PORTS - 1}]"]))
        cmd = _daemon_cmd(
            "worker", "--dir", str(wdir), "--config-dir", str(self.folder), "--id", node_id, "--rack", rack,
            "--master", f"{master[0]}:{master[1]}", "--secret-file", str(self.folder / "secret"), "--host", host,
        )
        if resources:
            cmd += ["--resources", resources]
        if attributes:
            cmd += ["--attributes", attributes]
        proc = _spawn(cmd, wdir)
        self._record("worker", node_id, proc)
        return proc.pid

    def wait_for_workers(self, count: int, deadline: float) -> None:
        from shoal.cluster.protocol import LIST_AGENTS
        from shoal.core.rpc_client import RpcClient
        from shoal.dfs import protocol as p

        addr = resolve(self.folder)
        with RpcClient(addr.master, addr.secret) as rpc:
            live = 0
            daemons = [self._popen[e["pid"]] for e in self.processes if e["pid"] in self._popen]
            while time.monotonic() < deadline:
                try:
                    report = rpc.call(p.CLUSTER_REPORT, Empty(), timeout_s=5)
                    live = sum(1 for n in report.nodes if n.state == "live")
                    agents = rpc.call(LIST_AGENTS, Empty(), timeout_s=5).agents
                    if live >= count and sum(1 for ag in agents if ag.state == "active") >= count:
                        return
                except ShoalError:
                    pass
                dead = _first_exit(daemons, POLL_S)
                if dead is not None:
                    entry = next(e for e in self.processes if e["pid"] == dead.pid)
                    raise ClusterStartFailed(
                        f"{entry['role']} {entry['id']} exited with status {dead.returncode}; see {self.folder} logs"
                    )
        raise ClusterStartFailed(f"only {live} of {count} workers registered within {START_TIMEOUT_S:g}s")

    def _record(self, role: str, node_id: str, proc: subprocess.Popen) -> None:
        self._popen[proc.pid] = proc
        started = psutil.Process(proc.pid).create_time()
        self.processes = [e for e in self.processes if e["id"] != node_id]
        self.processes.append({"role": role, "id": node_id, "pid": proc.pid, "started": started})
        known = [e for e in running_processes(self.folder) if e["id"] != node_id and e["pid"] not in self._popen]
        write_json_atomic(self.folder / CLUSTER_FILE, {"processes": known + self.processes})

    def wait(self) -> None:
        """Block until every daemon has exited (foreground ``shoal up``)."""
        while any(_alive(e) for e in self.processes):
            for proc in self._popen.values():
                try:
                    proc.wait(0.5)
                except subprocess.TimeoutExpired:
                    pass

    def down(self) -> int:
        """Stop every daemon (SIGTERM, then SIGKILL after a grace period)."""
        return stop_cluster(self.folder, extra=self.processes, popen=self._popen)


def stop_cluster(folder: Path, extra: list[dict[str, Any]] = (), popen: dict[int, subprocess.Popen] | None = None) -> int:
    """Stop the recorded processes of ``folder``; returns how many were running."""
    entries = {e["pid"]: e for e in [*running_processes(folder), *extra] if _alive(e)}
    # Workers first so they do not log a lost master on the way down.
    ordered = sorted(entries.values(), key=lambda e: e["role"] == "master")
    for e in ordered:
        try:
            os.kill(e["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
    procs = []
    for e in ordered:
        try:
            procs.append(psutil.Process(e["pid"]))
        except psutil.NoSuchProcess:
            pass
    # Wait for the exits themselves; whatever ignores SIGTERM past the grace period is killed.
    _, stubborn = psutil.wait_procs(procs, timeout=STOP_TIMEOUT_S)
    for proc in stubborn:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(stubborn, timeout=STOP_TIMEOUT_S)
    for pid in entries:
        child = (popen or {}).get(pid)
        if child is not None:
            try:
                child.wait(STOP_TIMEOUT_S)  # reap our own children
            except subprocess.TimeoutExpired:
                pass
    sweep_containers(folder)
    path = folder / CLUSTER_FILE
    if path.exists():
        write_json_atomic(path, {"processes": []})
    return len(entries)


def sweep_containers(folder: Path) -> int:
    """Kill and clean up containers (processes, cgroups) of workers that died without
    stopping them, e.g. after ``kill -9``; a worker that restarts does the same itself."""
    from shoal.cluster.containers import ContainerRuntime

    swept = 0
    for root in sorted((folder / "workers").glob("*/containers")):
        node_file = root.parent / "node_id"
        agent_id = node_file.read_text().strip() if node_file.exists() else root.parent.name
        runtime = ContainerRuntime(root, agent_id=agent_id)
        try:
            swept += runtime.sweep_orphans()
        finally:
            runtime.shutdown()
    return swept
