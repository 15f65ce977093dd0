"""``shoal cluster ...``: the resource manager's commands, starting with fairness calculators."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from shoal.cli.common import cluster_option, friendly_errors, json_option, print_json
from shoal.cluster.drf import DrfStep, drf_schedule, max_min_fair
from shoal.cluster.resources import Resources, parse_resources
from shoal.errors import InvalidResources

TIE_BREAK = (
    "Each step launches one task for the framework with the lowest dominant share whose task still fits; "
    "equal shares go to the framework given first (--demand order)."
)


@click.group("cluster")
def cluster_group() -> None:
    """Resource manager: fairness calculators, agents and frameworks."""


def _amount(v: float) -> str:
    return str(int(v)) if v == int(v) else f"{v:.3f}".rstrip("0").rstrip(".")


def _vector(text: str, what: str) -> Resources:
    """``cpus=9,mem=18`` or ``cpus:9;mem:18`` (Mesos syntax) -> Resources."""
    text = text.strip()
    if not text:
        raise InvalidResources(f"{what} is empty: expected e.g. cpus=9,mem=18")
    assign = "=" if "=" in text else ":"
    try:
        return parse_resources(text.replace(",", ";"), assign=assign)
    except InvalidResources as exc:
        raise InvalidResources(f"{what} {text!r}: {exc}") from None


def _named(text: str) -> tuple[str, str]:
    name, found, spec = text.partition("=")
    name = name.strip()
    if not found or not name or not spec.strip():
        raise InvalidResources(f"bad --demand {text!r}: expected NAME=SPEC, e.g. fw1=cpus:1,mem:4")
    return name, spec


@cluster_group.command("drf")
@click.option("--capacity", required=True, metavar="KIND=N,...", help="Cluster capacity, e.g. cpus=9,mem=18.")
@click.option(
    "--demand", "demands", multiple=True, required=True, metavar="NAME=KIND:N,...",
    help="A framework and its per-task demand, e.g. fw1=cpus:1,mem:4 (repeatable; order breaks ties).",
)
@json_option
@friendly_errors
def drf_cmd(capacity: str, demands: tuple[str, ...], as_json: bool) -> None:
    """Dominant Resource Fairness, step by step (progressive filling, as in the DRF paper)."""
    cap = _vector(capacity, "--capacity")
    named = []
    for text in demands:
        name, spec = _named(text)
        named.append((name, _vector(spec, f"the demand of {name}")))
    steps = drf_schedule(cap, named)
    kinds = sorted(cap.scalars)
    final = _final(steps, named, kinds)
    allocated = steps[-1].allocated if steps else dict.fromkeys(kinds, 0.0)
    if as_json:
        print_json({
            "capacity": cap.scalars,
            "demands": {name: d.scalars for name, d in named},
            "tie_break": TIE_BREAK,
            "steps": steps,
            "final": final,
            "allocated": allocated,
        })
        return
    table = Table(title=f"DRF progressive filling of {', '.join(f'{_amount(cap.get(k))} {k}' for k in kinds)}")
    table.add_column("step", justify="right")
    table.add_column("launched")
    for name, _ in named:
        table.add_column(f"{name} (share → dominant)")
    table.add_column("tasks")
    table.add_column("allocated")
    for step in steps:
        table.add_row(
            str(step.step), step.framework,
            *(_share_cell(step, name, kinds, cap) for name, _ in named),
            ", ".join(f"{name} {step.tasks[name]}" for name, _ in named),
            _totals(step.allocated, kinds, cap),
        )
    console = Console()
    if steps:
        console.print(table)
    else:
        click.echo("no framework's task fits in the capacity: nothing is launched")
    for name, _ in named:
        f = final[name]
        used = ", ".join(f"{_amount(f['used'][k])} {k}" for k in kinds)
        plural = "" if f["tasks"] == 1 else "s"
        click.echo(f"{name}: {f['tasks']} task{plural} <{used}>, dominant share {f['dominant_share']:.2f}")
    click.echo(f"total: {_totals(allocated, kinds, cap)}")
    click.echo(f"note: {TIE_BREAK}")


def _share_cell(step: DrfStep, name: str, kinds: list[str], cap: Resources) -> str:
    used = step.used[name]
    parts = ", ".join(f"{k} {_amount(used[k])}/{_amount(cap.get(k))}" for k in kinds)
    return f"{parts} → {step.dominant[name]:.2f}"


def _totals(allocated: dict[str, float], kinds: list[str], cap: Resources) -> str:
    return ", ".join(f"{_amount(allocated.get(k, 0.0))}/{_amount(cap.get(k))} {k}" for k in kinds)


def _final(steps: list[DrfStep], named: list[tuple[str, Resources]], kinds: list[str]) -> dict[str, dict]:
    if steps:
        last = steps[-1]
        return {
            name: {"tasks": last.tasks[name], "used": last.used[name], "dominant_share": last.dominant[name]}
            for name, _ in named
        }
    return {name: {"tasks": 0, "used": dict.fromkeys(kinds, 0.0), "dominant_share": 0.0} for name, _ in named}


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidResources(f"{what} must be a number, got {text.strip()!r}") from None
    return value


@cluster_group.command("maxmin")
@click.option("--capacity", required=True, metavar="N", help="Amount of the one resource to share, e.g. 10.")
@click.option(
    "--demand", "demands", multiple=True, required=True, metavar="NAME=N",
    help="A framework and how much it wants, e.g. A=1 (repeatable).",
)
@json_option
@friendly_errors
def maxmin_cmd(capacity: str, demands: tuple[str, ...], as_json: bool) -> None:
    """Max-min fair shares of one resource (water-filling; DRF with a single resource)."""
    cap = _number(capacity, "--capacity")
    named = []
    for text in demands:
        name, spec = _named(text)
        named.append((name, _number(spec, f"the demand of {name}")))
    shares = max_min_fair(cap, named)
    rows = [
        {"framework": name, "demand": demand, "allocation": got, "satisfied": got >= demand}
        for (name, demand), (_, got) in zip(named, shares)
    ]
    total = sum(r["allocation"] for r in rows)
    if as_json:
        print_json({"capacity": cap, "allocations": rows, "allocated": total})
        return
    table = Table(title=f"max-min fair shares of {_amount(cap)}")
    for col, justify in (("framework", "left"), ("demand", "right"), ("allocation", "right"), ("satisfied", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(r["framework"], _amount(r["demand"]), _amount(r["allocation"]), "yes" if r["satisfied"] else "no")
    Console().print(table)
    click.echo(f"allocated {_amount(total)} of {_amount(cap)}")


def _master_call(cluster: str | None, method):
    from shoal.cli.common import cluster_target
    from shoal.cluster.local import resolve
    from shoal.core.rpc_client import RpcClient
    from shoal.core.wire import Empty

    addr = resolve(cluster_target(cluster))
    with RpcClient(addr.master, addr.secret) as rpc:
        return rpc.call(method, Empty())


@cluster_group.command("agents")
@cluster_option
@json_option
@friendly_errors
def agents_cmd(cluster: str | None, as_json: bool) -> None:
    """Agents: total and available resources, attributes, isolation, containers."""
    from shoal.cluster import protocol as p

    agents = _master_call(cluster, p.LIST_AGENTS).agents
    if as_json:
        print_json(agents)
        return
    table = Table(box=None, header_style="bold")
    for col in ("AGENT", "HOST", "STATE", "TOTAL", "AVAILABLE", "ATTRIBUTES", "ISOLATION", "CONTAINERS"):
        table.add_column(col)
    for a in agents:
        attrs = ";".join(f"{k}:{v}" for k, v in sorted(a.info.attributes.items()))
        table.add_row(a.info.agent_id, f"{a.info.host}", a.state, a.info.total.describe(), a.available.describe(),
                      attrs, a.info.isolation, str(a.containers))
    Console(width=200).print(table)


@cluster_group.command("frameworks")
@cluster_option
@json_option
@friendly_errors
def frameworks_cmd(cluster: str | None, as_json: bool) -> None:
    """Registered frameworks: role, weight, allocation and weighted dominant share."""
    from shoal.cluster import protocol as p

    frameworks = _master_call(cluster, p.LIST_FRAMEWORKS).frameworks
    if as_json:
        print_json(frameworks)
        return
    table = Table(box=None, header_style="bold")
    for col in ("ID", "NAME", "ROLE", "WEIGHT", "ALLOCATED", "DOMINANT SHARE", "TASKS"):
        table.add_column(col)
    for f in frameworks:
        table.add_row(f.framework_id, f.info.name, f.info.role, f"{f.info.weight:g}", f.allocated.describe(),
                      f"{f.dominant_share:.3f}", str(f.tasks))
    Console(width=200).print(table)
