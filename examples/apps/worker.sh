#!/usr/bin/env bash
# A background worker for procd's examples: prints a line every 2 seconds.
# procd sets PROCD_INSTANCE, so the two instances tell themselves apart.
set -u
instance="${PROCD_INSTANCE:-?}"
running=1
trap 'echo "worker $instance: stopping"; running=0' INT TERM

n=0
while [ "$running" -eq 1 ]; do
    n=$((n + 1))
    echo "worker $instance: tick $n (queue ${QUEUE:-default})"
    # sleep in the background and wait, so a signal interrupts the wait at once.
    sleep 2 &
    wait $! 2>/dev/null
done
