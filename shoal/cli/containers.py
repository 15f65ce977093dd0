"""``shoal run`` (a one-off command in a container) and ``shoal ps`` (list containers)."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time

import click
from rich.console import Console
from rich.table import Table

from shoal.cli.common import cluster_option, cluster_target, fail, friendly_errors, json_option, print_json
from shoal.cluster import protocol as p
from shoal.cluster.resources import Resources, parse_constraint, satisfies
from shoal.core.units import parse_size
from shoal.errors import InsufficientResources, InvalidResources

MIB = 1024 * 1024
EXIT_MEMORY = 137  # as a shell reports a SIGKILLed child (docker and YARN do the same)


def parse_mem(text: str) -> float:
    """``256M``, ``1.5G`` or a plain number of MiB."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            return parse_size(text) / MIB
        except ValueError:
            raise InvalidResources(f"bad memory size {text!r} (e.g. 256M, 1G, or MiB as a number)") from None
    if value < 0:
        raise InvalidResources(f"memory must not be negative, got {text}")
    return value


def task_resources(cpus: float, mem: str, disk: str | None = None) -> Resources:
    if cpus <= 0:
        raise InvalidResources(f"--cpus must be positive, got {cpus:g}")
    mem_mib = parse_mem(mem)
    if mem_mib <= 0:
        raise InvalidResources(f"--mem must be positive, got {mem}")
    kinds = {"cpus": cpus, "mem": mem_mib}
    if disk:
        kinds["disk"] = parse_mem(disk)
    return Resources.of(kinds)


def check_fits_somewhere(agents: list[p.AgentSummary], need: Resources, constraints: list[tuple[str, str]]) -> None:
    """Fail now, rather than wait forever, when no agent could ever run the task."""
    active = [ag.info for ag in agents if ag.state == "active"]
    if any(i.total.contains(need) and satisfies(i.agent_id, i.host, i.rack, i.attributes, constraints) for i in active):
        return
    where = f" with {', '.join(f'{k}={v}' for k, v in constraints)}" if constraints else ""
    biggest = max((i.total.scalar_only() for i in active), key=lambda r: (r.cpus, r.mem), default=None)
    raise InsufficientResources(
        f"no agent can ever fit {need.describe()}{where}"
        + (f" (the largest offers {biggest.describe()})" if biggest else " (no agents are registered)")
    )


def command_line(args: tuple[str, ...]) -> tuple[list[str], bool]:
    """``-- CMD ARGS`` runs argv as given; a single argument with spaces runs in /bin/sh -c."""
    if not args:
        fail("give the command after --, e.g. shoal run -- echo hello")
    if len(args) == 1 and any(c in args[0] for c in " |;&$<>"):
        return [args[0]], True
    return list(args), False


async def _run(target: str, need: Resources, constraints: list[tuple[str, str]], command: list[str],
               shell: bool, name: str, env: dict[str, str], quiet: bool) -> int:
    from shoal.cluster.framework import Framework, stream_output
    from shoal.cluster.local import resolve
    from shoal.core.rpc_client import RpcClient
    from shoal.core.wire import Empty

    addr = resolve(target)
    rpc = RpcClient(addr.master, addr.secret)
    try:
        agents = (await asyncio.to_thread(rpc.call, p.LIST_AGENTS, Empty())).agents
        check_fits_somewhere(agents, need, constraints)
        task_id = f"run-{secrets.token_hex(4)}"
        fw = await Framework.register(rpc=rpc, name=f"shoal run {name}"[:100])
        launched = False
        try:
            started = time.monotonic()
            waiting_note = False
            async for offer in fw.offers():
                if offer.resources.contains(need) and satisfies(
                    offer.agent_id, offer.host, offer.rack, offer.attributes, constraints
                ):
                    spec = p.TaskSpec(task_id, name, command, need, offer.agent_id, shell, env)
                    await fw.accept(offer, [spec], filter_s=0)
                    launched = True
                    break
                await fw.decline(offer, filter_s=1.0)
                if not waiting_note and not quiet and time.monotonic() - started > 2:
                    click.echo(f"shoal: waiting for {need.describe()} ...", err=True)
                    waiting_note = True
            running = await fw.wait_for(task_id, ("running",))
            if running.state == "running":
                outs = [
                    asyncio.create_task(_copy(stream_output(rpc, task_id, "stdout"), sys.stdout.buffer)),
                    asyncio.create_task(_copy(stream_output(rpc, task_id, "stderr"), sys.stderr.buffer)),
                ]
                final = await fw.wait_for(task_id)
                await asyncio.gather(*outs)
            else:
                final = running
        finally:
            if launched and task_id in fw.statuses and fw.statuses[task_id].state not in p.TERMINAL_STATES:
                await fw.kill(task_id)
            await fw.unregister()
        return _exit_status(final, task_id, quiet)
    finally:
        rpc.close()


