#!/usr/bin/env python3
"""Two `lensroom serve` processes on one PostgreSQL under a backlog, the run
issue 11 describes: C clients (default 60, one user each) send
asynchronous infers (`Prefer: respond-async`, a new prompt each time, so
every image is rendered and stored on the workers) for S seconds (default
90), half of them to each process, as fast as the servers accept them; the
workers fall behind and the backlog grows for the whole run. Then the
script waits until every generation is final and reports:

- accepted infers, and the backlog (the longest time from a generation's
  reserve to its settlement, and the last settlement after the last infer);
- final statuses and error codes, above all how many were failed as
  `interrupted` although no process died (the target is 0);
- `lensroom audit` on the database.

With --kill, process A is killed (SIGKILL) half-way and B keeps running:
the line then says how long after the kill the last of A's unfinished
generations was final (resumed or refunded by B; the target is one lease,
LENSROOM_LEASE_S, default 30 s) and what became of them.

Usage: bench/two_procs.py [--seconds S] [--clients C] [--kill] [BIN]
(default build/lensroom). Needs PostgreSQL 15 (scripts/deps.sh bench);
starts a throwaway cluster with scripts/pg.sh and removes it."""
import argparse
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=90)
    p.add_argument("--clients", type=int, default=60)
    p.add_argument("--kill", action="store_true")
    p.add_argument("bin", nargs="?", default=os.path.join(ROOT, "build", "lensroom"))
    return p.parse_args()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Run:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="lensroom-bench-2p-")
        os.chmod(self.work, 0o755)
        self.pgdir = os.path.join(self.work, "pg")
        url = subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), "start", self.pgdir],
                             check=True, capture_output=True, text=True).stdout.strip()
        self.url = url
        self.env = dict(os.environ, DATABASE_URL=url, LENSROOM_DATA_DIR=os.path.join(self.work, "data"),
                        LENSROOM_LOG_LEVEL="warn", LENSROOM_MOCK_LATENCY_MS="0",
                        USE_MOCK_INFERENCE="true", LENSROOM_USER_RATE_PER_MIN="0",
                        LENSROOM_USER_MAX_IN_FLIGHT="0",
                        SUPABASE_JWT_SECRET=secrets.token_hex(32))
        for k in ("KIE_API_KEY", "S3_ENDPOINT", "SUPABASE_URL"):
            self.env.pop(k, None)
        self.lease = int(self.env.get("LENSROOM_LEASE_S", "30"))
        self.cli("migrate")
        self.procs = {}

    def cli(self, *a):
        return subprocess.run([self.args.bin, *a], env=self.env, check=True, capture_output=True,
                              text=True).stdout

    def sql(self, q):
        return subprocess.run(["psql", self.url, "-At", "-c", q], check=True, capture_output=True,
                              text=True).stdout.strip()

    def start(self, name):
        port = free_port()
        env = dict(self.env, PORT=str(port))
        p = subprocess.Popen([self.args.bin, "serve"], env=env,
                             stderr=open(os.path.join(self.work, f"{name}.log"), "ab"))
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        self.procs[name] = (p, port)
        return port

    def infer(self, conn, token, wait):
        body = json.dumps({"modelId": "seedream_image", "inputs": {"prompt": uuid.uuid4().hex}})
        conn.request("POST", "/api/infer", body=body,
                     headers={"Content-Type": "application/json", "Cookie": f"lr_session={token}",
                              "Prefer": "wait=30" if wait else "respond-async"})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")

    def owner_of(self, name, token):
        """The instance id a process claims its generations with."""
        c = http.client.HTTPConnection("127.0.0.1", self.procs[name][1], timeout=60)
        _, body = self.infer(c, token, True)
        gid = body.get("generationId") or body.get("id") or body.get("meta", {}).get("generationId")
        return self.sql(f"SELECT claimed_by FROM public.generations WHERE id = '{gid}'")

    def close(self):
        for p, _ in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=60)
        subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), "stop", self.pgdir])
        shutil.rmtree(self.work, ignore_errors=True)


