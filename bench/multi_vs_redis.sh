#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE
# Issue 16 part 7: MULTI/EXEC of 10 SETs (100-byte values), one connection, 16
# transactions pipelined per write, against libevkv (--workers 0, the default, and
# --workers 2) and Debian's redis-server (--save '' --appendonly no), interleaved in
# one run; median of RUNS runs of N transactions each, and the ratio to Redis.
# Loopback only; every server is stopped by PID.
#   bench/multi_vs_redis.sh [RUNS] [N]      (defaults 5, 20000)
# Needs a release build in bin/ and redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
n=${2:-20000}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
k0=$(free_port); k2=$(free_port); rp=$(free_port)
shm=/libevkv-multibench-$$
tmp=$(mktemp -d)
./bin/libevkv --bind 127.0.0.1 --port "$k0" --shm-name "$shm-0" --memory 256m --log-level warn \
    >"$tmp/k0.log" 2>&1 &
p0=$!
./bin/libevkv --bind 127.0.0.1 --port "$k2" --shm-name "$shm-2" --memory 256m --workers 2 \
    --log-level warn >"$tmp/k2.log" 2>&1 &
p2=$!
redis-server --bind 127.0.0.1 --port "$rp" --save '' --appendonly no >"$tmp/redis.log" 2>&1 &
pr=$!
trap 'kill $p0 $p2 $pr 2>/dev/null; wait $p0 $p2 $pr 2>/dev/null; rm -f /dev/shm$shm-0 /dev/shm$shm-2; rm -rf "$tmp"' EXIT
sleep 0.5
python3 - "$runs" "$n" "$rp" "$k0" "$k2" <<'PY'
import socket, sys, time
runs, n, ports = int(sys.argv[1]), int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
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
    t0 = time.time()
    for _ in range(n // depth):
        s.sendall(batch)
        got = 0
        while got < need:
            got += len(s.recv(1 << 20))
    s.close()
    return n // depth * depth / (time.time() - t0)
res = {p: [] for p in ports}
for r in range(runs):
    for p in ports:
        res[p].append(run(p))
med = {p: sorted(v)[len(v) // 2] for p, v in res.items()}
print("%-22s %12s %8s  runs" % ("server", "median tx/s", "x redis"))
for p in ports:
    print("%-22s %12.0f %8.2f  %s" % (names[p], med[p], med[p] / med[ports[0]],
                                      " ".join("%.0f" % x for x in res[p])))
PY
