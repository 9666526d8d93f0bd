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
# `valgrind --tool=callgrind --instr-atstart=no` (whole server, every thread), the keys are
# loaded with instrumentation off, then it is switched on for exactly REQUESTS requests of
# the row (`kvclient bench -n`), and the instructions counted are divided by REQUESTS
# (connection set-up of the 50 clients included: a few per cent at 20k requests).
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
port=$((20000 + RANDOM % 20000))
for row in "${rows[@]}"; do
    name=${row%%:*}
    args=${row#*:}
    shm=/kvcg-$$-$name
    sock=$OUT/$name.sock
    rm -f "$sock" "/dev/shm$shm"
    where="-p $port" listen=""
    case $args in *--shm*) where="-s $sock" listen="--unix $sock" ;; esac
    # shellcheck disable=SC2086
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/$name.%p" \
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
    ir=$(grep -h '^totals:' "$OUT"/$name.[0-9]* 2>/dev/null | awk '{s += $2} END {print s + 0}')
    printf '%-8s %8.0f instr/request   (%s)\n' "$name" "$(echo "$ir / $n" | bc -l)" "$args"
    port=$((port + 1))
done
echo "dumps: $OUT" >&2
