"""Arrow helpers of the MapReduce engine (shoal.mapreduce.records and the reduce-side
k-way merge) checked against plain-Python references: Hadoop Streaming's key/value
split, the (partition, key) sort of map output lines, hash partitioning, framed
payloads, group counting and merging sorted runs."""

from __future__ import annotations

import io
import struct
import zlib
from collections import Counter

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from shoal.mapreduce import counters as C
from shoal.mapreduce.counters import Counters
from shoal.mapreduce.keys import KeyFieldHelper, parse_key_field_options
from shoal.mapreduce.records import (
    KV_SCHEMA,
    PKV_SCHEMA,
    GroupCounter,
    StreamingFormat,
    concat,
    copy_ranges,
    decode,
    encode,
    hash_partitions,
    lines_array,
    map_unique,
    mapped_binary,
    partition_bounds,
    sort_by_key,
    sort_lines,
    value_bytes,
)
from shoal.mapreduce.shuffle_fetch import merge_sorted
from shoal.mapreduce.streaming import OutputParser, OutputSink, counted_input

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- references


def ref_split(line: bytes, sep: bytes = b"\t", fields: int = 1, rsep: bytes = b"\t") -> tuple[bytes, bytes]:
    """Hadoop Streaming's split of one map output line (no newline): the key runs up
    to the ``fields``-th separator (found left to right, not overlapping); with fewer
    separators the whole line is the key and the value is empty. The reducer reads
    ``key + rsep + value + newline``."""
    pos = -1
    start = 0
    for _ in range(fields):
        pos = line.find(sep, start)
        if pos < 0:
            return line, line + rsep + b"\n"
        start = pos + len(sep)
    key, value = line[:pos], line[pos + len(sep):]
    return key, key + rsep + value + b"\n"


def ref_part(key: bytes, reducers: int) -> int:
    return zlib.crc32(key) % reducers if reducers > 1 else 0


def big(values: list[bytes]) -> pa.LargeBinaryArray:
    return pa.array(values, pa.large_binary())


def joined(arr: pa.Array | pa.ChunkedArray) -> bytes:
    return b"".join(bytes(m) for m in value_bytes(arr))


# --------------------------------------------------------------------------- strategies

# Bytes with separators (tab, '.', ':') common, plus other awkward bytes; never a newline.
SEP_HEAVY = st.lists(
    st.sampled_from([b"a", b"b", b"z", b"\t", b".", b":", b"::", b" ", b"\r", b"\x00", b"\xff", b"7"]),
    max_size=12,
).map(b"".join)
ANY_LINE = st.one_of(SEP_HEAVY, st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")))
LINES = st.lists(ANY_LINE, max_size=40)

# Word-count-like lines: few keys, so duplicates abound.
WORDS = st.sampled_from([b"a", b"b", b"ab", b"", b"\xff", b"a b", b"Z"])
WC_LINE = st.builds(lambda w, n, tab: w + (b"\t" + str(n).encode() if tab else b""),
                    WORDS, st.integers(0, 3), st.booleans())


# --------------------------------------------------------------------------- lines_array / copy_ranges / value_bytes


@SETTINGS
@given(LINES)
def test_lines_array_matches_splitting(lines: list[bytes]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    arr = lines_array(data)
    assert arr.type == pa.large_binary()
    assert arr.to_pylist() == [line + b"\n" for line in lines]
    assert joined(arr) == data


def test_lines_array_of_nothing_is_empty() -> None:
    assert len(lines_array(b"")) == 0
    assert lines_array(memoryview(b"x\n\n")).to_pylist() == [b"x\n", b"\n"]


@st.composite
def lines_and_ranges(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int]]]:
    """Data made of lines and, for some of the lines, one range inside that line
    (possibly empty, possibly ending at its newline), as StreamingFormat uses."""
    lines = draw(st.lists(ANY_LINE, max_size=20))
    data = b""
    ranges = []
    for line in lines:
        base = len(data)
        data += line + b"\n"
        if draw(st.booleans()):
            a = draw(st.integers(0, len(line)))
            b = draw(st.integers(a, len(line)))
            ranges.append((base + a, base + b))
    return data, ranges


