"""``shoal``: one command for the whole cluster."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from shoal.cli.common import cluster_option, cluster_target, connect, fail, friendly_errors, json_option, print_json
from shoal.cli.cluster import cluster_group
from shoal.cli.compute import jobs, submit
from shoal.cli.containers import ps, run
from shoal.cli.dfsadmin import dfs_group
from shoal.cli.mapreduce import mapreduce_group
from shoal.cli.services import service_group
from shoal.cli.fs import fs_group
from shoal.core.config import load_config, parse_settings
from shoal.core.units import format_size
from shoal.errors import ClusterNotFound

set_option = click.option(
    "--set", "settings", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable); see shoal config."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="shoal")
def cli() -> None:
    """shoal: a distributed file system, resource manager and compute engine in Python.

    Start a local cluster with `shoal up`, then use `shoal fs`, `shoal nodes`, ...
    Every command finds its cluster through --cluster, $SHOAL_CLUSTER or ./shoal-cluster.
    """


@cli.command()
@click.option("--workers", "-n", default=3, show_default=True, type=click.IntRange(1, 256), help="Number of workers.")
@click.option("--racks", default=1, show_default=True, type=click.IntRange(1, 256), help="Racks r1..rN, workers round-robin.")
@cluster_option
@click.option("--detach", "-d", is_flag=True, help="Return once the cluster is up (stop it with shoal down).")
@click.option(
    "--worker-resources", "worker_resources", multiple=True, metavar="[wN=]SPEC",
    help="Resources each worker offers, Mesos syntax ('cpus:2;mem:2048'); 'w2=cpus:8' for one worker. "
    "Kinds not given are detected; local workers get disjoint port ranges.",
)
@click.option(
    "--worker-attributes", "worker_attributes", multiple=True, metavar="wN=SPEC",
    help="Attributes of one worker, Mesos syntax: 'w1=zone:west;disk:ssd' (rack is set from --racks).",
)
@set_option
@friendly_errors
def up(workers: int, racks: int, cluster: str | None, detach: bool, worker_resources: tuple[str, ...],
       worker_attributes: tuple[str, ...], settings: tuple[str, ...]) -> None:
    """Start a master and N workers as local processes."""
    from shoal.cluster.local import LocalCluster
    from shoal.cluster.resources import parse_attributes, parse_resources

    folder = Path(cluster_target(cluster))
    if folder.as_posix().startswith("shoal://"):
        fail("shoal up needs a cluster folder, not a master address")
    default_resources, per_worker, per_attrs = "", {}, {}
    for item in worker_resources:
        node, sep, spec = item.partition("=")
        if sep and node.startswith("w") and node[1:].isdigit():
            per_worker[node] = spec
        else:
            default_resources = item
    for item in worker_attributes:
        node, sep, spec = item.partition("=")
        if not sep or not node.startswith("w") or not node[1:].isdigit():
            fail(f"--worker-attributes expects wN=SPEC, got {item!r}")
        per_attrs[node] = spec
    for spec in [default_resources, *per_worker.values()]:
        parse_resources(spec)
    for spec in per_attrs.values():
        parse_attributes(spec)
    lc = LocalCluster(folder)
    started = time.monotonic()
    lc.up(
        workers=workers, racks=racks, overrides=parse_settings(settings) if settings else None,
        resources=default_resources, worker_resources=per_worker, worker_attributes=per_attrs,
    )
    click.echo(
        f"cluster up in {folder} ({workers} workers on {racks} rack{'s' if racks > 1 else ''}, "
        f"{time.monotonic() - started:.1f}s); master log: {folder / 'master' / 'master.log'}"
    )
    if detach:
        return
    def _stop(*_: object) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, _stop)
        click.echo("running in the foreground; Ctrl-C stops the cluster")
        lc.wait()
        fail("the cluster's processes exited")
    except KeyboardInterrupt:
        n = lc.down()
        click.echo(f"stopped {n} processes")


@cli.command()
@cluster_option
@friendly_errors
def down(cluster: str | None) -> None:
    """Stop a local cluster's processes."""
    from shoal.cluster.local import stop_cluster

    folder = Path(cluster_target(cluster))
    if not (folder / "cluster.json").exists():
        raise ClusterNotFound(f"no cluster in {folder}")
    n = stop_cluster(folder)
    click.echo(f"stopped {n} processes" if n else f"no processes were running in {folder}")


@cli.command()
@json_option
@cluster_option
@friendly_errors
def nodes(as_json: bool, cluster: str | None) -> None:
    """Workers: id, address, rack, state, capacity, used, blocks, pid, last heartbeat."""
    with connect(cluster) as c:
        report = c.fs.report()
    if as_json:
        print_json(report)
        return
    table = Table(title=f"{len(report.nodes)} workers, {report.files} files, {report.blocks} blocks")
    for col in ("id", "address", "rack", "state", "capacity", "used", "remaining", "blocks", "pid", "heartbeat"):
        table.add_column(col)
    for n in report.nodes:
        state = n.state if n.state == "live" else f"[red]{n.state}[/red]"
        table.add_row(
            n.node_id, f"{n.host}:{n.data_port}", n.rack, state, format_size(n.capacity_bytes),
            format_size(n.used_bytes), format_size(n.remaining_bytes), str(n.blocks), str(n.pid),
            f"{n.last_heartbeat_s:.1f}s ago",
        )
    Console().print(table)


