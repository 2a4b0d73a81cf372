#!/usr/bin/env python3
"""Backups of a large embedded store: time and peak RSS of `lensroom backup
create` at two sizes (RSS must not grow with the store), and infer/s with
and without a backup running.

Usage: bench/backup.py [--generations N] [BIN]   (default 10000, build/lensroom)
       --generations 100000 makes a ~470 MB store, 220000 about 1 GB (each mock
       image is ~4.6 KB; it was ~12 KB before the mock's renders changed).

The release server runs on a fresh data folder (SQLite, local storage, mock
provider at 0 ms); wrk (bench/infer.lua, 100 users) fills it with image
generations until the target count of `success` rows is reached, read back
from SQLite. Each backup's peak RSS is the child's ru_maxrss (os.wait4).
The throughput runs are 10 s of wrk -t2 -c32 each: one alone, one while
backups are taken back to back."""
import argparse
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--generations", type=int, default=10000)
    p.add_argument("--port", type=int, default=3191)
    p.add_argument("bin", nargs="?", default=os.path.join(ROOT, "build", "lensroom"))
    return p.parse_args()


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="lensroom-bench-backup-")
        self.data = os.path.join(self.work, "data")
        self.env = dict(os.environ, LENSROOM_DATA_DIR=self.data, PORT=str(args.port),
                        LENSROOM_LOG_LEVEL="warn", LENSROOM_MOCK_LATENCY_MS="0",
                        USE_MOCK_INFERENCE="true", LENSROOM_USER_RATE_PER_MIN="0",
                        LENSROOM_USER_MAX_IN_FLIGHT="0")
        for k in ("DATABASE_URL", "KIE_API_KEY", "SUPABASE_JWT_SECRET", "S3_ENDPOINT"):
            self.env.pop(k, None)
        self.server = None

    def cli(self, *a):
        return subprocess.run([self.args.bin, *a], env=self.env, check=True, capture_output=True,
                              text=True).stdout

    def start(self):
        self.server = subprocess.Popen([self.args.bin, "serve"], env=self.env,
                                       stderr=open(os.path.join(self.work, "server.log"), "ab"))
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.args.port}/healthz", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("server did not start")

    def stop(self):
        if self.server:
            self.server.send_signal(signal.SIGTERM)
            self.server.wait(60)
            self.server = None

    def users(self, n, credits):
        path = os.path.join(self.work, "tokens")
        with open(path, "w") as f:
            for _ in range(n):
                u = str(uuid.uuid4())
                self.cli("credits", "grant", u, str(credits))
                f.write(self.cli("token", u, "--ttl", "86400").strip() + "\n")
        return path

    def succeeded(self):
        c = sqlite3.connect(os.path.join(self.data, "lensroom.db"), timeout=30)
        try:
            return c.execute("SELECT count(*) FROM generations WHERE status='success'").fetchone()[0]
        finally:
            c.close()

    def wrk(self, seconds, tokens):
        out = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s", "-s",
                              os.path.join(ROOT, "bench", "infer.lua"),
                              f"http://127.0.0.1:{self.args.port}"],
                             env=dict(self.env, TOKENS_FILE=tokens), check=True,
                             capture_output=True, text=True).stdout
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def fill_to(self, target, tokens):
        while self.succeeded() < target:
            self.wrk(3, tokens)

    def backup(self, label):
        """One `backup create`: seconds, peak RSS (KB) and the archive."""
        out = os.path.join(self.work, "backups-" + label)
        t0 = time.time()
        p = subprocess.Popen([self.args.bin, "backup", "create", "--to", out], env=self.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        took = time.time() - t0
        stdout = p.stdout.read()
        p.stdout.close()
        p.stderr.close()
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise SystemExit(f"backup failed: {stdout}")
        name = next(n for n in os.listdir(out) if n.endswith(".tar.zst"))
        size = os.path.getsize(os.path.join(out, name))
        objects = re.search(r"(\d+) objects copied \((\d+) bytes\)", stdout)
        return {"label": label, "seconds": took, "peak_rss_kb": usage.ru_maxrss,
                "archive_bytes": size, "objects": int(objects.group(1)),
                "object_bytes": int(objects.group(2)), "path": os.path.join(out, name)}

    def verify(self, path):
        t0 = time.time()
        subprocess.run([self.args.bin, "backup", "verify", path], env=self.env, check=True,
                       capture_output=True)
        return time.time() - t0


def report(b):
    print(f"backup generations={b['objects']} store_bytes={b['object_bytes']} "
          f"archive_bytes={b['archive_bytes']} seconds={b['seconds']:.2f} "
          f"throughput_mb_s={b['object_bytes'] / 1e6 / max(b['seconds'], 1e-3):.1f} "
          f"peak_rss_kb={b['peak_rss_kb']} ({b['label']})")


def main():
    args = parse()
    bench = Bench(args)
    try:
        tokens = bench.users(100, args.generations)  # 8 credits per image: plenty
        bench.start()
        bench.fill_to(args.generations // 10, tokens)
        report(bench.backup("a tenth of the store"))
        bench.fill_to(args.generations, tokens)
        full = bench.backup("the whole store")
        report(full)
        print(f"verify seconds={bench.verify(full['path']):.2f}")

        alone = bench.wrk(10, tokens)
        stop = threading.Event()
        made = [0]

        def backups():
            while not stop.is_set():
                bench.backup(f"during-{made[0]}")
                made[0] += 1
                shutil.rmtree(os.path.join(bench.work, f"backups-during-{made[0] - 1}"))
        t = threading.Thread(target=backups)
        t.start()
        during = bench.wrk(10, tokens)
        stop.set()
        t.join()
        print(f"infer_per_s alone={alone:.0f} during_backup={during:.0f} "
              f"ratio={during / alone:.2f} (backups made meanwhile: {made[0]})")
    finally:
        bench.stop()
        shutil.rmtree(bench.work, True)


if __name__ == "__main__":
    main()
