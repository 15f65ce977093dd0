"""Shared variables: broadcasts (read-only values sent to each executor once) and
accumulators (add-only values merged in the driver), with PySpark's semantics."""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any

from shoal.compute.taskcontext import TaskContext

if TYPE_CHECKING:
    from shoal.compute.context import ComputeContext


class Broadcast:
    """``sc.broadcast(v)``: ``.value`` on executors fetches it from the driver once
    per executor and keeps it."""

    def __init__(self, ctx: ComputeContext | None, bid: int, value: Any = None, on_driver: bool = True) -> None:
        self._ctx = ctx
        self._bid = bid
        self._value = value
        self._on_driver = on_driver
        self._destroyed = False

    @property
    def id(self) -> int:
        return self._bid

    @property
    def value(self) -> Any:
        if self._on_driver:
            if self._destroyed:
                raise ValueError(f"broadcast {self._bid} was destroyed")
            return self._value
        tc = TaskContext.get()
        if tc is None:
            raise RuntimeError("broadcast value is only available in the driver or inside a task")
        return tc.broadcast_value(self._bid)

    def unpersist(self, blocking: bool = False) -> None:
        """Executors drop their copy; the next use fetches it again."""

    def destroy(self, blocking: bool = False) -> None:
        self._destroyed = True
        if self._ctx is not None:
            self._ctx._destroy_broadcast(self._bid)

    def __reduce__(self) -> tuple:
        if self._destroyed:
            raise ValueError(f"broadcast {self._bid} was destroyed and cannot be used in a task")
        return (_restore_broadcast, (self._bid,))


def _restore_broadcast(bid: int) -> Broadcast:
    return Broadcast(None, bid, on_driver=False)


class AccumulatorParam:
    """How an accumulator's values add (PySpark's AccumulatorParam)."""

    def zero(self, value: Any) -> Any:
        raise NotImplementedError

    def addInPlace(self, value1: Any, value2: Any) -> Any:
        raise NotImplementedError


class AddingAccumulatorParam(AccumulatorParam):
    def __init__(self, zero_value: Any) -> None:
        self.zero_value = zero_value

    def zero(self, value: Any) -> Any:
        return self.zero_value

    def addInPlace(self, value1: Any, value2: Any) -> Any:
        value1 += value2
        return value1


INT_ACCUMULATOR_PARAM = AddingAccumulatorParam(0)
FLOAT_ACCUMULATOR_PARAM = AddingAccumulatorParam(0.0)
COMPLEX_ACCUMULATOR_PARAM = AddingAccumulatorParam(0.0j)


class Accumulator:
    """``sc.accumulator(0)``: tasks ``add``; only the driver reads ``value``. Updates
    from tasks of actions count once per partition, however often tasks re-run."""

    def __init__(self, aid: int, value: Any, accum_param: AccumulatorParam, on_driver: bool = True) -> None:
        self.aid = aid
        self.accum_param = accum_param
        self._value = value
        self._on_driver = on_driver

    @property
    def value(self) -> Any:
        if not self._on_driver:
            raise RuntimeError("Accumulator.value cannot be accessed inside tasks")
        return self._value

    @value.setter
    def value(self, value: Any) -> None:
        if not self._on_driver:
            raise RuntimeError("Accumulator.value cannot be accessed inside tasks")
        self._value = value

    def add(self, term: Any) -> None:
        tc = TaskContext.get()
        if self._on_driver or tc is None:
            self._value = self.accum_param.addInPlace(self._value, term)
            return
        updates = tc.accumulator_updates
        current = updates[self.aid] if self.aid in updates else self.accum_param.zero(self._value)
        updates[self.aid] = self.accum_param.addInPlace(current, term)

    def __iadd__(self, term: Any) -> Accumulator:
        self.add(term)
        return self

    def _merge_update(self, update: Any) -> None:
        self._value = self.accum_param.addInPlace(self._value, update)

    def __reduce__(self) -> tuple:
        return (_restore_accumulator, (self.aid, self.accum_param.zero(self._value), self.accum_param))

    def __str__(self) -> str:
        return str(self._value)

    def __repr__(self) -> str:
        return f"Accumulator<id={self.aid}, value={self._value}>"


def _restore_accumulator(aid: int, zero: Any, param: AccumulatorParam) -> Accumulator:
    return Accumulator(aid, zero, param, on_driver=False)


def default_param(value: Any) -> AccumulatorParam:
    if isinstance(value, bool) or not isinstance(value, (int, float, complex)):
        raise TypeError(f"no default AccumulatorParam for {type(value).__name__}: pass accum_param")
    if isinstance(value, int):
        return INT_ACCUMULATOR_PARAM
    if isinstance(value, float):
        return FLOAT_ACCUMULATOR_PARAM
    return COMPLEX_ACCUMULATOR_PARAM


def dumps_value(value: Any) -> bytes:
    from shoal.compute.serde import dumps_closure

    try:
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception:
        return dumps_closure(value, "the broadcast value")
