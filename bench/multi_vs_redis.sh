#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE
# Issue 16 part 7: MULTI/EXEC of 10 SETs (100-byte values), one connection, 16
# transactions pipelined per write, against libevkv (--workers 0, the default, and
# --workers 2) and Debian's redis-server (--save '' --appendonly no), interleaved in
# one run; median of RUNS runs of N transactions each, and the ratio to Redis: tx/s
# (wall clock: noise on a busy machine) and the server's CPU time per transaction
# (utime + stime from /proc/PID/stat over the run: much less sensitive to the load).
# Loopback only; every server is stopped by PID.
#   bench/multi_vs_redis.sh [RUNS] [N]      (defaults 5, 20000)
# Needs a release build in bin/ (or env LIBEVKV=path) and redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
n=${2:-20000}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
k0=$(free_port); k2=$(free_port); rp=$(free_port)
shm=/libevkv-multibench-$$
tmp=$(mktemp -d)
"${LIBEVKV:-./bin/libevkv}" --bind 127.0.0.1 --port "$k0" --shm-name "$shm-0" --memory 256m --log-level warn \
    >"$tmp/k0.log" 2>&1 &
p0=$!
"${LIBEVKV:-./bin/libevkv}" --bind 127.0.0.1 --port "$k2" --shm-name "$shm-2" --memory 256m --workers 2 \
    --log-level warn >"$tmp/k2.log" 2>&1 &
p2=$!
redis-server --bind 127.0.0.1 --port "$rp" --save '' --appendonly no >"$tmp/redis.log" 2>&1 &
pr=$!
trap 'kill $p0 $p2 $pr 2>/dev/null; wait $p0 $p2 $pr 2>/dev/null; rm -f /dev/shm$shm-0 /dev/shm$shm-2; rm -rf "$tmp"' EXIT
sleep 0.5
python3 - "$runs" "$n" "$rp" "$k0" "$k2" "$pr" "$p0" "$p2" <<'PY'
import os, socket, sys, time
runs, n = int(sys.argv[1]), int(sys.argv[2])
ports, pids = [int(p) for p in sys.argv[3:6]], [int(p) for p in sys.argv[6:9]]
pid_of = dict(zip(ports, pids))
tick = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
names = {ports[0]: "redis-server", ports[1]: "libevkv --workers 0", ports[2]: "libevkv --workers 2"}
def cmd(*a):
    return b"*%d\r\n" % len(a) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in a)
tx = cmd(b"MULTI") + b"".join(cmd(b"SET", b"k%d" % i, b"v" * 100) for i in range(10)) + cmd(b"EXEC")
want = b"+OK\r\n" + b"+QUEUED\r\n" * 10 + b"*10\r\n" + b"+OK\r\n" * 10
def run(port, depth=16):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    batch = tx * depth
    need = len(want) * depth
    s.sendall(tx)                       # a check, and a warm-up
    got = b""
    while len(got) < len(want):
        got += s.recv(1 << 16)
    assert got == want, (port, got[:200])
    t0, c0 = time.time(), cpu(pid_of[port])
    for _ in range(n // depth):
        s.sendall(batch)
        got = 0
        while got < need:
            got += len(s.recv(1 << 20))
    done = n // depth * depth
    wall, used = time.time() - t0, cpu(pid_of[port]) - c0
    s.close()
    return done / wall, used / done * 1e6
res = {p: [] for p in ports}
us = {p: [] for p in ports}
for r in range(runs):
    for p in ports:
        a, b = run(p)
        res[p].append(a)
        us[p].append(b)
med = {p: sorted(v)[len(v) // 2] for p, v in res.items()}
mus = {p: sorted(v)[len(v) // 2] for p, v in us.items()}
print("%-22s %12s %8s %12s %8s  runs (tx/s)" % ("server", "median tx/s", "x redis",
                                               "cpu us/tx", "x redis"))
for p in ports:
    print("%-22s %12.0f %8.2f %12.1f %8.2f  %s" % (names[p], med[p], med[p] / med[ports[0]],
          mus[p], mus[p] / mus[ports[0]], " ".join("%.0f" % x for x in res[p])))
PY
