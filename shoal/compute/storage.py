"""Reading the input files of compute jobs: Hadoop's FileInputFormat /
LineRecordReader semantics on local files and on the DFS.

Paths and inputs (naming, globs, listing) are in :mod:`shoal.compute.input_paths`.

Splits (``text_splits``), as Hadoop's ``FileInputFormat.getSplits``
    ``goal = total_size // max(min_partitions, 1)``; per file ``split_size = max(1,
    min(goal, block_size))`` where ``block_size`` is the DFS file's block size, or 32 MiB
    for local files (Hadoop's ``fs.local.block.size``); splits of ``split_size`` are cut
    while more than 1.1 split sizes remain (``SPLIT_SLOP``), the rest is the last split.
    So a DFS file gives one split per block (unless ``min_partitions`` asks for more),
    with the last block folded into the one before it when it is under a tenth of a
    block, exactly as Hadoop. An empty file gives one split of length 0 (as Hadoop and
    Spark: ``sc.textFile`` of an empty file has one empty partition). Compressed files
    (``.gz``, ``.bz2``) are not split: one split per file (Hadoop splits bzip2; we do not).
    A DFS split's ``hosts`` are the node ids holding its bytes, most bytes first (for a
    split inside one block: that block's replicas), at most as many as the replication;
    ``racks[i]`` is the rack of ``hosts[i]``.

Lines (``read_split_lines``), as Hadoop's ``LineRecordReader``
    A split ``[s, e)`` with ``s > 0`` first skips up to and including the first ``\\n`` at
    or after ``s``; it then yields every line that starts at or before ``e`` (the last
    one is the line holding the first ``\\n`` at or after ``e``). Every line of a file is
    thus read by exactly one split. Lines are decoded as UTF-8 (``errors="replace"``), lose
    their ``\\n`` and one trailing ``\\r``; a file's final ``\\n`` does not start an empty
    line; a UTF-8 byte-order mark at the start of a file is dropped (as Hadoop 2.8+).
    Unlike Hadoop, a lone ``\\r`` does not end a line. Compressed files are decompressed as
    one stream (concatenated gzip members included).
    ``read_split_chunks`` gives the same lines undecoded, ``\\n``-ended, in large chunks
    (the input of a Hadoop Streaming mapper).

Writing (the output committer and partition writers) is in :mod:`shoal.compute.committer`.
"""

from __future__ import annotations

import bz2
import gzip
import io
import os
from collections.abc import Iterator
from contextlib import closing
from itertools import chain
from typing import IO, Any

import msgspec

from shoal.compute import serde
from shoal.compute.input_paths import (
    _codec, _parse, _target, dfs_client_for, display_path, resolve_input,
)

MiB = 1024 * 1024
LOCAL_BLOCK_BYTES = 32 * MiB  # Hadoop's fs.local.block.size: the split size cap for local files
SPLIT_SLOP = 1.1  # Hadoop: the last split may be up to 10% larger than the split size
READ_CHUNK_BYTES = 1 * MiB  # 1 MiB: decode+split of a chunk stays in the CPU caches (~1.5x faster than 4 MiB)
TAIL_CHUNK_BYTES = 64 * 1024  # first read past a split's end, for the line that crosses it
TEXT_BATCH_RECORDS = 8192
BOM = b"\xef\xbb\xbf"
TEMPORARY = "_temporary"
SUCCESS = "_SUCCESS"


class FileSplit(msgspec.Struct, frozen=True):
    """A byte range of one input file, and where its bytes are."""

    path: str  # reader form: an absolute local path, or shoal://[HOST:PORT]/abs/path
    start: int
    length: int
    file_length: int
    hosts: list[str] = []  # node ids holding the range (DFS), most bytes first; [] for local files
    racks: list[str] = []  # racks[i] is the rack of hosts[i]
    cluster: str | None = None  # the cluster of a shoal:// path (None: the default)




