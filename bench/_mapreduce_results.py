"""bench/mapreduce.py's reading of results: word counts from each peer's output, and
the job counters a shoal MapReduce run prints on stderr."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

KEY_COUNTERS = (
    "Map output records",
    "Combine input records",
    "Combine output records",
    "Spilled Records",
    "Reduce shuffle bytes",
)


def read_counts(out: Path, unix: bool) -> dict[str, int]:
    """word -> count from an output folder: ``word<TAB>count`` part files (MapReduce,
    RDD), or ``uniq -c``'s ``  count word`` lines. A word seen twice is an error (each
    word must be in exactly one part file, once)."""
    files = sorted(p for p in out.iterdir() if p.is_file() and p.name.startswith("part-")) if out.is_dir() else []
    if not files:
        raise ValueError("no part-* files")
    counts: dict[str, int] = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if unix:
                    count, _, word = line.lstrip(" ").partition(" ")
                else:
                    word, _, count = line.rpartition("\t")
                if not word:  # uniq -c of an empty line (tr leaves none on this corpus)
                    continue
                if word in counts:
                    raise ValueError(f"{path.name}: word {word!r} appears twice in the output")
                counts[word] = int(count)
    return counts


def counts_digest(counts: dict[str, int]) -> str:
    h = hashlib.sha256()
    for word in sorted(counts):
        h.update(f"{word}\t{counts[word]}\n".encode())
    return h.hexdigest()


def summary(counts: dict[str, int]) -> dict[str, Any]:
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    return {"distinct": len(counts), "total": sum(counts.values()), "top10": [[w, c] for w, c in top]}


_DONE = re.compile(r"^Job (\S+) completed successfully in ([\d.]+) s \((\d+) maps, (\d+) reduces\)")


def parse_report(text: str) -> tuple[dict[str, dict[str, int]], dict[str, Any]]:
    """Hadoop's end-of-job report as shoal prints it: ``Job ... completed successfully
    in X s (M maps, R reduces)``, ``Counters: N``, then ``\\tGroup`` and
    ``\\t\\tName=value`` lines. The last report in ``text`` wins."""
    counters: dict[str, dict[str, int]] = {}
    report: dict[str, Any] = {}
    group: str | None = None
    in_counters = False
    for line in text.splitlines():
        m = _DONE.match(line)
        if m:
            report = {"job_id": m.group(1), "job_s": float(m.group(2)), "maps": int(m.group(3)), "reduces": int(m.group(4))}
            counters, group, in_counters = {}, None, False
            continue
        if line.startswith("Counters: "):
            in_counters = True
            continue
        if not in_counters:
            continue
        if line.startswith("\t\t") and group is not None and "=" in line:
            name, _, value = line.strip("\t").rpartition("=")
            try:
                counters[group][name.strip()] = int(value)
            except ValueError:
                pass
        elif line.startswith("\t") and not line.startswith("\t\t"):
            group = line.strip()
            counters.setdefault(group, {})
        else:
            in_counters = False
    return counters, report


def check_counters(counters: dict[str, dict[str, int]], answer: dict[str, Any], lines: int | None) -> dict[str, Any]:
    """The record counters against the output: one map output record per word, one
    reduce output record per distinct word, one map input record per corpus line."""
    if not counters:
        return {"ok": False, "detail": "no counters in the job's report"}
    fw = counters.get("Map-Reduce Framework", {})
    want = {"Map output records": answer["total"], "Reduce output records": answer["distinct"]}
    if lines is not None:
        want["Map input records"] = lines
    bad = [f"{k}={fw.get(k)} (want {v})" for k, v in want.items() if fw.get(k) != v]
    return {"ok": not bad, "detail": "; ".join(bad) or None}


def key_counters(counters: dict[str, dict[str, int]]) -> dict[str, int | None]:
    flat = {name: v for group in counters.values() for name, v in group.items()}
    return {name: flat.get(name) for name in KEY_COUNTERS}
