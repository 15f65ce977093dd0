"""The master's file-system service: namespace, block map, workers, leases.

Decisions are delegated to pure cores (:class:`Namespace`, :class:`BlockPlacementPolicy`,
:class:`LeaseManager`); this class keeps the soft state those cores do not own (which
worker holds which replica, when each worker last heartbeat) and turns requests into
core operations. Handlers are synchronous and fast, called from the master's loop;
time comes from an injected :class:`Clock`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from shoal.core.config import Config
from shoal.core.wire import Empty
from shoal.dfs import protocol as p
from shoal.dfs.leases import LeaseManager
from shoal.dfs.namespace import (
    AbandonBlockOp,
    AddBlockOp,
    AppendOp,
    CommitBlockLengthOp,
    CompleteOp,
    CreateOp,
    DeleteOp,
    FileStatus,
    MkdirsOp,
    Namespace,
    NamespaceOp,
    OpResult,
    RecoverLeaseOp,
    RenameOp,
)
from shoal.dfs.namespace_ops import UNKNOWN_LENGTH
from shoal.dfs.blockmanager import BlockManager
from shoal.dfs.placement import BlockPlacementPolicy, NodeView, sort_by_distance
from shoal.errors import BadRequest, LeaseHeld, NoLiveWorkers, SafeMode, ShoalError

log = logging.getLogger("dfs.namenode")

LIVE = "live"
DEAD = "dead"
DECOMMISSIONING = "decommissioning"
DECOMMISSIONED = "decommissioned"
READABLE = (LIVE, DECOMMISSIONING, DECOMMISSIONED)


@dataclass(frozen=True)
class Clock:
    """Monotonic time for liveness and leases, wall time for file timestamps."""

    monotonic: Callable[[], float]
    wall: Callable[[], float]


@dataclass
class DatanodeDescriptor:
    """What the master knows of one worker."""

    info: p.DatanodeInfo
    capacity_bytes: int
    remaining_bytes: int
    pid: int
    last_heartbeat: float
    used_bytes: int = 0
    xceivers: int = 0
    state: str = LIVE
    blocks: set[int] = field(default_factory=set)
    pending_deletes: list[int] = field(default_factory=list)
    pending_commands: list[p.Command] = field(default_factory=list)

    def view(self) -> NodeView:
        draining = self.state in (DECOMMISSIONING, DECOMMISSIONED)
        return NodeView(self.info.node_id, self.info.rack, self.remaining_bytes, self.xceivers, draining)


class NameNode:
    """Handles every file-system request the master receives."""

    def __init__(self, config: Config, clock: Clock, *, seed: int | None = None, journal=None) -> None:
        self.config = config
        self.clock = clock
        self.namespace = Namespace()
        self.leases = LeaseManager()
        self.placement = BlockPlacementPolicy()
        self.rng = random.Random(seed)
        self.nodes: dict[str, DatanodeDescriptor] = {}
        self.blocks = BlockManager(lambda: self.namespace, self.placement, self.rng)
        self.journal = journal
        self.safe_mode = False

    # --- safe mode ---------------------------------------------------------------------
    def enter_startup_safe_mode(self) -> None:
        """After a restart the block map is empty: wait for block reports (HDFS safe mode)."""
        self.safe_mode = self.namespace.block_count() > 0

    def _reported_fraction(self) -> tuple[int, int]:
        total = self.namespace.block_count()
        live = {n for n, d in self.nodes.items() if d.state in READABLE}
        reported = sum(1 for holders in self.blocks.replicas.values() if holders & live)
        return reported, total

    def _check_safe_mode(self) -> None:
        if not self.safe_mode:
            return
        reported, total = self._reported_fraction()
        if total == 0 or reported / total >= self.config.dfs.safemode_threshold:
            self.safe_mode = False
            log.info("leaving safe mode: %d of %d blocks have a live replica", reported, total)

    def _writable(self, what: str) -> None:
        """Refuse namespace changes in safe mode: reads only, no re-replication storm."""
        self._check_safe_mode()  # the last block report may have just arrived
        if self.safe_mode:
            reported, total = self._reported_fraction()
            raise SafeMode(
                f"cannot {what}: the master is in safe mode until workers report their blocks "
                f"({reported} of {total} reported, {self.config.dfs.safemode_threshold:.1%} needed)"
            )

    def in_safe_mode(self) -> bool:
        return self.safe_mode

    # --- helpers ---------------------------------------------------------------------------
    def _apply(self, op: NamespaceOp) -> OpResult:
        result = self.namespace.apply(op)
        if self.journal is not None:
            self.journal(op)
        return result

    def _live(self) -> list[DatanodeDescriptor]:
        return [d for d in self.nodes.values() if d.state == LIVE]

    def _states(self) -> dict[str, str]:
        return {n: d.state for n, d in self.nodes.items()}

    def _forget_blocks(self, block_ids: tuple[int, ...] | list[int]) -> None:
        """Blocks left the namespace: schedule their replicas for deletion."""
        for bid in block_ids:
            for node_id in self.blocks.forget(bid):
                node = self.nodes.get(node_id)
                if node is not None:
                    node.blocks.discard(bid)
                    node.pending_deletes.append(bid)

    def _holder(self, path: str) -> str | None:
        for open_path, client in self.namespace.under_construction():
            if open_path == path:
                return client
        return None

    def _recover_if_expired(self, path: str) -> bool:
        """HDFS soft limit: another writer may take over a file whose holder went quiet."""
        holder = self._holder(path)
        if holder is None:
            return False
        if not self.leases.holder_expired(holder, self.clock.monotonic(), self.config.dfs.lease_soft_limit_s):
            return False
        self.recover_lease(path)
        return True

    def recover_lease(self, path: str) -> None:
        result = self._apply(RecoverLeaseOp(path, self.clock.wall()))
        self._forget_blocks(result.removed_blocks)
        self.blocks.needs_check.update(b.block_id for b in self.namespace.blocks(path))
        log.info("recovered lease on %s (dropped %d unfinished blocks)", path, len(result.removed_blocks))

    def _locate(self, block_id: int, reader_node: str | None) -> list[p.DatanodeInfo]:
        holders = [self.nodes[n] for n in self.blocks.replicas.get(block_id, ()) if self.nodes[n].state in READABLE]
        if not holders:
            # Every good copy is gone: offer the corrupt ones so the reader fails
            # on their checksums with a clear error instead of "no replica".
            holders = [self.nodes[n] for n in self.blocks.corrupt.get(block_id, ()) if self.nodes[n].state in READABLE]
        reader_rack = self.nodes[reader_node].info.rack if reader_node in self.nodes else None
        ordered = sort_by_distance(reader_node, reader_rack, [d.view() for d in holders], self.rng)
        return [self.nodes[v.node_id].info for v in ordered]

    # --- client requests ------------------------------------------------------------------
    def mkdirs(self, req: p.MkdirsReq) -> p.MkdirsResp:
        self._writable("create directories")
        return p.MkdirsResp(self._apply(MkdirsOp(req.path, req.parents, self.clock.wall())).created)

    def create(self, req: p.CreateReq) -> FileStatus:
        self._writable("create files")
        dfs = self.config.dfs
        op = CreateOp(
            req.path,
            req.client,
            req.replication or dfs.replication,
            req.block_size or dfs.block_size,
            req.overwrite,
            self.clock.wall(),
        )
        try:
            result = self._apply(op)
        except LeaseHeld:
            if not self._recover_if_expired(self.namespace.stat(req.path).path):
                raise
            result = self._apply(op)
        self._forget_blocks(result.removed_blocks)
        self.leases.renew(req.client, self.clock.monotonic())
        assert result.status is not None
        return result.status

    def append(self, req: p.AppendReq) -> p.AppendResp:
        self._writable("append")
        op = AppendOp(req.path, req.client, self.clock.wall())
        try:
            result = self._apply(op)
        except LeaseHeld:
            if not self._recover_if_expired(self.namespace.stat(req.path).path):
                raise
            result = self._apply(op)
        self.leases.renew(req.client, self.clock.monotonic())
        assert result.status is not None
        last = None
        if result.block is not None:
            last = p.LocatedBlock(result.block, self._locate(result.block.block_id, None))
        return p.AppendResp(result.status, last)

    def add_block(self, req: p.AddBlockReq) -> p.LocatedBlock:
        self._writable("add a block")
        status = self.namespace.stat(req.path)
        live = self._live()
        targets = self.placement.choose_targets(
            status.replication,
            [d.view() for d in live],
            block_size=status.block_size,
            rng=self.rng,
            writer=req.writer_node,
            excluded=set(req.excluded),
        )
        if not targets:
            raise NoLiveWorkers(
                f"no live worker can take a block of {status.block_size} bytes for {status.path} "
                f"({len(live)} live, {len(req.excluded)} excluded)"
            )
        result = self._apply(AddBlockOp(req.path, req.client, req.previous_length, self.clock.wall()))
        self.leases.renew(req.client, self.clock.monotonic())
        assert result.block is not None
        return p.LocatedBlock(result.block, [self.nodes[t.node_id].info for t in targets])

    def abandon_block(self, req: p.AbandonBlockReq) -> Empty:
        self._apply(AbandonBlockOp(req.path, req.client, req.block_id))
        self._forget_blocks([req.block_id])
        return Empty()

    def complete(self, req: p.CompleteReq) -> FileStatus:
        result = self._apply(CompleteOp(req.path, req.client, req.last_length, self.clock.wall()))
        # Now closed, its blocks are checked (a pipeline may have lost a worker).
        self.blocks.needs_check.update(b.block_id for b in self.namespace.blocks(req.path))
        if not self.namespace.files_leased_by(req.client):
            self.leases.forget(req.client)
        assert result.status is not None
        return result.status

    def renew_lease(self, req: p.RenewLeaseReq) -> Empty:
        self.leases.renew(req.client, self.clock.monotonic())
        return Empty()

    def get_block_locations(self, req: p.GetBlockLocationsReq) -> p.LocatedBlocks:
        status = self.namespace.stat(req.path)
        blocks = self.namespace.blocks(req.path)
        located = [p.LocatedBlock(b, self._locate(b.block_id, req.reader_node)) for b in blocks]
        return p.LocatedBlocks(status, located)

    def stat(self, req: p.PathReq) -> FileStatus:
        return self.namespace.stat(req.path)

    def list(self, req: p.PathReq) -> p.Listing:
        return p.Listing(self.namespace.list(req.path))

    def rename(self, req: p.RenameReq) -> FileStatus:
        self._writable("rename")
        result = self._apply(RenameOp(req.src, req.dst, self.clock.wall()))
        assert result.status is not None
        return result.status

    def delete(self, req: p.DeleteReq) -> Empty:
        self._writable("delete")
        result = self._apply(DeleteOp(req.path, req.recursive, self.clock.wall()))
        self._forget_blocks(result.removed_blocks)
        return Empty()

    def content_summary(self, req: p.PathReq):
        return self.namespace.content_summary(req.path)

    def report_bad_block(self, req: p.ReportBadBlockReq) -> Empty:
        if self.blocks.mark_corrupt(req.block_id, req.node_id):
            node = self.nodes.get(req.node_id)
            if node is not None:
                node.blocks.discard(req.block_id)
            log.warning("replica of block %d on %s is corrupt: %s", req.block_id, req.node_id, req.reason)
        return Empty()

    def fsck(self, req: p.PathReq) -> p.FsckReport:
        from shoal.dfs.fsck import fsck

        return fsck(self, req.path)

    def decommission(self, req: p.NodeReq) -> p.NodeReport:
        """Drain a worker: its replicas are copied elsewhere before it is retired."""
        node = self.nodes.get(req.node_id)
        if node is None:
            raise BadRequest(f"unknown worker {req.node_id!r}; see shoal nodes")
        if node.state == DEAD:
            raise BadRequest(f"worker {req.node_id} is dead; only a live worker can be decommissioned")
        if node.state == LIVE:
            node.state = DECOMMISSIONING
            self.blocks.needs_check.update(node.blocks)
            log.info("decommissioning %s (%d blocks to drain)", req.node_id, len(node.blocks))
        return self._node_report(node, self.clock.monotonic())

    def _node_report(self, d: DatanodeDescriptor, now: float) -> p.NodeReport:
        return p.NodeReport(
            d.info.node_id, d.info.host, d.info.data_port, d.info.rack, d.state, d.capacity_bytes,
            d.used_bytes, d.remaining_bytes, len(d.blocks), d.pid, round(now - d.last_heartbeat, 3), d.xceivers,
        )

    def cluster_report(self, _: Empty) -> p.ClusterReport:
        now = self.clock.monotonic()
        nodes = [self._node_report(d, now) for d in sorted(self.nodes.values(), key=lambda d: d.info.node_id)]
        summary = self.namespace.content_summary("/")
        under = self.blocks.under_replicated(self._states())
        return p.ClusterReport(nodes, summary.file_count, len(self.blocks.replicas), under)

    # --- worker requests ------------------------------------------------------------------
    def register(self, req: p.RegisterReq) -> p.RegisterResp:
        info = req.node
        if not info.node_id or not info.rack or not 0 < info.data_port < 65536:
            raise BadRequest(f"invalid worker registration: {info}")
        old = self.nodes.get(info.node_id)
        desc = DatanodeDescriptor(info, req.capacity_bytes, req.remaining_bytes, req.pid, self.clock.monotonic())
        if old is not None:
            # A returning worker: its replicas count again only once it reports them.
            for bid in old.blocks:
                self.blocks.remove(bid, info.node_id)
            desc.pending_deletes = old.pending_deletes
            if old.state in (DECOMMISSIONING, DECOMMISSIONED):
                desc.state = old.state
        self.nodes[info.node_id] = desc
        log.info("worker %s registered at %s:%d on rack %s", info.node_id, info.host, info.data_port, info.rack)
        return p.RegisterResp(self.config)

    def heartbeat(self, req: p.HeartbeatReq) -> p.HeartbeatResp:
        node = self.nodes.get(req.node_id)
        if node is None or node.state == DEAD:
            return p.HeartbeatResp(reregister=True)
        node.last_heartbeat = self.clock.monotonic()
        node.capacity_bytes = req.capacity_bytes
        node.used_bytes = req.used_bytes
        node.remaining_bytes = req.remaining_bytes
        node.xceivers = req.xceivers
        if req.block_report is not None:
            self._reconcile(node, req.block_report)
        commands: list[p.Command] = node.pending_commands
        node.pending_commands = []
        if node.pending_deletes:
            commands.append(p.DeleteReplicas(node.pending_deletes))
            node.pending_deletes = []
        return p.HeartbeatResp(commands)

    def block_received(self, req: p.BlockReceivedReq) -> Empty:
        node = self.nodes.get(req.node_id)
        if node is None:
            raise BadRequest(f"unknown worker {req.node_id!r}; register first")
        for replica in req.replicas:
            self._add_replica(node, replica)
        return Empty()

    def _add_replica(self, node: DatanodeDescriptor, replica: p.ReplicaReport) -> None:
        bid = replica.block_id
        info = self.namespace.block(bid)
        if info is None:
            node.pending_deletes.append(bid)  # its file is gone
            return
        if replica.gen_stamp != info.gen_stamp:
            if info.length != UNKNOWN_LENGTH and replica.gen_stamp < info.gen_stamp:
                # A replica that missed an append: stale. Keep it until a good copy
                # exists elsewhere, then delete it (as a corrupt replica).
                self.blocks.corrupt.setdefault(bid, set()).add(node.info.node_id)
                self.blocks.needs_check.add(bid)
            return  # an append is in progress: the old replica is neither good nor bad yet
        if info.length == UNKNOWN_LENGTH:
            try:
                self._apply(CommitBlockLengthOp(bid, replica.length))
            except ShoalError as exc:
                log.warning("ignoring replica of block %d on %s: %s", bid, node.info.node_id, exc)
                return
        elif replica.length != info.length:
            log.warning("replica of block %d on %s has %d bytes, expected %d", bid, node.info.node_id,
                        replica.length, info.length)
            self.blocks.corrupt.setdefault(bid, set()).add(node.info.node_id)
            self.blocks.needs_check.add(bid)
            return
        if node.info.node_id in self.blocks.corrupt.get(bid, ()):
            return  # a replica known to be corrupt stays so until it is deleted
        self.blocks.add(bid, node.info.node_id)
        node.blocks.add(bid)

    def _reconcile(self, node: DatanodeDescriptor, report: list[p.ReplicaReport]) -> None:
        """A full block report replaces what the master believed this worker holds."""
        reported = {r.block_id for r in report}
        for bid in node.blocks - reported:
            self.blocks.remove(bid, node.info.node_id)
            log.warning("replica of block %d expected on %s is missing", bid, node.info.node_id)
        node.blocks &= reported
        for replica in report:
            if replica.block_id not in node.blocks:
                self._add_replica(node, replica)

    # --- timers ----------------------------------------------------------------------------
    def tick(self) -> None:
        """Declare silent workers dead, repair replication, recover expired leases."""
        now = self.clock.monotonic()
        dfs = self.config.dfs
        for node in self.nodes.values():
            if node.state != DEAD and now - node.last_heartbeat > dfs.dead_node_interval_s:
                log.warning("worker %s declared dead (no heartbeat for %.1fs)", node.info.node_id, now - node.last_heartbeat)
                node.state = DEAD
                for bid in node.blocks:
                    self.blocks.remove(bid, node.info.node_id)
                node.blocks.clear()
                node.pending_commands.clear()
        self._check_safe_mode()
        if not self.safe_mode:
            self._schedule_replication(now)
            self._check_decommissioning()
        for client in self.leases.expired_clients(now, dfs.lease_hard_limit_s):
            for path in self.namespace.files_leased_by(client):
                self.recover_lease(path)
            self.leases.forget(client)

    def _schedule_replication(self, now: float) -> None:
        states = self._states()
        views = {n: d.view() for n, d in self.nodes.items() if d.state in READABLE}
        plan = self.blocks.plan(
            views, states, now, self.config.dfs.replication_timeout_s, self.config.dfs.replication_max_streams
        )
        for work in plan.copies:
            info = self.namespace.block(work.block_id)
            if info is None:
                continue
            targets = [self.nodes[t].info for t in work.targets]
            self.nodes[work.source].pending_commands.append(
                p.ReplicateBlock(work.block_id, info.gen_stamp, info.length, targets)
            )
            log.info("re-replicating block %d from %s to %s", work.block_id, work.source, ",".join(work.targets))
        for node_id, bids in plan.deletions.items():
            node = self.nodes.get(node_id)
            if node is not None:
                node.blocks.difference_update(bids)
                node.pending_deletes.extend(bids)

    def _check_decommissioning(self) -> None:
        """A draining worker is done when none of its blocks needs it any more."""
        states = self._states()
        for node in self.nodes.values():
            if node.state != DECOMMISSIONING:
                continue
            if all(
                (h := self.blocks.health(bid, states)) is None or len(h.live) >= h.expected
                for bid in node.blocks
            ):
                node.state = DECOMMISSIONED
                log.info("worker %s decommissioned", node.info.node_id)