def _split_hosts(located: list[Any], file_length: int, start: int, length: int) -> tuple[list[str], list[str]]:
    """Hosts holding the most bytes of ``[start, start+length)`` (at most as many as the
    replication), and their racks."""
    if not located:
        return [], []
    end = start + length if length else start + 1
    weight: dict[str, int] = {}
    racks: dict[str, str] = {}
    most = 0
    for i, lb in enumerate(located):
        b_start = lb.block.offset
        b_end = located[i + 1].block.offset if i + 1 < len(located) else max(file_length, b_start + max(lb.block.length, 0))
        overlap = min(end, b_end) - max(start, b_start)
        if overlap <= 0:
            continue
        most = max(most, len(lb.locations))
        for node in lb.locations:
            weight[node.node_id] = weight.get(node.node_id, 0) + overlap
            racks.setdefault(node.node_id, node.rack)
    order = sorted(weight, key=lambda n: -weight[n])[: max(most, 1)]  # stable: nearest first on ties
    return order, [racks[n] for n in order]


def _file_splits(
    url: str, size: int, goal: int, cluster: str | None, splittable: bool, dfs_block: tuple[int, list[Any]] | None
) -> list[FileSplit]:
    block_size, located = dfs_block if dfs_block is not None else (LOCAL_BLOCK_BYTES, [])

    def make(start: int, length: int) -> FileSplit:
        hosts, racks = _split_hosts(located, size, start, length)
        return FileSplit(url, start, length, size, hosts, racks, cluster)

    if size == 0 or not splittable:
        return [make(0, size)]
    split_size = max(1, min(goal, block_size))
    splits, offset, remaining = [], 0, size
    while remaining / split_size > SPLIT_SLOP:
        splits.append(make(offset, split_size))
        offset += split_size
        remaining -= split_size
    if remaining:
        splits.append(make(offset, remaining))
    return splits


def _make_splits(
    files: list[tuple[str, int]], min_partitions: int, cluster: str | os.PathLike | None, text: bool
) -> list[FileSplit]:
    target = _target(cluster)
    infos: list[tuple[str, int, tuple[int, list[Any]] | None]] = []
    for url, size in files:
        loc = _parse(url)
        if loc.dfs:
            blocks = dfs_client_for(loc.authority, cluster).blocks(loc.path)
            infos.append((url, blocks.status.length, (blocks.status.block_size, blocks.blocks)))
        else:
            infos.append((url, size, None))
    total = sum(size for _, size, _ in infos)
    goal = total // max(min_partitions, 1)
    splits: list[FileSplit] = []
    for url, size, dfs_block in infos:
        splittable = text and _codec(url) is None
        splits.extend(_file_splits(url, size, goal, target if dfs_block else None, splittable, dfs_block))
    return splits


def text_splits(
    path: str, min_partitions: int, *, cluster: str | os.PathLike | None = None, recursive: bool = False
) -> list[FileSplit]:
    """Hadoop ``FileInputFormat`` splits of the input files (see the module docstring)."""
    return _make_splits(resolve_input(path, cluster=cluster, recursive=recursive), min_partitions, cluster, True)


def pickle_splits(
    path: str, min_partitions: int = 1, *, cluster: str | os.PathLike | None = None, recursive: bool = False
) -> list[FileSplit]:
    """``pickleFile`` partitions: one whole-file split per part file (batches are not cut);
    ``min_partitions`` is accepted for Spark's signature and does not split files."""
    return _make_splits(resolve_input(path, cluster=cluster, recursive=recursive), min_partitions, cluster, False)


# --- reading -------------------------------------------------------------------------------
def open_input(path: str, cluster: str | os.PathLike | None = None) -> IO[bytes]:
    """A seekable binary reader of a file (reader or display form), unbuffered."""
    loc = _parse(path)
    if loc.dfs:
        return dfs_client_for(loc.authority, cluster).open(loc.path, "rb")
    return open(loc.path, "rb", buffering=0)


class _Decompressed(io.RawIOBase):
    """A decompressing reader that closes the raw file it reads."""

    def __init__(self, codec: str, raw: IO[bytes]) -> None:
        super().__init__()
        self.raw = raw
        buffered = io.BufferedReader(raw, READ_CHUNK_BYTES) if isinstance(raw, io.RawIOBase) else raw
        self.stream: IO[bytes] = (
            gzip.GzipFile(fileobj=buffered, mode="rb") if codec == "gzip" else bz2.BZ2File(buffered, "rb")
        )

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        return self.stream.read(size)

    def readinto(self, b: Any) -> int:  # type: ignore[override]
        return self.stream.readinto(b)

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            self.raw.close()
            super().close()


