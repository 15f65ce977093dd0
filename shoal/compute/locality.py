"""Locality levels and delay scheduling (pure).

Spark's TaskSetManager: a task prefers executors (a cached partition), hosts (its DFS
block's replicas) and, through them, racks. A free slot takes the pending task with
the best locality it allows; a task set may only fall back to a worse level after it
has launched nothing for ``wait_s`` at the current one ("delay scheduling", Zaharia
et al.), and it returns to the better level as soon as it launches there again.
Levels no pending task could use with the live executors are skipped, so a job whose
data lives on no executor's host does not wait at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum


class Level(IntEnum):
    PROCESS_LOCAL = 0
    NODE_LOCAL = 1
    NO_PREF = 2
    RACK_LOCAL = 3
    ANY = 4


@dataclass(frozen=True)
class Location:
    """One preferred place for a task: an executor, a host (node id), with its rack."""

    host: str = ""
    executor: str = ""
    rack: str = ""


@dataclass(frozen=True)
class ExecutorPlace:
    executor: str
    host: str
    rack: str


def level_of(prefs: Iterable[Location], place: ExecutorPlace) -> Level:
    """The locality a task with ``prefs`` gets when it runs on ``place``."""
    best = Level.ANY
    any_pref = False
    for loc in prefs:
        any_pref = True
        if loc.executor and loc.executor == place.executor:
            return Level.PROCESS_LOCAL
        if loc.host and loc.host == place.host:
            best = min(best, Level.NODE_LOCAL)
        elif loc.rack and loc.rack == place.rack:
            best = min(best, Level.RACK_LOCAL)
    if not any_pref:
        return Level.NO_PREF
    return best


def valid_levels(pending_prefs: Iterable[Iterable[Location]], places: Iterable[ExecutorPlace]) -> list[Level]:
    """The levels worth waiting for, best first (ANY always last)."""
    places = list(places)
    execs = {p.executor for p in places}
    hosts = {p.host for p in places}
    racks = {p.rack for p in places if p.rack}
    found: set[Level] = set()
    for prefs in pending_prefs:
        prefs = list(prefs)
        if not prefs:
            found.add(Level.NO_PREF)
            continue
        for loc in prefs:
            if loc.executor and loc.executor in execs:
                found.add(Level.PROCESS_LOCAL)
            if loc.host and loc.host in hosts:
                found.add(Level.NODE_LOCAL)
            if loc.rack and loc.rack in racks:
                found.add(Level.RACK_LOCAL)
    return sorted(found - {Level.ANY}) + [Level.ANY]


@dataclass
class DelayState:
    """Where one task set stands in its walk down the levels."""

    index: int = 0
    last_launch: float = 0.0
    level: Level | None = None  # levels[index] when last set: the valid levels change as tasks launch


def _level_index(levels: list[Level], level: Level) -> int:
    """The first of ``levels`` no better than ``level`` (Spark's getLocalityIndex)."""
    for i, lv in enumerate(levels):
        if lv >= level:
            return i
    return len(levels) - 1


def allowed_level(state: DelayState, levels: list[Level], waits: Mapping[Level, float], now: float) -> Level:
    """The worst level a launch may have now; advances ``state`` past expired waits."""
    if state.level is not None:
        # Find our level again in this list (as Spark's recomputeLocality does), not
        # the same position in it.
        state.index = _level_index(levels, state.level)
    state.index = min(state.index, len(levels) - 1)
    while state.index < len(levels) - 1:
        wait = waits.get(levels[state.index], 0.0)
        if now - state.last_launch < wait:
            break
        # Spark adds the wait rather than jumping to now, so a long idle period
        # walks through several levels at once.
        state.last_launch += wait
        state.index += 1
    state.level = levels[state.index]
    return state.level


def note_launch(state: DelayState, levels: list[Level], level: Level, now: float) -> None:
    """A task launched at ``level``: come back to that level and restart its timer."""
    state.index = _level_index(levels, level)
    state.level = levels[state.index]
    state.last_launch = now
