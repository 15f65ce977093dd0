"""Helpers shared by the ``bench/`` scripts: timing, medians, machine facts, JSON output.

Every benchmark prints exactly one JSON object on stdout; progress goes to stderr so
``python bench/x.py > result.json`` keeps a clean file.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from shoal.core.units import format_size, parse_size

MB = 1_000_000  # throughput unit: 1 MB = 1e6 bytes, as disk vendors and dd report
PATTERN_BYTES = 16 * 1024 * 1024


def log(*parts: object) -> None:
    """Progress for humans, on stderr."""
    print(*parts, file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> None:
    """The benchmark's one JSON object, on stdout."""
    json.dump(result, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def size_arg(text: str) -> int:
    """argparse ``type=`` for sizes such as ``256M`` or ``1G`` (binary units)."""
    try:
        size = parse_size(text)
    except Exception as exc:  # ConfigError -> a usage error, not a traceback
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size <= 0:
        raise argparse.ArgumentTypeError("size must be positive")
    return size


def size_or_zero_arg(text: str) -> int:
    """argparse ``type=`` like :func:`size_arg`, but ``0`` is allowed (it means "off")."""
    if text.strip() == "0":
        return 0
    return size_arg(text)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def mb_per_s(nbytes: int, seconds: float) -> float:
    return nbytes / MB / seconds if seconds > 0 else float("inf")


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def rounded(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


# --- timing ------------------------------------------------------------------------------
@dataclass
class Sample:
    """One timed call: wall seconds and CPU seconds of this process, its children and
    any extra processes watched (the cluster's daemons)."""

    wall_s: float
    self_cpu_s: float
    children_cpu_s: float
    watched_cpu_s: float
    # Busy CPU seconds of the whole machine not accounted for above: other processes
    # (someone's test run) and kernel threads (write-back, softirqs). A large value
    # means the timing was shared with something else.
    other_cpu_s: float = 0.0
    # CPU seconds the hypervisor gave to someone else while this VM wanted to run.
    steal_s: float = 0.0


def _machine_cpu() -> tuple[float, float]:
    """(busy seconds inside this machine, stolen seconds) summed over all CPUs."""
    t = psutil.cpu_times()
    steal = getattr(t, "steal", 0.0)
    idle = t.idle + getattr(t, "iowait", 0.0)
    # guest time is already counted in user time
    busy = sum(t) - idle - steal - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return busy, steal


def _watched_cpu(procs: Iterable[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def timed(fn: Callable[[], Any], watch: Sequence[psutil.Process] = ()) -> Sample:
    """Run ``fn`` once and measure it with ``time.perf_counter``."""
    r0s = resource.getrusage(resource.RUSAGE_SELF)
    r0c = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = _watched_cpu(watch)
    m0, st0 = _machine_cpu()
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    m1, st1 = _machine_cpu()
    w1 = _watched_cpu(watch)
    r1s = resource.getrusage(resource.RUSAGE_SELF)
    r1c = resource.getrusage(resource.RUSAGE_CHILDREN)
    self_cpu = (r1s.ru_utime + r1s.ru_stime) - (r0s.ru_utime + r0s.ru_stime)
    children_cpu = (r1c.ru_utime + r1c.ru_stime) - (r0c.ru_utime + r0c.ru_stime)
    return Sample(
        wall_s=wall,
        self_cpu_s=self_cpu,
        children_cpu_s=children_cpu,
        watched_cpu_s=w1 - w0,
        other_cpu_s=max(0.0, (m1 - m0) - self_cpu - children_cpu - (w1 - w0)),
        steal_s=st1 - st0,
    )


@dataclass
class Series:
    """All runs of one measurement on inputs of ``nbytes``."""

    name: str
    nbytes: int
    what: str = ""
    samples: list[Sample] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return median([s.wall_s for s in self.samples])

    @property
    def median_mb_s(self) -> float:
        return median([mb_per_s(self.nbytes, s.wall_s) for s in self.samples])

    def busy_fraction(self, min_wall_s: float = 0.5) -> float:
        """The largest share of the machine's CPU that others (processes, kernel threads,
        the hypervisor's other guests) used during one run (runs
        shorter than ``min_wall_s`` are skipped: CPU times tick every 10 ms)."""
        cpus = os.cpu_count() or 1
        return max(
            ((s.other_cpu_s + s.steal_s) / (s.wall_s * cpus) for s in self.samples if s.wall_s >= min_wall_s),
            default=0.0,
        )

    def run_mb_s(self, i: int) -> float:
        return mb_per_s(self.nbytes, self.samples[i].wall_s)

    def to_json(self) -> dict[str, Any]:
        walls = [s.wall_s for s in self.samples]
        rates = [mb_per_s(self.nbytes, w) for w in walls]
        cpu = [s.self_cpu_s + s.children_cpu_s + s.watched_cpu_s for s in self.samples]
        out: dict[str, Any] = {
            "what": self.what,
            "median_mb_s": rounded(self.median_mb_s, 1),
            "median_s": rounded(self.median_s),
            "runs_mb_s": [rounded(r, 1) for r in rates],
            "runs_s": [rounded(w) for w in walls],
            # max/min - 1 over the runs: a quick read of how noisy the number is
            "spread": rounded(max(rates) / min(rates) - 1) if len(rates) > 1 else 0.0,
            "cpu_s_median": rounded(median(cpu)),
            "other_cpu_s_median": rounded(median([s.other_cpu_s for s in self.samples])),
            "steal_s_median": rounded(median([s.steal_s for s in self.samples])),
        }
        if any(s.watched_cpu_s for s in self.samples):
            out["cpu_s_breakdown_median"] = {
                "client": rounded(median([s.self_cpu_s for s in self.samples])),
                "daemons": rounded(median([s.watched_cpu_s for s in self.samples])),
            }
        return out


# --- inputs ------------------------------------------------------------------------------
def make_input_file(path: Path, size: int) -> None:
    """Write ``size`` incompressible bytes fast: one random 16 MiB pattern, each copy
    prefixed with its own counter so that no two chunks (or blocks) are identical.
    Synced so that its write-back does not land inside the first timed step."""
    pattern = bytearray(os.urandom(PATTERN_BYTES))
    with open(path, "wb") as f:
        written = 0
        counter = 0
        while written < size:
            struct.pack_into(">Q", pattern, 0, counter)
            n = min(len(pattern), size - written)
            f.write(memoryview(pattern)[:n])
            written += n
            counter += 1
        f.flush()
        os.fsync(f.fileno())


def files_equal(a: Path, b: Path, chunk_bytes: int = 8 * 1024 * 1024) -> bool:
    """Byte-for-byte comparison (not filecmp's stat shortcut)."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(chunk_bytes)
            y = fb.read(chunk_bytes)
            if x != y:
                return False
            if not x:
                return True


# --- facts about the machine -------------------------------------------------------------
def _first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0].strip() if out else None
    except (OSError, subprocess.SubprocessError):
        return None


def _filesystem_type(path: Path) -> str | None:
    path = path.resolve()
    best = None
    for part in psutil.disk_partitions(all=True):
        mp = part.mountpoint
        if (path == Path(mp) or Path(mp) in path.parents) and (best is None or len(mp) > len(best.mountpoint)):
            best = part
    return best.fstype if best else None


def machine_info(workdir: Path, tools: Sequence[str] = ()) -> dict[str, Any]:
    """What a reader needs to compare this result with another machine's."""
    usage = shutil.disk_usage(workdir)
    mem = psutil.virtual_memory()
    freq = psutil.cpu_freq()
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "cpu_mhz": round(freq.current) if freq else None,
        "memory_total": format_size(mem.total),
        "memory_available": format_size(mem.available),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "workdir": str(workdir),
        "workdir_fs": _filesystem_type(workdir),
        "disk_free": format_size(usage.free),
        "disk_free_bytes": usage.free,
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "virtio_balloon_free_page_reporting": free_page_reporting(),
    }
    try:
        import uvloop  # noqa: F401

        info["uvloop"] = True
    except ImportError:
        info["uvloop"] = False
    for tool in tools:
        info[f"{tool}_version"] = _first_line([tool, "--version"])
    return info


def memory_touch_mb_s(mib: int = 256, repeats: int = 3) -> list[float]:
    """How fast this machine hands out fresh memory: MB/s of writing ``mib`` MiB of new
    anonymous pages. On a VM whose free pages go back to the host (virtio-balloon free
    page reporting) this is slow and varies, and so does every step that fills the
    page cache (cp, cat > file, put, get); a low or scattered number explains noise."""
    size = mib * 1024 * 1024
    zeros = bytes(1024 * 1024)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with mmap.mmap(-1, size) as m:
            for _ in range(mib):
                m.write(zeros)
        rates.append(round(mb_per_s(size, time.perf_counter() - t0), 1))
    return rates


def free_page_reporting() -> bool | None:
    """Whether a virtio balloon with free page reporting is present (None: can't tell)."""
    devices = Path("/sys/bus/virtio/devices")
    if not devices.is_dir():
        return None
    found = False
    for dev in devices.iterdir():
        try:
            if (dev / "device").read_text().strip() != "0x0005":  # virtio-balloon
                continue
            features = (dev / "features").read_text().strip()
        except OSError:
            continue
        found = True
        if len(features) > 5 and features[5] == "1":  # VIRTIO_BALLOON_F_REPORTING
            return True
    return False if found or devices.exists() else None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def stop_quietly(client: Any, cluster: Any) -> None:
    """Close a benchmark's client (if any) and stop its cluster, whatever happened."""
    if client is not None:
        try:
            client.close()
        except Exception as exc:  # the cluster is going away anyway
            log(f"closing the client failed: {exc}")
    cluster.down()