def _line_segments(
    read: Any, pos: int, end: int | None, skip_first: bool
) -> Iterator[tuple[bytes | None, bytes | memoryview | None]]:
    """The lines read through ``read(n)`` from absolute position ``pos``, as raw bytes:
    one ``(head, body)`` pair per read chunk (the one boundary rule of this module).

    ``head`` is the line that started in earlier chunks and ends in this one; ``body`` the
    whole lines that start in this chunk; either may be ``None``. Both are ``\\n``-ended
    lines with ``\\r\\n`` turned into ``\\n`` (only whole lines are looked at, so a
    ``\\r\\n`` is never split); the last line of the stream gets a ``\\n`` (and loses one
    trailing ``\\r``) if it has none. ``body`` may be a view of the chunk (not a copy).

    With ``skip_first``, everything up to and including the first ``\\n`` is dropped.
    With ``end``, lines starting after ``end`` are not read (the last line is the one
    holding the first ``\\n`` at or after ``end``); ``None`` reads to the end of the stream.
    """
    carry: list[bytes] = []  # the start of a line crossing chunks (holds no '\n')
    tail = TAIL_CHUNK_BYTES
    first = pos == 0 and not skip_first
    while True:
        if end is None:
            want = READ_CHUNK_BYTES
        elif pos < end:
            want = min(READ_CHUNK_BYTES, end - pos + TAIL_CHUNK_BYTES)
        else:
            want, tail = tail, min(tail * 2, READ_CHUNK_BYTES)
        data = read(want)
        if not data:
            break
        off = 0
        if first:
            first = False
            while len(data) < len(BOM) and BOM.startswith(data) and (more := read(len(BOM) - len(data))):
                data += more
            if data.startswith(BOM):
                off = len(BOM)
        base, n = pos, len(data)
        pos += n
        if skip_first:
            i = data.find(b"\n")
            if i < 0:
                continue
            off, skip_first = i + 1, False
            if end is not None and base + off > end:
                return
        done = False
        last = -1
        if end is not None and end - base < n:
            last = data.find(b"\n", max(off, end - base))
            done = last >= 0
        if not done:
            last = data.rfind(b"\n", off)
        if last < 0:
            if off < n:
                carry.append(data[off:] if off else data)
            continue
        head: bytes | None = None
        if carry:
            nl = data.find(b"\n", off)
            carry.append(data[off : nl + 1])
            head = b"".join(carry)
            carry = []
            if head.endswith(b"\r\n"):
                head = head[:-2] + b"\n"
            off = nl + 1
        body: bytes | memoryview | None = None
        if off <= last:
            if data.find(b"\r", off, last) >= 0:
                body = data[off : last + 1].replace(b"\r\n", b"\n")
            else:
                body = memoryview(data)[off : last + 1] if off or last + 1 < n else data
        yield head, body
        if done:
            return
        if last + 1 < n:
            carry.append(data[last + 1 :])
    if carry:
        head = b"".join(carry)
        yield (head[:-1] if head.endswith(b"\r") else head) + b"\n", None


def _split_segments(split: FileSplit) -> Iterator[tuple[bytes | None, bytes | memoryview | None]]:
    """``_line_segments`` of a split's file, which is closed when the iteration ends."""
    codec = _codec(split.path)
    if codec is not None and split.start > 0:
        return
    f = open_input(split.path, split.cluster)
    try:
        if codec is not None:
            stream = _Decompressed(codec, f)
            f = stream
            yield from _line_segments(stream.read, 0, None, False)
        else:
            if split.start:
                f.seek(split.start)
            yield from _line_segments(f.read, split.start, split.start + split.length, split.start > 0)
    finally:
        f.close()


def read_split_line_batches(split: FileSplit) -> Iterator[list[str]]:
    """The lines of a split (see the module docstring), in lists of one read chunk each."""
    with closing(_split_segments(split)) as segments:  # closes the file if the caller stops early
        yield from _decoded_batches(segments)


