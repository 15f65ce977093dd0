"""A MapReduce job's configuration (Hadoop property names, deprecated aliases, bad
values), its counters (adding, merging, pickling, Hadoop's end-of-job listing) and
the Hadoop Streaming command line."""

from __future__ import annotations

import io
import pickle

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.cli.mapreduce import FLAGS, VALUE_OPTIONS, parse_streaming_args
from shoal.errors import ConfigError
from shoal.mapreduce import counters as C
from shoal.mapreduce.conf import ALIASES, MRConf
from shoal.mapreduce.counters import Counters, TaskCountersParam, job_total, merge, print_counters, report

SETTINGS = settings(max_examples=60, deadline=None)

# =========================================================================== MRConf


def test_defaults_are_hadoops() -> None:
    c = MRConf.from_properties({})
    assert (c.reducers, c.sort_mb, c.spill_percent, c.min_spills_for_combine) == (1, 100, 0.80, 3)
    assert (c.slow_start, c.map_max_attempts, c.reduce_max_attempts) == (0.05, 4, 4)
    assert c.map_speculative and c.reduce_speculative
    assert (c.map_output_separator, c.map_output_key_fields, c.reduce_input_separator) == (b"\t", 1, b"\t")
    assert c.comparator_options is None and c.output_codec is None and c.partitioner_options == ""


# (deprecated name, current name, MRConf attribute, a valid value as given, as parsed)
ALIAS_CASES = [
    ("mapred.reduce.tasks", "mapreduce.job.reduces", "reducers", "7", 7),
    ("mapred.job.name", "mapreduce.job.name", "job_name", "word count", "word count"),
    ("io.sort.mb", "mapreduce.task.io.sort.mb", "sort_mb", "256", 256),
    ("io.sort.spill.percent", "mapreduce.map.sort.spill.percent", "spill_percent", "0.5", 0.5),
    ("min.num.spills.for.combine", "mapreduce.map.combine.minspills", "min_spills_for_combine", "5", 5),
    ("mapred.reduce.slowstart.completed.maps", "mapreduce.job.reduce.slowstart.completedmaps", "slow_start",
     "1.0", 1.0),
    ("mapred.map.max.attempts", "mapreduce.map.maxattempts", "map_max_attempts", "2", 2),
    ("mapred.reduce.max.attempts", "mapreduce.reduce.maxattempts", "reduce_max_attempts", "9", 9),
    ("mapred.map.tasks.speculative.execution", "mapreduce.map.speculative", "map_speculative", "false", False),
    ("mapred.reduce.tasks.speculative.execution", "mapreduce.reduce.speculative", "reduce_speculative", "FALSE",
     False),
    ("mapred.job.shuffle.input.buffer.percent", "mapreduce.reduce.shuffle.input.buffer.percent",
     "shuffle_buffer_percent", "0.25", 0.25),
    ("mapred.text.key.partitioner.options", "mapreduce.partition.keypartitioner.options", "partitioner_options",
     "-k1,2", "-k1,2"),
]


@pytest.mark.parametrize("old, new, attr, given_value, parsed", ALIAS_CASES)
def test_deprecated_and_current_names(old: str, new: str, attr: str, given_value: str, parsed: object) -> None:
    assert ALIASES[old] == new
    for name in (old, new):
        c = MRConf.from_properties({name: given_value})
        assert getattr(c, attr) == parsed
        # Properties are kept under their current name (what tasks see).
        assert c.properties == {new: given_value}


def test_reducers_argument_overrides_the_property() -> None:
    assert MRConf.from_properties({"mapred.reduce.tasks": "7"}, reducers=0).reducers == 0
    assert MRConf.from_properties({}, reducers=3).reducers == 3
    assert MRConf.from_properties({"mapreduce.job.reduces": "0"}).reducers == 0


def test_comparator_options_through_the_old_names() -> None:
    c = MRConf.from_properties({
        "mapred.output.key.comparator.class": "org.apache.hadoop.mapred.lib.KeyFieldBasedComparator",
        "mapred.text.key.comparator.options": "-k2,2nr",
    })
    assert c.comparator_options == "-k2,2nr"
    c = MRConf.from_properties({
        "mapreduce.job.output.key.comparator.class": "org.apache.hadoop.mapreduce.lib.partition.KeyFieldBasedComparator"})
    assert c.comparator_options == ""
    # Options alone, without choosing the comparator, change nothing.
    assert MRConf.from_properties({"mapreduce.partition.keycomparator.options": "-k1,1"}).comparator_options is None


