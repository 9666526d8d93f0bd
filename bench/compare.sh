#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE
# Issue 8's comparison: libevkv next to Redis, memcached and a storage-free
# epoll server (bin/echo_server, the loopback ceiling), all driven by the
# same load engine (`kvclient bench --protocol binary|resp|memcache`), runs
# interleaved, medians printed as one table.
#
#   bench/compare.sh [--quick] [--runs N] [--seconds S] [--build] [--rows LIST]
#                    [--unix yes|no] [--huge yes|no|auto] [--nice N]
#
#   --quick     1 run of 1 s per cell (a smoke test, not a measurement)
#   --runs N    runs per cell, interleaved (default 3); the median is shown
#   --seconds S length of each run (default 2.5)
#   --build     (re)build a release tree first: cmake -B build-bench, -O2
#               -DNDEBUG; NOTE programs land in ./bin (CMake's output dir),
#               replacing whatever build is there
#   --rows LIST comma-separated subset of: get1,set1,get16,set16,lat,mget
#   --huge yes|no|auto
#               libevkv's store on huge pages (README, "Huge pages"): a private
#               tmpfs mounted with huge=always (root only) holds the store
#               (--data-file), and libevkv-4k runs the default /dev/shm segment
#               next to it; auto (default) = yes when root
#   --nice N    run every server and the client under `nice -n N` (N < 0 needs
#               root): on a machine shared with other jobs, the measured
#               processes then take precedence; the CPU line below tells how
#               much the others still got
#   --unix yes|no
#               also measure over unix-domain sockets (default yes): libevkv
#               (--unix, the same server as its TCP rows), redis
#               (--unixsocket) and echo_server (-s), each in a private
#               directory under /tmp
#   env LIBEVKV_ARGS   extra libevkv options (e.g. "--workers 0")
#
# Systems, each on loopback on a private port (127.0.0.1, chosen free):
#   libevkv       ./bin/libevkv (defaults for threads), --memory 512m, its store
#                 on huge pages when --huge (a file on a private huge=always
#                 tmpfs), else the private shm segment /libevkv-compare-PID;
#                 driven with binary frames, and with RESP (libevkv-resp) on
#                 the same port
#   libevkv-4k    with --huge only: the same on a /dev/shm segment (4 KiB
#                 pages, the out-of-the-box setting), binary frames
#   redis         redis-server --save '' --appendonly no (io-threads 1), RESP
#   memcached-t1  memcached -t 1 -m 512 -U 0; gets are meta `mg k v`
#   memcached-t2  the same with -t 2
#   echo-*        ./bin/echo_server -d 100, in each protocol (see its header):
#                 answers of the real sizes, nothing stored
#   *-unix*       with --unix yes: the same servers over their unix sockets
#                 (libevkv-unix binary, libevkv-unix-resp, redis-unix,
#                 echo-unix-binary, echo-unix-resp); memcached is not run
#                 over one (its -s turns TCP off: it would be two more servers)
#   libevkv-shm   with --unix yes: the same libevkv server, each connection attached to
#                 its shared-memory rings (kvclient bench --shm; issue 15)
# Workloads (all -d 100 -r 100000; keys populated once per system first):
#   get1/set1    -c 50 -P 1      get16/set16  -c 50 -P 16
#   lat          GET -c 1 -P 1   mget         MGET of 10 keys, -c 50 -P 1
#                (memcache: 10 pipelined mg sent together = one request)
# Every server is stopped by PID at the end (trap), the segment removed.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
runs=3
secs=2.5
build=0
rows_sel=get1,set1,get16,set16,lat,mget
prio=()
huge=auto
unix=yes
while (($#)); do
    case $1 in
    --quick) runs=1 secs=1 ;;
    --runs) runs=$2; shift ;;
    --seconds) secs=$2; shift ;;
    --build) build=1 ;;
    --rows) rows_sel=$2; shift ;;
    --nice) prio=(nice -n "$2"); shift ;;
    --huge) huge=$2; shift ;;
    --unix) unix=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

for t in redis-server memcached python3; do
    command -v $t >/dev/null || { echo "compare.sh: $t is needed (apt-get install redis-server memcached python3)" >&2; exit 1; }
done
if ((build)) || [[ ! -x bin/libevkv || ! -x bin/kvclient || ! -x bin/echo_server ]]; then
    echo "[compare] building a release tree in build-bench/ (programs go to bin/)"
    cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS_RELEASE="-O2 -DNDEBUG" >/dev/null
    cmake --build build-bench -j "$(nproc)" --target libevkv kvclient echo_server -- --no-print-directory >/dev/null
