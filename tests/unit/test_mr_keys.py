"""Byte encodings of MapReduce keys: sortable() against Python's own ordering, and
KeyFieldHelper against a plain reference comparator for Hadoop's -k options."""

from __future__ import annotations

import enum
import functools
import math
import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.mapreduce.keys import (
    KeyFieldHelper,
    KeyFieldSpec,
    from_sortable,
    parse_key_field_options,
    sortable,
)

# --------------------------------------------------------------------------- helpers


def same(a: object, b: object) -> bool:
    """Equal and of the same types all the way down (lists count as tuples, NaN
    equals NaN, -0.0 equals 0.0)."""
    if isinstance(a, list):
        a = tuple(a)
    if isinstance(b, list):
        b = tuple(b)
    if type(a) is not type(b):
        return False
    if type(a) is tuple:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))  # type: ignore[arg-type]
    if type(a) is float and math.isnan(a):
        return math.isnan(b)  # type: ignore[arg-type]
    return a == b


def py_cmp(a: object, b: object) -> int | None:
    """Python's order of a and b as -1/0/1, or None if Python cannot compare them."""
    try:
        if a < b:  # type: ignore[operator]
            return -1
        if b < a:  # type: ignore[operator]
            return 1
    except TypeError:
        return None
    return 0 if a == b else None


def sign(x: int) -> int:
    return (x > 0) - (x < 0)


def bcmp(a: bytes, b: bytes) -> int:
    return (a > b) - (a < b)


# --------------------------------------------------------------------------- strategies

huge_ints = st.builds(
    lambda s, e, d: s * (2**e + d), st.sampled_from([1, -1]), st.integers(60, 5000), st.integers(-3, 3)
)
ints = st.one_of(st.integers(), st.integers(-300, 300), huge_ints)
floats = st.floats(allow_nan=False)
# Numbers that sit right next to each other across types.
near = st.one_of(
    st.one_of(st.integers(), st.integers(-(2**1023), 2**1023)).map(float),
    floats.filter(math.isfinite).map(int),
    floats.filter(math.isfinite).map(lambda f: int(f) + 1),
)
numbers = st.one_of(st.booleans(), ints, floats, near)
alphabet = st.one_of(st.sampled_from("\x00\x01\xff\ud800\U0010ffffab\u00e9"), st.characters())
texts = st.text(alphabet, max_size=8)
blobs = st.binary(max_size=8) | st.lists(
    st.sampled_from([b"\x00", b"\x01", b"\xff", b"a"]), max_size=6
).map(b"".join)
scalars = st.one_of(st.none(), numbers, texts, blobs)
keys = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4).map(tuple) | st.lists(inner, max_size=3),
    max_leaves=10,
)
# Keys of one shape, so Python can compare most pairs.
shaped = st.one_of(
    numbers,
    texts,
    blobs,
    st.lists(numbers, max_size=4).map(tuple),
    st.lists(texts, max_size=4).map(tuple),
    st.lists(st.tuples(numbers, texts), max_size=3).map(tuple),
    st.lists(st.lists(blobs, max_size=3).map(tuple), max_size=3).map(tuple),
)


# --------------------------------------------------------------------------- sortable()


def check_order(a: object, b: object) -> None:
    ea, eb = sortable(a), sortable(b)
    order = py_cmp(a, b)
    if order is None:
        return
    if order:
        assert bcmp(ea, eb) == order, (a, b)
    else:
        # Equal values: the same encoding exactly when the types match too.
        assert (ea == eb) == same(a, b), (a, b)


@given(shaped, shaped)
@settings(max_examples=600)
def test_order_matches_python(a: object, b: object) -> None:
    check_order(a, b)


@given(keys, keys)
@settings(max_examples=400)
def test_order_matches_python_for_any_comparable_keys(a: object, b: object) -> None:
    check_order(a, b)


@given(numbers, numbers)
@settings(max_examples=600)
def test_numbers_order_by_exact_value(a: object, b: object) -> None:
    check_order(a, b)
    # Also inside tuples, where later elements must not leak into the order.
    check_order((a, "z"), (b, "a"))
    if isinstance(a, float) and math.isfinite(a):
        check_order((a, 1), (int(a), 0))


