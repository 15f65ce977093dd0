"""Parsing and printing of sizes and durations as users type them (``128M``, ``1.5GiB``)."""

from __future__ import annotations

import re

from shoal.errors import ConfigError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(text: str | int) -> int:
    """Parse ``4096``, ``64k``, ``128M``, ``1GiB`` into bytes (binary units, as Hadoop does)."""
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(f"size must not be negative: {text}")
        return text
    m = _SIZE_RE.match(text)
    if not m:
        raise ConfigError(f"not a size: {text!r} (examples: 4096, 64K, 128M, 1G)")
    number, unit = float(m.group(1)), m.group(2).lower()
    return int(number * (1024 ** _POWERS[unit]))


def format_size(n: int | float) -> str:
    """Human-readable binary size: ``1.5 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
