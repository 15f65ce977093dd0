"""``shoal dfs ...``: administration of the file system (the ``hdfs dfsadmin`` of shoal)."""

from __future__ import annotations

import click

from shoal.cli.common import cluster_option, connect, friendly_errors, json_option, print_json


@click.group("dfs")
def dfs_group() -> None:
    """Administer the distributed file system: decommission workers, checkpoint."""


@dfs_group.command("decommission")
@click.argument("node")
@json_option
@cluster_option
@friendly_errors
def decommission(node: str, as_json: bool, cluster: str | None) -> None:
    """Drain NODE: copy its replicas elsewhere, then retire it (see shoal nodes)."""
    with connect(cluster) as c:
        report = c.fs.decommission(node)
    if as_json:
        print_json(report)
    else:
        click.echo(f"{report.node_id}: {report.state} ({report.blocks} blocks to drain)")


@dfs_group.command("checkpoint")
@cluster_option
@friendly_errors
def checkpoint(cluster: str | None) -> None:
    """Save the namespace image now; older edit-log segments are dropped."""
    from shoal.core.wire import Empty
    from shoal.dfs.editlog import CHECKPOINT

    with connect(cluster) as c:
        resp = c.fs.rpc.call(CHECKPOINT, Empty())
    click.echo(f"checkpoint written at transaction {resp.txid}")
