"""The worker daemon: hosts the data node and the container agent."""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from pathlib import Path

import msgspec

from shoal.cluster.agent import Agent
from shoal.compute.shuffle_service import ShuffleService
from shoal.core.config import Config
from shoal.core.node import setup_logging, write_json_atomic
from shoal.dfs.client import DFSClient
from shoal.dfs.datanode import DataNode
from shoal.dfs.webhdfs_data import DatanodeHttpThread
from shoal.errors import ShoalError

ADDRESS_FILE = "address.json"
SHUFFLE_DIR = "shuffle"  # map outputs of the executors on this worker, served by its shuffle service
NODE_ID_FILE = "node_id"
REGISTER_DEADLINE_S = 30.0
REGISTER_RETRY_S = 0.2  # retry interval while the master starts


def stable_node_id(folder: Path, requested: str | None) -> str:
    """A worker keeps its id across restarts, so the master recognises it returning."""
    path = folder / NODE_ID_FILE
    if requested:
        path.write_text(requested)
        return requested
    if path.exists():
        return path.read_text().strip()
    node_id = "w-" + secrets.token_hex(4)
    path.write_text(node_id)
    return node_id


def _register(start, what: str, deadline: float, stop: threading.Event, log) -> None:
    """Call ``start`` until the master answers (it may still be starting up)."""
    while True:
        try:
            start()
            return
        except ShoalError as exc:
            if time.monotonic() > deadline or stop.is_set():
                raise
            log.warning("%s cannot register with master yet: %s", what, exc)
            stop.wait(REGISTER_RETRY_S)


def serve_worker(
    folder: Path,
    *,
    master: tuple[str, int],
    rack: str,
    host: str,
    port: int,
    node_id: str | None,
    secret: bytes,
    config: Config,
    resources: str | None = None,
    attributes: str | None = None,
) -> None:
    """Run until SIGTERM/SIGINT."""
    folder.mkdir(parents=True, exist_ok=True)
    node_id = stable_node_id(folder, node_id)
    log = setup_logging(folder, "worker")
    datanode = DataNode(
        node_id=node_id,
        rack=rack,
        data_dir=folder / "data",
        host=host,
        port=port,
        master=master,
        secret=secret,
        config=config,
    )
    # WebHDFS data side: it acts as a DFS client on this node (first replicas local).
    http = DatanodeHttpThread(lambda: DFSClient(master, secret, node_id=node_id), host, 0)
    http_port = http.start()
    datanode.info = msgspec.structs.replace(datanode.info, http_port=http_port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # The shuffle service outlives executors: their map outputs stay fetchable after they exit.
    shuffle_dir = (folder / SHUFFLE_DIR).resolve()
    shuffle = ShuffleService(shuffle_dir, secret=secret, host=host, config=config.rpc).start()
    deadline = time.monotonic() + REGISTER_DEADLINE_S
    _register(datanode.start, "data node", deadline, stop, log)
    agent = Agent(
        agent_id=node_id, folder=folder, host=host, rack=rack, master=master, secret=secret,
        config=config, resources=resources, attributes=attributes,
        node_env={"SHOAL_SHUFFLE_SERVICE": f"{host}:{shuffle.port}", "SHOAL_SHUFFLE_DIR": str(shuffle_dir)},
    )
    _register(agent.start, "agent", deadline, stop, log)
    write_json_atomic(
        folder / ADDRESS_FILE,
        {
            "node_id": node_id, "host": host, "data_port": datanode.port, "http_port": http_port,
            "agent_port": agent.rpc_port, "shuffle_port": shuffle.port, "rack": rack, "pid": os.getpid(),
        },
    )
    stop.wait()
    log.info("worker %s stopping", node_id)
    agent.stop()
    shuffle.stop()
    http.stop()
    datanode.stop()
