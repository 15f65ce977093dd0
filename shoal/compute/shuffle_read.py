"""The reduce side of the shuffle: fetch one partition's segments of every map output,
then combine (ExternalMerger), sort (ExternalSorter) or stream them.

Segments on this node's disk are read directly (short-circuit, as Spark's local
block reads); the others stream from each node's shuffle service, one thread per
service (up to ``FETCH_THREADS``) pushing compressed batches into a bounded queue
that the reducer decodes from, so memory holds at most ``QUEUE_BATCHES`` batches in
flight whatever the partition's size.
"""

from __future__ import annotations

import os
import pickle
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from dataclasses import dataclass

import lz4.block

from shoal.compute.dependencies import ShuffleDependency
from shoal.compute.external import ExternalMerger, ExternalSorter
from shoal.compute.serde import BATCH_HEADER, loads_batch_payload
from shoal.compute.shuffle_format import MapStatus, ShuffleReadMetrics
from shoal.compute.shuffle_service import ShuffleClient
from shoal.errors import FetchFailed

FETCH_THREADS = 8
QUEUE_BATCHES = 64
PUT_POLL_S = 0.1  # how often a blocked fetcher checks whether the reducer went away
_DONE = object()


@dataclass(frozen=True)
class Segment:
    map_index: int
    node_id: str
    path: str
    offset: int
    length: int


def read_partition(
    statuses: list[MapStatus | None],
    dep: ShuffleDependency,
    reduce_index: int,
    *,
    shuffle_id: int,
    app_id: str,
    local_node: str,
    secret: bytes,
    work_dir: str,
    memory_limit_bytes: int,
    metrics: ShuffleReadMetrics,
) -> Iterator[tuple]:
    """The records of one reduce partition (``shuffle.read_reduce_partition``):
    combined by key when the dependency has an aggregator, sorted by key when it has
    ``key_ordering``, else as fetched. A missing or unreadable map output raises
    ``FetchFailed`` naming the map index; missing statuses fail at once (not at the
    first ``next``)."""
    if not 0 <= reduce_index < dep.num_partitions:
        raise ValueError(f"reduce partition {reduce_index} out of range [0, {dep.num_partitions})")
    local: list[Segment] = []
    remote: dict[tuple[str, int], list[Segment]] = {}
    for m, st in enumerate(statuses):
        if st is None:
            raise FetchFailed(f"output of map {m} of shuffle {shuffle_id} is missing", shuffle_id=shuffle_id, map_index=m)
        if len(st.offsets) != dep.num_partitions + 1:
            raise FetchFailed(
                f"output of map {m} of shuffle {shuffle_id} has {len(st.offsets) - 1} partitions, "
                f"not {dep.num_partitions}", shuffle_id=shuffle_id, map_index=m, node_id=st.node_id,
            )
        start, end = st.offsets[reduce_index], st.offsets[reduce_index + 1]
        if end <= start:
            continue
        seg = Segment(m, st.node_id, st.data_path, start, end - start)
        if st.node_id == local_node and os.path.exists(st.data_path):
            local.append(seg)
        elif st.service is None:
            where = f"gone from {st.data_path}" if st.node_id == local_node else f"on {st.node_id} (no shuffle service)"
            raise FetchFailed(f"output of map {m} of shuffle {shuffle_id} is {where}",
                              shuffle_id=shuffle_id, map_index=m, node_id=st.node_id)
        else:
            remote.setdefault((st.service[0], int(st.service[1])), []).append(seg)
    batches = _fetch(local, remote, reduce_index, shuffle_id, app_id, secret, metrics)
    return _records(batches, dep, work_dir, memory_limit_bytes, metrics)


class PartitionRecords(chain):
    """The records of one reduce partition, iterated in C (``itertools.chain`` over
    decoded batches, the merged dict or the sorted list). ``close()`` stops the
    fetchers and removes spill files at once when a reader stops early; they are
    also released when the iterator is exhausted or garbage-collected."""

    _source: Iterator

    @classmethod
    def over(cls, source: Iterator) -> PartitionRecords:
        it = cls.from_iterable(source)
        it._source = source
        return it

    def close(self) -> None:
        self._source.close()  # type: ignore[attr-defined]


