"""The compute engine's file I/O on local files: Hadoop's input listing and splits,
LineRecordReader's split-boundary rule, and FileOutputCommitter semantics."""

from __future__ import annotations

import bz2
import gzip
import os
import pickle
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.compute import storage
from shoal.compute.committer import OutputCommitter, write_pickle_partition, write_text_partition
from shoal.compute.storage import (
    FileSplit,
    display_path,
    pickle_splits,
    read_pickle_file,
    read_split_lines,
    read_whole_file,
    resolve_input,
    text_splits,
    whole_text_files,
)
from shoal.errors import FileAlreadyExists, FileNotFound, IsADirectory

MiB = 1024 * 1024


def reference_lines(data: bytes) -> list[str]:
    """What Hadoop's LineRecordReader yields for a whole file (lone '\\r' aside)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [(ln[:-1] if ln.endswith(b"\r") else ln).decode("utf-8", "replace") for ln in lines]


def splits_of(path: str, size: int, cuts: list[int]) -> list[FileSplit]:
    points = sorted({0, size, *(c for c in cuts if 0 < c < size)})
    return [FileSplit(path, a, b - a, size) for a, b in zip(points, points[1:])] or [FileSplit(path, 0, 0, 0)]


def read_all(splits: list[FileSplit]) -> list[str]:
    return [line for s in splits for line in read_split_lines(s)]


class small_chunks:
    """Tiny read chunks, so lines cross chunk edges everywhere."""

    def __init__(self, chunk: int, tail: int) -> None:
        self.chunk, self.tail = chunk, tail

    def __enter__(self) -> None:
        self.saved = storage.READ_CHUNK_BYTES, storage.TAIL_CHUNK_BYTES
        storage.READ_CHUNK_BYTES, storage.TAIL_CHUNK_BYTES = self.chunk, self.tail

    def __exit__(self, *exc: object) -> None:
        storage.READ_CHUNK_BYTES, storage.TAIL_CHUNK_BYTES = self.saved


# --- the split boundary rule -----------------------------------------------------------------
LINE_CHARS = st.sampled_from(["a", "b", "z", " ", "\r", "é", "€", "𝄞", "\u2028", "\x85"])
LINES = st.lists(st.text(LINE_CHARS, max_size=12), max_size=40)


@st.composite
def text_files(draw) -> bytes:
    lines = draw(LINES)
    text = ""
    for line in lines:
        text += line + draw(st.sampled_from(["\n", "\n", "\r\n"]))
    if draw(st.booleans()):  # no trailing newline
        text += draw(st.text(LINE_CHARS, min_size=1, max_size=8))
    if draw(st.integers(0, 9)) == 0:
        text = "\ufeff" + text
    return text.encode()


@settings(max_examples=400, deadline=None)
@given(
    data=text_files(),
    cuts=st.lists(st.integers(0, 600), max_size=12),
    chunk=st.integers(1, 40),
    tail=st.integers(1, 9),
)
def test_every_line_read_once_whatever_the_splits(data, cuts, chunk, tail):
    with tempfile.NamedTemporaryFile(suffix=".txt") as f:
        f.write(data)
        f.flush()
        with small_chunks(chunk, tail):
            got = read_all(splits_of(f.name, len(data), cuts))
    assert got == reference_lines(data)


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=300).map(lambda b: b.replace(b"x", b"\n")),
    cuts=st.lists(st.integers(0, 300), max_size=10),
    chunk=st.integers(1, 33),
)
def test_arbitrary_bytes_decode_with_replacement(data, cuts, chunk):
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        with small_chunks(chunk, 3):
            got = read_all(splits_of(f.name, len(data), cuts))
    assert got == reference_lines(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=text_files(), min_partitions=st.integers(1, 50))
def test_text_splits_cover_the_file(data, min_partitions):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "f.txt")
        Path(path).write_bytes(data)
        splits = text_splits(path, min_partitions)
        assert sum(s.length for s in splits) == len(data)
        assert [s.start for s in splits] == [sum(x.length for x in splits[:i]) for i in range(len(splits))]
        with small_chunks(7, 2):
            assert read_all(splits) == reference_lines(data)


def test_boundary_rule_by_hand(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(b"ab\ncd\nef\n")
    path = str(p)
    one = lambda s, e: list(read_split_lines(FileSplit(path, s, e - s, 9)))  # noqa: E731
    assert one(0, 3) == ["ab", "cd"]  # the line starting at the end belongs to this split
    assert one(3, 6) == ["ef"]  # ...and not to the next one
    assert one(6, 9) == []
    assert one(0, 2) == ["ab"]
    assert one(2, 9) == ["cd", "ef"]
    assert one(1, 2) == []  # a split inside a line reads nothing
    p.write_bytes(b"x\r\ny\r\n\r\nz\r")
    assert list(read_split_lines(FileSplit(path, 0, 10, 10))) == ["x", "y", "", "z"]


def test_long_lines_and_big_file(tmp_path):
    p = tmp_path / "big.txt"
    lines = [("%d" % i) * (i % 97) for i in range(40_000)] + ["L" * (3 * MiB)] + ["é€" * 1000] * 50
    data = ("\n".join(lines) + "\n").encode()
    p.write_bytes(data)
    splits = text_splits(str(p), 7)
    assert len(splits) == 7
    assert read_all(splits) == lines


# --- text splits -------------------------------------------------------------------------
def test_split_sizes_follow_hadoop(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"x\n" * 50)
    assert [(s.start, s.length) for s in text_splits(str(p), 3)] == [(0, 33), (33, 33), (66, 34)]
    assert [(s.start, s.length) for s in text_splits(str(p), 1)] == [(0, 100)]
    assert all(s.hosts == [] and s.racks == [] and s.file_length == 100 for s in text_splits(str(p), 3))
    # A local file's split size is capped at 32 MiB (Hadoop's local block size).
    big = tmp_path / "sparse.txt"
    with open(big, "wb") as f:
        f.truncate(70 * MiB)
    assert [s.length for s in text_splits(str(big), 1)] == [32 * MiB, 32 * MiB, 6 * MiB]
    # The goal size is over all input files.
    q = tmp_path / "b.txt"
    q.write_bytes(b"y\n" * 150)
    splits = text_splits(f"{p},{q}", 4)  # goal 400 // 4
    assert [(s.path, s.length) for s in splits] == [(str(p), 100), (str(q), 100), (str(q), 100), (str(q), 100)]


def test_empty_files_give_one_empty_split(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_bytes(b"")
    (tmp_path / "d" / "b.txt").write_bytes(b"one\ntwo")
    splits = text_splits(str(tmp_path / "d"), 2)
    assert [(Path(s.path).name, s.start, s.length) for s in splits] == [
        ("a.txt", 0, 0), ("b.txt", 0, 3), ("b.txt", 3, 3), ("b.txt", 6, 1),
    ]
    assert read_all(splits) == ["one", "two"]


def test_gzip_and_bz2_are_one_split_each(tmp_path):
    lines = [f"line {i} é" for i in range(20_000)]
    data = ("\n".join(lines) + "\n").encode()
    (tmp_path / "a.gz").write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:]))  # two members
    (tmp_path / "b.bz2").write_bytes(bz2.compress(data))
    (tmp_path / "c.txt").write_bytes(data)
    splits = text_splits(str(tmp_path), 20)
    by_file: dict[str, list[FileSplit]] = {}
    for s in splits:
        by_file.setdefault(Path(s.path).name, []).append(s)
    assert len(by_file["a.gz"]) == 1 and len(by_file["b.bz2"]) == 1 and len(by_file["c.txt"]) > 1
    assert by_file["a.gz"][0].length == (tmp_path / "a.gz").stat().st_size
    for name in ("a.gz", "b.bz2", "c.txt"):
        assert read_all(by_file[name]) == lines, name


# --- input paths -------------------------------------------------------------------------
@pytest.fixture
def tree(tmp_path) -> Path:
    """d/{a.txt b.txt c.log _SUCCESS .hidden sub/x.txt sub/_y.txt} e/{a.txt} f.txt _g.txt"""
    files = {
        "d/a.txt": b"a\n", "d/b.txt": b"bb\n", "d/c.log": b"ccc\n", "d/_SUCCESS": b"",
        "d/.hidden": b"h\n", "d/sub/x.txt": b"x\n", "d/sub/_y.txt": b"y\n", "d/.dot/z.txt": b"z\n",
        "e/a.txt": b"ea\n", "f.txt": b"f\n", "_g.txt": b"g\n",
    }
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    return tmp_path


def names(result: list[tuple[str, int]], root: Path) -> list[str]:
    return [os.path.relpath(p, root) for p, _ in result]


def test_directory_lists_visible_files_and_refuses_subdirectories(tree):
    with pytest.raises(IsADirectory, match=r"not a file: file:.*/d/sub"):
        resolve_input(str(tree / "d"))
    (tree / "d" / "sub" / "x.txt").unlink()
    (tree / "d" / "sub" / "_y.txt").unlink()
    (tree / "d" / "sub").rmdir()
    assert names(resolve_input(str(tree / "d")), tree) == ["d/a.txt", "d/b.txt", "d/c.log"]
    assert resolve_input(str(tree / "d" / "a.txt")) == [(str(tree / "d" / "a.txt"), 2)]


def test_recursive_directories_skip_hidden_names(tree):
    assert names(resolve_input(str(tree / "d"), recursive=True), tree) == [
        "d/a.txt", "d/b.txt", "d/c.log", "d/sub/x.txt",
    ]


def test_globs(tree, monkeypatch):
    g = lambda pattern: names(resolve_input(str(tree) + "/" + pattern, recursive=True), tree)  # noqa: E731
    assert g("d/*.txt") == ["d/a.txt", "d/b.txt"]
    assert g("d/?.log") == ["d/c.log"]
    assert g("d/[ab].txt") == ["d/a.txt", "d/b.txt"]
    assert g("d/[!a].txt") == ["d/b.txt"]
    assert g("d/[^a].txt") == ["d/b.txt"]
    assert g("d/{a,c}.*") == ["d/a.txt", "d/c.log"]
    assert g("*/a.txt") == ["d/a.txt", "e/a.txt"]
    assert g("[de]/a.*") == ["d/a.txt", "e/a.txt"]
    assert g("*.txt") == ["f.txt"]  # _g.txt is hidden
    assert g("d/*") == ["d/a.txt", "d/b.txt", "d/c.log", "d/sub/x.txt"]  # a matched directory: its files
    assert g("*") == ["d/a.txt", "d/b.txt", "d/c.log", "d/sub/x.txt", "e/a.txt", "f.txt"]
    assert g("_g.txt") == ["_g.txt"]  # named explicitly: read even though hidden
    (tree / "e" / "r[1].txt").write_bytes(b"r\n")
    assert g("e/r[1].txt") == ["e/r[1].txt"]  # a name that is no pattern's match is taken literally
    monkeypatch.chdir(tree / "d")
    assert resolve_input("*.txt") == [(str(tree / "d/a.txt"), 2), (str(tree / "d/b.txt"), 3)]
    assert resolve_input("a.txt") == [(str(tree / "d/a.txt"), 2)]
    assert resolve_input("../e") == [(str(tree / "e/a.txt"), 3), (str(tree / "e/r[1].txt"), 2)]


def test_schemes_and_comma_lists(tree):
    a = str(tree / "d/a.txt")
    for form in (f"file://{a}", f"file:{a}", f"file://localhost{a}"):
        assert resolve_input(form) == [(a, 2)]
    got = resolve_input(f"{tree}/f.txt,{tree}/d/{{b,a}}.txt, file://{tree}/e")
    assert names(got, tree) == ["f.txt", "d/a.txt", "d/b.txt", "e/a.txt"]  # entries keep their order
    assert names(resolve_input(f"{tree}/f.txt,{tree}/f.txt"), tree) == ["f.txt", "f.txt"]  # as Hadoop


def test_missing_inputs_are_named(tree):
    with pytest.raises(FileNotFound, match=r"input path does not exist: file:.*/nope"):
        resolve_input(str(tree / "nope"))
    with pytest.raises(FileNotFound, match=r"input path does not exist: file:.*/d/\*\.csv"):
        resolve_input(str(tree / "d/*.csv"))
    with pytest.raises(FileNotFound) as err:
        resolve_input(f"{tree}/x1,{tree}/f.txt,{tree}/x2")
    assert "x1" in str(err.value) and "x2" in str(err.value) and "f.txt" not in str(err.value)
    with pytest.raises(FileNotFound):
        resolve_input(str(tree / "_*"))  # matches only hidden names
    with pytest.raises(FileNotFound):
        text_splits(str(tree / "nope"), 2)
    (tree / "empty").mkdir()
    assert resolve_input(str(tree / "empty")) == []  # an empty directory is no input, not an error
    assert text_splits(str(tree / "empty"), 4) == []


# --- wholeTextFiles ------------------------------------------------------------------------
def test_whole_text_files(tmp_path):
    sizes = [10, 20, 30, 40, 50, 60]
    for i, n in enumerate(sizes):
        (tmp_path / f"f{i}.txt").write_bytes(b"%d" % i * n)
    (tmp_path / "g.txt.gz").write_bytes(gzip.compress("héllo\n".encode()))
    groups = whole_text_files(str(tmp_path), 3)
    flat = [p for g in groups for p, _ in g]
    assert flat == [f"file:{tmp_path}/f{i}.txt" for i in range(6)] + [f"file:{tmp_path}/g.txt.gz"]
    assert 2 <= len(groups) <= 4
    assert read_whole_file(flat[2]) == "2" * 30
    assert read_whole_file(flat[-1]) == "héllo\n"
    assert read_whole_file(str(tmp_path / "f1.txt")) == "1" * 20
    assert display_path(str(tmp_path / "f1.txt")) == f"file:{tmp_path}/f1.txt"
    assert len(whole_text_files(str(tmp_path), 1)) == 1


# --- writing -------------------------------------------------------------------------------
class CountingFile:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        return len(data)


def test_write_text_partition_batches_and_converts():
    f = CountingFile()
    records, written = write_text_partition(f, (i for i in range(20_000)))
    assert records == 20_000 and len(f.writes) == 3
    data = b"".join(f.writes)
    assert written == len(data) and data == "".join(f"{i}\n" for i in range(20_000)).encode()
    f = CountingFile()
    assert write_text_partition(f, ["é", ("a", 1), b"raw\xff", None, 2.5]) == (5, len(b"".join(f.writes)))
    assert b"".join(f.writes) == "é\n('a', 1)\n".encode() + b"raw\xff\nNone\n2.5\n"
    f = CountingFile()
    assert write_text_partition(f, []) == (0, 0) and f.writes == []


def out(tmp_path: Path, name: str = "out") -> str:
    return str(tmp_path / name)


def test_committer_first_attempt_wins(tmp_path):
    c = OutputCommitter(out(tmp_path))
    c.setup_job()
    assert (tmp_path / "out/_temporary").is_dir()
    for attempt, text in ((0, "first"), (1, "second")):
        with c.open_task_output(3, attempt) as f:
            write_text_partition(f, [text])
    assert c.commit_task(3, 1) is True  # attempt 1 committed first
    assert c.commit_task(3, 0) is False
    assert (tmp_path / "out/part-00003").read_text() == "second\n"
    assert not any((tmp_path / "out/_temporary").iterdir())  # the loser's output is gone
    with c.open_task_output(0, 0) as f:
        write_text_partition(f, ["zero"])
    assert c.commit_task(0, 0) is True
    c.commit_job()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_SUCCESS", "part-00000", "part-00003"]
    assert (tmp_path / "out/_SUCCESS").read_bytes() == b""
    assert read_all(text_splits(out(tmp_path), 2)) == ["zero", "second"]  # _SUCCESS is hidden


def test_committer_refuses_existing_output_unless_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old").write_text("old")
    with pytest.raises(FileAlreadyExists, match=r"output directory file:.*/out already exists"):
        OutputCommitter(out(tmp_path)).setup_job()
    c = OutputCommitter("file://" + out(tmp_path), overwrite=True)
    c.setup_job()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_temporary"]
    c.commit_job()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_SUCCESS"]


def test_late_attempt_after_job_commit_loses_quietly(tmp_path):
    c = OutputCommitter(out(tmp_path))
    c.setup_job()
    with c.open_task_output(0, 0) as f:
        f.write(b"winner\n")
    assert c.commit_task(0, 0)
    c.commit_job()
    with c.open_task_output(0, 1) as f:  # a speculative copy still running
        f.write(b"late\n")
    assert c.commit_task(0, 1) is False
    assert c.commit_task(0, 2) is False  # one that wrote nothing
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_SUCCESS", "part-00000"]
    assert (tmp_path / "out/part-00000").read_bytes() == b"winner\n"


def test_committer_abort(tmp_path):
    c = OutputCommitter(out(tmp_path))
    c.setup_job()
    with c.open_task_output(0, 0) as f:
        f.write(b"committed\n")
    assert c.commit_task(0, 0)
    with c.open_task_output(1, 0) as f:
        f.write(b"never\n")
    c.abort_task(1, 0)
    with c.open_task_output(2, 0) as f:
        f.write(b"pending\n")
    c.abort_job()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["part-00000"]  # as Hadoop


def test_committer_is_picklable_and_empty_attempts_publish_empty_parts(tmp_path):
    c = OutputCommitter(out(tmp_path), codec="gzip")
    c.setup_job()
    c2 = pickle.loads(pickle.dumps(c))
    with c2.open_task_output(0, "a") as f:
        write_text_partition(f, ["x", "y"])
    assert c2.commit_task(0, "a")
    assert c2.commit_task(1, "a")  # wrote nothing: an empty part
    assert not c2.commit_task(1, "b")
    c.commit_job()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_SUCCESS", "part-00000.gz", "part-00001.gz"]
    assert read_all(text_splits(out(tmp_path), 8)) == ["x", "y"]


def test_concurrent_commits_of_one_partition(tmp_path):
    c = OutputCommitter(out(tmp_path))
    c.setup_job()
    for attempt in range(8):
        with c.open_task_output(0, attempt) as f:
            f.write(b"%d\n" % attempt)
    results: dict[int, bool] = {}
    barrier = threading.Barrier(8)

    def commit(attempt: int) -> None:
        barrier.wait()
        results[attempt] = c.commit_task(0, attempt)

    threads = [threading.Thread(target=commit, args=(a,)) for a in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [a for a, won in results.items() if won]
    assert len(winners) == 1
    assert (tmp_path / "out/part-00000").read_bytes() == b"%d\n" % winners[0]


def test_pickle_files_round_trip(tmp_path):
    c = OutputCommitter(out(tmp_path))
    c.setup_job()
    parts = [[(i, f"v{i}", {"k": [i]}) for i in range(p * 10_000, p * 10_000 + n)] for p, n in enumerate([0, 25_000, 3])]
    for p, recs in enumerate(parts):
        with c.open_task_output(p, 0) as f:
            assert write_pickle_partition(f, recs)[0] == len(recs)
        assert c.commit_task(p, 0)
    c.commit_job()
    splits = pickle_splits(out(tmp_path), 5)
    assert [Path(s.path).name for s in splits] == ["part-00000", "part-00001", "part-00002"]
    assert [list(read_pickle_file(s)) for s in splits] == parts
