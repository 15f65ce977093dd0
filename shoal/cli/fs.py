"""``shoal fs ...``: the file system commands (the ``hdfs dfs`` of shoal)."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from shoal.cli.common import cluster_option, connect, fmt_time, friendly_errors, json_option, local_path, print_json
from shoal.core.units import format_size, parse_size
from shoal.errors import ConfigError, FileAlreadyExists


def _size(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group("fs")
def fs_group() -> None:
    """Store and read files in the distributed file system."""


@fs_group.command("put")
@click.argument("local")
@click.argument("path")
@click.option("-r", "--replication", type=click.IntRange(1, 512), help="Replicas per block (default: dfs.replication).")
@click.option("--block-size", callback=_size, help="Block size, e.g. 64M (default: dfs.block_size).")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing file.")
@cluster_option
@friendly_errors
def put(local: str, path: str, replication: int | None, block_size: int | None, force: bool, cluster: str | None) -> None:
    """Copy LOCAL (or - for stdin) to PATH. If PATH is a directory, into it."""
    with connect(cluster) as c:
        if c.fs.exists(path) and c.fs.stat(path).kind == "directory":
            name = "stdin" if local == "-" else local_path(local).name
            path = path.rstrip("/") + "/" + name
        src = sys.stdin.buffer if local == "-" else local_path(local)
        if local != "-" and local_path(local).is_dir():
            raise IsADirectoryError(21, "Is a directory", local)
        c.fs.put(src, path, replication=replication, block_size=block_size, overwrite=force)


@fs_group.command("appendToFile")
@click.argument("local")
@click.argument("path")
@cluster_option
@friendly_errors
def append_to_file(local: str, path: str, cluster: str | None) -> None:
    """Append LOCAL (or - for stdin) to PATH, creating it if missing."""
    with connect(cluster) as c:
        src = sys.stdin.buffer if local == "-" else local_path(local)
        c.fs.append(src, path)


@fs_group.command("get")
@click.argument("path")
@click.argument("local")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing local file.")
@cluster_option
@friendly_errors
def get(path: str, local: str, force: bool, cluster: str | None) -> None:
    """Copy PATH to the local file LOCAL."""
    dst = local_path(local)
    with connect(cluster) as c:
        if dst.is_dir():
            dst = dst / path.rstrip("/").rsplit("/", 1)[-1]
        if dst.exists() and not force:
            raise FileAlreadyExists(f"local file {dst} exists (use -f to overwrite)")
        c.fs.get(path, dst)


@fs_group.command("cat")
@click.argument("paths", nargs=-1, required=True)
@cluster_option
@friendly_errors
def cat(paths: tuple[str, ...], cluster: str | None) -> None:
    """Write files to standard output."""
    out = sys.stdout.buffer
    with connect(cluster) as c:
        for path in paths:
            with c.fs.open(path, "rb") as f:
                buf = bytearray(1 << 20)
                while n := f.readinto(buf):
                    out.write(memoryview(buf)[:n])
    out.flush()


@fs_group.command("ls")
@click.argument("path", default="/")
@click.option("-l", "long", is_flag=True, help="Long listing: permissions, replication, size, time.")
@click.option("-h", "human", is_flag=True, help="Human-readable sizes.")
@json_option
@cluster_option
@friendly_errors
def ls(path: str, long: bool, human: bool, as_json: bool, cluster: str | None) -> None:
    """List a directory (or show one file)."""
    with connect(cluster) as c:
        entries = c.fs.listdir(path)
    if as_json:
        print_json(entries)
        return
    for e in entries:
        if not long:
            click.echo(e.path)
            continue
        is_dir = e.kind == "directory"
        perm = ("d" if is_dir else "-") + _rwx(e.permission)
        size = format_size(e.length) if human else str(e.length)
        rep = "-" if is_dir else str(e.replication)
        click.echo(f"{perm} {rep:>3} {e.owner} {e.owner} {size:>12} {fmt_time(e.mtime)} {e.path}")


def _rwx(octal: str) -> str:
    bits = "".join(f"{int(d):03b}" for d in octal[-3:].rjust(3, "0"))
    return "".join(ch if b == "1" else "-" for ch, b in zip("rwxrwxrwx", bits))


@fs_group.command("mkdir")
@click.argument("paths", nargs=-1, required=True)
@click.option("-p", "parents", is_flag=True, help="Create parents; no error if it exists.")
@cluster_option
@friendly_errors
def mkdir(paths: tuple[str, ...], parents: bool, cluster: str | None) -> None:
    """Create directories."""
    with connect(cluster) as c:
        for path in paths:
            c.fs.mkdirs(path, parents=parents)


@fs_group.command("mv")
@click.argument("src")
@click.argument("dst")
@cluster_option
@friendly_errors
def mv(src: str, dst: str, cluster: str | None) -> None:
    """Rename SRC to DST (into DST if it is a directory)."""
    with connect(cluster) as c:
        c.fs.rename(src, dst)


@fs_group.command("rm")
@click.argument("paths", nargs=-1, required=True)
@click.option("-r", "-R", "recursive", is_flag=True, help="Delete directories and their contents.")
@cluster_option
@friendly_errors
def rm(paths: tuple[str, ...], recursive: bool, cluster: str | None) -> None:
    """Delete files (and with -r, directories)."""
    with connect(cluster) as c:
        for path in paths:
            c.fs.delete(path, recursive=recursive)


@fs_group.command("du")
@click.argument("path", default="/")
@click.option("-h", "human", is_flag=True, help="Human-readable sizes.")
@click.option("-s", "summary", is_flag=True, help="Only the total for PATH.")
@json_option
@cluster_option
@friendly_errors
def du(path: str, human: bool, summary: bool, as_json: bool, cluster: str | None) -> None:
    """Space used: bytes, and bytes including replicas, per entry."""
    with connect(cluster) as c:
        targets = [c.fs.stat(path)] if summary or c.fs.stat(path).kind == "file" else c.fs.listdir(path)
        rows = [(t.path, c.fs.du(t.path)) for t in targets]
    if as_json:
        print_json([{"path": p, **_summary(s)} for p, s in rows])
        return
    for p, s in rows:
        length = format_size(s.length) if human else str(s.length)
        consumed = format_size(s.space_consumed) if human else str(s.space_consumed)
        click.echo(f"{length:>12}  {consumed:>12}  {p}")


def _summary(s) -> dict:
    return {
        "length": s.length,
        "space_consumed": s.space_consumed,
        "files": s.file_count,
        "directories": s.directory_count,
    }


@fs_group.command("stat")
@click.argument("path")
@json_option
@cluster_option
@friendly_errors
def stat(path: str, as_json: bool, cluster: str | None) -> None:
    """Show a file's or directory's metadata."""
    with connect(cluster) as c:
        s = c.fs.stat(path)
    if as_json:
        print_json(s)
        return
    click.echo(f"path: {s.path}\ntype: {s.kind}\nlength: {s.length}")
    if s.kind == "file":
        click.echo(f"replication: {s.replication}\nblock size: {s.block_size}")
        click.echo(f"under construction: {'yes' if s.under_construction else 'no'}")
    click.echo(f"modified: {fmt_time(s.mtime)}\npermission: {s.permission}\nowner: {s.owner}")


@fs_group.command("blocks")
@click.argument("path")
@json_option
@cluster_option
@friendly_errors
def blocks(path: str, as_json: bool, cluster: str | None) -> None:
    """Each block of a file: id, offset, length, replicas as node@rack."""
    with connect(cluster) as c:
        located = c.fs.blocks(path)
    if as_json:
        print_json(
            [
                {
                    "block_id": b.block.block_id,
                    "gen_stamp": b.block.gen_stamp,
                    "offset": b.block.offset,
                    "length": b.block.length,
                    "replicas": [{"node": n.node_id, "rack": n.rack, "address": f"{n.host}:{n.data_port}"} for n in b.locations],
                }
                for b in located.blocks
            ]
        )
        return
    table = Table(title=f"{located.status.path}: {len(located.blocks)} blocks, replication {located.status.replication}")
    for col in ("block", "offset", "length", "replicas"):
        table.add_column(col, justify="right" if col in ("offset", "length") else "left")
    for b in located.blocks:
        table.add_row(
            f"blk_{b.block.block_id}",
            str(b.block.offset),
            str(b.block.length),
            " ".join(n.label() for n in b.locations) or "[red]none[/red]",
        )
    Console().print(table)


@fs_group.command("fsck")
@click.argument("path", default="/")
@click.option("--blocks", "show_blocks", is_flag=True, help="List every block, not only unhealthy ones.")
@json_option
@cluster_option
@friendly_errors
def fsck(path: str, show_blocks: bool, as_json: bool, cluster: str | None) -> None:
    """Check block health under PATH; exit 1 if any block is missing or corrupt."""
    with connect(cluster) as c:
        report = c.fs.fsck(path)
    if as_json:
        print_json(report)
    else:
        for f in report.files:
            if f.status == "healthy" and not show_blocks:
                continue
            click.echo(f"{f.path}: {f.status} ({len(f.blocks)} blocks, replication {f.replication})")
            for b in f.blocks:
                if b.status != "healthy" or show_blocks:
                    where = " ".join(b.replicas) or "no live replica"
                    bad = f" corrupt: {' '.join(b.corrupt)}" if b.corrupt else ""
                    click.echo(f"  blk_{b.block_id} len={b.length} {b.status} [{len(b.replicas)}/{b.expected}] {where}{bad}")
        t = report.totals
        click.echo(
            f"{len(report.files)} files, {report.directories} directories, {sum(t.values())} blocks: "
            + ", ".join(f"{v} {k}" for k, v in t.items())
        )
        click.echo(f"The filesystem under '{report.path}' is {'HEALTHY' if report.healthy else 'CORRUPT'}")
    if not report.healthy:
        sys.exit(1)
