#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE
# Issue 7 figures: redis-benchmark -t set,get against libevkv's RESP port and
# against Debian's redis-server (--save '' --appendonly no), interleaved in one
# run, median of RUNS, with the libevkv/redis ratio for requests/s and p99.
# Loopback only; both servers are stopped by PID.
#   bench/resp_vs_redis.sh [RUNS] [REQUESTS]      (defaults 3, 1000000)
# Needs a release build in bin/ and redis-server/redis-tools.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
n=${2:-1000000}
kport=17391
rport=17392
shm=/libevkv-respbench-$$
tmp=$(mktemp -d)

./bin/libevkv --port $kport --shm-name $shm --memory 256m --log-level warn >"$tmp/kv.log" 2>&1 &
kpid=$!
redis-server --port $rport --save '' --appendonly no >"$tmp/redis.log" 2>&1 &
rpid=$!
trap 'kill $kpid $rpid 2>/dev/null; wait $kpid $rpid 2>/dev/null; rm -f /dev/shm${shm}; rm -rf "$tmp"' EXIT
sleep 0.5

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf '%-4s %-5s %12s %9s %12s %9s %8s %8s\n' P test libevkv_rps p99_ms redis_rps p99_ms rps_x p99_x
for P in 1 16; do
    for i in $(seq "$runs"); do
        for who in kv redis; do
            port=$kport
            [[ $who == redis ]] && port=$rport
            # csv: "test","rps","avg","min","p50","p95","p99","max"
            redis-benchmark -p $port -t set,get -n "$n" -c 50 -d 100 -r 100000 -P $P --csv 2>/dev/null |
                tr -d '"' | awk -F, -v w=$who -v d="$tmp" '$1=="SET"||$1=="GET" {
                    print $2 >> (d "/" w "-" $1 "-rps"); print $7 >> (d "/" w "-" $1 "-p99") }'
        done
    done
    for t in SET GET; do
        kr=$(median <"$tmp/kv-$t-rps"); kp=$(median <"$tmp/kv-$t-p99")
        rr=$(median <"$tmp/redis-$t-rps"); rp=$(median <"$tmp/redis-$t-p99")
        printf '%-4s %-5s %12.0f %9.3f %12.0f %9.3f %8.2f %8.2f\n' $P $t "$kr" "$kp" "$rr" "$rp" \
            "$(echo "$kr/$rr" | bc -l)" "$(echo "$kp/$rp" | bc -l)"
        rm -f "$tmp"/*-$t-*
    done
done
echo "(rps_x = libevkv/redis requests/s; p99_x = libevkv/redis p99: below 1 is better)"