fi

tmp=$(mktemp -d /tmp/compare.XXXXXX)
shm=/libevkv-compare-$$
pids=()
hugedir=
stop_all() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -f "/dev/shm$shm" "/dev/shm$shm-4k"
    [[ -n $hugedir ]] && umount "$hugedir" 2>/dev/null || true
}
trap 'stop_all; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

# listening ports below the ephemeral range (kvclient's own connections use
# that range), and used by no socket at all
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && ! grep -qi ":$(printf %04X "$1") " /proc/net/tcp; }
pick_port() {
    local p lo
    lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range)
    while :; do
        p=$((10000 + RANDOM % (lo - 10000)))
        port_free $p && [[ " ${port[*]:-} " != *" $p "* ]] && { echo $p; return; }
    done
}
wait_sock() { # PATH PID NAME
    for _ in $(seq 100); do
        [[ -S $1 ]] && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    echo "compare.sh: $3 did not create its unix socket $1; its log:" >&2
    cat "$tmp/$3.log" >&2
    exit 1
}
wait_port() { # PORT PID NAME
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    echo "compare.sh: $3 did not start; its log:" >&2
    cat "$tmp/$3.log" >&2
    exit 1
}

# ---- servers -----------------------------------------------------------------------
declare -A port sockpath
start() { # NAME CMD...
    local name=$1
    shift
    "${prio[@]}" "$@" >"$tmp/$name.log" 2>&1 &
    pids+=($!)
    wait_port "${port[$name]}" $! "$name"
    [[ -z ${sockpath[$name]:-} ]] || wait_sock "${sockpath[$name]}" $! "$name"
}
[[ $huge == auto ]] && { [[ $(id -u) == 0 ]] && huge=yes || huge=no; }
store=(--shm-name "$shm")
if [[ $huge == yes ]]; then
    mkdir -p "$tmp/huge"
    if mount -t tmpfs -o huge=always,size=600m,mode=0700 tmpfs "$tmp/huge"; then
        hugedir=$tmp/huge
        store=(--data-file "$hugedir/store")
    else
        echo "compare.sh: cannot mount a huge=always tmpfs (needs root); running without" >&2
        huge=no
    fi
fi
for s in libevkv libevkv4k redis mc1 mc2 echo; do port[$s]=$(pick_port); done
kvunix=() redisunix=() echounix=()
if [[ $unix == yes ]]; then
    for s in libevkv redis echo; do sockpath[$s]=$tmp/$s.sock; done
    kvunix=(--unix "${sockpath[libevkv]}")
    redisunix=(--unixsocket "${sockpath[redis]}" --unixsocketperm 700)
    echounix=(-s "${sockpath[echo]}")
fi
# shellcheck disable=SC2086
start libevkv ./bin/libevkv --bind 127.0.0.1 --port "${port[libevkv]}" "${store[@]}" \
    --memory 512m --log-level warn "${kvunix[@]}" ${LIBEVKV_ARGS:-}
if [[ $huge == yes ]]; then
    # shellcheck disable=SC2086
    start libevkv4k ./bin/libevkv --bind 127.0.0.1 --port "${port[libevkv4k]}" \
        --shm-name "$shm-4k" --memory 512m --log-level warn ${LIBEVKV_ARGS:-}
fi
start redis redis-server --bind 127.0.0.1 --port "${port[redis]}" --save '' --appendonly no \
    --daemonize no --protected-mode no --io-threads 1 "${redisunix[@]}"
mcuser=()
[[ $(id -u) == 0 ]] && mcuser=(-u nobody)
start mc1 memcached "${mcuser[@]}" -l 127.0.0.1 -p "${port[mc1]}" -U 0 -t 1 -m 512 -c 4096
start mc2 memcached "${mcuser[@]}" -l 127.0.0.1 -p "${port[mc2]}" -U 0 -t 2 -m 512 -c 4096
start echo ./bin/echo_server -p "${port[echo]}" -d 100 "${echounix[@]}"

# system -> "server-port protocol"
systems=(libevkv libevkv-resp redis memcached-t1 memcached-t2 echo-binary echo-resp echo-memcache)
[[ $huge == yes ]] && systems=(libevkv libevkv-4k "${systems[@]:1}")
[[ $unix == yes ]] && systems+=(libevkv-unix libevkv-unix-resp libevkv-shm redis-unix echo-unix-binary echo-unix-resp)
declare -A sport sproto
sport=([libevkv]=${port[libevkv]} [libevkv-resp]=${port[libevkv]} [libevkv-4k]=${port[libevkv4k]:-0}
    [redis]=${port[redis]}
    [memcached-t1]=${port[mc1]} [memcached-t2]=${port[mc2]} [echo-binary]=${port[echo]}
    [echo-resp]=${port[echo]} [echo-memcache]=${port[echo]})
