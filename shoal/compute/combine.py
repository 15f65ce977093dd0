"""In-memory combining of values by key (the tight loops of map-side combine)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from shoal.compute.dependencies import Aggregator

COUNT_CHUNK = 1 << 20


def combine_values(records: Iterable[tuple], agg: Aggregator) -> dict:
    """Combine (key, value) records into {key: combiner}."""
    d: dict = {}
    merge = agg.merge_value
    if agg.identity_create:
        for k, v in records:
            if k in d:
                d[k] = merge(d[k], v)
            else:
                d[k] = v
    else:
        create = agg.create_combiner
        for k, v in records:
            if k in d:
                d[k] = merge(d[k], v)
            else:
                d[k] = create(v)
    return d


def count_keys(keys: Iterator[Any], const: int | float) -> Iterator[tuple]:
    """(key, count * const) pairs for bare keys, counted in chunks in C
    (``Counter``) so memory stays bounded by the distinct keys of a chunk."""
    while True:
        chunk = Counter(islice(keys, COUNT_CHUNK))
        if not chunk:
            return
        if const == 1:
            yield from chunk.items()
        else:
            yield from ((k, n * const) for k, n in chunk.items())
