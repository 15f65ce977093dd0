"""Resource-manager benchmark: the DRF offer allocator's throughput (pure core, in process).

Section "allocator" (:func:`allocator_section`) builds a simulated cluster of
--agents agents (16-64 cpus, 64-256 GiB, ports 31000-32000, 50 agents per rack) and
--frameworks frameworks of varied weights and task sizes, then measures:

- first_round: one allocation round over the fresh cluster (every agent is offered):
  allocation decisions (offers made) per second;
- churn: a realistic loop of --rounds rounds, one simulated second apart: every offer
  is answered at once (a framework declines some, with the default filter, and
  accepts a few task-sized pieces of the rest, one port per task); tasks end after
  a random time and their resources are recovered, one event per task. Reported per
  kind of event, timing only the allocator's ``handle`` calls (the simulated
  frameworks' own work is reported apart, as ``simulation_s``).

Section "containers" (:func:`container_section`) starts a one-worker local cluster
per isolation mode (the best this machine allows, and the process-group fallback),
registers a framework and launches --launches tasks running ``true`` one after another:
launch latency is the time from the accept call to the framework seeing ``running``,
and to seeing ``finished``; the peer is a bare ``subprocess`` start (Popen until the
child runs) and run (until it exits) of the same command, in the same process.

Prints one JSON object on stdout; progress goes to stderr.

    .venv/bin/python bench/allocator.py            # 10,000 agents, 100 frameworks
    .venv/bin/python bench/allocator.py --quick    # 1,000 agents, 20 frameworks
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import math
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, log, machine_info, median, rounded  # noqa: E402

from shoal.cluster.offers import (  # noqa: E402
    AgentAdded,
    Allocate,
    FrameworkAdded,
    OfferAccepted,
    OfferDeclined,
    OfferMade,
    ResourceAllocator,
    ResourcesRecovered,
    Tick,
)
from shoal.cluster.resources import Resources  # noqa: E402
from shoal.core.wire import Empty  # noqa: E402

GiB = 1024  # mem is in MiB
OFFER_TIMEOUT_S = 30.0
DECLINE_FILTER_S = 5.0
AGENTS_PER_RACK = 50
GOAL_DECISIONS_PER_S = 20_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=10_000, help="simulated agents (default 10000)")
    p.add_argument("--frameworks", type=int, default=100, help="frameworks (default 100)")
    p.add_argument("--rounds", type=int, default=40, help="allocation rounds in the churn loop (default 40)")
    p.add_argument("--runs", type=int, default=3, help="runs of each measurement; medians are reported")
    p.add_argument("--seed", type=int, default=1, help="seed of the simulated cluster and frameworks")
    p.add_argument("--quick", action="store_true", help="small run: 1000 agents, 20 frameworks, 15 rounds")
    p.add_argument("--launches", type=int, default=60, help="container launches per isolation mode (default 60)")
    p.add_argument("--skip-containers", action="store_true", help="only the in-process allocator section")
    args = p.parse_args(argv)
    if args.quick:
        args.agents, args.frameworks, args.rounds = 1000, 20, 15
    if min(args.agents, args.frameworks, args.rounds, args.runs) < 1:
        p.error("--agents, --frameworks, --rounds and --runs must be at least 1")
    return args


class Framework:
    """A simulated framework: what one task needs and how it answers offers."""

    def __init__(self, i: int, rng: random.Random) -> None:
        self.framework_id = f"fw-{i:03d}"
        self.role = f"role-{i % 5}"
        self.weight = rng.choice([1.0, 1.0, 1.0, 2.0, 4.0])
        self.cpus = rng.choice([0.5, 1.0, 2.0, 4.0])
        self.mem = rng.choice([512, 1024, 2048, 4096, 8192])
        self.max_tasks = rng.randint(1, 8)  # tasks it launches from one offer at most
        self.decline_p = rng.uniform(0.05, 0.3)
        self.task_s = (rng.uniform(5, 30), rng.uniform(30, 120))  # task duration range

    def tasks_fitting(self, res: Resources) -> int:
        ports = sum(hi - lo + 1 for lo, hi in res.ports())
        return min(self.max_tasks, int(res.cpus // self.cpus), int(res.mem // self.mem), ports)


class GcTimer:
    """A gc callback adding up the time spent in collections and counting full ones."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._t0
            self.full += info["generation"] == 2


