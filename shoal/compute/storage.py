"""Reading and writing the files of compute jobs: Hadoop's FileInputFormat /
LineRecordReader / FileOutputCommitter semantics on local files and on the DFS.

Paths
    A path without a scheme (absolute or relative), or ``file:/abs``, ``file:///abs``,
    ``file://localhost/abs``, is a local file. ``shoal:///a/b`` (or ``shoal://a/b``, the
    fsspec form, or ``shoal://HOST:PORT/a/b``) is a DFS file. The DFS client is the shared
    one of :func:`shoal.dfs.fsspec.dfs_client`: the cluster is the ``cluster=`` argument,
    else the one given to :func:`set_default_cluster`, else ``$SHOAL_CLUSTER``; a
    ``HOST:PORT`` authority picks that master (its secret from the default cluster when it
    names the same master, else ``$SHOAL_SECRET``/``$SHOAL_SECRET_FILE``). Splits and the
    committer carry the cluster they were made for, so executors reach the same one.

    Inside the engine files are named in *reader form*: an absolute local path, or
    ``shoal://[HOST:PORT]/abs/path``. :func:`display_path` gives the form Spark prints
    (``file:/abs/path`` for local files), used as the keys of ``wholeTextFiles``.

Inputs (``resolve_input``), as Hadoop's ``FileInputFormat.listStatus``
    A comma-separated list (commas inside ``{...}`` do not separate) of paths or globs.
    Globs: ``*``, ``?``, ``[abc]``, ``[a-z]``, ``[!a]``/``[^a]`` and ``{a,b}`` in any
    component, local and DFS (a glob matching nothing falls back to the literal name, so
    ``a[1].txt`` is found). A glob's matches whose name starts with ``_`` or ``.`` are
    dropped; a directory (named or matched) stands for the files directly inside it,
    minus those hidden names. A subdirectory inside an input directory is an error
    ("not a file", as Hadoop) unless ``recursive=True``, which descends into it (skipping
    hidden directories too). Each list entry's files are sorted by path; entries keep
    their order and nothing is deduplicated across entries (as Hadoop). A path or glob
    that matches nothing raises :class:`~shoal.errors.FileNotFound` ("input path does not
    exist: ..."), naming every missing entry; an existing directory with no visible file
    gives no input at all (not an error).

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

Outputs (``OutputCommitter``), as Hadoop's ``FileOutputCommitter`` (algorithm 1)
    ``setup_job`` refuses an existing output path (or deletes it with ``overwrite``) and
    makes ``<out>/_temporary``; a task attempt writes
    ``<out>/_temporary/attempt_<partition>_<attempt>/part-NNNNN<ext>``; ``commit_task``
    moves it to ``<out>/part-NNNNN<ext>`` with a rename that never replaces (DFS rename;
    ``link`` + ``unlink`` locally), so the first attempt to commit wins and later ones get
    ``False`` (their output is deleted); ``commit_job`` removes ``_temporary`` and writes an
    empty ``_SUCCESS``; ``abort_job`` only removes ``_temporary``.
"""

from __future__ import annotations

import bz2
import errno
import fnmatch
import gzip
import io
import os
import re
import shutil
import stat
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from typing import IO, Any, NamedTuple

import msgspec

from shoal.compute import serde
from shoal.errors import FileAlreadyExists, FileNotFound, InvalidPath, IsADirectory, NotADirectory

MiB = 1024 * 1024
LOCAL_BLOCK_BYTES = 32 * MiB  # Hadoop's fs.local.block.size: the split size cap for local files
SPLIT_SLOP = 1.1  # Hadoop: the last split may be up to 10% larger than the split size
READ_CHUNK_BYTES = 1 * MiB  # 1 MiB: decode+split of a chunk stays in the CPU caches (~1.5x faster than 4 MiB)
TAIL_CHUNK_BYTES = 64 * 1024  # first read past a split's end, for the line that crosses it
TEXT_BATCH_RECORDS = 8192
COMPRESSED_SUFFIXES = {".gz": "gzip", ".bz2": "bz2"}
BOM = b"\xef\xbb\xbf"
HIDDEN_PREFIXES = ("_", ".")
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


# --- clusters ------------------------------------------------------------------------------
_default_cluster: str | None = None


