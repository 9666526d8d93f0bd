#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE
# Redis's own test suite against libevkv (issue 16).
#
# Fetches Debian's `redis` source package (Redis 7.0.15: its tests/ and
# runtest), starts a fresh libevkv on a free loopback port with a private
# segment, runs the in-scope units in external mode against one database,
# stops the server by PID, removes the segment, and prints per unit the
# tests passed and failed. Tests that need a feature out of issue 16's
# scope are skipped: tests/redis-suite-skip.txt lists each with its reason.
#
#   tests/redis-suite.sh [UNIT...]     default: every in-scope unit
#   env LIBEVKV=path/to/libevkv        default: bin/libevkv (build first)
#   env REDIS_SRC=dir                  an unpacked redis-7.0.15 tree to use
#   env KEEP=1                         keep the per-unit logs (printed path)
#   env TARGET=redis                   run against redis-server instead (the
#                                      reference figures, same skip list)
#   env MIN_PASS=N                     CI's ratchet: succeed when at least N
#                                      tests passed and the server never died,
#                                      even if some failed (the known failures
#                                      are listed in README)
#
# Needs root for the deb-src line and `apt-get update` the first time, and
# tclsh (package tcl). Exit code: 0 when no in-scope test failed, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
units=("$@")
((${#units[@]})) || units=(type/incr type/string expire keyspace protocol scan auth quit
    info-command querybuf introspection other multi info limits)
server=${LIBEVKV:-$top/bin/libevkv}
[[ ${TARGET:-libevkv} == redis ]] && server=$(command -v redis-server)
[[ -x $server ]] || { echo "redis-suite: $server missing: ./autobuild.sh first" >&2; exit 2; }
command -v tclsh >/dev/null || { echo "redis-suite: tclsh missing: apt-get install tcl" >&2; exit 2; }

work=${REDIS_SUITE_DIR:-/tmp/libevkv-redis-suite}
mkdir -p "$work"
src=${REDIS_SRC:-}
if [[ -z $src ]]; then
    src=$(ls -d "$work"/redis-7.0.15 2>/dev/null || true)
fi
if [[ -z $src ]]; then
    # ---- fetch the source package ------------------------------------------
    if ! grep -rqs '^Types:.*deb-src\|^deb-src ' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        [[ $(id -u) == 0 ]] || { echo "redis-suite: needs root to add a deb-src line" >&2; exit 2; }
        sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
            >/etc/apt/sources.list.d/libevkv-deb-src.sources
        apt-get update -qq
    fi
    (cd "$work" && apt-get source --download-only redis >/dev/null 2>&1) ||
        { apt-get update -qq && (cd "$work" && apt-get source --download-only redis >/dev/null); }
    tarball=$(ls "$work"/redis_*.orig.tar.gz | head -1)
    tar -xzf "$tarball" -C "$work"
    src=$(ls -d "$work"/redis-7.* | head -1)
fi
[[ -x $src/runtest ]] || { echo "redis-suite: no runtest in $src" >&2; exit 2; }

# ---- the skip list: "reason | test name" lines -> a runtest --skipfile --------
skipfile=$work/skipfile.$$
{ grep -v '^\s*#' "$top/tests/redis-suite-skip.txt" | grep '|' || true; } |
    sed 's/^[^|]*| *//; s/ *$//' >"$skipfile"

# ---- a fresh server ------------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
shm=/libevkv-suite-$$
logdir=$work/logs.$$
mkdir -p "$logdir"
if [[ ${TARGET:-libevkv} == redis ]]; then
    "$server" --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$logdir" \
        >"$logdir/server.log" 2>&1 &
else
    "$server" --bind 127.0.0.1 --port "$port" --shm-name "$shm" --memory 128m --log-level warn \
        >"$logdir/server.log" 2>&1 &
fi
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "/dev/shm$shm" "$skipfile"
    [[ ${KEEP:-0} == 1 ]] || rm -rf "$logdir"
}
trap cleanup EXIT
for _ in $(seq 50); do
    redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
done

# ---- the units -----------------------------------------------------------------
total_ok=0 total_err=0
printf '%-16s %6s %6s  %s\n' unit passed failed note
for u in "${units[@]}"; do
    log=$logdir/$(echo "$u" | tr / _).log
    (cd "$src" && TERM=dumb timeout 600 ./runtest --host 127.0.0.1 --port "$port" --singledb \
        --single "unit/$u" --tags -needs:debug --tags -needs:repl --tags -needs:config-maxmemory \
        --skipfile "$skipfile" --clients 1 --timeout 60 >"$log" 2>&1) || true
    ok=$(grep -c '^\[ok\]' "$log" || true)
    err=$(grep -c '^\[err\]' "$log" || true)
    note=
    grep -q '^\[exception\]' "$log" && note="stopped: $(grep -m1 -A1 '^\[exception\]' "$log" | tail -1 | cut -c1-70)"
    grep -q 'timed out\|Timed out\|^\[TIMEOUT\]' "$log" && [[ -z $note ]] &&
        note="timed out: $(grep -m1 'IN PROGRESS' "$log" | sed 's/.*(IN PROGRESS) //' | cut -c1-60)"
    if ! kill -0 "$pid" 2>/dev/null; then
        note="SERVER DIED; $note"
    fi
    printf '%-16s %6d %6d  %s\n' "$u" "$ok" "$err" "$note"
    total_ok=$((total_ok + ok)) total_err=$((total_err + err))
    if [[ -n $note ]]; then total_err=$((total_err + 1)); fi
    kill -0 "$pid" 2>/dev/null || break
done
printf '%-16s %6d %6d\n' total "$total_ok" "$total_err"
[[ ${KEEP:-0} == 1 ]] && echo "logs: $logdir"
if [[ -n ${MIN_PASS:-} ]]; then
    kill -0 "$pid" 2>/dev/null || { echo "redis-suite: the server died" >&2; exit 1; }
    ((total_ok >= MIN_PASS)) || { echo "redis-suite: $total_ok passed, below $MIN_PASS" >&2; exit 1; }
    echo "redis-suite: $total_ok passed (at least $MIN_PASS required)"
    exit 0
fi
((total_err == 0))
