"""The slice of ``pyspark.sql`` that RDD programs use to get started:
``SparkSession.builder...getOrCreate()``, ``spark.sparkContext`` and
``spark.read.text(path).rdd`` (an RDD of ``Row(value=line)``). DataFrames proper
are not part of shoal yet: other DataFrame methods raise ``NotImplementedError``."""

from __future__ import annotations

from typing import Any

from shoal.compute.rdd import RDD
from shoal.spark import SparkContext
from shoal.spark.conf import SparkConf


class Row(tuple):
    """A record with named fields (``Row(value="a")``, ``row.value``, ``row["value"]``)."""

    __fields__: tuple[str, ...]

    def __new__(cls, *args: Any, **kwargs: Any) -> Row:
        if args and kwargs:
            raise ValueError("Can not use both args and kwargs to create Row")
        row = tuple.__new__(cls, kwargs.values() if kwargs else args)
        row.__fields__ = tuple(kwargs) if kwargs else ()
        return row

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[self.__fields__.index(name)]
        except ValueError:
            raise AttributeError(name) from None

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, str):
            try:
                return tuple.__getitem__(self, self.__fields__.index(item))
            except ValueError:
                raise KeyError(item) from None
        return tuple.__getitem__(self, item)

    def asDict(self) -> dict[str, Any]:
        return dict(zip(self.__fields__, self))

    def __reduce__(self) -> tuple:
        return (_make_row, (self.__fields__, tuple(self)))

    def __repr__(self) -> str:
        if self.__fields__:
            return "Row(%s)" % ", ".join(f"{k}={v!r}" for k, v in zip(self.__fields__, self))
        return "<Row(%s)>" % ", ".join(repr(v) for v in self)


def _make_row(fields: tuple[str, ...], values: tuple) -> Row:
    return Row(**dict(zip(fields, values))) if fields else Row(*values)


def _value_row(line: str) -> Row:
    return _make_row(("value",), (line,))


class DataFrame:
    """Only what RDD programs need: ``.rdd``, ``count``, ``collect``."""

    def __init__(self, rdd: RDD, columns: list[str]) -> None:
        self._rdd = rdd
        self.columns = columns

    @property
    def rdd(self) -> RDD:
        return self._rdd

    def count(self) -> int:
        return self._rdd.count()

    def collect(self) -> list[Row]:
        return self._rdd.collect()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # protocol probes (copy, pickle, IPython's _repr_*_)
            raise AttributeError(name)
        raise NotImplementedError(f"DataFrame.{name} is not supported by shoal yet; use .rdd")


class DataFrameReader:
    def __init__(self, session: SparkSession) -> None:
        self._session = session

    def text(self, paths: str | list[str], wholetext: bool = False, lineSep: str | None = None) -> DataFrame:
        sc = self._session.sparkContext
        path = paths if isinstance(paths, str) else ",".join(paths)
        if wholetext:
            rdd = sc.wholeTextFiles(path).map(lambda kv: _value_row(kv[1]))
        else:
            rdd = sc.textFile(path).map(_value_row)
        return DataFrame(rdd, ["value"])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise NotImplementedError(f"spark.read.{name} is not supported by shoal yet; use spark.read.text")


class SparkSession:
    class Builder:
        def __init__(self) -> None:
            self._conf = SparkConf()

        def master(self, master: str) -> SparkSession.Builder:
            self._conf.setMaster(master)
            return self

        def appName(self, name: str) -> SparkSession.Builder:
            self._conf.setAppName(name)
            return self

        def config(self, key: str | None = None, value: Any = None, conf: SparkConf | None = None,
                   map: dict[str, Any] | None = None) -> SparkSession.Builder:
            if key is not None:
                self._conf.set(key, value)
            if conf is not None:
                self._conf.setAll(conf.getAll())
            if map:
                self._conf.setAll(map.items())
            return self

        def enableHiveSupport(self) -> SparkSession.Builder:
            return self

        def getOrCreate(self) -> SparkSession:
            sc = SparkContext.getOrCreate(self._conf)
            return SparkSession(sc)

    builder: SparkSession.Builder

    def __init__(self, sparkContext: SparkContext) -> None:
        self._sc = sparkContext

    @property
    def sparkContext(self) -> SparkContext:
        return self._sc

    @property
    def read(self) -> DataFrameReader:
        return DataFrameReader(self)

    @property
    def version(self) -> str:
        return self._sc.version

    def stop(self) -> None:
        self._sc.stop()

    def __enter__(self) -> SparkSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @classmethod
    def getActiveSession(cls) -> SparkSession | None:
        from shoal.compute.context import ComputeContext

        active = ComputeContext.active()
        return SparkSession(active) if active is not None else None  # type: ignore[arg-type]


class _BuilderDescriptor:
    def __get__(self, obj: object, owner: type) -> SparkSession.Builder:
        return SparkSession.Builder()


SparkSession.builder = _BuilderDescriptor()  # type: ignore[assignment]
