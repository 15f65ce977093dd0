"""DFS path validation: only canonical absolute paths get through."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.dfs import paths
from shoal.errors import InvalidPath


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("/", "/"),
        ("/a", "/a"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b"),
        ("/a:b/c d/é", "/a:b/c d/é"),
        ("/.hidden/..dots/a.b", "/.hidden/..dots/a.b"),
    ],
)
def test_normalize_accepts_canonical_absolute_paths(raw: str, canonical: str) -> None:
    assert paths.normalize(raw) == canonical


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("a/b", "absolute"),
        ("./a", "absolute"),
        ("//", "empty segment"),
        ("/a//b", "empty segment"),
        ("/a/b//", "empty segment"),
        ("/a/./b", "'.'"),
        ("/a/../b", "'..'"),
        ("/..", "'..'"),
        ("/a/.", "'.'"),
        ("/a\x00b", "NUL"),
        ("/" + "x" * (paths.COMPONENT_CHARS_MAX + 1), "segment"),
        ("/" + "/".join(["abcdefg"] * 1001), "limit"),
    ],
)
def test_normalize_refuses_bad_paths_naming_path_and_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPath) as info:
        paths.normalize(raw)
    message = str(info.value)
    assert reason in message
    assert repr(raw[:20])[:-1] in message or raw[:20] in message


def test_normalize_refuses_non_strings() -> None:
    with pytest.raises(InvalidPath):
        paths.normalize(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidPath):
        paths.normalize(b"/a")  # type: ignore[arg-type]


def test_limits_are_inclusive() -> None:
    longest_segment = "/" + "x" * paths.COMPONENT_CHARS_MAX
    assert paths.normalize(longest_segment) == longest_segment
    longest_path = "/" + "/".join(["y" * 99] * 80)
    longest_path = longest_path[: paths.PATH_CHARS_MAX]
    if longest_path.endswith("/"):
        longest_path = longest_path[:-1] + "z"
    assert len(longest_path) == paths.PATH_CHARS_MAX
    assert paths.normalize(longest_path) == longest_path
    with pytest.raises(InvalidPath):
        paths.normalize(longest_path + "z")


def test_split_parent_basename_join() -> None:
    assert paths.split("/") == []
    assert paths.split("/a/b/") == ["a", "b"]
    assert paths.parent("/") == "/"
    assert paths.parent("/a") == "/"
    assert paths.parent("/a/b/c") == "/a/b"
    assert paths.basename("/") == ""
    assert paths.basename("/a/b") == "b"
    assert paths.join("/", "a") == "/a"
    assert paths.join("/a/b", "c") == "/a/b/c"
    for bad in ("", "x/y", "..", ".", "a\x00"):
        with pytest.raises(InvalidPath):
            paths.join("/a", bad)
    with pytest.raises(InvalidPath):
        paths.split("relative")


def test_is_ancestor_works_on_whole_components() -> None:
    assert paths.is_ancestor("/", "/")
    assert paths.is_ancestor("/", "/a/b")
    assert paths.is_ancestor("/a", "/a")
    assert paths.is_ancestor("/a", "/a/b/c")
    assert paths.is_ancestor("/a/", "/a/b")
    assert not paths.is_ancestor("/a", "/ab")
    assert not paths.is_ancestor("/a/b", "/a")
    assert not paths.is_ancestor("/a", "/b/a")


_segment = st.text(
    alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(_segment, max_size=6), st.booleans())
def test_normalize_is_idempotent_and_split_join_round_trip(segments: list[str], slash: bool) -> None:
    raw = "/" + "/".join(segments) + ("/" if slash and segments else "")
    path = paths.normalize(raw)
    assert paths.normalize(path) == path
    assert paths.split(path) == segments
    rebuilt = "/"
    for segment in segments:
        rebuilt = paths.join(rebuilt, segment)
    assert rebuilt == path
    if segments:
        assert paths.join(paths.parent(path), paths.basename(path)) == path
        assert paths.is_ancestor(paths.parent(path), path)
        assert not paths.is_ancestor(path, paths.parent(path))
