"""MapReduce benchmark: a Hadoop Streaming word count on shoal against Unix tools and
shoal's RDD API.

The job is a word count of bench/compute.py's Zipf-like corpus (the same generator
and cache, so the numbers compare with compute.py's wordcount), --size bytes
(default 1 GiB). Every peer runs as a fresh process, timed wall-clock from spawn to
exit (start-up included), in the same invocation:

    shoal-streaming             shoal mapreduce streaming -input CORPUS -output OUT
                                    -mapper "python mapper.py" -reducer "python reducer.py"
                                    -combiner "python reducer.py" -file mapper.py -file reducer.py
                                    -numReduceTasks 2 -master local[2] -quiet
    shoal-streaming-nocombiner  the same without -combiner (what the shuffle costs)
    shoal-mrjob                 the class API: WordCount(MapReduceJob) with mapper, combiner
                                and reducer generators, .run(reducers=2, master="local[2]")
    unix                        LC_ALL=C tr -s ' \\t' '\\n\\n' < CORPUS | LC_ALL=C sort | uniq -c
                                (sort's default parallelism and buffer)
    unix-parallel               the same with sort --parallel=2 -S 50%
    rdd                         bench/compute.py's shoal word count, SparkContext("local[2]"):
                                textFile().flatMap(str.split).map(lambda w: (w, 1))
                                    .reduceByKey(operator.add).collect()

The streaming mapper writes one "word<TAB>1" line per word (one write per input line);
the reducer (also the combiner) sums runs of equal words. Both run under this
interpreter. Outputs are read back (untimed) as word -> count and must be equal for
every peer. Ratios are peer seconds / baseline seconds (above 1: slower than the
baseline) against `unix` and against `rdd`. The shoal MapReduce peers' job counters
are parsed from the report the job prints on stderr.

    .venv/bin/python bench/mapreduce.py --size 64M              # a quick run
    .venv/bin/python bench/mapreduce.py --repeat 3 > mr.json    # 1 GiB, medians of 3
    .venv/bin/python bench/mapreduce.py --peers shoal-streaming,unix --size 256M
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, log, machine_info, mb_per_s, median, rounded, size_arg  # noqa: E402
from _compute_data import DEFAULT_SEED, ensure_corpus  # noqa: E402
from _compute_runner import (  # noqa: E402
    _probe_import, add_run_args, check_run_args, compile_shoal, gnu_sort_status, peer_env, run_command, run_paths, warm,
)
from _mapreduce_programs import MAPPER, REDUCER, mrjob_program, rdd_program  # noqa: E402
from _mapreduce_results import (  # noqa: E402
    check_counters, counts_digest, key_counters, parse_report, read_counts, summary,
)

from shoal.core.units import format_size  # noqa: E402

PEERS = ("shoal-streaming", "shoal-streaming-nocombiner", "shoal-mrjob", "unix", "unix-parallel", "rdd")
DEFAULT_PEERS = PEERS  # shoal-streaming-nocombiner included: ~3 min at 1 GiB estimated (see NOTES)
SHOAL_PEERS = ("shoal-streaming", "shoal-streaming-nocombiner", "shoal-mrjob")
BASELINES = ("unix", "rdd")
MASTER = "local[2]"
REDUCERS = 2
DESCRIPTIONS = {
    "shoal-streaming": f"shoal mapreduce streaming, Python mapper, reducer and the reducer as combiner, "
    f"-numReduceTasks {REDUCERS} -master {MASTER} -quiet",
    "shoal-streaming-nocombiner": f"shoal mapreduce streaming, Python mapper and reducer, no combiner, "
    f"-numReduceTasks {REDUCERS} -master {MASTER} -quiet",
    "shoal-mrjob": f"shoal.mapreduce.MapReduceJob WordCount (mapper, combiner, reducer), reducers={REDUCERS}, "
    f"master={MASTER}",
    "unix": "LC_ALL=C tr -s ' \\t' '\\n\\n' < corpus | LC_ALL=C sort | uniq -c",
    "unix-parallel": "LC_ALL=C tr -s ' \\t' '\\n\\n' < corpus | LC_ALL=C sort --parallel=2 -S 50% | uniq -c",
    "rdd": "shoal.spark SparkContext('local[2]'): textFile().flatMap(str.split).map(lambda w: (w, 1))"
    ".reduceByKey(add).collect() (bench/compute.py's program; pairs also written to a file)",
}
DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "out" / "compute-data"  # shared with compute.py
BUSY_FRACTION = 0.25
SORT_DEFAULT_MAX_THREADS = 8  # GNU sort: --parallel defaults to the available CPUs, at most 8


# --- arguments -----------------------------------------------------------------------------
def _peers_arg(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if items == ["all"]:
        return list(PEERS)
    bad = [t for t in items if t not in PEERS]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"unknown peer: {', '.join(bad) or text!r} (choose from {', '.join(PEERS)}, or all)")
    return list(dict.fromkeys(items))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=size_arg, default=size_arg("1G"), help="corpus size, e.g. 64M, 1G (default 1G)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of every peer; medians are reported (default 1)")
    ap.add_argument(
        "--peers", type=_peers_arg, default=list(DEFAULT_PEERS),
        help=f"comma-separated peers to run, or all (default {','.join(DEFAULT_PEERS)})",
    )
    add_run_args(ap, DEFAULT_DATA_DIR, "where the corpus is cached (default bench/out/compute-data, shared with "
                 "compute.py)", DEFAULT_SEED)
    args = ap.parse_args(argv)
    check_run_args(ap, args)
    return args


# --- which peers can run -------------------------------------------------------------------
def shoal_cli() -> str | None:
    """The ``shoal`` console script of this interpreter's environment."""
    beside = Path(sys.executable).parent / "shoal"
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("shoal")


