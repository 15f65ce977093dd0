"""Tests for shoal.cluster.resources: Mesos-syntax resource vectors, attributes, constraints."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.cluster.resources import (
    Resources,
    dominant_share,
    parse_attributes,
    parse_constraint,
    parse_resources,
    range_count,
)
from shoal.errors import InvalidResources

KINDS = ["cpus", "mem", "disk", "gpus"]

# Fixed-point amounts (three decimals), as every Resources value is.
amounts = st.integers(min_value=1, max_value=10**8).map(lambda n: n / 1000)
scalar_maps = st.dictionaries(st.sampled_from(KINDS), amounts, max_size=4)
port_lists = st.lists(
    st.tuples(st.integers(1, 65535), st.integers(0, 300)).map(lambda t: (t[0], min(65535, t[0] + t[1]))),
    max_size=5,
)


@st.composite
def resources(draw: st.DrawFn) -> Resources:
    res = Resources.of(draw(scalar_maps))
    ports = draw(port_lists)
    return res.with_ranges("ports", ports) if ports else res


def ports_of(res: Resources) -> set[int]:
    return {p for lo, hi in res.ports() for p in range(lo, hi + 1)}


# --- parsing ---------------------------------------------------------------------------
def test_parse_mesos_resources() -> None:
    res = parse_resources("cpus:24;mem:24576;disk:409600;ports:[21000-24000,25000-25010]")
    assert res.scalars == {"cpus": 24.0, "mem": 24576.0, "disk": 409600.0}
    assert res.ports() == ((21000, 24000), (25000, 25010))
    assert res.cpus == 24 and res.mem == 24576


def test_parse_memory_suffixes_and_spaces() -> None:
    assert parse_resources(" mem : 2G ; disk:1T").scalars == {"mem": 2048.0, "disk": 1024.0 * 1024}
    assert parse_resources("mem:512M").mem == 512
    assert parse_resources("mem:1.5GiB").mem == 1536


def test_parse_merges_adjacent_and_overlapping_ranges() -> None:
    assert parse_resources("ports:[5-7,1-3,4-4,6-10]").ports() == ((1, 10),)
    assert parse_resources("ports:[80]").ports() == ((80, 80),)


def test_parse_empty_and_zero() -> None:
    assert parse_resources("").is_empty()
    assert parse_resources("cpus:0;mem:0").is_empty()  # zero kinds are dropped


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cpus", "expected name:value"),
        (":4", "expected name:value"),
        ("cpus:abc", "bad value for resource cpus"),
        ("cpus:-1", "must not be negative"),
        ("cpus:1;cpus:2", "given twice"),
        ("1cpus:1", "bad resource name"),
        ("cpus:2G", "bad value for resource cpus"),
        ("mem:2X", "bad value for resource mem"),
        ("ports:[5-3]", "bad range '5-3'"),
        ("ports:[70000]", "bad range"),
        ("ports:[a-b]", "bad range 'a-b'"),
        ("ports:31000", "takes ranges like"),
    ],
)
def test_parse_rejects_bad_input_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(InvalidResources, match=message):
        parse_resources(text)


def test_parse_attributes_and_constraints() -> None:
    assert parse_attributes("rack:r1; zone:west") == {"rack": "r1", "zone": "west"}
    assert parse_attributes("") == {}
    with pytest.raises(InvalidResources, match="expected name:value"):
        parse_attributes("rack")
    with pytest.raises(InvalidResources, match="expected name:value"):
        parse_attributes("rack:")
    assert parse_constraint(" rack = r1 ") == ("rack", "r1")
    for bad in ("rack", "rack=", "=r1", "1x=r1"):
        with pytest.raises(InvalidResources, match="expected attribute=value"):
            parse_constraint(bad)


# --- construction ----------------------------------------------------------------------
@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), True, "3"])
def test_of_rejects_bad_amounts(value: object) -> None:
    with pytest.raises(InvalidResources, match="cpus"):
        Resources.of(cpus=value)  # type: ignore[arg-type]


def test_of_rejects_bad_names() -> None:
    with pytest.raises(InvalidResources, match="bad resource name"):
        Resources.of({"my cpus": 1})


def test_fixed_point_cancels_exactly() -> None:
    a = Resources.of(cpus=0.1) + Resources.of(cpus=0.2)
    assert a == Resources.of(cpus=0.3)
    assert (a - Resources.of(cpus=0.3)).is_empty()
    assert Resources.of(cpus=0.0004).is_empty()  # below the third decimal
    total = Resources()
    for _ in range(1000):
        total = total + Resources.of(cpus=0.001)
    assert total.scalars == {"cpus": 1.0}


def test_subtract_needs_containment() -> None:
    with pytest.raises(InvalidResources, match="cannot subtract"):
        Resources.of(cpus=1) - Resources.of(cpus=2)
    with pytest.raises(InvalidResources, match="cannot subtract"):
        Resources.of(cpus=1) - Resources.of(gpus=1)
    ports = Resources().with_ranges("ports", [(10, 20)])
    with pytest.raises(InvalidResources):
        ports - Resources().with_ranges("ports", [(19, 21)])
    assert (ports - Resources().with_ranges("ports", [(12, 13)])).ports() == ((10, 11), (14, 20))


def test_format_and_describe() -> None:
    res = Resources.of(cpus=0.5, mem=256, disk=1024).with_ranges("ports", [(31000, 31000), (31002, 31005)])
    assert res.format() == "cpus:0.5;disk:1024;mem:256;ports:[31000-31000,31002-31005]"
    assert res.describe() == "0.5 cpus, 256 MiB, 1024 MiB disk, ports 31000,31002-31005"
    assert Resources().format() == "(none)" and Resources().describe() == "-"


def test_format_keeps_every_digit() -> None:
    res = Resources.of(mem=100000.5, cpus=12345.678)
    assert res.format() == "cpus:12345.678;mem:100000.5"
    assert parse_resources(res.format()) == res


def test_take_ports_takes_the_lowest() -> None:
    res = Resources.of(cpus=1).with_ranges("ports", [(31000, 31001), (31005, 31010)])
    picked, taken = res.take_ports(3)
    assert picked == [31000, 31001, 31005]
    assert taken.ports() == ((31000, 31001), (31005, 31005))
    assert (res - taken).ports() == ((31006, 31010),)
    with pytest.raises(InvalidResources, match="asked for 9 ports, only 8 available"):
        res.take_ports(9)
    assert res.take_ports(0) == ([], Resources())


def test_dominant_share_ignores_kinds_the_cluster_lacks() -> None:
    total = Resources.of(cpus=9, mem=18)
    assert dominant_share(Resources.of(cpus=3, mem=12), total) == pytest.approx(2 / 3)
    assert dominant_share(Resources.of(gpus=5, cpus=0.9), total) == pytest.approx(0.1)
    assert dominant_share(Resources(), total) == 0.0


# --- properties --------------------------------------------------------------------------
@given(resources(), resources())
@settings(max_examples=200, deadline=None)
def test_add_then_subtract_round_trips(a: Resources, b: Resources) -> None:
    s = a + b
    assert s.contains(a) and s.contains(b)
    # Ports of a and b may overlap, so only the scalar parts round-trip exactly.
    assert (s.scalar_only() - b.scalar_only()) == a.scalar_only()
    assert ports_of(s) == ports_of(a) | ports_of(b)
    assert s == b + a


@given(resources(), resources())
@settings(max_examples=200, deadline=None)
def test_subtract_then_add_round_trips(a: Resources, b: Resources) -> None:
    total = a + b
    rest = total - b
    assert rest + b == total
    assert total.contains(rest)
    assert ports_of(rest) == ports_of(total) - ports_of(b)


@given(resources(), resources())
@settings(max_examples=200, deadline=None)
def test_subtract_raises_exactly_when_not_contained(a: Resources, b: Resources) -> None:
    if a.contains(b):
        rest = a - b
        assert rest + b == a
        assert not (ports_of(rest) & ports_of(b))
    else:
        with pytest.raises(InvalidResources):
            a - b


@given(resources())
@settings(max_examples=200, deadline=None)
def test_format_parse_round_trip(res: Resources) -> None:
    if res.is_empty():
        assert res.format() == "(none)"  # a display form, not Mesos text
        return
    assert parse_resources(res.format()) == res


@given(st.lists(st.sampled_from([0.1, 0.2, 0.3, 0.001, 0.7, 1.5]), max_size=30))
@settings(max_examples=100, deadline=None)
def test_fixed_point_never_drifts(parts: list[float]) -> None:
    total = Resources()
    for p in parts:
        total = total + Resources.of(cpus=p)
    for p in reversed(parts):
        total = total - Resources.of(cpus=p)
    assert total.is_empty()


@given(resources(), st.integers(0, 50))
@settings(max_examples=200, deadline=None)
def test_take_ports_properties(res: Resources, count: int) -> None:
    available = range_count(res.ports())
    if count > available:
        with pytest.raises(InvalidResources):
            res.take_ports(count)
        return
    picked, taken = res.take_ports(count)
    assert len(picked) == len(set(picked)) == count == range_count(taken.ports())
    assert set(picked) == ports_of(taken) and set(picked) <= ports_of(res)
    assert picked == sorted(ports_of(res))[:count]
    assert (res - taken) + taken == res
