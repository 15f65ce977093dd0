"""The master daemon: the control plane's RPC server and its timers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from shoal.core.config import Config
from shoal.core.node import setup_logging, write_json_atomic
from shoal.core.rpc import RpcServer
from shoal.dfs import protocol as p
from shoal.dfs.namenode import Clock, NameNode

ADDRESS_FILE = "address.json"


async def serve_master(folder: Path, host: str, port: int, secret: bytes, config: Config) -> None:
    """Run until SIGTERM/SIGINT; publish the bound address in ``folder/address.json``."""
    log = setup_logging(folder, "master")
    namenode = NameNode(config, Clock(time.monotonic, time.time))
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
    }
    for method, handler in handlers.items():
        server.register(method, handler)
    bound_host, bound_port = await server.start(host, port)
    write_json_atomic(folder / ADDRESS_FILE, {"host": bound_host, "port": bound_port, "pid": os.getpid()})
    log.info("master listening on %s:%d", bound_host, bound_port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tick_s = min(1.0, config.dfs.heartbeat_interval_s, config.dfs.dead_node_interval_s / 4)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), tick_s)
        except asyncio.TimeoutError:
            namenode.tick()
    log.info("master stopping")
    await server.close()
