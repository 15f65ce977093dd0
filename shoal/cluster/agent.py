"""The agent: a worker's half of the resource manager (Mesos agent / YARN NodeManager).

It registers its resources and attributes with the master, long-polls for launch and
kill commands, runs containers through :class:`~shoal.cluster.containers.ContainerRuntime`
and sends every task status change back until the master has it. It also serves one
small RPC port from which clients read container output.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import shutil
import threading
import time
from pathlib import Path

import psutil

from shoal.cluster import protocol as p
from shoal.cluster.containers import ContainerRuntime
from shoal.cluster.resources import Resources, parse_attributes, parse_resources
from shoal.core.config import Config
from shoal.core.rpc import RpcServer
from shoal.core.rpc_client import RpcClient
from shoal.errors import BadRequest, ShoalError, UnknownTask

log = logging.getLogger("shoal.agent")

DEFAULT_PORTS = (31000, 32000)  # Mesos' default port range
STATUS_BATCH_MAX = 256
RETRY_S = 0.5
OUTPUT_POLL_S = 0.05
OUTPUT_WAIT_MAX_S = 30.0


def detect_resources(folder: Path) -> Resources:
    """What this machine offers when ``--resources`` is not given (Mesos' defaults):
    all CPUs; memory minus min(1 GiB, half); free disk minus min(5 GiB, half); ports 31000-32000."""
    mib = 1024 * 1024
    mem = psutil.virtual_memory().total / mib
    disk = shutil.disk_usage(folder).free / mib
    return Resources.of(
        cpus=float(psutil.cpu_count() or 1),
        mem=float(int(mem - min(1024, mem / 2))),
        disk=float(int(disk - min(5 * 1024, disk / 2))),
    ).with_ranges("ports", [DEFAULT_PORTS])


def agent_resources(folder: Path, spec: str | None) -> Resources:
    """``--resources`` overrides the detected value of each kind it names."""
    detected = detect_resources(folder)
    if not spec:
        return detected
    given = parse_resources(spec)
    scalars = {**detected.scalars, **given.scalars}
    ranges = {**detected.ranges, **given.ranges}
    out = Resources.of(scalars)
    for name, r in ranges.items():
        out = out.with_ranges(name, r)
    return out


class Agent:
    """Runs on a worker's process in threads (the worker is not an asyncio program)."""

    def __init__(
        self,
        *,
        agent_id: str,
        folder: Path,
        host: str,
        rack: str,
        master: tuple[str, int],
        secret: bytes,
        config: Config,
        resources: str | None = None,
        attributes: str | None = None,
        node_env: dict[str, str] | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.folder = folder
        self.host = host
        self.rack = rack
        self.config = config
        self.total = agent_resources(folder, resources)
        attrs = parse_attributes(attributes or "")
        attrs.setdefault("rack", rack)
        self.attributes = attrs
        self.rpc = RpcClient(master, secret, config.rpc)
        self.secret = secret
        self._stop = threading.Event()
        self._updates: queue.Queue[p.TaskStatus] = queue.Queue()
        self.runtime = ContainerRuntime(
            folder / "containers",
            agent_id=agent_id,
            isolation=config.cluster.isolation,
            kill_grace_s=config.cluster.kill_grace_s,
            memory_poll_s=config.cluster.memory_poll_s,
            on_status=self._updates.put,
            log=log,
            node_env=node_env,
        )
        self.rpc_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: RpcServer | None = None
        self._threads: list[threading.Thread] = []

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Clean up after a previous run, serve output, register; may be retried."""
        if self._server is None:
            swept = self.runtime.sweep_orphans()
            if swept:
                log.warning("killed %d containers left by a previous run of this agent", swept)
            self._start_server()
        self._register()
        for target, name in ((self._poll_loop, "agent-poll"), (self._status_loop, "agent-status")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Kill every container, tell the master, stop serving."""
        self._stop.set()
        self.runtime.shutdown()
        self._flush_updates()
        if self._loop is not None and self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.close(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        for t in self._threads:
            t.join(5)
        self.rpc.close()

    def info(self) -> p.AgentInfo:
        return p.AgentInfo(
            self.agent_id, self.host, self.rpc_port, self.rack, self.attributes, self.total, self.runtime.isolation
        )

    def _register(self) -> None:
        self.rpc.call(p.REGISTER_AGENT, p.RegisterAgentReq(self.info(), self.runtime.reports()), timeout_s=10)
        log.info("agent registered: %s, isolation %s", self.total.format(), self.runtime.isolation)

    # --- commands from the master ---------------------------------------------------------------------
    def _poll_loop(self) -> None:
        wait_s = self.config.cluster.poll_wait_s
        while not self._stop.is_set():
            try:
                resp = self.rpc.call(p.AGENT_POLL, p.AgentPollReq(self.agent_id, wait_s), timeout_s=wait_s + 10)
                if resp.reregister:
                    self._register()
                    continue
                for command in resp.commands:
                    self._execute(command)
            except ShoalError as exc:
                if not self._stop.is_set():
                    log.warning("poll of the master failed: %s", exc)
                    self._stop.wait(RETRY_S)
            except Exception:
                log.exception("agent poll loop error")
                self._stop.wait(RETRY_S)

    def _execute(self, command: p.AgentCommand) -> None:
        if isinstance(command, p.LaunchContainer):
            try:
                self.runtime.launch(command.spec, command.framework_id)
            except ShoalError as exc:
                self._updates.put(
                    p.TaskStatus(command.spec.task_id, "failed", self.agent_id, command.framework_id,
                                 f"launch failed: {exc}", None, None, time.time())
                )
        else:
            try:
                self.runtime.kill(command.task_id, command.reason)
            except UnknownTask:
                log.info("kill of unknown container %s ignored", command.task_id)

    # --- status updates (resent until the master has them) -------------------------------------------------
    def _status_loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._updates.get(timeout=0.5)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < STATUS_BATCH_MAX:
                try:
                    batch.append(self._updates.get_nowait())
                except queue.Empty:
                    break
            while not self._send(batch) and not self._stop.is_set():
                self._stop.wait(RETRY_S)
            if self._stop.is_set():
                for status in batch:
                    self._updates.put(status)

    def _send(self, batch: list[p.TaskStatus]) -> bool:
        try:
            self.rpc.call(p.STATUS_UPDATE, p.StatusUpdateReq(self.agent_id, batch), timeout_s=10)
            return True
        except ShoalError as exc:
            log.warning("status update failed (will retry): %s", exc)
            return False

    def _flush_updates(self) -> None:
        """At shutdown: one last attempt to send what the status loop had not sent."""
        batch: list[p.TaskStatus] = []
        while True:
            try:
                batch.append(self._updates.get_nowait())
            except queue.Empty:
                break
        if batch:
            self._send(batch)

    # --- container output ------------------------------------------------------------------------------------
    def _start_server(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._server = RpcServer(self.secret, self.config.rpc, log)
            self._server.register(p.READ_OUTPUT, self._read_output)
            _, self.rpc_port = loop.run_until_complete(self._server.start(self.host, 0))
            ready.set()
            loop.run_forever()
            loop.close()

        t = threading.Thread(target=run, name="agent-rpc", daemon=True)
        t.start()
        if not ready.wait(10):
            raise RuntimeError("agent RPC server did not start")

    async def _read_output(self, req: p.ReadOutputReq) -> p.OutputChunk:
        if req.offset < 0 or req.max_bytes <= 0:
            raise BadRequest("offset must be >= 0 and max_bytes > 0")
        deadline = time.monotonic() + min(max(req.wait_s, 0.0), OUTPUT_WAIT_MAX_S)
        max_bytes = min(req.max_bytes, self.config.rpc.frame_bytes_max // 2)
        while True:
            chunk = self.runtime.read_output(req.task_id, req.stream, req.offset, max_bytes)
            if chunk.data or chunk.finished or time.monotonic() >= deadline:
                return chunk
            # The task writes straight to its files, so nothing signals new bytes:
            # re-check at a fixed interval until the deadline.
            await asyncio.sleep(OUTPUT_POLL_S)
