"""Compute engine benchmark: shoal local[2] against PySpark, Dask and plain Python.

Three workloads, each peer run as a fresh interpreter (a separate process, timed
wall-clock from spawn to exit, start-up included), in the same invocation:

    wordcount  the PySpark-style program on a Zipf-like text corpus of --size bytes:
               textFile(path).flatMap(str.split).map(lambda w: (w, 1))
                   .reduceByKey(operator.add).collect()
    sort       on --size bytes of 100-byte gensort-like records (10-byte key):
               textFile(path).map(lambda l: (l[:10], l[10:])).sortByKey()
                   .map(lambda kv: kv[0] + kv[1]).saveAsTextFile(out)
    tiny       a one-line job, start-up included:
               SparkContext("local[2]"); parallelize(range(100)).map(x*x).sum(); stop()

Peers (--peers):
    shoal       shoal.spark SparkContext("local[2]"), the programs above
    pyspark     PySpark RDD API, local[2], the same programs
    pyspark-df  PySpark DataFrames, local[2]: split/explode/groupBy().count();
                orderBy(key).write.text; spark.range(100) sum of squares
    dask        Dask bag, processes scheduler with 2 workers: read_text().str.split()
                .flatten().frequencies(); from_sequence().map().sum() (no sort: a
                bag has none, recorded as skipped)
    python      one process: Counter over split lines; sorted(lines) to one file
    gnu-sort    LC_ALL=C sort -S 50% --parallel=2 (sort only)

Outputs are checked (untimed): word counts (distinct words, total, top 10) must agree
across peers; a sort's part files, concatenated in name order, must hold every input
record, sorted by key. Ratios are peer seconds / shoal seconds (shoal's speed-up).
Goals: wordcount >= 5x and sort >= 3x faster than PySpark RDD; the tiny job < 0.5 s.

Inputs are generated once (seeded, numpy) and cached in --data-dir. A peer that
cannot run (shoal.spark not importable yet, no Java for PySpark, a package missing)
gets {"error": ...} and the others go on. One JSON object goes to stdout, a table
and progress to stderr.

    .venv/bin/python bench/compute.py --size 64M                # a quick run
    .venv/bin/python bench/compute.py --repeat 3 > compute.json # 1 GiB, medians of 3
    .venv/bin/python bench/compute.py --only tiny --peers shoal,dask --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, log, machine_info, mb_per_s, median, rounded, size_arg  # noqa: E402
from _compute_runner import (  # noqa: E402
    Run, Workload, add_run_args, check_run_args, compile_shoal, peer_env, peer_status, warm,
)
from _compute_data import (  # noqa: E402
    DEFAULT_SEED,
    ensure_corpus,
    ensure_sort_records,
    records_digest,
    sort_records_bytes,
)

from shoal.core.units import format_size  # noqa: E402

PEERS = ("shoal", "pyspark", "pyspark-df", "dask", "python", "gnu-sort")
WORKLOADS = ("wordcount", "sort", "tiny")
PEERS_OF = {
    "wordcount": ("shoal", "pyspark", "pyspark-df", "dask", "python"),
    "sort": ("shoal", "pyspark", "pyspark-df", "dask", "python", "gnu-sort"),
    "tiny": ("shoal", "pyspark", "pyspark-df", "dask", "python"),
}
SKIPPED = {("sort", "dask"): "skipped: dask bag has no sort"}
WORKLOAD_WHAT = {
    "wordcount": "word count of the corpus; result collected to the driver (distinct words, total, top 10)",
    "sort": "sort of 100-byte records by their 10-byte key, written as files into an output folder",
    "tiny": "sum of squares of range(100) in a fresh interpreter, context start-up and stop included",
}
DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "out" / "compute-data"  # bench/out/ is git-ignored
GOAL_WORDCOUNT_X = 5.0
GOAL_SORT_X = 3.0
GOAL_TINY_S = 0.5
BUSY_FRACTION = 0.25
# The reference figures for this kind of machine (2 cores), 1 GiB inputs, medians, seconds.
REFERENCE_1GIB_S = {
    "wordcount": {"pyspark": 94, "pyspark-df": 30, "dask": 27, "python": 42},
    "sort": {"pyspark": 64, "pyspark-df": 30, "python": 21, "gnu-sort": 11},
    "tiny": {"pyspark": 9.3, "dask": 0.8},
}


# --- arguments -----------------------------------------------------------------------------
def _csv_choice(allowed: tuple[str, ...], what: str) -> Any:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"unknown {what}: {', '.join(bad) or text!r} (choose from {', '.join(allowed)})")
        return list(dict.fromkeys(items))

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=size_arg, default=size_arg("1G"), help="size of each input, e.g. 64M, 1G (default 1G)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of every peer; medians are reported (default 1)")
    ap.add_argument(
        "--only", type=_csv_choice(WORKLOADS, "workload"), default=list(WORKLOADS),
        help=f"comma-separated workloads to run (default {','.join(WORKLOADS)})",
    )
    ap.add_argument(
        "--peers", type=_csv_choice(PEERS, "peer"), default=list(PEERS),
        help=f"comma-separated peers to run (default {','.join(PEERS)})",
    )
    add_run_args(ap, DEFAULT_DATA_DIR, "where generated inputs are cached (default bench/out/compute-data, "
                 "git-ignored)", DEFAULT_SEED)
    args = ap.parse_args(argv)
    check_run_args(ap, args)
    if "sort" in args.only and sort_records_bytes(args.size) == 0:
        ap.error("--size is smaller than one 100-byte sort record")
    return args


# --- the benchmark -------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    parent = (args.workdir or Path(tempfile.gettempdir())).resolve()
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-compute-", dir=parent))
    try:
        return run_in(args, work)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_in(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    env = peer_env()
    log(f"work folder {work}")
    machine = machine_info(work, tools=("sort",))
    needed = 0
    if set(args.only) & {"wordcount", "sort"}:
        needed = 4 * args.size  # sort output + shuffle files, with slack
        if machine["disk_free_bytes"] < needed:
            raise SystemExit(f"need about {format_size(needed)} free in {work}, have {machine['disk_free']}")

    log("checking which peers can run")
    status = peer_status(args.peers, env)
    for peer, st in status.items():
        log(f"  {peer:11s} {'ok ' + str(st.get('version')) if st['ok'] else 'ERROR ' + st['error']}")

    data: dict[str, Any] = {}
    if status.get("shoal", {}).get("ok"):
        data["shoal_bytecode_compile_s"] = rounded(compile_shoal(), 2)
    inputs: dict[str, tuple[Path | None, int]] = {"tiny": (None, 0)}
    if "wordcount" in args.only:
        log(f"corpus: {format_size(args.size)} in {args.data_dir}")
        corpus = ensure_corpus(args.data_dir, args.size, args.seed)
        log(f"  {'generated in %.1f s' % corpus.generate_s if corpus.generated else 'cached'}: {corpus.path}")
        data["corpus"] = corpus.to_json()
        inputs["wordcount"] = (corpus.path, corpus.nbytes)
    input_digest = None
    if "sort" in args.only:
        log(f"sort records: {format_size(sort_records_bytes(args.size))} in {args.data_dir}")
        records = ensure_sort_records(args.data_dir, args.size, args.seed)
        log(f"  {'generated in %.1f s' % records.generate_s if records.generated else 'cached'}: {records.path}")
        t0 = time.perf_counter()
        input_digest = records_digest([records.path])
        data["sort_records"] = {**records.to_json(), "input_digest": input_digest.to_json(), "digest_s": rounded(time.perf_counter() - t0, 2)}
        inputs["sort"] = (records.path, records.nbytes)

    workloads: dict[str, Any] = {}
    interrupted = False
    for name in WORKLOADS:
        if name not in args.only:
            continue
        path, nbytes = inputs[name]
        wl = Workload(name, path, nbytes, work, env, args.timeout, input_digest)
        workloads[name] = run_workload(wl, args, status)
        if wl.interrupted:
            interrupted = True
            break

    goals = evaluate_goals(workloads)
    evaluated = [g["goal_met"] for g in goals.values()]
    result = {
        "benchmark": "compute",
        "size_bytes": args.size,
        "size": format_size(args.size),
        "repeat": args.repeat,
        "unit": "seconds of wall-clock time per peer run, process spawn to exit (start-up included)",
        "workloads": workloads,
        "ratios": {name: w["ratios"] for name, w in workloads.items()},
        "goals": goals,
        "all_goals_met": bool(evaluated) and all(g is True for g in evaluated),
        "interrupted": interrupted,
        "warnings": warnings_of(workloads),
        "peers": status,
        "data": data,
        "reference_figures_1GiB_s": REFERENCE_1GIB_S,
        "machine": machine,
        "notes": NOTES,
    }
    print_table(result)
    return result


def run_peers(wl: Workload, args: argparse.Namespace, runnable: list[str], runs: dict[str, list[Run]], errors: dict[str, str]) -> None:
    for i in range(args.repeat):
        # rotate the order from run to run: no peer always goes first
        k = i % len(runnable) if runnable else 0
        for peer in runnable[k:] + runnable[:k]:
            if peer in errors:  # failed in an earlier run: no point in more
                continue
            r = wl.run_once(peer, i + 1)
            runs[peer].append(r)
            mark = "" if r.error is None else f"  ERROR {r.error.splitlines()[0][:200]}"
            ok = r.check.get("ok")
            mark += "" if ok is None else ("  check ok" if ok else f"  CHECK FAILED {r.check.get('detail') or ''}")
            log(f"  run {i + 1}/{args.repeat} {peer:11s} {r.sample.wall_s:8.2f} s{mark}")
            if r.error is not None:
                errors[peer] = r.error


def run_workload(wl: Workload, args: argparse.Namespace, status: dict[str, dict[str, Any]]) -> dict[str, Any]:
    peers = [p for p in args.peers if p in PEERS_OF[wl.name]]
    log(f"{wl.name}: {', '.join(peers)}")
    if wl.input is not None:
        warm(wl.input)
    runs: dict[str, list[Run]] = {p: [] for p in peers}
    errors: dict[str, str] = {}
    for peer in peers:
        if (wl.name, peer) in SKIPPED:
            errors[peer] = SKIPPED[(wl.name, peer)]
        elif not status[peer]["ok"]:
            errors[peer] = status[peer]["error"]
    runnable = [p for p in peers if p not in errors]
    try:
        run_peers(wl, args, runnable, runs, errors)
    except KeyboardInterrupt:
        wl.interrupted = True
        log(f"{wl.name}: interrupted; reporting the runs that finished")
    if wl.name == "wordcount":
        compare_word_counts(runs)

    results: dict[str, Any] = {}
    for peer in peers:
        if wl.interrupted and peer not in errors and len(runs[peer]) < args.repeat:
            errors[peer] = f"interrupted after {len(runs[peer])} of {args.repeat} runs"
        results[peer] = peer_result(wl, runs[peer], errors.get(peer))
    shoal_s = results.get("shoal", {}).get("median_s")
    if "shoal" not in results:
        ratios: dict[str, Any] = {"error": "shoal was not run (--peers)"}
    elif shoal_s is None:
        ratios = {"error": f"shoal has no time: {results['shoal'].get('error') or results['shoal'].get('skipped')}"}
    else:
        ratios = {
            p: rounded(r["median_s"] / shoal_s, 2) for p, r in results.items() if p != "shoal" and r.get("median_s") is not None
        }
    out: dict[str, Any] = {"what": WORKLOAD_WHAT[wl.name], "results": results, "ratios": ratios}
    if wl.input is not None:
        out["input"] = str(wl.input)
        out["input_bytes"] = wl.input_bytes
    if wl.name == "wordcount":
        ok = [runs[p][0].result for p in peers if runs[p] and runs[p][0].check.get("ok")]
        if ok:
            out["answer"] = {k: ok[0].get(k) for k in ("distinct", "total", "top10")}
    return out


def _signature(result: dict[str, Any]) -> str:
    return json.dumps([result.get("distinct"), result.get("total"), result.get("top10")])


def compare_word_counts(runs: dict[str, list[Run]]) -> None:
    """Every successful run must give the same answer. The reference is single-process
    Python's when it ran, else the answer most peers gave."""
    good = {p: [r for r in rs if r.error is None] for p, rs in runs.items()}
    sigs = {p: _signature(rs[0].result) for p, rs in good.items() if rs}
    if not sigs:
        return
    if "python" in sigs:
        ref, source = sigs["python"], "python"
    else:
        ref = Counter(sigs.values()).most_common(1)[0][0]
        source = "the most common answer"
    others = len(sigs) > 1
    for peer, rs in good.items():
        for r in rs:
            sig = _signature(r.result)
            if sig == ref:
                r.check = {"ok": True if others else None, "agrees_with": source if others else "no other peer to compare with"}
            else:
                r.check = {
                    "ok": False,
                    "detail": f"differs from {source}: distinct {r.result.get('distinct')}, total {r.result.get('total')}",
                }


