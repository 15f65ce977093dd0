"""Deterministic inputs for ``bench/compute.py``, cached in a data folder.

- :func:`ensure_corpus`: a text corpus of exactly ``size`` bytes: lines of 60-120
  characters (give or take a word) of lowercase pseudo-English words separated by one
  space, drawn from a Zipf-like distribution (exponent :data:`ZIPF_S`) over a
  vocabulary of :data:`VOCABULARY` words, frequent words being the shorter ones.
- :func:`ensure_sort_records`: ``size // 100`` records of 100 bytes, as gensort's ASCII
  records: a 10-character key of random printable characters (``!`` to ``~``), two
  spaces, the record number in 32 hex digits, two spaces, 53 random capital letters
  and a newline.

Both are seeded and regenerated only when the file is missing, has another size, or
its ``.meta.json`` names another format version or seed. numpy makes them fast
(about 20 s per GiB); without it a pure-Python generator (several times slower)
makes different, equally deterministic, data (its meta says which generator it was).

:func:`records_digest` checks a sort's output: record count, key order and an
order-independent checksum that must equal the input's.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import numpy as np
except ImportError:  # pragma: no cover - the bench extra installs numpy
    np = None  # type: ignore[assignment]

FORMAT_VERSION = 1
DEFAULT_SEED = 20240601
VOCABULARY = 200_000
ZIPF_S = 1.1
LINE_MIN, LINE_MAX = 60, 120
RECORD_BYTES = 100
KEY_BYTES = 10
CHUNK_BYTES = 16 * 1024 * 1024  # corpus bytes generated per step
RECORDS_PER_CHUNK = 1 << 20  # sort records per step (100 MiB)

_ONSETS = (
    "", "", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w",
    "y", "z", "bl", "br", "ch", "cl", "cr", "dr", "fl", "fr", "gl", "gr", "pl", "pr", "qu", "sc",
    "sh", "sk", "sl", "sm", "sn", "sp", "st", "str", "sw", "th", "tr", "wh",
)
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ea", "ee", "ie", "oa", "oo", "ou", "y")
_CODAS = ("", "", "", "", "n", "r", "s", "t", "l", "d", "m", "ck", "ng", "nd", "st", "th", "x", "rt", "ll")


@dataclass
class DataFile:
    path: Path
    nbytes: int
    generated: bool  # False: reused from the cache
    generate_s: float
    meta: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "bytes": self.nbytes,
            "reused_from_cache": not self.generated,
            "generate_s": round(self.generate_s, 2),
            **{k: v for k, v in self.meta.items() if k not in ("path",)},
        }


def backend() -> str:
    return "numpy" if np is not None else "python"


# --- caching -----------------------------------------------------------------------------
def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def _cached(path: Path, nbytes: int, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The stored meta when ``path`` is a finished file of this size and format."""
    try:
        if path.stat().st_size != nbytes:
            return None
        stored = json.loads(_meta_path(path).read_text())
    except (OSError, ValueError):
        return None
    if any(stored.get(k) != v for k, v in meta.items()):
        return None
    return stored


def _ensure(path: Path, nbytes: int, meta: dict[str, Any], write: Any) -> DataFile:
    stored = _cached(path, nbytes, meta)
    if stored is not None:
        return DataFile(path, nbytes, False, 0.0, stored)
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if free < nbytes + (256 << 20):
        raise SystemExit(f"need {nbytes} bytes free in {path.parent} for {path.name}, have {free}")
    tmp = path.with_name(path.name + ".tmp")
    t0 = time.perf_counter()
    with open(tmp, "wb") as f:
        extra = write(f) or {}
        f.flush()
        os.fsync(f.fileno())  # its write-back must not land inside a timed run
    written = tmp.stat().st_size
    if written != nbytes:
        raise RuntimeError(f"generator wrote {written} bytes to {tmp}, expected {nbytes}")
    os.replace(tmp, path)
    full = {**meta, **extra}
    _meta_path(path).write_text(json.dumps(full, indent=1) + "\n")
    return DataFile(path, nbytes, True, time.perf_counter() - t0, full)