@SETTINGS
@given(lines_and_ranges())
def test_copy_ranges_matches_slicing(case: tuple[bytes, list[tuple[int, int]]]) -> None:
    data, ranges = case
    starts = np.array([a for a, _ in ranges], np.int64)
    ends = np.array([b for _, b in ranges], np.int64)
    arr = copy_ranges(data, starts, ends)
    assert arr.to_pylist() == [data[a:b] for a, b in ranges]


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 6)), max_size=15), st.binary(min_size=40, max_size=80))
def test_copy_ranges_of_disjoint_gapped_ranges(gaps: list[tuple[int, int]], pool: bytes) -> None:
    """Disjoint increasing ranges separated by at least one byte, anywhere in the data."""
    ranges = []
    pos = 0
    for gap, length in gaps:
        start = pos + gap
        ranges.append((start, start + length))
        pos = start + length + 1
    data = (pool * (pos // len(pool) + 2))[: pos + 1]
    arr = copy_ranges(data, np.array([a for a, _ in ranges], np.int64), np.array([b for _, b in ranges], np.int64))
    assert arr.to_pylist() == [data[a:b] for a, b in ranges]


def test_copy_ranges_empty_range_touching_the_next() -> None:
    data = b"abcdef"
    arr = copy_ranges(data, np.array([2, 2], np.int64), np.array([2, 4], np.int64))
    assert arr.to_pylist() == [b"", b"cd"]


@SETTINGS
@given(st.lists(st.binary(max_size=8), max_size=30), st.data())
def test_value_bytes_of_sliced_taken_and_chunked_arrays(values: list[bytes], data: st.DataObject) -> None:
    arr = big(values)
    lo = data.draw(st.integers(0, len(values)))
    hi = data.draw(st.integers(lo, len(values)))
    assert joined(arr.slice(lo, hi - lo)) == b"".join(values[lo:hi])
    idx = data.draw(st.lists(st.integers(0, max(len(values) - 1, 0)), max_size=20)) if values else []
    assert joined(arr.take(pa.array(idx, pa.int64()))) == b"".join(values[i] for i in idx)
    cut = data.draw(st.integers(0, len(values)))
    chunked = pa.chunked_array([arr.slice(cut), arr.slice(0, cut), arr.slice(0, 0)], pa.large_binary())
    assert joined(chunked) == b"".join(values[cut:] + values[:cut])


# --------------------------------------------------------------------------- StreamingFormat.split


@SETTINGS
@given(LINES)
@example([b"", b"\t", b"a", b"a\t", b"\ta", b"a\tb\tc", b"\t\t"])
def test_default_split_matches_reference(lines: list[bytes]) -> None:
    fmt = StreamingFormat()
    assert fmt.default
    keys, rlines = fmt.split(b"".join(line + b"\n" for line in lines))
    expect = [ref_split(line) for line in lines]
    assert keys.to_pylist() == [k for k, _ in expect]
    assert rlines.to_pylist() == [r for _, r in expect]


@SETTINGS
@given(LINES, st.sampled_from([b"\t", b".", b"::", b":", b"ab"]), st.integers(1, 3),
       st.sampled_from([b"\t", b"|", b"::"]))
@example([b"a::b::c", b"a:::b", b"::", b"q", b""], b"::", 2, b"|")
@example([b"a.b.c.d", b"a.", b".", b"a..b"], b".", 3, b"\t")
def test_custom_split_matches_reference(lines: list[bytes], sep: bytes, fields: int, rsep: bytes) -> None:
    fmt = StreamingFormat(sep, fields, rsep)
    keys, rlines = fmt.split(memoryview(b"".join(line + b"\n" for line in lines)))
    expect = [ref_split(line, sep, fields, rsep) for line in lines]
    assert keys.to_pylist() == [k for k, _ in expect]
    assert rlines.to_pylist() == [r for _, r in expect]
    assert keys.type == rlines.type == pa.large_binary()


def test_split_examples_from_the_streaming_docs() -> None:
    fmt = StreamingFormat(b".", 2, b"\t")
    keys, rlines = fmt.split(b"11.12.1.2\n11.14.2.3\n11\n")
    assert keys.to_pylist() == [b"11.12", b"11.14", b"11"]
    assert rlines.to_pylist() == [b"11.12\t1.2\n", b"11.14\t2.3\n", b"11\t\n"]
    keys, rlines = StreamingFormat().split(b"word\t1\nlonely\n")
    assert keys.to_pylist() == [b"word", b"lonely"]
    assert rlines.to_pylist() == [b"word\t1\n", b"lonely\t\n"]


# --------------------------------------------------------------------------- hash partitioning


@SETTINGS
@given(st.lists(st.binary(max_size=6), max_size=40), st.integers(1, 9))
def test_hash_partitions_is_crc32_mod_n(keys: list[bytes], n: int) -> None:
    parts = hash_partitions(big(keys), n)
    assert parts.dtype == np.int32
    assert parts.tolist() == [ref_part(k, n) for k in keys]


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from([b"x", b"y", b"", b"long key"]), st.integers(-50, 50)), max_size=30),
       st.integers(2, 7))
