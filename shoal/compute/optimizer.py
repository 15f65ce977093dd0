"""Recognising common PySpark idioms so the engine can run them in C loops.

``rdd.map(lambda w: (w, 1)).reduceByKey(operator.add)`` is the most common shape of
a Spark program. Pairing every record with a constant and then adding the constants
is counting: the engine recognises the two pieces by their bytecode and counts keys
with ``collections.Counter`` instead of building and merging a tuple per record.
Anything not recognised runs the general path, so the rewrite can only help.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any


def _code_of(f: Callable) -> Any:
    return getattr(f, "__code__", None)


def _shape(f: Callable) -> tuple | None:
    code = _code_of(f)
    if code is None or getattr(f, "__closure__", None) or getattr(f, "__defaults__", None):
        return None
    return (code.co_code, code.co_argcount, code.co_kwonlyargcount, code.co_flags & 0x0C)


_REF_PAIR = (lambda x: (x, 1))
_REF_ADD = (lambda a, b: a + b)


def constant_pair_value(f: Callable | None) -> int | float | None:
    """If ``f`` is ``lambda x: (x, C)`` with a numeric constant C, return C."""
    if f is None:
        return None
    shape = _shape(f)
    if shape is None or shape != _shape(_REF_PAIR):
        return None
    consts = [c for c in f.__code__.co_consts if c is not None and not isinstance(c, str)]
    if len(consts) != 1 or isinstance(consts[0], bool) or not isinstance(consts[0], (int, float)):
        return None
    return consts[0]


def is_add(f: Callable) -> bool:
    """``operator.add`` or ``lambda a, b: a + b``."""
    if f is operator.add:
        return True
    shape = _shape(f)
    return shape is not None and shape == _shape(_REF_ADD)


def add_kind(merge_value: Callable, merge_combiners: Callable) -> str:
    return "add" if is_add(merge_value) and is_add(merge_combiners) else ""
