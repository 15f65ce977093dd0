"""``read_split_chunks``: the raw-bytes lines a Hadoop Streaming mapper reads, which must
be exactly the lines ``read_split_lines`` gives (same LineRecordReader boundary rule)."""

from __future__ import annotations

import bz2
import gzip
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.compute import storage
from shoal.compute.storage import FileSplit, read_split_chunks, read_split_lines, text_splits

MiB = 1024 * 1024


def raw_lines(data: bytes) -> list[bytes]:
    """The lines of a whole file as bytes, as LineRecordReader cuts them (lone '\\r' aside)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


def chunk_lines(split: FileSplit) -> list[bytes]:
    """The lines of a split's chunks, checking each chunk holds whole '\\n'-ended lines."""
    chunks = list(read_split_chunks(split))
    for chunk in chunks:
        assert isinstance(chunk, bytes) and chunk.endswith(b"\n")
    return b"".join(chunks).split(b"\n")[:-1]


def splits_of(path: str, size: int, cuts: list[int]) -> list[FileSplit]:
    points = sorted({0, size, *(c for c in cuts if 0 < c < size)})
    return [FileSplit(path, a, b - a, size) for a, b in zip(points, points[1:])] or [FileSplit(path, 0, 0, 0)]


@contextmanager
def small_chunks(chunk: int, tail: int) -> Iterator[None]:
    """Tiny read chunks, so lines cross chunk edges everywhere."""
    saved = storage.READ_CHUNK_BYTES, storage.TAIL_CHUNK_BYTES
    storage.READ_CHUNK_BYTES, storage.TAIL_CHUNK_BYTES = chunk, tail
    try:
        yield
    finally:
        storage.READ_CHUNK_BYTES, storage.TAIL_CHUNK_BYTES = saved


LINE_CHARS = st.sampled_from(["a", "b", " ", "\r", "é", "€", "𝄞", "\u2028", "\x85"])
SHORT_LINE = st.text(LINE_CHARS, max_size=12)
LONG_LINE = st.text(LINE_CHARS, min_size=40, max_size=300)  # crosses many tiny read chunks


@st.composite
def text_files(draw: st.DrawFn) -> bytes:
    text = ""
    for line in draw(st.lists(st.one_of(SHORT_LINE, SHORT_LINE, SHORT_LINE, LONG_LINE), max_size=30)):
        text += line + draw(st.sampled_from(["\n", "\n", "\r\n", "\r\r\n"]))
    if draw(st.booleans()):  # no final newline (perhaps a final '\r')
        text += draw(st.text(LINE_CHARS, min_size=1, max_size=8))
    if draw(st.integers(0, 9)) == 0:
        text = "\ufeff" + text
    return text.encode()


@settings(max_examples=400, deadline=None)
@given(
    data=text_files(),
    cuts=st.lists(st.integers(0, 2000), max_size=12),
    chunk=st.integers(1, 40),
    tail=st.integers(1, 9),
)
def test_chunks_are_the_lines_of_read_split_lines(data: bytes, cuts: list[int], chunk: int, tail: int) -> None:
    with tempfile.NamedTemporaryFile(suffix=".txt") as f:
        f.write(data)
        f.flush()
        everything: list[bytes] = []
        with small_chunks(chunk, tail):
            for split in splits_of(f.name, len(data), cuts):
                got = chunk_lines(split)
                assert got == [line.encode() for line in read_split_lines(split)]
                everything += got
    assert everything == raw_lines(data)


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=400).map(lambda b: b.replace(b"x", b"\n").replace(b"y", b"\r")),
    cuts=st.lists(st.integers(0, 400), max_size=10),
    chunk=st.integers(1, 33),
)
def test_any_bytes_pass_through_undecoded(data: bytes, cuts: list[int], chunk: int) -> None:
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        with small_chunks(chunk, 3):
            got = [line for s in splits_of(f.name, len(data), cuts) for line in chunk_lines(s)]
    assert got == raw_lines(data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=text_files(), min_partitions=st.integers(1, 30))
def test_hadoop_splits_cover_the_file(data: bytes, min_partitions: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "f.txt")
        Path(path).write_bytes(data)
        with small_chunks(7, 2):
            got = [line for s in text_splits(path, min_partitions) for line in chunk_lines(s)]
    assert got == raw_lines(data)


def test_boundaries_and_line_ends_by_hand(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    p.write_bytes(b"ab\ncd\nef\n")
    path = str(p)
    one = lambda s, e: b"".join(read_split_chunks(FileSplit(path, s, e - s, 9)))  # noqa: E731
    assert one(0, 3) == b"ab\ncd\n"  # the line starting at the end belongs to this split
    assert one(3, 6) == b"ef\n"
    assert one(6, 9) == b""
    assert one(1, 2) == b""  # a split inside a line reads nothing
    p.write_bytes(b"\xef\xbb\xbfx\r\ny\r\r\n\r\nz\r")
    assert b"".join(read_split_chunks(FileSplit(path, 0, 13, 13))) == b"x\ny\r\n\nz\n"
    p.write_bytes(b"no newline \xff")
    assert list(read_split_chunks(FileSplit(path, 0, 12, 12))) == [b"no newline \xff\n"]
    p.write_bytes(b"")
    assert list(read_split_chunks(FileSplit(path, 0, 0, 0))) == []


def test_compressed_files_are_one_stream(tmp_path: Path) -> None:
    data = b"".join(b"line %d\r\n" % i for i in range(5000)) + b"last"
    expected = b"".join(b"line %d\n" % i for i in range(5000)) + b"last\n"
    (tmp_path / "a.gz").write_bytes(gzip.compress(data[:100]) + gzip.compress(data[100:]))
    (tmp_path / "b.bz2").write_bytes(bz2.compress(data))
    for name in ("a.gz", "b.bz2"):
        path = str(tmp_path / name)
        (split,) = text_splits(path, 4)
        with small_chunks(1000, 10):
            assert b"".join(read_split_chunks(split)) == expected
        assert list(read_split_chunks(FileSplit(path, 1, 10, 20))) == []  # not split: later splits are empty


def test_chunks_are_large_and_long_lines_stay_whole(tmp_path: Path) -> None:
    p = tmp_path / "big.txt"
    lines = [b"%d" % i * (i % 50) for i in range(200_000)] + [b"L" * (3 * MiB)] + [b"tail"]
    data = b"\n".join(lines) + b"\n"
    p.write_bytes(data)
    (split,) = [FileSplit(str(p), 0, len(data), len(data))]
    chunks = list(read_split_chunks(split))
    assert b"".join(chunks) == data
    assert len(chunks) <= len(data) // storage.READ_CHUNK_BYTES + 2  # about one chunk per read
    assert all(len(c) > storage.READ_CHUNK_BYTES // 2 for c in chunks[:-1])


def test_abandoned_iteration_closes_the_file(tmp_path: Path) -> None:
    p = tmp_path / "f.txt"
    p.write_bytes(b"x\n" * MiB)
    before = len(os.listdir("/proc/self/fd"))
    chunks = read_split_chunks(FileSplit(str(p), 0, 2 * MiB, 2 * MiB))
    assert next(chunks).startswith(b"x\n")
    assert len(os.listdir("/proc/self/fd")) == before + 1
    chunks.close()
    assert len(os.listdir("/proc/self/fd")) == before
