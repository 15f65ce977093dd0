"""``shoal service``: long-running services kept alive by the master (Marathon-style)."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from shoal.cli.common import cluster_option, cluster_target, fail, friendly_errors, json_option, print_json
from shoal.cli.containers import command_line, task_resources
from shoal.cluster import protocol as p
from shoal.cluster.resources import parse_constraint


def _call(cluster: str | None, method, body):
    from shoal.cluster.local import resolve
    from shoal.core.rpc_client import RpcClient

    addr = resolve(cluster_target(cluster))
    with RpcClient(addr.master, addr.secret) as rpc:
        return rpc.call(method, body)


@click.group("service")
def service_group() -> None:
    """Long-running services: N healthy instances, restarted and rescheduled by the master."""


@service_group.command("create", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.option("--instances", "-n", default=1, show_default=True, type=click.IntRange(0, 10_000))
@click.option("--cpus", default=0.1, show_default=True, type=float, help="CPUs per instance.")
@click.option("--mem", default="64M", show_default=True, help="Memory limit per instance, e.g. 64M.")
@click.option("--ports", default=0, show_default=True, type=click.IntRange(0, 100),
              help="Host ports per instance, exported as $PORT0.. ($PORT = $PORT0).")
@click.option("--health-http", metavar="PATH", help="Healthy when GET http://127.0.0.1:$PORT0/PATH answers 2xx/3xx.")
@click.option("--health-cmd", metavar="CMD", help="Healthy when this shell command exits 0.")
@click.option("--health-interval", default=10.0, show_default=True, type=float, help="Seconds between checks.")
@click.option("--health-timeout", default=20.0, show_default=True, type=float, help="Seconds a check may take.")
@click.option("--health-grace", default=30.0, show_default=True, type=float,
              help="Seconds after launch before failures count.")
@click.option("--health-max-failures", default=3, show_default=True, type=click.IntRange(1, 1000),
              help="Consecutive failures before the instance is killed and replaced.")
@click.option("--constraint", "constraints", multiple=True, metavar="ATTR=VALUE", help="Only on agents with this attribute value.")
@click.option("--env", "envs", multiple=True, metavar="KEY=VALUE", help="Environment variable for every instance.")
@cluster_option
@json_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@friendly_errors
def create(name: str, instances: int, cpus: float, mem: str, ports: int, health_http: str | None,
           health_cmd: str | None, health_interval: float, health_timeout: float, health_grace: float,
           health_max_failures: int, constraints: tuple[str, ...], envs: tuple[str, ...], cluster: str | None,
           as_json: bool, command: tuple[str, ...]) -> None:
    """Create service NAME running COMMAND (after --) in INSTANCES containers.

    \b
    shoal service create web --instances 3 --ports 1 --health-http / -- python3 -m http.server '$PORT0'
    """
    if health_http and health_cmd:
        fail("give --health-http or --health-cmd, not both")
    if health_http and ports < 1:
        fail("--health-http checks $PORT0: give the service --ports 1 (or more)")
    health = None
    if health_http or health_cmd:
        health = p.HealthCheck(
            kind="http" if health_http else "cmd",
            path="/" + (health_http or "").lstrip("/"),
            command=health_cmd or "",
            interval_s=health_interval,
            timeout_s=health_timeout,
            grace_s=health_grace,
            max_failures=health_max_failures,
        )
    env = {}
    for item in envs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--env expects KEY=VALUE, got {item!r}")
        env[key] = value
    argv, shell = command_line(command)
    if not shell and any("$" in a for a in argv):
        # '$PORT0' in an argument: run through the shell so it expands, as Marathon's cmd does.
        argv, shell = [" ".join(argv)], True
    spec = p.ServiceSpec(
        name=name, instances=instances, command=argv, resources=task_resources(cpus, mem), ports=ports,
        shell=shell, health=health, constraints=[parse_constraint(c) for c in constraints], env=env,
    )
    status = _call(cluster, p.SERVICE_CREATE, spec)
    if as_json:
        print_json(status)
    else:
        click.echo(f"service {name} created: {instances} instance{'s' if instances != 1 else ''} of {spec.resources.describe()}")


@service_group.command("scale")
@click.argument("name")
@click.argument("instances", type=click.IntRange(0, 10_000))
@cluster_option
@friendly_errors
def scale(name: str, instances: int, cluster: str | None) -> None:
    """Change how many instances of NAME should run."""
    _call(cluster, p.SERVICE_SCALE, p.ServiceScaleReq(name, instances))
    click.echo(f"service {name} scaled to {instances}")


@service_group.command("ls")
@cluster_option
@json_option
@friendly_errors
def ls(cluster: str | None, as_json: bool) -> None:
    """List services with their desired, running and healthy instances."""
    from shoal.core.wire import Empty

    services = _call(cluster, p.SERVICE_LIST, Empty()).services
    if as_json:
        print_json(services)
        return
    if not services:
        click.echo("no services")
        return
    table = Table(box=None, header_style="bold")
    for col in ("NAME", "INSTANCES", "RUNNING", "HEALTHY", "RESOURCES", "COMMAND", "LAST FAILURE"):
        table.add_column(col)
    for s in services:
        backoff = f" (next try in {s.backoff_s:.0f}s)" if s.backoff_s >= 1 else ""
        table.add_row(s.spec.name, str(s.spec.instances), str(s.running), str(s.healthy),
                      s.spec.resources.describe(), " ".join(s.spec.command)[:40], (s.last_failure + backoff)[:60])
    Console(width=160).print(table)


@service_group.command("endpoints")
@click.argument("name")
@cluster_option
@json_option
@friendly_errors
def endpoints(name: str, cluster: str | None, as_json: bool) -> None:
    """host:port of every healthy instance of NAME, one per line (for discovery)."""
    result = _call(cluster, p.SERVICE_ENDPOINTS, p.ServiceNameReq(name))
    if as_json:
        print_json(result)
        return
    for endpoint in result.endpoints:
        click.echo(endpoint)


@service_group.command("rm")
@click.argument("name")
@cluster_option
@friendly_errors
def rm(name: str, cluster: str | None) -> None:
    """Remove service NAME and kill its instances."""
    _call(cluster, p.SERVICE_REMOVE, p.ServiceNameReq(name))
    click.echo(f"service {name} removed")
