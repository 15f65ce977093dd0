"""The reduce side of a MapReduce shuffle (Hadoop's Shuffle and MergeManager).

A reduce task fetches its partition's segment of every map output as soon as that
output exists: when the stage was slow-started, the task follows the maps still
running by asking the driver for new map outputs. Fetched segments are held in
memory up to a budget (``mapreduce.reduce.shuffle.input.buffer.percent`` of the
task's memory); beyond it, what is held is sorted and written to a local run file
(counted in "Spilled Records"). When every map output is in, the in-memory
segments and the runs are merged into one stream of key-sorted tables.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from shoal.compute.protocol import MapSegment
from shoal.compute.shuffle_read import Segment, read_local_segment
from shoal.compute.shuffle_service import ShuffleClient
from shoal.errors import FetchFailed
from shoal.mapreduce import counters as C
from shoal.mapreduce.records import IPC_OPTIONS, KV_SCHEMA, MERGE_BATCH_ROWS, decode, sort_tables

if TYPE_CHECKING:
    from shoal.compute.taskcontext import TaskContext

POLL_WAIT_S = 2.0  # how long one ask for new map outputs may wait at the driver


class ReduceInput:
    """One reduce partition's input, fetched map by map, then merged."""

    def __init__(self, tc: TaskContext, shuffle_id: int, reduce_index: int, *, memory_budget: int,
                 counters: C.Counters) -> None:
        self.tc = tc
        self.shuffle_id = shuffle_id
        self.reduce_index = reduce_index
        self.memory_budget = memory_budget
        self.counters = counters
        self.held: list[pa.Table] = []
        self.held_bytes = 0
        self.runs: list[str] = []
        self.work_dir = tc.env.work_dir

    # --- fetching -------------------------------------------------------------------------
    def fetch_all(self) -> None:
        """Fetch every map output's segment, following the maps still running."""
        r = self.reduce_index
        known = [MapSegment(st.map_index, st.node_id, st.service, st.data_path, st.offsets[r],
                            st.offsets[r + 1] - st.offsets[r])
                 for st in self.tc.map_statuses.get(self.shuffle_id, []) if st is not None]
        fetched: set[int] = set()
        next_event, total = 0, None
        while True:
            new = {seg.map_index: seg for seg in known if seg.map_index not in fetched}
            if new:
                self._fetch(list(new.values()))
                fetched.update(new)
            if total is not None and len(fetched) >= total:
                return
            reply = self.tc.map_output_events(self.shuffle_id, r, next_event, POLL_WAIT_S)
            known, next_event, total = reply.events, reply.next_event, reply.total_maps
            if len(fetched) >= total:
                return

    def _fetch(self, segments: list[MapSegment]) -> None:
        env = self.tc.env
        remote: dict[tuple[str, int], list[MapSegment]] = {}
        metrics = self.tc.read_metrics
        for seg in segments:
            self.counters.incr(C.FRAMEWORK, C.SHUFFLED_MAPS)
            if seg.length <= 0:
                continue
            if seg.node_id == env.node_id and os.path.exists(seg.data_path):
                local = Segment(seg.map_index, seg.node_id, seg.data_path, seg.offset, seg.length)
                for payload in read_local_segment(local, self.shuffle_id):
                    self._hold(seg.map_index, payload)
                metrics.local_bytes += seg.length
                metrics.local_segments += 1
            elif seg.service is None:
                raise FetchFailed(f"output of map {seg.map_index} of shuffle {self.shuffle_id} is on {seg.node_id} "
                                  "(no shuffle service)", shuffle_id=self.shuffle_id, map_index=seg.map_index,
                                  node_id=seg.node_id)
            else:
                remote.setdefault((seg.service[0], int(seg.service[1])), []).append(seg)
        for address, segs in remote.items():
            nodes = {seg.map_index: seg.node_id for seg in segs}
            client = ShuffleClient(address, env.shuffle_secret or env.secret)
            try:
                for m, payload in client.fetch_batches(env.app_id, self.shuffle_id, list(nodes), self.reduce_index):
                    self._hold(m, payload)
                    metrics.remote_bytes += len(payload)
                metrics.remote_segments += len(segs)
            except FetchFailed as exc:
                raise FetchFailed(str(exc), shuffle_id=self.shuffle_id, map_index=exc.map_index,
                                  node_id=nodes.get(exc.map_index, "")) from None
            finally:
                client.close()

    def _hold(self, m: int, payload: bytes | memoryview) -> None:
        try:
            table = decode(payload)
        except (pa.ArrowInvalid, OSError) as exc:
            raise FetchFailed(f"corrupt segment of map output {m} of shuffle {self.shuffle_id}: {exc}",
                              shuffle_id=self.shuffle_id, map_index=m) from None
        self.counters.incr(C.FRAMEWORK, C.REDUCE_SHUFFLE_BYTES, len(payload))
        self.tc.read_metrics.records_read += table.num_rows
        self.held.append(table)
        self.held_bytes += table.nbytes
        if self.held_bytes > self.memory_budget:
            self._spill_held()

    def _spill_held(self) -> None:
        held, self.held, self.held_bytes = self.held, [], 0
        self.counters.incr(C.FRAMEWORK, C.MERGED_MAP_OUTPUTS, len(held))
        table = sort_tables(held, with_partition=False)
        del held
        path = os.path.join(self.work_dir, f"reduce-run-{os.getpid()}-{secrets.token_hex(6)}.arrow")
        self.runs.append(path)
        with ipc.new_file(path, KV_SCHEMA, options=IPC_OPTIONS) as writer:
            for batch in table.to_batches(max_chunksize=MERGE_BATCH_ROWS):
                writer.write_batch(batch)
        self.counters.incr(C.FRAMEWORK, C.SPILLED_RECORDS, table.num_rows)
        self.tc.read_metrics.spills += 1
        self.tc.read_metrics.spilled_bytes += os.path.getsize(path)

    # --- merging --------------------------------------------------------------------------
    def sorted_batches(self) -> Iterator[pa.Table]:
        """The whole partition in key order, as tables of at most MERGE_BATCH_ROWS rows."""
        try:
            held, self.held, self.held_bytes = self.held, [], 0
            self.counters.incr(C.FRAMEWORK, C.MERGED_MAP_OUTPUTS, len(held))
            memory = sort_tables(held, with_partition=False)
            del held
            if not self.runs:
                for start in range(0, memory.num_rows, MERGE_BATCH_ROWS):
                    yield memory.slice(start, MERGE_BATCH_ROWS)
                return
            sources = [_read_run(path) for path in self.runs]
            if memory.num_rows:
                sources.append(iter(memory.to_batches(max_chunksize=MERGE_BATCH_ROWS)))
            yield from merge_sorted(sources)
        finally:
            self.close()

    def close(self) -> None:
        for path in self.runs:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self.runs = []
        self.held = []


