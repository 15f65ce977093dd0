"""Replica placement: where new block replicas go, which excess ones to drop.

A pure core mirroring HDFS's ``BlockPlacementPolicyDefault`` and the distance
helpers of ``NetworkTopology``. It does no I/O; the caller passes the live
nodes and a seeded ``random.Random``, so the same inputs always give the same
answer (which is what makes it property-testable and simulator-friendly).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

__all__ = [
    "NodeView",
    "distance",
    "sort_by_distance",
    "BlockPlacementPolicy",
]

# NetworkTopology distances for a two-level (rack / node) tree.
SAME_NODE = 0
SAME_RACK = 2
OFF_RACK = 4


@dataclass(frozen=True, slots=True)
class NodeView:
    """What placement needs to know about one live datanode."""

    node_id: str
    rack: str
    remaining_bytes: int  # free space available for blocks
    xceivers: int = 0  # active data transfers (the node's load)
    decommissioning: bool = False  # never chosen as a new target


def distance(a_node: str | None, a_rack: str | None, b_node: str, b_rack: str) -> int:
    """Network distance as HDFS counts it: 0 same node, 2 same rack, 4 off rack.

    ``a`` may be a client outside the cluster (node and/or rack unknown), in
    which case it is never "the same" as anything.
    """
    if a_node is not None and a_node == b_node:
        return SAME_NODE
    if a_rack is not None and a_rack == b_rack:
        return SAME_RACK
    return OFF_RACK


def sort_by_distance(
    reader_node: str | None,
    reader_rack: str | None,
    replicas: Sequence[NodeView],
    rng: random.Random,
) -> list[NodeView]:
    """Order replicas for a reader: same node, same rack, then elsewhere.

    Ties are shuffled with ``rng`` so reads of a hot block spread over its
    replicas (HDFS ``sortByDistance`` does the same). Decommissioning replicas
    go last, as HDFS's ``DatanodeManager.sortLocatedBlocks`` does: they are
    still readable but about to leave.
    """
    # Sort by id first so the shuffle does not depend on the caller's order.
    order = sorted(replicas, key=lambda n: n.node_id)
    rng.shuffle(order)
    order.sort(  # stable: keeps the shuffle among equals
        key=lambda n: (n.decommissioning, distance(reader_node, reader_rack, n.node_id, n.rack))
    )
    return order


class BlockPlacementPolicy:
    """HDFS's default rack-aware placement for new and excess replicas.

    The classic layout for replication 3: first replica on the writer's node,
    second on another rack, third on the second's rack (a different node), so
    a block survives the loss of a whole rack while only one copy crosses
    the rack boundary in the write pipeline.
    """

    def __init__(self, *, consider_load: bool = True, load_factor: float = 2.0, load_floor: int = 4) -> None:
        if load_factor <= 0:
            raise ValueError(f"load_factor must be > 0, got {load_factor}")
        # dfs.namenode.redundancy.considerLoad / considerLoad.factor.
        self.consider_load = consider_load
        self.load_factor = load_factor
        # A node is never "overloaded" at or below this many transfers: in a small,
        # mostly idle cluster one active write would otherwise be twice the average
        # and push its node out of every pipeline.
        self.load_floor = load_floor

    # --- rack arithmetic -----------------------------------------------------------

    @staticmethod
    def max_replicas_per_rack(replication: int, rack_count: int) -> int:
        """Most replicas of one block allowed on a single rack.

        ``max(2, ceil(replication / racks))``: "at most two per rack" whenever
        there are enough racks, and an even spread when there are not.
        """
        return max(2, math.ceil(replication / max(1, rack_count)))

    @staticmethod
    def is_mis_replicated(replica_racks: Sequence[str], replication: int, rack_count: int) -> bool:
        """True when a block's replicas span too few racks (HDFS "mis-replicated").

        A block wants its replicas on at least ``min(replication, racks, 2)``
        racks; typically this flags a block whose copies all sit on one rack
        of a multi-rack cluster. A block with no replicas at all also counts
        (the caller handles missing blocks before asking).
        """
        wanted = min(replication, rack_count, 2)
        return len(set(replica_racks)) < wanted

    # --- choosing targets ----------------------------------------------------------

    def choose_targets(
        self,
        replication: int,
        nodes: Sequence[NodeView],
        *,
        block_size: int,
        rng: random.Random,
        writer: str | None = None,
        chosen: Sequence[NodeView] = (),
        excluded: Collection[str] = (),
    ) -> list[NodeView]:
        """Pick new replica targets, in write-pipeline order.

        Returns at most ``replication - len(chosen)`` nodes, fewer (possibly
        none) when there are not enough good targets; it never raises for a
        small cluster. ``chosen`` are replicas that already exist (or were
        picked earlier), and the sequence continues as if they were the first
        picks, which is how re-replication reuses this path.
        """
        if replication < 0:
            raise ValueError(f"replication must be >= 0, got {replication}")
        need = replication - len(chosen)
        if need <= 0:
            return []

        good = self._good_targets(nodes, block_size=block_size, chosen=chosen, excluded=excluded)
        if not good:
            return []
        racks = {n.rack for n in good} | {n.rack for n in chosen}
        max_per_rack = self.max_replicas_per_rack(replication, len(racks))

        picked: list[NodeView] = list(chosen)
        per_rack: dict[str, int] = {}
        for n in picked:
            per_rack[n.rack] = per_rack.get(n.rack, 0) + 1
        available = list(good)  # sorted by node_id, shrinks as we pick
        result: list[NodeView] = []

        def fits(n: NodeView) -> bool:
            return per_rack.get(n.rack, 0) < max_per_rack

        while len(result) < need and available:
            node = self._pick_next(picked, available, fits, writer, rng)
            available.remove(node)
            picked.append(node)
            per_rack[node.rack] = per_rack.get(node.rack, 0) + 1
            result.append(node)
        return result

    def _good_targets(
        self,
        nodes: Sequence[NodeView],
        *,
        block_size: int,
        chosen: Sequence[NodeView],
        excluded: Collection[str],
    ) -> list[NodeView]:
        """Nodes that may take a new replica, sorted by node_id (deterministic).

        Mirrors HDFS ``isGoodDatanode``: not decommissioning, enough space
        for the block, and not much busier than the cluster average.
        """
        taken = {n.node_id for n in chosen}
        blocked = set(excluded)
        live = [n for n in nodes if not n.decommissioning]
        limit: float | None = None
        if self.consider_load and live:
            average = sum(n.xceivers for n in live) / len(live)
            if average > 0:
                limit = max(self.load_factor * average, self.load_floor)
        seen: set[str] = set()
        good: list[NodeView] = []
        for n in live:
            if n.node_id in seen or n.node_id in taken or n.node_id in blocked:
                continue
            seen.add(n.node_id)  # a node listed twice is still one node
            if n.remaining_bytes < block_size:
                continue
            if limit is not None and n.xceivers > limit:
                continue
            good.append(n)
        good.sort(key=lambda n: n.node_id)
        return good

    def _pick_next(
        self,
        picked: Sequence[NodeView],
        available: Sequence[NodeView],
        fits: Callable[[NodeView], bool],
        writer: str | None,
        rng: random.Random,
    ) -> NodeView:
        """Choose the next replica given the picks so far (HDFS ``chooseTarget``).

        Each step tries its preferred candidates first, then any candidate
        within the per-rack limit, then any good target at all, so we always
        return a node while ``available`` is non-empty.
        """
        index = len(picked)
        preferred: list[NodeView] = []
        if index == 0:
            # chooseLocalStorage: the writer's own node keeps the first copy local.
            for n in available:
                if n.node_id == writer:
                    return n
        elif index == 1:
            # chooseRemoteRack: survive the loss of the first replica's rack.
            first = picked[0].rack
            preferred = [n for n in available if n.rack != first and fits(n)]
        elif index == 2:
            first, second = picked[0].rack, picked[1].rack
            if first == second:
                # Both on one rack (no other rack was available then): go elsewhere.
                preferred = [n for n in available if n.rack != first and fits(n)]
            else:
                # chooseLocalRack relative to the second: one cross-rack hop only.
                preferred = [n for n in available if n.rack == second and fits(n)]
        if preferred:
            return self._random_choice(preferred, rng)
        within_limit = [n for n in available if fits(n)]
        if within_limit:
            return self._random_choice(within_limit, rng)
        return self._random_choice(available, rng)

    @staticmethod
    def _random_choice(candidates: Sequence[NodeView], rng: random.Random) -> NodeView:
        """A random candidate, biased towards lightly loaded nodes.

        "Power of two choices": sample two and keep the one with fewer
        xceivers. Like HDFS's random pick it spreads blocks evenly, while
        steering away from busy nodes much better than one sample does and
        without the herding of always taking the least loaded node.
        ``candidates`` must be in a deterministic order (we sort by node_id).
        """
        if len(candidates) == 1:
            return candidates[0]
        a, b = rng.sample(range(len(candidates)), 2)
        first, second = candidates[a], candidates[b]
        return second if second.xceivers < first.xceivers else first

    # --- excess replicas -----------------------------------------------------------

    def choose_excess(self, replicas: Sequence[NodeView], replication: int) -> list[NodeView]:
        """Which replicas to delete so ``replication`` remain, in deletion order.

        Mirrors HDFS ``chooseReplicasToDelete``: while some rack holds more
        than one replica, delete from such a rack (the number of racks is
        kept); among candidates drop the one with the least free space
        (ties by node_id), freeing the fullest disk. Decommissioning replicas
        go first: they are leaving anyway and HDFS does not count them as live.
        """
        if replication < 0:
            raise ValueError(f"replication must be >= 0, got {replication}")
        excess = len(replicas) - replication
        if excess <= 0:
            return []

        def fullest_first(n: NodeView) -> tuple[int, str]:
            return (n.remaining_bytes, n.node_id)

        leaving = sorted((n for n in replicas if n.decommissioning), key=fullest_first)
        doomed = leaving[:excess]
        remaining = [n for n in replicas if not n.decommissioning]
        while len(doomed) < excess:
            per_rack: dict[str, int] = {}
            for n in remaining:
                per_rack[n.rack] = per_rack.get(n.rack, 0) + 1
            crowded = [n for n in remaining if per_rack[n.rack] > 1]
            victim = min(crowded or remaining, key=fullest_first)
            remaining.remove(victim)
            doomed.append(victim)
        return doomed