def test_hash_partitions_with_part_bytes_hashes_the_selected_field(pairs: list[tuple[bytes, int]], n: int) -> None:
    keys = [a + b"\t" + str(b).encode() for a, b in pairs]
    helper = KeyFieldHelper(b"\t", parse_key_field_options("-k1,1"))
    parts = hash_partitions(big(keys), n, helper.partition_bytes)
    assert parts.tolist() == [zlib.crc32(a) % n for a, _ in pairs]
    # Keys sharing their first field share a partition, whatever the rest.
    by_field: dict[bytes, set[int]] = {}
    for (a, _), p in zip(pairs, parts.tolist()):
        by_field.setdefault(a, set()).add(p)
    assert all(len(ps) == 1 for ps in by_field.values())


def test_hash_partitions_with_one_reducer_or_no_keys() -> None:
    assert hash_partitions(big([b"a", b"b"]), 1).tolist() == [0, 0]
    assert len(hash_partitions(big([]), 5)) == 0


def test_map_unique_and_mapped_binary_call_once_per_distinct_key() -> None:
    calls: list[bytes] = []

    def upper(b: bytes) -> bytes:
        calls.append(b)
        return b.upper()

    keys = big([b"a", b"b", b"a", b"a", b"c", b"b"])
    out = mapped_binary(keys, upper)
    assert out.to_pylist() == [b"A", b"B", b"A", b"A", b"C", b"B"]
    assert sorted(calls) == [b"a", b"b", b"c"]
    uniq, idx = map_unique(keys, len)
    assert [uniq[i] for i in idx] == [1] * 6


# --------------------------------------------------------------------------- sort_by_key / partition_bounds


@st.composite
def pkv_tables(draw: st.DrawFn, parts: int = 4) -> tuple[pa.Table, list[tuple[int, bytes, bytes]]]:
    rows = draw(st.lists(st.tuples(st.integers(0, parts - 1), st.one_of(WORDS, st.binary(max_size=4))), max_size=50))
    rows = [(p, k, str(i).encode()) for i, (p, k) in enumerate(rows)]  # v: the row's arrival order
    cut = draw(st.integers(0, len(rows)))
    pieces = [rows[:cut], rows[cut:]]
    tables = [pa.table({"p": pa.array([r[0] for r in piece], pa.int32()), "k": big([r[1] for r in piece]),
                        "v": big([r[2] for r in piece])}, schema=PKV_SCHEMA) for piece in pieces]
    return pa.concat_tables(tables), rows  # two chunks per column


def rows_of(table: pa.Table) -> list[tuple]:
    d = table.to_pydict()
    cols = [d[name] for name in table.column_names]
    return list(zip(*cols))


@SETTINGS
@given(pkv_tables())
def test_sort_by_key_is_a_stable_sort_by_partition_and_key(case: tuple[pa.Table, list]) -> None:
    table, rows = case
    assert rows_of(sort_by_key(table, with_partition=True)) == sorted(rows, key=lambda r: (r[0], r[1]))


@SETTINGS
@given(pkv_tables())
def test_sort_by_key_without_partition_ignores_it(case: tuple[pa.Table, list]) -> None:
    table, rows = case
    assert rows_of(sort_by_key(table, with_partition=False)) == sorted(rows, key=lambda r: r[1])
    kv = table.select(["k", "v"])
    assert rows_of(sort_by_key(kv, with_partition=False)) == sorted([r[1:] for r in rows], key=lambda r: r[0])


@SETTINGS
@given(pkv_tables(parts=5))
def test_partition_bounds_delimit_each_partition(case: tuple[pa.Table, list]) -> None:
    table, rows = case
    ordered = sort_by_key(table, with_partition=True)
    bounds = partition_bounds(ordered, 5).tolist()
    assert bounds[0] == 0 and bounds[-1] == len(rows)
    for p in range(5):
        assert ordered.column("p").to_pylist()[bounds[p]:bounds[p + 1]] == [p] * sum(r[0] == p for r in rows)