@given(keys)
@settings(max_examples=400)
def test_round_trip_keeps_value_and_type(key: object) -> None:
    assert same(from_sortable(sortable(key)), key)


@given(keys, keys)
@settings(max_examples=400)
def test_injective_and_prefix_free(a: object, b: object) -> None:
    ea, eb = sortable(a), sortable(b)
    if ea == eb:
        assert same(a, b)
    else:
        assert not ea.startswith(eb) and not eb.startswith(ea)


@given(keys, keys, keys, keys)
def test_concatenations_order_piece_by_piece(a: object, b: object, c: object, d: object) -> None:
    ea, eb, ec, ed = map(sortable, (a, b, c, d))
    assert bcmp(ea + eb, ec + ed) == (bcmp(ea, ec) or bcmp(eb, ed))


@given(near, st.one_of(numbers, near))
def test_equal_numbers_of_other_types_are_adjacent(x: object, other: object) -> None:
    variants = {type(v): v for v in (x, float(x), int(x)) if v == x}  # type: ignore[call-overload]
    if x in (0, 1):
        variants[bool] = bool(x)
    codes = sorted(sortable(v) for v in variants.values())
    assert len(set(codes)) == len(codes)
    code = sortable(other)
    if codes[0] < code < codes[-1]:
        assert other == x


def test_examples() -> None:
    assert sortable(2**64 + 1) > sortable(2.0**64) > sortable(2**64 - 1)
    assert sortable(2**53 + 1) > sortable(2.0**53)
    assert sortable(-(2**64) - 1) < sortable(-(2.0**64))
    assert sortable(0.1) > sortable(0) and sortable(0.1) < sortable(1)
    assert sortable(-math.inf) < sortable(-(2**3000)) < sortable(-1.5) < sortable(False)
    assert sortable(True) < sortable(1.5) < sortable(2**3000) < sortable(math.inf) < sortable(math.nan)
    assert sortable((1,)) < sortable((1, 0)) < sortable((1, 0.5)) < sortable((2,))
    assert sortable(("a", "b")) < sortable(("ab",)) and sortable((b"a", b"b")) < sortable((b"ab",))
    assert sortable("a") < sortable("a\x00") < sortable("a\x00\x00") < sortable("a\x01")
    assert sortable("z") < sortable("\u00e9") < sortable("\ud800") < sortable("\U0010ffff")
    assert sortable([1, "x"]) == sortable((1, "x"))
    assert len({sortable(1), sortable(1.0), sortable(True)}) == 3
    assert sortable(-0.0) == sortable(0.0)
    # Fractions whose bytes hold zeros (escaped) order by value, on both signs.
    ascending = [1, 1 + 2**-40, 1 + 2**-20, 1 + 2**-20 + 2**-40, 2]
    assert sorted(ascending[::-1], key=sortable) == ascending
    assert sortable(-2) < sortable(-1 - 2**-20) < sortable(-1 - 2**-40) < sortable(-1) < sortable(-(2**-1074))
    # Equal numbers of other types tie inside tuples, as in Python.
    assert sortable((1, "z")) > sortable((1.0, "a")) > sortable((True, ""))
    assert sortable((1.0, 2)) < sortable((1, 3)) and sortable(((2.0,), 0)) > sortable(((2,), -1))


def test_nan_sorts_after_every_number_and_round_trips() -> None:
    nan = sortable(math.nan)
    assert all(sortable(x) < nan for x in (math.inf, 2**5000, 1e308))
    assert nan < sortable("")
    assert math.isnan(from_sortable(nan))  # type: ignore[arg-type]
    assert sortable((math.nan, 1)) > sortable((math.inf, 2))


EDGES = [0, 1, -1, 255, 256, 2**2040 - 1, 2**2040, 2**2048, -(2**4000), 5e-324, -5e-324]
EDGES += [1.7976931348623157e308, 0.1, -123.456, 1 + 2**-20, -(1 + 2**-20), 2**-1000 + 2**-1010]


