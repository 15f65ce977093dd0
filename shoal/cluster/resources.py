"""Resource vectors and attributes in Mesos syntax (pure).

A :class:`Resources` value holds scalar kinds (``cpus``, ``mem`` and ``disk`` in MiB,
``gpus``, or any other name) and range kinds (``ports``). Text forms follow Mesos:
``cpus:24;mem:24576;disk:409600;ports:[21000-24000,25000-25010]`` for resources and
``rack:r1;zone:west`` for attributes. Scalars keep three decimals, as Mesos does, so
repeated add/subtract never drifts (0.1 + 0.2 - 0.3 is exactly 0 here).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

import msgspec

from shoal.errors import InvalidResources

Range = tuple[int, int]  # inclusive, begin <= end

SCALE = 1000  # three decimals, like Mesos' fixed-point scalars
RANGE_KINDS = frozenset({"ports"})
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
SIZE_SUFFIX = {"": 1.0, "M": 1.0, "MB": 1.0, "MIB": 1.0, "G": 1024.0, "GB": 1024.0, "GIB": 1024.0,
               "K": 1 / 1024, "KB": 1 / 1024, "KIB": 1 / 1024, "T": 1024.0**2, "TB": 1024.0**2, "TIB": 1024.0**2}
MEMORY_KINDS = frozenset({"mem", "disk"})


def _fix(value: float) -> float:
    return round(value * SCALE) / SCALE


def _merge(ranges: Iterable[Range]) -> tuple[Range, ...]:
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def _subtract_ranges(have: tuple[Range, ...], take: tuple[Range, ...]) -> tuple[Range, ...]:
    out: list[Range] = []
    for lo, hi in have:
        pieces = [(lo, hi)]
        for tlo, thi in take:
            nxt = []
            for plo, phi in pieces:
                if thi < plo or tlo > phi:
                    nxt.append((plo, phi))
                    continue
                if plo < tlo:
                    nxt.append((plo, tlo - 1))
                if thi < phi:
                    nxt.append((thi + 1, phi))
            pieces = nxt
        out.extend(pieces)
    return _merge(out)


def _ranges_contain(have: tuple[Range, ...], want: tuple[Range, ...]) -> bool:
    return all(any(lo <= wlo and whi <= hi for lo, hi in have) for wlo, whi in want)


def range_count(ranges: Iterable[Range]) -> int:
    return sum(hi - lo + 1 for lo, hi in ranges)


class Resources(msgspec.Struct, frozen=True, gc=False):
    """An immutable vector of scalar and range resources; absent kinds are zero."""

    scalars: dict[str, float] = {}
    ranges: dict[str, tuple[Range, ...]] = {}

    @classmethod
    def of(cls, scalars: Mapping[str, float] | None = None, **kinds: float) -> Resources:
        """``Resources.of(cpus=1, mem=256)``; zero kinds are dropped."""
        merged = dict(scalars or {}, **kinds)
        for name, value in merged.items():
            _check_scalar(name, value)
        return cls({k: _fix(v) for k, v in merged.items() if _fix(v) != 0})

    def with_ranges(self, name: str, ranges: Iterable[Range]) -> Resources:
        merged = _merge(ranges)
        new = dict(self.ranges)
        if merged:
            new[name] = merged
        else:
            new.pop(name, None)
        return Resources(dict(self.scalars), new)

    def get(self, name: str) -> float:
        return self.scalars.get(name, 0.0)

    @property
    def cpus(self) -> float:
        return self.get("cpus")

    @property
    def mem(self) -> float:
        return self.get("mem")

    def ports(self) -> tuple[Range, ...]:
        return self.ranges.get("ports", ())

    def is_empty(self) -> bool:
        return not self.scalars and not self.ranges

    def kinds(self) -> set[str]:
        return set(self.scalars) | set(self.ranges)

    def __add__(self, other: Resources) -> Resources:
        scalars = dict(self.scalars)
        for k, v in other.scalars.items():
            scalars[k] = _fix(scalars.get(k, 0.0) + v)
        ranges = dict(self.ranges)
        for k, r in other.ranges.items():
            ranges[k] = _merge(ranges.get(k, ()) + r)
        return Resources({k: v for k, v in scalars.items() if v != 0}, ranges)

    def __sub__(self, other: Resources) -> Resources:
        """Difference; raises :class:`InvalidResources` if ``other`` is not contained."""
        if not self.contains(other):
            raise InvalidResources(f"cannot subtract {other.format()} from {self.format()}")
        scalars = dict(self.scalars)
        for k, v in other.scalars.items():
            scalars[k] = _fix(scalars.get(k, 0.0) - v)
        ranges = dict(self.ranges)
        for k, r in other.ranges.items():
            ranges[k] = _subtract_ranges(ranges.get(k, ()), r)
        return Resources({k: v for k, v in scalars.items() if v != 0}, {k: r for k, r in ranges.items() if r})

    def contains(self, other: Resources) -> bool:
        """True if ``other`` fits inside this vector (every kind, every port)."""
        for k, v in other.scalars.items():
            if v > self.scalars.get(k, 0.0) + 1e-9:
                return False
        for k, r in other.ranges.items():
            if not _ranges_contain(self.ranges.get(k, ()), r):
                return False
        return True

    def scalar_only(self) -> Resources:
        return Resources(dict(self.scalars))

    def take_ports(self, count: int) -> tuple[list[int], Resources]:
        """Pick the lowest ``count`` ports; returns them and the resources they form."""
        picked: list[int] = []
        for lo, hi in self.ports():
            for port in range(lo, hi + 1):
                if len(picked) == count:
                    break
                picked.append(port)
        if len(picked) < count:
            raise InvalidResources(f"asked for {count} ports, only {len(picked)} available")
        return picked, Resources().with_ranges("ports", [(p, p) for p in picked])

    def format(self) -> str:
        """Mesos text form: ``cpus:1;mem:256;ports:[31000-31000]``."""
        parts = [f"{k}:{_num(v)}" for k, v in sorted(self.scalars.items())]
        parts += [
            f"{k}:[{','.join(f'{lo}-{hi}' for lo, hi in r)}]" for k, r in sorted(self.ranges.items())
        ]
        return ";".join(parts) or "(none)"

    def describe(self) -> str:
        """Short human form for tables: ``0.5 cpus, 256 MiB``."""
        parts = []
        order = {"cpus": 0, "mem": 1, "disk": 2}
        for k, v in sorted(self.scalars.items(), key=lambda kv: (order.get(kv[0], 3), kv[0])):
            parts.append(f"{_num(v)} MiB" if k == "mem" else f"{_num(v)} MiB disk" if k == "disk" else f"{_num(v)} {k}")
        for k, r in sorted(self.ranges.items()):
            parts.append(f"{k} " + ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in r))
        return ", ".join(parts) or "-"


def _num(v: float) -> str:
    # Every digit of a fixed-point value (":g" would round 100000.5 to "100000").
    return str(int(v)) if v == int(v) else f"{v:.3f}".rstrip("0").rstrip(".")


def _check_scalar(name: str, value: float) -> None:
    if not NAME.match(name):
        raise InvalidResources(f"bad resource name {name!r}")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value) or math.isinf(value):
        raise InvalidResources(f"resource {name} must be a finite number, got {value!r}")
    if value < 0:
        raise InvalidResources(f"resource {name} must not be negative, got {value:g}")


def _parse_scalar(name: str, text: str) -> float:
    text = text.strip()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([A-Za-z]*)", text)
    if not m:
        if re.fullmatch(r"-\s*[0-9.]+.*", text):
            raise InvalidResources(f"resource {name} must not be negative, got {text}")
        raise InvalidResources(f"bad value for resource {name}: {text!r} (expected a number)")
    value, suffix = float(m.group(1)), m.group(2).upper()
    if suffix:
        if name not in MEMORY_KINDS or suffix not in SIZE_SUFFIX:
            raise InvalidResources(f"bad value for resource {name}: {text!r}")
        value *= SIZE_SUFFIX[suffix]
    _check_scalar(name, value)
    return value


def _parse_ranges(name: str, text: str) -> list[Range]:
    m = re.fullmatch(r"\[(.*)\]", text.strip())
    if not m:
        raise InvalidResources(f"resource {name} takes ranges like [31000-32000], got {text!r}")
    out: list[Range] = []
    for part in filter(None, (s.strip() for s in m.group(1).split(","))):
        rm = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part) or re.fullmatch(r"(\d+)()", part)
        if not rm:
            raise InvalidResources(f"bad range {part!r} in resource {name}")
        lo = int(rm.group(1))
        hi = int(rm.group(2)) if rm.group(2) else lo
        if lo > hi or hi > 65535:
            raise InvalidResources(f"bad range {part!r} in resource {name}")
        out.append((lo, hi))
    return out


def parse_resources(text: str, sep: str = ";", assign: str = ":") -> Resources:
    """Parse ``cpus:24;mem:24576;disk:409600;ports:[21000-24000]`` (Mesos ``--resources``).

    Memory and disk are MiB; ``mem:2G`` and ``mem:512M`` are accepted too.
    """
    scalars: dict[str, float] = {}
    ranges: dict[str, list[Range]] = {}
    # Split on ``sep`` outside brackets, so port lists may contain commas.
    items = re.split(rf"{re.escape(sep)}(?![^\[]*\])", text.strip())
    for item in filter(None, (s.strip() for s in items)):
        name, found, value = item.partition(assign)
        name = name.strip()
        if not found or not name:
            raise InvalidResources(f"bad resource {item!r}: expected name{assign}value")
        if not NAME.match(name):
            raise InvalidResources(f"bad resource name {name!r}")
        if name in scalars or name in ranges:
            raise InvalidResources(f"resource {name} given twice")
        if value.strip().startswith("[") or name in RANGE_KINDS:
            ranges[name] = _parse_ranges(name, value)
        else:
            scalars[name] = _parse_scalar(name, value)
    res = Resources.of(scalars)
    for name, r in ranges.items():
        res = res.with_ranges(name, r)
    return res


def parse_attributes(text: str) -> dict[str, str]:
    """Parse ``rack:r1;zone:west`` (Mesos ``--attributes``)."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(";"))):
        name, found, value = item.partition(":")
        name, value = name.strip(), value.strip()
        if not found or not NAME.match(name) or not value:
            raise InvalidResources(f"bad attribute {item!r}: expected name:value")
        out[name] = value
    return out