@cli.command("config")
@json_option
@cluster_option
@set_option
@friendly_errors
def config_cmd(as_json: bool, cluster: str | None, settings: tuple[str, ...]) -> None:
    """List every configuration key with its value (a running cluster's, if any)."""
    folder = Path(cluster_target(cluster))
    overrides = parse_settings(settings)
    cfg = None
    if not folder.as_posix().startswith("shoal://") and (folder / "master" / "address.json").exists():
        try:
            with connect(cluster) as c:
                cfg = c.fs.config
        except Exception:
            cfg = None
    if cfg is None:
        cfg = load_config(folder if folder.is_dir() else None, overrides)
    else:
        cfg = cfg.with_overrides(overrides)
    changed = cfg.overrides()
    if as_json:
        print_json(dict(cfg.items()))
        return
    for key, value in cfg.items():
        mark = "  (set)" if key in changed else ""
        click.echo(f"{key} = {value}{mark}")


@cli.command(hidden=False)
@click.option("--dir", "folder", required=True, type=click.Path(path_type=Path), help="State and log folder.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback unless told).")
@click.option("--port", default=0, show_default=True, type=int, help="RPC port (0: any free port).")
@click.option("--http-port", default=0, show_default=True, type=int, help="WebHDFS port (0: any free port).")
@click.option("--secret-file", required=True, type=click.Path(path_type=Path), help="Cluster secret.")
@click.option("--config-dir", type=click.Path(path_type=Path), help="Folder with config.json.")
@set_option
@friendly_errors
def master(
    folder: Path, host: str, port: int, http_port: int, secret_file: Path, config_dir: Path | None,
    settings: tuple[str, ...],
) -> None:
    """Run a master (namenode + resource manager) in the foreground."""
    from shoal.cluster.master import serve_master
    from shoal.core.node import read_secret, run_loop

    config = load_config(config_dir, parse_settings(settings))
    run_loop(serve_master(folder, host, port, read_secret(secret_file), config, http_port))


@cli.command()
@click.option("--master", "master_addr", required=True, metavar="HOST:PORT", help="The master's RPC address.")
@click.option("--rack", default="r1", show_default=True, help="Rack label for replica placement.")
@click.option("--dir", "folder", required=True, type=click.Path(path_type=Path), help="Data and log folder.")
@click.option("--id", "node_id", default=None, help="Worker id (default: kept in DIR/node_id).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind and advertise.")
@click.option("--port", default=0, show_default=True, type=int, help="Data port (0: any free port).")
@click.option("--secret-file", required=True, type=click.Path(path_type=Path), help="Cluster secret.")
@click.option("--config-dir", type=click.Path(path_type=Path), help="Folder with config.json.")
@click.option(
    "--resources", default=None, metavar="SPEC",
    help="Resources to offer, Mesos syntax: 'cpus:24;mem:24576;disk:409600;ports:[21000-24000]' "
    "(mem/disk in MiB; kinds not given are detected).",
)
@click.option("--attributes", default=None, metavar="SPEC", help="Agent attributes, Mesos syntax: 'rack:r1;zone:west'.")
@set_option
@friendly_errors
def worker(
    master_addr: str, rack: str, folder: Path, node_id: str | None, host: str, port: int,
    secret_file: Path, config_dir: Path | None, resources: str | None, attributes: str | None,
    settings: tuple[str, ...],
) -> None:
    """Run a worker (datanode and container agent) in the foreground."""
    from shoal.cluster.resources import parse_attributes, parse_resources
    from shoal.cluster.worker import serve_worker
    from shoal.core.node import read_secret

    mhost, _, mport = master_addr.rpartition(":")
    if not mhost or not mport.isdigit():
        fail(f"--master expects HOST:PORT, got {master_addr!r}")
    if resources:
        parse_resources(resources)  # fail here, with one line, before anything starts
    if attributes:
        parse_attributes(attributes)
    config = load_config(config_dir, parse_settings(settings))
    serve_worker(
        folder, master=(mhost, int(mport)), rack=rack, host=host, port=port, node_id=node_id,
        secret=read_secret(secret_file), config=config, resources=resources, attributes=attributes,
    )


cli.add_command(fs_group)
cli.add_command(dfs_group)
cli.add_command(cluster_group)
cli.add_command(run)
cli.add_command(ps)
cli.add_command(service_group)
cli.add_command(submit)
cli.add_command(jobs)
cli.add_command(mapreduce_group)


def main() -> None:
    cli(prog_name="shoal")


if __name__ == "__main__":
    sys.exit(main())
