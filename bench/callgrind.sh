#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE
# bench/callgrind.sh -- instructions per request of a server, counted by callgrind: the
# deterministic figure to compare builds on a machine whose wall clock is noise
# (record.md, "Count instructions when time is noise").
#
#   bench/callgrind.sh [-b SERVER] [-k KVCLIENT] [-n REQUESTS] [-x "SERVER ARGS"] [ROW ...]
#
# A ROW is NAME:KVCLIENT-BENCH-ARGS, e.g. 'get16:-t get -c 50 -P 16'; the default rows are
# GET and SET, binary and RESP, -P 1 and -P 16 over TCP (100-byte values, 100,000 keys),
# with ONE connection: then every read of the server holds exactly one pipeline, so the
# count is the same run after run (with -c 50 how many requests one wake-up finds depends
# on timing, and the whole-server count moves by +-4% between identical binaries). Rows
# with --shm run over the rings (the spin loops count too: prefer --ring-spin-us 0 in -x
# to count the work alone). For each row: the server runs under
# `valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes`, the keys are loaded
# with instrumentation off, then it is switched on for exactly REQUESTS requests of the row
# (`kvclient bench -n`), and the IO thread's instructions are divided by REQUESTS (its
# timers and the connection set-up included; the main thread's expiry sweep is not: it
# works per second of wall time, which valgrind stretches, and moved whole-server counts
# by up to 20%).
# Output: one line per row, "NAME instr/request"; the dumps stay in $OUT (printed).
# Location-independent: defaults are this tree's bin/.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
srv=$here/bin/libevkv
cli=$here/bin/kvclient
n=20000
extra="--workers 0"
while getopts "b:k:n:x:" o; do
    case $o in
    b) srv=$OPTARG ;;
    k) cli=$OPTARG ;;
    n) n=$OPTARG ;;
    x) extra=$OPTARG ;;
    *) sed -n 3,17p "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
rows=("$@")
if [ ${#rows[@]} -eq 0 ]; then
    rows=("get1:-t get -c 1 -P 1" "get16:-t get -c 1 -P 16" "set1:-t set -c 1 -P 1"
          "set16:-t set -c 1 -P 16" "rget1:--protocol resp -t get -c 1 -P 1"
          "rget16:--protocol resp -t get -c 1 -P 16" "rset1:--protocol resp -t set -c 1 -P 1"
          "rset16:--protocol resp -t set -c 1 -P 16")
fi
OUT=${OUT:-$(mktemp -d /tmp/kv-callgrind.XXXXXX)}
mkdir -p "$OUT"
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
for row in "${rows[@]}"; do
    port=$(free_port)
    name=${row%%:*}
    args=${row#*:}
    shm=/kvcg-$$-$name
    sock=$OUT/$name.sock
    rm -f "$sock" "/dev/shm$shm"
    where="-p $port" listen=""
    case $args in *--shm*) where="-s $sock" listen="--unix $sock" ;; esac
    # shellcheck disable=SC2086
    valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \
        --callgrind-out-file="$OUT/$name.%p" \
        "$srv" --port $port $listen --shm-name $shm --memory 256m --log-level warn \
        $extra >"$OUT/$name.log" 2>&1 &
    vpid=$!
    for _ in $(seq 300); do
        "$cli" -p $port ping >/dev/null 2>&1 && break
        sleep 0.2
    done
    # shellcheck disable=SC2086
    "$cli" $where bench $args -n 1 -d 100 -r 100000 >/dev/null 2>&1 # loads the keys
    callgrind_control -i on $vpid >/dev/null
    # shellcheck disable=SC2086
    "$cli" $where bench $args -n $n -d 100 -r 100000 --no-populate >"$OUT/$name.bench" 2>&1
    callgrind_control -i off $vpid >/dev/null
    kill $vpid
    wait $vpid 2>/dev/null
    rm -f "$sock" "/dev/shm$shm"
    # the IO thread's file (the one that ran on_read); the others (the main thread's expiry
    # sweep, timers) do work per second, not per request
    ir=0
    for f in "$OUT"/$name.[0-9]*; do
        if grep -q "on_read\|conn_parse" "$f"; then
            ir=$(awk '/^totals:/ {print $2}' "$f")
            break
        fi
    done
    if grep -q "FAILED" "$OUT/$name.bench" || [ "$ir" = 0 ]; then
        printf '%-8s   FAILED (see %s)\n' "$name" "$OUT/$name.log"
        continue
    fi
    printf '%-8s %8.0f instr/request   (%s)\n' "$name" "$(echo "$ir / $n" | bc -l)" "$args"
done
echo "dumps: $OUT" >&2
