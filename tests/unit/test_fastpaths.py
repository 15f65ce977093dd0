"""The word-count fast path gives exactly what the general path gives."""

from __future__ import annotations

import operator
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.compute.fastpaths import count_words
from shoal.compute.optimizer import add_kind, constant_pair_value, is_add
from shoal.compute.storage import read_split_lines, text_splits

ALPHABET = st.sampled_from(list("ab é\t\n\r\x0b\x0c\x1c\x1f\u2028\u00a0xyz") + ["\r\n", "  "])


class _Part:
    def __init__(self, split: object) -> None:
        self.split = split


class _TextRDD:
    def __init__(self, splits: list) -> None:
        self.partitions = [_Part(s) for s in splits]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(ALPHABET, max_size=400).map("".join), parts=st.integers(1, 5))
def test_count_words_equals_split_of_every_line(tmp_path: Path, text: str, parts: int) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(text.encode())
    splits = text_splits(str(path), parts)
    rdd = _TextRDD(splits)
    fast: Counter = Counter()
    for i in range(len(splits)):
        for word, n in count_words(rdd, i, 1, lambda: True):  # flush after every chunk
            fast[word] += n
    general = Counter(w for s in splits for line in read_split_lines(s) for w in line.split())
    assert fast == general


def test_constant_weight_multiplies_counts(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("a b a\nc a\n")
    rdd = _TextRDD(text_splits(str(path), 1))
    assert dict(count_words(rdd, 0, 3, lambda: False)) == {"a": 9, "b": 3, "c": 3}


def test_idioms_are_recognised_and_nothing_else() -> None:
    assert constant_pair_value(lambda w: (w, 1)) == 1
    assert constant_pair_value(lambda w: (w, 0.5)) == 0.5
    assert constant_pair_value(lambda w: (1, w)) is None
    assert constant_pair_value(lambda w: (w, "1")) is None
    assert constant_pair_value(lambda w: (w, True)) is None
    assert constant_pair_value(lambda w, k=1: (w, k)) is None
    assert is_add(operator.add) and is_add(lambda a, b: a + b)
    assert not is_add(lambda a, b: a - b) and not is_add(max)
    assert add_kind(operator.add, lambda x, y: x + y) == "add"
    assert add_kind(operator.add, operator.mul) == ""
