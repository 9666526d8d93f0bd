#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE
# Issue 2 figures: kvclient bench -t ping against libevkv, next to
# redis-benchmark -t ping_mbulk against a local redis-server, interleaved in
# one run, median of RUNS. Loopback only; both servers are stopped by PID.
#   bench/ping_vs_redis.sh [RUNS] [REQUESTS]
# Needs a release build (./autobuild.sh release) and redis-server/redis-tools.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
n=${2:-1000000}
kport=17379
rport=17380
shm=/libevkv-bench-$$

./bin/libevkv --port $kport --shm-name $shm --memory 64m --log-level warn >/tmp/bench-kv.log 2>&1 &
kpid=$!
redis-server --port $rport --save '' --appendonly no --daemonize no >/tmp/bench-redis.log 2>&1 &
rpid=$!
trap 'kill $kpid $rpid 2>/dev/null; wait $kpid $rpid 2>/dev/null; rm -f /dev/shm${shm}' EXIT
sleep 0.5

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for P in 1 16; do
    : >/tmp/bench-k-rps; : >/tmp/bench-k-p99; : >/tmp/bench-r-rps; : >/tmp/bench-r-p99
    for i in $(seq "$runs"); do
        ./bin/kvclient -p $kport bench -t ping -c 50 -n "$n" -P $P -d 100 --json >/tmp/bench-k.json
        python3 -c "import json;d=json.load(open('/tmp/bench-k.json'));print(d['rps']);open('/tmp/bench-k-p99','a').write(str(d['p99_us'])+'\n')" >>/tmp/bench-k-rps
        redis-benchmark -p $rport -t ping_mbulk -c 50 -n "$n" -P $P -d 100 --csv 2>/dev/null |
            awk -F'"' '/PING_MBULK/ {print $4 > "/dev/stderr"; print $12}' 2>>/tmp/bench-r-rps >>/tmp/bench-r-p99
    done
    k_rps=$(median </tmp/bench-k-rps); k_p99=$(median </tmp/bench-k-p99)
    r_rps=$(median </tmp/bench-r-rps); r_p99=$(median </tmp/bench-r-p99)
    printf 'P=%-2s libevkv ping: %10.0f req/s  p99 %8.1f us | redis ping_mbulk (redis-benchmark): %10.0f req/s  p99 %8.1f us | ratio %.2f\n' \
        $P "$k_rps" "$k_p99" "$r_rps" "$(echo "$r_p99*1000" | bc -l)" "$(echo "$k_rps/$r_rps" | bc -l)"
done