def _records(batches: Iterator[list], dep: ShuffleDependency, work_dir: str, memory_limit_bytes: int,
             metrics: ShuffleReadMetrics) -> Iterator[tuple]:
    if dep.aggregator is None and not dep.key_ordering:
        return PartitionRecords.over(batches)  # records as fetched
    return PartitionRecords.over(_combined_or_sorted(batches, dep, work_dir, memory_limit_bytes, metrics))


def _combined_or_sorted(batches: Iterator[list], dep: ShuffleDependency, work_dir: str, memory_limit_bytes: int,
                        metrics: ShuffleReadMetrics) -> Iterator[Iterator[tuple]]:
    """Yields one iterator over the combined and/or sorted records, so they are
    iterated in C; cleans up when the chain asks for the next one (or on close)."""
    agg = dep.aggregator
    merger = sorter = None
    out: Iterator[tuple] = iter(())
    try:
        if dep.key_ordering:
            sorter = ExternalSorter(
                work_dir=work_dir, memory_limit_bytes=memory_limit_bytes, keyfunc=dep.sort_keyfunc,
                ascending=dep.ascending,
            )
        if agg is not None:
            merger = ExternalMerger(agg, work_dir=work_dir, memory_limit_bytes=memory_limit_bytes)
            merger.merge_batches(batches, combined=dep.map_side_combine)
            out = merger.items()
            if sorter is not None:
                sorter.add(out)
                out = sorter.sorted_records()
        else:
            assert sorter is not None
            sorter.add_batches(batches)
            out = sorter.sorted_records()
        batches.close()  # type: ignore[attr-defined]  # every segment read: stop the fetchers now
        yield out
    finally:
        batches.close()  # type: ignore[attr-defined]
        close = getattr(out, "close", None)
        if close is not None:  # a merge of spilled runs: removes its files
            close()
        for part in (merger, sorter):
            if part is not None:
                metrics.spills += part.spills
                metrics.spilled_bytes += part.spilled_bytes
                part.cleanup()


def _fetch(local: list[Segment], remote: dict[tuple[str, int], list[Segment]], reduce_index: int,
           shuffle_id: int, app_id: str, secret: bytes, metrics: ShuffleReadMetrics) -> Iterator[list]:
    """Decoded batches of every segment: remote fetches start first and run in the
    background while the local segments are read."""
    fetcher = _RemoteFetcher(remote, reduce_index, shuffle_id, app_id, secret) if remote else None
    try:
        if fetcher is not None:
            fetcher.start()
        for seg in local:
            for payload in read_local_segment(seg, shuffle_id):
                metrics.local_bytes += BATCH_HEADER.size + len(payload)
                batch = _decode(payload, seg, shuffle_id, "local")
                metrics.records_read += len(batch)
                yield batch
            metrics.local_segments += 1
        if fetcher is not None:
            for seg, payload in fetcher.results():
                metrics.remote_bytes += BATCH_HEADER.size + len(payload)
                batch = _decode(payload, seg, shuffle_id, "remote")
                metrics.records_read += len(batch)
                yield batch
            metrics.remote_segments += sum(len(segs) for segs in remote.values())
    finally:
        if fetcher is not None:
            fetcher.cancel()


def read_local_segment(seg: Segment, shuffle_id: int) -> Iterator[bytes]:
    """Compressed batch payloads of a segment of a file on this node."""
    def failed(why: str) -> FetchFailed:
        return FetchFailed(f"cannot read output of map {seg.map_index} of shuffle {shuffle_id} at {seg.path}: {why}",
                           shuffle_id=shuffle_id, map_index=seg.map_index, node_id=seg.node_id)
    try:
        f = open(seg.path, "rb")
    except OSError as exc:
        raise failed(exc.strerror or str(exc)) from None
    with f:
        try:
            f.seek(seg.offset)
            remaining = seg.length
            while remaining > 0:
                head = f.read(BATCH_HEADER.size)
                if len(head) < BATCH_HEADER.size:
                    raise failed("file ends inside its segment")
                (n,) = BATCH_HEADER.unpack(head)
                remaining -= BATCH_HEADER.size + n
                if remaining < 0:
                    raise failed("a batch overruns the segment (corrupt data or index)")
                payload = f.read(n)
                if len(payload) < n:
                    raise failed("file ends inside its segment")
                yield payload
        except OSError as exc:
            raise failed(exc.strerror or str(exc)) from None