def build(args: argparse.Namespace, seed: int) -> tuple[ResourceAllocator, list[Framework], random.Random]:
    rng = random.Random(seed)
    alloc = ResourceAllocator(offer_timeout_s=OFFER_TIMEOUT_S, decline_filter_s=DECLINE_FILTER_S)
    for i in range(args.agents):
        rack = f"r{i // AGENTS_PER_RACK + 1}"
        total = Resources.of(cpus=rng.choice([16, 24, 32, 48, 64]), mem=rng.choice([64, 96, 128, 192, 256]) * GiB)
        alloc.handle(
            AgentAdded(f"agent-{i:05d}", f"host-{i:05d}", rack, {"rack": rack}, total.with_ranges("ports", [(31000, 32000)])),
            0.0,
        )
    frameworks = [Framework(i, rng) for i in range(args.frameworks)]
    for fw in frameworks:
        alloc.handle(FrameworkAdded(fw.framework_id, fw.role, fw.weight), 0.0)
    return alloc, frameworks, rng


def first_round(args: argparse.Namespace, seed: int) -> dict[str, float]:
    alloc, _, _ = build(args, seed)
    t0 = time.perf_counter()
    effects = alloc.handle(Allocate(), 0.0)
    elapsed = time.perf_counter() - t0
    alloc.validate()
    return {"offers": len(effects), "s": elapsed, "decisions_per_s": len(effects) / elapsed}


