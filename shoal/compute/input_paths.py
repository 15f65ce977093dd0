"""Naming and listing the inputs of compute jobs, local and on the DFS.

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
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Iterator
from typing import Any, NamedTuple

from shoal.errors import FileNotFound, InvalidPath, IsADirectory, NotADirectory

COMPRESSED_SUFFIXES = {".gz": "gzip", ".bz2": "bz2"}
HIDDEN_PREFIXES = ("_", ".")
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
