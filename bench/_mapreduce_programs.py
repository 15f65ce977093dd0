"""The programs bench/mapreduce.py runs: the streaming mapper and reducer (as a Hadoop
Streaming user would write them), the class-API job and the RDD program.

The Python programs run as ``python prog.py INPUT OUTPUT RESULT OPTIONS_JSON`` (the
convention of bench/_compute_programs.py, whose prelude they share) and leave the
word counts as ``word<TAB>count`` lines in files under OUTPUT.
"""

from __future__ import annotations

from _compute_programs import PRELUDE, SHOAL_CONTEXT, program_source

# --- Hadoop Streaming: mapper and reducer (the reducer is the combiner too) ------------------
# Written as a competent streaming user writes them: one write per input line, not one
# print per word; the reducer sums runs of equal keys and keeps no dict.
MAPPER = '''\
#!/usr/bin/env python3
"""Word count mapper: one "word<TAB>1" line per word of each input line."""
import sys


def main():
    write = sys.stdout.write
    for line in sys.stdin:
        words = line.split()
        if words:
            write("\\t1\\n".join(words) + "\\t1\\n")


if __name__ == "__main__":
    main()
'''

REDUCER = '''\
#!/usr/bin/env python3
"""Word count reducer (and combiner): input "word<TAB>count" lines sorted by word;
writes one "word<TAB>total" line per run of equal words."""
import sys


def main():
    write = sys.stdout.write
    current, total = None, 0
    for line in sys.stdin:
        word, _, count = line.rpartition("\\t")
        if word == current:
            total += int(count)
        else:
            if current is not None:
                write(f"{current}\\t{total}\\n")
            current, total = word, int(count)
    if current is not None:
        write(f"{current}\\t{total}\\n")


if __name__ == "__main__":
    main()
'''

# --- the class API (shoal.mapreduce.MapReduceJob) ---------------------------------------------
# ready_s is the import of shoal.mapreduce; job_s is WordCount.run (context start, the job,
# the context's stop). The counters go to stderr as the CLI prints them.
MRJOB_BODY = '''\
from shoal.mapreduce import MapReduceJob


class WordCount(MapReduceJob):
    def mapper(self, _, line):
        for word in line.split():
            yield word, 1

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer(self, word, counts):
        yield word, sum(counts)


def main():
    t_ready = time.perf_counter()
    result = WordCount.run(input=INPUT, output=OUTPUT, reducers=OPTIONS["reducers"], master=OPTIONS["master"],
                           quiet=False, report_to=sys.stderr)
    report({"counters": result.counters.as_dict(), "maps": result.maps, "reduces": result.reduces}, t_ready)
'''

# --- the RDD API ------------------------------------------------------------------------------
# The program is bench/compute.py's shoal word count, unchanged (same source, same
# SparkContext("local[2]"), result collected to the driver); the one addition is that
# the collected pairs are also written to OUTPUT/part-00000 so that they can be compared
# word by word with the other peers' outputs (the MapReduce peers write their output
# files too). That write is inside the timed run, ~200k short lines at 1 GiB.
RDD_SAVE_PAIRS = '''\
_summary = summary


def summary(pairs):
    pairs = list(pairs)
    os.makedirs(OUTPUT, exist_ok=True)
    with open(os.path.join(OUTPUT, "part-00000"), "w", encoding="utf-8") as f:
        f.writelines(f"{w}\\t{c}\\n" for w, c in pairs)
    return _summary(pairs)

'''

MAIN_GUARD = '''

if __name__ == "__main__":
    main()
'''


def rdd_program() -> str:
    source = program_source("shoal", "wordcount")
    if not source.startswith(PRELUDE + SHOAL_CONTEXT):  # pragma: no cover - a layout change in compute's programs
        raise RuntimeError("bench/_compute_programs.py changed: cannot add the output write to its word count")
    return PRELUDE + RDD_SAVE_PAIRS + source[len(PRELUDE):]


def mrjob_program() -> str:
    return PRELUDE + MRJOB_BODY + MAIN_GUARD