sproto=([libevkv]=binary [libevkv-resp]=resp [libevkv-4k]=binary [redis]=resp [memcached-t1]=memcache
    [memcached-t2]=memcache [echo-binary]=binary [echo-resp]=resp [echo-memcache]=memcache
    [libevkv-unix]=binary [libevkv-unix-resp]=resp [libevkv-shm]=binary [redis-unix]=resp [echo-unix-binary]=binary
    [echo-unix-resp]=resp)
# system -> unix socket path (the unix systems only)
declare -A sunix=([libevkv-unix]=${sockpath[libevkv]:-} [libevkv-unix-resp]=${sockpath[libevkv]:-}
    [libevkv-shm]=${sockpath[libevkv]:-}
    [redis-unix]=${sockpath[redis]:-} [echo-unix-binary]=${sockpath[echo]:-}
    [echo-unix-resp]=${sockpath[echo]:-})
# row -> kvclient bench arguments
declare -A rowargs=([get1]="-t get -c 50 -P 1" [set1]="-t set -c 50 -P 1"
    [get16]="-t get -c 50 -P 16" [set16]="-t set -c 50 -P 16"
    [lat]="-t get -c 1 -P 1" [mget]="-t mget -c 50 -P 1")
IFS=, read -r -a rows <<<"$rows_sel"
for r in "${rows[@]}"; do [[ -n ${rowargs[$r]:-} ]] || { echo "compare.sh: unknown row $r" >&2; exit 2; }; done

bench() { # SYSTEM ARGS...
    local s=$1
    shift
    local where=(-p "${sport[$s]:-0}")
    local shm=()
    [[ -n ${sunix[$s]:-} ]] && where=(-s "${sunix[$s]}")
    [[ $s == libevkv-shm ]] && shm=(--shm) # the shared-memory rings of the same server
    "${prio[@]}" ./bin/kvclient "${where[@]}" bench --protocol "${sproto[$s]}" -d 100 -r 100000 "$@" "${shm[@]}"
}

# ---- the record --------------------------------------------------------------------------
rev=$(git rev-parse --short HEAD 2>/dev/null || cat .git-rev 2>/dev/null || echo unknown)
dirty=$({ git status --porcelain --untracked-files=no 2>/dev/null || true; } | head -1)
echo "# libevkv comparison, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "# git $rev${dirty:+ (uncommitted changes)}; $(nproc) cores: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | sort -u | head -1)"
echo "# libevkv $(readelf -S bin/libevkv 2>/dev/null | grep -q debug_info && echo 'DEBUG build (has debug info)' || echo 'release build (no debug info)') ${LIBEVKV_ARGS:-(default threads)}; $(redis-server --version | awk '{print $3}') $(memcached -V)"
if [[ $huge == yes ]]; then
    echo "# libevkv store on huge pages (private huge=always tmpfs, --data-file; README \"Huge pages\"); libevkv-4k: /dev/shm, 4 KiB pages"
else
    echo "# libevkv store on /dev/shm (4 KiB pages unless its tmpfs allows huge pages; see --huge)"
fi
echo "# $runs run(s) of ${secs} s per cell, interleaved${prio:+, under ${prio[*]}}; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
[[ $unix == yes ]] && echo "# unix rows: libevkv --unix (the same server as its TCP rows), redis --unixsocket, echo_server -s"

