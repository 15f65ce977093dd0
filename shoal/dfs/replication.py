"""Planning of re-replication and excess-replica removal (pure: no I/O, no clock).

Mirrors HDFS's RedundancyMonitor: blocks with fewer live replicas than their file's
replication factor are repaired most-endangered first (one live replica before two);
each repair copies from a live, uncorrupted replica to targets chosen by the
placement policy; a node serves at most ``max_streams_per_node`` copies at once (as
``dfs.namenode.replication.max-streams``) so re-replication cannot swamp a worker.
Blocks with too many live replicas lose the excess, keeping the most racks.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shoal.dfs.placement import BlockPlacementPolicy, NodeView


@dataclass(frozen=True, slots=True)
class BlockHealth:
    """What the master knows of one block's replicas right now."""

    block_id: int
    expected: int  # the file's replication factor
    block_size: int
    live: tuple[str, ...]  # healthy replicas on live, in-service nodes
    decommissioning: tuple[str, ...] = ()  # replicas on draining nodes: sources, not counted
    corrupt: tuple[str, ...] = ()  # replicas reported bad: never sources, deleted once repaired
    pending: int = 0  # copies already scheduled and not yet reported

    @property
    def missing(self) -> int:
        return max(0, self.expected - len(self.live) - self.pending)

    @property
    def status(self) -> str:
        """``healthy``, ``under-replicated``, ``corrupt`` (only bad copies) or ``missing``."""
        if self.live or self.decommissioning:
            return "healthy" if len(self.live) >= self.expected else "under-replicated"
        return "corrupt" if self.corrupt else "missing"


@dataclass(frozen=True, slots=True)
class ReplicationWork:
    """Copy ``block_id`` from ``source`` to ``targets`` (in pipeline order)."""

    block_id: int
    source: str
    targets: tuple[str, ...]


@dataclass
class ReplicationPlan:
    """One round of work: copies to start and replicas to delete."""

    copies: list[ReplicationWork] = field(default_factory=list)
    deletions: dict[str, list[int]] = field(default_factory=dict)


def priority(h: BlockHealth) -> tuple[int, int, int]:
    """Lower sorts first: fewest live replicas, then largest deficit, then id."""
    return (len(h.live) + len(h.decommissioning), -(h.expected - len(h.live)), h.block_id)


def plan_replication(
    blocks: Sequence[BlockHealth],
    nodes: Mapping[str, NodeView],
    *,
    policy: BlockPlacementPolicy,
    rng: random.Random,
    streams_in_use: Mapping[str, int],
    max_streams_per_node: int = 2,
    max_copies: int = 1000,
) -> ReplicationPlan:
    """Choose copies for under-replicated blocks and deletions for over-replicated ones.

    ``nodes`` are the live nodes (decommissioning ones marked); ``streams_in_use``
    counts copies each node is already sending or receiving.
    """
    plan = ReplicationPlan()
    busy = dict(streams_in_use)
    node_list = list(nodes.values())
    for h in sorted((b for b in blocks if b.missing > 0), key=priority):
        if len(plan.copies) >= max_copies:
            break
        sources = [n for n in (*h.live, *h.decommissioning) if n in nodes and busy.get(n, 0) < max_streams_per_node]
        if not sources:
            continue
        # Draining nodes make the best sources: they take no new writes (as HDFS).
        draining = [n for n in sources if n in h.decommissioning]
        source = rng.choice(sorted(draining or sources))
        chosen = [nodes[n] for n in h.live if n in nodes]
        excluded = {*h.live, *h.decommissioning, *h.corrupt}
        candidates = [n for n in node_list if busy.get(n.node_id, 0) < max_streams_per_node]
        targets = policy.choose_targets(
            len(chosen) + h.missing, candidates, block_size=h.block_size, rng=rng, chosen=chosen, excluded=excluded
        )
        if not targets:
            continue
        busy[source] = busy.get(source, 0) + 1
        for t in targets:
            busy[t.node_id] = busy.get(t.node_id, 0) + 1
        plan.copies.append(ReplicationWork(h.block_id, source, tuple(t.node_id for t in targets)))

    for h in blocks:
        if h.pending:
            continue
        if len(h.live) > h.expected:
            excess = policy.choose_excess([nodes[n] for n in h.live if n in nodes], h.expected)
            for n in excess:
                plan.deletions.setdefault(n.node_id, []).append(h.block_id)
        if h.corrupt and len(h.live) >= h.expected:
            for n in h.corrupt:
                plan.deletions.setdefault(n, []).append(h.block_id)
    return plan
