"""Executors as containers from the resource manager (Spark on Mesos, coarse-grained).

The driver registers as a framework, accepts offers until it holds
``spark.executor.instances`` containers of ``spark.executor.cores`` CPUs and
``spark.executor.memory``, and replaces executors that are lost. A container runs
one executor process per core (Python runs one task per process). A container that
ends as ``lost`` means its agent is gone, and with it the node's shuffle service:
the scheduler then treats that node's map outputs as lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING, Any

from shoal.cluster import protocol as p
from shoal.cluster.framework import Framework
from shoal.cluster.local import resolve
from shoal.cluster.resources import Resources
from shoal.compute.backends import _user_paths
from shoal.core.rpc_client import RpcClient
from shoal.core.units import parse_size

if TYPE_CHECKING:
    from shoal.compute.context import ComputeContext
    from shoal.compute.driver import Driver

log = logging.getLogger("compute.cluster")

# Offers that do not fit (or arrive when we hold enough executors) are declined for
# this long, so other frameworks get them; a lost executor revives offers at once.
DECLINE_FILTER_S = 5.0
REGISTER_TIMEOUT_S = 30.0


class ClusterBackend:
    def __init__(self, master: str, ctx: ComputeContext) -> None:
        c = ctx.conf
        target = None if master == "shoal" else master
        self.address = resolve(target)
        self.cluster_target = master if master != "shoal" else os.environ.get("SHOAL_CLUSTER", "")
        if self.address.folder is not None:
            self.cluster_target = str(self.address.folder.resolve())
        if self.cluster_target:
            # shoal:/// paths in this application mean this cluster's file system.
            from shoal.compute.input_paths import set_default_cluster

            set_default_cluster(self.cluster_target)
        self.instances = int(c.get("spark.executor.instances", 2))
        self.cores = int(c.get("spark.executor.cores", 1))
        mem = c.get("spark.executor.memory", "1g")
        self.memory_mib = max(64, parse_size(_size_text(mem)) // (1 << 20))
        # Spill threshold inside the container: leave room for the interpreter and
        # the batch being written (PySpark's spark.python.worker.memory plays this role).
        self.spill_bytes = int(self.memory_mib * (1 << 20) * 0.6 / self.cores)
        self.default_parallelism = max(2, self.instances * self.cores)
        loopback = self.address.master[0] in ("127.0.0.1", "localhost", "::1")
        self.bind_host = "127.0.0.1" if loopback else "0.0.0.0"
        self.advertise_host = "127.0.0.1" if loopback else c.get("spark.driver.host", _my_address(self.address.master))
        self.app_name = ctx.appName
        self.fw: Framework | None = None
        self.driver: Driver | None = None
        self.tasks: dict[str, int] = {}  # container task id -> executor processes in it
        self.launched = 0
        self._tasks: list[asyncio.Task] = []
        self.lost_nodes: set[str] = set()

    # --- backend protocol -------------------------------------------------------------------
    def start(self, driver: Driver) -> None:
        self.driver = driver
        fut = asyncio.run_coroutine_threadsafe(self._register(), driver.loop)
        fut.result(REGISTER_TIMEOUT_S)

    def stop(self) -> None:
        if self.cluster_target:
            from shoal.compute.input_paths import set_default_cluster

            set_default_cluster(None)  # the next context in this process may use another cluster
        driver = self.driver
        if driver is None or self.fw is None:
            return

        async def shutdown() -> None:
            for t in self._tasks:
                t.cancel()
            assert self.fw is not None
            await self.fw.unregister()  # kills any executor still running

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), driver.loop).result(30)
        except Exception as exc:  # the master may be gone already
            log.warning("could not unregister from the cluster: %s", exc)

    def node_alive(self, node_id: str) -> bool:
        return node_id not in self.lost_nodes

    # --- framework ------------------------------------------------------------------------
    async def _register(self) -> None:
        rpc = RpcClient(self.address.master, self.address.secret)
        self.fw = await Framework.register(name=f"shoal-compute {self.app_name}", rpc=rpc)
        self.fw._owns_rpc = True  # closed when the framework unregisters
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._offers()), loop.create_task(self._updates())]

    def _wanted(self) -> int:
        return self.instances - len(self.tasks)

    async def _offers(self) -> None:
        assert self.fw is not None
        need = Resources.of(cpus=self.cores, mem=self.memory_mib)
        async for offer in self.fw.offers():
            try:
                if self._wanted() <= 0 or not offer.resources.contains(need):
                    await self.fw.decline(offer, DECLINE_FILTER_S)
                    continue
                # One executor per offer, so executors spread over the agents (each
                # round offers every agent); the rest comes back next round.
                spec = self._spec(offer)
                self.tasks[spec.task_id] = self.cores
                await self.fw.accept(offer, [spec], filter_s=0.0)
            except Exception as exc:  # a rescinded offer, a transient RPC error: keep going
                log.warning("offer %s: %s", offer.offer_id, exc)

    def _spec(self, offer: p.Offer) -> p.TaskSpec:
        driver = self.driver
        assert driver is not None
        self.launched += 1
        task_id = f"{driver.app_id}-exec-{self.launched}"
        env = {
            "SHOAL_EXECUTOR_ID": task_id,
            "SHOAL_EXECUTOR_DRIVER": f"{self.advertise_host}:{driver.address[1]}",
            "SHOAL_EXECUTOR_SECRET": driver.secret.hex(),
            "SHOAL_EXECUTOR_APP_ID": driver.app_id,
            "SHOAL_EXECUTOR_NODE_ID": offer.agent_id,
            "SHOAL_EXECUTOR_RACK": offer.rack,
            "SHOAL_EXECUTOR_SLOTS": str(self.cores),
            "SHOAL_EXECUTOR_MEMORY_BYTES": str(self.spill_bytes),
            "SHOAL_EXECUTOR_PYTHONPATH": os.pathsep.join(_user_paths()),
            "SHOAL_CLUSTER": self.cluster_target,
            "SHOAL_NODE_ID": offer.agent_id,
            "SHOAL_SHUFFLE_SECRET": self.address.secret.hex(),
        }
        if self.address.folder is None:
            env["SHOAL_SECRET"] = self.address.secret.decode()
        return p.TaskSpec(task_id=task_id, name=f"executor {self.app_name}",
                          command=[sys.executable, "-m", "shoal.compute.executor"],
                          resources=Resources.of(cpus=self.cores, mem=self.memory_mib), env=env)

    async def _updates(self) -> None:
        assert self.fw is not None
        driver = self.driver
        assert driver is not None
        async for status in self.fw.updates():
            if status.state not in p.TERMINAL_STATES or status.task_id not in self.tasks:
                continue
            slots = self.tasks.pop(status.task_id)
            node_lost = status.state == "lost"
            if node_lost and status.agent_id:
                self.lost_nodes.add(status.agent_id)
            reason = f"container {status.state}: {status.message}".strip()
            for i in range(slots):
                driver.executor_lost(_executor_id(status.task_id, i, slots), reason, node_lost)
            if not driver._stopped:
                await self.fw.revive()


def _executor_id(task_id: str, index: int, slots: int) -> str:
    return task_id if slots == 1 else f"{task_id}/{index}"


def _size_text(v: Any) -> str:
    s = str(v).strip()
    if s and s[-1].lower() in "kmgt":
        return s + "iB"
    return s


def _my_address(master: tuple[str, int]) -> str:
    """The local address that routes to the master (what executors dial back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(master)
            return s.getsockname()[0]
        except OSError:
            return socket.gethostname()
