#!/usr/bin/env python3
"""Word count reducer: sums the counts of adjacent equal keys (its input is key-sorted)."""
import sys

current, total = None, 0
for line in sys.stdin:
    key, _, value = line.rstrip("\n").partition("\t")
    if key != current:
        if current is not None:
            sys.stdout.write(f"{current}\t{total}\n")
        current, total = key, 0
    total += int(value)
if current is not None:
    sys.stdout.write(f"{current}\t{total}\n")