def parse_constraint(text: str) -> tuple[str, str]:
    """Parse ``rack=r1`` (an attribute, or ``hostname``/``node``, that must equal a value)."""
    name, found, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not found or not NAME.match(name) or not value:
        raise InvalidResources(f"bad constraint {text!r}: expected attribute=value, e.g. rack=r1")
    return name, value


def dominant_share(allocated: Resources, total: Resources) -> float:
    """max over scalar kinds of allocated/total (kinds the cluster lacks are ignored)."""
    share = 0.0
    for k, v in allocated.scalars.items():
        t = total.scalars.get(k, 0.0)
        if t > 0:
            share = max(share, v / t)
    return share


def attribute_of(agent_id: str, host: str, rack: str, attributes: Mapping[str, str], name: str) -> str | None:
    """The value a constraint ``name=value`` is checked against (Marathon's field names:
    ``hostname``, plus ``node`` for the agent id, ``rack`` and any agent attribute)."""
    if name in ("hostname", "host"):
        return host
    if name in ("node", "agent"):
        return agent_id
    if name == "rack":
        return attributes.get("rack", rack)
    return attributes.get(name)


def satisfies(agent_id: str, host: str, rack: str, attributes: Mapping[str, str],
              constraints: Iterable[tuple[str, str]]) -> bool:
    return all(attribute_of(agent_id, host, rack, attributes, k) == v for k, v in constraints)


