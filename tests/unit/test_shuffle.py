"""The sort-based shuffle on real files: map-side writer, index/commit, reduce-side
reader in its combine, sort and plain modes, with and without spilling."""

from __future__ import annotations

import operator
import os
import random
import threading
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.compute.dependencies import Aggregator, ShuffleDependency
from shoal.compute.partitioner import HashPartitioner, RangePartitioner, portable_hash
from shoal.compute.serde import iter_batches
from shoal.compute.shuffle import (
    MapStatus,
    ShuffleReadMetrics,
    ShuffleWriteMetrics,
    decode_index,
    read_reduce_partition,
    shuffle_paths,
    write_map_output,
)
from shoal.errors import BadRequest, FetchFailed

BIG = 1 << 40  # a memory limit never reached
APP = "app-test"
NODE = "node-a"

ADD = Aggregator(lambda v: v, operator.add, operator.add, identity_create=True, merge_kind="add")
MAX = Aggregator(lambda v: v, max, max, identity_create=True)
# combineByKey-style: (sum, count), create is not the identity.
AVG = Aggregator(lambda v: (v, 1), lambda c, v: (c[0] + v, c[1] + 1), lambda a, b: (a[0] + b[0], a[1] + b[1]))
# groupByKey: lists, merged in place as PySpark does.
GROUP = Aggregator(lambda v: [v], lambda c, v: c.append(v) or c, lambda a, b: a.extend(b) or a)


class Shuffle:
    """Runs a whole shuffle (every map task, then every reduce partition) in one folder."""

    def __init__(self, folder: Path, dep: ShuffleDependency, limit: int = BIG) -> None:
        self.folder, self.dep, self.limit = folder, dep, limit
        self.root = str(folder / "shuffle")
        self.work = str(folder / "work")
        self.write_metrics: list[ShuffleWriteMetrics] = []
        self.read_metrics: list[ShuffleReadMetrics] = []

    def write(self, map_index: int, records, node: str = NODE) -> MapStatus:
        m = ShuffleWriteMetrics()
        status = write_map_output(
            iter(records), self.dep, root=self.root, app_id=APP, map_index=map_index, node_id=node,
            service=None, work_dir=self.work, memory_limit_bytes=self.limit, metrics=m,
        )
        self.write_metrics.append(m)
        return status

    def read(self, statuses, reduce_index: int, local_node: str = NODE) -> list:
        m = ShuffleReadMetrics()
        out = list(read_reduce_partition(
            statuses, self.dep, reduce_index, shuffle_id=self.dep.shuffle_id, app_id=APP, local_node=local_node,
            secret=b"unused", work_dir=self.work, memory_limit_bytes=self.limit, metrics=m,
        ))
        self.read_metrics.append(m)
        return out

    def run(self, inputs: list[list]) -> list[list]:
        statuses = [self.write(i, recs) for i, recs in enumerate(inputs)]
        return [self.read(statuses, r) for r in range(self.dep.num_partitions)]


def dep_of(partitions: int = 4, aggregator: Aggregator | None = None, combine: bool = False, **kw) -> ShuffleDependency:
    part = kw.pop("partitioner", None) or HashPartitioner(partitions)
    return ShuffleDependency(None, kw.pop("shuffle_id", 7), part, aggregator, combine, **kw)  # type: ignore[arg-type]


def words(n: int, distinct: int, seed: int = 1) -> list[tuple[str, int]]:
    rnd = random.Random(seed)
    return [(f"w{rnd.randrange(distinct)}", rnd.randrange(1, 10)) for _ in range(n)]


def summed(inputs: list[list]) -> dict:
    out: dict = defaultdict(int)
    for recs in inputs:
        for k, v in recs:
            out[k] += v
    return dict(out)


def check_placement(dep: ShuffleDependency, parts: list[list]) -> None:
    for r, recs in enumerate(parts):
        assert all(dep.partitioner.partition(rec[0]) == r for rec in recs)


def no_stray_files(sh: Shuffle) -> None:
    app = Path(sh.root) / APP
    assert not [p for p in app.iterdir() if p.name.endswith(".tmp")]
    assert not os.path.exists(sh.work) or os.listdir(sh.work) == []