def _read_run(path: str) -> Iterator[pa.Table]:
    with pa.memory_map(path) as source:
        reader = ipc.open_file(source)
        for i in range(reader.num_record_batches):
            yield pa.Table.from_batches([reader.get_batch(i)])


def merge_sorted(sources: list[Iterator[pa.Table | pa.RecordBatch]]) -> Iterator[pa.Table]:
    """K-way merge of key-sorted runs, a batch at a time: each round takes, from every
    run's current batch, the rows up to the smallest of the batches' last keys (all
    of them are no greater than anything still unread), and sorts just those."""
    heads: list[pa.Table | None] = [_next_nonempty(s) for s in sources]
    while True:
        live = [i for i, h in enumerate(heads) if h is not None]
        if not live:
            return
        frontier = min(heads[i].column("k")[-1].as_py() for i in live)  # type: ignore[union-attr]
        pieces = []
        for i in live:
            head = heads[i]
            assert head is not None
            n = pc.sum(pc.less_equal(head.column("k"), pa.scalar(frontier, pa.large_binary()))).as_py() or 0
            if n:
                pieces.append(head.slice(0, n))
            heads[i] = head.slice(n) if n < head.num_rows else _next_nonempty(sources[i])
        yield sort_tables(pieces, with_partition=False)


def _next_nonempty(source: Iterator[pa.Table | pa.RecordBatch]) -> pa.Table | None:
    for item in source:
        if item.num_rows:
            return item if isinstance(item, pa.Table) else pa.Table.from_batches([item])
    return None