def _decode(payload: bytes, seg: Segment, shuffle_id: int, where: str) -> list:
    try:
        return loads_batch_payload(payload)
    except (lz4.block.LZ4BlockError, pickle.UnpicklingError, EOFError) as exc:
        raise FetchFailed(
            f"corrupt {where} output of map {seg.map_index} of shuffle {shuffle_id}: {exc}",
            shuffle_id=shuffle_id, map_index=seg.map_index, node_id=seg.node_id,
        ) from None


class _RemoteFetcher:
    """One thread per shuffle service streams its segments into a bounded queue."""

    def __init__(self, remote: dict[tuple[str, int], list[Segment]], reduce_index: int, shuffle_id: int,
                 app_id: str, secret: bytes) -> None:
        self.remote = remote
        self.reduce_index = reduce_index
        self.shuffle_id = shuffle_id
        self.app_id = app_id
        self.secret = secret
        self._queue: queue.Queue = queue.Queue(QUEUE_BATCHES)
        self._cancelled = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._clients: list[ShuffleClient] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(min(FETCH_THREADS, len(self.remote)), thread_name_prefix="shuffle-fetch")
        for address, segments in self.remote.items():
            self._pool.submit(self._run, address, segments)

    def cancel(self) -> None:
        self._cancelled.set()
        with self._lock:
            clients = list(self._clients)
        for client in clients:  # wakes a fetcher blocked in recv (close shuts the socket down)
            client.close()
        while True:  # unblock fetchers waiting to put
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def results(self) -> Iterator[tuple[Segment, bytes]]:
        pending = len(self.remote)
        while pending:
            item = self._queue.get()
            if item is _DONE:
                pending -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item

    def _put(self, item: object) -> bool:
        while not self._cancelled.is_set():
            try:
                self._queue.put(item, timeout=PUT_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, address: tuple[str, int], segments: list[Segment]) -> None:
        by_map = {seg.map_index: seg for seg in segments}
        seg = segments[0]
        client = ShuffleClient(address, self.secret)
        with self._lock:
            self._clients.append(client)
        try:
            if self._cancelled.is_set():
                return
            got = dict.fromkeys(by_map, 0)
            batches = client.fetch_batches(self.app_id, self.shuffle_id, list(by_map), self.reduce_index)
            try:
                for m, payload in batches:
                    seg = by_map[m]
                    got[m] += BATCH_HEADER.size + len(payload)
                    if got[m] > seg.length:
                        raise FetchFailed(f"output of map {m} from {address[0]}:{address[1]} is longer than its "
                                          "status says (the map output changed)", self.shuffle_id, m)
                    if not self._put((seg, payload)):
                        return
            finally:
                batches.close()
            for m, n in got.items():
                if n != by_map[m].length:
                    raise FetchFailed(f"output of map {m} from {address[0]}:{address[1]} has {n} bytes, its status "
                                      f"says {by_map[m].length} (the map output changed)", self.shuffle_id, m)
            self._put(_DONE)
        except FetchFailed as exc:
            m = exc.map_index if exc.map_index in by_map else seg.map_index
            self._put(FetchFailed(str(exc), shuffle_id=self.shuffle_id, map_index=m, node_id=by_map[m].node_id))
        except BaseException as exc:  # anything else still ends the reducer's wait
            self._put(FetchFailed(f"fetching from {address[0]}:{address[1]} failed: {exc!r}",
                                  shuffle_id=self.shuffle_id, map_index=seg.map_index, node_id=seg.node_id))
        finally:
            client.close()
