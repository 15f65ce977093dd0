#!/bin/sh
# Word count mapper whose first attempt of map task 0 straggles: it waits for a file
# that never appears (at most $STRAGGLE_STEPS x 50 ms, default 60 s) until the
# framework kills it. Every other attempt maps its input at once.
if [ "$mapreduce_task_partition" = 0 ] && [ "${mapreduce_task_attempt_id##*_}" = 0 ]; then
    i=0
    while [ "$i" -lt "${STRAGGLE_STEPS:-1200}" ] && [ ! -e never ]; do
        sleep 0.05
        i=$((i + 1))
    done
fi
exec awk '{ for (i = 1; i <= NF; i++) print $i "\t1" }'