def churn(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The realistic loop; allocator time is measured per kind of event."""
    alloc, frameworks, rng = build(args, seed)
    by_id = {fw.framework_id: fw for fw in frameworks}
    spent = {"round": 0.0, "accept": 0.0, "decline": 0.0, "recover": 0.0}
    count = {"round": 0, "offers": 0, "accept": 0, "decline": 0, "recover": 0, "tasks": 0, "rescinded": 0}
    # (ends at, seq, framework, agent, port): plain atoms, so the garbage collector soon
    # stops scanning them and the simulation's own objects do not slow the allocator down
    running: list[tuple[float, int, str, str, int]] = []
    seq = 0
    perf = time.perf_counter
    gc_time = GcTimer()
    gc.callbacks.append(gc_time)
    wall0 = perf()
    now = 0.0
    for _ in range(args.rounds):
        now += 1.0
        while running and running[0][0] <= now:  # tasks that ended since the last round
            _, _, fid, aid, port = heapq.heappop(running)
            fw = by_id[fid]
            res = Resources.of(cpus=fw.cpus, mem=fw.mem).with_ranges("ports", [(port, port)])
            t0 = perf()
            alloc.handle(ResourcesRecovered(fid, aid, res), now)
            spent["recover"] += perf() - t0
            count["recover"] += 1
        t0 = perf()
        effects = alloc.handle(Tick(), now)
        spent["round"] += perf() - t0
        count["round"] += 1
        count["rescinded"] += len(effects) - sum(isinstance(e, OfferMade) for e in effects)
        for effect in effects:
            if not isinstance(effect, OfferMade):
                continue
            offer = effect.offer
            count["offers"] += 1
            fw = by_id[offer.framework_id]
            n = 0 if rng.random() < fw.decline_p else fw.tasks_fitting(offer.resources)
            if n == 0:
                t0 = perf()
                alloc.handle(OfferDeclined(fw.framework_id, offer.offer_id, -1.0), now)
                spent["decline"] += perf() - t0
                count["decline"] += 1
                continue
            ports, port_res = offer.resources.take_ports(n)
            used = Resources.of(cpus=fw.cpus * n, mem=fw.mem * n) + port_res
            t0 = perf()
            alloc.handle(OfferAccepted(fw.framework_id, offer.offer_id, used, -1.0), now)
            spent["accept"] += perf() - t0
            count["accept"] += 1
            count["tasks"] += n
            for port in ports:
                seq += 1
                ends = now + rng.uniform(*fw.task_s)
                heapq.heappush(running, (ends, seq, fw.framework_id, offer.agent_id, port))
    wall = perf() - wall0
    gc.callbacks.remove(gc_time)
    allocator_s = sum(spent.values())
    alloc.validate()
    total = alloc.cluster_total()
    in_use_cpus = sum(alloc.allocated(fw.framework_id).cpus for fw in frameworks)
    shares = sorted(alloc.dominant_share(fw.framework_id) for fw in frameworks)
    events = count["round"] + count["accept"] + count["decline"] + count["recover"]
    return {
        "decisions_per_s": count["offers"] / spent["round"],
        "accepts_per_s": count["accept"] / spent["accept"] if spent["accept"] else None,
        "declines_per_s": count["decline"] / spent["decline"] if spent["decline"] else None,
        "recoveries_per_s": count["recover"] / spent["recover"] if spent["recover"] else None,
        "events_per_s": events / allocator_s,
        "offers_plus_answers_per_s": (count["offers"] + count["accept"] + count["decline"]) / allocator_s,
        "counts": count,
        "allocator_s": spent,
        "wall_s": wall,
        "simulation_s": wall - allocator_s,
        # Python's cyclic garbage collector, wherever it ran (allocator or simulation)
        "gc_s": gc_time.seconds,
        "gc_full_collections": gc_time.full,
        "cpus_allocated_at_end": in_use_cpus / total.cpus,
        "weighted_dominant_share_at_end": {"min": shares[0], "median": median(shares), "max": shares[-1]},
    }


def allocator_section(args: argparse.Namespace) -> dict[str, Any]:
    """Run the allocator measurements ``args.runs`` times each; medians and every run."""
    firsts, churns = [], []
    for run in range(args.runs):
        seed = args.seed + run
        log(f"allocator run {run + 1}/{args.runs}: first round over {args.agents} agents ...")
        firsts.append(first_round(args, seed))
        log(f"allocator run {run + 1}/{args.runs}: churn, {args.rounds} rounds ...")
        churns.append(churn(args, seed))
        log(f"  {firsts[-1]['decisions_per_s']:,.0f} decisions/s (first round), "
            f"{churns[-1]['decisions_per_s']:,.0f} decisions/s and {churns[-1]['events_per_s']:,.0f} events/s (churn)")

    def med(rows: list[dict[str, Any]], key: str) -> float | None:
        values = [r[key] for r in rows if r[key] is not None]
        return rounded(median(values), 1) if values else None

    decisions = med(firsts, "decisions_per_s")
    return {
        "agents": args.agents,
        "frameworks": args.frameworks,
        "rounds": args.rounds,
        "runs": args.runs,
        "seed": args.seed,
        "offer_timeout_s": OFFER_TIMEOUT_S,
        "decline_filter_s": DECLINE_FILTER_S,
        "first_round": {
            "what": "Allocate() on a fresh cluster: every agent offered once (decision = one offer made)",
            "offers": firsts[0]["offers"],
            "median_decisions_per_s": decisions,
            "median_s": rounded(median([r["s"] for r in firsts]), 4),
            "runs_decisions_per_s": [rounded(r["decisions_per_s"], 1) for r in firsts],
        },
        "churn": {
            "what": "Tick every simulated second; offers answered at once (decline, or accept 1-8 task-sized "
                    "pieces with one port each); one ResourcesRecovered per finished task",
            **{f"median_{k}": med(churns, k) for k in (
                "decisions_per_s", "accepts_per_s", "declines_per_s", "recoveries_per_s", "events_per_s",
                "offers_plus_answers_per_s")},
            "runs": [
                {k: (rounded(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                 if k not in ("allocator_s", "weighted_dominant_share_at_end")}
                | {"allocator_s": {k: rounded(v, 3) for k, v in r["allocator_s"].items()},
                   "weighted_dominant_share_at_end": {k: rounded(v, 4) for k, v in
                                                      r["weighted_dominant_share_at_end"].items()}}
                for r in churns
            ],
        },
        "goal": {
            "decisions_per_s": GOAL_DECISIONS_PER_S,
            "goal_met": decisions is not None and decisions >= GOAL_DECISIONS_PER_S
            and (med(churns, "decisions_per_s") or 0) >= GOAL_DECISIONS_PER_S,
        },
        "notes": [
            "Pure in-process core: no network, no daemons. Times are perf_counter around "
            "ResourceAllocator.handle only; building the cluster and the simulated frameworks' own work "
            "(choosing tasks, picking ports) are not counted (see churn.runs[].simulation_s).",
            "A decision is one offer made: an agent's spare resources given to the framework first in the "
            "weighted-DRF order that is not filtered on that agent. Rounds walk only agents with spare "
            "resources and no outstanding offer; the framework order is a heap (log F per decision).",
            "Agents: 16-64 cpus, 64-256 GiB, ports 31000-32000, 50 per rack. Frameworks: weights 1/2/4, "
            "tasks of 0.5-4 cpus and 0.5-8 GiB, decline 5-30% of offers, tasks last 5-120 s.",
            "churn.runs[].gc_s is time in Python's cyclic garbage collector during the loop (counted in "
            "whichever handle call or simulation step triggered it); at 10,000 agents its full collections "
            "rescan every live Resources and Offer, which costs a visible part of the round time.",
        ],
    }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(values: list[float]) -> dict[str, float | None]:
    return {"p50_ms": rounded(percentile(values, 50) * 1000, 2), "p99_ms": rounded(percentile(values, 99) * 1000, 2),
            "n": len(values)}


def bare_subprocess(n: int) -> dict[str, Any]:
    """The peer: start ``true`` with subprocess (until it runs) and run it (until it exits)."""
    start, run = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        proc = subprocess.Popen(["true"])
        start.append(time.perf_counter() - t0)
        proc.wait()
        run.append(time.perf_counter() - t0)
    return {"start": latency_summary(start), "run": latency_summary(run)}


async def _launch_many(folder: Path, n: int) -> tuple[list[float], list[float], str]:
    from shoal.cluster import protocol as cp
    from shoal.cluster.framework import Framework as ClusterFramework

    need = Resources.of(cpus=0.1, mem=32)
    to_running, to_finished = [], []
    isolation = ""
    async with await ClusterFramework.register(folder, name="bench-launch") as fw:
        offers = fw.offers()
        for i in range(n):
            async for offer in offers:
                if offer.resources.contains(need):
                    break
                await fw.decline(offer, filter_s=0)
            tid = f"bench-{i}"
            t0 = time.perf_counter()
            await fw.accept(offer, [cp.TaskSpec(tid, "bench", ["true"], need)], filter_s=0)
            running = await fw.wait_for(tid, ("running",), timeout_s=60)
            t1 = time.perf_counter()
            final = await fw.wait_for(tid, timeout_s=60)
            t2 = time.perf_counter()
            if final.state != "finished":
                raise RuntimeError(f"task {tid} ended {final.state}: {final.message}")
            if running.state == "running":
                to_running.append(t1 - t0)
            to_finished.append(t2 - t0)
        rows = await fw._call(cp.LIST_CONTAINERS, Empty())
        isolation = next((c.isolation for c in rows.containers if c.task_id.startswith("bench-")), "")
    return to_running, to_finished, isolation


def container_section(args: argparse.Namespace) -> dict[str, Any]:
    """Container launch latency on a local cluster against a bare subprocess launch."""
    from shoal.cluster.local import LocalCluster

    n = 15 if args.quick else args.launches
    out: dict[str, Any] = {"launches": n, "bare_subprocess": bare_subprocess(n), "modes": {}}
    for mode in ("auto", "process"):
        with tempfile.TemporaryDirectory(prefix="shoal-bench-rm-") as tmp:
            folder = Path(tmp) / "c"
            cluster = LocalCluster(folder)
            cluster.up(workers=1, racks=1, overrides={
                "cluster.allocation_interval_s": "0.2", "cluster.isolation": mode, "cluster.decline_filter_s": "0",
            })
            try:
                log(f"containers: {n} launches, isolation mode {mode}")
                running, finished, isolation = asyncio.run(_launch_many(folder, n))
            finally:
                cluster.down()
        bare = out["bare_subprocess"]
        entry = {"isolation": isolation, "to_running": latency_summary(running), "to_finished": latency_summary(finished)}
        entry["p50_vs_bare_run"] = rounded(entry["to_finished"]["p50_ms"] / bare["run"]["p50_ms"], 1)
        out["modes"][mode] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result: dict[str, Any] = {"benchmark": "allocator", "quick": args.quick}
    result["allocator"] = allocator_section(args)
    if not args.skip_containers:
        result["containers"] = container_section(args)
    result["machine"] = machine_info(Path(tempfile.gettempdir()))
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
