#!/usr/bin/env python3
"""Analytics on generated rows: N generations (with their charge and, for
failed ones, refund rows) spread over 365 days, 5 models, 10,000 users, on
a throwaway PostgreSQL 15 (scripts/pg.sh) and on SQLite. Times the analytics
query set (GET /api/admin/analytics, `lensroom analytics`) over the last
30 days and the whole year, in-process through the CLI, and prints
PostgreSQL's EXPLAIN of the analytics queries.

With --base OLD_BIN the rows are generated on OLD_BIN's schema and timed
with it first; then BIN migrates the same database (the rollups' backfill,
timed) and is timed on it: before and after, same data, same session.
Tables are vacuumed and analyzed after loading, as autovacuum leaves them
in a steady state.

    bench/analytics.py [--rows 1000000] [--bin build/lensroom] [--base OLD_BIN]
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
"""

# The rollups from the rows when the schema has them (the bulk load runs
# with triggers off: session_replication_role = replica).
REBUILD_PG = """
DO $$ BEGIN
  IF to_regproc('lensroom.rollups_rebuild') IS NOT NULL THEN PERFORM lensroom.rollups_rebuild(); END IF;
END $$;
"""

EXPLAIN_PG = ["""
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) WITH x AS (
  SELECT day, model, created AS n, succeeded AS ok, failed, canceled FROM lensroom.generation_days
   WHERE day >= (now() - interval '29 days')::date AND day < now()::date),
c AS (SELECT model, sum(n) AS total, sum(ok) AS ok FROM x GROUP BY model)
SELECT c.*, (SELECT percentile_disc(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY g.duration_ms)
  FROM public.generations g WHERE g.model = c.model AND g.created_at >= now() - interval '30 days'
  AND g.created_at < now() AND g.status IN ('success', 'failed') AND g.duration_ms IS NOT NULL)
FROM c""", """
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT user_id, -sum(amount) AS spent,
  count(*) FILTER (WHERE type = 'generation') FROM public.credit_transactions
 WHERE created_at >= now() - interval '30 days' AND created_at < now()
   AND type IN ('generation', 'refund') GROUP BY user_id ORDER BY spent DESC, user_id LIMIT 10"""]

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


def migrate(env, binary):
    t = time.monotonic()
    subprocess.run([binary, "migrate"], env=env, check=True, capture_output=True)
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1000000)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/lensroom"))
    ap.add_argument("--base", help="a build to time first, on its own schema")
    ap.add_argument("--only", choices=["sqlite", "postgres"])
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="lr-abench-", dir="/tmp")
    os.chmod(tmp, 0o755)
    env = dict(os.environ, LENSROOM_DATA_DIR=tmp, LENSROOM_LOG_LEVEL="error")
    env.pop("DATABASE_URL", None)
    first = a.base or a.bin

    if a.only != "postgres":
        db = os.path.join(tmp, "lensroom.db")
        migrate(env, first)
        t = time.monotonic()
        subprocess.run(["python3", "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); "
                        "c.executescript(sys.argv[2]); c.commit(); c.execute('VACUUM'); "
                        "c.execute('ANALYZE')", db, GEN_SQLITE % a.rows], check=True)
        print(f"sqlite: {a.rows} generations generated in {time.monotonic() - t:.0f} s", flush=True)
        if a.base:
            bench("sqlite, base", env, a.base)
            print(f"sqlite: migrated by {a.bin} in {migrate(env, a.bin):.1f} s", flush=True)
            subprocess.run(["python3", "-c", "import sqlite3,sys; sqlite3.connect(sys.argv[1])"
                            ".execute('ANALYZE')", db], check=True)
        bench("sqlite", env, a.bin)
        if a.only == "sqlite":
            return 0

    pgdir = os.path.join(tmp, "pg")
    url = subprocess.run([os.path.join(ROOT, "scripts/pg.sh"), "start", pgdir], check=True,
                         capture_output=True, text=True).stdout.strip()
    try:
        env["DATABASE_URL"] = url
        migrate(env, first)
        psql = ["psql", "-q", "-X", "-v", "ON_ERROR_STOP=1", url]
        t = time.monotonic()
        gen = subprocess.run(psql + ["-c", "SET session_replication_role = replica;" + GEN_PG % a.rows
                                     + "SET session_replication_role = DEFAULT;" + REBUILD_PG],
                             capture_output=True, text=True)
        if gen.returncode != 0:
            sys.exit("postgres: generating rows failed: " + gen.stderr)
        subprocess.run(psql + ["-c", "VACUUM ANALYZE"], check=True)
        print(f"postgres: {a.rows} generations generated in {time.monotonic() - t:.0f} s", flush=True)
        if a.base:
            bench("postgres, base", env, a.base)
            print(f"postgres: migrated by {a.bin} in {migrate(env, a.bin):.1f} s", flush=True)
            subprocess.run(psql + ["-c", "VACUUM ANALYZE"], check=True)
        bench("postgres", env, a.bin)
        plan = subprocess.run(psql + ["-c", "SET TimeZone = UTC"] + [x for q in EXPLAIN_PG for x in ("-c", q)],
                              check=True,
                              capture_output=True, text=True).stdout
        print(plan)
    finally:
        subprocess.run([os.path.join(ROOT, "scripts/pg.sh"), "stop", pgdir], capture_output=True)
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    sys.exit(main())
