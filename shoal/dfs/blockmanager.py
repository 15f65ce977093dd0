"""The master's block map: which worker holds which replica, and what to repair.

Soft state, rebuilt from block reports after a restart (as HDFS's BlockManager):
live replicas per block, replicas reported corrupt, copies in flight. Blocks whose
replica set changed are queued for a check; each tick turns the queue into a
:class:`~shoal.dfs.replication.ReplicationPlan` through the pure planner.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from shoal.dfs.namespace import Namespace
from shoal.dfs.placement import BlockPlacementPolicy, NodeView
from shoal.dfs.replication import BlockHealth, ReplicationPlan, plan_replication

log = logging.getLogger("dfs.blocks")


@dataclass
class PendingCopy:
    """A scheduled copy: targets that have not yet reported the replica."""

    source: str
    targets: set[str]
    deadline: float


class BlockManager:
    """Replica locations, corrupt replicas, pending copies and the check queue."""

    def __init__(self, namespace: Callable[[], Namespace], policy: BlockPlacementPolicy, rng: random.Random) -> None:
        self._namespace = namespace
        self.policy = policy
        self.rng = rng
        self.replicas: dict[int, set[str]] = {}
        self.corrupt: dict[int, set[str]] = {}
        self.pending: dict[int, PendingCopy] = {}
        self.needs_check: set[int] = set()

    @property
    def namespace(self) -> Namespace:
        return self._namespace()

    # --- replica events ----------------------------------------------------------------
    def add(self, block_id: int, node_id: str) -> None:
        self.replicas.setdefault(block_id, set()).add(node_id)
        self.corrupt.get(block_id, set()).discard(node_id)
        copy = self.pending.get(block_id)
        if copy is not None:
            copy.targets.discard(node_id)
            if not copy.targets:
                del self.pending[block_id]
        self.needs_check.add(block_id)

    def remove(self, block_id: int, node_id: str) -> None:
        holders = self.replicas.get(block_id)
        if holders is not None:
            holders.discard(node_id)
            if not holders:
                del self.replicas[block_id]
        self.needs_check.add(block_id)

    def mark_corrupt(self, block_id: int, node_id: str) -> bool:
        """A replica failed its checksum: stop serving it, repair, then delete it."""
        if node_id not in self.replicas.get(block_id, ()):
            return False
        self.remove(block_id, node_id)
        self.corrupt.setdefault(block_id, set()).add(node_id)
        return True

    def forget(self, block_id: int) -> set[str]:
        """The block left the namespace: return every node that may hold a copy."""
        holders = self.replicas.pop(block_id, set()) | self.corrupt.pop(block_id, set())
        copy = self.pending.pop(block_id, None)
        if copy is not None:
            holders |= copy.targets
        self.needs_check.discard(block_id)
        return holders

    # --- health ----------------------------------------------------------------------------
    def health(self, block_id: int, states: dict[str, str]) -> BlockHealth | None:
        ns = self.namespace
        path = ns.file_of_block(block_id)
        if path is None:
            return None
        status = ns.stat(path)
        if status.under_construction:
            # Its pipeline is still delivering replicas: repair once the file is closed
            # (otherwise every block would look under-replicated mid-write).
            return None
        holders = self.replicas.get(block_id, set())
        live = tuple(sorted(n for n in holders if states.get(n) == "live"))
        draining = tuple(sorted(n for n in holders if states.get(n) in ("decommissioning", "decommissioned")))
        copy = self.pending.get(block_id)
        return BlockHealth(
            block_id,
            status.replication,
            status.block_size,
            live,
            draining,
            tuple(sorted(self.corrupt.get(block_id, ()))),
            len(copy.targets) if copy else 0,
        )

    def plan(self, nodes: dict[str, NodeView], states: dict[str, str], now: float, copy_timeout_s: float,
             max_streams_per_node: int) -> ReplicationPlan:
        """Expire stale copies, then plan copies and deletions for queued blocks."""
        for bid, copy in list(self.pending.items()):
            lost = copy.source not in nodes or not copy.targets <= nodes.keys()
            if now > copy.deadline or lost:
                why = "lost a node" if lost else "timed out"
                log.warning("copy of block %d from %s %s; rescheduling", bid, copy.source, why)
                del self.pending[bid]
                self.needs_check.add(bid)
        checks = [h for bid in sorted(self.needs_check) if (h := self.health(bid, states)) is not None]
        in_use: dict[str, int] = {}
        for copy in self.pending.values():
            for n in (copy.source, *copy.targets):
                in_use[n] = in_use.get(n, 0) + 1
        plan = plan_replication(
            checks, nodes, policy=self.policy, rng=self.rng, streams_in_use=in_use,
            max_streams_per_node=max_streams_per_node,
        )
        scheduled = {w.block_id for w in plan.copies}
        for work in plan.copies:
            self.pending[work.block_id] = PendingCopy(work.source, set(work.targets), now + copy_timeout_s)
        for node_id, bids in plan.deletions.items():
            for bid in bids:
                self.replicas.get(bid, set()).discard(node_id)
                self.corrupt.get(bid, set()).discard(node_id)
        # Keep blocks that still need work (throttled, or no target yet) for the next tick.
        self.needs_check = {
            h.block_id for h in checks if h.missing > 0 and h.block_id not in scheduled and (h.live or h.decommissioning)
        }
        return plan

    def under_replicated(self, states: dict[str, str]) -> int:
        return sum(
            1 for bid in self.replicas
            if (h := self.health(bid, states)) is not None and len(h.live) < h.expected
        )
