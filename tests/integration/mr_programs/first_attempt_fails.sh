#!/bin/sh
# Runs its arguments as the task's command, except on a task's first attempt
# (attempt id ending in _0), which fails after a line on stderr.
case "$mapreduce_task_attempt_id" in
    *_0)
        echo "first attempt of $mapreduce_task_id fails on purpose" >&2
        exit 1
        ;;
esac
exec "$@"
