#!/usr/bin/env python3
"""Identity mapper that talks Hadoop's stderr reporter protocol: Grp,Name += 3 for
every 100th input line, a malformed counter line (which stays plain stderr), and a
status line naming how many lines it copied."""
import sys

n = 0
for line in sys.stdin:
    sys.stdout.write(line)
    n += 1
    if n % 100 == 0:
        sys.stderr.write("reporter:counter:Grp,Name,3\n")
sys.stderr.write("reporter:counter:Grp,Malformed\n")
sys.stderr.write(f"reporter:status:copied {n} lines\n")