def normalized(res: Resources, what: str) -> Resources:
    """``res`` in canonical form, refusing negative amounts and malformed ranges."""
    if _canonical(res):
        return res
    try:
        out = Resources.of(res.scalars)
    except InvalidResources as exc:
        raise InvalidResources(f"{what}: {exc}") from None
    for name, ranges in res.ranges.items():
        if any(not (0 <= lo <= hi) for lo, hi in ranges):
            raise InvalidResources(f"{what}: bad {name} ranges {list(ranges)}")
        out = out.with_ranges(name, ranges)
    return out


def _canonical(res: Resources) -> bool:
    """Fast path of :func:`normalized`: positive fixed-point scalars, sorted disjoint ranges."""
    for v in res.scalars.values():
        if not (0 < v < math.inf) or round(v * SCALE) / SCALE != v:
            return False
    for ranges in res.ranges.values():
        prev = -2
        for lo, hi in ranges:
            if not (prev + 1 < lo <= hi):
                return False
            prev = hi
        if not ranges:
            return False
    return True


def intersection(want: Resources, have: Resources) -> Resources:
    """The part of ``want`` that ``have`` holds (per kind minimum / range intersection)."""
    scalars = {k: min(v, have.scalars[k]) for k, v in want.scalars.items() if k in have.scalars}
    out = Resources({k: v for k, v in scalars.items() if v > 0})
    for name, ranges in want.ranges.items():
        overlap = [
            (max(lo, hlo), min(hi, hhi))
            for lo, hi in ranges for hlo, hhi in have.ranges.get(name, ())
            if max(lo, hlo) <= min(hi, hhi)
        ]
        out = out.with_ranges(name, overlap)
    return out