@pytest.mark.parametrize("value", EDGES)
def test_round_trip_edges(value: object) -> None:
    assert same(from_sortable(sortable(value)), value)
    assert same(from_sortable(sortable((value, [value]))), (value, (value,)))


def test_subclasses_encode_as_their_base_type() -> None:
    class Colour(enum.IntEnum):
        RED = 3

    class Name(str):
        pass

    assert sortable(Colour.RED) == sortable(3)
    assert type(from_sortable(sortable(Colour.RED))) is int
    assert sortable((Name("x"),)) == sortable(("x",))


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ({}, "dict"),
        ({1}, "set"),
        (bytearray(b"x"), "bytearray"),
        (1j, "complex"),
        (Decimal(1), "Decimal"),
        ((1, [object()]), "object"),
    ],
)
def test_unsupported_types_raise_type_error(key: object, name: str) -> None:
    with pytest.raises(TypeError) as info:
        sortable(key)
    message = str(info.value)
    assert "\n" not in message and message.endswith(f"not {name}")
    assert message.startswith("map output keys must be None, bool, int, float, str, bytes or tuples")


GARBAGE = [
    b"",  # empty
    b"\x99",  # unknown tag
    b"\x20abc",  # unterminated string
    b"\x13\x05\x01",  # truncated magnitude
    b"\x13\x01\x01\x00",  # missing type trailer
    b"\x13\x01\x01\x00ix",  # trailer too long
    b"\x30\x01",  # unclosed tuple
    b"\x13\x01\x01\x81\x00i",  # bad fraction flag
    b"\x13\x01\x01\x01\x80\x00\x00i",  # an int with a fraction
    b"\x13\x01\x01\x01\x80\x00\x01f",  # bad escape in a fraction
    b"\x12q",  # unknown type byte
]


@pytest.mark.parametrize("data", GARBAGE)
def test_from_sortable_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a sortable"):
        from_sortable(data)


# --------------------------------------------------------------------------- key-field options


def test_parse_examples() -> None:
    assert parse_key_field_options("") == []
    assert parse_key_field_options("  ") == []
    assert parse_key_field_options("-k1,1 -k2,2nr") == [
        KeyFieldSpec(1, 1, 1, 0, False, False),
        KeyFieldSpec(2, 1, 2, 0, True, True),
    ]
    assert parse_key_field_options("-k2n") == [KeyFieldSpec(2, 1, 0, 0, True, False)]
    assert parse_key_field_options("-nr") == [KeyFieldSpec(1, 1, 0, 0, True, True)]
    assert parse_key_field_options("-k1.2,1.3") == [KeyFieldSpec(1, 2, 1, 3)]
    assert parse_key_field_options("-k 3.2r,4") == [KeyFieldSpec(3, 2, 4, 0, False, True)]
    assert parse_key_field_options("-k1,2n") == [KeyFieldSpec(1, 1, 2, 0, True, False)]
    # Globals go only to keys without options of their own.
    assert parse_key_field_options("-r -k1,1 -k2,2n -n") == [
        KeyFieldSpec(1, 1, 1, 0, True, True),
        KeyFieldSpec(2, 1, 2, 0, True, False),
    ]


