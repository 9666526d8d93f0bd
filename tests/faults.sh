#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE
# tests/faults.sh -- allocation-failure injection, end to end (SQLite's
# malloc tests, applied to a server): every scenario is run once to count
# its allocations, then again with the Nth one failing, for N over all of
# them (or an even sample of at most POINTS). After each run:
#   - no crash and no sanitizer report in the server's output;
#   - the server either refused to start with a message and exit code 1, or
#     still answers a new client;
#   - SIGTERM stops it with exit code 0 (its exit table at 0 bytes);
#   - a fault-free restart on the same segment starts (the store's check at
#     start passes) and answers.
# Last line: "faults: K injected, S survived". Exit 0 when K == S.
#
#   tests/faults.sh BINDIR [POINTS] [SCENARIO...]
#   scenarios: start binary pipeline resp conns full (default: all)
# BINDIR holds libevkv and kvclient of a KV_FAULTS build (./autobuild.sh faults).
# FAULT_MODULES="BUF REQUEST ..." (env): count and fail each of these modules'
# allocations in turn instead of all of them together.
set -uo pipefail
bindir=${1:?usage: $0 BINDIR [POINTS] [SCENARIO...]}
points=${2:-40}
shift $(($# >= 2 ? 2 : 1))
scenarios=("$@")
((${#scenarios[@]})) || scenarios=(start binary pipeline resp conns full)
srv=$bindir/libevkv
cli=$bindir/kvclient
[[ -x $srv && -x $cli ]] || { echo "faults: no libevkv/kvclient in $bindir" >&2; exit 2; }
port=$((20000 + $$ % 20000))
shm=/libevkv-faults-$$
log=$(mktemp /tmp/libevkv-faults-XXXXXX.log)
pid=
injected=0 survived=0
cleanup() {
    [[ -n $pid ]] && { kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
    rm -f "/dev/shm${shm}" "$log"
}
trap cleanup EXIT

opts_for() { # server options of a scenario
    case $1 in
    full) echo "--memory 2m" ;;
    *) echo "--memory 16m" ;;
    esac
}

# start N [MOD]: starts the server with the Nth allocation failing (0: count
# only). Returns 0 when it answers, 1 when it exited (pid empty then).
start() {
    local n=$1 i
    # shellcheck disable=SC2046
    KV_FAULT_NTH=$n KV_FAULT_MOD=${fault_mod:-} "$srv" --port "$port" --shm-name "$shm" --log-level warn \
        $(opts_for "$scenario") >"$log" 2>&1 &
    pid=$!
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid"; start_rc=$?; pid=; return 1; }
        "$cli" -p "$port" -t 1000 ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    return 0 # slow; the checks below decide
}

stop() { # SIGTERM; sets stop_rc
    local i
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid"
        wait "$pid" 2>/dev/null
        stop_rc=137
    else
        wait "$pid"
        stop_rc=$?
    fi
    pid=
}

run_scenario() { # the client side; failures of single commands are expected
    local c="$cli -p $port -t 3000" big
    case $scenario in
    start) ;;
    binary)
        big=$(head -c 100000 /dev/zero | tr '\0' x)
        $c set k v && $c get k && $c set big "$big" && $c get big >/dev/null
        $c mset a 1 b 2 c 3 && $c mget a b c zz && $c del a b zz && $c incr n 5
        $c expire k 100000 && $c exists k && $c stats >/dev/null && $c scan >/dev/null
        ;;
    pipeline)
        $c bench -t get,set,mget -c 2 -P 16 -n 1000 -r 100 >/dev/null ;;
    resp)
        redis-cli -p "$port" SET rk v && redis-cli -p "$port" MGET rk x && redis-cli -p "$port" INFO >/dev/null
        redis-benchmark -p "$port" -n 300 -P 16 -c 2 -t set,get,mset -q >/dev/null ;;
    conns)
        for i in 1 2 3 4 5 6 7 8 9 10; do $c ping >/dev/null; done
        ;;
    full)
        $c bench -t set -c 1 -P 8 -d 20000 -n 200 -r 1000000 --no-populate >/dev/null ;;
    esac
} >/dev/null 2>&1

sanitizer_report() { grep -qE "AddressSanitizer|LeakSanitizer|runtime error:|Segmentation|Aborted" "$log"; }

one_point() { # one_point N: returns 0 when the run survived
    local n=$1 why=
    if ! start "$n"; then
        # refused to start: fine when it said why and exited 1
        if ((start_rc != 1)); then why="start: exit code $start_rc"
        elif ! grep -q "^\[" "$log"; then why="start: exit 1 without a message"
        fi
    else
        run_scenario
        # the check's own connection may be the one the fault hits (it is closed, as
        # any client whose allocation fails): a second new client must be served
        if ! "$cli" -p "$port" -t 3000 ping >/dev/null 2>&1 &&
            ! "$cli" -p "$port" -t 3000 ping >/dev/null 2>&1; then
            why="no answer to a new client"
        fi
        stop
        ((stop_rc == 0)) || why="${why:+$why; }SIGTERM: exit code $stop_rc"
    fi
    sanitizer_report && why="${why:+$why; }sanitizer report"
    grep -q "fault injected" "$log" || return 2 # past the scenario's last allocation
    if [[ -z $why ]]; then
        fault_mod= start 0 || why="restart: exit code $start_rc"
        if [[ -n $pid ]]; then
            "$cli" -p "$port" -t 3000 ping >/dev/null 2>&1 || why="restart: no answer"
            stop
        fi
    fi
    rm -f "/dev/shm${shm}"
    if [[ -n $why ]]; then
        echo "faults: $scenario N=$n FAILED: $why" >&2
        grep -m1 "fault injected" "$log" >&2
        grep -m5 -E "AddressSanitizer|runtime error|still held|\[(io|server)\]" "$log" >&2
        return 1
    fi
    return 0
}

read -ra modules <<<"${FAULT_MODULES:-ALL}"
for scenario in "${scenarios[@]}"; do
  for fault_mod in "${modules[@]}"; do
    [[ $fault_mod == ALL ]] && fault_mod=
    rm -f "/dev/shm${shm}"
    start 0 || { echo "faults: $scenario: the server does not start" >&2; exit 1; }
    run_scenario
    stop
    total=$(sed -n 's/^\[mem\] faults: \([0-9]*\) allocations counted/\1/p' "$log" | tail -1)
    rm -f "/dev/shm${shm}"
    [[ -n $total ]] || { echo "faults: not a KV_FAULTS build ($srv)" >&2; exit 2; }
    # every point when there are at most POINTS; else the first POINTS/2
    # (start-up and the first requests: the most varied paths), then an even
    # sample of the rest
    list=()
    if ((total <= points)); then
        for ((n = 1; n <= total; n++)); do list+=("$n"); done
    else
        head=$((points / 2 < 16 ? points / 2 : 16))
        for ((n = 1; n <= head; n++)); do list+=("$n"); done
        step=$(((total - head) / (points - head > 0 ? points - head : 1)))
        ((step < 1)) && step=1
        for ((n = head + step; n <= total && ${#list[@]} < points; n += step)); do list+=("$n"); done
    fi
    k=0 s=0
    for n in "${list[@]}"; do
        one_point "$n"
        rc=$?
        ((rc == 2)) && continue
        k=$((k + 1))
        ((rc == 0)) && s=$((s + 1))
    done
    echo "faults: $scenario${fault_mod:+ ($fault_mod)}: $total allocations, $k injected, $s survived"
    injected=$((injected + k))
    survived=$((survived + s))
  done
done
echo "faults: $injected injected, $survived survived"
((injected == survived))