# CPU accounting: jiffies the machine was busy, and jiffies of our own
# processes (the servers, and every kvclient this shell has reaped)
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
steal_ticks() { awk '/^cpu /{print $9}' /proc/stat; }
our_ticks() {
    local t p
    t=$(awk '{sub(/.*\) /, ""); print $14+$15}' /proc/$$/stat)
    for p in "${pids[@]}"; do
        t=$((t + $(awk '{sub(/.*\) /, ""); print $12+$13}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
busy0=$(busy_ticks) steal0=$(steal_ticks) ours0=$(our_ticks) t0=$(date +%s.%N)

for s in "${systems[@]}"; do # keyspace 0..99999 once per system
    bench "$s" -t get -c 1 -n 1 --json >/dev/null || { echo "compare.sh: populating $s failed" >&2; exit 1; }
done

: >"$tmp/results"
for i in $(seq "$runs"); do
    for r in "${rows[@]}"; do
        for s in "${systems[@]}"; do
            # shellcheck disable=SC2086
            line=$(bench "$s" ${rowargs[$r]} --seconds "$secs" --no-populate --json) ||
                echo "compare.sh: $s $r run $i exited non-zero: ${line:-no result}" >&2
            [[ $line == \{* ]] &&
                echo "{\"system\":\"$s\",\"row\":\"$r\",\"run\":$i,\"r\":$line}" >>"$tmp/results"
        done
    done
    echo "# run $i of $runs done; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done
busy1=$(busy_ticks) steal1=$(steal_ticks) ours1=$(our_ticks) t1=$(date +%s.%N)
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v b=$((busy1 - busy0)) -v o=$((ours1 - ours0)) -v st=$((steal1 - steal0)) -v t="$t0" -v u="$t1" \
    -v hz="$(getconf CLK_TCK)" -v n="$(nproc)" 'BEGIN {
    cap = (u - t) * hz * n
    other = (b - o) / cap  # tick-sampled: about +-5%
    if (other < 0)
        other = 0
    warn = ""
    if (other > 0.05)
        warn = "  <-- NOT QUIET: other processes ran; rerun for clean figures"
    else if (st / cap > 0.05)
        warn = "  <-- NOT QUIET: the host took CPU from this VM (steal); rerun for clean figures"
    printf("# CPU during the runs: ours %.0f%%, other processes %.0f%% (+-5), steal %.0f%% of %d cores%s\n",
        100 * o / cap, 100 * other, 100 * st / cap, n, warn)
}'

python3 - "$tmp/results" "${rows[@]}" <<'EOF'
import json, sys, statistics as st
res = [json.loads(l) for l in open(sys.argv[1])]
rows = sys.argv[2:]
names = {"get1": "GET -c50 -P1", "set1": "SET -c50 -P1", "get16": "GET -c50 -P16",
         "set16": "SET -c50 -P16", "lat": "GET -c1 -P1", "mget": "MGET10 -c50 -P1"}
echo_of = {("binary", "tcp"): "echo-binary", ("resp", "tcp"): "echo-resp",
           ("memcache", "tcp"): "echo-memcache", ("binary", "unix"): "echo-unix-binary",
           ("resp", "unix"): "echo-unix-resp", ("binary", "shm"): "echo-unix-binary"}
med = {}
bad = {}
for x in res:
    k = (x["row"], x["system"])
    med.setdefault(k, []).append(x["r"])
    if x["r"]["failed"] or x["r"]["errors"] or x["r"]["not_found"]:
        bad[k] = bad.get(k, 0) + 1
def m(row, sys_, f):
    v = [r[f] for r in med.get((row, sys_), [])]
    return st.median(v) if v else float("nan")
print("%-15s %-18s %11s %9s %9s %8s %8s %8s %8s" % ("workload", "system", "req/s", "p50 us",
      "p99 us", "/libevkv", "/redis", "/mc best", "/echo"))
for row in rows:
    mc = max(("memcached-t1", "memcached-t2"), key=lambda s: m(row, s, "rps"))
    for s in ["libevkv", "libevkv-4k", "libevkv-resp", "libevkv-unix", "libevkv-unix-resp",
              "libevkv-shm", "redis", "redis-unix", "memcached-t1", "memcached-t2", "echo-binary", "echo-resp",
              "echo-memcache", "echo-unix-binary", "echo-unix-resp"]:
        if (row, s) not in med:
            continue
        rps = m(row, s, "rps")
        proto = med[(row, s)][0]["protocol"]
        transport = med[(row, s)][0].get("transport", "tcp")
        ceiling = m(row, echo_of.get((proto, transport), "none"), "rps")
        flag = " *%d run(s) with errors/misses/failure" % bad[(row, s)] if (row, s) in bad else ""
        print("%-15s %-18s %11.0f %9.1f %9.1f %8.2f %8.2f %8.2f %8.2f%s" % (
            names[row], s, rps, m(row, s, "p50_us"), m(row, s, "p99_us"),
            rps / m(row, "libevkv", "rps"), rps / m(row, "redis", "rps"), rps / m(row, mc, "rps"),
            rps / ceiling, flag))
    print("%-15s %-18s (best memcached thread setting in this row: %s)" % ("", "", mc))
print()
print("ratios: /libevkv, /redis, /mc best = req/s over that system's median in the same row "
      "(mc best = the faster of memcached -t 1 / -t 2);")
print("/echo = req/s over echo_server's median in the same row, protocol and transport.")
print("MGET rows count requests of 10 keys: keys/s = 10 x req/s.")
if any(k[1] == "libevkv-unix" for k in med):
    print()
    print("unix-domain socket rows (req/s ratios in the same row):")
    print("%-15s %12s %12s %12s %12s %12s" % ("workload", "kv-unix/tcp", "kv-unix/r-unix",
          "resp-u/r-unix", "r-unix/r-tcp", "kv-unix/echo-u"))
    for row in rows:
        ku, kt = m(row, "libevkv-unix", "rps"), m(row, "libevkv", "rps")
        ru, rt = m(row, "redis-unix", "rps"), m(row, "redis", "rps")
        kr = m(row, "libevkv-unix-resp", "rps")
        eu = m(row, "echo-unix-binary", "rps")
        print("%-15s %12.2f %12.2f %12.2f %12.2f %12.2f" % (names[row], ku / kt, ku / ru, kr / ru,
              ru / rt, ku / eu))
def tgt(ok, text):
    print("  [%s] %s" % ("ok" if ok else "MISS", text))
if any(k[1] == "libevkv-shm" for k in med):
    print()
    print("issue 15 targets (libevkv-shm: shared-memory rings, binary):")
    for row in rows:
        s, kt = m(row, "libevkv-shm", "rps"), m(row, "libevkv", "rps")
        eu, ru = m(row, "echo-unix-binary", "rps"), m(row, "redis-unix", "rps")
        if row == "get1":
            tgt(s >= 2 * eu, "GET -c50 -P1 >= 2x echo over unix: %.2fx" % (s / eu))
            tgt(s >= 3 * ru, "GET -c50 -P1 >= 3x Redis over unix: %.2fx" % (s / ru))
        elif row == "get16":
            tgt(s >= 1.5 * kt, "GET -c50 -P16 >= 1.5x libevkv TCP: %.2fx" % (s / kt))
        elif row == "lat":
            p50, p99 = m(row, "libevkv-shm", "p50_us"), m(row, "libevkv-shm", "p99_us")
            tgt(p50 <= 5, "GET -c1 p50 <= 5 us: %.1f" % p50)
            tgt(p99 <= 50, "GET -c1 p99 <= 50 us: %.1f" % p99)
        elif row == "mget":
            tgt(s >= 2 * kt, "MGET of 10 keys/s >= 2x libevkv TCP: %.2fx" % (s / kt))
        else:
            print("  %-15s shm %.2fx libevkv TCP, %.2fx libevkv unix" % (names[row], s / kt,
                  s / m(row, "libevkv-unix", "rps")))
for kvs in ("libevkv", "libevkv-4k"):
    if not any(k[1] == kvs for k in med):
        continue
    print()
    print("issue 8 targets (%s, binary):" % kvs)
    for row in rows:
        kv = m(row, kvs, "rps")
        rd = m(row, "redis", "rps")
        mc = max(m(row, "memcached-t1", "rps"), m(row, "memcached-t2", "rps"))
        mcs = max(("memcached-t1", "memcached-t2"), key=lambda s: m(row, s, "rps"))
        ec = m(row, "echo-binary", "rps")
        p99 = m(row, kvs, "p99_us")
        if row in ("get1", "set1"):
            tgt(kv >= 0.9 * ec, "%s: %.2f of the echo ceiling (>= 0.9)" % (names[row], kv / ec))
            tgt(kv > rd and kv > mc, "%s: ahead of redis (%.2fx) and memcached (%.2fx)" % (names[row], kv / rd, kv / mc))
        if row in ("get16", "set16"):
            tgt(kv >= 2 * rd and kv >= 2 * mc, "%s: %.2fx redis, %.2fx memcached (>= 2x)" % (names[row], kv / rd, kv / mc))
            tgt(kv >= 0.5 * ec, "%s: %.2f of the echo ceiling (>= 0.5)" % (names[row], kv / ec))
        if row == "lat":
            for f in ("p50_us", "p99_us"):
                a, b = m(row, kvs, f), m(row, "redis", f)
                tgt(a <= 1.1 * b, "%s %s: %.1f us vs redis %.1f us (within 10%%)" % (names[row], f[:3], a, b))
        elif row != "mget":
            tgt(p99 <= m(row, "redis", "p99_us") and p99 <= m(row, mcs, "p99_us"),
                "%s p99: %.0f us vs redis %.0f, memcached %.0f" % (names[row], p99, m(row, "redis", "p99_us"), m(row, mcs, "p99_us")))
        if row == "mget":
            tgt(kv >= 2 * rd, "MGET of 10: %.0f keys/s = %.2fx redis's (>= 2x)" % (10 * kv, kv / rd))
EOF
