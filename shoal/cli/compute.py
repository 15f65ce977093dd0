"""``shoal submit`` (run a PySpark-style driver program) and ``shoal jobs``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from shoal.cli.common import fail, fmt_time, friendly_errors, json_option


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--master", "-m", default=None, metavar="URL",
              help="local[N], local[*], shoal or shoal://HOST:PORT (default: local[*], or the cluster given).")
@click.option("--cluster", "-c", default=None, metavar="DIR|shoal://HOST:PORT",
              help="Run executors as containers on this cluster (sets the master to it).")
@click.option("--executors", type=click.IntRange(1, 10000), help="Executors to request on a cluster.")
@click.option("--executor-cores", type=click.IntRange(1, 1024), help="Task slots (and CPUs) per executor.")
@click.option("--executor-memory", metavar="SIZE", help="Memory per executor container, e.g. 1g.")
@click.option("--conf", "confs", multiple=True, metavar="KEY=VALUE", help="A Spark setting (repeatable).")
@click.option("--name", default=None, help="Application name.")
@click.argument("program", type=click.Path(exists=True, dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@friendly_errors
def submit(master: str | None, cluster: str | None, executors: int | None, executor_cores: int | None,
           executor_memory: str | None, confs: tuple[str, ...], name: str | None, program: str,
           args: tuple[str, ...]) -> None:
    """Run a driver PROGRAM in which `import pyspark` is shoal's PySpark surface.

    \b
      shoal submit wordcount.py /data/books /out/wc
      shoal submit --cluster ./shoal-cluster --executors 3 --executor-memory 1g job.py
    """
    conf: dict[str, str] = {}
    for item in confs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--conf expects KEY=VALUE, got {item!r}")
        conf[key.strip()] = value
    if executors:
        conf["spark.executor.instances"] = str(executors)
    if executor_cores:
        conf["spark.executor.cores"] = str(executor_cores)
    if executor_memory:
        conf["spark.executor.memory"] = executor_memory
    if name:
        conf["spark.app.name"] = name
    env = dict(os.environ)
    if cluster:
        env["SHOAL_CLUSTER"] = cluster
        master = master or "shoal"
    if master:
        env["SHOAL_MASTER"] = master
    if conf:
        env["SHOAL_SUBMIT_CONF"] = json.dumps(conf)
    shim = str(Path(__file__).resolve().parent.parent / "spark" / "shim")
    script_dir = str(Path(program).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (shim, script_dir, env.get("PYTHONPATH", "")) if p)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, program, *args], env)


@click.command()
@json_option
@click.option("--dir", "jobs_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of job records (default: $SHOAL_JOBS_DIR, the cluster's jobs/, or ~/.shoal/jobs).")
@click.option("--app", "app_id", default=None, help="Only this application.")
@click.option("--tasks", is_flag=True, help="Show every task attempt.")
@friendly_errors
def jobs(as_json: bool, jobs_dir: Path | None, app_id: str | None, tasks: bool) -> None:
    """List compute jobs with their stages: tasks, duration, locality, shuffle, retries."""
    from rich.console import Console
    from rich.table import Table

    from shoal.compute.jobs import default_jobs_dir, load_apps
    from shoal.core.units import format_size

    folder = jobs_dir or default_jobs_dir()
    apps = load_apps(folder) if folder.is_dir() else []
    if app_id:
        apps = [a for a in apps if a.get("app_id") == app_id]
        if not apps:
            fail(f"no application {app_id!r} in {folder}")
    if as_json:
        click.echo(json.dumps(apps, indent=2))
        return
    if not apps:
        click.echo(f"no jobs recorded in {folder}")
        return
    console = Console()
    for app in apps:
        console.print(f"[bold]{app['app_id']}[/bold] {app['name']} ({app['master']}) started "
                      f"{fmt_time(app['start'])}, {app['state']}")
        table = Table(show_edge=False)
        for col in ("job", "stage", "state", "tasks", "duration", "locality", "shuffle read", "shuffle write",
                    "spills", "retries", "speculative"):
            table.add_column(col)
        for job in app["jobs"]:
            dur = f"{job['duration_s']:.2f}s" if job.get("duration_s") is not None else "-"
            table.add_row(str(job["job_id"]), job["action"], job["state"], "", dur, "", "", "", "", "", "")
            for st in job["stages"]:
                loc = ", ".join(f"{k}:{v}" for k, v in sorted(st.get("locality", {}).items()))
                done = sum(1 for t in st["tasks"] if t["state"] == "succeeded")
                table.add_row(
                    "", f"{st['stage_id']} {st['name']}", st["state"], f"{done}/{st['num_tasks']}", "",
                    loc, format_size(st.get("shuffle_read_bytes", 0)), format_size(st.get("shuffle_write_bytes", 0)),
                    str(st.get("spills", 0)), str(st.get("retries", 0)), str(st.get("speculative", 0)),
                )
                if tasks:
                    for t in st["tasks"]:
                        d = f"{t['duration_s']:.3f}s" if t.get("duration_s") is not None else "-"
                        table.add_row("", f"  task {t['task_id']} p{t['partition']}.{t['attempt']}", t["state"],
                                      t["executor"], d, t["locality"], "", "", "", "",
                                      "yes" if t["speculative"] else "")
            if job.get("failure"):
                table.add_row("", f"[red]{job['failure'][:120]}[/red]", "", "", "", "", "", "", "", "", "")
        console.print(table)