def peer_result(wl: Workload, runs: list[Run], error: str | None) -> dict[str, Any]:
    if error is not None and error.startswith("skipped"):
        return {"skipped": error}
    if error is not None and not runs:
        return {"error": error}
    walls = [r.sample.wall_s for r in runs]
    out: dict[str, Any] = {}
    if error is not None and error.startswith("interrupted") and runs:
        out["interrupted"] = error  # the finished runs still count
    elif error is not None:
        out["error"] = error
        out["failed_runs_s"] = [rounded(w) for w in walls]
        return out
    out["median_s"] = rounded(median(walls))
    out["runs_s"] = [rounded(w) for w in walls]
    if wl.input_bytes:
        out["median_mb_s"] = rounded(mb_per_s(wl.input_bytes, median(walls)), 1)
    ready = [r.result["ready_s"] for r in runs if "ready_s" in r.result]
    job = [r.result["job_s"] for r in runs if "job_s" in r.result]
    if ready:
        out["ready_s_median"] = rounded(median(ready))  # imports + context creation, in the process
        out["job_s_median"] = rounded(median(job))  # the job itself (and the context's stop)
    out["cpu_s_median"] = rounded(median([r.sample.children_cpu_s for r in runs]))
    out["other_cpu_s_median"] = rounded(median([r.sample.other_cpu_s for r in runs]))
    checks = [r.check.get("ok") for r in runs]
    out["verified"] = None if all(c is None for c in checks) else all(c is True for c in checks)
    failed = [r.check for r in runs if r.check.get("ok") is False]
    out["check"] = failed[0] if failed else runs[0].check
    cpus = os.cpu_count() or 1
    out["busy_fraction_max"] = rounded(
        max(((r.sample.other_cpu_s + r.sample.steal_s) / (r.sample.wall_s * cpus) for r in runs if r.sample.wall_s >= 0.5), default=0.0), 2
    )
    return out


