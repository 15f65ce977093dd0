"""Serialization of user code and of record batches.

Records never cross a process boundary one by one: they travel in batches, each
batch pickled without the memo (``Pickler.fast``; 5-10x faster for flat tuples)
and compressed with LZ4. User functions travel with cloudpickle, once per stage.
"""

from __future__ import annotations

import io
import pickle
import struct
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import cloudpickle
import lz4.block

from shoal.errors import SerializationError

# A batch on disk or on the wire: 4-byte big-endian length of the compressed payload,
# then the payload (lz4.block with the uncompressed size stored in it).
BATCH_HEADER = struct.Struct(">I")
DEFAULT_BATCH_RECORDS = 8192


def dumps_batch(records: list) -> bytes:
    """One batch of records as a framed, compressed byte string."""
    payload = lz4.block.compress(_pickle_records(records))
    return BATCH_HEADER.pack(len(payload)) + payload


def _pickle_records(records: list) -> bytes:
    buf = io.BytesIO()
    p = pickle.Pickler(buf, pickle.HIGHEST_PROTOCOL)
    p.fast = True  # no memo: records are flat, and the memo dominates the cost
    try:
        p.dump(records)
        return buf.getvalue()
    except (ValueError, RecursionError):  # self-referencing record: needs the memo
        return pickle.dumps(records, pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        # Lambdas or classes defined in the driver's __main__ inside records.
        return cloudpickle.dumps(records, pickle.HIGHEST_PROTOCOL)


def loads_batch_payload(payload: bytes | memoryview) -> list:
    return pickle.loads(lz4.block.decompress(payload))


def iter_batches(data: bytes | memoryview) -> Iterator[list]:
    """Decode every batch in a byte string holding whole framed batches."""
    view = memoryview(data)
    pos, end = 0, len(view)
    while pos < end:
        (n,) = BATCH_HEADER.unpack_from(view, pos)
        pos += BATCH_HEADER.size
        yield loads_batch_payload(view[pos : pos + n])
        pos += n


def read_batches(f: BinaryIO, length: int | None = None) -> Iterator[list]:
    """Decode framed batches from a file object (``length`` bytes, or to EOF)."""
    remaining = length
    while remaining is None or remaining > 0:
        head = f.read(BATCH_HEADER.size)
        if not head:
            return
        if len(head) < BATCH_HEADER.size:
            raise SerializationError("truncated batch header")
        (n,) = BATCH_HEADER.unpack(head)
        payload = f.read(n)
        if len(payload) < n:
            raise SerializationError("truncated batch")
        if remaining is not None:
            remaining -= BATCH_HEADER.size + n
        yield loads_batch_payload(payload)


def write_batches(f: BinaryIO, records: Iterable, batch_records: int = DEFAULT_BATCH_RECORDS) -> tuple[int, int]:
    """Write records as framed batches; returns (records, bytes) written."""
    count = written = 0
    batch: list = []
    for rec in records:
        batch.append(rec)
        if len(batch) >= batch_records:
            data = dumps_batch(batch)
            f.write(data)
            count += len(batch)
            written += len(data)
            batch = []
    if batch:
        data = dumps_batch(batch)
        f.write(data)
        count += len(batch)
        written += len(data)
    return count, written


def dumps_closure(obj: Any, what: str) -> bytes:
    """cloudpickle ``obj`` (a stage's functions); an unpicklable part is named."""
    try:
        return cloudpickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # pickle raises many types: TypeError, PicklingError, ...
        raise SerializationError(f"could not serialize {what}: {describe_unpicklable(obj, exc)}") from None


def describe_unpicklable(obj: Any, exc: BaseException) -> str:
    """Find the innermost thing in a closure that cannot be pickled, and name it."""
    path = _find_unpicklable(obj, depth=0, seen=set())
    detail = f"{type(exc).__name__}: {exc}"
    if path:
        return f"{' -> '.join(path)} ({detail})"
    return detail


def _picklable(obj: Any) -> bool:
    try:
        cloudpickle.dumps(obj)
        return True
    except Exception:
        return False


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    code = getattr(obj, "__code__", None)
    if code is not None and callable(obj):
        for name, cell in zip(code.co_freevars, getattr(obj, "__closure__", None) or ()):
            try:
                yield f"closure variable {name!r}", cell.cell_contents
            except ValueError:
                continue
        gl = getattr(obj, "__globals__", {})
        for name in code.co_names:
            if name in gl:
                yield f"global {name!r}", gl[name]
        for i, d in enumerate(getattr(obj, "__defaults__", None) or ()):
            yield f"default argument {i}", d
        return
    if isinstance(obj, (list, tuple, set, frozenset)):
        for i, item in enumerate(obj):
            yield f"item {i}", item
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield f"key {k!r}", v
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        for k, v in vars(obj).items():
            yield f"attribute {k!r}", v


def _find_unpicklable(obj: Any, depth: int, seen: set[int]) -> list[str]:
    if depth > 12 or id(obj) in seen:
        return []
    seen.add(id(obj))
    for label, child in _children(obj):
        if not _picklable(child):
            inner = _find_unpicklable(child, depth + 1, seen)
            name = getattr(child, "__qualname__", None) or type(child).__name__
            return [f"{label} ({name})", *inner]
    return []


def loads_closure(data: bytes) -> Any:
    return pickle.loads(data)
