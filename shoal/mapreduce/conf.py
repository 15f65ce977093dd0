"""A MapReduce job's configuration: Hadoop's property names (``-D key=value``),
with the deprecated pre-2.x names existing streaming jobs still pass."""

from __future__ import annotations

from dataclasses import dataclass, field

from shoal.errors import ConfigError

# Deprecated Hadoop 1 names -> current names (Hadoop's DeprecationDelta table).
ALIASES = {
    "mapred.reduce.tasks": "mapreduce.job.reduces",
    "mapred.job.name": "mapreduce.job.name",
    "io.sort.mb": "mapreduce.task.io.sort.mb",
    "io.sort.spill.percent": "mapreduce.map.sort.spill.percent",
    "min.num.spills.for.combine": "mapreduce.map.combine.minspills",
    "mapred.reduce.slowstart.completed.maps": "mapreduce.job.reduce.slowstart.completedmaps",
    "mapred.map.max.attempts": "mapreduce.map.maxattempts",
    "mapred.reduce.max.attempts": "mapreduce.reduce.maxattempts",
    "mapred.map.tasks.speculative.execution": "mapreduce.map.speculative",
    "mapred.reduce.tasks.speculative.execution": "mapreduce.reduce.speculative",
    "mapred.job.shuffle.input.buffer.percent": "mapreduce.reduce.shuffle.input.buffer.percent",
    "mapred.text.key.partitioner.options": "mapreduce.partition.keypartitioner.options",
    "map.output.key.field.separator": "mapreduce.map.output.key.field.separator",
    "mapred.partitioner.class": "mapreduce.job.partitioner.class",
    "mapred.text.key.comparator.options": "mapreduce.partition.keycomparator.options",
    "mapred.output.key.comparator.class": "mapreduce.job.output.key.comparator.class",
    "mapred.output.compress": "mapreduce.output.fileoutputformat.compress",
    "mapred.output.compression.codec": "mapreduce.output.fileoutputformat.compress.codec",
    "mapred.map.tasks": "mapreduce.job.maps",
}

KEY_FIELD_COMPARATORS = {
    "org.apache.hadoop.mapreduce.lib.partition.KeyFieldBasedComparator",
    "org.apache.hadoop.mapred.lib.KeyFieldBasedComparator",
    "keyfield",
}
KEY_FIELD_PARTITIONERS = {
    "org.apache.hadoop.mapred.lib.KeyFieldBasedPartitioner",
    "org.apache.hadoop.mapreduce.lib.partition.KeyFieldBasedPartitioner",
    "keyfield",
}
HASH_PARTITIONERS = {
    "org.apache.hadoop.mapred.lib.HashPartitioner",
    "org.apache.hadoop.mapreduce.lib.partition.HashPartitioner",
    "hash",
}


def _bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise ConfigError(f"{key}={value!r}: expected true or false")


def _number(key: str, value: str, kind: type, lo: float, hi: float) -> float | int:
    try:
        n = kind(value)
    except ValueError:
        raise ConfigError(f"{key}={value!r}: expected {'an integer' if kind is int else 'a number'}") from None
    if not lo <= n <= hi:
        raise ConfigError(f"{key}={value!r}: must be between {lo:g} and {hi:g}")
    return n