@pytest.mark.parametrize("cls", ["org.apache.hadoop.io.Text.Comparator", "KeyFieldBasedComparator", ""])
def test_unsupported_comparator_class_is_refused(cls: str) -> None:
    with pytest.raises(ConfigError, match="mapreduce.job.output.key.comparator.class"):
        MRConf.from_properties({"mapred.output.key.comparator.class": cls})


# (key, bad value)
BAD_VALUES = [
    ("mapreduce.job.reduces", "-1"), ("mapreduce.job.reduces", "two"), ("mapreduce.job.reduces", "1.5"),
    ("mapreduce.job.reduces", "100001"),
    ("mapreduce.task.io.sort.mb", "0"), ("mapreduce.task.io.sort.mb", "2048"), ("mapreduce.task.io.sort.mb", "100m"),
    ("mapreduce.map.sort.spill.percent", "0"), ("mapreduce.map.sort.spill.percent", "1.5"),
    ("mapreduce.map.sort.spill.percent", "nan"), ("mapreduce.map.sort.spill.percent", "80%"),
    ("mapreduce.map.combine.minspills", "0"),
    ("mapreduce.job.reduce.slowstart.completedmaps", "-0.1"), ("mapreduce.job.reduce.slowstart.completedmaps", "inf"),
    ("mapreduce.map.maxattempts", "0"), ("mapreduce.reduce.maxattempts", "101"),
    ("mapreduce.reduce.shuffle.input.buffer.percent", "0"),
    ("stream.num.map.output.key.fields", "0"), ("stream.num.map.output.key.fields", "x"),
    ("mapreduce.map.speculative", "maybe"), ("mapreduce.reduce.speculative", ""),
    ("stream.map.output.field.separator", ""), ("stream.reduce.input.field.separator", "\n"),
]


@pytest.mark.parametrize("key, value", BAD_VALUES)
def test_bad_values_raise_config_error_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        MRConf.from_properties({key: value})
    assert key in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("old, new", [(old, new) for old, new, *_ in ALIAS_CASES if old.startswith(("io.", "mapred.reduce.t"))])
def test_bad_value_under_an_old_name_names_a_key(old: str, new: str) -> None:
    with pytest.raises(ConfigError) as err:
        MRConf.from_properties({old: "bogus"})
    assert old in str(err.value) or new in str(err.value)
    assert "bogus" in str(err.value)


NUMERIC = [  # key, attribute, type, lowest, highest
    ("mapreduce.job.reduces", "reducers", int, 0, 100000),
    ("mapreduce.task.io.sort.mb", "sort_mb", int, 1, 2047),
    ("mapreduce.map.sort.spill.percent", "spill_percent", float, 0.01, 1.0),
    ("mapreduce.map.combine.minspills", "min_spills_for_combine", int, 1, 10000),
    ("mapreduce.job.reduce.slowstart.completedmaps", "slow_start", float, 0.0, 1.0),
    ("mapreduce.map.maxattempts", "map_max_attempts", int, 1, 100),
    ("stream.num.map.output.key.fields", "map_output_key_fields", int, 1, 1000),
]


@SETTINGS
@given(st.sampled_from(NUMERIC), st.data())
def test_numbers_in_range_parse_and_out_of_range_fail(spec: tuple, data: st.DataObject) -> None:
    key, attr, kind, lo, hi = spec
    if kind is int:
        n = data.draw(st.integers(lo - 50, hi + 50))
        text = data.draw(st.sampled_from([str(n), f" {n} ", f"+{n}" if n >= 0 else str(n)]))
    else:
        n = data.draw(st.floats(lo - 1, hi + 1, allow_nan=False))
        text = repr(n)
    if lo <= n <= hi:
        assert getattr(MRConf.from_properties({key: text}), attr) == n
    else:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            MRConf.from_properties({key: text})


@pytest.mark.parametrize("text, sep", [("\\t", b"\t"), ("\t", b"\t"), (".", b"."), ("::", b"::"), ("a\\tb", b"a\tb"),
                                       ("é", "é".encode())])
def test_separators_are_unescaped(text: str, sep: bytes) -> None:
    c = MRConf.from_properties({"stream.map.output.field.separator": text,
                                "stream.reduce.input.field.separator": text,
                                "stream.num.map.output.key.fields": "2"})
    assert c.map_output_separator == sep
    assert c.reduce_input_separator == sep
    assert c.map_output_key_fields == 2
    assert c.properties["stream.map.output.field.separator"] == text  # exported as given


