"""The map side of a MapReduce shuffle (MapOutputCollector): random map output through
a small sort buffer (no spill, one, two, many), with and without a combiner, read
back partition by partition from the committed data file and checked against the
records that went in, with Hadoop's spill and combine counters."""

from __future__ import annotations

import os
import tempfile
import zlib
from collections import Counter

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shoal.compute.shuffle_format import read_committed, shuffle_paths
from shoal.compute.shuffle_read import Segment, read_local_segment
from shoal.mapreduce import counters as C
from shoal.mapreduce.collector import MapOutputCollector
from shoal.mapreduce.counters import Counters
from shoal.mapreduce.job import TaskInfo
from shoal.mapreduce.records import PKV_SCHEMA, StreamingFormat, decode
from shoal.mapreduce.streaming import StreamingLogic

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
APP = "app-1"
SID = 3

Record = tuple[int, bytes, bytes]  # (partition, key, value)


def part_of(key: bytes, partitions: int) -> int:
    return zlib.crc32(key) % partitions


def pkv(records: list[Record]) -> pa.Table:
    return pa.table({"p": pa.array([r[0] for r in records], pa.int32()),
                     "k": pa.array([r[1] for r in records], pa.large_binary()),
                     "v": pa.array([r[2] for r in records], pa.large_binary())}, schema=PKV_SCHEMA)


def rows(table: pa.Table) -> list[tuple]:
    d = table.to_pydict()
    return list(zip(*(d[n] for n in table.column_names)))


class SumCombiner:
    """A word-count combiner: sums the integer values of each (partition, key) of a
    table sorted by (partition, key); remembers what it was given."""

    def __init__(self) -> None:
        self.inputs: list[list[Record]] = []

    def __call__(self, table: pa.Table) -> pa.Table:
        got = rows(table)
        self.inputs.append(got)
        sums: dict[tuple[int, bytes], int] = {}
        for p, k, v in got:
            sums[(p, k)] = sums.get((p, k), 0) + int(v)
        return pkv([(p, k, str(n).encode()) for (p, k), n in sums.items()])


def summed(records: list[Record]) -> Counter:
    """(p, k) -> total of the values."""
    out: Counter = Counter()
    for p, k, v in records:
        out[(p, k)] += int(v)
    return out


def read_partitions(status, partitions: int) -> list[list[tuple[bytes, bytes]]]:
    out = []
    for p in range(partitions):
        start, end = status.offsets[p], status.offsets[p + 1]
        seg = Segment(status.map_index, status.node_id, status.data_path, start, end - start)
        out.append([row for payload in read_local_segment(seg, SID) for row in rows(decode(payload))])
    return out


class Run:
    """One collector fed batch by batch, noting which records each spill took."""

    def __init__(self, work: str, partitions: int, buffer_bytes: int, spill_percent: float = 1.0,
                 combine: SumCombiner | None = None, min_spills: int = 3, sort=None) -> None:
        self.counters = Counters()
        self.collector = MapOutputCollector(partitions, buffer_bytes=buffer_bytes, spill_percent=spill_percent,
                                            work_dir=work, counters=self.counters, sort=sort, combine=combine,
                                            min_spills_for_combine=min_spills)
        self.groups: list[list[Record]] = []  # records of each spill made by add()
        self.pending: list[Record] = []

    def add(self, batch: list[Record], item=None) -> None:
        before = len(self.collector.spills)
        self.collector.add(pkv(batch) if item is None else item)
        self.pending.extend(batch)
        after = len(self.collector.spills)
        assert after - before in (0, 1)
        if after > before:
            self.groups.append(self.pending)
            self.pending = []

    def commit(self, root: str, map_index: int = 0):
        """Commit; returns (status, spill groups): a last spill of what is still
        buffered is made when there were spills already."""
        groups = self.groups + ([self.pending] if self.groups and self.pending else [])
        status = self.collector.commit(root=root, app_id=APP, shuffle_id=SID, map_index=map_index,
                                       node_id="node-a", service=None)
        return status, groups


WORD = st.sampled_from([b"the", b"a", b"of", b"shoal", b"", b"\xff\x00", b"x y"])


@st.composite
def map_outputs(draw: st.DrawFn, partitions: int) -> list[list[Record]]:
    batches = draw(st.lists(st.lists(st.tuples(WORD, st.integers(1, 3)), max_size=12), max_size=8))
    return [[(part_of(w, partitions), w, str(n).encode()) for w, n in batch] for batch in batches]


