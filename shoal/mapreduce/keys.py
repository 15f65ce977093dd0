"""Byte encodings of MapReduce keys (pure: no I/O).

The MapReduce engine sorts map output by one bytes sort key in memcmp order (the
order Arrow gives binary columns), groups records whose sort keys are equal, and
partitions by hashing bytes. This module makes that possible for both APIs:

* :func:`sortable` / :func:`from_sortable` encode the Python keys of the
  class-based API so that bytewise order is Python's order (numbers by exact value
  across bool, int and float; tuples element-wise, a prefix first) and decode them
  back to the same value and type.
* :func:`parse_key_field_options` and :class:`KeyFieldHelper` implement Hadoop's
  ``KeyFieldBasedPartitioner`` / ``KeyFieldBasedComparator`` options (Unix
  ``sort -k`` syntax) for Hadoop Streaming's bytes keys.

Every encoding here that can be followed by more bytes is prefix-free (no valid
encoding is a proper prefix of another), so pieces concatenate without changing
each other's order: the first differing byte always falls inside one piece.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from itertools import accumulate

__all__ = [
    "KeyFieldHelper",
    "KeyFieldSpec",
    "from_sortable",
    "parse_key_field_options",
    "sortable",
]

# ---------------------------------------------------------------------------
# sortable(): layout
#
#   encoding = value part + type trailer
#
# The value part orders like Python compares values. Numbers in it carry only
# their value, so 1, 1.0 and True are equal there and tuples holding them compare
# element-wise exactly as Python does. The trailer holds one type byte per number,
# in the order the numbers occur, so equal values of different types encode
# differently but adjacently (only the trailer differs) and decode to their type.
# The trailer's length follows from the value part, so the whole is prefix-free.
#
# Value tags (one byte; cross-kind order None < numbers < str < bytes < tuple):
_END = 0x00  # closes a tuple; below every tag, so a prefix tuple sorts first
_NONE = 0x01
_NEG_INF = 0x10
_NEG = 0x11  # then the byte-complement of the magnitude (reverses its order)
_ZERO = 0x12  # 0, 0.0, -0.0 and False: no magnitude follows
_POS = 0x13  # then the magnitude
_POS_INF = 0x14
_NAN = 0x15  # every NaN, after all other numbers
_STR = 0x20  # then UTF-8 (surrogatepass), escaped and terminated
_BYTES = 0x21  # then the bytes, escaped and terminated
_TUPLE = 0x30  # then the elements, then _END
#
# Magnitude of a finite nonzero number with integer part n and fraction f:
#   length header of n (order-preserving, see _len_header), n big-endian, then
#   0x00 if f is 0, else 0x01 and f's big-endian bytes (the last one nonzero),
#   escaped and terminated. A shorter fraction is the same bytes followed by
#   implicit zeros, and the terminator sorts it first, as its value requires.
#
# Type trailer bytes:
_T_BOOL = ord("b")
_T_FLOAT = ord("f")
_T_INT = ord("i")

_FLIP = bytes(255 - i for i in range(256))  # bytes.translate table: complement
_TYPE_ERROR = "map output keys must be None, bool, int, float, str, bytes or tuples of them, not {}"

# The tags as bytes, and "tag + one-byte length" headers for small integers.
_B_END, _B_NONE, _B_TUPLE, _B_STR, _B_BYTES = (bytes((t,)) for t in (_END, _NONE, _TUPLE, _STR, _BYTES))
_B_ZERO, _B_NAN, _B_POS_INF, _B_NEG_INF = (bytes((t,)) for t in (_ZERO, _NAN, _POS_INF, _NEG_INF))
_B_POS, _B_NEG = bytes((_POS,)), bytes((_NEG,))
_POS_HDR = [bytes((_POS, n)) for n in range(255)]
_NEG_HDR = [bytes((_NEG, 255 - n)) for n in range(255)]
_ONE = _POS_HDR[1] + b"\x01\x00"  # the value part of 1 and True
_TERM = b"\x00\x00"
_ZERO_INT = bytes((_ZERO, _T_INT))


_SHORT_LEN = [bytes((n,)) for n in range(255)]


def _len_header(n: int) -> bytes:
    """An order-preserving, prefix-free encoding of a length: one byte below 255,
    else 0xFF and eight big-endian bytes (longer than any Python object can be)."""
    if n < 255:
        return _SHORT_LEN[n]
    return b"\xff" + n.to_bytes(8, "big")


def _escape(raw: bytes) -> bytes:
    """Make bytes prefix-free without changing their order: 0x00 becomes
    0x00 0xFF and 0x00 0x00 terminates, below any continuation."""
    if b"\x00" in raw:
        raw = raw.replace(b"\x00", b"\x00\xff")
    return raw + _TERM


def _int_mag(n: int) -> bytes:
    """Length header and big-endian bytes of a non-negative integer part."""
    length = (n.bit_length() + 7) >> 3
    return _len_header(length) + n.to_bytes(length, "big")


def _int_value(k: int) -> bytes:
    """The value part of an int (no trailer)."""
    if k > 0:
        length = (k.bit_length() + 7) >> 3
        if length < 255:
            return _POS_HDR[length] + k.to_bytes(length, "big") + b"\x00"
        return _B_POS + _int_mag(k) + b"\x00"
    if k < 0:
        return _B_NEG + (_int_mag(-k) + b"\x00").translate(_FLIP)
    return _B_ZERO


def _float_value(x: float) -> bytes:
    """The value part of a float: exact, so it interleaves correctly with ints."""
    if x != x:
        return _B_NAN
    if x == 0.0:
        return _B_ZERO
    if x == math.inf:
        return _B_POS_INF
    if x == -math.inf:
        return _B_NEG_INF
    ax = -x if x < 0 else x
    n = int(ax)
    frac = ax - n  # exact: the fraction's bits are a subset of ax's
    if frac:
        num, den = frac.as_integer_ratio()  # den is a power of two, num odd
        bits = den.bit_length() - 1
        size = (bits + 7) >> 3
        # Left-align the bits in whole bytes; the last byte keeps num's low bit.
        mag = _int_mag(n) + b"\x01" + _escape((num << (8 * size - bits)).to_bytes(size, "big"))
    else:
        mag = _int_mag(n) + b"\x00"
    if x < 0:
        return _B_NEG + mag.translate(_FLIP)
    return _B_POS + mag


def _str_value(s: str) -> bytes:
    # UTF-8 preserves code point order; surrogatepass keeps lone surrogates (which
    # Python strings may hold) in that order too.
    try:
        raw = s.encode()
    except UnicodeEncodeError:
        raw = s.encode("utf-8", "surrogatepass")
    return _B_STR + _escape(raw)


def _encode(key: object, out: list[bytes], types: bytearray) -> None:
    """Append key's value part to out and its numbers' type bytes to types."""
    t = type(key)
    if t is tuple or t is list:
        out.append(_B_TUPLE)
        for item in key:  # type: ignore[attr-defined]
            # The common element types inline; the rest recurse.
            it = type(item)
            if it is str:
                out.append(_str_value(item))
            elif it is int:
                out.append(_int_value(item))
                types.append(_T_INT)
            else:
                _encode(item, out, types)
        out.append(_B_END)
    elif t is str:
        out.append(_str_value(key))  # type: ignore[arg-type]
    elif t is int:
        out.append(_int_value(key))  # type: ignore[arg-type]
        types.append(_T_INT)
    elif t is float:
        out.append(_float_value(key))  # type: ignore[arg-type]
        types.append(_T_FLOAT)
    elif key is None:
        out.append(_B_NONE)
    elif t is bool:
        out.append(_ONE if key else _B_ZERO)
        types.append(_T_BOOL)
    elif t is bytes:
        out.append(_B_BYTES + _escape(key))  # type: ignore[arg-type]
    # Subclasses (IntEnum, numpy.float64, ...) encode as their base type.
    elif isinstance(key, int):
        _encode(int.__int__(key), out, types)
    elif isinstance(key, float):
        _encode(float.__float__(key), out, types)
    elif isinstance(key, str):
        _encode(str.__str__(key), out, types)
    elif isinstance(key, bytes):
        _encode(bytes.__bytes__(key), out, types)
    elif isinstance(key, (tuple, list)):
        _encode(tuple(key), out, types)
    else:
        raise TypeError(_TYPE_ERROR.format(t.__name__))


def sortable(key: object) -> bytes:
    """Encode a map output key so that bytewise order is Python's order.

    For keys Python can compare, ``a < b`` iff ``sortable(a) < sortable(b)``;
    numbers compare by exact value across bool/int/float, and equal numbers of
    different types (1, 1.0, True) encode differently but adjacently. Lists encode
    as tuples; NaN sorts after every other number; -0.0 encodes as 0.0.
    Raises TypeError for any other key type.
    """
    t = type(key)
    # Fast paths for the common scalar keys (word counts, ids).
    if t is str:
        if "\x00" in key:  # type: ignore[operator]
            return _str_value(key)  # type: ignore[arg-type]
        try:
            return _B_STR + key.encode() + _TERM  # type: ignore[attr-defined]
        except UnicodeEncodeError:
            return _str_value(key)  # type: ignore[arg-type]
    if t is int:
        if key > 0:  # type: ignore[operator]
            length = (key.bit_length() + 7) >> 3  # type: ignore[attr-defined]
            if length < 255:
                return _POS_HDR[length] + key.to_bytes(length, "big") + b"\x00i"  # type: ignore[attr-defined]
        elif key == 0:
            return _ZERO_INT
        else:
            length = ((-key).bit_length() + 7) >> 3  # type: ignore[operator]
            if length < 255:
                mag = (-key).to_bytes(length, "big").translate(_FLIP)  # type: ignore[operator]
                return _NEG_HDR[length] + mag + b"\xffi"
    out: list[bytes] = []
    types = bytearray()
    _encode(key, out, types)
    out.append(types)
    return b"".join(out)


class _Num:
    """A decoded number awaiting its type byte from the trailer."""

    __slots__ = ("tag", "n", "frac", "bits", "value")

    def __init__(self, tag: int, n: int = 0, frac: int = 0, bits: int = 0) -> None:
        self.tag, self.n, self.frac, self.bits = tag, n, frac, bits
        self.value: object = None


def _read_escaped(data: bytes, pos: int, flip: int = 0) -> tuple[bytes, int]:
    """Undo _escape (of complemented bytes when flip is 0xFF): return the raw
    bytes and the position after the terminator."""
    zero = bytes((flip,))  # what 0x00 looks like here
    chunks = []
    while True:
        end = data.find(zero, pos)
        if end < 0 or end + 1 >= len(data):
            raise ValueError("not a sortable() encoding: unterminated string, bytes or fraction")
        chunks.append(data[pos:end])
        follow = data[end + 1] ^ flip
        if follow == 0:
            raw = zero.join(chunks)
            return (raw.translate(_FLIP) if flip else raw), end + 2
        if follow != 0xFF:
            raise ValueError("not a sortable() encoding: bad escape")
        pos = end + 2


def _read_mag(data: bytes, pos: int, flip: int) -> tuple[_Num, int]:
    """Read a magnitude (complemented when flip is 0xFF) after its sign tag."""
    length = data[pos] ^ flip
    pos += 1
    if length == 0xFF:
        raw = data[pos : pos + 8]
        length = int.from_bytes(raw.translate(_FLIP) if flip else raw, "big")
        pos += 8
    raw = data[pos : pos + length]
    if len(raw) != length:
        raise IndexError(pos)
    n = int.from_bytes(raw.translate(_FLIP) if flip else raw, "big")
    pos += length
    flag = data[pos] ^ flip
    pos += 1
    frac = bits = 0
    if flag == 1:
        raw, pos = _read_escaped(data, pos, flip)
        frac, bits = int.from_bytes(raw, "big"), 8 * len(raw)
    elif flag != 0:
        raise ValueError("not a sortable() encoding: bad fraction")
    return _Num(_NEG if flip else _POS, n, frac, bits), pos


def _decode(data: bytes, pos: int, nums: list[_Num]) -> tuple[object, int]:
    """Decode one value part at pos. Numbers come back as _Num placeholders,
    also appended to nums in encoding order (the trailer's order)."""
    tag = data[pos]
    pos += 1
    if tag == _STR:
        raw, pos = _read_escaped(data, pos)
        return raw.decode("utf-8", "surrogatepass"), pos
    if tag == _TUPLE:
        items = []
        while data[pos] != _END:
            item, pos = _decode(data, pos, nums)
            items.append(item)
        return tuple(items), pos + 1
    if tag == _POS or tag == _NEG:
        num, pos = _read_mag(data, pos, 0 if tag == _POS else 0xFF)
    elif tag in (_ZERO, _POS_INF, _NEG_INF, _NAN):
        num = _Num(tag)
    elif tag == _NONE:
        return None, pos
    elif tag == _BYTES:
        return _read_escaped(data, pos)
    else:
        raise ValueError(f"not a sortable() encoding: unknown tag 0x{tag:02x}")
    nums.append(num)
    return num, pos


def _number(num: _Num, kind: int) -> object:
    """Build the bool, int or float that num and its type byte describe."""
    tag, n = num.tag, num.n
    if kind == _T_FLOAT:
        if tag == _ZERO:
            return 0.0
        if tag in (_POS_INF, _NEG_INF, _NAN):
            return {_POS_INF: math.inf, _NEG_INF: -math.inf, _NAN: math.nan}[tag]
        # Exact: the value is a float, and int true division rounds correctly.
        value = ((n << num.bits) + num.frac) / (1 << num.bits) if num.bits else float(n)
        return -value if tag == _NEG else value
    if num.bits or tag not in (_ZERO, _POS, _NEG):
        raise ValueError("not a sortable() encoding: non-integral int or bool")
    if kind == _T_INT:
        return -n if tag == _NEG else n
    if kind == _T_BOOL and (tag == _ZERO or (tag == _POS and n == 1)):
        return tag == _POS
    raise ValueError(f"not a sortable() encoding: bad number type byte 0x{kind:02x}")


def _resolve(value: object) -> object:
    """Replace the _Num placeholders in value by their built numbers."""
    if type(value) is _Num:
        return value.value
    if type(value) is tuple:
        return tuple([_resolve(item) for item in value])
    return value


def from_sortable(data: bytes) -> object:
    """Decode a :func:`sortable` encoding to the key (tuples for lists).

    Raises ValueError if data is not such an encoding."""
    data = bytes(data)
    # Fast paths for what sortable()'s own fast paths produce.
    if data[:1] == _B_STR and data.endswith(_TERM) and data.find(b"\x00") == len(data) - 2:
        return data[1:-2].decode("utf-8", "surrogatepass")
    if data[:1] == _B_POS and data.endswith(b"\x00i") and len(data) == data[1] + 4 and data[1] < 255:
        return int.from_bytes(data[2:-2], "big")
    nums: list[_Num] = []
    try:
        value, pos = _decode(data, 0, nums)
    except IndexError:
        raise ValueError("not a sortable() encoding: truncated") from None
    except RecursionError:
        raise ValueError("not a sortable() encoding: nested too deeply") from None
    trailer = data[pos:]
    if len(trailer) != len(nums):
        raise ValueError("not a sortable() encoding: bad length")
    if not nums:
        return value
    for num, kind in zip(nums, trailer):
        num.value = _number(num, kind)
    return _resolve(value)


# ---------------------------------------------------------------------------
# Hadoop key-field options


@dataclass(frozen=True)
class KeyFieldSpec:
    """One ``-kPOS1[,POS2]`` key of Unix sort / Hadoop, with options resolved.

    Fields and characters are 1-based. ``end_field == 0`` means the range runs to
    the end of the key (no POS2); ``end_char == 0`` means the end of end_field.
    Characters are bytes, as in Hadoop. A start character past its field's end
    runs on into the next fields, as in GNU sort and Hadoop.
    """

    start_field: int
    start_char: int = 1
    end_field: int = 0
    end_char: int = 0
    numeric: bool = False
    reverse: bool = False

    def __post_init__(self) -> None:
        if self.start_field < 1 or self.start_char < 1 or self.end_field < 0 or self.end_char < 0:
            raise ValueError(f"invalid key field range: {self}")


_KEY_ARG = re.compile(r"(\d+)(?:\.(\d+))?([A-Za-z]*)(?:,(\d+)(?:\.(\d+))?([A-Za-z]*))?\Z")
_KEY_FORM = "expected -kF[.C][nr][,F[.C][nr]] with 1-based field F and character C"


def _parse_key(option: str, arg: str) -> tuple[KeyFieldSpec, bool]:
    """Parse one -k argument; also say whether it had its own n/r options."""
    m = _KEY_ARG.match(arg)
    if not m:
        raise ValueError(f"bad key-field option {option!r}: {_KEY_FORM}")
    f1, c1, o1, f2, c2, o2 = m.groups()
    letters = o1 + (o2 or "")
    bad = set(letters) - {"n", "r"}
    if bad:
        raise ValueError(
            f"bad key-field option {option!r}: unsupported ordering letter {min(bad)!r} (only n and r)"
        )
    if int(f1) == 0 or (f2 is not None and int(f2) == 0):
        raise ValueError(f"bad key-field option {option!r}: field numbers start at 1")
    if c1 is not None and int(c1) == 0:
        raise ValueError(f"bad key-field option {option!r}: character positions start at 1")
    spec = KeyFieldSpec(
        start_field=int(f1),
        start_char=int(c1) if c1 is not None else 1,
        end_field=int(f2) if f2 is not None else 0,
        end_char=int(c2) if c2 is not None else 0,
        numeric="n" in letters,
        reverse="r" in letters,
    )
    return spec, bool(letters)


def parse_key_field_options(options: str) -> list[KeyFieldSpec]:
    """Parse Hadoop's key partitioner/comparator options, e.g. ``"-k1,1 -k2,2nr"``.

    Global ``-n``/``-r``/``-nr`` apply to every key without options of its own,
    and to the whole key when there is no ``-k``. An empty string gives [] (the
    whole key compared bytewise). Raises ValueError quoting any bad option.
    """
    tokens = options.split()
    numeric = reverse = False
    keys: list[tuple[KeyFieldSpec, bool]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token.startswith("-k"):
            arg = token[2:]
            option = token
            if not arg:  # "-k 1,1" as well as "-k1,1"
                if i == len(tokens):
                    raise ValueError(f"bad key-field option {token!r}: missing the key position")
                arg = tokens[i]
                option = f"{token} {arg}"
                i += 1
            keys.append(_parse_key(option, arg))
        elif len(token) > 1 and token[0] == "-" and set(token[1:]) <= {"n", "r"}:
            numeric = numeric or "n" in token
            reverse = reverse or "r" in token
        else:
            raise ValueError(f"unsupported key-field option {token!r} (expected -k, -n, -r or -nr)")
    if not keys:
        if numeric or reverse:
            return [KeyFieldSpec(1, numeric=numeric, reverse=reverse)]
        return []
    return [
        spec if own else KeyFieldSpec(
            spec.start_field, spec.start_char, spec.end_field, spec.end_char, numeric, reverse
        )
        for spec, own in keys
    ]


# Unix sort -n: leading blanks, optional '-', digits, optional '.' and digits.
# It always matches (possibly empty), and the empty number is 0.
_NUMBER = re.compile(rb"[ \t]*(-?)([0-9]*)(?:\.([0-9]*))?")
_NUM_NEG = b"\x00"
_NUM_ZERO = b"\x01"
_NUM_POS = b"\x02"


def _numeric_piece(text: bytes) -> bytes:
    """A prefix-free encoding of text's leading number ordering by exact value:
    sign class, count of integer digits, the digits, then 0x00 (below any digit),
    with fraction digits stripped of trailing zeros so equal values encode equal."""
    if text.isdigit():  # the common case: a plain non-negative integer
        whole = text.lstrip(b"0")
        if not whole:
            return _NUM_ZERO
        return _NUM_POS + _len_header(len(whole)) + whole + b"\x00"
    sign, whole, frac = _NUMBER.match(text).groups()  # type: ignore[union-attr]
    whole = whole.lstrip(b"0")
    frac = frac.rstrip(b"0") if frac else b""
    if not whole and not frac:
        return _NUM_ZERO  # also "-0", "", "abc"
    mag = _len_header(len(whole)) + whole + frac + b"\x00"
    if sign:
        return _NUM_NEG + mag.translate(_FLIP)
    return _NUM_POS + mag


class KeyFieldHelper:
    """Partition bytes and sort keys for Hadoop Streaming keys under key-field specs.

    ``sort_key(a) < sort_key(b)`` (bytewise) iff the KeyFieldBasedComparator order
    puts a first, and the sort keys are equal iff every spec ties. Each spec
    contributes a prefix-free piece: its byte range escaped and terminated, or its
    number encoded by value; ``r`` complements that piece's bytes.
    """

    def __init__(self, separator: bytes, specs: list[KeyFieldSpec]) -> None:
        if not separator:
            raise ValueError("the key field separator must not be empty")
        self.separator = bytes(separator)
        self.specs = list(specs)
        # Split at most this many times: enough to locate every field a spec names.
        self._splits = max((max(s.start_field, s.end_field) for s in self.specs), default=0)
        # Precompiled per spec: (start field index, start byte offset, end field
        # (0 = key end), end char (0 = field end), whether it is one whole field).
        self._ranges_of = [
            (
                s.start_field - 1,
                s.start_char - 1,
                s.end_field,
                s.end_char,
                s.start_char == 1 and s.end_field == s.start_field and s.end_char == 0,
            )
            for s in self.specs
        ]
        self._orders = [(s.numeric, s.reverse) for s in self.specs]
        self._needs_offsets = not all(r[4] for r in self._ranges_of)

    def _ranges(self, key: bytes) -> list[bytes]:
        """The byte range each spec selects (empty past the key's end)."""
        parts = key.split(self.separator, self._splits)
        count = len(parts)  # every field index a spec names is < count iff it exists
        starts: list[int] = []
        if self._needs_offsets:
            step = len(self.separator)
            starts = [0, *accumulate(len(p) + step for p in parts[:-1])]
        size = len(key)
        ranges = []
        for first, char, last, end_char, whole in self._ranges_of:
            if first >= count:
                ranges.append(b"")
            elif whole:
                ranges.append(parts[first])
            else:
                begin = starts[first] + char
                if last == 0 or last > count:
                    end = size
                elif end_char == 0:
                    end = starts[last - 1] + len(parts[last - 1])
                else:
                    end = min(starts[last - 1] + end_char, size)
                ranges.append(key[begin:end] if end > begin else b"")
        return ranges

    def partition_bytes(self, key: bytes) -> bytes:
        """The bytes the partitioner hashes: the specs' ranges concatenated, as
        Hadoop's KeyFieldBasedPartitioner does (the whole key with no specs)."""
        if not self.specs:
            return key
        if len(self.specs) == 1:
            return self._ranges(key)[0]
        return b"".join(self._ranges(key))

    def sort_key(self, key: bytes) -> bytes:
        """An order-preserving encoding of key under the comparator specs (the key
        itself when there are none: then the whole key compares bytewise)."""
        if not self.specs:
            return key
        pieces = []
        for text, (numeric, reverse) in zip(self._ranges(key), self._orders):
            piece = _numeric_piece(text) if numeric else _escape(text)
            pieces.append(piece.translate(_FLIP) if reverse else piece)
        return b"".join(pieces)
