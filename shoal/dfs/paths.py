"""DFS path validation and manipulation (pure).

Every path that reaches the namespace goes through :func:`normalize` first, so the
rest of the DFS only ever sees absolute, canonical paths: ``"/"`` or ``"/a/b"`` with
no empty, ``.`` or ``..`` segments and no NUL byte. Mirrors HDFS's
``DFSUtil.isValidName`` (which also rejects ``.``/``..`` segments rather than
resolving them, so a path can never escape or alias another).
"""

from __future__ import annotations

from shoal.errors import InvalidPath

PATH_CHARS_MAX = 8000
COMPONENT_CHARS_MAX = 255

ROOT = "/"


def normalize(path: str) -> str:
    """Return the canonical form of an absolute DFS path, or raise ``InvalidPath``.

    A single trailing slash is dropped (``"/a/b/"`` -> ``"/a/b"``); anything else
    that is not already canonical is refused rather than silently rewritten.
    """
    if not isinstance(path, str):
        raise InvalidPath(f"path {path!r}: must be a string, not {type(path).__name__}")
    if path == "":
        raise InvalidPath("path '': must not be empty")
    if len(path) > PATH_CHARS_MAX:
        raise InvalidPath(
            f"path {path[:64]!r}...: {len(path)} characters, over the limit of {PATH_CHARS_MAX}"
        )
    if "\x00" in path:
        raise InvalidPath(f"path {path!r}: contains a NUL character")
    if not path.startswith("/"):
        raise InvalidPath(f"path {path!r}: must be absolute (start with '/')")
    if path == ROOT:
        return ROOT
    body = path[1:-1] if path.endswith("/") else path[1:]
    for segment in body.split("/"):
        if segment == "":
            raise InvalidPath(f"path {path!r}: has an empty segment ('//')")
        if segment in (".", ".."):
            raise InvalidPath(f"path {path!r}: has a {segment!r} segment")
        if len(segment) > COMPONENT_CHARS_MAX:
            raise InvalidPath(
                f"path {path!r}: segment {segment[:32]!r}... has {len(segment)} characters, "
                f"over the limit of {COMPONENT_CHARS_MAX}"
            )
    return "/" + body


def split(path: str) -> list[str]:
    """Components of a path (``[]`` for ``"/"``)."""
    path = normalize(path)
    return [] if path == ROOT else path[1:].split("/")


def parent(path: str) -> str:
    """The parent directory of a path; the root is its own parent."""
    path = normalize(path)
    if path == ROOT:
        return ROOT
    head = path.rsplit("/", 1)[0]
    return head or ROOT


def basename(path: str) -> str:
    """The last component of a path (``""`` for ``"/"``)."""
    path = normalize(path)
    return path.rsplit("/", 1)[1]


def join(directory: str, name: str) -> str:
    """The path of entry ``name`` inside ``directory``; ``name`` must be one component."""
    directory = normalize(directory)
    if "/" in name:
        raise InvalidPath(f"name {name!r}: must be a single path component (no '/')")
    joined = directory + name if directory == ROOT else f"{directory}/{name}"
    if name == "":
        raise InvalidPath(f"path {joined!r}: has an empty segment")
    return normalize(joined)


def is_ancestor(a: str, b: str) -> bool:
    """True when ``a`` is ``b`` or a proper ancestor of it (by whole components)."""
    a, b = normalize(a), normalize(b)
    if a == b or a == ROOT:
        return True
    return b.startswith(a + "/")