def _decoded_batches(segments: Iterator[tuple[bytes | None, bytes | memoryview | None]]) -> Iterator[list[str]]:
    """The lines of each ``(head, body)`` segment as one list of str (UTF-8, replaced)."""
    for head, body in segments:
        batch: list[str] = []
        if head is not None:
            batch.append(str(memoryview(head)[:-1], "utf-8", "replace"))
        if body is not None:
            # '\n' is ASCII, never inside a UTF-8 sequence: decoding whole lines at once
            # gives what decoding each line would
            lines = str(memoryview(body)[:-1], "utf-8", "replace").split("\n")
            if batch:
                batch.extend(lines)
            else:
                batch = lines
        yield batch


def read_split_lines(split: FileSplit) -> Iterator[str]:
    """The lines of a split, with Hadoop ``LineRecordReader``'s boundary rule."""
    return chain.from_iterable(read_split_line_batches(split))


def read_split_chunks(split: FileSplit) -> Iterator[bytes]:
    """The lines of a split as raw bytes (what Hadoop Streaming pipes to a mapper).

    Each chunk holds whole lines, about one read chunk of them, each ending with
    ``\\n``: ``\\r\\n`` becomes ``\\n``, the file's last line gets a ``\\n`` if it has
    none, a BOM at the start of the file is dropped, and nothing is decoded. So the
    lines are those of ``read_split_lines`` (for UTF-8 input), encoded again.
    """
    with closing(_split_segments(split)) as segments:
        for head, body in segments:
            if body is None:
                if head is not None:
                    yield head
            elif head is None:
                yield body if isinstance(body, bytes) else body.tobytes()
            else:
                yield b"".join((head, body))


def whole_text_files(
    path: str, min_partitions: int, *, cluster: str | os.PathLike | None = None, recursive: bool = False
) -> list[list[tuple[str, int]]]:
    """``wholeTextFiles`` partitions: consecutive input files (in path order) grouped to
    about ``total_size / min_partitions`` bytes each (Spark's CombineFileInputFormat max
    split size). Each file is ``(display path, size)``: ``file:/abs/path`` for a local
    file, ``shoal://...`` for a DFS one, as the records' keys; no file is cut."""
    files = resolve_input(path, cluster=cluster, recursive=recursive)
    if not files:
        return []
    total = sum(size for _, size in files)
    target = max(1, -(-total // max(min_partitions, 1)))
    groups: list[list[tuple[str, int]]] = []
    current: list[tuple[str, int]] = []
    current_size = 0
    for url, size in files:
        current.append((display_path(url), size))
        current_size += size
        if current_size >= target:
            groups.append(current)
            current, current_size = [], 0
    if current:
        groups.append(current)
    return groups


def read_whole_file(path: str, cluster: str | os.PathLike | None = None) -> str:
    """A whole file decoded as UTF-8 (``errors="replace"``); ``.gz``/``.bz2`` decompressed."""
    f = open_input(path, cluster)
    codec = _codec(_parse(path).path)
    if codec is not None:
        f = _Decompressed(codec, f)
    with f:
        return str(f.read() if codec else _read_all(f), "utf-8", "replace")


def _read_all(f: IO[bytes]) -> bytes:
    parts = []
    while chunk := f.read(READ_CHUNK_BYTES):
        parts.append(chunk)
    return b"".join(parts)


def read_pickle_batches(split: FileSplit) -> Iterator[list]:
    """The record batches of a ``saveAsPickleFile`` part file (a whole-file split)."""
    if split.start > 0:
        return
    raw = open_input(split.path, split.cluster)
    with io.BufferedReader(raw, READ_CHUNK_BYTES) as f:  # type: ignore[arg-type]
        yield from serde.read_batches(f)


def read_pickle_file(split: FileSplit) -> Iterator[Any]:
    """The records of a ``saveAsPickleFile`` part file, in the order they were written."""
    return chain.from_iterable(read_pickle_batches(split))


# --- writing -------------------------------------------------------------------------------
