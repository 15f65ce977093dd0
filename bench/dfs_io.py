"""DFS streaming throughput against the Unix tools, on one file, in one run.

Starts a local cluster (3 workers on 2 racks, default 128 MiB blocks) in a work
folder, writes one input file there and, per run, times on that same file:

    cp input out              the peer of put
    cat input > out           the peer of get (both write a local file)
    cat input > /dev/null     reading alone, for honesty
    put (replication 1), get, put (replication 3), get

It prints one JSON object: MB/s per step (median and every run), ratios of shoal to
its peer, and whether the goals (put_r1 >= 0.5x cp, get >= 0.7x cat) are met.

Then, once and in a cluster of its own (4 workers on 2 racks, short timers), it
measures re-replication: it writes a --rereplication-size file at replication 3,
kills (SIGKILL) the worker holding most of its blocks, and times from the master
declaring that worker dead to every block having 3 live replicas again, in MB/s of
the data re-replicated (section "rereplication"; --rereplication-size 0 skips it).

    .venv/bin/python bench/dfs_io.py --size 256M --runs 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    Series,
    emit,
    files_equal,
    log,
    machine_info,
    make_input_file,
    mb_per_s,
    memory_touch_mb_s,
    ratio,
    rounded,
    size_arg,
    size_or_zero_arg,
    stop_quietly,
    timed,
)
from rereplication import run_rereplication  # noqa: E402

import shoal  # noqa: E402
from shoal.cluster.local import LocalCluster  # noqa: E402
from shoal.core.config import parse_settings  # noqa: E402
from shoal.dfs.client import DFSClient  # noqa: E402
from shoal.errors import ConfigError  # noqa: E402
from shoal.core.units import format_size  # noqa: E402

GOAL_PUT_R1_VS_CP = 0.5
GOAL_GET_VS_CAT = 0.7
NOISY_SPREAD = 0.5  # a step whose fastest run beat its slowest by more than 1.5x
BUSY_FRACTION = 0.25  # others used more than a quarter of all CPUs during a step
DFS_DIR = "/bench"
REPLICAS_GONE_TIMEOUT_S = 20.0
SETTLE_S = 3.0

STEPS = {
    "cp": "cp input out (subprocess)",
    "cat_to_file": "cat input > out (subprocess, stdout to a file)",
    "cat_to_devnull": "cat input > /dev/null (subprocess)",
    "put_r1": "DFSClient.put(input, replication=1)",
    "get_r1": "DFSClient.get of the replication-1 file to a local file",
    "put_r3": "DFSClient.put(input, replication=3)",
    "get_r3": "DFSClient.get of the replication-3 file to a local file",
}


# Steps run in groups (a get needs its put); the groups rotate from run to run so that
# no tool always runs first, or always right after the 3-replica write.
STEP_GROUPS = [["cp", "cat_to_file", "cat_to_devnull"], ["put_r1", "get_r1"], ["put_r3", "get_r3"]]


def run_order(i: int) -> list[str]:
    k = i % len(STEP_GROUPS)
    return [name for group in STEP_GROUPS[k:] + STEP_GROUPS[:k] for name in group]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=size_arg, default=size_arg("1G"), help="input size, e.g. 256M, 1G (default 1G)")
    ap.add_argument("--runs", type=int, default=3, help="runs of every step; the median is reported (default 3)")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="parent folder for the input, the cluster and the outputs (default: the temp dir); "
        "a fresh subfolder is made in it and removed afterwards unless --keep",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--racks", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="cluster config override (repeatable)")
    ap.add_argument(
        "--rereplication-size",
        type=size_or_zero_arg,
        default=size_arg("512M"),
        help="size of the file whose replicas on a killed worker are re-replicated, measured once after "
        "the runs in a cluster of its own (default 512M; 0 skips it; --set does not apply to it)",
    )
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    try:
        args.overrides = parse_settings(args.set)
    except ConfigError as exc:
        ap.error(str(exc))
    return args


def wait_for_replicas_gone(fs: DFSClient, timeout_s: float) -> bool:
    """After a delete, poll until the workers report no stored bytes (they delete on
    their next heartbeat), so the next run does not overlap the unlinks."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(n.used_bytes for n in fs.report().nodes) == 0:
            return True
        time.sleep(0.2)
    return False


