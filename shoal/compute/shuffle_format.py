"""The shuffle's file format and shared types.

Layout of one map task's output (Spark's IndexShuffleBlockResolver): one data file
``<root>/<app_id>/shuffle_<sid>_<map>.data`` holding, for reduce partition p, the
bytes ``[offsets[p], offsets[p+1])`` as a sequence of framed batches
(``serde.dumps_batch``), and an index file ``... .index`` holding the P+1 offsets as
big-endian uint64, followed by the P record counts (also uint64, so a retried
attempt can report the committed output's counts). Files are committed atomically
(written under a temporary name, then renamed, data first, index last, under a
per-application lock); when a retried or speculative attempt finds a committed
output of the same map task, it discards its own and reports the existing one.

This module holds the on-disk format and the messages every side shares;
:mod:`shoal.compute.shuffle` is the interface the driver and executors use.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct

import msgspec

from shoal.errors import BadRequest

# App ids become folder names (on the service too): no separators, no "..".
APP_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
ID_MAX = 2**31 - 1  # shuffle ids and map indexes
U64 = struct.Struct(">Q")


class MapStatus(msgspec.Struct, frozen=True):
    """Where one map task's output is and how big each reduce segment is."""

    map_index: int
    node_id: str               # the worker (or "localhost") whose disk holds the file
    service: tuple[str, int] | None  # shuffle service address; None in local mode
    data_path: str
    offsets: list[int]         # P+1 byte offsets into data_path
    records: list[int]         # records per reduce partition


class ShuffleWriteMetrics(msgspec.Struct):
    input_records: int = 0
    records_written: int = 0
    bytes_written: int = 0
    spills: int = 0
    spilled_bytes: int = 0


class ShuffleReadMetrics(msgspec.Struct):
    remote_bytes: int = 0
    local_bytes: int = 0
    records_read: int = 0
    spills: int = 0
    spilled_bytes: int = 0
    # Extra detail (defaults keep the interface): segments read each way.
    local_segments: int = 0
    remote_segments: int = 0


def check_app_id(app_id: str) -> None:
    """App ids name folders: refuse anything that could escape the shuffle root."""
    if not isinstance(app_id, str) or not APP_ID_RE.fullmatch(app_id):
        raise BadRequest(f"bad application id {app_id!r}: use up to 200 letters, digits, '.', '_' and '-'")


def check_index(what: str, value: int) -> None:
    if type(value) is not int or not 0 <= value <= ID_MAX:
        raise BadRequest(f"bad {what} {value!r}: must be an integer in [0, {ID_MAX}]")


def shuffle_paths(root: str, app_id: str, shuffle_id: int, map_index: int) -> tuple[str, str]:
    """(data path, index path) of one map task's output under a shuffle root."""
    check_app_id(app_id)
    check_index("shuffle id", shuffle_id)
    check_index("map index", map_index)
    base = os.path.join(os.fspath(root), app_id, f"shuffle_{shuffle_id}_{map_index}")
    return base + ".data", base + ".index"


def encode_index(offsets: list[int], records: list[int]) -> bytes:
    assert len(offsets) == len(records) + 1, "an index has one more offset than partitions"
    return struct.pack(f">{len(offsets) + len(records)}Q", *offsets, *records)


def decode_index(data: bytes) -> tuple[list[int], list[int]]:
    """(offsets, records) of an index file; ValueError when it is not one."""
    n, rest = divmod(len(data), U64.size)
    if rest or n % 2 == 0:
        raise ValueError(f"index of {len(data)} bytes is not 2P+1 uint64 values")
    values = list(struct.unpack(f">{n}Q", data))
    parts = n // 2
    offsets, records = values[: parts + 1], values[parts + 1 :]
    if offsets[0] != 0 or any(a > b for a, b in zip(offsets, offsets[1:])):
        raise ValueError("index offsets are not increasing from 0")
    return offsets, records


def read_committed(data_path: str, index_path: str) -> tuple[list[int], list[int]] | None:
    """The committed output's (offsets, records), or None if it is absent or torn
    (no index, unreadable index, or a data file of another length)."""
    try:
        with open(index_path, "rb") as f:
            offsets, records = decode_index(f.read())
        if os.path.getsize(data_path) != offsets[-1]:
            return None
    except (OSError, ValueError):
        return None
    return offsets, records


COMMIT_LOCK = ".commit.lock"


def commit_map_output(tmp_data: str, data_path: str, index_path: str, offsets: list[int],
                      counts: list[int]) -> tuple[list[int], list[int]]:
    """Publish one map attempt's data file (written at ``tmp_data``) and its index,
    unless another attempt of the same map task committed first: then that one's
    (offsets, counts) are returned and this attempt's file is dropped. Data is
    renamed before the index, under the application's lock, so a reader trusting
    an index always finds its data."""
    tmp_index = None
    try:
        app_dir = os.path.dirname(data_path)
        tmp_index = index_path + os.path.basename(tmp_data)[len(os.path.basename(data_path)):]
        with open(tmp_index, "wb") as f:
            f.write(encode_index(offsets, counts))
        lock = os.open(os.path.join(app_dir, COMMIT_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            existing = read_committed(data_path, index_path)
            if existing is not None and len(existing[0]) == len(offsets):
                return existing
            os.replace(tmp_data, data_path)
            os.replace(tmp_index, index_path)
            return offsets, counts
        finally:
            os.close(lock)
    finally:
        for path in (tmp_data, tmp_index):
            try:
                if path is not None:
                    os.unlink(path)
            except FileNotFoundError:
                pass
