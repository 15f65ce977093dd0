"""``shoal mapreduce streaming``: Hadoop Streaming's command line, on shoal.

Options are Hadoop's, single dash (``-input``, ``-mapper``, ``-D key=value``, ...),
so existing streaming invocations run unchanged after ``shoal mapreduce``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import click

from shoal.cli.common import fail, friendly_errors

USAGE = """\
Usage: shoal mapreduce streaming -input PATH -output PATH -mapper CMD [options]

  -input PATH            input file, directory or glob (repeatable; comma lists too)
  -output PATH           output directory (must not exist, unless -overwrite)
  -mapper CMD            command reading input lines on stdin, writing key<TAB>value lines
  -reducer CMD           command reading key-sorted key<TAB>value lines (NONE: map-only)
  -combiner CMD          command run on each sorted map-side spill
  -numReduceTasks N      reducers (default 1; 0 makes a map-only job)
  -partitioner CLASS     org.apache.hadoop.mapred.lib.KeyFieldBasedPartitioner (or keyfield),
                         HashPartitioner (or hash, the default)
  -file FILE             ship FILE into each task's working directory (repeatable)
  -files A,B             the same, as a comma-separated list
  -cmdenv NAME=VALUE     environment variable for the commands (repeatable)
  -D KEY=VALUE           a Hadoop job property (repeatable), e.g.
                         -D mapreduce.job.reduces=4 -D stream.num.map.output.key.fields=2
                         -D mapreduce.partition.keypartitioner.options=-k1,1
  -overwrite             replace an existing output directory
  -master URL            local[N], local[*] or shoal (default: $SHOAL_MASTER, else local[*])
  -cluster DIR|URL       run on this cluster (its workers run the tasks; paths without a
                         scheme are then on its DFS, as with Hadoop's default file system)
  -quiet                 no progress bars (-verbose is accepted, as Hadoop's, and changes nothing)
Paths: local, file:/abs, or shoal:///abs (the DFS).
"""

# Options taking a value, and whether they repeat.
VALUE_OPTIONS = {
    "input": True, "output": False, "mapper": False, "reducer": False, "combiner": False,
    "numReduceTasks": False, "partitioner": False, "file": True, "files": True, "cmdenv": True,
    "D": True, "master": False, "cluster": False, "jt": False,
}
FLAGS = {"overwrite", "quiet", "verbose", "help", "h", "info"}


@dataclass
class StreamingArgs:
    values: dict[str, list[str]] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)

    def one(self, name: str) -> str | None:
        got = self.values.get(name)
        return got[-1] if got else None

    def many(self, name: str) -> list[str]:
        return self.values.get(name, [])


def parse_streaming_args(argv: list[str]) -> StreamingArgs:
    """Hadoop's single-dash options (``--name`` accepted too); ``-Dk=v`` and ``-D k=v``."""
    args = StreamingArgs()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            raise click.UsageError(f"unexpected argument {arg!r} (options start with '-'; see -help)")
        name = arg.lstrip("-")
        value: str | None = None
        if name.startswith("D") and len(name) > 1:
            name, value = "D", name[1:]
        elif "=" in name and name.split("=", 1)[0] in VALUE_OPTIONS and name.split("=", 1)[0] != "D":
            name, value = name.split("=", 1)
        if name in FLAGS:
            args.flags.add(name)
            i += 1
            continue
        if name not in VALUE_OPTIONS:
            raise click.UsageError(f"unknown option {arg!r} (see -help)")
        if value is None:
            if i + 1 >= len(argv):
                raise click.UsageError(f"option {arg} needs a value")
            value = argv[i + 1]
            i += 1
        if not VALUE_OPTIONS[name] and name in args.values:
            raise click.UsageError(f"option -{name} given twice")
        args.values.setdefault(name, []).append(value)
        i += 1
    return args


def _pair(item: str, option: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        fail(f"{option} expects KEY=VALUE, got {item!r}")
    return key.strip(), value


def _on_dfs(path: str, cluster: bool) -> str:
    """With a cluster, a path without a scheme names a DFS file (Hadoop's default FS)."""
    if cluster and "://" not in path and not path.startswith("file:"):
        return "shoal://" + os.path.abspath(path) if not path.startswith("/") else "shoal://" + path
    return path


@click.group("mapreduce")
def mapreduce_group() -> None:
    """MapReduce jobs on shoal's engine (Hadoop Streaming)."""


@mapreduce_group.command("streaming", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                                       "help_option_names": []})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@friendly_errors
def streaming(argv: tuple[str, ...]) -> None:
    """Run a Hadoop Streaming job: any commands as mapper, combiner and reducer (-help lists the options)."""
    try:
        args = parse_streaming_args(list(argv))
    except click.UsageError as exc:
        fail(exc.message)
    if args.flags & {"help", "h", "info"} or not argv:
        click.echo(USAGE)
        return
    from shoal.mapreduce.conf import HASH_PARTITIONERS, KEY_FIELD_PARTITIONERS, MRConf
    from shoal.mapreduce.job import run_job
    from shoal.mapreduce.streaming import StreamingLogic

    for required in ("input", "output", "mapper"):
        if not args.one(required):
            fail(f"missing -{required} (see -help)")
    props = dict(_pair(item, "-D") for item in args.many("D"))
    cmdenv = dict(_pair(item, "-cmdenv") for item in args.many("cmdenv"))
    reducers = None
    if args.one("numReduceTasks") is not None:
        try:
            reducers = int(args.one("numReduceTasks"))  # type: ignore[arg-type]
        except ValueError:
            fail(f"-numReduceTasks expects a number, got {args.one('numReduceTasks')!r}")
        if not 0 <= reducers <= 100000:  # type: ignore[operator]
            fail("-numReduceTasks must be between 0 and 100000")
    reducer = args.one("reducer")
    if reducer is not None and reducer.upper() == "NONE":
        reducer, reducers = None, 0
    conf = MRConf.from_properties(props, reducers)
    if reducer is None and conf.reducers > 0:
        reducer = "cat"  # Hadoop's default reducer is the identity
    partitioner = args.one("partitioner") or conf.partitioner_class
    if partitioner is not None and partitioner not in KEY_FIELD_PARTITIONERS | HASH_PARTITIONERS:
        fail(f"unsupported -partitioner {partitioner!r}: use org.apache.hadoop.mapred.lib.KeyFieldBasedPartitioner "
             "or HashPartitioner")
    try:
        logic = StreamingLogic.from_conf(args.one("mapper"), reducer, args.one("combiner"), conf,  # type: ignore[arg-type]
                                         partitioner in KEY_FIELD_PARTITIONERS, cmdenv)
    except ValueError as exc:
        fail(str(exc))
    files: dict[str, tuple[int, bytes]] = {}
    for item in args.many("file") + [f for group in args.many("files") for f in group.split(",") if f]:
        try:
            with open(item, "rb") as f:
                files[os.path.basename(item)] = (os.stat(item).st_mode, f.read())
        except OSError as exc:
            fail(f"cannot ship -file {item}: {exc.strerror or exc}")
    cluster = args.one("cluster")
    master = args.one("master") or ("local[*]" if args.one("jt") == "local" else None)
    if cluster:
        os.environ["SHOAL_CLUSTER"] = cluster
        master = master or "shoal"
    on_cluster = bool(master and master.startswith("shoal")) or (
        master is None and os.environ.get("SHOAL_MASTER", "").startswith("shoal"))
    inputs = [_on_dfs(p, on_cluster) for item in args.many("input") for p in item.split(",") if p]
    output = _on_dfs(args.one("output"), on_cluster)  # type: ignore[arg-type]
    engine_conf = {"spark.ui.showConsoleProgress": "false"} if "quiet" in args.flags else {}
    name = conf.job_name or "streaming"
    result = run_job(logic, inputs=inputs, output=output, conf=conf, name=name, files=files,
                     overwrite="overwrite" in args.flags, master=master, engine_conf=engine_conf)
    result.print_report(sys.stderr)