# --------------------------------------------------------------------------- sort_lines


def check_sorted_lines(out: pa.Table, expect: list[tuple[int, bytes, bytes]]) -> None:
    got = rows_of(out)
    assert out.schema.names == ["p", "k", "v"]
    assert Counter(got) == Counter(expect)
    assert [(p, k) for p, k, _ in got] == sorted((p, k) for p, k, _ in expect)


@SETTINGS
@given(st.one_of(st.lists(WC_LINE, max_size=60), LINES, st.lists(ANY_LINE, unique=True, max_size=40)),
       st.sampled_from([1, 2, 7]), st.booleans())
def test_sort_lines_default_format(lines: list[bytes], reducers: int, chunked: bool) -> None:
    arr = big([line + b"\n" for line in lines])
    if chunked:
        cut = len(lines) // 2
        arr = pa.chunked_array([arr.slice(0, cut), arr.slice(cut)], pa.large_binary())
    out = sort_lines(arr, StreamingFormat(), reducers)
    expect = []
    for line in lines:
        key, rline = ref_split(line)
        expect.append((ref_part(key, reducers), key, rline))
    check_sorted_lines(out, expect)


@SETTINGS
@given(st.lists(ANY_LINE, max_size=40), st.sampled_from([b".", b"::"]), st.integers(1, 3), st.sampled_from([1, 2, 7]))
def test_sort_lines_custom_format(lines: list[bytes], sep: bytes, fields: int, reducers: int) -> None:
    fmt = StreamingFormat(sep, fields, b"|")
    out = sort_lines(big([line + b"\n" for line in lines] * 2), fmt, reducers)
    expect = []
    for line in lines * 2:
        key, rline = ref_split(line, sep, fields, b"|")
        expect.append((ref_part(key, reducers), key, rline))
    check_sorted_lines(out, expect)


def test_sort_lines_many_duplicates_and_empty_input() -> None:
    lines = [b"b\t1\n"] * 500 + [b"a\t1\n"] * 300 + [b"b\t2\n"] * 7 + [b"c\n"] * 3
    out = sort_lines(big(lines), StreamingFormat(), 2)
    expect = []
    for line in lines:
        key, rline = ref_split(line[:-1])
        expect.append((ref_part(key, 2), key, rline))
    check_sorted_lines(out, expect)
    assert out.num_rows == 810
    empty = sort_lines(pa.chunked_array([], pa.large_binary()), StreamingFormat(), 3)
    assert empty.num_rows == 0 and empty.schema == PKV_SCHEMA
    assert sort_lines(big([]), StreamingFormat(), 3).num_rows == 0


FIELD1 = st.sampled_from([b"a", b"b", b"ab", b"", b"\xff", b"b "])


@SETTINGS
@given(st.lists(st.tuples(FIELD1, st.integers(-120, 120), st.sampled_from([b"", b"x", b"y\tz"])), max_size=50),
       st.sampled_from([1, 2, 7]))
def test_sort_lines_with_key_field_comparator(rows: list[tuple[bytes, int, bytes]], reducers: int) -> None:
    """-k1,1 -k2,2nr on a two-field key: first field bytewise, then the second
    field's number, largest first; partitions by the first field only."""
    fmt = StreamingFormat(b"\t", 2, b"\t")
    cmp = KeyFieldHelper(b"\t", parse_key_field_options("-k1,1 -k2,2nr"))
    part = KeyFieldHelper(b"\t", parse_key_field_options("-k1,1"))
    lines = [f1 + b"\t" + str(n).encode() + b"\t" + rest + b"\n" for f1, n, rest in rows]
    out = sort_lines(big(lines), fmt, reducers, part.partition_bytes, cmp.sort_key)
    expect = []
    for line in lines:
        key, rline = ref_split(line[:-1], b"\t", 2, b"\t")
        expect.append((ref_part(key.split(b"\t")[0], reducers), cmp.sort_key(key), rline))
    check_sorted_lines(out, expect)
    # The order is the comparator's, seen from the reducer lines themselves.
    got = rows_of(out)
    for (p1, _, v1), (p2, _, v2) in zip(got, got[1:]):
        assert p1 <= p2
        if p1 == p2:
            a, b = v1.split(b"\t"), v2.split(b"\t")
            assert (a[0], -int(a[1])) <= (b[0], -int(b[1]))


