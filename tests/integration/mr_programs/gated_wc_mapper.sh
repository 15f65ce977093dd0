#!/bin/sh
# Word count mapper for fault tests. Each attempt leaves a marker in $GATES; map
# tasks numbered $FREE_MAPS and up then wait (at most 60 s) for $GATES/release.
touch "$GATES/start-$mapreduce_task_attempt_id"
if [ "$mapreduce_task_partition" -ge "$FREE_MAPS" ]; then
    i=0
    while [ "$i" -lt 1200 ] && [ ! -e "$GATES/release" ]; do
        sleep 0.05
        i=$((i + 1))
    done
fi
exec awk '{ for (i = 1; i <= NF; i++) print $i "\t1" }'
