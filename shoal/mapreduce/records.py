"""Map output records as Arrow columns, so the sort buffer, spills, merges and
reducer input move in C rather than one Python call per record.

A batch of map output is a table with ``p`` (reduce partition, int32), ``k`` (the
sort and grouping key: bytes compared bytewise, as Hadoop compares ``Text``) and
``v`` (the payload: for streaming, the reducer's input line, ``\\n`` included, so a
batch's values are already the bytes a reducer reads; for the Python API, the
pickled value). Segments of the shuffle are Arrow IPC streams (LZ4) framed like
the RDD shuffle's batches, so the same shuffle service serves them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from shoal.compute.serde import BATCH_HEADER

KV_SCHEMA = pa.schema([("k", pa.large_binary()), ("v", pa.large_binary())])
PKV_SCHEMA = pa.schema([("p", pa.int32()), ("k", pa.large_binary()), ("v", pa.large_binary())])
IPC_OPTIONS = ipc.IpcWriteOptions(compression="lz4")
# Rows per table handed to a reducer or written as one payload of a merged run.
MERGE_BATCH_ROWS = 1 << 17


def binary_array(offsets: np.ndarray, data: bytes | memoryview | pa.Buffer) -> pa.LargeBinaryArray:
    """A large-binary array over ``data`` whose value i is ``data[offsets[i]:offsets[i+1]]`` (no copy)."""
    buf = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(offsets) - 1,
                                            [None, pa.py_buffer(offsets.astype(np.int64, copy=False)), buf])


def lines_array(data: bytes | memoryview) -> pa.LargeBinaryArray:
    """The lines of ``data`` (which ends with ``\\n`` or is empty), each value keeping its ``\\n``."""
    raw = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(raw == 10)
    offsets = np.empty(len(ends) + 1, np.int64)
    offsets[0] = 0
    offsets[1:] = ends + 1
    return binary_array(offsets, data)


def copy_ranges(data: bytes | memoryview, starts: np.ndarray, ends: np.ndarray) -> pa.LargeBinaryArray:
    """A new array of ``data[starts[i]:ends[i]]`` (ranges disjoint and increasing), built
    with a byte mask rather than a loop."""
    raw = np.frombuffer(data, np.uint8)
    lengths = ends - starts
    delta = np.zeros(len(raw) + 1, np.int8)
    # Non-empty disjoint increasing ranges have distinct starts and distinct ends, so
    # plain fancy-index updates count each once (empty ranges add nothing).
    nonempty = lengths > 0
    delta[starts[nonempty]] += 1
    delta[ends[nonempty]] -= 1
    mask = np.cumsum(delta[:-1], dtype=np.int8).view(np.bool_)
    picked = raw[mask]
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return binary_array(offsets, picked.tobytes() if len(picked) else b"")


def value_bytes(arr: pa.Array | pa.ChunkedArray) -> Iterator[memoryview]:
    """The concatenated values of a binary array, as views of its data buffer(s)."""
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        offsets = np.frombuffer(chunk.buffers()[1], np.int64, len(chunk) + 1, chunk.offset * 8)
        data = chunk.buffers()[2]
        yield memoryview(data)[int(offsets[0]):int(offsets[-1])]


def map_unique(keys: pa.Array, fn: Callable[[bytes], object]) -> tuple[list, np.ndarray]:
    """(fn of each distinct key, index of each key's distinct value): one Python call
    per distinct key, not per record."""
    enc = pc.dictionary_encode(keys)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    uniq = [fn(u) for u in enc.dictionary.to_pylist()]
    return uniq, enc.indices.to_numpy(zero_copy_only=False)


def hash_partitions(keys: pa.Array, n: int, part_bytes: Callable[[bytes], bytes] | None = None) -> np.ndarray:
    """Hadoop's HashPartitioner over bytes: CRC-32 of the key (or of the key fields a
    KeyFieldBasedPartitioner selects) modulo the reducer count."""
    if n <= 1 or len(keys) == 0:
        return np.zeros(len(keys), np.int32)
    if part_bytes is None:
        uniq, idx = map_unique(keys, zlib.crc32)
    else:
        uniq, idx = map_unique(keys, lambda b: zlib.crc32(part_bytes(b)))
    return (np.asarray(uniq, np.uint32) % n).astype(np.int32)[idx]


def mapped_binary(keys: pa.Array, fn: Callable[[bytes], bytes]) -> pa.Array:
    """``fn`` applied to each key, computed once per distinct key (sort keys of a
    KeyFieldBasedComparator)."""
    uniq, idx = map_unique(keys, fn)
    return pa.array(uniq, pa.large_binary()).take(pa.array(idx))


def sort_by_key(table: pa.Table, with_partition: bool) -> pa.Table:
    """Rows ordered by (partition, key) or by key; equal keys keep their order.

    Keys are dictionary-encoded and only the distinct keys are sorted as bytes; the
    rows are then ordered by (partition, rank of key) as integers, which is much
    faster than comparing every row's bytes when keys repeat (word counts)."""
    if table.num_rows <= 1:
        return table
    keys = table.column("k")
    enc = pc.dictionary_encode(keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys)
    order = pc.sort_indices(enc.dictionary).to_numpy()
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    row_key = rank[enc.indices.to_numpy(zero_copy_only=False)]
    if with_partition:
        row_key += table.column("p").to_numpy().astype(np.int64) * len(order)
    return table.take(pa.array(np.argsort(row_key, kind="stable")))


def sort_tables(tables: list[pa.Table], with_partition: bool) -> pa.Table:
    """Tables of (p, k, v) rows, or of (k, v) rows without ``with_partition``, as one
    table sorted by (partition, key) or by key."""
    return sort_by_key(concat(tables, PKV_SCHEMA if with_partition else KV_SCHEMA), with_partition)