# --- layout ---------------------------------------------------------------------------------------
def test_paths_and_index_layout(tmp_path: Path) -> None:
    data, index = shuffle_paths(str(tmp_path), "app-1", 3, 5)
    assert data == str(tmp_path / "app-1" / "shuffle_3_5.data") and index.endswith("shuffle_3_5.index")
    for bad in ("../x", "a/b", "", ".", "..", ".hidden", "x\x00"):
        with pytest.raises(BadRequest):
            shuffle_paths(str(tmp_path), bad, 0, 0)
    with pytest.raises(BadRequest):
        shuffle_paths(str(tmp_path), "ok", -1, 0)
    sh = Shuffle(tmp_path, dep_of(3))
    st_ = sh.write(0, words(1000, 50))
    with open(st_.data_path.replace(".data", ".index"), "rb") as f:
        offsets, records = decode_index(f.read())
    assert offsets == st_.offsets and records == st_.records and sum(records) == 1000
    assert os.path.getsize(st_.data_path) == offsets[-1]
    with open(st_.data_path, "rb") as f:
        data = f.read()
    for p in range(3):  # each segment is whole framed batches of that partition's records
        recs = [r for b in iter_batches(data[offsets[p] : offsets[p + 1]]) for r in b]
        assert len(recs) == records[p] and all(HashPartitioner(3).partition(k) == p for k, _ in recs)


# --- hash partitioning ------------------------------------------------------------------------------
def test_plain_roundtrip_keeps_every_record(tmp_path: Path) -> None:
    inputs = [words(20000, 3000, seed) for seed in range(3)]
    sh = Shuffle(tmp_path, dep_of(5))
    parts = sh.run(inputs)
    check_placement(sh.dep, parts)
    assert Counter(r for p in parts for r in p) == Counter(r for recs in inputs for r in recs)
    assert sum(m.records_read for m in sh.read_metrics) == 60000
    assert all(m.local_bytes > 0 and m.remote_bytes == 0 for m in sh.read_metrics)
    assert sum(m.bytes_written for m in sh.write_metrics) == sum(m.local_bytes for m in sh.read_metrics)
    no_stray_files(sh)


@pytest.mark.parametrize("combine", [True, False])
def test_reduce_by_key_matches_a_dict(tmp_path: Path, combine: bool) -> None:
    inputs = [words(30000, 2000, seed) for seed in range(3)]
    sh = Shuffle(tmp_path, dep_of(4, ADD, combine))
    parts = sh.run(inputs)
    check_placement(sh.dep, parts)
    got = dict(r for p in parts for r in p)
    assert got == summed(inputs) and sum(len(p) for p in parts) == len(got)
    written = sum(m.records_written for m in sh.write_metrics)
    assert written == (sum(len(set(k for k, _ in recs)) for recs in inputs) if combine else 90000)
    assert sum(m.input_records for m in sh.write_metrics) == 90000


@pytest.mark.parametrize("combine", [True, False])
@pytest.mark.parametrize("agg", [MAX, AVG], ids=["max", "avg"])
def test_generic_aggregators(tmp_path: Path, combine: bool, agg: Aggregator) -> None:
    inputs = [[(k % 97, float(v)) for k, v in enumerate(range(5000 * s, 5000 * (s + 1)))] for s in range(2)]
    got = dict(r for p in Shuffle(tmp_path, dep_of(3, agg, combine)).run(inputs) for r in p)
    expected: dict = {}
    for recs in inputs:
        for k, v in recs:
            expected[k] = agg.merge_value(expected[k], v) if k in expected else agg.create_combiner(v)
    assert got == expected


def test_add_fast_path_keeps_value_types(tmp_path: Path) -> None:
    inputs = [[("a", 1), ("b", 1.0), ("c", True), ("a", 1)], [("b", 1.0), ("d", 1)]]
    got = dict(r for p in Shuffle(tmp_path, dep_of(2, ADD, True)).run(inputs) for r in p)
    assert got == {"a": 2, "b": 2.0, "c": True, "d": 1}
    assert type(got["b"]) is float and type(got["a"]) is int


@pytest.mark.parametrize("limit", [BIG, 1])
def test_group_by_key_lists(tmp_path: Path, limit: int) -> None:
    inputs = [[(i % 301, (s, i)) for i in range(12000)] for s in range(3)]
    sh = Shuffle(tmp_path, dep_of(4, GROUP, False), limit)
    parts = sh.run(inputs)
    got = {k: sorted(v) for p in parts for k, v in p}
    expected: dict = defaultdict(list)
    for recs in inputs:
        for k, v in recs:
            expected[k].append(v)
    assert got == {k: sorted(v) for k, v in expected.items()}
    if limit == 1:
        assert sum(m.spills for m in sh.write_metrics) > 0 and sum(m.spills for m in sh.read_metrics) > 0


