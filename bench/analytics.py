#!/usr/bin/env python3
"""Analytics on generated rows: N generations (with their charge and, for
failed ones, refund rows) spread over 365 days, 5 models, 10,000 users, on
a throwaway PostgreSQL 15 (scripts/pg.sh) and on SQLite. Times the analytics
query set (GET /api/admin/analytics, `lensroom analytics`) over the last
30 days and the whole year, in-process through the CLI, and prints
PostgreSQL's EXPLAIN of the per-model query.

    bench/analytics.py [--rows 1000000] [--bin build/lensroom]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GEN_PG = """
INSERT INTO public.generations (id, user_id, type, model, prompt, status, credits_used, outputs_count,
  succeeded_count, failed_count, duration_ms, created_at, updated_at, finished_at)
SELECT gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad((i %% 10000)::text, 12, '0'))::uuid,
  'photo', (ARRAY['seedream_image','midjourney_image','nano_banana_edit','veo3_video','anthropic_text'])[1 + i %% 5],
  'p', CASE WHEN i %% 10 = 0 THEN 'failed' ELSE 'success' END, CASE WHEN i %% 10 = 0 THEN 0 ELSE 8 END, 1,
  CASE WHEN i %% 10 = 0 THEN 0 ELSE 1 END, CASE WHEN i %% 10 = 0 THEN 1 ELSE 0 END, 100 + (i::bigint * 7919) %% 20000,
  now() - (i %% 365) * interval '1 day' - (i %% 86400) * interval '1 second',
  now(), now()
FROM generate_series(1, %d) AS i;
INSERT INTO public.credit_transactions (user_id, amount, type, generation_id, created_at)
SELECT user_id, -8, 'generation', id, created_at FROM public.generations;
INSERT INTO public.credit_transactions (user_id, amount, type, generation_id, created_at)
SELECT user_id, 8, 'refund', id, created_at FROM public.generations WHERE status = 'failed';
ANALYZE;
"""

GEN_SQLITE = """
WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < %d)
INSERT INTO generations (id, user_id, type, model, prompt, status, credits_used, outputs_count,
  succeeded_count, failed_count, duration_ms, created_at, updated_at, finished_at)
SELECT printf('g%%09d', i), printf('00000000-0000-4000-8000-%%012d', i %% 10000), 'photo',
  CASE i %% 5 WHEN 0 THEN 'seedream_image' WHEN 1 THEN 'midjourney_image' WHEN 2 THEN 'nano_banana_edit'
    WHEN 3 THEN 'veo3_video' ELSE 'anthropic_text' END,
  'p', CASE WHEN i %% 10 = 0 THEN 'failed' ELSE 'success' END, CASE WHEN i %% 10 = 0 THEN 0 ELSE 8 END, 1,
  CASE WHEN i %% 10 = 0 THEN 0 ELSE 1 END, CASE WHEN i %% 10 = 0 THEN 1 ELSE 0 END, 100 + (i * 7919) %% 20000,
  strftime('%%Y-%%m-%%dT%%H:%%M:%%fZ', 'now', printf('-%%d days', i %% 365), printf('-%%d seconds', i %% 86400)),
  'x', 'x'
FROM s;
INSERT INTO credit_transactions (id, user_id, amount, type, generation_id, created_at)
SELECT 't' || id, user_id, -8, 'generation', id, created_at FROM generations;
INSERT INTO credit_transactions (id, user_id, amount, type, generation_id, created_at)
SELECT 'r' || id, user_id, 8, 'refund', id, created_at FROM generations WHERE status = 'failed';
ANALYZE;
"""


def timed(env, binary, *args):
    best = None
    for _ in range(3):
        t = time.monotonic()
        subprocess.run([binary, "analytics", "--json", *args], env=env, check=True,
                       capture_output=True)
        dt = time.monotonic() - t
        best = dt if best is None else min(best, dt)
    return best


def bench(name, env, binary):
    base = timed(env, binary, "--since", "2000-01-01", "--until", "2000-01-02")
    month = timed(env, binary, "--since", "30d") - base
    year = timed(env, binary, "--since", "366d") - base
    print(f"{name}: analytics over 30 days {month * 1000:.0f} ms, over 365 days {year * 1000:.0f} ms "
          f"(best of 3, process start and migration check of {base * 1000:.0f} ms taken off)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1000000)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/lensroom"))
    ap.add_argument("--only", choices=["sqlite", "postgres"])
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="lr-abench-", dir="/tmp")
    os.chmod(tmp, 0o755)
    env = dict(os.environ, LENSROOM_DATA_DIR=tmp, LENSROOM_LOG_LEVEL="error")
    env.pop("DATABASE_URL", None)

    if a.only != "postgres":
        db = os.path.join(tmp, "lensroom.db")
        subprocess.run([a.bin, "migrate"], env=env, check=True, capture_output=True)
        t = time.monotonic()
        subprocess.run(["python3", "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); "
                        "c.executescript(sys.argv[2]); c.commit()", db, GEN_SQLITE % a.rows],
                       check=True)
        print(f"sqlite: {a.rows} generations generated in {time.monotonic() - t:.0f} s", flush=True)
        bench("sqlite", env, a.bin)
        if a.only == "sqlite":
            return 0

    pgdir = os.path.join(tmp, "pg")
    url = subprocess.run([os.path.join(ROOT, "scripts/pg.sh"), "start", pgdir], check=True,
                         capture_output=True, text=True).stdout.strip()
    try:
        env["DATABASE_URL"] = url
        subprocess.run([a.bin, "migrate"], env=env, check=True, capture_output=True)
        psql = ["psql", "-q", "-X", "-v", "ON_ERROR_STOP=1", url]
        t = time.monotonic()
        gen = subprocess.run(psql + ["-c", GEN_PG % a.rows], capture_output=True, text=True)
        if gen.returncode != 0:
            sys.exit("postgres: generating rows failed: " + gen.stderr)
        print(f"postgres: {a.rows} generations generated in {time.monotonic() - t:.0f} s")
        bench("postgres", env, a.bin)
        plan = subprocess.run(psql + ["-c", "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT model, "
                                      "count(*), percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ms) "
                                      "FROM public.generations WHERE created_at >= now() - interval '30 days' "
                                      "AND created_at < now() GROUP BY model"],
                              check=True, capture_output=True, text=True).stdout
        print(plan)
    finally:
        subprocess.run([os.path.join(ROOT, "scripts/pg.sh"), "stop", pgdir], capture_output=True)
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    sys.exit(main())