def sort_lines(lines: pa.Array | pa.ChunkedArray, fmt: StreamingFormat, reducers: int,
               part_bytes: Callable[[bytes], bytes] | None = None,
               sort_key: Callable[[bytes], bytes] | None = None) -> pa.Table:
    """Streaming map output lines as a (p, k, v) table sorted by (partition, key).

    Map output lines repeat a lot (``word\t1``), so only the distinct lines are
    split, hashed and sorted; the rows are then laid out by repeating each distinct
    line as often as it occurred. With distinct lines it costs one sort, as usual."""
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks() if lines.num_chunks else pa.array([], pa.large_binary())
    if len(lines) == 0:
        return PKV_SCHEMA.empty_table()
    enc = pc.dictionary_encode(lines)
    uniq = enc.dictionary
    counts = np.bincount(enc.indices.to_numpy(zero_copy_only=False), minlength=len(uniq))
    keys, values = fmt.split(b"".join(value_bytes(uniq)))
    parts = hash_partitions(keys, reducers, part_bytes)
    sort_keys = mapped_binary(keys, sort_key) if sort_key is not None else keys
    distinct = pa.table({"p": pa.array(parts, pa.int32()), "k": sort_keys, "v": values})
    order = pc.sort_indices(distinct, sort_keys=[("p", "ascending"), ("k", "ascending")]).to_numpy()
    return distinct.take(pa.array(np.repeat(order, counts[order])))


def partition_bounds(table: pa.Table, n: int) -> np.ndarray:
    """Row offsets of partitions 0..n in a table sorted by partition."""
    p = table.column("p").to_numpy()
    return np.searchsorted(p, np.arange(n + 1, dtype=np.int32), side="left")


def encode(table: pa.Table) -> bytearray:
    """One framed payload: the (k, v) columns as an Arrow IPC stream."""
    kv = table.select(["k", "v"])
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, KV_SCHEMA, options=IPC_OPTIONS) as writer:
        writer.write_table(kv)
    payload = sink.getvalue()
    out = bytearray(BATCH_HEADER.size + payload.size)
    BATCH_HEADER.pack_into(out, 0, payload.size)
    out[BATCH_HEADER.size:] = memoryview(payload)
    return out


def decode(payload: bytes | memoryview) -> pa.Table:
    return ipc.open_stream(pa.py_buffer(payload)).read_all()


def concat(tables: list[pa.Table], schema: pa.Schema = KV_SCHEMA) -> pa.Table:
    if not tables:
        return schema.empty_table()
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables).combine_chunks()


@dataclass
class GroupCounter:
    """Counts distinct consecutive keys over a sorted stream of batches (Hadoop's
    "Reduce input groups")."""

    groups: int = 0
    last: bytes | None = None

    def feed(self, keys: pa.Array | pa.ChunkedArray) -> None:
        n = len(keys)
        if n == 0:
            return
        if isinstance(keys, pa.ChunkedArray):
            keys = keys.combine_chunks()
        changes = pc.sum(pc.not_equal(keys.slice(1), keys.slice(0, n - 1))).as_py() or 0
        first = keys[0].as_py()
        self.groups += changes + (0 if first == self.last else 1)
        self.last = keys[n - 1].as_py()


@dataclass(frozen=True)
class StreamingFormat:
    """How streaming lines split into key and value (Hadoop's stream.* settings)."""

    separator: bytes = b"\t"  # stream.map.output.field.separator
    key_fields: int = 1  # stream.num.map.output.key.fields
    reduce_separator: bytes = b"\t"  # stream.reduce.input.field.separator

    @property
    def default(self) -> bool:
        return self.separator == b"\t" and self.key_fields == 1 and self.reduce_separator == b"\t"

    def split(self, data: bytes | memoryview) -> tuple[pa.Array, pa.Array]:
        """(keys, reducer input lines) of ``data``'s lines. The key is everything up to
        the ``key_fields``-th separator (the whole line when there are fewer); the
        reducer reads ``key + reduce_separator + value`` (Hadoop's TextInputWriter
        writes the separator even when the value is empty)."""
        if self.default:
            return self._split_default(data)
        keys: list[bytes] = []
        lines: list[bytes] = []
        sep, n, rsep = self.separator, self.key_fields, self.reduce_separator
        for line in bytes(data).split(b"\n")[:-1]:
            parts = line.split(sep, n)
            if len(parts) <= n:
                key, value = line, b""
            else:
                key, value = sep.join(parts[:n]), parts[n]
            keys.append(key)
            lines.append(key + rsep + value + b"\n")
        return pa.array(keys, pa.large_binary()), pa.array(lines, pa.large_binary())

    @staticmethod
    def _split_default(data: bytes | memoryview) -> tuple[pa.Array, pa.Array]:
        lines = lines_array(data)
        if len(lines) == 0:
            return lines, lines
        tab = pc.find_substring(lines, b"\t").to_numpy(zero_copy_only=False)
        offsets = np.frombuffer(lines.buffers()[1], np.int64, len(lines) + 1)
        starts = offsets[:-1]
        has_tab = tab >= 0
        key_ends = np.where(has_tab, starts + tab, offsets[1:] - 1)
        keys = copy_ranges(data, starts, key_ends)
        if has_tab.all():
            return keys, lines
        # A line without a tab is all key: the reducer reads it as "key\t\n".
        padded = pc.binary_join_element_wise(keys, pa.scalar(b"\t\n", pa.large_binary()), pa.scalar(b"", pa.large_binary()))
        return keys, pc.if_else(pa.array(has_tab), lines, padded)
