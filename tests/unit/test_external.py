"""ExternalMerger and ExternalSorter: exact results whether or not they spill, spill
files removed afterwards, and aggregation of more data than the memory limit."""

from __future__ import annotations

import operator
import os
import random
from collections import defaultdict
from pathlib import Path

import pytest

from shoal.compute import external
from shoal.compute.dependencies import Aggregator
from shoal.compute.external import ExternalMerger, ExternalSorter, MemoryProbe, combine_into

ADD = Aggregator(lambda v: v, operator.add, operator.add, identity_create=True, merge_kind="add")
GROUP = Aggregator(lambda v: [v], lambda c, v: c.append(v) or c, lambda a, b: a.extend(b) or a)
BIG = 1 << 40


def test_memory_probe_reads_rss() -> None:
    probe = MemoryProbe(1, check_records=10)
    try:
        rss = probe.rss()
        assert rss > 1 << 20
        assert not probe.due(5) and probe.due(10)
        assert probe.over(10) and not probe.due(15) and probe.due(20)
        probe.spilled(20)  # RSS stays over a 1-byte limit: the threshold rises above it
        # (spilled() trims the heap first, so compare with RSS measured after it)
        assert probe.threshold > 1 << 20 and probe.threshold > probe.rss() and not probe.over(30)
    finally:
        probe.close()
    eager = MemoryProbe(1, check_records=10, headroom=0)  # spills at every check
    eager.spilled(10)
    assert eager.threshold == 1 and eager.over(20)
    eager.close()


@pytest.mark.parametrize("agg", ["add", "group", "generic"])
@pytest.mark.parametrize("combined", [False, True])
def test_combine_into_matches_naive(agg: str, combined: bool) -> None:
    aggregator = {"add": ADD, "group": GROUP,
                  "generic": Aggregator(lambda v: (v,), lambda c, v: c + (v,), operator.add)}[agg]
    rnd = random.Random(2)
    recs = [(rnd.randrange(50), rnd.randrange(3)) for _ in range(3000)]
    if combined:
        recs = [(k, aggregator.create_combiner(v)) for k, v in recs]
    d: dict = {}
    combine_into(d, recs, aggregator, combined)
    expected: dict = {}
    for k, v in recs:
        if k in expected:
            expected[k] = (aggregator.merge_combiners if combined else aggregator.merge_value)(expected[k], v)
        else:
            expected[k] = v if combined else aggregator.create_combiner(v)
    assert d == expected


def test_word_count_fast_path() -> None:
    d: dict = {"a": 2}
    combine_into(d, [("a", 1), ("b", 1), ("a", 1)], ADD, False)
    assert d == {"a": 4, "b": 1}
    combine_into(d, [("a", 1), ("b", 1.0)], ADD, False)  # not all ints: the generic add loop
    assert d == {"a": 5, "b": 2.0} and type(d["b"]) is float


@pytest.mark.parametrize("limit", [BIG, 1])
def test_merger_exact_with_and_without_spills(tmp_path: Path, limit: int) -> None:
    rnd = random.Random(7)
    recs = [(f"k{rnd.randrange(20000)}", rnd.randrange(100)) for _ in range(100000)]
    m = ExternalMerger(ADD, work_dir=str(tmp_path), memory_limit_bytes=limit, check_records=1000, spill_headroom=0)
    m.merge_values(recs)
    got = list(m.items())
    expected: dict = defaultdict(int)
    for k, v in recs:
        expected[k] += v
    assert dict(got) == expected and len(got) == len(expected)
    assert (m.spills >= 99) == (limit == 1)  # a spill per check
    assert os.listdir(tmp_path) == []


def test_merger_recursion_reaches_max_depth(tmp_path: Path) -> None:
    """With a 1-byte limit every sub-partition spills again, down to MERGE_DEPTH_MAX."""
    recs = [(i % 3000, [i]) for i in range(30000)]
    m = ExternalMerger(GROUP, work_dir=str(tmp_path), memory_limit_bytes=1, check_records=100, spill_headroom=0)
    m.merge_combiners(recs)
    got = {k: sorted(v) for k, v in m.items()}
    assert got == {k: list(range(k, 30000, 3000)) for k in range(3000)}
    assert m.spills > external.SUBPARTITIONS  # nested mergers spilled too
    assert os.listdir(tmp_path) == []


def test_group_by_key_over_more_data_than_the_limit(tmp_path: Path) -> None:
    """~150 MB of values through a merger allowed ~40 MB above the current RSS."""
    probe = MemoryProbe(0)
    limit = probe.rss() + (40 << 20)
    probe.close()
    keys, per_key = 5000, 30
    m = ExternalMerger(GROUP, work_dir=str(tmp_path), memory_limit_bytes=limit)
    m.merge_values((i % keys, str(i).rjust(1000, "x")) for i in range(keys * per_key))  # distinct 1 KB values
    count = total = 0
    for k, vs in m.items():
        count += 1
        total += len(vs)
        assert sorted(int(v.lstrip("x")) for v in vs) == list(range(k, keys * per_key, keys))
    assert (count, total) == (keys, keys * per_key)
    assert m.spills > 0 and m.spilled_bytes > 0
    assert os.listdir(tmp_path) == []


def test_merger_early_close_removes_spills(tmp_path: Path) -> None:
    m = ExternalMerger(ADD, work_dir=str(tmp_path), memory_limit_bytes=1, check_records=100)
    m.merge_values((i, 1) for i in range(10000))
    it = m.items()
    next(it)
    it.close()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("limit", [BIG, 1])
@pytest.mark.parametrize("ascending", [True, False])
@pytest.mark.parametrize("keyfunc", [None, str.lower], ids=["identity", "lower"])
def test_sorter(tmp_path: Path, limit: int, ascending: bool, keyfunc) -> None:
    rnd = random.Random(9)
    recs = [("".join(rnd.choice("aAbBcC") for _ in range(5)), i) for i in range(40000)]
    s = ExternalSorter(work_dir=str(tmp_path), memory_limit_bytes=limit, keyfunc=keyfunc, ascending=ascending,
                       check_records=2000, spill_headroom=0)
    s.add(recs)
    out = list(s.sorted_records())
    kf = keyfunc or (lambda k: k)
    assert [kf(k) for k, _ in out] == sorted((kf(k) for k, _ in recs), reverse=not ascending)
    assert sorted(out) == sorted(recs)
    assert (s.spills >= 19) == (limit == 1)  # a run per check
    assert os.listdir(tmp_path) == []


def test_sorter_merges_presorted_runs(tmp_path: Path) -> None:
    runs = [sorted((random.random(), r) for _ in range(5000)) for r in range(4)]
    s = ExternalSorter(work_dir=str(tmp_path), memory_limit_bytes=BIG)
    s.add_batches(runs)
    out = list(s.sorted_records())
    assert out == sorted(x for run in runs for x in run)


def test_sorter_early_close_removes_runs(tmp_path: Path) -> None:
    s = ExternalSorter(work_dir=str(tmp_path), memory_limit_bytes=1, check_records=100)
    s.add((i, i) for i in range(5000))
    it = s.sorted_records()
    assert next(it) == (0, 0)
    it.close()
    assert os.listdir(tmp_path) == []