def test_output_compression() -> None:
    gz = MRConf.from_properties({"mapred.output.compress": "true"})
    assert gz.output_codec is not None
    bz = MRConf.from_properties({"mapreduce.output.fileoutputformat.compress": "TRUE",
                                 "mapred.output.compression.codec": "org.apache.hadoop.io.compress.BZip2Codec"})
    assert bz.output_codec is not None and bz.output_codec != gz.output_codec
    off = MRConf.from_properties({"mapreduce.output.fileoutputformat.compress": "false",
                                  "mapreduce.output.fileoutputformat.compress.codec": "nonsense"})
    assert off.output_codec is None


def test_unknown_codec_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nonsense"):
        MRConf.from_properties({"mapred.output.compress": "true", "mapred.output.compression.codec": "nonsense"})


def test_unknown_codec_error_names_the_property() -> None:
    with pytest.raises(ConfigError, match=r"mapreduce\.output\.fileoutputformat\.compress\.codec"):
        MRConf.from_properties({"mapred.output.compress": "true", "mapred.output.compression.codec": "nonsense"})


# =========================================================================== Counters


def test_incr_get_and_lookup_by_name() -> None:
    c = Counters()
    assert c.get(C.FRAMEWORK, C.MAP_INPUT_RECORDS) == 0
    c.incr(C.FRAMEWORK, C.MAP_INPUT_RECORDS, 5)
    c.incr(C.FRAMEWORK, C.MAP_INPUT_RECORDS)
    c.incr(C.FRAMEWORK, C.SHUFFLED_MAPS, 3)
    c.incr("My Group", C.MAP_INPUT_RECORDS, 10)
    assert c.get(C.FRAMEWORK, C.MAP_INPUT_RECORDS) == 6
    assert c["Map input records"] == 16  # any group
    assert c["Shuffled Maps"] == c["Shuffled Maps "] == 3  # Hadoop's name ends with a space
    assert len(c) == 3
    with pytest.raises(KeyError):
        c["Reduce input records"]


INCRS = st.lists(st.tuples(st.sampled_from([C.FRAMEWORK, C.JOB, "user", "Other"]),
                           st.sampled_from([C.MAP_INPUT_RECORDS, C.SPILLED_RECORDS, C.LAUNCHED_MAPS, "bananas",
                                            C.SHUFFLED_MAPS, "a=b"]),
                           st.integers(-5, 10**12)), max_size=30)


def totals(incrs: list[tuple[str, str, int]]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for g, n, v in incrs:
        out[(g, n)] = out.get((g, n), 0) + v
    return out


def filled(incrs: list[tuple[str, str, int]]) -> Counters:
    c = Counters()
    for g, n, v in incrs:
        c.incr(g, n, v)
    return c


@SETTINGS
@given(st.lists(INCRS, max_size=5))
def test_merging_in_any_order_gives_the_sum(tasks: list[list[tuple[str, str, int]]]) -> None:
    expect = totals([i for t in tasks for i in t])
    assert merge(filled(t) for t in tasks).values == expect
    assert merge(filled(t) for t in reversed(tasks)).values == expect
    acc = Counters()
    for t in tasks:
        assert acc.add_all(filled(t)) is acc
    assert acc.values == expect


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["map", "reduce"]), st.integers(0, 3), INCRS), max_size=12))
def test_a_task_that_runs_again_counts_once(reports: list[tuple[str, int, list]]) -> None:
    """Per-task counters through the accumulator param: the last report of each
    (kind, partition) replaces the earlier ones; the job total adds the tasks."""
    param = TaskCountersParam()
    acc = param.zero({})
    assert acc == {}
    for kind, partition, incrs in reports:
        acc = param.addInPlace(acc, {(kind, partition): filled(incrs)})
    last = {(kind, partition): incrs for kind, partition, incrs in reports}
    assert set(acc) == set(last)
    assert job_total(acc).values == totals([i for incrs in last.values() for i in incrs])


@SETTINGS
@given(INCRS)
def test_pickle_round_trip(incrs: list[tuple[str, str, int]]) -> None:
    c = filled(incrs)
    back = pickle.loads(pickle.dumps(c))
    assert isinstance(back, Counters)
    assert back.values == c.values
    back.incr("user", "after", 1)  # still usable (its lock was recreated)
    assert back.get("user", "after") == 1 and c.get("user", "after") == 0


def test_report_hands_the_tasks_counters_to_the_accumulator() -> None:
    class Acc:
        def __init__(self) -> None:
            self.added: list[dict] = []

        def add(self, value: dict) -> None:
            self.added.append(value)

    acc = Acc()
    c = filled([("g", "n", 1)])
    report(acc, "map", 3, c)  # type: ignore[arg-type]
    assert acc.added == [{("map", 3): c}]
    report(None, "map", 3, c)  # no accumulator: nothing to do


