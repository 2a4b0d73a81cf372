"""PostgreSQL-only behaviour: the Supabase-compatible migration (idempotent,
the original's statements verbatim, in-place upgrade, RLS, storage bucket),
several server processes sharing one database, and a database outage.
Skipped on the SQLite run."""
import calendar
import json
import os
import subprocess
import tempfile
import threading
import time
import unittest
import uuid
from concurrent.futures import ThreadPoolExecutor

from harness import BACKEND, BIN, PgDatabase, Server, new_user, pg_connect, wait_for

MIGRATION_DIR = os.path.join(os.path.dirname(__file__), "../../src/db/migrations/postgres")
MIGRATION = os.path.join(MIGRATION_DIR, "0001_credits_generations.sql")
MIGRATIONS = sorted(os.path.join(MIGRATION_DIR, f) for f in os.listdir(MIGRATION_DIR))
PG_SH = os.path.join(os.path.dirname(__file__), "../../scripts/pg.sh")


def psql(url, sql=None, file=None):
    args = ["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-X"]
    args += ["-f", file] if file else ["-c", sql]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def schema_dump(url):
    r = subprocess.run(["pg_dump", "--schema-only", "--no-owner", url], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # pg_dump 15.14+ brackets the dump with a random \restrict key
    return "\n".join(l for l in r.stdout.splitlines() if not l.startswith(("\\restrict", "\\unrestrict")))


@unittest.skipUnless(BACKEND == "postgres", "PostgreSQL backend only")
class Migration(unittest.TestCase):
    def setUp(self):
        self.db = PgDatabase()
        self.addCleanup(self.db.drop)
        self.env = dict(os.environ, DATABASE_URL=self.db.url,
                        LENSROOM_DATA_DIR=tempfile.mkdtemp(prefix="lensroom-mig-"))

    def migrate(self):
        r = subprocess.run([BIN, "migrate"], env=self.env, capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def test_applying_twice_changes_nothing(self):
        self.migrate()
        first = schema_dump(self.db.url)
        self.migrate()
        self.assertEqual(schema_dump(self.db.url), first)
        # and pasting the files, in order, into an SQL editor (twice) over it also works
        for _ in range(2):
            for f in MIGRATIONS:
                r = psql(self.db.url, file=f)
                self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(schema_dump(self.db.url), first)

    def test_original_statements_work_verbatim_and_keep_the_ledger(self):
        self.migrate()
        u = str(uuid.uuid4())
        r = psql(self.db.url, f"INSERT INTO public.credits (user_id, amount) VALUES ('{u}', 100) "
                              f"ON CONFLICT (user_id) DO UPDATE SET amount = 100;")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = psql(self.db.url, f"SELECT * FROM get_user_balance('{u}');")
        self.assertIn("100", r.stdout)
        r = psql(self.db.url, f"SELECT * FROM adjust_credits('{u}'::uuid, 10, 'test', "
                              f"'Manual credit test');")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('"success" : true', r.stdout)
        self.assertIn('"new_balance" : 110', r.stdout)
        r = psql(self.db.url, f"SELECT adjust_credits('{u}'::uuid, -500, 'test');")
        self.assertIn('"current_balance" : 110', r.stdout)
        self.assertIn('"required" : 500', r.stdout)
        # the direct INSERT ... ON CONFLICT was recorded as an adjustment
        r = subprocess.run([BIN, "audit"], env=self.env, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = subprocess.run([BIN, "credits", "history", u], env=self.env, capture_output=True,
                           text=True)
        self.assertIn("adjustment", r.stdout)
        self.assertIn("Manual credit test", r.stdout)

    def test_upgrades_the_original_schema_in_place(self):
        original = """
        CREATE TABLE public.credits (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
          user_id uuid UNIQUE NOT NULL, amount integer NOT NULL DEFAULT 0 CHECK (amount >= 0),
          created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now());
        CREATE TABLE public.credit_transactions (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
          user_id uuid NOT NULL, amount integer NOT NULL, type text NOT NULL, description text,
          metadata jsonb DEFAULT '{}', payment_id uuid, generation_id uuid,
          created_at timestamptz DEFAULT now());
        CREATE TABLE public.generations (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
          user_id uuid NOT NULL, type text NOT NULL CHECK (type IN ('photo','video','edit')),
          model text NOT NULL, prompt text,
          status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','processing','success','failed')),
          result_urls jsonb DEFAULT '[]', credits_used integer DEFAULT 0, preview_path text,
          poster_path text, preview_status text DEFAULT 'none', metadata jsonb DEFAULT '{}',
          created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now());
        ALTER TABLE public.generations ENABLE ROW LEVEL SECURITY;
        CREATE POLICY "Users can insert own generations" ON public.generations FOR INSERT
          WITH CHECK (true);
        CREATE POLICY "Users can update own generations" ON public.generations FOR UPDATE
          USING (true);
        CREATE FUNCTION public.get_user_balance(p_user_id uuid) RETURNS integer
          LANGUAGE sql SECURITY DEFINER AS $$ SELECT 0 $$;
        INSERT INTO public.credits (user_id, amount)
          VALUES ('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 40);
        INSERT INTO public.credit_transactions (user_id, amount, type, description)
          VALUES ('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 40, 'purchase', 'old purchase');
        INSERT INTO public.generations (user_id, type, model, prompt, status, credits_used)
          VALUES ('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'photo', 'seedream_image', 'old', 'success', 8);
        """
        r = psql(self.db.url, original)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.migrate()
        with pg_connect(self.db.url) as c, c.cursor() as cur:
            cur.execute("SELECT amount FROM credits")
            self.assertEqual(cur.fetchall(), [(40,)])
            cur.execute("SELECT prompt, status, outputs_count FROM generations")
            self.assertEqual(cur.fetchall(), [("old", "success", 1)])
            cur.execute("SELECT policyname FROM pg_policies WHERE tablename = 'generations'")
            self.assertEqual([p for p, in cur.fetchall()], ["Users can view own generations"])
            cur.execute("SELECT get_user_balance('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa')")
            self.assertEqual(cur.fetchone(), (40,))
            cur.execute("SELECT proconfig FROM pg_proc WHERE proname = 'get_user_balance'")
            self.assertEqual(cur.fetchone(), (["search_path=\"\""],))

    def test_rls_users_read_only_their_rows_and_write_nothing(self):
        self.migrate()
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        with pg_connect(self.db.url) as c, c.cursor() as cur:
            for u in (a, b):
                cur.execute("SELECT adjust_credits(%s::uuid, 10, 'bonus', 'seed')", (u,))
                cur.execute("INSERT INTO generations (user_id, type, model, prompt) "
                            "VALUES (%s, 'photo', 'seedream_image', 'p')", (u,))
        conn = pg_connect(self.db.url)
        conn.autocommit = True
        self.addCleanup(conn.close)
        cur = conn.cursor()
        cur.execute("SET ROLE authenticated")
        cur.execute("SELECT set_config('request.jwt.claims', %s, false)",
                    (json.dumps({"sub": a, "role": "authenticated"}),))
        for table in ("credits", "credit_transactions", "generations"):
            cur.execute(f"SELECT DISTINCT user_id::text FROM {table}")
            self.assertEqual(cur.fetchall(), [(a,)], table)
        denied = [
            "UPDATE credits SET amount = 1000",
            f"INSERT INTO credits (user_id, amount) VALUES ('{a}', 1000)",
            f"INSERT INTO credit_transactions (user_id, amount, type) VALUES ('{a}', 5, 'bonus')",
            f"INSERT INTO generations (user_id, type, model) VALUES ('{a}', 'photo', 'x')",
            "UPDATE generations SET status = 'success', credits_used = 0",
            f"SELECT adjust_credits('{a}'::uuid, 1000, 'bonus')",
            f"SELECT get_user_balance('{b}')",
            "SELECT * FROM lensroom.reserve(gen_random_uuid(), gen_random_uuid(), 'photo', 'm', "
            "'p', 'x', '{}', 1, 1, now(), NULL, NULL, NULL, NULL, NULL)",
        ]
        for sql in denied:
            with self.assertRaises(Exception, msg=sql):
                cur.execute(sql)
        cur.execute("RESET ROLE")
        cur.execute("SET ROLE anon")
        for table in ("credits", "credit_transactions", "generations"):
            with self.assertRaises(Exception, msg=table):
                cur.execute(f"SELECT count(*) FROM {table}")
        cur.execute("RESET ROLE")
        cur.execute("SELECT amount FROM credits ORDER BY user_id")
        self.assertEqual([x for x, in cur.fetchall()], [10, 10])

    def test_creates_the_bucket_when_a_storage_schema_exists(self):
        stub = """
        CREATE SCHEMA storage;
        CREATE TABLE storage.buckets (id text PRIMARY KEY, name text NOT NULL, owner uuid,
          public boolean DEFAULT false, file_size_limit bigint, allowed_mime_types text[],
          created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now());
        CREATE TABLE storage.objects (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
          bucket_id text, name text, owner uuid);
        ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;
        CREATE FUNCTION storage.foldername(name text) RETURNS text[] LANGUAGE sql
          AS $$ SELECT string_to_array(name, '/') $$;
        """
        self.assertEqual(psql(self.db.url, stub).returncode, 0)
        self.migrate()
        self.migrate()
        with pg_connect(self.db.url) as c, c.cursor() as cur:
            cur.execute("SELECT public, file_size_limit, allowed_mime_types FROM storage.buckets "
                        "WHERE id = 'generations'")
            public, limit, mimes = cur.fetchone()
            self.assertTrue(public)
            self.assertEqual(limit, 52428800)
            self.assertIn("video/mp4", mimes)
            cur.execute("SELECT count(*) FROM pg_policies WHERE schemaname = 'storage' "
                        "AND policyname LIKE 'LensRoom%'")
            self.assertEqual(cur.fetchone(), (3,))


FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


@unittest.skipUnless(BACKEND == "postgres", "PostgreSQL backend only")
class Clock(unittest.TestCase):
    def test_heartbeat_is_dated_by_the_database_clock(self):
        """A server whose clock runs 20 s behind the database's (libfaketime)
        still writes a heartbeat that lives half a lease from the
        database's now. Dated by its own clock it would be over before it
        was written, and every other process would take its live work."""
        s = Server({"LD_PRELOAD": FAKETIME_LIB, "FAKETIME": "-20s",
                    "FAKETIME_DONT_FAKE_MONOTONIC": "1", "LENSROOM_LEASE_S": "30",
                    "ASAN_OPTIONS": "detect_leaks=1:verify_asan_link_order=0"})
        self.addCleanup(s.cleanup)
        s.start()
        date = s.get("/healthz").header("date")  # the server's own clock
        behind = time.time() - calendar.timegm(time.strptime(date, "%a, %d %b %Y %H:%M:%S GMT"))
        self.assertGreater(behind, 15, f"the server's clock is not behind: Date {date}")

        def lives():
            with s.db() as c:
                return c.execute("SELECT extract(epoch FROM alive_until - now()) "
                                 "FROM lensroom.instances").fetchall()
        self.assertTrue(wait_for(lambda: len(lives()) == 1))
        left = float(lives()[0][0])
        self.assertGreater(left, 0, "the heartbeat was over when written")
        self.assertLessEqual(left, 15 + 1)


@unittest.skipUnless(BACKEND == "postgres", "PostgreSQL backend only")
class ScaleOut(unittest.TestCase):
    def test_four_processes_share_one_database_without_overspending(self):
        secret = "scale-out-shared-secret-at-least-32-characters"
        env = {"SUPABASE_JWT_SECRET": secret, "LENSROOM_MOCK_LATENCY_MS": "20",
               "LENSROOM_USER_MAX_IN_FLIGHT": "0", "LENSROOM_USER_RATE_PER_MIN": "0"}
        first = Server(env)
        self.addCleanup(first.cleanup)
        servers = [first.start()]
        for _ in range(3):
            s = Server(env, database=first.pg)
            self.addCleanup(s.cleanup)
            servers.append(s.start())
        user = new_user()
        first.grant(user, 1200)  # 150 x 8
        token = first.token(user)
        barrier = threading.Barrier(400)

        def one(i):
            barrier.wait()
            return servers[i % 4].infer(token, prompt="race").status

        with ThreadPoolExecutor(max_workers=400) as ex:
            statuses = list(ex.map(one, range(400)))
        self.assertEqual(statuses.count(200), 150, statuses)
        self.assertEqual(statuses.count(402), 250, statuses)
        self.assertEqual(first.balance(user), 0)
        first.assert_ledger_consistent(self, user)  # includes lensroom audit
        with first.db() as c:
            ok, = c.execute("SELECT count(*) FROM generations WHERE user_id = ? "
                            "AND status = 'success'", (user,)).fetchone()
            owners, = c.execute("SELECT count(DISTINCT claimed_by) FROM generations "
                                "WHERE user_id = ?", (user,)).fetchone()
        self.assertEqual(ok, 150)
        # which processes won the race is up to the scheduler (on a busy
        # machine one may get none of the 150); that each one charges on
        # the shared ledger is shown by one infer through each
        self.assertGreaterEqual(owners, 2)
        other = new_user()
        first.grant(other, 32)
        other_token = first.token(other)
        for s in servers:
            self.assertEqual(s.infer(other_token, prompt="each").status, 200)
        self.assertEqual(first.balance(other), 0)
        first.assert_ledger_consistent(self, other)
        with first.db() as c:
            owners, = c.execute("SELECT count(DISTINCT claimed_by) FROM generations "
                                "WHERE user_id = ?", (other,)).fetchone()
        self.assertEqual(owners, 4)


@unittest.skipUnless(BACKEND == "postgres", "PostgreSQL backend only")
class Outage(unittest.TestCase):
    def test_database_down_fails_fast_with_503_then_recovers(self):
        pgdir = tempfile.mkdtemp(prefix="lensroom-pg-outage-")
        os.chmod(pgdir, 0o755)
        pgdir = os.path.join(pgdir, "pg")
        url = subprocess.run([PG_SH, "start", pgdir], capture_output=True, text=True,
                             check=True).stdout.strip()
        self.addCleanup(subprocess.run, [PG_SH, "stop", pgdir], capture_output=True)
        admin = new_user()
        s = Server({"DATABASE_URL": url, "LENSROOM_ADMINS": admin})
        self.addCleanup(s.cleanup)
        s.pg.drop()  # this server uses its own cluster: read the ledger through the API
        s.pg, s.owns_pg = None, False
        s.start()
        user = new_user()
        s.grant(user, 16)
        tok = s.token(user)
        self.assertEqual(s.infer(tok).status, 200)
        as_admin = {"Authorization": f"Bearer {s.token(admin)}"}
        self.assertEqual(s.get("/api/admin/analytics", as_admin).status, 200)  # its connection

        subprocess.run(["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_ctl",
                        "-D", os.path.join(pgdir, "data"), "-m", "fast", "-w", "stop"],
                       capture_output=True, check=True)
        t0 = time.time()
        r = s.infer(tok)
        self.assertLess(time.time() - t0, 15)
        self.assertEqual(r.status, 503, r.body)
        self.assertEqual(r.json["code"], "database_unavailable")
        self.assertIsNotNone(r.header("retry-after"))
        self.assertEqual(s.get("/healthz").status, 503)

        subprocess.run(["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_ctl",
                        "-D", os.path.join(pgdir, "data"), "-l", os.path.join(pgdir, "pg2.log"),
                        "-o", f"-k {pgdir} -c listen_addresses=''", "-w", "start"],
                       capture_output=True, check=True)
        deadline = time.time() + 20
        r = s.infer(tok)
        while r.status != 200 and time.time() < deadline:
            time.sleep(0.3)
            r = s.infer(tok)
        self.assertEqual(r.status, 200, r.body)
        r = s.get("/api/credits/balance", {"Authorization": f"Bearer {tok}"})
        self.assertEqual(r.status, 200, r.body)
        bal = r.json["balance"]
        self.assertEqual(bal, 0)  # two generations, nothing charged for the failed attempt
        # the admin reads' own connection met the restarted server too: retried, not 503
        r = s.get("/api/admin/analytics", as_admin)
        self.assertEqual(r.status, 200, r.body)

    def pg_ctl(self, pgdir, *args):
        subprocess.run(["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_ctl",
                        "-D", os.path.join(pgdir, "data"), *args], capture_output=True, check=True)

    def test_an_outage_longer_than_the_heartbeat_takes_no_live_work(self):
        """Both processes' heartbeats end while the database is down; when it
        is back, whichever beats first must not take the other's live
        generations for dead (it waits two rounds, by which time the other
        has beaten): every generation succeeds where it began."""
        pgdir = os.path.join(tempfile.mkdtemp(prefix="lensroom-pg-outage-"), "pg")
        os.chmod(os.path.dirname(pgdir), 0o755)
        url = subprocess.run([PG_SH, "start", pgdir], capture_output=True, text=True,
                             check=True).stdout.strip()
        self.addCleanup(subprocess.run, [PG_SH, "stop", pgdir], capture_output=True)
        lease = 6  # heartbeats of 3 s, beaten every 0.6 s: a busy machine's stalls are shorter
        env = {"DATABASE_URL": url, "LENSROOM_LEASE_S": str(lease),
               "LENSROOM_MOCK_LATENCY_MS": "30000",
               "SUPABASE_JWT_SECRET": "outage-shared-secret-at-least-32-characters"}
        servers = []
        for _ in range(2):
            s = Server(env)
            self.addCleanup(s.cleanup)
            s.pg.drop()  # these servers share their own cluster
            s.pg, s.owns_pg = None, False
            servers.append(s.start())
        user = new_user()
        servers[0].grant(user, 64)
        tok = servers[0].token(user)
        gids = {}
        for i, s in enumerate(servers):
            for k in range(3):
                r = s.infer(tok, prompt=f"outage {i} {k}", headers={"Prefer": "respond-async"})
                self.assertEqual(r.status, 202, r.body)
                gids[r.json["generationId"]] = i
        with pg_connect(url) as c, c.cursor() as cur:
            cur.execute("SELECT id::text, claimed_by::text FROM public.generations")
            owner = dict(cur.fetchall())
        c.close()
        self.assertEqual(len({owner[g] for g in gids}), 2)

        self.pg_ctl(pgdir, "-m", "fast", "-w", "stop")
        # down until both heartbeats have ended (the last beat came before
        # the stop and lives half a lease) and both processes saw it fail
        stopped = time.time()
        self.assertTrue(wait_for(lambda: time.time() > stopped + lease / 2 + 0.5, 30))
        for s in servers:
            self.assertTrue(wait_for(lambda: "could not renew this process's heartbeat"
                                     in s.read_log(), 30), s.read_log())
        self.pg_ctl(pgdir, "-l", os.path.join(pgdir, "pg2.log"), "-o",
                    f"-k {pgdir} -c listen_addresses=''", "-w", "start")

        for g, i in gids.items():
            self.assertEqual(servers[i].wait_settled(g, tok, timeout=120), "success", g)
        with pg_connect(url) as c, c.cursor() as cur:
            cur.execute("SELECT id::text, claimed_by::text, status FROM public.generations")
            after = {g: (o, st) for g, o, st in cur.fetchall()}
            cur.execute("SELECT coalesce(sum(amount), 0), (SELECT amount FROM public.credits "
                        "WHERE user_id = %s) FROM public.credit_transactions WHERE user_id = %s",
                        (user, user))
            ledger, balance = cur.fetchone()
        c.close()
        for g in gids:
            self.assertEqual(after[g], (owner[g], "success"), g)
        self.assertEqual(ledger, balance)
        self.assertEqual(balance, 64 - 8 * len(gids))
        for s in servers:
            log = s.read_log()
            self.assertNotIn("unfinished generation failed and refunded", log)
            self.assertNotIn("resuming generation left by a stopped process", log)
            self.assertIn("heartbeat renewed again", log)


if __name__ == "__main__":
    unittest.main()