def _tool_version(tool: str) -> tuple[str | None, str | None]:
    path = shutil.which(tool)
    if not path:
        return None, f"no {tool} on PATH"
    try:
        p = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{tool} --version failed: {exc}"
    first = p.stdout.strip().splitlines()[0] if p.stdout.strip() else "?"
    return first, None


def peer_status(peers: list[str], env: dict[str, str]) -> dict[str, dict[str, Any]]:
    status: dict[str, dict[str, Any]] = {}
    mr: tuple[str | None, str | None] | None = None
    spark: tuple[str | None, str | None] | None = None
    unix: tuple[str | None, str | None] | None = None
    for peer in peers:
        info: dict[str, Any] = {"ok": True, "description": DESCRIPTIONS[peer]}
        error = None
        if peer in SHOAL_PEERS:
            mr = mr or _probe_import("shoal.mapreduce.api", env)
            info["version"], error = mr
            if error is None and peer.startswith("shoal-streaming") and shoal_cli() is None:
                error = f"no shoal command beside {sys.executable} or on PATH"
        elif peer == "rdd":
            spark = spark or _probe_import("shoal.spark", env)
            info["version"], error = spark
        else:
            if unix is None:
                sort_version, err = gnu_sort_status()
                for tool in ("tr", "uniq"):
                    err = err or _tool_version(tool)[1]
                unix = (sort_version, err)
            info["version"], error = unix
        if error:
            info = {"ok": False, "error": error, "description": DESCRIPTIONS[peer]}
        status[peer] = info
    return status