def parse_listing(text: str) -> tuple[int, list[tuple[str, list[tuple[str, int]]]]]:
    lines = text.split("\n")
    assert lines[-1] == ""
    head, body = lines[0], lines[1:-1]
    assert head.startswith("Counters: ")
    groups: list[tuple[str, list[tuple[str, int]]]] = []
    for line in body:
        if line.startswith("\t\t"):
            name, value = line[2:].rsplit("=", 1)
            groups[-1][1].append((name, int(value)))
        else:
            assert line.startswith("\t") and not line.startswith("\t\t")
            groups.append((line[1:], []))
    return int(head[len("Counters: "):]), groups


@SETTINGS
@given(INCRS)
def test_print_counters_lists_every_counter(incrs: list[tuple[str, str, int]]) -> None:
    c = filled(incrs)
    out = io.StringIO()
    print_counters(c, out)
    n, groups = parse_listing(out.getvalue())
    assert n == len(totals(incrs))
    assert {(g, name): v for g, items in groups for name, v in items} == totals(incrs)
    names = [g for g, _ in groups]
    assert len(names) == len(set(names))
    known = [g for g in C.GROUP_ORDER if g in names]
    assert names == known + sorted(g for g in names if g not in C.GROUP_ORDER)


def test_print_counters_format_and_hadoop_order() -> None:
    c = Counters()
    c.incr("zeta", "x", 1)
    c.incr(C.OUTPUT, C.BYTES_WRITTEN, 12)
    c.incr(C.FRAMEWORK, C.SPILLED_RECORDS, 4)
    c.incr(C.FRAMEWORK, C.MAP_INPUT_RECORDS, 3)
    c.incr(C.FRAMEWORK, "Custom", 2)
    c.incr(C.FRAMEWORK, C.SHUFFLED_MAPS, 1)
    c.incr(C.JOB, C.LAUNCHED_MAPS, 2)
    c.incr("alpha", "b", 5)
    c.incr("alpha", "a", 6)
    out = io.StringIO()
    print_counters(c, out)
    assert out.getvalue() == (
        "Counters: 9\n"
        "\tJob Counters\n"
        "\t\tLaunched map tasks=2\n"
        "\tMap-Reduce Framework\n"
        "\t\tMap input records=3\n"
        "\t\tSpilled Records=4\n"
        "\t\tShuffled Maps =1\n"
        "\t\tCustom=2\n"
        "\tFile Output Format Counters\n"
        "\t\tBytes Written=12\n"
        "\talpha\n"
        "\t\ta=6\n"
        "\t\tb=5\n"
        "\tzeta\n"
        "\t\tx=1\n"
    )
    assert c.as_dict()[C.FRAMEWORK]["Shuffled Maps"] == 1


def test_print_counters_of_nothing() -> None:
    out = io.StringIO()
    print_counters(Counters(), out)
    assert out.getvalue() == "Counters: 0\n"


# =========================================================================== streaming command line


def usage_error(argv: list[str]) -> str:
    with pytest.raises(click.UsageError) as err:
        parse_streaming_args(argv)
    return err.value.message


def test_a_realistic_hadoop_streaming_command_line() -> None:
    argv = [
        "-D", "mapreduce.job.reduces=4",
        "-Dstream.num.map.output.key.fields=2",
        "-D", "mapreduce.partition.keypartitioner.options=-k1,1",
        "-files", "mapper.py,reducer.py",
        "-input", "/data/in1", "-input", "/data/in2,/data/in3",
        "-output", "/data/out",
        "-mapper", "python3 mapper.py --mode fast",
        "-reducer", "python3 reducer.py",
        "-combiner", "python3 reducer.py",
        "-partitioner", "org.apache.hadoop.mapred.lib.KeyFieldBasedPartitioner",
        "-file", "extra.txt", "-file", "lookup.tsv",
        "-cmdenv", "LC_ALL=C", "-cmdenv", "DEBUG=1",
        "-numReduceTasks", "3",
        "-overwrite", "-verbose",
    ]
    args = parse_streaming_args(argv)
    assert args.many("D") == ["mapreduce.job.reduces=4", "stream.num.map.output.key.fields=2",
                              "mapreduce.partition.keypartitioner.options=-k1,1"]
    assert args.many("input") == ["/data/in1", "/data/in2,/data/in3"]
    assert args.one("output") == "/data/out"
    assert args.one("mapper") == "python3 mapper.py --mode fast"
    assert args.one("reducer") == args.one("combiner") == "python3 reducer.py"
    assert args.one("partitioner") == "org.apache.hadoop.mapred.lib.KeyFieldBasedPartitioner"
    assert args.many("file") == ["extra.txt", "lookup.tsv"]
    assert args.many("files") == ["mapper.py,reducer.py"]
    assert args.many("cmdenv") == ["LC_ALL=C", "DEBUG=1"]
    assert args.one("numReduceTasks") == "3"
    assert args.flags == {"overwrite", "verbose"}
    assert args.one("master") is None and args.many("archives") == []