def test_skewed_keys(tmp_path: Path) -> None:
    rnd = random.Random(5)
    inputs = [[("hot" if rnd.random() < 0.9 else f"k{rnd.randrange(500)}", 1) for _ in range(40000)] for _ in range(2)]
    for combine in (True, False):
        sh = Shuffle(tmp_path / str(combine), dep_of(8, ADD, combine), limit=1)
        got = dict(r for p in sh.run(inputs) for r in p)
        assert got == summed(inputs) and got["hot"] > 70000


def test_empty_input(tmp_path: Path) -> None:
    for agg, combine, ordering in ((None, False, False), (ADD, True, False), (None, False, True)):
        part = RangePartitioner([10, 20]) if ordering else HashPartitioner(3)
        sh = Shuffle(tmp_path / f"{combine}{ordering}", dep_of(3, agg, combine, partitioner=part, key_ordering=ordering))
        st_ = sh.write(0, [])
        assert st_.offsets == [0, 0, 0, 0] and st_.records == [0, 0, 0]
        assert os.path.getsize(st_.data_path) == 0
        assert [sh.read([st_], r) for r in range(3)] == [[], [], []]
        assert sh.write_metrics[0].bytes_written == 0
    assert Shuffle(tmp_path / "none", dep_of(2)).run([]) == [[], []]  # no map tasks at all


# --- sortByKey ----------------------------------------------------------------------------------------
def sort_case(ascending: bool, keyfunc, limit: int, n: int = 30000):
    rnd = random.Random(11)
    inputs = [[(f"{rnd.randrange(10**6):06d}", f"v{i}") for i in range(n)] for _ in range(3)]
    sample = sorted((keyfunc or (lambda k: k))(k) for k, _ in rnd.sample(inputs[0], 200))
    bounds = [sample[50], sample[100], sample[150]]
    part = RangePartitioner(bounds, ascending=ascending, keyfunc=keyfunc)
    dep = dep_of(4, partitioner=part, key_ordering=True, ascending=ascending, sort_keyfunc=keyfunc)
    return inputs, dep


@pytest.mark.parametrize("limit", [BIG, 1])
@pytest.mark.parametrize("ascending", [True, False])
@pytest.mark.parametrize("keyed", [False, True])
def test_sort_by_key(tmp_path: Path, ascending: bool, keyed: bool, limit: int) -> None:
    keyfunc = (lambda k: k[::-1]) if keyed else None
    inputs, dep = sort_case(ascending, keyfunc, limit)
    sh = Shuffle(tmp_path, dep, limit)
    parts = sh.run(inputs)
    check_placement(dep, parts)
    sk = keyfunc or (lambda k: k)
    flat = [r for p in parts for r in p]
    keys = [sk(k) for k, _ in flat]
    assert keys == sorted(keys, reverse=not ascending)  # sorted within and across partitions
    assert Counter(flat) == Counter(r for recs in inputs for r in recs)
    assert all(len(p) > 1000 for p in parts)
    if limit == 1:
        assert sum(m.spills for m in sh.write_metrics) > 0 and sum(m.spills for m in sh.read_metrics) > 0
        no_stray_files(sh)


@pytest.mark.parametrize("ascending", [True, False])
def test_key_ordering_with_hash_partitioner(tmp_path: Path, ascending: bool) -> None:
    """repartitionAndSortWithinPartitions: any partitioner, each partition sorted."""
    rnd = random.Random(3)
    inputs = [[(rnd.randrange(10**5), i) for i in range(20000)] for _ in range(2)]
    dep = dep_of(5, key_ordering=True, ascending=ascending)
    parts = Shuffle(tmp_path, dep, limit=1).run(inputs)
    check_placement(dep, parts)
    for p in parts:
        keys = [k for k, _ in p]
        assert keys == sorted(keys, reverse=not ascending)
    assert Counter(r for p in parts for r in p) == Counter(r for recs in inputs for r in recs)


