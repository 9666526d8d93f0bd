#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE
# tests/make_v1_fixture.sh -- writes the layout-1 store fixtures of unittest/test_shm_v1.c:
# two segments written by the real server of commit 7db7ef5 (the last release with layout 1)
# and the manifests that say what each one holds.
#
#   unittest/fixtures/v1-clean.seg.gz    a 4 MiB --data-file segment after a SIGTERM stop
#   unittest/fixtures/v1-clean.manifest  every key it holds and every key deleted from it
#   unittest/fixtures/v1-crash.seg.gz    a 4 MiB segment of a server killed (SIGKILL) while a
#                                        writer was storing and deleting keys
#   unittest/fixtures/v1-crash.manifest  the keys written before the writer started (exact),
#                                        then every write the writer got an answer for, and
#                                        the one it was waiting for when the server died
#   unittest/fixtures/v1-split.seg.gz    a 4 MiB segment whose writer (the store of the same
#                                        commit, linked in) died mid-split at the store's own
#                                        crash point: one item is referenced from two buckets
#   unittest/fixtures/v1-split.manifest  every key it holds
#
# Usage: tests/make_v1_fixture.sh [OUTDIR]      (default: unittest/fixtures of this checkout)
#
# It must run in a checkout whose server is that of 7db7ef5 (src/, proto/ and CMakeLists.txt
# equal to 7db7ef5, except the layout-1 reader src/shm/shm_v1.[ch], which the server never
# calls); it checks that, builds with ./autobuild.sh release and starts bin/libevkv on a free
# 127.0.0.1 port with --data-file in a temporary directory. From a later checkout:
#
#   git worktree add /tmp/v1 7db7ef5
#   cp tests/make_v1_fixture.sh /tmp/v1/tests/ && /tmp/v1/tests/make_v1_fixture.sh "$PWD/unittest/fixtures"
#   git worktree remove --force /tmp/v1
#
# The keys are written and read back with the binary protocol (PROTOCOL.md) by the Python
# client below, because only it reports versions (GET answers value + version). The manifest
# is what the live server answered to GET (value, version) just before it was stopped; the
# expiry is the one the server computed at the write, which no command returns: a manifest
# gives it as an interval [lo, hi] (the client's CLOCK_REALTIME before the write - 20 ms
# for the server's coarse clock, and after it, plus the TTL), exact for a TTL of INT64_MAX
# ms, which the server saturates to expire_ms = INT64_MAX, and 0 for none.
#
# Manifest lines (tab-separated; '#' starts a comment):
#   key  KEY  VERSION  EXPIRE_LO  EXPIRE_HI  VLEN  CRC32  SHA1  VALUE
#       VALUE is "=TEXT" (the value itself, printable, no tab) or "pat:SEED" (bytes
#       value_pattern(SEED, VLEN), below); CRC32 is zlib's crc32 of the value in hex.
#   deleted  KEY  LAST_VERSION                 acknowledged DEL: the segment must not hold KEY
#   (crash manifest only, after the "# writer" line; keys w:N; per key the writer's last
#    answered write, then the one request it had sent when the server died)
#   w-set  KEY  VERSION  0  VLEN  SEED         answered SET: value value_pattern(SEED, VLEN)
#   w-del  KEY                                 answered DEL
#   w-inflight-set  KEY  -  0  VLEN  SEED      sent, no answer: either this or the last answered
#   w-inflight-del  KEY                        write of KEY may be in the segment
# value_pattern(seed, n)[i] = (seed * 31 + i * 7 + (i >> 8) * 13) & 0xFF
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/unittest/fixtures}
v1=7db7ef54eaa7deb716a3c8aa9a044b643f7ac3a9
mkdir -p "$out"
out=$(cd "$out" && pwd)

cd "$top"
git cat-file -e "$v1^{commit}" 2>/dev/null || { echo "make_v1_fixture: commit $v1 not in this repository" >&2; exit 1; }
if ! git diff --quiet "$v1" -- src proto CMakeLists.txt ':!src/shm/shm_v1.c' ':!src/shm/shm_v1.h' ||
    [[ -n $(git status --porcelain --untracked-files=all -- src proto CMakeLists.txt |
            grep -v 'src/shm/shm_v1\.[ch]$' || true) ]]; then
    echo "make_v1_fixture: the server sources differ from $v1; run it from a checkout of that commit" >&2
    exit 1
