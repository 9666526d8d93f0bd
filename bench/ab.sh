#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE
# A/B two libevkv builds (or two option sets) on this noisy machine: both
# servers run side by side on loopback, each workload is run ROUNDS times per
# server, alternating which one goes first every round (a fixed order biased
# the second by ~7% here), and the medians of req/s, p99 and the server's
# CPU per request ((utime+stime) / requests, less sensitive to the client)
# are printed with B/A ratios. Identical binaries differ by <= 5% with 8
# rounds: smaller differences are noise (record.md).
#
#   A=old/bin/libevkv B=bin/libevkv bench/ab.sh ROUNDS SECONDS "WORKLOAD" ...
#   e.g. A=/tmp/old/bin/libevkv B=bin/libevkv bench/ab.sh 7 2 "-t get -c 50 -P 16"
#
# env AARGS / BARGS: extra options for A / B (e.g. "--io-threads 2", or
# "--data-file /mnt/huge/a" for a store on huge pages). Workloads are
# `kvclient bench` arguments; -d 100 -r 100000 are added. Both servers are
# stopped by PID and their segments removed at exit.
set -euo pipefail
(($# >= 3)) || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
rounds=$1 secs=$2
shift 2
cd "$(dirname "$0")/.."
: "${A:?set A to the first libevkv binary}" "${B:?set B to the second libevkv binary}"
pa= pb=
cleanup() {
    for p in $pa $pb; do kill "$p" 2>/dev/null || true; done
    for p in $pa $pb; do wait "$p" 2>/dev/null || true; done
    rm -f "/dev/shm/ab-a-$$" "/dev/shm/ab-b-$$"
}
trap cleanup EXIT
# two ports nobody listens on (fixed ones collided with other runs on a
# shared machine), below the ephemeral range the clients' sockets use
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
    local p lo
    lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range)
    while :; do
        p=$((10000 + RANDOM % (lo - 10000)))
        port_free $p && [[ $p != "${porta:-}" ]] && { echo $p; return; }
    done
}
wait_port() { # PORT PID: until it accepts (a 512m segment takes a while on a busy machine)
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    echo "ab.sh: the server on port $1 did not start" >&2
    exit 1
}
porta=$(pick_port)
portb=$(pick_port)
# shellcheck disable=SC2086
"$A" --bind 127.0.0.1 --port "$porta" --shm-name "/ab-a-$$" --memory 512m --log-level warn ${AARGS:-} >/dev/null 2>&1 &
pa=$!
# shellcheck disable=SC2086
"$B" --bind 127.0.0.1 --port "$portb" --shm-name "/ab-b-$$" --memory 512m --log-level warn ${BARGS:-} >/dev/null 2>&1 &
pb=$!
wait_port "$porta" $pa
wait_port "$portb" $pb
./bin/kvclient -p "$porta" bench -t get -c 1 -n 1 -d 100 -r 100000 >/dev/null
./bin/kvclient -p "$portb" bench -t get -c 1 -n 1 -d 100 -r 100000 >/dev/null
cpu() { awk '{sub(/.*\) /, ""); print $12+$13}' "/proc/$1/stat"; }
for w in "$@"; do
    for i in $(seq "$rounds"); do
        order="a b"
        ((i % 2)) || order="b a"
        for s in $order; do
            if [[ $s == a ]]; then p=$porta pid=$pa; else p=$portb pid=$pb; fi
            c0=$(cpu "$pid")
            # shellcheck disable=SC2086
            j=$(./bin/kvclient -p $p bench $w -d 100 -r 100000 --seconds "$secs" --no-populate --json)
            c1=$(cpu "$pid")
            echo "$s $((c1 - c0)) $j"
        done
    done | python3 -c '
import sys, json, statistics as st, os
hz = os.sysconf("SC_CLK_TCK")
d = {"a": [], "b": []}
for l in sys.stdin:
    s, c, j = l.split(" ", 2)
    j = json.loads(j)
    j["cpu"] = int(c) / hz * 1e6 / max(1, j["requests"])
    d[s].append(j)
m = lambda s, f: st.median([x[f] for x in d[s]])
print("%-22s A %8.0f req/s p99 %6.0f us %5.2f us cpu/req | B %8.0f p99 %6.0f %5.2f | B/A req/s %.3f cpu/req %.3f"
      % (sys.argv[1], m("a", "rps"), m("a", "p99_us"), m("a", "cpu"), m("b", "rps"), m("b", "p99_us"),
         m("b", "cpu"), m("b", "rps") / m("a", "rps"), m("b", "cpu") / m("a", "cpu")))
' "$w"
done