def evaluate_goals(workloads: dict[str, Any]) -> dict[str, Any]:
    goals: dict[str, Any] = {}
    specs = {
        "wordcount": ("wordcount_vs_pyspark_rdd", GOAL_WORDCOUNT_X),
        "sort": ("sort_vs_pyspark_rdd", GOAL_SORT_X),
    }
    for name, (key, target) in specs.items():
        if name not in workloads:
            continue
        w = workloads[name]
        shoal = w["results"].get("shoal", {})
        value = w["ratios"].get("pyspark") if "error" not in w["ratios"] else None
        g: dict[str, Any] = {
            "target": f"PySpark RDD seconds / shoal seconds >= {target:g}",
            "value": value,
            "goal_met": None if value is None else value >= target and shoal.get("verified") is not False,
        }
        if value is None:
            g["why_not_evaluated"] = (
                w["ratios"].get("error") or f"no PySpark RDD time: {w['results'].get('pyspark', {}).get('error', 'not run')}"
            )
        elif shoal.get("verified") is False:
            g["note"] = "shoal's output failed its check"
        goals[key] = g
    if "tiny" in workloads:
        shoal = workloads["tiny"]["results"].get("shoal", {})
        value = shoal.get("median_s")
        g = {
            "target": f"shoal one-line job, interpreter start to exit, < {GOAL_TINY_S:g} s",
            "value": value,
            "goal_met": None if value is None else value < GOAL_TINY_S and shoal.get("verified") is not False,
        }
        if value is None:
            g["why_not_evaluated"] = shoal.get("error") or "shoal was not run"
        goals["tiny_job_s"] = g
    return goals