# --------------------------------------------------------------------------- encode / decode / concat


@SETTINGS
@given(pkv_tables())
def test_encode_decode_round_trip(case: tuple[pa.Table, list]) -> None:
    table, rows = case
    blob = encode(table)
    (n,) = struct.unpack(">I", blob[:4])
    assert n == len(blob) - 4
    back = decode(blob[4:])
    assert back.schema == KV_SCHEMA
    assert rows_of(back) == [r[1:] for r in rows]
    assert rows_of(decode(memoryview(blob)[4:])) == [r[1:] for r in rows]


def test_concat_of_nothing_one_and_many() -> None:
    assert concat([]).schema == KV_SCHEMA and concat([]).num_rows == 0
    assert concat([], PKV_SCHEMA).schema == PKV_SCHEMA
    t = pa.table({"k": big([b"a"]), "v": big([b"1"])}, schema=KV_SCHEMA)
    assert concat([t]) is t
    both = concat([t, t, KV_SCHEMA.empty_table()])
    assert rows_of(both) == [(b"a", b"1"), (b"a", b"1")]
    assert all(col.num_chunks == 1 for col in both.columns)


# --------------------------------------------------------------------------- GroupCounter


@st.composite
def sorted_keys_in_batches(draw: st.DrawFn) -> tuple[list[bytes], list[list[bytes]]]:
    keys = sorted(draw(st.lists(st.sampled_from([b"", b"a", b"aa", b"b", b"\xff"]) | st.binary(max_size=3),
                                max_size=60)))
    cuts = sorted(draw(st.lists(st.integers(0, len(keys)), max_size=8)))
    bounds = [0, *cuts, len(keys)]
    return keys, [keys[a:b] for a, b in zip(bounds, bounds[1:])]


@SETTINGS
@given(sorted_keys_in_batches(), st.booleans())
def test_group_counter_counts_distinct_keys_across_batches(case: tuple[list, list], chunked: bool) -> None:
    keys, batches = case
    counter = GroupCounter()
    for batch in batches:
        arr = big(batch)
        if chunked and len(batch) > 1:
            counter.feed(pa.chunked_array([arr.slice(0, 1), arr.slice(1)]))
        else:
            counter.feed(arr)
    assert counter.groups == len(set(keys))
    assert counter.last == (keys[-1] if keys else None)


# --------------------------------------------------------------------------- merge_sorted


@st.composite
def sorted_runs(draw: st.DrawFn) -> list[list[tuple[bytes, bytes]]]:
    key = st.sampled_from([b"", b"a", b"b", b"bb", b"c", b"\xff"]) | st.binary(max_size=2)
    runs = []
    for r in range(draw(st.integers(1, 5))):
        keys = sorted(draw(st.lists(key, max_size=40)))
        runs.append([(k, f"{r}:{i}".encode()) for i, k in enumerate(keys)])
    return runs


def batched(run: list[tuple[bytes, bytes]], cuts: list[int], as_batches: bool) -> list:
    bounds = [0, *sorted(c % (len(run) + 1) for c in cuts), len(run)]
    out: list = []
    for a, b in zip(bounds, bounds[1:]):
        piece = run[a:b]
        t = pa.table({"k": big([k for k, _ in piece]), "v": big([v for _, v in piece])}, schema=KV_SCHEMA)
        out.append(t.to_batches()[0] if as_batches and t.num_rows else t)
    return out


def check_merge(runs: list[list[tuple[bytes, bytes]]], sources: list) -> None:
    out = list(merge_sorted(sources))
    assert all(t.num_rows for t in out)
    assert all(t.schema == KV_SCHEMA for t in out)
    merged = [row for table in out for row in rows_of(table)]
    keys = [k for k, _ in merged]
    assert keys == sorted(keys)
    assert Counter(merged) == Counter(row for run in runs for row in run)


@SETTINGS
@given(sorted_runs(), st.data())
def test_merge_sorted_is_a_sorted_permutation(runs: list[list[tuple[bytes, bytes]]], data: st.DataObject) -> None:
    sources = []
    for run in runs:
        cuts = data.draw(st.lists(st.integers(0, 100), max_size=6))
        sources.append(iter(batched(run, cuts, data.draw(st.booleans()))))
    check_merge(runs, sources)