@dataclass
class MRConf:
    """What the engine reads from a job's properties (Hadoop's defaults)."""

    reducers: int = 1  # mapreduce.job.reduces
    job_name: str = ""  # mapreduce.job.name
    sort_mb: int = 100  # mapreduce.task.io.sort.mb
    spill_percent: float = 0.80  # mapreduce.map.sort.spill.percent
    min_spills_for_combine: int = 3  # mapreduce.map.combine.minspills
    slow_start: float = 0.05  # mapreduce.job.reduce.slowstart.completedmaps
    map_max_attempts: int = 4  # mapreduce.map.maxattempts
    reduce_max_attempts: int = 4  # mapreduce.reduce.maxattempts
    map_speculative: bool = True  # mapreduce.map.speculative
    reduce_speculative: bool = True  # mapreduce.reduce.speculative
    shuffle_buffer_percent: float = 0.70  # mapreduce.reduce.shuffle.input.buffer.percent
    output_codec: str | None = None  # mapreduce.output.fileoutputformat.compress(.codec)
    # Hadoop Streaming (stream.*)
    map_output_separator: bytes = b"\t"  # stream.map.output.field.separator
    map_output_key_fields: int = 1  # stream.num.map.output.key.fields
    reduce_input_separator: bytes = b"\t"  # stream.reduce.input.field.separator
    partitioner_options: str = ""  # mapreduce.partition.keypartitioner.options
    partitioner_class: str | None = None  # mapreduce.job.partitioner.class
    key_field_separator: bytes = b"\t"  # mapreduce.map.output.key.field.separator (key-field -k options)
    comparator_options: str | None = None  # set when the KeyFieldBasedComparator is chosen
    # Every property as given (streaming exports them to the tasks' environment).
    properties: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_properties(cls, props: dict[str, str], reducers: int | None = None) -> MRConf:
        p = {ALIASES.get(k, k): v for k, v in props.items()}
        c = cls(properties=dict(p))
        if "mapreduce.job.reduces" in p:
            c.reducers = int(_number("mapreduce.job.reduces", p["mapreduce.job.reduces"], int, 0, 100000))
        if reducers is not None:
            c.reducers = reducers
        c.job_name = p.get("mapreduce.job.name", "")
        num = [("sort_mb", "mapreduce.task.io.sort.mb", int, 1, 2047),
               ("spill_percent", "mapreduce.map.sort.spill.percent", float, 0.01, 1.0),
               ("min_spills_for_combine", "mapreduce.map.combine.minspills", int, 1, 10000),
               ("slow_start", "mapreduce.job.reduce.slowstart.completedmaps", float, 0.0, 1.0),
               ("map_max_attempts", "mapreduce.map.maxattempts", int, 1, 100),
               ("reduce_max_attempts", "mapreduce.reduce.maxattempts", int, 1, 100),
               ("shuffle_buffer_percent", "mapreduce.reduce.shuffle.input.buffer.percent", float, 0.01, 1.0),
               ("map_output_key_fields", "stream.num.map.output.key.fields", int, 1, 1000)]
        for attr, key, kind, lo, hi in num:
            if key in p:
                setattr(c, attr, _number(key, p[key], kind, lo, hi))
        for attr, key in (("map_speculative", "mapreduce.map.speculative"),
                          ("reduce_speculative", "mapreduce.reduce.speculative")):
            if key in p:
                setattr(c, attr, _bool(key, p[key]))
        for attr, key in (("map_output_separator", "stream.map.output.field.separator"),
                          ("reduce_input_separator", "stream.reduce.input.field.separator"),
                          ("key_field_separator", "mapreduce.map.output.key.field.separator")):
            if key in p:
                sep = _unescape(p[key]).encode()
                if not sep or b"\n" in sep:
                    raise ConfigError(f"{key}={p[key]!r}: the separator must be non-empty and not a newline")
                setattr(c, attr, sep)
        c.partitioner_options = p.get("mapreduce.partition.keypartitioner.options", "")
        if not c.partitioner_options and "num.key.fields.for.partition" in p:  # Hadoop 1's spelling of -k1,N
            n = _number("num.key.fields.for.partition", p["num.key.fields.for.partition"], int, 1, 1000)
            c.partitioner_options = f"-k1,{n}"
        c.partitioner_class = p.get("mapreduce.job.partitioner.class")
        if c.partitioner_class is not None and c.partitioner_class not in KEY_FIELD_PARTITIONERS | HASH_PARTITIONERS:
            raise ConfigError(f"mapreduce.job.partitioner.class={c.partitioner_class!r}: only "
                              "org.apache.hadoop.mapred.lib.KeyFieldBasedPartitioner and HashPartitioner are supported")
        comparator = p.get("mapreduce.job.output.key.comparator.class")
        if comparator is not None:
            if comparator not in KEY_FIELD_COMPARATORS:
                raise ConfigError(f"mapreduce.job.output.key.comparator.class={comparator!r}: only "
                                  "org.apache.hadoop.mapreduce.lib.partition.KeyFieldBasedComparator is supported")
            c.comparator_options = p.get("mapreduce.partition.keycomparator.options", "")
        if p.get("mapreduce.output.fileoutputformat.compress", "false").lower() == "true":
            from shoal.compute.output import codec_for

            codec = p.get("mapreduce.output.fileoutputformat.compress.codec",
                          "org.apache.hadoop.io.compress.GzipCodec")
            try:
                c.output_codec = codec_for(codec)
            except ValueError as exc:
                raise ConfigError(f"mapreduce.output.fileoutputformat.compress.codec={codec!r}: {exc}") from None
        return c


def _unescape(value: str) -> str:
    """Separators given on a command line: ``\\t`` is a tab (as Hadoop users write it)."""
    return value.replace("\\t", "\t")
