"""Re-replication speed: kill a worker, time the master restoring its blocks.

In a cluster of its own (4 workers on 2 racks, short timers), write a file at
replication 3, SIGKILL the worker holding most of its blocks, and time from the master
declaring it dead to every block having 3 live replicas again, in MB/s of the data
re-replicated. Run from ``bench/dfs_io.py`` (section "rereplication").
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil

from _common import MB, log, make_input_file, mb_per_s, median, rounded, stop_quietly, timed

import shoal
from shoal.cluster.local import LocalCluster
from shoal.core.units import format_size
from shoal.dfs.client import DFSClient

# Re-replication: its own cluster, with timers short enough that a dead worker is
# noticed in seconds (HDFS's defaults take 10.5 minutes) and blocks small enough that
# a few hundred MB make enough blocks for parallel copies.
REREP_WORKERS = 4
REREP_RACKS = 2
REREP_REPLICATION = 3
REREP_OVERRIDES = {
    "dfs.heartbeat_interval_s": "0.5",
    "dfs.dead_node_interval_s": "3",
    "dfs.block_report_every": "5",
    "dfs.replication_max_streams": "4",
    "dfs.replication_timeout_s": "30",
    "dfs.block_size": "32M",
}
REREP_PATH = "/rereplication/file"
POLL_INTERVAL_S = 0.05
REREP_SETTLED_TIMEOUT_S = 60.0  # the written file has 3 reported replicas per block
REREP_DEAD_TIMEOUT_S = 60.0  # beyond dfs.dead_node_interval_s
REREP_RESTORE_TIMEOUT_MIN_S = 300.0
REREP_RESTORE_MIN_MB_S = 2.0  # the restore deadline allows at least this slow a copy

class Poll:
    """Call ``fetch`` every ``interval_s`` until ``done(answer)``. An answer reflects the
    cluster at some moment inside its call, so the change it first shows happened after
    the previous call started and before this call returned: ``t_prev_start`` and
    ``t_seen`` bracket it."""

    def __init__(self, fetch: Any, done: Any, interval_s: float, timeout_s: float) -> None:
        self.fetch, self.done, self.interval_s, self.timeout_s = fetch, done, interval_s, timeout_s
        self.ok = False
        self.answer: Any = None
        self.t_seen: float | None = None
        self.t_prev_start: float | None = None
        self.calls = 0
        self.call_s: list[float] = []

    def run(self, on_answer: Any = None) -> Poll:
        deadline = time.perf_counter() + self.timeout_s
        prev_start = None
        while True:
            t0 = time.perf_counter()
            answer = self.fetch()
            t1 = time.perf_counter()
            self.calls += 1
            self.call_s.append(t1 - t0)
            self.answer = answer
            if on_answer is not None:
                on_answer(answer, t1)
            if self.done(answer):
                self.ok, self.t_seen, self.t_prev_start = True, t1, prev_start
                return self
            if t1 >= deadline:
                return self
            prev_start = t0
            time.sleep(max(0.0, self.interval_s - (time.perf_counter() - t0)))

    def stats(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "call_s_median": rounded(median(self.call_s)) if self.call_s else None,
            "call_s_max": rounded(max(self.call_s)) if self.call_s else None,
        }


def _sha256_file(path: Path, chunk_bytes: int = 8 * 1024 * 1024) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def _sha256_dfs(fs: DFSClient, path: str, chunk_bytes: int = 8 * 1024 * 1024) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    buf = bytearray(chunk_bytes)
    view = memoryview(buf)
    with fs.open(path, "rb") as src:
        while k := src.readinto(buf):
            h.update(view[:k])
            n += k
    return h.hexdigest(), n


def _fully_replicated(report: Any, nblocks: int, expected: int, victim: str | None = None) -> bool:
    """Every block of the (one) file healthy, with ``expected`` replicas, none on ``victim``."""
    if not report.files or len(report.files[0].blocks) != nblocks:
        return False
    return all(_block_ok(b, expected, victim) for b in report.files[0].blocks)


def _block_ok(block: Any, expected: int, victim: str | None) -> bool:
    nodes = {r.partition("@")[0] for r in block.replicas}
    return block.status == "healthy" and len(nodes) == expected and (victim is None or victim not in nodes)


def run_rereplication(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Kill one worker of a 4-worker cluster holding a replication-3 file; time how long
    the master takes to notice and how fast the file's lost replicas are copied back."""
    size = args.rereplication_size
    inp = work / "rereplication_input.bin"
    cluster = LocalCluster(work / "cluster-rereplication")
    client: shoal.Cluster | None = None
    verified: dict[str, bool] = {}
    t_phase = time.perf_counter()
    try:
        log(f"re-replication: writing a {format_size(size)} input file")
        make_input_file(inp, size)
        input_sha = _sha256_file(inp)
        log(f"re-replication: starting a cluster: {REREP_WORKERS} workers on {REREP_RACKS} racks")
        cluster.up(workers=REREP_WORKERS, racks=REREP_RACKS, overrides=dict(REREP_OVERRIDES))
        client = shoal.connect(cluster.folder)
        fs = client.fs
        cfg = fs.config.dfs
        fs.mkdirs(REREP_PATH.rsplit("/", 1)[0])

        log(f"re-replication: put at replication {REREP_REPLICATION}")
        t0 = time.perf_counter()
        fs.put(inp, REREP_PATH, replication=REREP_REPLICATION, overwrite=True)
        put_s = time.perf_counter() - t0
        located = fs.blocks(REREP_PATH).blocks
        nblocks = len(located)
        # Untimed: the master has every replica reported, and the write-back of the put
        # is done, so neither spills into the timed part.
        settled = Poll(lambda: fs.fsck(REREP_PATH), lambda r: _fully_replicated(r, nblocks, REREP_REPLICATION),
                       POLL_INTERVAL_S, REREP_SETTLED_TIMEOUT_S).run()
        if not settled.ok:
            raise SystemExit(f"re-replication: the file did not reach {REREP_REPLICATION} replicas per block")
        os.sync()

        racks = {n.node_id: n.rack for n in fs.report().nodes}
        held: dict[str, list[Any]] = {}
        for lb in located:
            for node_id in {loc.node_id for loc in lb.locations}:
                held.setdefault(node_id, []).append(lb.block)
        # The worker holding the most blocks (ties: the lowest id) loses the most data.
        victim = min(held, key=lambda n: (-len(held[n]), n))
        lost = held[victim]
        lost_ids = {b.block_id for b in lost}
        lost_bytes = sum(b.length for b in lost)
        entry = next(e for e in cluster.processes if e["id"] == victim)
        survivors = [psutil.Process(e["pid"]) for e in cluster.processes if e["id"] != victim]
        log(f"re-replication: killing {victim} ({len(lost)} of {nblocks} blocks, {format_size(lost_bytes)})")

        t_kill = time.perf_counter()
        os.kill(entry["pid"], signal.SIGKILL)

        def is_dead(report: Any) -> bool:
            return any(n.node_id == victim and n.state == "dead" for n in report.nodes)

        dead = Poll(fs.report, is_dead, POLL_INTERVAL_S, cfg.dead_node_interval_s + REREP_DEAD_TIMEOUT_S).run()
        if not dead.ok:
            raise SystemExit(f"re-replication: {victim} was not declared dead in time")
        t_dead = dead.t_seen
        log(f"re-replication: {victim} dead after {t_dead - t_kill:.2f} s")

        restored_at: dict[int, float] = {}

        def progress(report: Any, t: float) -> None:
            for b in report.files[0].blocks if report.files else ():
                if b.block_id in lost_ids and b.block_id not in restored_at and _block_ok(b, REREP_REPLICATION, victim):
                    restored_at[b.block_id] = t - t_dead

        restore_timeout = max(REREP_RESTORE_TIMEOUT_MIN_S, lost_bytes / MB / REREP_RESTORE_MIN_MB_S)
        restore = Poll(lambda: fs.fsck(REREP_PATH), lambda r: _fully_replicated(r, nblocks, REREP_REPLICATION, victim),
                       POLL_INTERVAL_S, restore_timeout)
        sample = timed(lambda: restore.run(progress), watch=survivors)
        restored = restore.ok
        if restored:
            log(f"re-replication: restored {restore.t_seen - t_dead:.2f} s after detection")
        else:
            log(f"re-replication: NOT restored within {restore_timeout:.0f} s: {restore.answer.totals}")

        log("re-replication: verifying (untimed)")
        read_sha, read_len = _sha256_dfs(fs, REREP_PATH)
        verified["read_back_identical"] = read_sha == input_sha and read_len == size
        verified["length"] = fs.stat(REREP_PATH).length == size
        final = fs.blocks(REREP_PATH).blocks
        verified["replicas_3_none_on_victim"] = all(
            len(nodes := {loc.node_id for loc in lb.locations}) == REREP_REPLICATION and victim not in nodes
            for lb in final
        )

        result: dict[str, Any] = {
            "what": "a worker holding a replication-3 file is SIGKILLed; from the master declaring it dead "
            "(first poll of fs.report() showing state dead) to every block of the file healthy with 3 live "
            "replicas, none on it (first poll of fs.fsck(path) showing so)",
            "restored": restored,
            "file_size_bytes": size,
            "file_size": format_size(size),
            "file_blocks": nblocks,
            "victim": {"node_id": victim, "rack": racks.get(victim), "blocks_held": len(lost)},
            "blocks_rereplicated": len(lost),
            "bytes_rereplicated": lost_bytes,
            "bytes_rereplicated_h": format_size(lost_bytes),
            "detection_s": rounded(t_dead - t_kill),
            "detection_s_bounds": [rounded((dead.t_prev_start or t_kill) - t_kill), rounded(t_dead - t_kill)],
        }
        if restored:
            restore_s = restore.t_seen - t_dead
            lo = (restore.t_prev_start or t_dead) - t_dead  # restored after the last "not yet" poll began
            hi = restore.t_seen - (dead.t_prev_start or t_kill)  # dead was declared after that poll began
            result.update(
                {
                    "restore_s": rounded(restore_s),
                    "restore_s_bounds": [rounded(lo), rounded(hi)],
                    "mb_s": rounded(mb_per_s(lost_bytes, restore_s), 1),
                    "mb_s_bounds": [rounded(mb_per_s(lost_bytes, hi), 1), rounded(mb_per_s(lost_bytes, lo), 1)],
                    "kill_to_restored_s": rounded(restore.t_seen - t_kill),
                }
            )
        result.update(
            {
                "block_restored_after_detection_s": sorted(rounded(t) for t in restored_at.values()),
                "cpu_s_during_restore": {
                    "surviving_daemons": rounded(sample.watched_cpu_s),
                    "benchmark_polling": rounded(sample.self_cpu_s),
                    "other": rounded(sample.other_cpu_s),
                    "steal": rounded(sample.steal_s),
                },
                "polling": {
                    "interval_s": POLL_INTERVAL_S,
                    "report": dead.stats(),
                    "fsck": restore.stats(),
                    "restore_timeout_s": rounded(restore_timeout, 1),
                },
                "put_r3_s": rounded(put_s),
                "put_r3_mb_s": rounded(mb_per_s(size, put_s), 1),
                "verified": verified,
                "config": {
                    "workers": REREP_WORKERS,
                    "racks": REREP_RACKS,
                    "replication": REREP_REPLICATION,
                    "overrides": dict(REREP_OVERRIDES),
                    "block_size": cfg.block_size,
                    "heartbeat_interval_s": cfg.heartbeat_interval_s,
                    "dead_node_interval_s": cfg.dead_node_interval_s,
                    "block_report_every": cfg.block_report_every,
                    "replication_max_streams": cfg.replication_max_streams,
                    "replication_timeout_s": cfg.replication_timeout_s,
                    "master_tick_s": min(1.0, cfg.heartbeat_interval_s, cfg.dead_node_interval_s / 4),
                    "sync_on_close": cfg.sync_on_close,
                },
                "phase_s": rounded(time.perf_counter() - t_phase),
                "notes": [
                    f"Polling: fs.report() and then fs.fsck(path) are called every {POLL_INTERVAL_S:g} s (a call's "
                    "own time included, see polling.*.call_s_*), so each time is resolved to about one poll "
                    "interval plus one call; the *_bounds bracket the true value: a change happened after the "
                    "last poll that did not show it began and before the first poll that did returned.",
                    "detection_s is dominated by dfs.dead_node_interval_s plus up to one master tick "
                    "(config.master_tick_s); the master plans the first copies in the same tick that declares the "
                    "worker dead, and hands them out on the workers' next heartbeats, so restore_s includes up "
                    "to one heartbeat interval before any copy starts.",
                    "bytes_rereplicated is the sum of the lengths of the blocks that had a replica on the victim "
                    "(each lost one replica, so each is copied once); mb_s = bytes_rereplicated / restore_s "
                    "(1 MB = 1e6 bytes).",
                    "The victim is the worker holding most of the file's blocks (ties: the lowest id). Warm "
                    "cache: the surviving replicas were just written and os.sync()ed, and are read from the page "
                    "cache; all workers share this machine's CPUs and disk.",
                    "Its own cluster, started after the put/get runs' cluster is stopped; --set does not apply.",
                ],
            }
        )
        return result
    finally:
        stop_quietly(client, cluster)
        if not args.keep:
            inp.unlink(missing_ok=True)