def set_default_cluster(cluster: str | os.PathLike | None) -> None:
    """The cluster (folder or ``shoal://HOST:PORT``) that ``shoal://`` paths name when a
    call gives none; ``None`` goes back to ``$SHOAL_CLUSTER``."""
    global _default_cluster
    _default_cluster = os.fspath(cluster) if cluster is not None else None


def _target(cluster: str | os.PathLike | None) -> str | None:
    if cluster is not None:
        return os.fspath(cluster)
    return _default_cluster


def dfs_client_for(authority: str = "", cluster: str | os.PathLike | None = None) -> Any:
    """The shared DFS client for a ``shoal://`` path's authority (``""`` or ``HOST:PORT``)."""
    from shoal.cluster.local import resolve
    from shoal.dfs.fsspec import dfs_client
    from shoal.errors import ClusterNotFound

    target = _target(cluster)
    if authority:
        try:
            address = resolve(target)
            if f"{address.master[0]}:{address.master[1]}" == authority:
                return dfs_client(target, address.secret)
        except ClusterNotFound:
            pass
        return dfs_client(f"shoal://{authority}")
    return dfs_client(target)


# --- paths ---------------------------------------------------------------------------------
class _Loc(NamedTuple):
    dfs: bool
    authority: str  # DFS only: "" or "HOST:PORT"
    path: str  # absolute; may hold glob characters

    def url(self, path: str | None = None) -> str:
        """Reader form of ``path`` (default: this location's path)."""
        path = self.path if path is None else path
        return f"shoal://{self.authority}{path}" if self.dfs else path

    def display(self, path: str | None = None) -> str:
        path = self.path if path is None else path
        return self.url(path) if self.dfs else "file:" + path


_HOSTPORT = re.compile(r"^[^/:@]+:\d+$")


def _parse(path: str) -> _Loc:
    if not isinstance(path, str) or not path:
        raise InvalidPath(f"input path {path!r}: must be a non-empty string")
    if path.startswith("shoal:"):
        rest = path[len("shoal:") :]
        authority = ""
        if rest.startswith("//"):
            rest = rest[2:]
            if not rest.startswith("/"):
                head, _, tail = rest.partition("/")
                if _HOSTPORT.match(head):
                    authority, rest = head, "/" + tail
                else:
                    rest = "/" + rest  # shoal://a/b is /a/b (the fsspec form)
        elif not rest.startswith("/"):
            rest = "/" + rest
        rest = re.sub("/+", "/", rest)
        if len(rest) > 1 and rest.endswith("/"):
            rest = rest[:-1]
        return _Loc(True, authority, rest)
    if path.startswith("file:"):
        path = path[len("file:") :]
        if path.startswith("//"):
            path = path[2:]
            if not path.startswith("/"):  # file://localhost/abs
                path = "/" + path.partition("/")[2]
    return _Loc(False, "", os.path.abspath(path))


def display_path(path: str) -> str:
    """The form Spark prints a file in: ``file:/abs/path`` or ``shoal://...``."""
    loc = _parse(path)
    return loc.display()


def _is_hidden(name: str) -> bool:
    return name.startswith(HIDDEN_PREFIXES)


def _codec(path: str) -> str | None:
    for suffix, codec in COMPRESSED_SUFFIXES.items():
        if path.endswith(suffix):
            return codec
    return None


def _split_commas(text: str) -> list[str]:
    """Hadoop's ``getPathStrings``: split at commas outside ``{...}``."""
    parts, depth, last = [], 0, 0
    for i, c in enumerate(text):
        if c == "{":
            depth += 1
        elif c == "}" and depth:
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[last:i])
            last = i + 1
    parts.append(text[last:])
    return [p.strip() for p in parts if p.strip()]