def check_output(status, partitions: int, expect_per_part: list[Counter], root: str) -> list[list]:
    """Each partition's segment holds exactly the expected (k, v) multiset, key-sorted;
    the index agrees with the status and the file."""
    got = read_partitions(status, partitions)
    for p in range(partitions):
        keys = [k for k, _ in got[p]]
        assert keys == sorted(keys), f"partition {p} not sorted by key"
        assert Counter(got[p]) == expect_per_part[p], f"partition {p}"
        assert status.records[p] == len(got[p])
    data_path, index_path = shuffle_paths(root, APP, SID, status.map_index)
    assert status.data_path == data_path
    assert read_committed(data_path, index_path) == (list(status.offsets), list(status.records))
    assert os.path.getsize(data_path) == status.offsets[-1]
    return got


# --------------------------------------------------------------------------- without a combiner


@SETTINGS
@given(st.integers(1, 4).flatmap(lambda n: st.tuples(st.just(n), map_outputs(n))),
       st.one_of(st.just(1), st.integers(100, 2500), st.just(1 << 30)), st.sampled_from([0.5, 0.8, 1.0]))
def test_collector_output_is_the_input_sorted_per_partition(case, buffer_bytes: int, spill_percent: float) -> None:
    partitions, batches = case
    with tempfile.TemporaryDirectory() as tmp:
        work, root = os.path.join(tmp, "work"), os.path.join(tmp, "shuffle")
        os.mkdir(work)
        run = Run(work, partitions, buffer_bytes, spill_percent)
        for batch in batches:
            run.add(batch)
        status, groups = run.commit(root)
        event(f"spills: {min(len(groups), 3)}")
        records = [r for b in batches for r in b]
        expect = [Counter((k, v) for q, k, v in records if q == p) for p in range(partitions)]
        check_output(status, partitions, expect, root)
        n = len(records)
        spilled = run.counters.get(C.FRAMEWORK, C.SPILLED_RECORDS)
        # Spilled Records: every record once in a spill, and once more in the merge of >= 2 spills.
        assert spilled == (2 * n if len(groups) >= 2 else n)
        assert run.counters.get(C.FRAMEWORK, C.MAP_OUTPUT_MATERIALIZED_BYTES) == status.offsets[-1]
        assert run.counters.get(C.FRAMEWORK, C.COMBINE_INPUT_RECORDS) == 0
        assert os.listdir(work) == []  # spill files are gone after commit


