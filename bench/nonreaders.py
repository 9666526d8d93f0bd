#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE
"""bench/nonreaders.py -- N clients that pipeline big requests and never read.

Each client writes RESP `ECHO <PAYLOAD bytes>` as fast as the server takes
them and never reads an answer (issue 14's hostile client). Meanwhile one
healthy client (`kvclient bench -t get -c 1 -P 1`) measures its latency.
Prints the server's peak and final RSS, how many of the hostile connections
the server closed, the healthy client's figures, and the RSS 3 s after the
hostile clients have gone.

  bench/nonreaders.py --port 7379 --pid PID --clients 8 [--seconds 5] [--payload 65536]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time


def rss_kib(pid, field="VmRSS:"):
    """VmRSS (all), or RssAnon: the heap, without the store's shared pages."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=7379)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--payload", type=int, default=65536)
    ap.add_argument("--kvclient", default=os.path.join(os.path.dirname(__file__), "..", "bin", "kvclient"))
    a = ap.parse_args()

    body = b"x" * a.payload
    one = b"*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n" % (len(body), body)
    chunk = one * max(1, (1 << 20) // len(one))
    rss0 = rss_kib(a.pid)
    socks = []
    for _ in range(a.clients):
        s = socket.create_connection(("127.0.0.1", a.port))
        s.setblocking(False)
        socks.append([s, 0])  # socket, offset into chunk
    healthy = subprocess.Popen(
        [a.kvclient, "-p", str(a.port), "bench", "-t", "get", "-c", "1", "-P", "1",
         "--seconds", str(a.seconds), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak = rss0
    anon_peak = rss_kib(a.pid, "RssAnon:")
    closed = 0
    sent = 0
    end = time.time() + a.seconds
    last_sample = 0.0
    while time.time() < end:
        progress = False
        for e in socks:
            s = e[0]
            if s is None:
                continue
            try:
                n = s.send(chunk[e[1]:] if e[1] else chunk, socket.MSG_DONTWAIT)
                sent += n
                e[1] = (e[1] + n) % len(chunk)
                progress = True
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                s.close()
                e[0] = None
                closed += 1
        now = time.time()
        if now - last_sample > 0.05:
            peak = max(peak, rss_kib(a.pid))
            anon_peak = max(anon_peak, rss_kib(a.pid, "RssAnon:"))
            last_sample = now
        if not progress:
            time.sleep(0.002)
    rss_end = rss_kib(a.pid)
    peak = max(peak, rss_end)
    out, _ = healthy.communicate()
    for e in socks:
        if e[0] is not None:
            e[0].close()
    time.sleep(3)
    rss_after = rss_kib(a.pid)
    anon_after = rss_kib(a.pid, "RssAnon:")
    try:
        h = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        h = {}
    print(f"clients {a.clients} payload {a.payload}: server RSS before {rss0 // 1024} MiB, "
          f"peak {peak / 1024:.1f} MiB, at the end {rss_end / 1024:.1f} MiB, "
          f"3 s after they left {rss_after / 1024:.1f} MiB (heap: peak {anon_peak / 1024:.1f}, "
          f"after {anon_after / 1024:.1f} MiB); "
          f"{closed} closed by the server; {sent / 1e6:.0f} MB sent")
    print(f"healthy GET -c1 -P1 meanwhile: {h.get('rps', 0):.0f} req/s, p50 {h.get('p50_us', 0)} us, "
          f"p99 {h.get('p99_us', 0)} us, max {h.get('max_us', 0)} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