def _expand_braces(pattern: str) -> list[str]:
    """``a{b,c{d,e}}f`` -> ``abf, acdf, acef`` (unbalanced braces stay literal)."""
    start = pattern.find("{")
    while start >= 0:
        depth, last, alts = 0, start + 1, []
        for i in range(start, len(pattern)):
            c = pattern[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    alts.append(pattern[last:i])
                    head, tail = pattern[:start], pattern[i + 1 :]
                    out: list[str] = []
                    for alt in alts:
                        out.extend(_expand_braces(head + alt + tail))
                    return out
            elif c == "," and depth == 1:
                alts.append(pattern[last:i])
                last = i + 1
        start = pattern.find("{", start + 1)
    return [pattern]


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def _compile_glob(component: str) -> re.Pattern[str]:
    # Hadoop accepts [^...] as well as [!...] for a negated class; fnmatch only [!...].
    return re.compile(fnmatch.translate(component.replace("[^", "[!")))


# --- file systems --------------------------------------------------------------------------
class _Entry(NamedTuple):
    path: str
    name: str
    is_dir: bool
    size: int


class _LocalFS:
    def stat(self, path: str) -> _Entry | None:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return _Entry(path, os.path.basename(path), stat.S_ISDIR(st.st_mode), st.st_size)

    def list(self, path: str) -> list[_Entry]:
        out = []
        try:
            with os.scandir(path) as it:
                for e in it:
                    try:
                        is_dir = e.is_dir()
                        size = 0 if is_dir else e.stat().st_size
                    except OSError:  # a dangling symlink, or removed meanwhile
                        continue
                    out.append(_Entry(e.path, e.name, is_dir, size))
        except (FileNotFoundError, NotADirectoryError):
            return []
        out.sort()
        return out

    @staticmethod
    def join(directory: str, name: str) -> str:
        return os.path.join(directory, name)


class _DFS:
    def __init__(self, client: Any) -> None:
        self.client = client

    @staticmethod
    def _entry(s: Any) -> _Entry:
        return _Entry(s.path, s.path.rsplit("/", 1)[-1], s.kind == "directory", s.length)

    def stat(self, path: str) -> _Entry | None:
        try:
            return self._entry(self.client.stat(path))
        except (FileNotFound, NotADirectory):
            return None

    def list(self, path: str) -> list[_Entry]:
        try:
            entries = self.client.listdir(path)
        except (FileNotFound, NotADirectory):
            return []
        return sorted(self._entry(s) for s in entries)

    @staticmethod
    def join(directory: str, name: str) -> str:
        return directory.rstrip("/") + "/" + name


def _fs(loc: _Loc, cluster: str | os.PathLike | None) -> _LocalFS | _DFS:
    return _DFS(dfs_client_for(loc.authority, cluster)) if loc.dfs else _LocalFS()


def _glob(fs: _LocalFS | _DFS, pattern: str) -> list[_Entry]:
    """Entries matching an absolute pattern, component by component."""
    comps = [c for c in pattern.split("/") if c]
    i = 0
    while i < len(comps) and not _has_magic(comps[i]):
        i += 1
    base = "/" + "/".join(comps[:i])
    if i == len(comps):
        entry = fs.stat(base)
        return [entry] if entry is not None else []
    dirs = [base]
    for j in range(i, len(comps)):
        comp, last = comps[j], j == len(comps) - 1
        if _has_magic(comp):
            rx = _compile_glob(comp)
            matched = [e for d in dirs for e in fs.list(d) if rx.match(e.name)]
            if last:
                return matched
            dirs = [e.path for e in matched if e.is_dir]
        elif last:
            return [e for d in dirs if (e := fs.stat(fs.join(d, comp))) is not None]
        else:
            dirs = [fs.join(d, comp) for d in dirs]
        if not dirs:
            return []
    return []  # unreachable


def _dir_files(fs: _LocalFS | _DFS, loc: _Loc, directory: str, recursive: bool) -> Iterator[_Entry]:
    for e in fs.list(directory):
        if _is_hidden(e.name):
            continue
        if not e.is_dir:
            yield e
        elif recursive:
            yield from _dir_files(fs, loc, e.path, recursive)
        else:
            raise IsADirectory(
                f"not a file: {loc.display(e.path)} (input directories are read without their "
                f"subdirectories, as Hadoop; name the files, use a glob, or pass recursive=True)"
            )


def resolve_input(
    path: str, *, cluster: str | os.PathLike | None = None, recursive: bool = False
) -> list[tuple[str, int]]:
    """Expand a user path (comma list, globs, directories) into ``(reader path, size)``
    pairs; see the module docstring. Raises ``FileNotFound`` naming every entry that
    matches nothing."""
    if not isinstance(path, str):
        path = os.fspath(path)
    entries = _split_commas(path)
    if not entries:
        raise FileNotFound(f"input path does not exist: {path!r}")
    out: list[tuple[str, int]] = []
    missing: list[str] = []
    for entry in entries:
        loc = _parse(entry)
        fs = _fs(loc, cluster)
        alternatives = _expand_braces(loc.path)
        is_glob = len(alternatives) > 1 or any(_has_magic(a) for a in alternatives)
        matched: dict[str, _Entry] = {}
        for alt in alternatives:
            for e in _glob(fs, alt):
                if not (is_glob and _is_hidden(e.name)):
                    matched.setdefault(e.path, e)
        if not matched and is_glob and (literal := fs.stat(loc.path)) is not None:
            matched[literal.path] = literal  # a name like "a[1].txt" that matches no pattern
        if not matched:
            missing.append(loc.display())
            continue
        files: list[_Entry] = []
        for e in matched.values():
            if e.is_dir:
                files.extend(_dir_files(fs, loc, e.path, recursive))
            else:
                files.append(e)
        files.sort()
        out.extend((loc.url(e.path), e.size) for e in files)
    if missing:
        raise FileNotFound("; ".join(f"input path does not exist: {m}" for m in missing))
    return out


# --- splits --------------------------------------------------------------------------------
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


def _line_batches(read: Any, pos: int, end: int | None, skip_first: bool) -> Iterator[list[str]]:
    """Lists of lines read through ``read(n)`` from absolute position ``pos``.

    With ``skip_first``, everything up to and including the first ``\\n`` is dropped.
    With ``end``, lines starting after ``end`` are not read (the last line is the one
    holding the first ``\\n`` at or after ``end``); ``None`` reads to the end of the stream.
    Bytes are cut at the last ``\\n`` of each chunk, so no UTF-8 sequence and no ``\\r\\n``
    is ever split; a line crossing chunks is carried over as bytes.
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
        view = memoryview(data)
        batch: list[str] = []
        if carry:
            nl = data.find(b"\n", off)
            carry.append(data[off:nl])
            head = b"".join(carry)
            carry = []
            if head.endswith(b"\r"):
                head = head[:-1]
            batch.append(str(head, "utf-8", "replace"))
            off = nl + 1
        if off <= last:
            stop = last - 1 if last > off and data[last - 1] == 13 else last  # drop the '\r' of "\r\n"
            text = str(view[off:stop], "utf-8", "replace")
            if "\r" in text:
                text = text.replace("\r\n", "\n")
            if batch:
                batch.extend(text.split("\n"))
            else:
                batch = text.split("\n")
        yield batch
        if done:
            return
        if last + 1 < n:
            carry.append(data[last + 1 :])
    if carry:
        head = b"".join(carry)
        if head.endswith(b"\r"):
            head = head[:-1]
        yield [str(head, "utf-8", "replace")]


def read_split_line_batches(split: FileSplit) -> Iterator[list[str]]:
    """The lines of a split (see the module docstring), in lists of one read chunk each."""
    codec = _codec(split.path)
    if codec is not None and split.start > 0:
        return
    f = open_input(split.path, split.cluster)
    try:
        if codec is not None:
            stream = _Decompressed(codec, f)
            f = stream
            yield from _line_batches(stream.read, 0, None, False)
        else:
            if split.start:
                f.seek(split.start)
            yield from _line_batches(f.read, split.start, split.start + split.length, split.start > 0)
    finally:
        f.close()


def read_split_lines(split: FileSplit) -> Iterator[str]:
    """The lines of a split, with Hadoop ``LineRecordReader``'s boundary rule."""
    return chain.from_iterable(read_split_line_batches(split))


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
def _encode_batch(batch: list) -> bytes:
    """Records as ``saveAsTextFile`` lines: bytes as they are, str as UTF-8, the rest str()."""
    batch.append("")
    try:
        return "\n".join(batch).encode("utf-8", "replace")
    except TypeError:
        pass
    if not any(isinstance(x, (bytes, bytearray, memoryview)) for x in batch):
        return "\n".join(map(str, batch)).encode("utf-8", "replace")
    return b"\n".join(
        bytes(x) if isinstance(x, (bytes, bytearray, memoryview)) else str(x).encode("utf-8", "replace")
        for x in batch
    )


def write_text_partition(f: IO[bytes], records: Iterable, batch_records: int = TEXT_BATCH_RECORDS) -> tuple[int, int]:
    """Write records as text lines (``str(rec) + "\\n"``, UTF-8; bytes records raw), a
    batch of ``batch_records`` per write; returns ``(records, bytes)`` written."""
    it = iter(records)
    count = written = 0
    while batch := list(islice(it, batch_records)):
        count += len(batch)
        data = _encode_batch(batch)
        f.write(data)
        written += len(data)
    return count, written


def write_pickle_partition(
    f: IO[bytes], records: Iterable, batch_records: int = serde.DEFAULT_BATCH_RECORDS
) -> tuple[int, int]:
    """``saveAsPickleFile``: framed, compressed pickled batches (``serde.write_batches``)."""
    return serde.write_batches(f, records, batch_records)


class _CompressedWriter(io.RawIOBase):
    """A compressing writer that closes the raw file under it."""

    def __init__(self, codec: str, raw: IO[bytes]) -> None:
        super().__init__()
        self.raw = raw
        self.stream: IO[bytes] = (
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) if codec == "gzip" else bz2.BZ2File(raw, "wb")
        )

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:  # type: ignore[override]
        return self.stream.write(data)

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.stream.close()
        finally:
            self.raw.close()
            super().close()