@pytest.mark.parametrize(
    "options", ["-k0", "-kx", "-q", "-k1b", "-k1,0", "-k1.0", "-k", "-k1,", "-k1,2.x", "sort", "-k1 -t."]
)
def test_parse_errors_quote_the_option(options: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_key_field_options(options)
    message = str(info.value)
    assert "\n" not in message
    bad = options.split()[-1] if options != "-k1 -t." else "-t."
    assert repr(bad) in message or repr(options) in message


def test_spec_rejects_impossible_ranges() -> None:
    with pytest.raises(ValueError):
        KeyFieldSpec(0)
    with pytest.raises(ValueError):
        KeyFieldSpec(1, 0)
    with pytest.raises(ValueError):
        KeyFieldHelper(b"", [])


def helper(options: str, sep: bytes = b"\t") -> KeyFieldHelper:
    return KeyFieldHelper(sep, parse_key_field_options(options))


def test_hadoop_docs_comparator_example() -> None:
    keys = [b"11.12.1.2", b"11.14.2.3", b"11.11.4.1", b"11.12.1.1", b"11.14.2.2"]
    ordered = sorted(keys, key=helper("-k2,2nr", b".").sort_key)
    assert [k.split(b".")[1] for k in ordered] == [b"14", b"14", b"12", b"12", b"11"]


def test_hadoop_docs_partitioner_example() -> None:
    h = helper("-k1,2", b".")
    assert h.partition_bytes(b"11.12.1.2") == h.partition_bytes(b"11.12.1.1") == b"11.12"
    assert h.partition_bytes(b"11.14.2.3") == b"11.14"


def test_secondary_sort() -> None:
    h = helper("-k1,1 -k2,2nr")
    keys = [b"user\t9", b"alice\t3", b"user\t10", b"bob\t-1", b"alice\t20"]
    assert sorted(keys, key=h.sort_key) == [b"alice\t20", b"alice\t3", b"bob\t-1", b"user\t10", b"user\t9"]
    assert helper("-k1,1").partition_bytes(b"user\t9") == b"user"


def test_numeric_to_end_and_whole_key() -> None:
    h = helper("-k2n")
    assert h.sort_key(b"a\t10\tx") == h.sort_key(b"b\t10.0\ty") < h.sort_key(b"a\t11")
    descending = [b"10", b"5", b"2.5", b"abc", b"-3"]
    assert sorted(descending[::-1], key=helper("-nr").sort_key) == descending
    assert sorted([b"b", b"a", b"c"], key=helper("-r").sort_key) == [b"c", b"b", b"a"]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (b"-0", b"0"),
        (b"007", b"7"),
        (b"1.50", b"1.5"),
        (b" \t3", b"3"),
        (b"abc", b""),
        (b"1e5", b"1"),
        (b"-", b"0"),
        (b".", b"-0.0"),
        (b"2.x", b"2."),
    ],
)
def test_numeric_equal_values(a: bytes, b: bytes) -> None:
    h = helper("-n")
    assert h.sort_key(a) == h.sort_key(b)


def test_numeric_is_exact_for_long_digit_strings() -> None:
    h = helper("-n")
    ascending = [b"-" + b"9" * 400, b"-1" + b"0" * 300, b"-0.5", b"-.05", b"0", b"0." + b"0" * 40 + b"1"]
    ascending += [b"0.1", b"9" * 399, b"1" + b"0" * 399, b"1" + b"0" * 399 + b".0001"]
    assert sorted(ascending, key=h.sort_key) == ascending
    assert len({h.sort_key(k) for k in ascending}) == len(ascending)


def test_no_specs_sorts_and_partitions_the_whole_key() -> None:
    h = helper("")
    assert h.sort_key(b"a\tb") == b"a\tb" and h.partition_bytes(b"a\tb") == b"a\tb"


def test_ranges_examples() -> None:
    key = b"ab\tcde\tf"
    assert helper("-k2").partition_bytes(key) == b"cde\tf"
    assert helper("-k2,2").partition_bytes(key) == b"cde"
    assert helper("-k1.2,2.2").partition_bytes(key) == b"b\tcd"
    assert helper("-k2.2,2.1").partition_bytes(key) == b""
    assert helper("-k4").partition_bytes(key) == b""
    assert helper("-k3,9").partition_bytes(key) == b"f"
    assert helper("-k1.5,1").partition_bytes(key) == b""  # past field 1's end, before its end
    assert helper("-k1.4,2").partition_bytes(key) == b"cde"  # a start char runs on
    assert helper("-k1,1 -k3,3").partition_bytes(key) == b"abf"
    assert helper("-k1,1", b"::").partition_bytes(b"x::y") == b"x"


# Reference comparator: a direct reading of the rules, no encodings.