# --- the corpus ----------------------------------------------------------------------------
def vocabulary(seed: int, size: int = VOCABULARY) -> list[str]:
    """``size`` distinct pseudo-English words, most frequent first (shorter words tend
    to rank higher, as in English)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    words: list[str] = []
    while len(words) < size:
        n = rng.choices((1, 2, 3, 4), weights=(3, 5, 3, 1))[0]
        w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n))
        if w not in seen:
            seen.add(w)
            words.append(w)
    keyed = sorted(((len(w) + rng.gauss(0.0, 2.5), i) for i, w in enumerate(words)))
    return [words[i] for _, i in keyed]


def zipf_weights(n: int, s: float = ZIPF_S) -> list[float]:
    return [1.0 / (k**s) for k in range(1, n + 1)]


def ensure_corpus(data_dir: Path, size: int, seed: int = DEFAULT_SEED) -> DataFile:
    path = Path(data_dir) / f"corpus-{size}.txt"
    meta = {
        "kind": "corpus",
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "generator": backend(),
        "vocabulary": VOCABULARY,
        "zipf_s": ZIPF_S,
    }
    write = _corpus_numpy if np is not None else _corpus_python
    return _ensure(path, size, meta, lambda f: write(f, size, seed))


def _alias_table(weights: list[float]) -> tuple[Any, Any]:
    """Walker's alias method: O(1) vectorised draws from a discrete distribution."""
    n = len(weights)
    total = sum(weights)
    scaled = [w * n / total for w in weights]
    prob = [0.0] * n
    alias = [0] * n
    small = [i for i, p in enumerate(scaled) if p < 1.0]
    large = [i for i, p in enumerate(scaled) if p >= 1.0]
    while small and large:
        s, big = small.pop(), large.pop()
        prob[s] = scaled[s]
        alias[s] = big
        scaled[big] -= 1.0 - scaled[s]
        (small if scaled[big] < 1.0 else large).append(big)
    for i in small + large:
        prob[i] = 1.0
        alias[i] = i
    return np.array(prob), np.array(alias, dtype=np.int64)


