"""``fsck``: the health of every block under a path, as HDFS's fsck reports it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.dfs import protocol as p
from shoal.dfs.placement import BlockPlacementPolicy

if TYPE_CHECKING:
    from shoal.dfs.namenode import NameNode

# Worst first: a file's status is the worst of its blocks'.
SEVERITY = ["missing", "corrupt", "under-replicated", "mis-replicated", "healthy"]


def fsck(nn: NameNode, path: str) -> p.FsckReport:
    """Walk ``path``; classify each block; count blocks per status."""
    states = nn._states()
    racks_in_cluster = len({d.info.rack for d in nn.nodes.values() if d.state == "live"})
    files: list[p.FsckFile] = []
    directories = 0
    stack = [nn.namespace.stat(path)]
    while stack:
        status = stack.pop()
        if status.kind == "directory":
            directories += 1
            stack.extend(reversed(nn.namespace.list(status.path)))
            continue
        blocks = []
        for info in nn.namespace.blocks(status.path):
            h = nn.blocks.health(info.block_id, states)
            if h is None:
                continue
            holders = [nn.nodes[n] for n in (*h.live, *h.decommissioning)]
            state = h.status
            if state == "healthy" and BlockPlacementPolicy.is_mis_replicated(
                [d.info.rack for d in holders], h.expected, racks_in_cluster
            ):
                state = "mis-replicated"
            blocks.append(
                p.FsckBlock(
                    info.block_id,
                    info.length,
                    h.expected,
                    [d.info.label() for d in holders],
                    [nn.nodes[n].info.label() for n in h.corrupt if n in nn.nodes],
                    state,
                )
            )
        worst = min((SEVERITY.index(b.status) for b in blocks), default=SEVERITY.index("healthy"))
        files.append(p.FsckFile(status.path, status.length, status.replication, SEVERITY[worst], blocks))
    totals = {s: 0 for s in SEVERITY}
    for f in files:
        for b in f.blocks:
            totals[b.status] += 1
    healthy = totals["missing"] == 0 and totals["corrupt"] == 0
    return p.FsckReport(path, files, directories, totals, healthy, nn.in_safe_mode())