def load(run, tokens, ports, stop, counts, lock):
    def client(i):
        port = ports[i % 2]
        conn = http.client.HTTPConnection("127.0.0.1", port(), timeout=60)
        while not stop.is_set():
            try:
                st, _ = run.infer(conn, tokens[i], False)
            except OSError:
                st = "error"
                conn = http.client.HTTPConnection("127.0.0.1", ports[1](), timeout=60)
            with lock:
                counts[st] = counts.get(st, 0) + 1
    ts = [threading.Thread(target=client, args=(i,)) for i in range(len(tokens))]
    for t in ts:
        t.start()
    return ts


def main():
    args = parse()
    run = Run(args)
    try:
        users = [str(uuid.uuid4()) for _ in range(args.clients)]
        for u in users:
            run.cli("credits", "grant", u, "100000000")
        tokens = [run.cli("token", u, "--ttl", "86400").strip() for u in users]
        run.start("a")
        run.start("b")
        owner = {n: run.owner_of(n, tokens[0]) for n in ("a", "b")}
        alive = {"a": True}
        ports = [lambda: run.procs["a"][1] if alive["a"] else run.procs["b"][1],
                 lambda: run.procs["b"][1]]
        stop, lock, counts = threading.Event(), threading.Lock(), {}
        t0 = time.time()
        ts = load(run, tokens, ports, stop, counts, lock)
        kill = {}
        if args.kill:
            time.sleep(args.seconds / 2)  # a benchmark's schedule, not a test's ordering
            alive["a"] = False
            run.procs["a"][0].send_signal(signal.SIGKILL)
            run.procs["a"][0].wait()
            kill["t"] = time.time()
            q = ("SELECT count(*) FROM public.generations WHERE status IN ('pending', "
                 f"'processing') AND claimed_by = '{owner['a']}'")
            kill["left"] = int(run.sql(q))

            def watch():
                while (n := int(run.sql(q))) > 0:
                    if n < kill["left"] and "first" not in kill:
                        kill["first"] = time.time()
                    time.sleep(0.5)
                kill.setdefault("first", time.time())
                kill["clear"] = time.time()
            threading.Thread(target=watch, daemon=True).start()
        time.sleep(max(0, t0 + args.seconds - time.time()))
        stop.set()
        for t in ts:
            t.join()
        t_last_infer = time.time()
        while True:
            left = int(run.sql("SELECT count(*) FROM public.generations "
                               "WHERE status IN ('pending', 'processing')"))
            if left == 0:
                break
            time.sleep(0.5)
        t_drained = time.time()
        rows = run.sql("SELECT status, coalesce(error_code, '-'), count(*) FROM public.generations "
                       "GROUP BY 1, 2 ORDER BY 3 DESC")
        backlog = float(run.sql("SELECT coalesce(max(extract(epoch FROM finished_at - created_at)),"
                                " 0) FROM public.generations"))
        audit = subprocess.run([args.bin, "audit"], env=run.env, capture_output=True, text=True)
        accepted = counts.get(202, 0) + counts.get(200, 0)
        print(f"two processes, {args.clients} users, {args.seconds} s of asynchronous image "
              f"infers, lease {run.lease} s: {accepted} accepted ({accepted / args.seconds:.0f}/s), "
              f"answers {dict(sorted(counts.items(), key=str))}")
        print(f"  longest reserve-to-settle {backlog:.1f} s; all final "
              f"{t_drained - t_last_infer:.1f} s after the last infer")
        print("  final: " + ", ".join(
            f"{s}/{c}={n}" for s, c, n in (r.split("|") for r in rows.splitlines())))
        interrupted = sum(int(r.split("|")[2]) for r in rows.splitlines()
                          if r.split("|")[1] == "interrupted")
        print(f"  failed as interrupted: {interrupted}")
        if args.kill:
            print(f"  A killed at {kill['t'] - t0:.0f} s with {kill['left']} unfinished; the last "
                  f"of them final {kill.get('clear', t_drained) - kill['t']:.1f} s after the kill "
                  f"(lease {run.lease} s; the first taken over "
                  f"{kill.get('first', t_drained) - kill['t']:.1f} s after it)")
        print(f"  audit: {'clean' if audit.returncode == 0 else 'FAILED ' + audit.stdout[-500:]}")
        with open(os.path.join(run.pgdir, "postgres.log"), errors="replace") as f:
            print(f"  deadlocks PostgreSQL broke: {f.read().count('deadlock detected')}")
    finally:
        run.close()


if __name__ == "__main__":
    main()
