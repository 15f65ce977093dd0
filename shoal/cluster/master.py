"""The master daemon: the control plane's RPC server and its timers.

Metadata durability (HDFS NameNode semantics): on start the namespace is recovered
from ``DIR/meta`` (newest fsimage + edit log replay); every namespace mutation is
appended to the edit log, and no reply leaves the master before the log records
appended so far are fsync'd (group commit), so anything acknowledged survives
``kill -9``. Replies to reads wait too, so no client sees state that could vanish in
a crash. The namespace is checkpointed every ``dfs.checkpoint_interval_s`` or
``dfs.checkpoint_txns`` transactions, on ``dfs.checkpoint`` and on clean shutdown.
The block map is not persisted: workers re-register and send full block reports.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from shoal.cluster.manager import ResourceManager
from shoal.cluster.service_host import ServiceHost
from shoal.core.config import Config
from shoal.core.node import setup_logging, write_json_atomic
from shoal.core.rpc import Handler, RpcServer
from shoal.core.wire import Empty
from shoal.dfs import protocol as p
from shoal.dfs.editlog import CHECKPOINT, CheckpointResp, EditLog, EditLogFailed
from shoal.dfs.namenode import Clock, NameNode
from shoal.dfs.webhdfs import start_namenode_http

ADDRESS_FILE = "address.json"
META_DIR = "meta"


class MetadataStore:
    """Ties the NameNode's journal to the edit log: group-committed replies, checkpoints."""

    def __init__(self, editlog: EditLog, namenode: NameNode, config: Config) -> None:
        self.editlog = editlog
        self.namenode = namenode
        self.config = config
        self.failed = False  # a log write failed: the master must stop
        self.on_failure: Callable[[], None] = lambda: None
        self._last_checkpoint = time.monotonic()

    def durable(self, handler: Callable[[Any], Any]) -> Handler:
        """``handler`` whose reply (or error) is sent only once the log is synced."""

        async def call(req: Any) -> msgspec.Struct:
            try:
                reply = handler(req)
                if inspect.isawaitable(reply):
                    reply = await reply
            finally:
                if self.editlog.unsynced:
                    await self.sync()
            return reply

        call.__name__ = getattr(handler, "__name__", "handler")
        return call

    async def sync(self) -> None:
        """Group commit; a failed write stops the master (its memory is ahead of its disk)."""
        try:
            await self.editlog.sync()
        except EditLogFailed:
            self.failed = True
            self.on_failure()
            raise

    async def checkpoint(self) -> int:
        """Drain the log, then save the namespace as an image (blocks the loop meanwhile)."""
        while not self.editlog.idle or self.editlog.unsynced:
            await self.sync()
        txid = self.editlog.checkpoint(self.namenode.namespace)
        self._last_checkpoint = time.monotonic()
        return txid

    async def checkpoint_rpc(self, _: Empty) -> CheckpointResp:
        return CheckpointResp(await self.checkpoint())

    async def after_tick(self) -> None:
        """Make the timers' own mutations durable; checkpoint when one is due."""
        if self.editlog.unsynced:
            await self.sync()
        dfs = self.config.dfs
        due = time.monotonic() - self._last_checkpoint >= dfs.checkpoint_interval_s
        pending = self.editlog.txns_since_checkpoint
        if pending and (due or pending >= dfs.checkpoint_txns):
            await self.checkpoint()

    async def shutdown(self) -> None:
        """Clean stop: last checkpoint, then close (after a failed write: close only)."""
        try:
            if not self.failed and self.editlog.txns_since_checkpoint:
                await self.checkpoint()
        finally:
            self.editlog.close()


def recover(folder: Path, config: Config, log: logging.Logger) -> tuple[NameNode, MetadataStore]:
    """Load the namespace from ``folder/meta``; a NameNode that journals to its edit log."""
    started = time.monotonic()
    editlog, namespace, last_txid = EditLog.open(folder / META_DIR)
    namenode = NameNode(config, Clock(time.monotonic, time.time), journal=editlog.append)
    namenode.namespace = namespace
    namenode.enter_startup_safe_mode()
    # Lease timing is soft state: every file left open gets a fresh lease, so its
    # writer may carry on and an abandoned one is recovered after the hard limit.
    open_files = namespace.under_construction()
    now = time.monotonic()
    for _path, client in open_files:
        namenode.leases.renew(client, now)
    log.info(
        "recovered namespace at txid %d (image %d, %d open files) in %.3fs",
        last_txid, editlog.image_txid, len(open_files), time.monotonic() - started,
    )
    return namenode, MetadataStore(editlog, namenode, config)


async def serve_master(
    folder: Path, host: str, port: int, secret: bytes, config: Config, http_port: int = 0
) -> None:
    """Run until SIGTERM/SIGINT; publish the bound address in ``folder/address.json``."""
    log = setup_logging(folder, "master")
    namenode, store = recover(folder, config, log)
    server = RpcServer(secret, config.rpc, log)
    handlers = {
        p.MKDIRS: namenode.mkdirs,
        p.CREATE: namenode.create,
        p.APPEND: namenode.append,
        p.ADD_BLOCK: namenode.add_block,
        p.ABANDON_BLOCK: namenode.abandon_block,
        p.COMPLETE: namenode.complete,
        p.RENEW_LEASE: namenode.renew_lease,
        p.GET_BLOCK_LOCATIONS: namenode.get_block_locations,
        p.STAT: namenode.stat,
        p.LIST: namenode.list,
        p.RENAME: namenode.rename,
        p.DELETE: namenode.delete,
        p.CONTENT_SUMMARY: namenode.content_summary,
        p.REPORT_BAD_BLOCK: namenode.report_bad_block,
        p.CLUSTER_REPORT: namenode.cluster_report,
        p.GET_CONFIG: lambda _: namenode.config,
        p.REGISTER: namenode.register,
        p.HEARTBEAT: namenode.heartbeat,
        p.BLOCK_RECEIVED: namenode.block_received,
        p.FSCK: namenode.fsck,
        p.DECOMMISSION: namenode.decommission,
    }
    for method, handler in handlers.items():
        server.register(method, store.durable(handler))
    server.register(CHECKPOINT, store.checkpoint_rpc)
    manager = ResourceManager(config.cluster, log)
    manager.register(server)
    services = ServiceHost(manager, folder, config.cluster, log)
    services.register(server)
    manager.tick_hooks.append(services.tick)
    bound_host, bound_port = await server.start(host, port)
    http_runner, http_port = await start_namenode_http(
        server,
        host,
        http_port,
        lambda: {
            d.info.node_id: (d.info.host, d.info.http_port)
            for d in namenode.nodes.values()
            if d.state == "live" and d.info.http_port
        },
        rpc_address=(bound_host, bound_port),
    )
    write_json_atomic(
        folder / ADDRESS_FILE,
        {"host": bound_host, "port": bound_port, "http_port": http_port, "pid": os.getpid()},
    )
    log.info("master listening on %s:%d", bound_host, bound_port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store.on_failure = stop.set
    manager_task = asyncio.create_task(manager.run(stop))
    tick_s = min(1.0, config.dfs.heartbeat_interval_s, config.dfs.dead_node_interval_s / 4)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), tick_s)
        except asyncio.TimeoutError:
            namenode.tick()
            try:
                await store.after_tick()
            except EditLogFailed:
                break
    log.info("master stopping")
    stop.set()
    await manager_task
    await http_runner.cleanup()
    await server.close()
    await store.shutdown()
    if store.failed:
        raise EditLogFailed(f"the edit log in {folder / META_DIR} could not be written; see {folder}/master.log")