def test_range_partitioner_without_matching_keyfunc_still_sorts(tmp_path: Path) -> None:
    inputs = [[(i * 7919 % 10007, i) for i in range(10007)]]
    part = RangePartitioner([2500, 5000, 7500])  # ascending bounds, but the shuffle sorts descending
    dep = dep_of(4, partitioner=part, key_ordering=True, ascending=False)
    parts = Shuffle(tmp_path, dep).run(inputs)
    check_placement(dep, parts)
    for p in parts:
        assert [k for k, _ in p] == sorted((k for k, _ in p), reverse=True)


# --- spilling --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("combine", [True, False])
def test_tiny_memory_limit_spills_and_stays_exact(tmp_path: Path, combine: bool) -> None:
    inputs = [words(60000, 40000, seed) for seed in range(2)]
    sh = Shuffle(tmp_path, dep_of(2, ADD, combine), limit=1)
    parts = sh.run(inputs)
    assert dict(r for p in parts for r in p) == summed(inputs)
    assert all(m.spills > 0 and m.spilled_bytes > 0 for m in sh.write_metrics)
    assert sum(m.spills for m in sh.read_metrics) > 0
    no_stray_files(sh)


def test_plain_mode_spills(tmp_path: Path) -> None:
    inputs = [words(50000, 100, seed) for seed in range(2)]
    sh = Shuffle(tmp_path, dep_of(6), limit=1)
    parts = sh.run(inputs)
    assert Counter(r for p in parts for r in p) == Counter(r for recs in inputs for r in recs)
    assert all(m.spills > 0 for m in sh.write_metrics)
    no_stray_files(sh)


# --- commit -------------------------------------------------------------------------------------------------
def test_second_attempt_reports_the_committed_output(tmp_path: Path) -> None:
    sh = Shuffle(tmp_path, dep_of(3, ADD, True))
    first = sh.write(0, words(5000, 100, seed=1))
    with open(first.data_path, "rb") as f:
        before = f.read()
    again = sh.write(0, words(7000, 900, seed=2))  # a retry that computed other bytes
    assert again == first
    with open(first.data_path, "rb") as f:
        assert f.read() == before
    no_stray_files(sh)
    other = sh.write(1, words(7000, 900, seed=2))
    assert other.offsets != first.offsets


