#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE
# bench/ring_syscalls.sh -- system calls and context switches per request over the
# shared-memory rings, on both sides, counted by `perf stat` tracepoints (cheap enough not to
# change what is measured, unlike strace). Issue 15: ~0 while both sides are busy.
#
#   bench/ring_syscalls.sh [-b SERVER] [-k KVCLIENT] [-n REQUESTS] [-x "SERVER ARGS"]
#                          [-y "BENCH ARGS"]
#
# Default workload: `kvclient bench --shm -t get -c 50 -P 1 -d 100 -r 100000`. Prints, for
# the server and for the bench client, each counter divided by REQUESTS.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
srv=$here/bin/libevkv
cli=$here/bin/kvclient
n=300000
extra=""
bargs="-t get -c 50 -P 1"
while getopts "b:k:n:x:y:" o; do
    case $o in
    b) srv=$OPTARG ;;
    k) cli=$OPTARG ;;
    n) n=$OPTARG ;;
    x) extra=$OPTARG ;;
    y) bargs=$OPTARG ;;
    *) sed -n 3,11p "$0"; exit 2 ;;
    esac
done
T=$(mktemp -d /tmp/kv-rsys.XXXXXX)
shm=/kvrs-$$
ev=context-switches
for s in write read poll ppoll epoll_wait epoll_pwait futex sched_yield; do
    [ -d /sys/kernel/tracing/events/syscalls/sys_enter_$s ] || \
        [ -d /sys/kernel/debug/tracing/events/syscalls/sys_enter_$s ] && ev=$ev,syscalls:sys_enter_$s
done
# shellcheck disable=SC2086
"$srv" --no-tcp --unix $T/kv.sock --shm-name $shm --memory 256m --log-level warn \
    $extra >$T/server.log 2>&1 &
spid=$!
for _ in $(seq 100); do [ -S $T/kv.sock ] && break; sleep 0.1; done
# shellcheck disable=SC2086
"$cli" -s $T/kv.sock --shm bench $bargs -n 1 -d 100 -r 100000 >/dev/null 2>&1 # the keys
perf stat -x, -e $ev -p $spid -o $T/server.perf &
ppid=$!
sleep 0.5
# shellcheck disable=SC2086
perf stat -x, -e $ev -o $T/client.perf -- "$cli" -s $T/kv.sock --shm bench $bargs -n $n -d 100 \
    -r 100000 --no-populate >$T/bench.txt 2>&1
kill -INT $ppid
wait $ppid 2>/dev/null
kill $spid
wait $spid 2>/dev/null
rm -f /dev/shm$shm
grep -v "^#\|^$" $T/bench.txt | tail -1
for side in server client; do
    awk -F, -v n="$n" -v side=$side '/^[0-9]/ {sub("syscalls:sys_enter_", "", $3);
        printf "%-7s %-16s %12d  %8.4f per request\n", side, $3, $1, $1 / n}' $T/$side.perf
done
rm -rf "$T"