def warnings_of(workloads: dict[str, Any]) -> list[str]:
    out = []
    for name, w in workloads.items():
        for peer, r in w["results"].items():
            if r.get("verified") is False:
                out.append(f"{name}/{peer}: output check failed: {r['check'].get('detail')}")
            if (r.get("busy_fraction_max") or 0) > BUSY_FRACTION:
                out.append(
                    f"{name}/{peer}: other processes, kernel threads and steal used {100 * r['busy_fraction_max']:.0f}% "
                    "of all CPUs during a run; rerun on an idle machine"
                )
    return out


def print_table(result: dict[str, Any]) -> None:
    log("")
    log(f"{'workload':10s} {'peer':11s} {'median s':>9s} {'MB/s':>7s} {'check':>6s} {'peer/shoal':>10s}  runs / error")
    for name, w in result["workloads"].items():
        for peer, r in w["results"].items():
            if "median_s" in r:
                check = {True: "ok", False: "FAIL", None: "-"}[r.get("verified")]
                ratio = w["ratios"].get(peer) if peer != "shoal" else None
                mbs = f"{r['median_mb_s']:7.1f}" if "median_mb_s" in r else f"{'':7s}"
                rs = " ".join(f"{x:.2f}" for x in r["runs_s"])
                log(f"{name:10s} {peer:11s} {r['median_s']:9.2f} {mbs} {check:>6s} {'' if ratio is None else f'{ratio:.2f}x':>10s}  {rs}")
            else:
                why = (r.get("error") or r.get("skipped") or "").splitlines()[0][:90]
                log(f"{name:10s} {peer:11s} {'-':>9s} {'':7s} {'':>6s} {'':>10s}  {why}")
    for key, g in result["goals"].items():
        met = {True: "MET", False: "NOT MET", None: "not evaluated"}[g["goal_met"]]
        log(f"goal {key}: {met} (value {g['value']}; {g['target']})")
    for w in result["warnings"]:
        log(f"warning: {w}")


