#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE
# bench/ring_params.sh -- chooses ring parameters by measurement: one libevkv server per
# setting (same binary, same keys), every row over shm run against each in turn, rounds
# interleaved (the order alternates every round), medians and ratios to the first setting.
#
#   bench/ring_params.sh [-r RUNS] [-s SECS] [-c "KVCLIENT ENV"] SETTING... -- ROW...
#     SETTING  LABEL=server options, e.g. 'size256k=--ring-size 256k'
#     ROW      LABEL=kvclient bench options, e.g. 'get16=-t get -c 50 -P 16'
#
# Defaults (no arguments): --ring-size 64k / 256k / 1m against GET -c50 -P16 and MGET of 10
# -c50 -P1 (README "Shared-memory rings", how --ring-size's default was chosen). Env
# KV_CLIENT_ENV is put before every kvclient (e.g. KV_CLIENT_SPIN_US=20). Memory per attached
# client is 4 KiB + 2 x --ring-size (both rings; the RING row of the memory table). Runs from
# anywhere: this tree's bin/.
set -u
cd "$(dirname "$0")/.." || exit 1
runs=3
secs=2
while getopts "r:s:" o; do
    case $o in
    r) runs=$OPTARG ;;
    s) secs=$OPTARG ;;
    *) sed -n 3,16p "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
sets=()
rows=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do sets+=("$1"); shift; done
[ $# -gt 0 ] && shift
rows=("$@")
[ ${#sets[@]} -eq 0 ] && sets=("64k=--ring-size 64k" "256k=--ring-size 256k" "1m=--ring-size 1m")
[ ${#rows[@]} -eq 0 ] && rows=("get16=-t get -c 50 -P 16" "mget=-t mget -c 50 -P 1")
T=$(mktemp -d /tmp/kv-rparams.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -f /dev/shm/kvrp-$$-*
}
trap cleanup EXIT
i=0
for s in "${sets[@]}"; do
    # shellcheck disable=SC2086
    ./bin/libevkv --no-tcp --unix $T/$i.sock --shm-name /kvrp-$$-$i --memory 512m \
        --log-level warn ${s#*=} >$T/$i.log 2>&1 &
    pids+=($!)
    i=$((i + 1))
done
sleep 1
for i in $(seq 0 $((${#sets[@]} - 1))); do
    env ${KV_CLIENT_ENV:-} ./bin/kvclient -s $T/$i.sock --shm bench -t get -c 1 -n 1 -d 100 \
        -r 100000 >/dev/null 2>&1
done
: >$T/results
for r in $(seq "$runs"); do
    order=$(seq 0 $((${#sets[@]} - 1)))
    [ $((r % 2)) -eq 0 ] && order=$(echo "$order" | tac)
    for row in "${rows[@]}"; do
        for i in $order; do
            # shellcheck disable=SC2086
            l=$(env ${KV_CLIENT_ENV:-} ./bin/kvclient -s $T/$i.sock --shm bench ${row#*=} -d 100 \
                -r 100000 --seconds "$secs" --no-populate --json 2>&1 | tail -1)
            echo "${row%%=*} $i $l" >>$T/results
        done
    done
    echo "round $r of $runs, load $(cut -d' ' -f1 /proc/loadavg)" >&2
done
python3 - "$T/results" "${sets[@]}" <<'PY'
import sys, json, statistics as st
labels = [s.split('=', 1)[0] for s in sys.argv[2:]]
res = {}
for line in open(sys.argv[1]):
    row, i, j = line.split(' ', 2)
    try:
        x = json.loads(j)
    except Exception:
        print("bad:", line.strip()); continue
    res.setdefault((row, int(i)), []).append(x)
def med(row, i, f):
    v = [x[f] for x in res.get((row, i), []) if f in x]
    return st.median(v) if v else float('nan')
for row in dict.fromkeys(k[0] for k in res):
    base = med(row, 0, 'rps')
    for i, lab in enumerate(labels):
        print("%-8s %-10s %10.0f req/s  p50 %8.1f us  p99 %9.1f us  x%.2f" % (
            row, lab, med(row, i, 'rps'), med(row, i, 'p50_us'), med(row, i, 'p99_us'),
            med(row, i, 'rps') / base))
PY
