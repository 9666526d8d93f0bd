#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE
# bench/rings_quick.sh -- the quick interleaved comparison behind README "Shared-memory rings"
# figures: libevkv TCP / unix / shm (this tree's bin/, or $KV_BIN), libevkv TCP of another
# build ($MAIN_BIN, default the same binary), Redis and echo_server over unix sockets.
# Runs from anywhere (paths are this tree's). Environment: RUNS (3), SECS (2),
# ROWS ("get1 get16 lat mget"), KV_ARGS (extra options of the libevkv under test, e.g.
# "--ring-spin-us 200"), KV_BIN, MAIN_BIN. Prefer bench/compare.sh for the full table.
cd "$(dirname "$0")/.." || exit 1
KV_BIN=${KV_BIN:-./bin/libevkv}
T=$(mktemp -d); K=${KV_CLIENT:-./bin/kvclient}; runs=${RUNS:-3}; secs=${SECS:-2}
rm -f $T/*.sock
$KV_BIN --port 17711 --unix $T/kv.sock --shm-name /rb-bench --memory 512m --log-level warn ${KV_ARGS:-} >$T/kv.log 2>&1 & kvpid=$!
${MAIN_BIN:-$KV_BIN} --port 17712 --shm-name /rb-bench-main --memory 512m --log-level warn >$T/kvm.log 2>&1 & mpid=$!
redis-server --port 0 --unixsocket $T/redis.sock --unixsocketperm 700 --save '' --appendonly no --daemonize no --io-threads 1 >$T/redis.log 2>&1 & rpid=$!
./bin/echo_server -p 17713 -d 100 -s $T/echo.sock >$T/echo.log 2>&1 & epid=$!
sleep 2
declare -A W=([kv-tcp]="-p 17711" [kv-unix]="-s $T/kv.sock" [kv-shm]="-s $T/kv.sock --shm" [main-tcp]="-p 17712" [redis-unix]="-s $T/redis.sock" [echo-unix]="-s $T/echo.sock")
declare -A P=([redis-unix]="--protocol resp")
declare -A R=([get1]="-t get -c 50 -P 1" [get16]="-t get -c 50 -P 16" [lat]="-t get -c 1 -P 1" [mget]="-t mget -c 50 -P 1")
for s in kv-tcp main-tcp redis-unix; do $K ${W[$s]} bench ${P[$s]:-} -t get -c 1 -n 1 -d 100 -r 100000 >/dev/null; done
: > $T/results
for i in $(seq $runs); do for r in ${ROWS:-get1 get16 lat mget}; do for s in kv-tcp kv-unix kv-shm main-tcp redis-unix echo-unix; do
  l=$(nice -n -5 $K ${W[$s]} bench ${P[$s]:-} ${R[$r]} -d 100 -r 100000 --seconds $secs --no-populate --json 2>&1 | tail -1)
  echo "$s $r $i $l" >> $T/results
done; done; echo "round $i load $(cut -d' ' -f1 /proc/loadavg)" >&2; done
kill $kvpid $mpid $rpid $epid; wait 2>/dev/null
rm -f /dev/shm/rb-bench /dev/shm/rb-bench-main
python3 - $T/results <<'PY'
import sys, json, statistics as st
med = {}
for line in open(sys.argv[1]):
    s, r, i, j = line.split(' ', 3)
    try: x = json.loads(j)
    except Exception: print("bad", line.strip()); continue
    med.setdefault((r, s), []).append(x)
def m(r, s, f):
    v = [x[f] for x in med.get((r, s), [])]
    return st.median(v) if v else float('nan')
for r in ["get1", "get16", "lat", "mget"]:
    if not any(k[0] == r for k in med): continue
    for s in ["kv-tcp", "kv-unix", "kv-shm", "main-tcp", "redis-unix", "echo-unix"]:
        print("%-6s %-11s %10.0f rps  p50 %7.1f  p99 %8.1f  /echo-u %.2f /redis-u %.2f /kv-tcp %.2f" % (r, s, m(r,s,'rps'), m(r,s,'p50_us'), m(r,s,'p99_us'), m(r,s,'rps')/m(r,'echo-unix','rps'), m(r,s,'rps')/m(r,'redis-unix','rps'), m(r,s,'rps')/m(r,'kv-tcp','rps')))
PY