def test_merge_sorted_long_runs_of_equal_keys_across_batches() -> None:
    runs = [
        [(b"a", b"0:%d" % i) for i in range(9)] + [(b"b", b"0:9")],
        [(b"a", b"1:%d" % i) for i in range(4)],
        [(b"", b"2:0")] + [(b"a", b"2:%d" % i) for i in range(1, 7)] + [(b"c", b"2:7")],
        [],
    ]
    cuts = [[0, 2, 2, 5, 9], [1, 1, 3], [1, 4, 8], [0]]
    for as_batches in (False, True):
        check_merge(runs, [iter(batched(run, c, as_batches)) for run, c in zip(runs, cuts)])


def test_merge_sorted_of_no_or_empty_sources() -> None:
    assert list(merge_sorted([])) == []
    assert list(merge_sorted([iter([]), iter([KV_SCHEMA.empty_table()])])) == []


# --------------------------------------------------------------------------- streaming output plumbing


@st.composite
def chunked_output(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A command's stdout (sometimes over the parser's 64 KiB batch size, sometimes
    without a final newline) cut into arbitrary chunks."""
    lines = draw(st.lists(ANY_LINE, min_size=1, max_size=12))
    reps = draw(st.sampled_from([1, 2, 3000]))
    data = b"".join(line + b"\n" for line in lines) * reps
    if draw(st.booleans()):
        data += draw(ANY_LINE)  # a last line without its newline (maybe nothing)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=10)))
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in zip(bounds, bounds[1:])]


def as_lines(data: bytes) -> list[bytes]:
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return [line + b"\n" for line in data.split(b"\n")[:-1]]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(chunked_output())
def test_output_parser_emits_whole_lines(case: tuple[bytes, list[bytes]]) -> None:
    data, chunks = case
    emitted: list[pa.Array] = []
    parser = OutputParser(emitted.append, sort_buffer_bytes=1)
    for chunk in chunks:
        parser.feed(chunk)
    parser.close()
    event(f"arrays emitted: {min(len(emitted), 2)}")
    got = [v for arr in emitted for v in arr.to_pylist()]
    # A line may end with "\r\n" too (Hadoop's line reader): it is emitted with "\n".
    assert got == [line[:-2] + b"\n" if line.endswith(b"\r\n") else line for line in as_lines(data)]
    assert all(len(arr) for arr in emitted)
    assert parser.records == len(got)
    assert parser.bytes == sum(len(v) for v in got)


@SETTINGS
@given(st.lists(st.binary(max_size=10), max_size=10))
def test_output_sink_counts_lines_and_ends_the_last(chunks: list[bytes]) -> None:
    out = io.BytesIO()
    sink = OutputSink(out)
    for chunk in chunks:
        sink.write(chunk)
    records, nbytes = sink.close()
    data = b"".join(chunks)
    expect = data + (b"\n" if data and not data.endswith(b"\n") else b"")
    assert out.getvalue() == expect
    assert (records, nbytes) == (expect.count(b"\n"), len(expect))


@SETTINGS
@given(st.lists(st.lists(ANY_LINE, max_size=5).map(lambda ls: b"".join(line + b"\n" for line in ls)), max_size=6))
def test_counted_input_passes_chunks_through_and_counts_them(chunks: list[bytes]) -> None:
    counters = Counters()
    assert list(counted_input(iter(chunks), counters)) == chunks
    assert counters.get(C.FRAMEWORK, C.MAP_INPUT_RECORDS) == sum(c.count(b"\n") for c in chunks)
    assert counters.get(C.INPUT, C.BYTES_READ) == sum(len(c) for c in chunks)


def test_output_parser_cuts_long_output_into_several_arrays_of_whole_lines() -> None:
    data = b"".join(b"word%d\t%d\n" % (i % 97, i) for i in range(40000)) + b"tail"
    emitted: list[pa.Array] = []
    parser = OutputParser(emitted.append, sort_buffer_bytes=1)
    for start in range(0, len(data), 5000):  # chunks cut mid-line
        parser.feed(data[start:start + 5000])
    parser.close()
    assert len(emitted) > 2
    assert all(arr.to_pylist()[-1].endswith(b"\n") for arr in emitted)
    assert [v for arr in emitted for v in arr.to_pylist()] == as_lines(data)
    assert parser.records == 40001