def test_concurrent_attempts_agree(tmp_path: Path) -> None:
    sh = Shuffle(tmp_path, dep_of(4))
    statuses: list[MapStatus] = []
    lock = threading.Lock()

    def attempt(seed: int) -> None:
        s = sh.write(0, words(20000, 500, seed))
        with lock:
            statuses.append(s)

    threads = [threading.Thread(target=attempt, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(s == statuses[0] for s in statuses)
    parts = [sh.read([statuses[0]], r) for r in range(4)]
    assert [len(p) for p in parts] == statuses[0].records
    no_stray_files(sh)


# --- fetch failures ------------------------------------------------------------------------------------------
def test_missing_status_fails_naming_the_map(tmp_path: Path) -> None:
    sh = Shuffle(tmp_path, dep_of(2))
    s0 = sh.write(0, words(100, 10))
    with pytest.raises(FetchFailed) as info:
        sh.read([s0, None], 0)
    assert (info.value.map_index, info.value.shuffle_id) == (1, 7)


def test_deleted_or_truncated_output_fails(tmp_path: Path) -> None:
    sh = Shuffle(tmp_path, dep_of(2))
    statuses = [sh.write(m, words(3000, 100, m)) for m in range(2)]
    with open(statuses[1].data_path, "r+b") as f:
        f.truncate(statuses[1].offsets[1] + 10)
    with pytest.raises(FetchFailed) as info:
        sh.read(statuses, 1)
    assert (info.value.map_index, info.value.node_id) == (1, NODE)
    os.unlink(statuses[0].data_path)
    with pytest.raises(FetchFailed) as info:  # not here, and no service to ask
        sh.read(statuses, 0)
    assert (info.value.map_index, info.value.node_id) == (0, NODE)
    with pytest.raises(FetchFailed) as info:  # on another node that has no service
        sh.read(statuses, 1, local_node="elsewhere")
    assert info.value.map_index == 0


def test_corrupt_output_fails(tmp_path: Path) -> None:
    sh = Shuffle(tmp_path, dep_of(1))
    s = sh.write(0, words(3000, 100))
    with open(s.data_path, "r+b") as f:
        f.seek(20)
        f.write(b"\xff" * 64)
    with pytest.raises(FetchFailed) as info:
        sh.read([s], 0)
    assert info.value.map_index == 0


def test_early_close_cleans_up(tmp_path: Path) -> None:
    sh = Shuffle(tmp_path, dep_of(1, GROUP, False), limit=1)
    s = sh.write(0, [(i % 5000, i) for i in range(60000)])
    it = read_reduce_partition([s], sh.dep, 0, shuffle_id=7, app_id=APP, local_node=NODE, secret=b"",
                               work_dir=sh.work, memory_limit_bytes=1, metrics=ShuffleReadMetrics())
    next(it)
    it.close()  # type: ignore[attr-defined]
    assert os.listdir(sh.work) == []


# --- property: any partition count and input aggregate like a dict -----------------------------------------------
keys = st.one_of(st.integers(-50, 50), st.text(max_size=3), st.tuples(st.integers(0, 3), st.text(max_size=2)))
records = st.lists(st.tuples(keys, st.integers(-1000, 1000)), max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    inputs=st.lists(records, min_size=1, max_size=4),
    partitions=st.integers(1, 9),
    combine=st.booleans(),
    generic=st.booleans(),
    spill=st.booleans(),
)
def test_property_aggregation_matches_a_dict(tmp_path_factory: pytest.TempPathFactory, inputs, partitions: int,
                                             combine: bool, generic: bool, spill: bool) -> None:
    agg = AVG if generic else ADD
    sh = Shuffle(tmp_path_factory.mktemp("prop"), dep_of(partitions, agg, combine), limit=1 if spill else BIG)
    parts = sh.run(inputs)
    expected: dict = {}
    for recs in inputs:
        for k, v in recs:
            expected[k] = agg.merge_value(expected[k], v) if k in expected else agg.create_combiner(v)
    got = [r for p in parts for r in p]
    assert dict(got) == expected and len(got) == len(expected)
    for r, p in enumerate(parts):
        assert all(portable_hash(k) % partitions == r for k, _ in p)


# --- a spill at every check (deterministic, through the writer class) ----------------------------------------------
@pytest.mark.parametrize("mode", ["combine", "sort", "plain"])
def test_writer_spilling_at_every_check(tmp_path: Path, mode: str) -> None:
    from shoal.compute.shuffle_write import MapOutputWriter

    rnd = random.Random(4)
    recs = [(rnd.randrange(5000), rnd.randrange(100)) for _ in range(20000)]
    if mode == "combine":
        dep = dep_of(3, ADD, True)
    elif mode == "sort":
        dep = dep_of(3, partitioner=RangePartitioner([1000, 3000]), key_ordering=True)
    else:
        dep = dep_of(3)
    metrics = ShuffleWriteMetrics()
    writer = MapOutputWriter(dep, work_dir=str(tmp_path / "work"), memory_limit_bytes=1, metrics=metrics,
                             batch_records=500, check_records=1000, spill_headroom=0)
    status = writer.write(recs, root=str(tmp_path / "shuffle"), app_id=APP, map_index=0, node_id=NODE, service=None)
    assert metrics.spills == 20  # one per check; the last check's data is spilled too, the tail is empty
    sh = Shuffle(tmp_path, dep)
    parts = [sh.read([status], r) for r in range(3)]
    check_placement(dep, parts)
    if mode == "combine":
        expected: dict = defaultdict(int)
        for k, v in recs:
            expected[k] += v
        assert dict(r for p in parts for r in p) == expected
    else:
        assert Counter(r for p in parts for r in p) == Counter(recs)
    if mode == "sort":
        flat = [k for p in parts for k, _ in p]
        assert flat == sorted(flat)
    assert os.listdir(tmp_path / "work") == []


@pytest.mark.parametrize("limit", [BIG, 1])
def test_aggregation_with_key_ordering(tmp_path: Path, limit: int) -> None:
    """An aggregator and key_ordering together: combined per key, then sorted."""
    inputs = [[(k % 5000, 1) for k in range(s, 40000, 3)] for s in range(3)]
    part = RangePartitioner([1000, 2500])
    sh = Shuffle(tmp_path, dep_of(3, ADD, True, partitioner=part, key_ordering=True), limit)
    parts = sh.run(inputs)
    flat = [r for p in parts for r in p]
    assert [k for k, _ in flat] == list(range(5000))
    assert dict(flat) == summed(inputs)
