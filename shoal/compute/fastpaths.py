"""C-speed execution of recognised pipelines (see ``optimizer.py``).

``textFile(p).flatMap(str.split).map(lambda w: (w, 1)).reduceByKey(add)`` is word
counting. Splitting a chunk of whole lines at once gives exactly the words that
splitting each line gives (line ends are whitespace to ``str.split``), and for an
ASCII chunk Arrow's ``ascii_split_whitespace`` and ``value_counts`` give the same
words and counts in C++; only the distinct words become Python strings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shoal.compute.rdd import RDD


def text_of_split_words(rdd: RDD) -> Any | None:
    """The TextFileRDD whose lines ``rdd`` splits into words, when ``rdd`` is
    exactly ``textFile(...).flatMap(str.split)`` with nothing cached between."""
    from shoal.compute.rdd import PipelinedRDD
    from shoal.compute.sources import TextFileRDD

    if not isinstance(rdd, PipelinedRDD) or rdd.flat_map_func is not str.split or not rdd._fusable():
        return None
    src = rdd.unfused_prev
    if isinstance(src, TextFileRDD) and src.storage_level is None and src.checkpoint_dir is None:
        return src
    return None


# str.split() also splits at these ASCII separators; bytes.split() and Arrow do not.
_INFO_SEPARATORS = ("\x1c", "\x1d", "\x1e", "\x1f")


def count_words(text_rdd: Any, index: int, const: int | float, check_memory: Any) -> Iterator[tuple]:
    """(word, count * const) for every word of partition ``index``. ``check_memory()``
    returning True flushes the counts gathered so far (the writer combines runs).

    Chunks of plain ASCII are split and counted by Arrow's kernels when pyarrow is
    installed (the same whitespace as ``bytes.split``), else by ``bytes.split`` and
    ``Counter``; other chunks by ``str.split`` and ``Counter``."""
    from shoal.compute.storage import read_split_line_batches

    split = text_rdd.partitions[index].split
    arrow = _arrow()
    ascii_words: list = []
    ascii_counts: Counter = Counter()
    text_counts: Counter = Counter()
    for batch in read_split_line_batches(split):
        chunk = "\n".join(batch)
        if chunk.isascii() and not any(sep in chunk for sep in _INFO_SEPARATORS):
            if arrow is not None:
                pa, pc = arrow
                ascii_words.append(pc.list_flatten(pc.ascii_split_whitespace(pa.array([chunk], pa.string()))))
            else:
                ascii_counts.update(chunk.encode("ascii").split())
        else:
            text_counts.update(chunk.split())
        if check_memory():
            yield from _drain(ascii_words, ascii_counts, text_counts, const)
    yield from _drain(ascii_words, ascii_counts, text_counts, const)


def _arrow() -> tuple[Any, Any] | None:
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError:
        return None
    return pa, pc


def _drain(ascii_words: list, ascii_counts: Counter, text_counts: Counter, const: int | float) -> Iterator[tuple]:
    if ascii_words:
        pa, pc = _arrow()  # type: ignore[misc]
        counted = pc.value_counts(pa.chunked_array(ascii_words, pa.string()))
        ascii_words.clear()
        words, counts = counted.field(0).to_pylist(), counted.field(1).to_pylist()
        if text_counts:
            for w, n in zip(words, counts):
                text_counts[w] += n
        else:
            text_counts.update(dict(zip(words, counts)))
        # Arrow keeps the empty strings around leading/trailing whitespace, where
        # str.split() yields nothing; a real word is never empty.
        text_counts.pop("", None)
    for word, n in ascii_counts.items():
        text_counts[word.decode("ascii")] += n
    ascii_counts.clear()
    if const == 1:
        yield from text_counts.items()
    else:
        yield from ((k, n * const) for k, n in text_counts.items())
    text_counts.clear()


def mark_fast_paths(dep: Any) -> None:
    """Driver side, before a map stage is pickled: note what the executor may run
    in C (the lineage that shows it is not shipped)."""
    if dep.extra.get("count_keys") is not None and text_of_split_words(dep.rdd) is not None:
        dep.extra["text_words"] = True


def records_for_count(dep: Any, partition_records: Callable[[], Iterator], index: int,
                      memory_limit: int) -> Iterator:
    """The map-side records of a ``count_keys`` shuffle: bare keys counted in C.
    ``partition_records()`` computes the partition, when the text fast path does not."""
    from shoal.compute.combine import count_keys
    from shoal.compute.taskcontext import rss_bytes

    const = dep.extra["count_keys"]
    if dep.extra.get("text_words"):
        # Decided in the driver (mark_fast_paths): dep.rdd is textFile(...).flatMap(str.split).
        text_rdd = dep.rdd._narrow_parent()
        return count_words(text_rdd, index, const, lambda: rss_bytes() > memory_limit)
    return count_keys(partition_records(), const)
