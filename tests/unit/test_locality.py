"""Tests for shoal.compute.locality: locality levels and delay scheduling (pure)."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.compute.locality import (
    DelayState,
    ExecutorPlace,
    Level,
    Location,
    allowed_level,
    level_of,
    note_launch,
    valid_levels,
)

HOSTS = ["hA", "hB", "hC"]
RACKS = ["", "r0", "r1"]
EXECS = ["e0", "e1", "e2"]
WAIT = 3.0
WAITS = {Level.PROCESS_LOCAL: WAIT, Level.NODE_LOCAL: WAIT, Level.NO_PREF: 0.0, Level.RACK_LOCAL: WAIT}

locations = st.builds(Location, host=st.sampled_from(["", *HOSTS]), executor=st.sampled_from(["", *EXECS]),
                      rack=st.sampled_from(RACKS))
places = st.builds(ExecutorPlace, executor=st.sampled_from(EXECS), host=st.sampled_from(HOSTS),
                   rack=st.sampled_from(RACKS))


def single(loc: Location, place: ExecutorPlace) -> Level:
    """The level one location gives, straight from the definitions."""
    if loc.executor and loc.executor == place.executor:
        return Level.PROCESS_LOCAL
    if loc.host and loc.host == place.host:
        return Level.NODE_LOCAL
    if loc.rack and loc.rack == place.rack:
        return Level.RACK_LOCAL
    return Level.ANY


# --- level_of --------------------------------------------------------------------------------
def test_level_of_examples() -> None:
    place = ExecutorPlace("e1", "hA", "r0")
    assert level_of([], place) == Level.NO_PREF
    assert level_of([Location(host="hA", executor="e1")], place) == Level.PROCESS_LOCAL
    assert level_of([Location(host="hA", executor="e9")], place) == Level.NODE_LOCAL
    assert level_of([Location(host="hB", rack="r0")], place) == Level.RACK_LOCAL
    assert level_of([Location(host="hB", rack="r1")], place) == Level.ANY
    assert level_of([Location(host="hB")], ExecutorPlace("e1", "hA", "")) == Level.ANY
    # An empty rack is no rack: two rack-less places are not rack-local.
    assert level_of([Location(host="hB", rack="")], ExecutorPlace("e1", "hA", "")) == Level.ANY
    assert level_of([Location(host="hB", rack="r0"), Location(host="hA")], place) == Level.NODE_LOCAL


@settings(max_examples=300, deadline=None)
@given(st.lists(locations, min_size=1, max_size=4), places)
def test_level_of_is_the_best_level_among_the_prefs(prefs: list[Location], place: ExecutorPlace) -> None:
    assert level_of(prefs, place) == min(single(loc, place) for loc in prefs)
    assert level_of(list(reversed(prefs)), place) == level_of(prefs, place)


# --- valid_levels ----------------------------------------------------------------------------
def test_valid_levels_examples() -> None:
    live = [ExecutorPlace("e0", "hA", "r0"), ExecutorPlace("e1", "hB", "r1")]
    assert valid_levels([], live) == [Level.ANY]
    assert valid_levels([[]], live) == [Level.NO_PREF, Level.ANY]
    assert valid_levels([[Location(host="hZ")]], live) == [Level.ANY]  # no executor there: no waiting
    assert valid_levels([[Location(host="hZ", rack="r1")]], live) == [Level.RACK_LOCAL, Level.ANY]
    assert valid_levels([[Location(host="hA", rack="r0")]], live) == [Level.NODE_LOCAL, Level.RACK_LOCAL, Level.ANY]
    assert valid_levels([[Location(host="hA", executor="e0")], []], live) == \
        [Level.PROCESS_LOCAL, Level.NODE_LOCAL, Level.NO_PREF, Level.ANY]
    assert valid_levels([[Location(host="hA", executor="e7")]], live) == [Level.NODE_LOCAL, Level.ANY]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(locations, max_size=3), max_size=5), st.lists(places, max_size=4))
def test_valid_levels_are_exactly_those_some_pending_task_gets_somewhere(
        pending: list[list[Location]], live: list[ExecutorPlace]) -> None:
    levels = valid_levels(pending, live)
    assert levels == sorted(set(levels)) and levels[-1] == Level.ANY
    reachable = {level_of(prefs, p) for prefs in pending for p in live}
    # Every level a pending task would get on a live executor is valid (ANY always is) ...
    assert reachable | {Level.ANY} <= set(levels) | {Level.ANY}
    # ... and a level is valid only for a pending task with a preference it could meet:
    # its executor, host or rack is alive (or, for NO_PREF, it has no preference).
    execs = {p.executor for p in live}
    hosts = {p.host for p in live}
    racks = {p.rack for p in live if p.rack}
    could = {
        Level.PROCESS_LOCAL: any(loc.executor in execs for prefs in pending for loc in prefs if loc.executor),
        Level.NODE_LOCAL: any(loc.host in hosts for prefs in pending for loc in prefs if loc.host),
        Level.RACK_LOCAL: any(loc.rack in racks for prefs in pending for loc in prefs if loc.rack),
        Level.NO_PREF: any(not prefs for prefs in pending),
    }
    assert set(levels[:-1]) == {lv for lv, ok in could.items() if ok}


# --- allowed_level and note_launch -------------------------------------------------------------
def test_allowed_level_walks_down_after_each_wait() -> None:
    levels = [Level.NODE_LOCAL, Level.RACK_LOCAL, Level.ANY]
    state = DelayState(last_launch=10.0)
    assert allowed_level(state, levels, WAITS, 12.9) == Level.NODE_LOCAL
    assert allowed_level(state, levels, WAITS, 13.0) == Level.RACK_LOCAL
    assert allowed_level(state, levels, WAITS, 15.9) == Level.RACK_LOCAL
    assert allowed_level(state, levels, WAITS, 16.0) == Level.ANY


def test_a_long_idle_period_walks_several_levels_at_once() -> None:
    levels = [Level.PROCESS_LOCAL, Level.NODE_LOCAL, Level.NO_PREF, Level.RACK_LOCAL, Level.ANY]
    state = DelayState(last_launch=0.0)
    assert allowed_level(state, levels, WAITS, 6.5) == Level.RACK_LOCAL  # 3 + 3 + 0 elapsed, 0.5 into rack
    assert state.last_launch == 6.0
    assert allowed_level(copy.deepcopy(state), levels, WAITS, 9.0) == Level.ANY


def test_note_launch_returns_to_the_launch_level_and_restarts_the_timer() -> None:
    levels = [Level.NODE_LOCAL, Level.RACK_LOCAL, Level.ANY]
    state = DelayState(last_launch=0.0)
    assert allowed_level(state, levels, WAITS, 100.0) == Level.ANY
    note_launch(state, levels, Level.NODE_LOCAL, 100.0)
    assert allowed_level(state, levels, WAITS, 102.0) == Level.NODE_LOCAL
    assert allowed_level(state, levels, WAITS, 103.0) == Level.RACK_LOCAL
    # A launch at a level not in the list counts as the next worse one in it.
    note_launch(state, [Level.NODE_LOCAL, Level.ANY], Level.RACK_LOCAL, 200.0)
    assert state.index == 1 and state.last_launch == 200.0


def test_allowed_level_keeps_its_level_when_the_valid_levels_change() -> None:
    state = DelayState(last_launch=0.0)
    assert allowed_level(state, [Level.NODE_LOCAL, Level.RACK_LOCAL, Level.ANY], WAITS, 3.0) == Level.RACK_LOCAL
    note_launch(state, [Level.NODE_LOCAL, Level.RACK_LOCAL, Level.ANY], Level.RACK_LOCAL, 3.0)
    # The last node-local task went: NODE_LOCAL is no longer valid. Still RACK_LOCAL,
    # until its own wait runs out.
    assert allowed_level(state, [Level.RACK_LOCAL, Level.ANY], WAITS, 3.5) == Level.RACK_LOCAL
    assert allowed_level(state, [Level.RACK_LOCAL, Level.ANY], WAITS, 6.0) == Level.ANY
    # A better level appearing (a cached copy's executor came back) does not make a
    # task set that had given up on locality wait again.
    assert allowed_level(state, [Level.PROCESS_LOCAL, Level.RACK_LOCAL, Level.ANY], WAITS, 6.1) == Level.ANY


level_lists = st.sets(st.sampled_from([Level.PROCESS_LOCAL, Level.NODE_LOCAL, Level.NO_PREF, Level.RACK_LOCAL]))\
    .map(lambda s: sorted(s) + [Level.ANY])


@settings(max_examples=300, deadline=None)
@given(level_lists, st.floats(0, 50), st.lists(st.floats(0, 20), min_size=1, max_size=6),
       st.lists(st.floats(0, 20), min_size=1, max_size=6))
def test_allowed_level_is_monotone_in_time(levels: list[Level], start: float, a: list[float],
                                            b: list[float]) -> None:
    state = DelayState(last_launch=start)
    # Asked at later and later times, the allowed level only gets worse ...
    seen = []
    now = start
    for dt in a:
        now += dt
        seen.append(allowed_level(state, levels, WAITS, now))
    assert seen == sorted(seen)
    # ... and for one state, a later question never gets a better answer than an earlier one.
    t1, t2 = sorted([start + sum(a), start + sum(a) + sum(b)])
    fresh = DelayState(last_launch=start)
    early = allowed_level(copy.deepcopy(fresh), levels, WAITS, t1)
    late = allowed_level(copy.deepcopy(fresh), levels, WAITS, t2)
    assert early <= late
    # All the waits elapsed: anything goes.
    total = sum(WAITS.get(lv, 0.0) for lv in levels[:-1])
    assert allowed_level(DelayState(last_launch=start), levels, WAITS, start + total + 1e-6) == Level.ANY
    assert allowed_level(DelayState(last_launch=start), levels, WAITS, start) == \
        next(lv for lv in levels if WAITS.get(lv, 0.0) > 0 or lv == Level.ANY)


@settings(max_examples=300, deadline=None)
@given(level_lists, st.floats(0, 50), st.floats(0, 50), st.sampled_from(list(Level)))
def test_note_launch_resets(levels: list[Level], start: float, idle: float, launched: Level) -> None:
    state = DelayState(last_launch=start)
    allowed_level(state, levels, WAITS, start + idle)
    now = start + idle
    note_launch(state, levels, launched, now)
    assert state.last_launch == now
    back = levels[state.index]
    assert back >= launched and all(lv < launched for lv in levels[:state.index])
    # Right after a launch the task set is at the launch's level (or the next valid
    # worse one), with a full wait ahead of it.
    if WAITS.get(back, 0.0) > 0:
        assert allowed_level(state, levels, WAITS, now) == back
        assert allowed_level(copy.deepcopy(state), levels, WAITS, now + WAITS[back] - 0.01) == back