NOTES = [
    "Every peer run is a fresh interpreter (or the sort command) started by this script; its time is "
    "wall-clock from spawn to exit, so JVM / pool start-up and shutdown are included in every workload. "
    "ready_s_median (imports + context creation) and job_s_median (the job and the context's stop) are "
    "measured inside the program for reference.",
    "Inputs are generated once (seeded) and cached in the data folder; each workload's input is read "
    "once before its runs so that every peer starts with it in the page cache. os.sync() runs untimed "
    "before every run; outputs are deleted after their check.",
    "Peers run in turn, the order rotating from run to run (use --repeat 3 or more for medians); "
    "nothing else of this script runs while a peer is timed.",
    "Ratios are peer median seconds / shoal median seconds: above 1 means shoal was faster.",
    "Checks (untimed): word counts (distinct words, total words, top 10) must agree across peers, with "
    "single-process Python as the reference; a sort's output files, concatenated in name order, must "
    "hold exactly the input's records (count and an order-independent checksum), sorted by the 10-byte key; "
    "the tiny job must return 328350.",
    "PySpark peers: local[2], spark.driver.memory=2g, spark.ui.enabled=false, log level WARN, "
    "spark.local.dir in the work folder, PYSPARK_PYTHON = this interpreter. Dask bag: read_text "
    "blocksize 32 MiB, processes scheduler with 2 workers. GNU sort: LC_ALL=C, -S 50%, --parallel=2.",
    "Peers run without PYTHONDONTWRITEBYTECODE, and the shoal package is byte-compiled (untimed) "
    "before the runs, so every peer imports from cached bytecode as pip-installed packages do.",
    "reference_figures_1GiB_s are the issue's figures for this kind of machine (2 cores, 1 GiB inputs).",
]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM / Ctrl-C: the running peer is killed and what finished is still reported
    signal.signal(signal.SIGTERM, _interrupt)
    emit(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