def test_other_spellings() -> None:
    args = parse_streaming_args(["--input", "a", "-input=b", "--output=o", "-numReduceTasks=0", "--quiet",
                                 "-D", "k=v=w", "-Dempty=", "-mapper", "-"])
    assert args.many("input") == ["a", "b"]
    assert args.one("output") == "o" and args.one("numReduceTasks") == "0"
    assert args.many("D") == ["k=v=w", "empty="]
    assert args.one("mapper") == "-"  # an option's value may look like anything
    assert args.flags == {"quiet"}
    assert parse_streaming_args([]).values == {} and parse_streaming_args(["-help"]).flags == {"help"}


@pytest.mark.parametrize("argv, fragment", [
    (["-bogus", "x"], "unknown option '-bogus'"),
    (["-input", "a", "-conf", "c.xml"], "unknown option '-conf'"),
    (["-overwrite=yes"], "unknown option"),
    (["-input"], "-input needs a value"),
    (["-output", "o", "-D"], "-D needs a value"),
    (["-output", "a", "-output", "b"], "-output given twice"),
    (["-mapper", "cat", "--mapper=wc"], "-mapper given twice"),
    (["-numReduceTasks", "1", "-numReduceTasks", "1"], "-numReduceTasks given twice"),
    (["-input", "a", "stray"], "unexpected argument 'stray'"),
    (["-"], "unexpected argument '-'"),
    (["--"], "unexpected argument '--'"),
])
def test_command_line_errors(argv: list[str], fragment: str) -> None:
    assert fragment in usage_error(argv)


SINGLE = sorted(name for name, repeat in VALUE_OPTIONS.items() if not repeat)
REPEATED = sorted(name for name, repeat in VALUE_OPTIONS.items() if repeat and name != "D")
VALUE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@st.composite
def command_lines(draw: st.DrawFn) -> tuple[list[str], dict[str, list[str]], set[str]]:
    """A model (values per option, flags) and one of its many spellings."""
    items: list[tuple[str, str | None]] = []
    for name in draw(st.lists(st.sampled_from(SINGLE), unique=True)):
        items.append((name, draw(VALUE)))
    for name in draw(st.lists(st.sampled_from(REPEATED + ["D"]), max_size=8)):
        items.append((name, draw(VALUE)))
    for flag in draw(st.lists(st.sampled_from(sorted(FLAGS)), unique=True)):
        items.append((flag, None))
    items = draw(st.permutations(items))
    argv: list[str] = []
    values: dict[str, list[str]] = {}
    flags: set[str] = set()
    for name, value in items:
        dash = draw(st.sampled_from(["-", "--"]))
        if value is None:
            argv.append(dash + name)
            flags.add(name)
            continue
        values.setdefault(name, []).append(value)
        style = draw(st.sampled_from(["separate", "joined"]))
        if name == "D" and style == "joined" and value:
            argv.append(dash + "D" + value)
        elif name != "D" and style == "joined":
            argv.append(f"{dash}{name}={value}")
        else:
            argv += [dash + name, value]
    return argv, values, flags


@SETTINGS
@given(command_lines())
def test_parse_streaming_args_recovers_the_model(case: tuple[list[str], dict[str, list[str]], set[str]]) -> None:
    argv, values, flags = case
    args = parse_streaming_args(argv)
    assert args.values == values
    assert args.flags == flags
    for name in SINGLE:
        assert args.one(name) == (values[name][0] if name in values else None)


@SETTINGS
@given(command_lines(), st.sampled_from(SINGLE), VALUE)
def test_a_single_option_given_twice_is_refused(case: tuple, name: str, value: str) -> None:
    argv, values, _ = case
    argv = argv + ["-" + name, value]
    if name in values:
        assert f"-{name} given twice" in usage_error(argv)
    else:
        assert parse_streaming_args(argv).one(name) == value