def check_replication(fs: DFSClient, path: str, expected: int) -> bool:
    blocks = fs.blocks(path).blocks
    return bool(blocks) and all(len({loc.node_id for loc in b.locations}) == expected for b in blocks)


def run(args: argparse.Namespace) -> dict[str, Any]:
    parent = (args.workdir or Path(tempfile.gettempdir())).resolve()
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-dfs-io-", dir=parent))
    try:
        result = run_io(args, work)
        if args.rereplication_size:
            rr = run_rereplication(args, work)
            result["rereplication"] = rr
            result["verified"]["rereplication_read_back_identical"] = rr["verified"]["read_back_identical"]
            if not rr["restored"]:
                result["warnings"].append("re-replication did not finish before its deadline (see rereplication)")
        return result
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_io(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    size = args.size
    inp = work / "input.bin"
    out = {name: work / f"out_{name}.bin" for name in ("cp", "cat_to_file", "get_r1", "get_r3")}
    series = {name: Series(name, size, what) for name, what in STEPS.items()}
    cluster = LocalCluster(work / "cluster")
    client: shoal.Cluster | None = None
    extra: dict[str, Any] = {}
    try:
        log(f"work folder {work}")
        machine = machine_info(work, tools=("cp", "cat"))
        needed = size * 10  # input + cp + cat + get x2 + replicas (1 + 3) + slack
        if args.rereplication_size:
            needed += args.rereplication_size * 6  # its input + 3 replicas + the copies + slack
        if machine["disk_free_bytes"] < needed:
            raise SystemExit(f"need about {format_size(needed)} free in {work}, have {machine['disk_free']}")

        extra["memory_touch_mb_s_before"] = memory_touch_mb_s()
        log(f"writing a {format_size(size)} input file")
        t0 = time.perf_counter()
        make_input_file(inp, size)
        extra["input_write_s"] = rounded(time.perf_counter() - t0)

        log(f"starting a cluster: {args.workers} workers on {args.racks} racks")
        t0 = time.perf_counter()
        cluster.up(workers=args.workers, racks=args.racks, overrides=args.overrides or None)
        extra["cluster_up_s"] = rounded(time.perf_counter() - t0)
        daemons = [psutil.Process(e["pid"]) for e in cluster.processes]
        client = shoal.connect(cluster.folder)
        fs = client.fs
        fs.mkdirs(DFS_DIR)
        cfg = fs.config.dfs

        subprocess_steps = {
            "cp": lambda: subprocess.run(["cp", str(inp), str(out["cp"])], check=True),
            "cat_to_file": lambda: _cat(inp, out["cat_to_file"]),
            "cat_to_devnull": lambda: subprocess.run(["cat", str(inp)], stdout=subprocess.DEVNULL, check=True),
        }
        shoal_steps = {
            "put_r1": lambda: fs.put(inp, f"{DFS_DIR}/r1", replication=1, overwrite=True),
            "get_r1": lambda: fs.get(f"{DFS_DIR}/r1", out["get_r1"]),
            "put_r3": lambda: fs.put(inp, f"{DFS_DIR}/r3", replication=3, overwrite=True),
            "get_r3": lambda: fs.get(f"{DFS_DIR}/r3", out["get_r3"]),
        }
        verified: dict[str, bool] = {}
        replicas_gone: list[bool] = []
        orders: list[list[str]] = []
        for i in range(args.runs):
            order = run_order(i)
            orders.append(order)
            log(f"run {i + 1}/{args.runs}")
            for name in order:
                os.sync()  # untimed: no step inherits another step's dirty pages
                if name in subprocess_steps:
                    sample = timed(subprocess_steps[name])
                else:
                    sample = timed(shoal_steps[name], watch=daemons)
                series[name].samples.append(sample)
                log(f"  {name:15s} {sample.wall_s:7.2f} s  {mb_per_s(size, sample.wall_s):8.1f} MB/s")
            if i == 0:
                log("verifying outputs (untimed)")
                for name, path in out.items():
                    verified[f"{name}_identical"] = files_equal(inp, path)
                verified["dfs_lengths"] = fs.stat(f"{DFS_DIR}/r1").length == size and fs.stat(f"{DFS_DIR}/r3").length == size
                verified["r1_replicas"] = check_replication(fs, f"{DFS_DIR}/r1", 1)
                verified["r3_replicas"] = check_replication(fs, f"{DFS_DIR}/r3", 3)
                bad = [k for k, ok in verified.items() if not ok]
                if bad:
                    raise SystemExit(f"verification failed: {', '.join(bad)}")
            for path in out.values():
                path.unlink(missing_ok=True)
            fs.delete(DFS_DIR, recursive=True)
            fs.mkdirs(DFS_DIR)
            if i + 1 < args.runs:
                replicas_gone.append(wait_for_replicas_gone(fs, REPLICAS_GONE_TIMEOUT_S))
                # Untimed: a VM may hand freed pages back to its host a couple of seconds
                # after they are freed; let that finish before the next run's steps.
                time.sleep(SETTLE_S)

        extra["memory_touch_mb_s_after"] = memory_touch_mb_s()
        extra["order_per_run"] = orders
        return report(args, size, work, machine, cfg, series, verified, replicas_gone, extra)
    finally:
        stop_quietly(client, cluster)


def _cat(src: Path, dst: Path) -> None:
    with open(dst, "wb") as f:
        subprocess.run(["cat", str(src)], stdout=f, check=True)


def report(
    args: argparse.Namespace,
    size: int,
    work: Path,
    machine: dict[str, Any],
    cfg: Any,
    series: dict[str, Series],
    verified: dict[str, bool],
    replicas_gone: list[bool],
    extra: dict[str, Any],
) -> dict[str, Any]:
    med = {name: s.median_mb_s for name, s in series.items()}
    pairs = {
        "put_r1_vs_cp": ("put_r1", "cp"),
        "put_r3_vs_cp": ("put_r3", "cp"),
        "get_r1_vs_cat_to_file": ("get_r1", "cat_to_file"),
        "get_r3_vs_cat_to_file": ("get_r3", "cat_to_file"),
        "get_r1_vs_cat_to_devnull": ("get_r1", "cat_to_devnull"),
        "get_r3_vs_cat_to_devnull": ("get_r3", "cat_to_devnull"),
    }
    ratios = {k: rounded(ratio(med[a], med[b])) for k, (a, b) in pairs.items()}
    per_run = {
        k: [rounded(ratio(series[a].run_mb_s(i), series[b].run_mb_s(i))) for i in range(args.runs)]
        for k, (a, b) in pairs.items()
    }
    get_vs_cat = min(ratios["get_r1_vs_cat_to_file"], ratios["get_r3_vs_cat_to_file"])
    goals = {
        "put_r1_vs_cp": {
            "target": GOAL_PUT_R1_VS_CP,
            "value": ratios["put_r1_vs_cp"],
            "goal_met": ratios["put_r1_vs_cp"] >= GOAL_PUT_R1_VS_CP,
        },
        "get_vs_cat": {
            "target": GOAL_GET_VS_CAT,
            "value": get_vs_cat,
            "goal_met": get_vs_cat >= GOAL_GET_VS_CAT,
            "measured_as": "the worse of get_r1 and get_r3, against cat to a file (get writes a file)",
            "vs_cat_to_devnull": min(ratios["get_r1_vs_cat_to_devnull"], ratios["get_r3_vs_cat_to_devnull"]),
        },
    }
    warnings = [
        f"{name} varied {1 + s.to_json()['spread']:.1f}x between runs ({', '.join(f'{r:.0f}' for r in map(s.run_mb_s, range(args.runs)))} MB/s)"
        for name, s in series.items()
        if args.runs > 1 and s.to_json()["spread"] > NOISY_SPREAD
    ]
    busy = {name: s.busy_fraction() for name, s in series.items()}
    busy = {name: f for name, f in busy.items() if f > BUSY_FRACTION}
    if busy:
        warnings.append(
            "the machine was shared: other processes, kernel threads and steal used up to "
            + ", ".join(f"{100 * f:.0f}% ({name})" for name, f in busy.items())
            + " of all CPUs during a run (see other_cpu_s_median, steal_s_median); rerun on an idle machine"
        )
    if warnings:
        warnings.append(
            "noisy machine: compare ratios_per_run and memory_touch_mb_s; "
            + ("this VM returns freed pages to its host (virtio-balloon free page reporting), so every "
               "step that fills the page cache pays host page faults" if machine.get("virtio_balloon_free_page_reporting") else
               "consider more --runs")
        )
    return {
        "benchmark": "dfs_io",
        "size_bytes": size,
        "size": format_size(size),
        "runs": args.runs,
        "unit": "MB/s (1 MB = 1e6 bytes)",
        "results": {name: s.to_json() for name, s in series.items()},
        "ratios": ratios,
        "ratios_per_run": per_run,
        "goals": goals,
        "all_goals_met": all(g["goal_met"] for g in goals.values()),
        "warnings": warnings,
        "verified": verified,
        "cluster": {
            "workers": args.workers,
            "racks": args.racks,
            "block_size": cfg.block_size,
            "packet_bytes": cfg.packet_bytes,
            "bytes_per_checksum": cfg.bytes_per_checksum,
            "pipeline_window_packets": cfg.pipeline_window_packets,
            "sync_on_close": cfg.sync_on_close,
            "overrides": args.overrides,
            "client": "in the benchmark process; daemons are separate local processes on loopback",
        },
        "machine": machine,
        "timings": {**extra, "replicas_gone_between_runs": replicas_gone},
        "notes": [
            "All runs are warm-cache: the input is written once and stays in the page cache; nothing is "
            "dropped (that needs root). Every tool runs the same number of times on the same input file, "
            "in the same run; the groups (cp/cat, put_r1/get_r1, put_r3/get_r3) rotate from run to run "
            "(timings.order_per_run), so use --runs 3 or a multiple of it.",
            "os.sync() runs (untimed) before each step so no step pays for another's dirty pages; no step "
            "waits for its own write-back (neither cp/cat nor shoal fsyncs; dfs.sync_on_close is off).",
            "The input, the cluster's block folders and every output are on the same file system.",
            "The client and all daemons share this machine's CPUs and disk: put_r3 writes three copies to "
            "the same disk, so it moves 3x the bytes cp does.",
            "Ratios are of median MB/s; ratios_per_run pairs the tools within each run. cpu_s counts "
            "user+system seconds of the tool (cp/cat) or of the client plus every shoal daemon; other_cpu_s "
            "is the rest of the machine's busy CPU time during the step (other processes, kernel write-back), "
            "steal_s the time the hypervisor ran someone else.",
            "Outputs and DFS files are deleted after each run; between runs the benchmark waits (untimed) "
            "for the workers to report their replicas gone, then 3 s more for the freed memory to settle.",
            "timings.memory_touch_mb_s_* is how fast the machine hands out fresh memory (MB/s of first "
            "writes to new anonymous pages), measured before and after the runs: every step here that "
            "writes a file is bounded by it as much as by the disk.",
        ],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    emit(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