def ref_range(key: bytes, sep: bytes, spec: KeyFieldSpec) -> bytes:
    fields = key.split(sep)

    def field_start(i: int) -> int:  # i is 1-based
        return sum(len(f) + len(sep) for f in fields[: i - 1])

    if spec.start_field > len(fields):
        return b""
    begin = field_start(spec.start_field) + spec.start_char - 1
    if spec.end_field == 0 or spec.end_field > len(fields):
        end = len(key)
    elif spec.end_char == 0:
        end = field_start(spec.end_field) + len(fields[spec.end_field - 1])
    else:
        end = min(field_start(spec.end_field) + spec.end_char, len(key))
    return key[begin:end]


def ref_number(text: bytes) -> Decimal:
    s = text.decode("latin-1").lstrip(" \t")
    negative = s.startswith("-")
    if negative:
        s = s[1:]
    m = re.match(r"[0-9]*(\.[0-9]*)?", s)
    digits = m.group(0) if m else ""
    if digits in ("", "."):
        return Decimal(0)
    value = Decimal(digits + "0" if digits.endswith(".") else digits)
    return -value if negative else value


def ref_compare(specs: list[KeyFieldSpec], sep: bytes, a: bytes, b: bytes) -> int:
    if not specs:
        return bcmp(a, b)
    for spec in specs:
        ra, rb = ref_range(a, sep, spec), ref_range(b, sep, spec)
        if spec.numeric:
            na, nb = ref_number(ra), ref_number(rb)
            result = (na > nb) - (na < nb)
        else:
            result = bcmp(ra, rb)
        if result:
            return -result if spec.reverse else result
    return 0


specs_strategy = st.builds(
    KeyFieldSpec,
    start_field=st.integers(1, 4),
    start_char=st.integers(1, 4),
    end_field=st.integers(0, 4),
    end_char=st.integers(0, 4),
    numeric=st.booleans(),
    reverse=st.booleans(),
)
separators = st.sampled_from([b"\t", b".", b"::"])
key_bytes = st.lists(
    st.sampled_from([b"\t", b".", b":", b"-", b"0", b"1", b"9", b" ", b"\x00", b"\xff", b"a", b"00"]), max_size=12
).map(b"".join)


@given(st.lists(specs_strategy, max_size=3), separators, key_bytes, key_bytes)
@settings(max_examples=600)
def test_sort_key_matches_reference_comparator(
    specs: list[KeyFieldSpec], sep: bytes, a: bytes, b: bytes
) -> None:
    h = KeyFieldHelper(sep, specs)
    assert bcmp(h.sort_key(a), h.sort_key(b)) == sign(ref_compare(specs, sep, a, b)), (specs, a, b)
    assert h.partition_bytes(a) == (b"".join(ref_range(a, sep, s) for s in specs) if specs else a)


@given(st.lists(specs_strategy, max_size=3), separators, st.lists(key_bytes, max_size=12))
def test_sorting_by_sort_key_sorts_by_reference(
    specs: list[KeyFieldSpec], sep: bytes, keys: list[bytes]
) -> None:
    h = KeyFieldHelper(sep, specs)
    ordered = sorted(keys, key=h.sort_key)
    reference = sorted(keys, key=functools.cmp_to_key(lambda x, y: ref_compare(specs, sep, x, y)))
    assert [h.sort_key(k) for k in ordered] == [h.sort_key(k) for k in reference]


def render(spec: KeyFieldSpec) -> str:
    flags = ("n" if spec.numeric else "") + ("r" if spec.reverse else "")
    text = f"-k{spec.start_field}.{spec.start_char}{flags}"
    if spec.end_field:
        text += f",{spec.end_field}" + (f".{spec.end_char}" if spec.end_char else "")
    return text


@given(st.lists(specs_strategy.filter(lambda s: s.end_field or not s.end_char), max_size=4))
def test_parse_round_trips_rendered_specs(specs: list[KeyFieldSpec]) -> None:
    # Keys without options of their own take the (here absent) global options.
    assert parse_key_field_options(" ".join(map(render, specs))) == specs
