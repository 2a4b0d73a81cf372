#!/usr/bin/env python3
"""Outgoing webhooks under load: N generations (default 10,000) with one
registered endpoint, against the same run without one, in interleaved
rounds (off, on, off, on, ...) so a shared machine's drift hits both.

Reports, for each phase: infer/s and p50/p99 latency of POST /api/infer
(the added latency on the request path should be none: a generation's end
is written to the outbox inside its own settle transaction, and delivery
runs off the request path), deliveries/s (from the first to the last
delivery the receiver got), how long after the last infer the last
delivery arrived, and the server's RSS (start, peak, end; it should stay
flat); then the median and range of each side.

Usage: bench/webhooks.py [--generations N] [--clients C] [--rounds R]
                         [--pg-admin URL] [--stalled-endpoint] [BIN]
                         (default build/lensroom)

The server runs on a fresh data folder (SQLite, or with --pg-admin a fresh
PostgreSQL database created through that admin URL for each phase and
dropped after), local storage, mock provider at 0 ms; the receiver is a
threaded Python HTTP server on loopback (allowed through
LENSROOM_FETCH_ALLOW) that answers 204 and counts webhook-ids; the client
is Python threads with keep-alive (the receiver and the client share the
machine's cores with the server)."""
import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--generations", type=int, default=10000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--pg-admin", help="postgres URL of an admin database: each phase runs on a "
                   "fresh database made there")
    p.add_argument("--stalled-endpoint", action="store_true",
                   help="the endpoint accepts connections and never answers: the events are "
                        "queued (the outbox, the queue) but hardly any delivery runs, so the "
                        "request path's share is measured without a receiver using the CPU")
    p.add_argument("bin", nargs="?", default=os.path.join(ROOT, "build", "lensroom"))
    return p.parse_args()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Counter(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.ids.add(self.headers.get("webhook-id"))
            now = time.time()
            self.server.first = self.server.first or now
            self.server.last = now
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ms(pid):
    """The process's user + system CPU time so far, in ms."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else 0


def phase(args, with_endpoint):
    work = tempfile.mkdtemp(prefix="lensroom-bench-hooks-")
    rport, port = free_port(), free_port()
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(4096)  # never accepted: each attempt waits for its timeout
    stalled_port = stalled.getsockname()[1]
    rcv = ThreadingHTTPServer(("127.0.0.1", rport), Counter)
    rcv.ids, rcv.first, rcv.last, rcv.lock = set(), None, None, threading.Lock()
    threading.Thread(target=rcv.serve_forever, daemon=True).start()
    env = dict(os.environ, LENSROOM_DATA_DIR=work, PORT=str(port), LENSROOM_LOG_LEVEL="warn",
               LENSROOM_MOCK_LATENCY_MS="0", USE_MOCK_INFERENCE="true",
               LENSROOM_USER_RATE_PER_MIN="0", LENSROOM_USER_MAX_IN_FLIGHT="0",
               LENSROOM_FETCH_ALLOW=f"127.0.0.1:{rport},127.0.0.1:{stalled_port}")
    for k in ("KIE_API_KEY", "SUPABASE_JWT_SECRET", "S3_ENDPOINT", "DATABASE_URL"):
        env.pop(k, None)
    pg = PgDatabase(args.pg_admin) if args.pg_admin else None
    if pg:
        env["DATABASE_URL"] = pg.url
    cli = lambda *a: subprocess.run([args.bin, *a], env=env, check=True, capture_output=True,
                                    text=True).stdout
    users = [str(uuid.uuid4()) for _ in range(args.clients)]
    for u in users:
        cli("credits", "grant", u, str(10 * args.generations))
    if with_endpoint:
        url_port = stalled_port if args.stalled_endpoint else rport
        cli("webhooks", "add", f"http://127.0.0.1:{url_port}/hook", "--events",
            "generation.succeeded,generation.failed")
    tokens = [cli("token", u, "--ttl", "86400").strip() for u in users]
    srv = subprocess.Popen([args.bin, "serve"], env=env,
                           stderr=open(os.path.join(work, "server.log"), "ab"))
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.05)
    rss = {"start": rss_kb(srv.pid), "peak": 0}
    sampling = True

    def sample():
        while sampling:
            rss["peak"] = max(rss["peak"], rss_kb(srv.pid))
            time.sleep(0.2)
    threading.Thread(target=sample, daemon=True).start()
    per = args.generations // args.clients
    body = json.dumps({"modelId": "seedream_image", "inputs": {"prompt": "a dragon"}})

    def client(i):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        lat = []
        for _ in range(per):
            t = time.perf_counter()
            c.request("POST", "/api/infer", body=body,
                      headers={"Content-Type": "application/json",
                               "Cookie": f"lr_session={tokens[i]}"})
            r = c.getresponse()
            r.read()
            if r.status != 200:
                raise SystemExit(f"infer answered {r.status}")
            lat.append(time.perf_counter() - t)
        return lat
    t0, c0 = time.time(), cpu_ms(srv.pid)
    with ThreadPoolExecutor(args.clients) as pool:
        lats = [x for part in pool.map(client, range(args.clients)) for x in part]
    t1, c1 = time.time(), cpu_ms(srv.pid)
    n = per * args.clients
    if with_endpoint and not args.stalled_endpoint:
        end = time.time() + 600
        while len(rcv.ids) < n and time.time() < end:
            time.sleep(0.1)
    sampling = False
    rss["end"] = rss_kb(srv.pid)
    srv.send_signal(signal.SIGTERM)
    srv.wait(timeout=60)
    rcv.shutdown()
    stalled.close()
    out = {"generations": n, "infer_per_s": n / (t1 - t0), "p50_ms": pct(lats, 0.5) * 1e3,
           "server_cpu_ms_per_gen": (c1 - c0) / n,
           "p99_ms": pct(lats, 0.99) * 1e3, "rss_kb": rss}
    if with_endpoint:
        got = len(rcv.ids)
        out.update(delivered=got,
                   deliveries_per_s=got / max(1e-3, (rcv.last or t1) - (rcv.first or t0)),
                   last_delivery_after_last_infer_s=(rcv.last or t1) - t1)
    shutil.rmtree(work, ignore_errors=True)
    if pg:
        pg.drop()
    return out


class PgDatabase:
    """A database of its own for one phase (psycopg2, Debian's python3)."""

    def __init__(self, admin):
        import psycopg2
        self.admin, self.name = admin, "lr_bench_" + uuid.uuid4().hex[:12]
        c = psycopg2.connect(admin)
        c.autocommit = True
        c.cursor().execute(f"CREATE DATABASE {self.name}")
        c.close()
        self.url = admin.replace("/postgres?", f"/{self.name}?", 1)

    def drop(self):
        import psycopg2
        c = psycopg2.connect(self.admin)
        c.autocommit = True
        c.cursor().execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        c.close()


def line(name, r):
    out = (f"{name:13} {r['generations']} generations: {r['infer_per_s']:.0f} infer/s, "
           f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, server CPU "
           f"{r['server_cpu_ms_per_gen']:.2f} ms/generation, RSS start/peak/end "
           f"{r['rss_kb']['start'] // 1024}/{r['rss_kb']['peak'] // 1024}/"
           f"{r['rss_kb']['end'] // 1024} MB")
    if "delivered" in r:
        out += (f"; {r['delivered']} delivered, {r['deliveries_per_s']:.0f} deliveries/s, "
                f"last one {r['last_delivery_after_last_infer_s']:.1f} s after the last infer")
    return out


def summary(name, rs, key, fmt="{:.0f}"):
    xs = sorted(r[key] for r in rs)
    return (f"{name}: median {fmt.format(xs[len(xs) // 2])} (range "
            f"{fmt.format(xs[0])}-{fmt.format(xs[-1])})")


def main():
    args = parse()
    off, on = [], []
    for i in range(args.rounds):
        for with_endpoint, acc, name in ((False, off, "no endpoint"), (True, on, "one endpoint")):
            r = phase(args, with_endpoint)
            acc.append(r)
            print(f"round {i + 1}: " + line(name, r), flush=True)
    for key, fmt in (("infer_per_s", "{:.0f}"), ("p50_ms", "{:.1f}"), ("p99_ms", "{:.1f}"),
                     ("server_cpu_ms_per_gen", "{:.2f}")):
        print(f"{key}: " + summary("no endpoint", off, key, fmt) + "; " +
              summary("one endpoint", on, key, fmt))
    if not args.stalled_endpoint:
        print("deliveries_per_s: " + summary("one endpoint", on, "deliveries_per_s"))


if __name__ == "__main__":
    main()