@pytest.mark.parametrize("adds, expect_spills", [(0, 0), (1, 1), (2, 2), (3, 3), (6, 6)])
@pytest.mark.parametrize("partitions", [1, 2, 4])
def test_each_add_spills_with_a_one_byte_buffer(adds: int, expect_spills: int, partitions: int, tmp_path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    run = Run(str(work), partitions, buffer_bytes=1)
    batches = [[(part_of(w, partitions), w, b"1") for w in (b"b", b"a", b"c", b"a")[: i % 4 + 1]] for i in range(adds)]
    for batch in batches:
        run.add(batch)
    run.add([])  # an empty batch is no output: no spill
    assert len(run.collector.spills) == expect_spills
    assert len(os.listdir(work)) == expect_spills
    status, groups = run.commit(str(tmp_path / "shuffle"))
    records = [r for b in batches for r in b]
    expect = [Counter((k, v) for q, k, v in records if q == p) for p in range(partitions)]
    check_output(status, partitions, expect, str(tmp_path / "shuffle"))
    n = len(records)
    assert run.counters.get(C.FRAMEWORK, C.SPILLED_RECORDS) == (2 * n if expect_spills >= 2 else n)
    assert os.listdir(work) == []


def test_a_big_buffer_never_spills_before_commit(tmp_path) -> None:
    run = Run(str(tmp_path), 3, buffer_bytes=1 << 30)
    for i in range(5):
        run.add([(part_of(b"k%d" % i, 3), b"k%d" % i, b"v")])
    assert run.collector.spills == []
    status, groups = run.commit(str(tmp_path / "shuffle"))
    assert groups == [] and sum(status.records) == 5
    assert run.counters.get(C.FRAMEWORK, C.SPILLED_RECORDS) == 5


def test_leftover_buffer_is_spilled_and_merged_at_commit(tmp_path) -> None:
    """A spill during add, then records still buffered at commit: two spills merged."""
    first = [(0, b"b", b"1")] * 40
    second = [(0, b"a", b"2"), (1, b"c", b"3")]
    cost = pkv(first).nbytes + 16 * len(first)
    run = Run(str(tmp_path), 2, buffer_bytes=cost)
    run.add(first)
    run.add(second)
    assert len(run.collector.spills) == 1
    status, groups = run.commit(str(tmp_path / "shuffle"))
    assert len(groups) == 2
    got = read_partitions(status, 2)
    assert got[0] == [(b"a", b"2")] + [(b"b", b"1")] * 40
    assert got[1] == [(b"c", b"3")]
    assert run.counters.get(C.FRAMEWORK, C.SPILLED_RECORDS) == 2 * 42


# --------------------------------------------------------------------------- with a combiner


@SETTINGS
@given(st.integers(1, 4).flatmap(lambda n: st.tuples(st.just(n), map_outputs(n))),
       st.one_of(st.just(1), st.integers(100, 2500), st.just(1 << 30)), st.sampled_from([1, 2, 3, 5, 8]))
def test_collector_with_a_combiner(case, buffer_bytes: int, min_spills: int) -> None:
    partitions, batches = case
    with tempfile.TemporaryDirectory() as tmp:
        work, root = os.path.join(tmp, "work"), os.path.join(tmp, "shuffle")
        os.mkdir(work)
        combiner = SumCombiner()
        run = Run(work, partitions, buffer_bytes, combine=combiner, min_spills=min_spills)
        for batch in batches:
            run.add(batch)
        status, groups = run.commit(root)
        event(f"spills: {min(len(groups), 3)}, combine on merge: {len(groups) >= max(2, min_spills)}")
        records = [r for b in batches for r in b]
        n = len(records)
        # What each sort of the buffer gives after combining: one record per (p, k).
        sort_groups = groups if groups else ([records] if records else [])
        spill_out = [summed(g) for g in sort_groups]
        spill_records = sum(len(s) for s in spill_out)
        merge_combines = len(groups) >= 2 and len(groups) >= min_spills
        if len(groups) >= 2 and not merge_combines:
            expect_kv = [Counter() for _ in range(partitions)]
            for s in spill_out:
                for (p, k), total in s.items():
                    expect_kv[p][(k, str(total).encode())] += 1
        else:
            expect_kv = [Counter({(k, str(t).encode()): 1 for (q, k), t in summed(records).items() if q == p})
                         for p in range(partitions)]
        got = check_output(status, partitions, expect_kv, root)
        final = sum(len(g) for g in got)
        cir = run.counters.get(C.FRAMEWORK, C.COMBINE_INPUT_RECORDS)
        cor = run.counters.get(C.FRAMEWORK, C.COMBINE_OUTPUT_RECORDS)
        spilled = run.counters.get(C.FRAMEWORK, C.SPILLED_RECORDS)
        if merge_combines:
            assert (cir, cor) == (n + spill_records, spill_records + final)
        else:
            assert (cir, cor) == (n, spill_records)
        assert spilled == (spill_records + final if len(groups) >= 2 else final)
        # The combiner always sees a table sorted by (partition, key).
        for given_rows in combiner.inputs:
            assert [(p, k) for p, k, _ in given_rows] == sorted((p, k) for p, k, _ in given_rows)
        assert len(combiner.inputs) == len(sort_groups) + (partitions_with_data(got) if merge_combines else 0)
        # Per key, the counts add up whatever combined where.
        totals: Counter = Counter()
        for p in range(partitions):
            for k, v in got[p]:
                totals[(p, k)] += int(v)
        assert totals == summed(records)


def partitions_with_data(got: list[list]) -> int:
    return sum(1 for g in got if g)


@pytest.mark.parametrize("spills, min_spills, merge_combines", [
    (1, 3, False), (2, 3, False), (3, 3, True), (4, 3, True), (2, 2, True), (2, 1, True),
])
def test_combining_again_on_merge_needs_min_spills(spills: int, min_spills: int, merge_combines: bool, tmp_path) -> None:
    combiner = SumCombiner()
    os.mkdir(tmp_path / "w")
    run = Run(str(tmp_path / "w"), 2, buffer_bytes=1, combine=combiner, min_spills=min_spills)
    batch = [(0, b"x", b"1"), (0, b"x", b"1"), (1, b"y", b"2"), (0, b"w", b"5")]
    for _ in range(spills):
        run.add(batch)
    status, groups = run.commit(str(tmp_path / "shuffle"))
    assert len(groups) == spills
    got = read_partitions(status, 2)
    if merge_combines or spills == 1:
        assert got == [[(b"w", str(5 * spills).encode()), (b"x", str(2 * spills).encode())],
                       [(b"y", str(2 * spills).encode())]]
    else:
        assert sorted(got[0]) == sorted([(b"w", b"5"), (b"x", b"2")] * spills)
        assert got[1] == [(b"y", b"2")] * spills
    cir = run.counters.get(C.FRAMEWORK, C.COMBINE_INPUT_RECORDS)
    cor = run.counters.get(C.FRAMEWORK, C.COMBINE_OUTPUT_RECORDS)
    if merge_combines and spills > 1:
        assert (cir, cor) == (4 * spills + 3 * spills, 3 * spills + 3)
        assert len(combiner.inputs) == spills + 2  # once per spill, once per merged partition
    else:
        assert (cir, cor) == (4 * spills, 3 * spills)
        assert len(combiner.inputs) == spills


# --------------------------------------------------------------------------- attempts and cleanup


def test_second_attempt_of_a_map_gets_the_first_attempts_output(tmp_path) -> None:
    root = str(tmp_path / "shuffle")
    first = Run(str(tmp_path), 3, buffer_bytes=1)
    first.add([(0, b"a", b"first"), (2, b"c", b"first")])
    first.add([(0, b"b", b"first")])
    st1, _ = first.commit(root, map_index=7)
    second = Run(str(tmp_path), 3, buffer_bytes=1 << 30)
    second.add([(1, b"zz", b"second")] * 5)
    st2, _ = second.commit(root, map_index=7)
    assert (st2.offsets, st2.records) == (st1.offsets, st1.records)
    assert st2.data_path == st1.data_path
    assert read_partitions(st2, 3) == [[(b"a", b"first"), (b"b", b"first")], [], [(b"c", b"first")]]
    # Nothing of the losing attempt is left behind.
    assert sorted(f for f in os.listdir(os.path.join(root, APP)) if not f.startswith(".")) == [
        "shuffle_3_7.data", "shuffle_3_7.index"]
    assert [f for f in os.listdir(tmp_path) if f.startswith("spill")] == []


def test_discard_removes_every_spill_file(tmp_path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    run = Run(str(work), 2, buffer_bytes=1)
    for i in range(3):
        run.add([(i % 2, b"k%d" % i, b"v")])
    assert len(os.listdir(work)) == 3
    run.collector.discard()
    assert os.listdir(work) == []
    assert run.collector.spills == []
    run.collector.discard()  # idempotent


def test_empty_map_output_commits_empty_segments(tmp_path) -> None:
    run = Run(str(tmp_path), 4, buffer_bytes=1, combine=SumCombiner())
    status, groups = run.commit(str(tmp_path / "shuffle"))
    assert groups == []
    assert status.offsets == [0, 0, 0, 0, 0] and status.records == [0, 0, 0, 0]
    assert read_partitions(status, 4) == [[], [], [], []]
    assert run.counters.get(C.FRAMEWORK, C.COMBINE_INPUT_RECORDS) == 0


# --------------------------------------------------------------------------- streaming lines through the collector


def streaming_sorter(reducers: int, tmp: str):
    logic = StreamingLogic("cat", "cat", None, StreamingFormat())
    task = TaskInfo("job_1", "task_1_m_000000", "attempt_1_m_000000_0", 0, True, reducers, tmp)
    return logic.sorter(task)


@SETTINGS
@given(st.lists(st.lists(st.builds(lambda w, n, tab: w + (b"\t" + n if tab else b""), WORD,
                                   st.sampled_from([b"1", b"2", b"x\ty"]), st.booleans()), max_size=10), max_size=6),
       st.integers(1, 4), st.sampled_from([1, 300, 1 << 30]))
def test_streaming_lines_through_the_collector(batches: list[list[bytes]], partitions: int, buffer_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        counters = Counters()
        collector = MapOutputCollector(partitions, buffer_bytes=buffer_bytes, spill_percent=1.0, work_dir=tmp,
                                       counters=counters, sort=streaming_sorter(partitions, tmp))
        for batch in batches:
            collector.add(pa.array([line + b"\n" for line in batch], pa.large_binary()))
        status = collector.commit(root=os.path.join(tmp, "shuffle"), app_id=APP, shuffle_id=SID, map_index=0,
                                  node_id="n", service=None)
        expect = [Counter() for _ in range(partitions)]
        for line in (line for b in batches for line in b):
            key = line.split(b"\t", 1)[0]
            value = line if b"\t" in line else key + b"\t"
            expect[part_of(key, partitions) if partitions > 1 else 0][(key, value + b"\n")] += 1
        check_output(status, partitions, expect, os.path.join(tmp, "shuffle"))