fi
[[ ${V1_SKIP_BUILD:-0} == 1 && -x bin/libevkv ]] || ./autobuild.sh release >/dev/null

tmp=$(mktemp -d /tmp/v1fixture.XXXXXX)
pid=
cleanup() {
    [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

cat >"$tmp/v1client.py" <<'EOF'
# Binary-protocol client for make_v1_fixture.sh: fills a server and writes a manifest.
import hashlib, os, socket, struct, sys, time, zlib

OP_PING, OP_GET, OP_SET, OP_DEL, OP_INCR, OP_MSET, OP_EXPIRE = 0, 1, 2, 3, 5, 7, 8
ST_OK, ST_NOT_FOUND = 0, 1
INT64_MAX = (1 << 63) - 1

def varint(n):
    b = bytearray()
    while True:
        x = n & 0x7F
        n >>= 7
        if n:
            b.append(x | 0x80)
        else:
            b.append(x)
            return bytes(b)

def f_bytes(fn, v):
    return varint(fn << 3 | 2) + varint(len(v)) + v

def f_uint(fn, v):
    return varint(fn << 3) + varint(v) if v else b""

def pb_parse(b):
    out, i = {}, 0
    while i < len(b):
        tag = 0; s = 0
        while True:
            c = b[i]; i += 1; tag |= (c & 0x7F) << s; s += 7
            if c < 0x80: break
        fn, wt = tag >> 3, tag & 7
        if wt == 0:
            v = 0; s = 0
            while True:
                c = b[i]; i += 1; v |= (c & 0x7F) << s; s += 7
                if c < 0x80: break
        elif wt == 2:
            n = 0; s = 0
            while True:
                c = b[i]; i += 1; n |= (c & 0x7F) << s; s += 7
                if c < 0x80: break
            v = b[i:i + n]; i += n
        else:
            raise ValueError("wire type %d" % wt)
        out.setdefault(fn, []).append(v)
    return out

def zz(n):
    return (n >> 1) ^ -(n & 1)

def pattern(seed, n):
    return bytes(((seed * 31 + i * 7 + (i >> 8) * 13) & 0xFF) for i in range(n))

def now_ms():
    return time.clock_gettime_ns(time.CLOCK_REALTIME) // 1000000

class Client:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.rid = 0

    def recvn(self, n):
        b = bytearray()
        while len(b) < n:
            c = self.s.recv(n - len(b))
            if not c:
                raise ConnectionError("server closed")
            b += c
        return bytes(b)

    def call(self, op, body, raw=False):
        self.rid += 1
        hdr = struct.pack("<IBBHQIHH", 0x31564BCB, 1, 0, op, self.rid, len(body), 0, 0)
        self.s.sendall(hdr + body + struct.pack("<I", zlib.crc32(hdr + body)))
        rh = self.recvn(24)
        magic, ver, flags, rop, rid, blen, status, _ = struct.unpack("<IBBHQIHH", rh)
        rb = self.recvn(blen)
        (crc,) = struct.unpack("<I", self.recvn(4))
        if magic != 0x31564BCB or rid != self.rid or crc != zlib.crc32(rh + rb):
            raise ValueError("bad answer frame")
        return status, rb if raw else pb_parse(rb)

    def set(self, k, v, ttl=0):
        st, m = self.call(OP_SET, f_bytes(1, k) + f_bytes(2, v) + f_uint(3, ttl))
        if st != ST_OK:
            raise RuntimeError("SET %r: status %d" % (k, st))
        return m[1][0]

    def get(self, k):
        st, m = self.call(OP_GET, f_bytes(1, k))
        if st == ST_NOT_FOUND:
            return None
        if st != ST_OK:
            raise RuntimeError("GET %r: status %d" % (k, st))
        return m.get(1, [b""])[0], m[2][0]

    def delete(self, k):
        st, m = self.call(OP_DEL, f_bytes(1, k))
        if st != ST_OK:
            raise RuntimeError("DEL %r: status %d" % (k, st))
        return m.get(1, [0])[0]

    def incr(self, k, d):
        st, m = self.call(OP_INCR, f_bytes(1, k) + varint(2 << 3) + varint((d << 1) ^ (d >> 63)))
        if st != ST_OK:
            raise RuntimeError("INCR %r: status %d" % (k, st))
        return m[2][0]

    def mset(self, pairs, ttl=0):
        body = b"".join(f_bytes(1, f_bytes(1, k) + f_bytes(2, v)) for k, v in pairs)
        st, m = self.call(OP_MSET, body + f_uint(2, ttl))
        if st != ST_OK:
            raise RuntimeError("MSET: status %d" % st)
        return m[1]

    def expire(self, k, action, ttl=0):  # action 0 SET, 1 CLEAR, 2 QUERY
        st, m = self.call(OP_EXPIRE, f_bytes(1, k) + f_uint(2, action) + f_uint(3, ttl))
        if st != ST_OK:
            raise RuntimeError("EXPIRE %r: status %d" % (k, st))
        return zz(m.get(1, [0])[0])

    def pttl(self, k):
        return self.expire(k, 2)

def wait_ready(port):
    for _ in range(200):
        try:
            c = Client(port)
            if c.call(OP_PING, b"x", True)[0] == ST_OK:
                return c
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server on port %d does not answer" % port)

class Book:
    """What the manifest will say: per key the expiry interval and how the value was made."""
    def __init__(self):
        self.keys = {}     # key -> (lo, hi, how) ; how = ("=", text) or ("pat", seed)
        self.deleted = {}  # key -> last version

    def wrote(self, k, lo, hi, how):
        self.keys[k] = (lo, hi, how)
        self.deleted.pop(k, None)

def timed(fn, ttl):
    t0 = now_ms()
    r = fn()
    t1 = now_ms()
    if ttl == INT64_MAX:
        return r, INT64_MAX, INT64_MAX
    if ttl:
        return r, t0 - 20 + ttl, t1 + ttl
    return r, 0, 0

def put(c, book, k, v, how, ttl=0):
    ver, lo, hi = timed(lambda: c.set(k, v, ttl), ttl)
    book.wrote(k, lo, hi, how)
    return ver

def put_text(c, book, k, text, ttl=0):
    return put(c, book, k, text, ("=", text), ttl)

def put_pat(c, book, k, seed, n, ttl=0):
    return put(c, book, k, pattern(seed, n), ("pat", seed), ttl)

def fill(c, book):
    ttl2100 = 4102444800000 - now_ms()  # 2100-01-01T00:00:00Z
    for i in range(200):                 # small printable values, 1..150 bytes
        put_text(c, book, b"small:%d" % i, (b"v%d-" % i + b"abcdefghij" * 15)[: 1 + (i * 37) % 150])
    for i in range(3):
        put_text(c, book, b"empty:%d" % i, b"")
    sizes = [200, 400, 700, 1000, 1500, 2000, 3000, 5000, 8000, 12000, 20000, 30000]
    for n in sizes:
        put_pat(c, book, b"class:%d" % n, n, n)
    k = b"class:maxchunk"                # the largest small item: header + key + value = 32768
    put_pat(c, book, k, 7, 32768 - 40 - len(k))
    k = b"large:min"                     # the smallest large item, one byte over
    put_pat(c, book, k, 8, 32768 - 40 - len(k) + 1)
    k = b"large:onepage"                 # exactly one page
    put_pat(c, book, k, 9, 65536 - 40 - len(k))
    put_pat(c, book, b"large:40k", 40, 40 * 1024)
    put_pat(c, book, b"large:200k", 200, 200 * 1024)
    put_pat(c, book, b"large:100k-ttl", 100, 100 * 1024, ttl2100)
    for i in range(20):
        put_text(c, book, b"ttl2100:%d" % i, b"until-2100-%d" % i, ttl2100)
    for i in range(3):
        put_text(c, book, b"ttlmax:%d" % i, b"forever-%d" % i, INT64_MAX)
    for i in range(30):                  # overwritten 5 times, changing size class
        for r in range(5):
            n = (i * 53 + r * 211) % 3000 + 1
            put_pat(c, book, b"over:%d" % i, i * 10 + r, n, ttl2100 if r == 4 and i % 3 == 0 else 0)
    for i in range(10):                  # EXPIRE rewrites the item: a new version
        put_text(c, book, b"expire-set:%d" % i, b"later-%d" % i)
        t0 = now_ms()
        c.expire(b"expire-set:%d" % i, 0, ttl2100)
        t1 = now_ms()
        book.keys[b"expire-set:%d" % i] = (t0 - 20 + ttl2100, t1 + ttl2100, ("=", b"later-%d" % i))
    for i in range(10):                  # PERSIST
        put_text(c, book, b"persist:%d" % i, b"kept-%d" % i, 3600 * 1000)
        c.expire(b"persist:%d" % i, 1)
        book.keys[b"persist:%d" % i] = (0, 0, ("=", b"kept-%d" % i))
    for i in range(10):
        for r in range(i + 1):
            c.incr(b"incr:%d" % i, r * 1000 - 7)
        book.keys[b"incr:%d" % i] = (0, 0, ("=", b"%d" % sum(r * 1000 - 7 for r in range(i + 1))))
    pairs = [(b"mset:%d" % i, b"batch-%d" % i) for i in range(20)]
    c.mset(pairs)
    for k, v in pairs:
        book.wrote(k, 0, 0, ("=", v))
    for i in range(40):                  # deleted keys, some overwritten first
        for r in range(1 + i % 3):
            put_pat(c, book, b"del:%d" % i, 1000 + i * 3 + r, 20 + i * 97 + r)
        book.deleted[b"del:%d" % i] = c.get(b"del:%d" % i)[1]
        assert c.delete(b"del:%d" % i) == 1
        del book.keys[b"del:%d" % i]
    for i in range(0, 200, 10):
        k = b"small:%d" % i
        book.deleted[k] = c.get(k)[1]
        assert c.delete(k) == 1
        del book.keys[k]
    k = b"large:deleted"
    put_pat(c, book, k, 77, 90000)
    book.deleted[k] = c.get(k)[1]
    c.delete(k)
    del book.keys[k]
    for i in range(2200):                # enough keys for the index to split buckets
        put_text(c, book, b"bulk:%05d" % i, b"b%d" % (i * 7919))

def write_manifest(c, book, path, head, tail=()):
    with open(path, "w") as f:
        for arg in head:
            for line in arg.split("\n"):
                f.write("# %s\n" % line)
        for k in sorted(book.keys):
            lo, hi, how = book.keys[k]
            got = c.get(k)
            if got is None:
                raise RuntimeError("key %r missing before the stop" % k)
            v, ver = got
            want = how[1] if how[0] == "=" else pattern(how[1], len(v))
            if v != want:
                raise RuntimeError("key %r: the server holds another value" % k)
            left = c.pttl(k)
            if lo == 0 and left != -1 or lo and not (left > 0 and lo - 5000 <= now_ms() + left <= hi + 5000):
                raise RuntimeError("key %r: ttl %d does not match [%d, %d]" % (k, left, lo, hi))
            val = "=" + v.decode() if how[0] == "=" else "pat:%d" % how[1]
            f.write("key\t%s\t%d\t%d\t%d\t%d\t%08x\t%s\t%s\n" % (k.decode(), ver, lo, hi, len(v),
                    zlib.crc32(v), hashlib.sha1(v).hexdigest(), val))
        for k in sorted(book.deleted):
            if c.get(k) is not None:
                raise RuntimeError("deleted key %r is there" % k)
            f.write("deleted\t%s\t%d\n" % (k.decode(), book.deleted[k]))
        for line in tail:
            f.write(line)

def writer(port, log_path, seconds):
    """Stores and deletes keys w:<i> until the server dies; one request in flight."""
    c = Client(port)
    i = 0
    end = time.time() + seconds
    with open(log_path, "w", buffering=1) as log:
        while True:
            k = b"w:%d" % ((i * 7) % 3000)
            seed = 5000 + i
            n = (i * 13) % 200 + 1
            if i % 97 == 0:
                n = 1000 + (i * 31) % 5000
            if i % 1009 == 0:
                n = 40000
            try:
                if i % 11 == 5:
                    log.write("w-inflight-del\t%s\n" % k.decode())
                    c.delete(k)
                    log.write("w-del\t%s\n" % k.decode())
                else:
                    log.write("w-inflight-set\t%s\t-\t0\t%d\t%d\n" % (k.decode(), n, seed))
                    try:
                        ver = c.set(k, pattern(seed, n))
                        log.write("w-set\t%s\t%d\t0\t%d\t%d\n" % (k.decode(), ver, n, seed))
                    except RuntimeError:  # OUT_OF_MEMORY: the old value stays
                        log.write("w-nomem\t%s\n" % k.decode())
            except (OSError, ConnectionError, ValueError, struct.error):
                return
            i += 1
            if time.time() > end:
                log.write("# writer gave up: the server was not killed\n")
                return

if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "fill":
        c = wait_ready(port)
        book = Book()
        fill(c, book)
        write_manifest(c, book, sys.argv[3], sys.argv[4:])
    elif mode == "base":
        c = wait_ready(port)
        book = Book()
        ttl2100 = 4102444800000 - now_ms()
        for i in range(200):
            put_pat(c, book, b"base:%d" % i, 300 + i, (i * 41) % 900 + 1, ttl2100 if i % 5 == 0 else 0)
        put_pat(c, book, b"base:large", 301, 70000)
        for i in range(10):
            put_pat(c, book, b"base:del:%d" % i, 600 + i, 50)
            book.deleted[b"base:del:%d" % i] = c.get(b"base:del:%d" % i)[1]
            c.delete(b"base:del:%d" % i)
            del book.keys[b"base:del:%d" % i]
        write_manifest(c, book, sys.argv[3], sys.argv[4:])
    elif mode == "writer":
        writer(port, sys.argv[3], float(sys.argv[4]))
    elif mode == "fold":  # the writer's log -> the last answered write per key + the pending one
        last, pending, nset, ndel = {}, None, 0, 0
        for line in open(sys.argv[3]):
            f = line.rstrip("\n").split("\t")
            if f[0].startswith("w-inflight"):
                pending = line
            elif f[0] in ("w-set", "w-del", "w-nomem"):
                pending = None
                if f[0] != "w-nomem":
                    last[f[1]] = line
                nset += f[0] == "w-set"
                ndel += f[0] == "w-del"
        print("# writer: %d answered sets, %d answered deletes, then SIGKILL; per key the last "
              "answered write, then the one in flight" % (nset, ndel))
        for k in sorted(last):
            sys.stdout.write(last[k])
        if pending:
            sys.stdout.write(pending)
EOF

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
start_server() { # start_server SEGFILE LOG
    port=$(free_port)
    bin/libevkv --port "$port" --data-file "$1" --memory 4m --huge-pages off --io-threads 1 \
        --workers 0 >"$2" 2>&1 &
    pid=$!
}
stop_server() { # SIGTERM, wait; fails unless the exit code is 0
    kill -TERM "$pid"
    local rc=0
    wait "$pid" || rc=$?
    pid=
    ((rc == 0)) || { echo "make_v1_fixture: server exited with $rc" >&2; cat "$tmp"/*.log >&2; exit 1; }
}
head_lines() { # head_lines NAME HOW
    echo "layout-1 fixture $1, written by tests/make_v1_fixture.sh at $(date -u +%FT%TZ)"
    echo "sources of commit $v1 ($(git rev-parse --short HEAD) checked out); $2"
}
srv_how="bin/libevkv --data-file FILE --memory 4m"

# ---- clean: SIGTERM stop ---------------------------------------------------------------
start_server "$tmp/v1-clean.seg" "$tmp/clean.log"
python3 "$tmp/v1client.py" fill "$port" "$tmp/v1-clean.manifest" "$(head_lines clean "$srv_how, then SIGTERM")"
stop_server
grep -q "listening" "$tmp/clean.log"

# ---- crash: SIGKILL while a writer runs ------------------------------------------------
start_server "$tmp/v1-crash.seg" "$tmp/crash.log"
python3 "$tmp/v1client.py" base "$port" "$tmp/base.manifest" "$(head_lines crash "$srv_how, SIGKILL while a writer ran")"
python3 "$tmp/v1client.py" writer "$port" "$tmp/writer.log" 60 &
wpid=$!
sleep "${V1_CRASH_AFTER:-2.5}"
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
pid=
wait "$wpid"
grep -q "gave up" "$tmp/writer.log" && { echo "make_v1_fixture: the writer did not run into the kill" >&2; exit 1; }
{ cat "$tmp/base.manifest"; python3 "$tmp/v1client.py" fold 0 "$tmp/writer.log"; } >"$tmp/v1-crash.manifest"

# ---- split: the store of the same commit, stopped by its own crash point mid-split ------
# No kill from outside lands in the few instructions where a split has stored an item in
# the new bucket and not yet cleared it from the old one, so this one uses the store's
# test hook (KV_SHM_CRASH_SPLIT: _exit(77) there) in a single-threaded writer linked
# against this checkout's src/shm and src/mem. Versions are consecutive (one writer on a
# fresh segment), so even the write that died is known exactly: its item was published
# before the split it triggered, and it is in the segment.
cat >"$tmp/v1split.c" <<'CEOF'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "kv_config.h"
#include "kv_shm.h"
static void pattern(unsigned long seed, unsigned char *o, size_t n)
{
    for (size_t i = 0; i < n; i++)
        o[i] = (unsigned char)((seed * 31 + i * 7 + (i >> 8) * 13) & 0xFF);
}
int main(int argc, char **argv)
{
    struct kv_config c;
    kv_config_defaults(&c);
    snprintf(c.data_file, sizeof(c.data_file), "%s", argv[1]);
    c.memory = 4u << 20;
    c.huge_pages = KV_HUGE_OFF;
    FILE *log = fopen(argv[2], "w");
    pid_t pid = fork();
    if (pid == 0) {
        struct kv_shm_open_opts o = {0, atoi(argv[3]), KV_SHM_CRASH_SPLIT};
        struct kv_shm_store *s;
        char err[512];
        static unsigned char v[70000];
        if (kv_shm_store_open_ex(&c, &o, err, sizeof(err), &s))
            _exit(1);
        setvbuf(log, NULL, _IONBF, 0);
        for (unsigned long i = 0; i < 20000; i++) {
            char k[32];
            size_t n = i % 500 == 7 ? 40000 + i : (i * 13) % 300 + 1;
            int kl = snprintf(k, sizeof(k), "split:%lu", i);
            pattern(i, v, n);
            fprintf(log, "key\t%s\t%lu\t0\t0\t%zu\tpat:%lu\n", k, i + 1, n, i);
            uint64_t ver = 0;
            if (kv_shm_set(s, k, (size_t)kl, v, n, NULL, &ver) || ver != i + 1)
                _exit(2);
        }
        _exit(3); /* no split reached the crash point */
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 77 ? 0 : 1;
}
CEOF
shm_srcs=()
for f in src/shm/*.c src/mem/*.c; do [[ $f == src/shm/shm_v1.c ]] || shm_srcs+=("$f"); done
gcc -O1 -D_GNU_SOURCE -Isrc/shm -Isrc/mem "$tmp/v1split.c" "${shm_srcs[@]}" -lrt -lpthread \
    -o "$tmp/v1split"
"$tmp/v1split" "$tmp/v1-split.seg" "$tmp/split.log" "${V1_SPLIT_AT:-40}" ||
    { echo "make_v1_fixture: the split writer did not die at its crash point" >&2; exit 1; }
python3 - "$tmp/split.log" "$tmp/v1-split.manifest" "$(head_lines split "the store linked into a writer that died at its KV_SHM_CRASH_SPLIT point")" <<'PEOF'
import hashlib, sys, zlib
def pattern(seed, n):
    return bytes(((seed * 31 + i * 7 + (i >> 8) * 13) & 0xFF) for i in range(n))
lines = open(sys.argv[1]).read().splitlines()
with open(sys.argv[2], "w") as f:
    for h in sys.argv[3].split("\n"):
        f.write("# %s\n" % h)
    f.write("# %d writes, the last one published before the split it triggered\n" % len(lines))
    for line in lines:
        tag, k, ver, lo, hi, n, how = line.split("\t")
        v = pattern(int(how[4:]), int(n))
        f.write("\t".join([tag, k, ver, lo, hi, n, "%08x" % zlib.crc32(v),
                           hashlib.sha1(v).hexdigest(), how]) + "\n")
PEOF

for n in clean crash split; do
    gzip -9 -n -c "$tmp/v1-$n.seg" >"$out/v1-$n.seg.gz"
    cp "$tmp/v1-$n.manifest" "$out/v1-$n.manifest"
done
ls -l "$out"/v1-*
