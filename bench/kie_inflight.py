#!/usr/bin/env python3
"""Generations held at the (fake) Kie.ai: N async infers whose tasks stay
unfinished, polled by the release binary with the default backoff (3 s
growing to 15 s). Prints RSS and threads while all N are in flight, then
releases the tasks and reports how long the N downloads and stores took.
Usage: bench/kie_inflight.py [N] [BIN]."""
import os
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
os.environ["LENSROOM_BIN"] = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "build", "lensroom")

from fake_providers import FakeProviders  # noqa: E402
from harness import Server, new_user  # noqa: E402


def count(s, sql):
    with s.db() as c:
        return c.execute(sql).fetchone()[0]


def main():
    fake = FakeProviders(mp4=b"")
    fake.released.clear()
    env = fake.env()
    env.update({"LENSROOM_LOG_LEVEL": "warn", "ASAN_OPTIONS": "", "KIE_POLL_MS": "3000",
                "KIE_POLL_MAX_MS": "15000", "LENSROOM_USER_MAX_IN_FLIGHT": "0",
                "LENSROOM_USER_RATE_PER_MIN": "0"})
    s = Server(env).start()
    try:
        user = new_user()
        s.grant(user, 8 * N)
        tok = s.token(user)
        idle = s.proc_status("VmRSS", "Threads")

        def submit(lo, hi):
            for i in range(lo, hi):
                r = s.infer(tok, prompt=f"held {i} [hold]", headers={"Prefer": "respond-async"})
                assert r.status == 202, r.body

        threads = [threading.Thread(target=submit, args=(k * N // 8, (k + 1) * N // 8))
                   for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sql = ("SELECT count(*) FROM generations WHERE status = 'processing' "
               "AND provider_task_ids <> '[]'")
        deadline = time.time() + 120
        while time.time() < deadline and count(s, sql) < N:
            time.sleep(0.5)
        time.sleep(10)  # a few polling rounds
        held = s.proc_status("VmRSS", "Threads")
        held_n = count(s, sql)
        t0 = time.time()
        fake.release()
        done_sql = "SELECT count(*) FROM generations WHERE status = 'success'"
        while time.time() < t0 + 300 and count(s, done_sql) < N:
            time.sleep(0.5)
        took = time.time() - t0
        print(f"kie_inflight n={N} held_with_task_ids={held_n} "
              f"idle_rss_kb={idle['VmRSS']} rss_kb={held['VmRSS']} threads={held['Threads']} "
              f"succeeded={count(s, done_sql)} drain_s={took:.1f}")
    finally:
        s.cleanup()
        fake.close()


if __name__ == "__main__":
    main()