def _corpus_numpy(f: Any, size: int, seed: int) -> dict[str, Any]:
    words = vocabulary(seed)
    width = max(map(len, words)) + 1
    table = np.zeros((len(words), width), dtype=np.uint8)  # word + one space, zero-padded
    for i, w in enumerate(words):
        table[i, : len(w) + 1] = np.frombuffer(w.encode() + b" ", dtype=np.uint8)
    lengths = np.array([len(w) + 1 for w in words], dtype=np.int64)
    prob, alias = _alias_table(zipf_weights(len(words)))
    weights = np.array(zipf_weights(len(words)))
    mean_len = float((weights * lengths).sum() / weights.sum())
    rng = np.random.default_rng(seed)
    written = 0
    lines = 0
    while written < size:
        need = min(CHUNK_BYTES, size - written)
        n = int(need / mean_len * 1.05) + 64  # enough words, almost always; loop if not
        parts = []
        have = 0
        while have < need:
            i = rng.integers(0, len(words), size=n)
            ids = np.where(rng.random(n) < prob[i], i, alias[i])
            rows = table[ids]
            chunk = rows[rows != 0]  # the words with their spaces, padding dropped
            ends = np.cumsum(lengths[ids]) - 1  # index of each word's trailing space
            # line breaks: at the first word end at or after targets 60-120 bytes apart
            targets = np.cumsum(rng.integers(LINE_MIN, LINE_MAX + 1, size=len(chunk) // LINE_MIN + 2))
            at = np.searchsorted(ends, targets[targets <= ends[-1]])
            chunk[ends[np.unique(at)]] = ord("\n")
            parts.append(chunk)
            have += len(chunk)
        chunk = np.concatenate(parts)[:need] if len(parts) > 1 else parts[0][:need]
        chunk[-1] = ord("\n")  # every chunk ends a line (the last word may be cut short)
        f.write(chunk.tobytes())
        lines += int(np.count_nonzero(chunk == ord("\n")))
        written += need
    return {"lines": lines}


def _corpus_python(f: Any, size: int, seed: int) -> dict[str, Any]:
    words = [w + " " for w in vocabulary(seed)]
    cum = []
    acc = 0.0
    for w in zipf_weights(len(words)):
        acc += w
        cum.append(acc)
    rng = random.Random(seed)
    mean_len = sum(len(w) * (c - p) for w, c, p in zip(words, cum, [0.0] + cum[:-1])) / acc
    written = 0
    lines = 0
    while written < size:
        need = min(CHUNK_BYTES, size - written)
        text = ""
        while len(text) < need:
            text += "".join(rng.choices(words, cum_weights=cum, k=int(need / mean_len * 1.05) + 64))
        pieces = []
        start = 0
        while True:
            end = text.find(" ", start + rng.randint(LINE_MIN, LINE_MAX) - 1)
            if end < 0 or end >= need:
                break
            pieces.append(text[start:end])
            start = end + 1
        pieces.append(text[start : need - 1])
        body = "\n".join(pieces) + "\n"
        f.write(body.encode())
        lines += len(pieces)
        written += need
    return {"lines": lines}


# --- the sort records --------------------------------------------------------------------
def sort_records_bytes(size: int) -> int:
    return size // RECORD_BYTES * RECORD_BYTES


def ensure_sort_records(data_dir: Path, size: int, seed: int = DEFAULT_SEED) -> DataFile:
    nbytes = sort_records_bytes(size)
    if nbytes == 0:
        raise ValueError(f"size {size} is less than one {RECORD_BYTES}-byte record")
    path = Path(data_dir) / f"sort-{nbytes}.txt"
    meta = {
        "kind": "sort_records",
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "generator": backend(),
        "records": nbytes // RECORD_BYTES,
        "record_bytes": RECORD_BYTES,
        "key_bytes": KEY_BYTES,
    }
    write = _records_numpy if np is not None else _records_python
    return _ensure(path, nbytes, meta, lambda f: write(f, nbytes // RECORD_BYTES, seed + 1))


_HEX = b"0123456789ABCDEF"


def _records_numpy(f: Any, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    hexdigits = np.frombuffer(_HEX, dtype=np.uint8)
    done = 0
    while done < count:
        n = min(RECORDS_PER_CHUNK, count - done)
        rec = np.empty((n, RECORD_BYTES), dtype=np.uint8)
        rec[:, :KEY_BYTES] = rng.integers(33, 127, size=(n, KEY_BYTES), dtype=np.uint8)
        rec[:, 10:12] = ord(" ")
        rec[:, 12:28] = ord("0")
        rownum = np.arange(done, done + n, dtype=np.uint64)
        for d in range(16):  # the low 16 of the 32 hex digits
            rec[:, 43 - d] = hexdigits[((rownum >> np.uint64(4 * d)) & np.uint64(15)).astype(np.intp)]
        rec[:, 44:46] = ord(" ")
        rec[:, 46:99] = rng.integers(65, 91, size=(n, 53), dtype=np.uint8)
        rec[:, 99] = ord("\n")
        f.write(rec.tobytes())
        done += n


def _records_python(f: Any, count: int, seed: int) -> None:
    rng = random.Random(seed)
    keychars = bytes(range(33, 127))
    letters = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    done = 0
    while done < count:
        n = min(RECORDS_PER_CHUNK // 8, count - done)
        out = bytearray()
        for r in range(done, done + n):
            out += bytes(rng.choices(keychars, k=KEY_BYTES))
            out += b"  %032X  " % r
            out += bytes(rng.choices(letters, k=53))
            out += b"\n"
        f.write(out)
        done += n


# --- checking a sort's output ---------------------------------------------------------------
@dataclass
class RecordsDigest:
    records: int = 0
    checksum: int = 0  # order-independent: a sum of per-record hashes, mod 2**64
    sorted_by_key: bool = True
    well_formed: bool = True  # every record 100 bytes ending in a newline
    first_problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "checksum": f"{self.checksum:016x}",
            "sorted_by_key": self.sorted_by_key,
            "well_formed": self.well_formed,
            "first_problem": self.first_problem,
        }


_MASK64 = (1 << 64) - 1
_MIX = 0x9E3779B97F4A7C15


def records_digest(files: Iterable[Path]) -> RecordsDigest:
    """Count, key order (across files, in the order given) and checksum of the records
    in ``files``; the checksum of the same records in any order is the same."""
    d = RecordsDigest()
    last_key: bytes | None = None
    for path in files:
        if path.stat().st_size % RECORD_BYTES:
            d.well_formed = False
            d.first_problem = d.first_problem or f"{path.name}: size {path.stat().st_size} is not a multiple of {RECORD_BYTES}"
        for block in _record_blocks(path):
            last_key = _digest_block(d, block, last_key, path.name)
    return d


def _record_blocks(path: Path) -> Iterator[bytes]:
    step = RECORDS_PER_CHUNK * RECORD_BYTES
    with open(path, "rb") as f:
        while True:
            block = f.read(step)
            if not block:
                return
            yield block


def _digest_block(d: RecordsDigest, block: bytes, last_key: bytes | None, name: str) -> bytes | None:
    n = len(block) // RECORD_BYTES
    if n == 0:
        return last_key
    block = block[: n * RECORD_BYTES]
    if np is None:
        return _digest_block_python(d, block, n, last_key, name)
    rec = np.frombuffer(block, dtype=np.uint8).reshape(n, RECORD_BYTES)
    if d.well_formed and not (rec[:, -1] == 10).all():
        d.well_formed = False
        d.first_problem = d.first_problem or f"{name}: a record does not end in a newline"
    # key order: 8 bytes + 2 bytes as big-endian integers
    hi = np.ascontiguousarray(rec[:, :8]).view(">u8").ravel().astype(np.uint64)
    lo = np.ascontiguousarray(rec[:, 8:KEY_BYTES]).view(">u2").ravel().astype(np.uint64)
    if d.sorted_by_key:
        ok = (hi[:-1] < hi[1:]) | ((hi[:-1] == hi[1:]) & (lo[:-1] <= lo[1:]))
        if last_key is not None and last_key > block[:KEY_BYTES]:
            ok = np.concatenate([[False], ok])
        if not ok.all():
            d.sorted_by_key = False
            d.first_problem = d.first_problem or f"{name}: keys out of order near record {d.records + int(np.argmin(ok))}"
    # checksum: mix 12 little-endian words and the last 4 bytes of each record
    words = np.ascontiguousarray(rec[:, :96]).view("<u8")
    tail = np.ascontiguousarray(rec[:, 96:]).view("<u4").ravel().astype(np.uint64)
    h = np.full(n, 0x243F6A8885A308D3, dtype=np.uint64)
    mix = np.uint64(_MIX)
    with np.errstate(over="ignore"):
        for k in range(12):
            h = (h ^ words[:, k]) * mix
            h ^= h >> np.uint64(29)
        h = (h ^ tail) * mix
        h ^= h >> np.uint64(32)
    d.checksum = (d.checksum + int(h.sum(dtype=np.uint64))) & _MASK64
    d.records += n
    return bytes(block[(n - 1) * RECORD_BYTES : (n - 1) * RECORD_BYTES + KEY_BYTES])


def _digest_block_python(d: RecordsDigest, block: bytes, n: int, last_key: bytes | None, name: str) -> bytes | None:
    total = d.checksum
    for i in range(n):
        r = block[i * RECORD_BYTES : (i + 1) * RECORD_BYTES]
        if r[-1] != 10 and d.well_formed:
            d.well_formed = False
            d.first_problem = d.first_problem or f"{name}: a record does not end in a newline"
        key = r[:KEY_BYTES]
        if last_key is not None and key < last_key and d.sorted_by_key:
            d.sorted_by_key = False
            d.first_problem = d.first_problem or f"{name}: keys out of order near record {d.records + i}"
        last_key = key
        total += zlib.crc32(r) * _MIX
    d.checksum = total & _MASK64
    d.records += n
    return last_key