def unix_facts() -> dict[str, Any]:
    """nproc and what GNU sort does by default with it."""
    facts: dict[str, Any] = {}
    try:
        facts["nproc"] = int(subprocess.run(["nproc"], capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        facts["nproc"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for tool in ("sort", "tr", "uniq"):
        facts[f"{tool}_version"] = _tool_version(tool)[0]
    threads = min(facts["nproc"] or 1, SORT_DEFAULT_MAX_THREADS)
    facts["sort_default_parallel"] = threads
    facts["unix_parallel_differs"] = (
        "only in -S 50% (the default --parallel is already 2 here)" if threads == 2
        else f"in --parallel (default {threads} here) and -S 50%"
    )
    return facts


# --- one run of one peer -------------------------------------------------------------------
@dataclass
class Run:
    wall_s: float
    cpu_s: float
    other_cpu_s: float
    steal_s: float
    error: str | None = None
    counts_digest: str | None = None
    answer: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)  # the job's own "completed in" line
    inner: dict[str, Any] = field(default_factory=dict)  # a Python program's ready_s / job_s
    check: dict[str, Any] = field(default_factory=dict)


@dataclass
class Bench:
    corpus: Path
    corpus_bytes: int
    work: Path
    env: dict[str, str]
    timeout: float
    corpus_lines: int | None = None
    interrupted: bool = False
    first_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # peer -> its first run's counts

    def programs(self) -> Path:
        d = self.work / "programs"
        if not d.exists():
            d.mkdir(parents=True)
            for name, text in (("mapper.py", MAPPER), ("reducer.py", REDUCER)):
                (d / name).write_text(text)
                (d / name).chmod(0o755)
            (d / "wordcount_mrjob.py").write_text(mrjob_program())
            (d / "wordcount_rdd.py").write_text(rdd_program())
        return d

    def command(self, peer: str, out: Path, result: Path) -> tuple[list[str], dict[str, str]]:
        progs = self.programs()
        py = shlex.quote(sys.executable)
        if peer.startswith("shoal-streaming"):
            cli = shoal_cli()
            assert cli is not None
            cmd = [
                cli, "mapreduce", "streaming", "-input", str(self.corpus), "-output", str(out),
                "-mapper", f"{py} mapper.py", "-reducer", f"{py} reducer.py",
            ]
            if peer == "shoal-streaming":
                cmd += ["-combiner", f"{py} reducer.py"]
            cmd += [
                "-file", str(progs / "mapper.py"), "-file", str(progs / "reducer.py"),
                "-numReduceTasks", str(REDUCERS), "-master", MASTER, "-quiet",
            ]
            return cmd, self.env
        if peer in ("unix", "unix-parallel"):
            out.mkdir(parents=True)
            sort = "LC_ALL=C sort" + (" --parallel=2 -S 50%" if peer == "unix-parallel" else "")
            pipeline = (
                f"set -o pipefail; LC_ALL=C tr -s ' \\t' '\\n\\n' < {shlex.quote(str(self.corpus))} "
                f"| {sort} | uniq -c > {shlex.quote(str(out / 'part-00000'))}"
            )
            return ["bash", "-c", pipeline], self.env
        options: dict[str, Any] = {"reducers": REDUCERS, "master": MASTER}
        prog = progs / ("wordcount_mrjob.py" if peer == "shoal-mrjob" else "wordcount_rdd.py")
        return [sys.executable, str(prog), str(self.corpus), str(out), str(result), json.dumps(options)], self.env

    def run_once(self, peer: str, run_no: int) -> Run:
        out, result_path, log_path = run_paths(self.work, f"{peer}-{run_no}")
        cmd, env = self.command(peer, out, result_path)
        os.sync()  # untimed: no run inherits another's dirty pages
        sample, error = run_command(cmd, env, log_path, self.timeout)
        run = Run(sample.wall_s, sample.children_cpu_s, sample.other_cpu_s, sample.steal_s, error)
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        if peer in SHOAL_PEERS:
            run.counters, run.report = parse_report(text)
        if run.error is None and peer in ("shoal-mrjob", "rdd"):
            try:
                inner = json.loads(result_path.read_text())
                run.inner = {k: inner[k] for k in ("ready_s", "job_s")}
            except (OSError, ValueError, KeyError) as exc:
                run.error = f"the program exited 0 but left no result ({exc})"
        if run.error is None:
            try:
                counts = read_counts(out, unix=peer.startswith("unix"))
            except (OSError, ValueError) as exc:
                run.error = f"cannot read the output in {out}: {exc}"
            else:
                run.counts_digest = counts_digest(counts)
                run.answer = summary(counts)
                if peer in SHOAL_PEERS:
                    run.check = {"counters": check_counters(run.counters, run.answer, self.corpus_lines)}
                self.first_counts.setdefault(peer, counts)
        shutil.rmtree(out, ignore_errors=True)
        return run


# --- the benchmark -------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    parent = (args.workdir or Path(tempfile.gettempdir())).resolve()
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-mapreduce-", dir=parent))
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
    machine = {**machine_info(work), **unix_facts()}
    needed = 3 * args.size  # map output without a combiner, sort's temp files, with slack
    if machine["disk_free_bytes"] < needed:
        raise SystemExit(f"need about {format_size(needed)} free in {work}, have {machine['disk_free']}")

    log("checking which peers can run")
    status = peer_status(args.peers, env)
    for peer, st in status.items():
        log(f"  {peer:27s} {'ok ' + str(st.get('version')) if st['ok'] else 'ERROR ' + st['error']}")
    data: dict[str, Any] = {}
    if any(status[p]["ok"] for p in args.peers if p in SHOAL_PEERS or p == "rdd"):
        data["shoal_bytecode_compile_s"] = rounded(compile_shoal(), 2)

    log(f"corpus: {format_size(args.size)} in {args.data_dir}")
    corpus = ensure_corpus(args.data_dir, args.size, args.seed)
    log(f"  {'generated in %.1f s' % corpus.generate_s if corpus.generated else 'cached'}: {corpus.path}")
    warm(corpus.path)

    bench = Bench(corpus.path, corpus.nbytes, work, env, args.timeout, corpus.meta.get("lines"))
    runs: dict[str, list[Run]] = {p: [] for p in args.peers}
    errors = {p: st["error"] for p, st in status.items() if not st["ok"]}
    runnable = [p for p in args.peers if p not in errors]
    try:
        for i in range(args.repeat):
            k = i % len(runnable) if runnable else 0  # rotate: no peer always goes first
            for peer in runnable[k:] + runnable[:k]:
                if peer in errors:
                    continue
                r = bench.run_once(peer, i + 1)
                runs[peer].append(r)
                mark = "" if r.error is None else f"  ERROR {r.error.splitlines()[0][:200]}"
                log(f"  run {i + 1}/{args.repeat} {peer:27s} {r.wall_s:8.2f} s{mark}")
                if r.error is not None:
                    errors[peer] = r.error
    except KeyboardInterrupt:
        bench.interrupted = True
        log("interrupted; reporting the runs that finished")
    reference = compare_counts(runs, bench.first_counts)

    results = {p: peer_result(runs[p], errors.get(p), corpus.nbytes, args.repeat, bench.interrupted) for p in args.peers}
    ratios = {f"vs_{base}": ratios_vs(results, base) for base in BASELINES}
    answer = next((r.answer for p in args.peers for r in runs[p] if r.check.get("ok")), None)
    result = {
        "benchmark": "mapreduce",
        "what": "word count of the corpus (word -> count), written as files (collected to the driver for rdd)",
        "size_bytes": args.size,
        "size": format_size(args.size),
        "input": {**corpus.to_json(), "size": format_size(corpus.nbytes)},
        "repeat": args.repeat,
        "unit": "seconds of wall-clock time per peer run, process spawn to exit (start-up included)",
        "results": results,
        "seconds": {p: r.get("median_s") for p, r in results.items()},
        "ratios": ratios,
        "reference_for_checks": reference,
        "answer": answer,
        "interrupted": bench.interrupted,
        "warnings": warnings_of(results),
        "peers": status,
        "data": data,
        "machine": machine,
        "notes": NOTES,
    }
    print_table(result)
    return result


def compare_counts(runs: dict[str, list[Run]], first: dict[str, dict[str, int]]) -> str | None:
    """Every run's word -> count must equal the reference: unix's when it ran, else
    rdd's, else the answer most peers gave."""
    digests = {p: rs[0].counts_digest for p, rs in runs.items() if rs and rs[0].counts_digest}
    if not digests:
        return None
    source = next((p for p in ("unix", "unix-parallel", "rdd") if p in digests), None)
    if source is None:
        ref = Counter(digests.values()).most_common(1)[0][0]
        source = next(p for p, d in digests.items() if d == ref)
    ref = digests[source]
    others = len(digests) > 1
    for peer, rs in runs.items():
        for r in rs:
            if r.counts_digest is None:
                continue
            if r.counts_digest == ref:
                agrees = "no other peer to compare with" if not others else (
                    "is the reference" if peer == source else source)
                r.check = {**r.check, "ok": True if others else None, "agrees_with": agrees}
            else:
                r.check = {**r.check, "ok": False, "detail": f"differs from {source}: " + diff(first.get(peer), first[source])}
    return source


def diff(got: dict[str, int] | None, want: dict[str, int]) -> str:
    if got is None:
        return "?"
    missing = [w for w in want if w not in got]
    extra = [w for w in got if w not in want]
    wrong = [w for w in want if w in got and got[w] != want[w]]
    parts = [f"distinct {len(got)} (want {len(want)}), total {sum(got.values())} (want {sum(want.values())})"]
    if missing:
        parts.append(f"{len(missing)} words missing, e.g. {missing[:3]}")
    if extra:
        parts.append(f"{len(extra)} extra words, e.g. {extra[:3]}")
    if wrong:
        parts.append(f"{len(wrong)} counts differ, e.g. " + ", ".join(f"{w}: {got[w]} (want {want[w]})" for w in wrong[:3]))
    return "; ".join(parts)


def peer_result(runs: list[Run], error: str | None, nbytes: int, repeat: int, interrupted: bool) -> dict[str, Any]:
    if error is not None and not runs:
        return {"error": error}
    good = [r for r in runs if r.error is None]
    out: dict[str, Any] = {}
    if error is not None:
        out["error"] = error
        out["failed_runs_s"] = [rounded(r.wall_s) for r in runs if r.error is not None]
        bad = next((r for r in runs if r.error is not None), None)
        if bad is not None and bad.counters:
            out["counters_of_failed_run"] = bad.counters
        if not good:
            return out
    if interrupted and len(runs) < repeat:
        out["interrupted"] = f"interrupted after {len(runs)} of {repeat} runs"
    walls = [r.wall_s for r in good]
    out["median_s"] = rounded(median(walls))
    out["runs_s"] = [rounded(w) for w in walls]
    out["median_mb_s"] = rounded(mb_per_s(nbytes, median(walls)), 1)
    out["cpu_s_median"] = rounded(median([r.cpu_s for r in good]))
    out["other_cpu_s_median"] = rounded(median([r.other_cpu_s for r in good]))
    checks = [r.check.get("ok") for r in good]
    out["verified"] = None if all(c is None for c in checks) else all(c is True for c in checks)
    failed = [r.check for r in good if r.check.get("ok") is False]
    out["check"] = failed[0] if failed else good[0].check
    cpus = os.cpu_count() or 1
    out["busy_fraction_max"] = rounded(
        max(((r.other_cpu_s + r.steal_s) / (r.wall_s * cpus) for r in good if r.wall_s >= 0.5), default=0.0), 2
    )
    reports = [r.report for r in good if r.report]
    if reports:
        # the job's own time (context start to commit, in the process) vs. the whole command
        out["job_s_median"] = rounded(median([rep["job_s"] for rep in reports]))
        out["maps"], out["reduces"] = reports[0]["maps"], reports[0]["reduces"]
    inner = [r.inner for r in good if r.inner]
    if inner:
        out["in_process_s"] = {  # imports (+ context creation for rdd), then the rest, inside the program
            "ready_s_median": rounded(median([i["ready_s"] for i in inner])),
            "job_s_median": rounded(median([i["job_s"] for i in inner])),
        }
    counter_checks = [r.check["counters"] for r in good if "counters" in r.check]
    if counter_checks:
        out["counters_verified"] = all(c["ok"] for c in counter_checks)
        out["counters_check"] = next((c["detail"] for c in counter_checks if not c["ok"]), None)
    with_counters = [r for r in good if r.counters]
    if with_counters:
        out["key_counters"] = key_counters(with_counters[0].counters)
        out["counters"] = with_counters[0].counters  # the first run's; record counts do not vary
    return out


def ratios_vs(results: dict[str, Any], base: str) -> dict[str, Any]:
    base_s = results.get(base, {}).get("median_s")
    if base not in results:
        return {"error": f"{base} was not run (--peers)"}
    if base_s is None:
        return {"error": f"{base} has no time: {results[base].get('error')}"}
    return {p: rounded(r["median_s"] / base_s, 2) for p, r in results.items() if p != base and r.get("median_s") is not None}


def warnings_of(results: dict[str, Any]) -> list[str]:
    out = []
    for peer, r in results.items():
        if r.get("verified") is False:
            out.append(f"{peer}: output check failed: {r['check'].get('detail')}")
        if r.get("counters_verified") is False:
            out.append(f"{peer}: job counters do not match the output: {r['counters_check']}")
        if (r.get("busy_fraction_max") or 0) > BUSY_FRACTION:
            out.append(
                f"{peer}: other processes, kernel threads and steal used {100 * r['busy_fraction_max']:.0f}% "
                "of all CPUs during a run; rerun on an idle machine"
            )
    return out


def print_table(result: dict[str, Any]) -> None:
    log("")
    vs_unix, vs_rdd = result["ratios"]["vs_unix"], result["ratios"]["vs_rdd"]
    log(f"{'peer':27s} {'median s':>9s} {'MB/s':>7s} {'check':>6s} {'/unix':>7s} {'/rdd':>7s}  runs / error")
    for peer, r in result["results"].items():
        if "median_s" in r:
            check = {True: "ok", False: "FAIL", None: "-"}[r.get("verified")]
            ru = vs_unix.get(peer) if "error" not in vs_unix else None
            rr = vs_rdd.get(peer) if "error" not in vs_rdd else None
            rs = " ".join(f"{x:.2f}" for x in r["runs_s"])
            log(f"{peer:27s} {r['median_s']:9.2f} {r['median_mb_s']:7.1f} {check:>6s} "
                f"{'' if ru is None else f'{ru:.2f}x':>7s} {'' if rr is None else f'{rr:.2f}x':>7s}  {rs}")
            if r.get("key_counters"):
                log(f"{'':27s} " + ", ".join(f"{k}={v}" for k, v in r["key_counters"].items()))
        else:
            why = (r.get("error") or "").splitlines()[0][:90]
            log(f"{peer:27s} {'-':>9s} {'':7s} {'':>6s} {'':>7s} {'':>7s}  {why}")
    for w in result["warnings"]:
        log(f"warning: {w}")


NOTES = [
    "Every peer run is a fresh process (the shoal CLI, a Python program, or bash running the Unix "
    "pipeline) started by this script; its time is wall-clock from spawn to exit, start-up and shutdown "
    "included. job_s_median of the shoal MapReduce peers is the job's own time from its report (the "
    "engine started, the job run and committed), for reference.",
    "The corpus is bench/compute.py's (same generator, seed and cache folder), read once before the "
    "runs so that every peer starts with it in the page cache. os.sync() runs untimed before every run; "
    "outputs are deleted after their check.",
    "Peers run in turn, the order rotating from run to run (use --repeat 3 or more for medians).",
    "Ratios: vs_unix[p] = p's median seconds / unix's, vs_rdd[p] = p's / rdd's: above 1 means p took "
    "longer than the baseline.",
    "Checks (untimed): each run's output is read back as word -> count (every word once across the "
    "part files) and must equal the reference peer's exactly (reference_for_checks: unix when it ran, "
    "else rdd). The shoal MapReduce peers' counters are checked too: Map input records = the corpus's "
    "lines, Map output records = the words, Reduce output records = the distinct words (counters_verified).",
    f"Streaming: mapper.py and reducer.py are shipped with -file and run as '{Path(sys.executable).name} "
    "mapper.py' with this interpreter; the mapper writes '\\t1\\n'.join(words) once per input line, the "
    "reducer (also the combiner) sums runs of equal keys. Local input files are cut into 32 MiB splits "
    "(one map task each). Counters are parsed from the report the job prints on stderr.",
    "shoal-streaming-nocombiner is in the default peers: at 64 MiB it used about the CPU seconds of "
    "shoal-streaming (~18 s, the combiner's work moving to the reducers), i.e. an estimated ~3 min "
    "at 1 GiB on 2 idle cores; --peers leaves it out.",
    "unix: GNU sort's default --parallel is the number of available CPUs (at most 8) and its buffer "
    "is sized from the input and free memory; unix-parallel sets --parallel=2 -S 50% "
    "(machine.unix_parallel_differs says what that changes here). sort's temporary files go to $TMPDIR.",
    "rdd is bench/compute.py's shoal word count program, unchanged but for writing the collected "
    "pairs to a file (to compare them word by word); compute.py's 'shoal' wordcount times the same job.",
]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    emit(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