class _LocalOut:
    @staticmethod
    def exists(path: str) -> bool:
        return os.path.lexists(path)

    @staticmethod
    def delete(path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    @staticmethod
    def mkdirs(path: str) -> None:
        os.makedirs(path, exist_ok=True)

    @staticmethod
    def create(path: str) -> IO[bytes]:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return open(path, "wb")

    @staticmethod
    def create_empty(path: str, exclusive: bool) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC), 0o644)
        except FileExistsError:
            return False
        os.close(fd)
        return True

    @staticmethod
    def rename_noreplace(src: str, dst: str) -> bool:
        """Move ``src`` to ``dst`` unless ``dst`` exists (atomically: link, then unlink)."""
        try:
            os.link(src, dst)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            # No hard links here: claim the name, then replace the placeholder.
            if not _LocalOut.create_empty(dst, exclusive=True):
                return False
            os.replace(src, dst)
            return True
        os.unlink(src)
        return True


class _DFSOut:
    def __init__(self, client: Any, replication: int | None, block_size: int | None) -> None:
        self.client = client
        self.replication = replication
        self.block_size = block_size

    def exists(self, path: str) -> bool:
        return self.client.exists(path)

    def delete(self, path: str) -> None:
        try:
            self.client.delete(path, recursive=True)
        except FileNotFound:
            pass

    def mkdirs(self, path: str) -> None:
        self.client.mkdirs(path)

    def create(self, path: str) -> IO[bytes]:
        return self.client.open(path, "wb", overwrite=True, replication=self.replication, block_size=self.block_size)

    def create_empty(self, path: str, exclusive: bool) -> bool:
        try:
            self.client.open(path, "wb", overwrite=not exclusive, replication=self.replication).close()
        except FileAlreadyExists:
            return False
        return True

    def rename_noreplace(self, src: str, dst: str) -> bool:
        try:
            self.client.rename(src, dst)  # HDFS rename never replaces a file
        except FileAlreadyExists:
            return False
        return True