async def _copy(chunks, out) -> None:
    async for data in chunks:
        out.write(data)
        out.flush()


def _exit_status(status: p.TaskStatus, task_id: str, quiet: bool) -> int:
    if status.state == "finished":
        return 0
    if not quiet:
        click.echo(f"shoal: task {task_id} {status.state}: {status.message}", err=True)
    if "memory limit" in status.message:
        return EXIT_MEMORY
    if status.exit_code is not None and status.exit_code > 0:
        return status.exit_code
    return 1


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--cpus", default=1.0, show_default=True, type=float, help="CPUs for the container (a CPU quota).")
@click.option("--mem", default="128M", show_default=True, help="Memory limit, e.g. 256M or 1G.")
@click.option("--disk", default=None, help="Scratch disk to reserve, e.g. 1G.")
@click.option("--constraint", "constraints", multiple=True, metavar="ATTR=VALUE",
              help="Run only on agents whose attribute has this value (rack=r1, hostname=..., zone=...).")
@click.option("--env", "envs", multiple=True, metavar="KEY=VALUE", help="Environment variable for the command.")
@click.option("--name", default=None, help="Task name shown by shoal ps (default: the command).")
@click.option("--quiet", "-q", is_flag=True, help="Do not print the task's final state on failure.")
@cluster_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@friendly_errors
def run(cpus: float, mem: str, disk: str | None, constraints: tuple[str, ...], envs: tuple[str, ...],
        name: str | None, quiet: bool, cluster: str | None, command: tuple[str, ...]) -> None:
    """Run COMMAND in a container on some worker, stream its output and exit with its status.

    \b
    shoal run --cpus 0.5 --mem 256M -- python3 -c 'print("hi")'
    shoal run --constraint rack=r2 -- 'hostname; uptime'
    """
    need = task_resources(cpus, mem, disk)
    parsed = [parse_constraint(c) for c in constraints]
    env = {}
    for item in envs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--env expects KEY=VALUE, got {item!r}")
        env[key] = value
    argv, shell = command_line(command)
    label = name or " ".join(command)[:60]
    try:
        code = asyncio.run(_run(cluster_target(cluster), need, parsed, argv, shell, label, env, quiet))
    except KeyboardInterrupt:
        click.echo("shoal: interrupted; the task was killed", err=True)
        code = 130
    sys.exit(code)


def _age(started: float) -> str:
    s = max(0, int(time.time() - started))
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


@click.command()
@click.option("--all", "-a", "show_all", is_flag=True, help="Also list containers that have ended recently.")
@cluster_option
@json_option
@friendly_errors
def ps(show_all: bool, cluster: str | None, as_json: bool) -> None:
    """List containers: id, node, framework, resources, isolation, state, age."""
    from shoal.cluster.local import resolve
    from shoal.core.rpc_client import RpcClient
    from shoal.core.wire import Empty

    addr = resolve(cluster_target(cluster))
    with RpcClient(addr.master, addr.secret) as rpc:
        rows = rpc.call(p.LIST_CONTAINERS, Empty()).containers
    if not show_all:
        rows = [r for r in rows if r.state not in p.TERMINAL_STATES]
    if as_json:
        print_json(rows)
        return
    table = Table(box=None, header_style="bold")
    for col in ("ID", "NODE", "FRAMEWORK", "RESOURCES", "ISOLATION", "STATE", "AGE"):
        table.add_column(col)
    for r in rows:
        state = r.state + ("" if r.healthy is None else " (healthy)" if r.healthy else " (unhealthy)")
        table.add_row(r.task_id, f"{r.agent_id}@{r.rack}", r.framework, r.resources.describe(), r.isolation,
                      state if not r.message or r.state == "running" else f"{state}: {r.message}", _age(r.started))
    if rows:
        Console(width=max(120, os.get_terminal_size(sys.stdout.fileno()).columns if sys.stdout.isatty() else 160)).print(table)
    else:
        click.echo("no containers" + ("" if show_all else " running (shoal ps --all shows ended ones)"))
