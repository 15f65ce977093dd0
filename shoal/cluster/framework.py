"""The Python framework API: what a scheduler (the compute engine, ``shoal run``, your
own code) uses to get resources from the cluster, in the style of Mesos' scheduler API.

    async with await Framework.register("shoal-cluster", name="my-fw") as fw:
        async for offer in fw.offers():
            if offer.resources.contains(need):
                await fw.accept(offer, [TaskSpec(...)])
                break
            await fw.decline(offer)
        status = await fw.wait_for(task_id)

See docs/resource-manager.md for the full contract.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable

from shoal.cluster import protocol as p
from shoal.cluster.local import resolve
from shoal.core.rpc_client import RpcClient
from shoal.core.wire import Empty
from shoal.errors import ConnectionLost, RpcTimeout, ShoalError, UnknownFramework

POLL_WAIT_S = 5.0
MASTER_UNREACHABLE_S = 30.0  # the poller gives up after this long without the master
RECONNECT_BACKOFF_S = 0.5  # between polls while the master is unreachable


class Framework:
    """A registered framework: offers and task status updates arrive as async iterators."""

    def __init__(self, rpc: RpcClient, framework_id: str, info: p.FrameworkInfo, *, owns_rpc: bool) -> None:
        self.rpc = rpc
        self.framework_id = framework_id
        self.info = info
        self._owns_rpc = owns_rpc
        self._offers: asyncio.Queue[p.Offer | None] = asyncio.Queue()
        self._updates: asyncio.Queue[p.TaskStatus | None] = asyncio.Queue()
        self._rescinded: set[str] = set()
        self.statuses: dict[str, p.TaskStatus] = {}
        self._changed = asyncio.Condition()
        self.error: ShoalError | None = None
        self._closed = False
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    @classmethod
    async def register(
        cls,
        target: str | os.PathLike | None = None,
        *,
        name: str,
        role: str = "*",
        weight: float = 1.0,
        failover_timeout_s: float = 0.0,
        secret: bytes | None = None,
        rpc: RpcClient | None = None,
    ) -> Framework:
        """Register with the master of ``target`` (a cluster folder or ``shoal://host:port``)."""
        owns = rpc is None
        if rpc is None:
            addr = resolve(target, secret)
            rpc = RpcClient(addr.master, addr.secret)
        info = p.FrameworkInfo(name=name, role=role, weight=weight, user=os.environ.get("USER", ""),
                               failover_timeout_s=failover_timeout_s)
        try:
            reply = await asyncio.to_thread(rpc.call, p.REGISTER_FRAMEWORK, info)
        except BaseException:
            if owns:
                rpc.close()
            raise
        return cls(rpc, reply.framework_id, info, owns_rpc=owns)

    async def __aenter__(self) -> Framework:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.unregister()

    # --- events ---------------------------------------------------------------------------------
    async def _poll(self) -> None:
        last_ok = asyncio.get_running_loop().time()
        while not self._closed:
            try:
                events = await asyncio.to_thread(
                    self.rpc.call, p.FRAMEWORK_POLL, p.FrameworkPollReq(self.framework_id, POLL_WAIT_S),
                    POLL_WAIT_S + 10,
                )
            except (ConnectionLost, RpcTimeout) as exc:
                if asyncio.get_running_loop().time() - last_ok > MASTER_UNREACHABLE_S:
                    self._fail(exc)
                    return
                await asyncio.sleep(RECONNECT_BACKOFF_S)
                continue
            except ShoalError as exc:
                self._fail(exc)
                return
            last_ok = asyncio.get_running_loop().time()
            self._rescinded.update(events.rescinded)
            for offer in events.offers:
                self._offers.put_nowait(offer)
            if events.updates:
                async with self._changed:
                    for status in events.updates:
                        self.statuses[status.task_id] = status
                        self._updates.put_nowait(status)
                    self._changed.notify_all()
            if events.removed:
                self._fail(UnknownFramework(f"framework {self.framework_id} was removed: {events.removed}"))
                return

    def _fail(self, exc: ShoalError) -> None:
        self.error = exc
        self._offers.put_nowait(None)
        self._updates.put_nowait(None)

        async def wake() -> None:
            async with self._changed:
                self._changed.notify_all()

        asyncio.get_running_loop().create_task(wake())

    async def offers(self) -> AsyncIterator[p.Offer]:
        """Offers as they arrive (rescinded ones are skipped); ends with the framework's error."""
        while True:
            offer = await self._offers.get()
            if offer is None:
                self._offers.put_nowait(None)
                if self.error is not None and not self._closed:
                    raise self.error
                return
            if offer.offer_id not in self._rescinded:
                yield offer

    async def updates(self) -> AsyncIterator[p.TaskStatus]:
        """Every task status update, in arrival order."""
        while True:
            status = await self._updates.get()
            if status is None:
                self._updates.put_nowait(None)
                if self.error is not None and not self._closed:
                    raise self.error
                return
            yield status

    def is_rescinded(self, offer: p.Offer | str) -> bool:
        return (offer if isinstance(offer, str) else offer.offer_id) in self._rescinded

    async def wait_for(self, task_id: str, states: Iterable[str] = p.TERMINAL_STATES, timeout_s: float | None = None) -> p.TaskStatus:
        """Wait until ``task_id`` reaches one of ``states`` (default: any terminal state)."""
        wanted = frozenset(states)

        async def wait() -> p.TaskStatus:
            async with self._changed:
                while True:
                    status = self.statuses.get(task_id)
                    if status is not None and (status.state in wanted or status.state in p.TERMINAL_STATES):
                        return status
                    if self.error is not None:
                        raise self.error
                    await self._changed.wait()

        return await asyncio.wait_for(wait(), timeout_s)

    # --- calls ------------------------------------------------------------------------------------
    async def _call(self, method, body) -> object:
        return await asyncio.to_thread(self.rpc.call, method, body)

    async def accept(self, offers: p.Offer | str | list[p.Offer | str], tasks: list[p.TaskSpec], filter_s: float = -1.0) -> None:
        """Launch ``tasks`` on the offers' agents; unused offered resources return to the pool
        and are not re-offered to this framework for ``filter_s`` (default: the cluster's)."""
        await self._call(p.ACCEPT, p.AcceptReq(self.framework_id, _ids(offers), list(tasks), filter_s))

    async def decline(self, offers: p.Offer | str | list[p.Offer | str], filter_s: float = -1.0) -> None:
        await self._call(p.DECLINE, p.DeclineReq(self.framework_id, _ids(offers), filter_s))

    async def revive(self) -> None:
        """Clear this framework's filters: every resource may be offered again (Mesos reviveOffers)."""
        await self._call(p.REVIVE, p.FrameworkReq(self.framework_id))

    async def kill(self, task_id: str) -> None:
        await self._call(p.KILL_TASK, p.KillTaskReq(self.framework_id, task_id))

    async def agents(self) -> list[p.AgentSummary]:
        return (await self._call(p.LIST_AGENTS, Empty())).agents

    async def unregister(self) -> None:
        """Leave the cluster: running tasks are killed, resources return to the pool."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.error is None:
                await self._call(p.UNREGISTER, p.FrameworkReq(self.framework_id))
        finally:
            self._poller.cancel()
            try:
                await self._poller
            except (asyncio.CancelledError, ShoalError):
                pass
            if self._owns_rpc:
                self.rpc.close()


def _ids(offers: p.Offer | str | list[p.Offer | str]) -> list[str]:
    items = offers if isinstance(offers, list) else [offers]
    return [o if isinstance(o, str) else o.offer_id for o in items]


async def stream_output(
    rpc: RpcClient, task_id: str, stream: str = "stdout", *, follow: bool = True, chunk_bytes: int = 1 << 20
) -> AsyncIterator[bytes]:
    """Bytes a task writes to ``stream``, read from its agent; with ``follow`` until it ends."""
    loc = await asyncio.to_thread(rpc.call, p.LOCATE_TASK, p.TaskReq(task_id))
    agent = RpcClient((loc.host, loc.rpc_port), rpc.secret, rpc.config)
    try:
        offset = 0
        while True:
            req = p.ReadOutputReq(task_id, stream, offset, chunk_bytes, wait_s=1.0 if follow else 0.0)
            chunk = await asyncio.to_thread(agent.call, p.READ_OUTPUT, req, 15.0)
            if chunk.data:
                yield chunk.data
            offset = chunk.offset
            if chunk.finished or (not follow and not chunk.data):
                return
    finally:
        agent.close()