class OutputCommitter:
    """Hadoop ``FileOutputCommitter`` for ``saveAsTextFile`` / ``saveAsPickleFile``.

    Picklable: only the path and options are pickled; the file system (a DFS client)
    is found again lazily in each process. ``extension`` is appended to part names
    (``part-00000.txt``); ``codec`` (``"gzip"`` or ``"bz2"``) compresses each part and
    defaults the extension to ``.gz``/``.bz2``, which the readers decompress.
    """

    def __init__(
        self,
        path: str,
        overwrite: bool = False,
        *,
        extension: str = "",
        codec: str | None = None,
        cluster: str | os.PathLike | None = None,
        replication: int | None = None,
        block_size: int | None = None,
    ) -> None:
        if codec not in (None, "gzip", "bz2"):
            raise ValueError(f"unsupported output codec {codec!r}: use 'gzip' or 'bz2'")
        self.path = path
        self.overwrite = overwrite
        self.codec = codec
        self.extension = extension or {"gzip": ".gz", "bz2": ".bz2", None: ""}[codec]
        self.cluster = _target(cluster)
        self.replication = replication
        self.block_size = block_size
        self._loc = _parse(path)
        self._out: _LocalOut | _DFSOut | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_out"] = None
        return state

    def __repr__(self) -> str:
        return f"OutputCommitter({self._loc.display()!r})"

    # --- paths ---
    @property
    def output_path(self) -> str:
        """The output directory in reader form."""
        return self._loc.url()

    def _join(self, *names: str) -> str:
        return "/".join([self._loc.path.rstrip("/"), *names])

    def part_name(self, partition: int) -> str:
        return f"part-{partition:05d}{self.extension}"

    def _attempt_dir(self, partition: int, attempt_id: Any) -> str:
        return self._join(TEMPORARY, f"attempt_{partition:05d}_{attempt_id}")

    def task_output_path(self, partition: int, attempt_id: Any) -> str:
        return self._attempt_dir(partition, attempt_id) + "/" + self.part_name(partition)

    def _fs(self) -> _LocalOut | _DFSOut:
        if self._out is None:
            if self._loc.dfs:
                client = dfs_client_for(self._loc.authority, self.cluster)
                self._out = _DFSOut(client, self.replication, self.block_size)
            else:
                self._out = _LocalOut()
        return self._out

    # --- driver ---
    def setup_job(self) -> None:
        """Refuse an existing output (or delete it with ``overwrite``); make ``_temporary``."""
        fs = self._fs()
        if fs.exists(self._loc.path):
            if not self.overwrite:
                raise FileAlreadyExists(f"output directory {self._loc.display()} already exists")
            fs.delete(self._loc.path)
        fs.mkdirs(self._join(TEMPORARY))

    def commit_job(self) -> None:
        """Remove ``_temporary`` and mark the output complete with an empty ``_SUCCESS``."""
        fs = self._fs()
        fs.delete(self._join(TEMPORARY))
        fs.create_empty(self._join(SUCCESS), exclusive=False)

    def abort_job(self) -> None:
        """Remove ``_temporary`` (committed parts stay, as Hadoop); no ``_SUCCESS``."""
        self._fs().delete(self._join(TEMPORARY))

    # --- executors ---
    def open_task_output(self, partition: int, attempt_id: Any) -> IO[bytes]:
        """A new binary file for one task attempt's output (closed by the caller before
        :meth:`commit_task`)."""
        raw = self._fs().create(self.task_output_path(partition, attempt_id))
        return _CompressedWriter(self.codec, raw) if self.codec else raw

    def commit_task(self, partition: int, attempt_id: Any) -> bool:
        """Publish the attempt's output as ``part-NNNNN``; ``False`` (and its output
        deleted) if another attempt of the partition committed first. An attempt that
        wrote nothing publishes an empty part."""
        fs = self._fs()
        src = self.task_output_path(partition, attempt_id)
        dst = self._join(self.part_name(partition))
        won = False
        try:
            if fs.exists(src):
                won = fs.rename_noreplace(src, dst)
            elif fs.exists(dst):
                won = False
            elif not fs.exists(self._join(TEMPORARY)):
                raise FileNotFound(f"commit of {src}: the job's {TEMPORARY} directory is gone (job aborted?)")
            else:
                won = fs.create_empty(dst, exclusive=True)
            return won
        finally:
            fs.delete(self._attempt_dir(partition, attempt_id))
            if not won and fs.exists(self._join(SUCCESS)):
                fs.delete(self._join(TEMPORARY))  # a late attempt after commit_job: leave no _temporary

    def abort_task(self, partition: int, attempt_id: Any) -> None:
        """Delete a failed attempt's output."""
        self._fs().delete(self._attempt_dir(partition, attempt_id))


__all__ = [
    "FileSplit",
    "OutputCommitter",
    "display_path",
    "open_input",
    "pickle_splits",
    "read_pickle_batches",
    "read_pickle_file",
    "read_split_line_batches",
    "read_split_lines",
    "read_whole_file",
    "resolve_input",
    "set_default_cluster",
    "text_splits",
    "whole_text_files",
    "write_pickle_partition",
    "write_text_partition",
]
