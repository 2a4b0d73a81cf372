"""Test harness: runs the real lensroom binary on a free port with its own
data folder, speaks HTTP to it, and reads its database back.

The same tests run on both backends: with LENSROOM_TEST_BACKEND=postgres
(and LENSROOM_TEST_PG_URL naming the test cluster's admin database) each
server gets a fresh PostgreSQL database; otherwise its SQLite file.

Every server is stopped with SIGTERM at the end of a test and must exit 0
with no sanitizer report in its log (the tests run the ASan/UBSan build).
"""
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import unittest
import uuid

BIN = os.environ.get("LENSROOM_BIN", os.path.join(os.path.dirname(__file__), "../../build-asan/lensroom"))
BACKEND = os.environ.get("LENSROOM_TEST_BACKEND", "sqlite")
PG_ADMIN_URL = os.environ.get("LENSROOM_TEST_PG_URL")


def pg_connect(url):
    import psycopg2
    return psycopg2.connect(url)


class PgDatabase:
    """A throwaway database on the test cluster."""

    def __init__(self):
        self.name = "lr_" + uuid.uuid4().hex[:16]
        admin = pg_connect(PG_ADMIN_URL)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {self.name}")
        admin.close()
        self.url = PG_ADMIN_URL.replace("/postgres?", f"/{self.name}?", 1)

    def drop(self):
        admin = pg_connect(PG_ADMIN_URL)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        admin.close()


class PgConn:
    """sqlite3-like access (execute with ? placeholders) over psycopg2."""

    def __init__(self, url):
        self.conn = pg_connect(url)

    def execute(self, sql, params=()):
        cur = self.conn.cursor()
        cur.execute(sql.replace("?", "%s"), params)
        return cur

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.conn.commit()
        self.conn.close()
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def wait_for(cond, timeout=30, interval=0.1):
    """Polls cond() until it is truthy or timeout seconds pass; returns its
    last value. Tests order events with this, never with a fixed sleep."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    return cond()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_user():
    return str(uuid.uuid4())


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        return json.loads(self.body)

    def header(self, name):
        return self.headers.get(name.lower())


class Server:
    def __init__(self, env=None, data_dir=None, database=None):
        """database: share another Server's PostgreSQL database (its .pg)."""
        self.tmp = None
        if data_dir is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="lensroom-it-")
            data_dir = self.tmp.name
        self.data_dir = data_dir
        self.port = free_port()
        self.env = dict(os.environ)
        self.env.update({
            "PORT": str(self.port),
            "LENSROOM_DATA_DIR": data_dir,
            "LENSROOM_MOCK_LATENCY_MS": "0",
            "ASAN_OPTIONS": "detect_leaks=1",
            "UBSAN_OPTIONS": "print_stacktrace=1",
        })
        for k in ("USE_MOCK_INFERENCE", "KIE_API_KEY", "KIE_API_BASE", "ANTHROPIC_API_KEY",
                  "ANTHROPIC_API_BASE", "LENSROOM_FETCH_ALLOW", "SUPABASE_JWT_SECRET", "TEST_MODE",
                  "ALLOW_ANON_INFER", "TEST_USER_ID", "SUPABASE_SERVICE_ROLE_KEY", "DATABASE_URL",
                  "SUPABASE_SECRET_KEY"):
            self.env.pop(k, None)
        self.pg = None
        self.owns_pg = False
        if BACKEND == "postgres":
            self.pg = database or PgDatabase()
            self.owns_pg = database is None
            self.env["DATABASE_URL"] = self.pg.url
        self.env.update(env or {})
        self.proc = None
        self.log_path = os.path.join(data_dir, "server.log")
        self.logs = []

    # -- process -----------------------------------------------------------
    def start(self, expect_ok=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BIN, "serve"], env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        if not expect_ok:
            return self
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("server exited at start:\n" + self.read_log())
            try:
                if self.get("/healthz").status == 200:
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("server did not come up:\n" + self.read_log())

    def start_refused(self):
        """Starts a server that must refuse to run; returns (exit code, log)."""
        self.start(expect_ok=False)
        code = self.proc.wait(timeout=30)
        self.proc = None
        self.log.close()
        self.log = None
        return code, self.read_log()

    def proc_status(self, *fields):
        """Fields of /proc/<pid>/status as ints (kB for Vm*), e.g. VmRSS."""
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in fields:
                    out[k] = int(v.split()[0])
        return out

    def read_log(self):
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("server did not stop on SIGTERM:\n" + self.read_log()[-4000:])
            log = self.read_log()
            for mark in SANITIZER_MARKS:
                if mark in log:
                    raise AssertionError("sanitizer report in server log:\n" + log[-8000:])
            if code != 0:
                raise AssertionError(f"server exited {code}:\n" + log[-4000:])
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        self.log.close()
        self.log = None

    def cleanup(self):
        try:
            self.stop()
        finally:
            if self.tmp:
                self.tmp.cleanup()
            if self.owns_pg:
                self.pg.drop()
                self.owns_pg = False

    # -- CLI ---------------------------------------------------------------
    def cli(self, *args, check=True):
        r = subprocess.run([BIN, *args], env=self.env, capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"lensroom {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def token(self, user, ttl=3600):
        return self.cli("token", user, "--ttl", str(ttl)).stdout.strip()

    def grant(self, user, amount):
        self.cli("credits", "grant", user, str(amount))

    # -- HTTP --------------------------------------------------------------
    def request(self, method, path, body=None, headers=None, raw=None, timeout=120):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        hdrs = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload)
        finally:
            conn.close()

    def get(self, path, headers=None):
        return self.request("GET", path, headers=headers)

    def infer(self, token, model="seedream_image", prompt="a majestic dragon", params=None,
              extra=None, headers=None):
        body = {"modelId": model, "inputs": {"prompt": prompt}, "params": params or {}}
        body.update(extra or {})
        h = {"Cookie": f"lr_session={token}"}
        h.update(headers or {})
        return self.request("POST", "/api/infer", body=body, headers=h)

    def generation_status(self, gid, token):
        r = self.get(f"/api/generations/{gid}", {"Authorization": f"Bearer {token}"})
        return r.json["generation"]["status"] if r.status == 200 else None

    def wait_settled(self, gid, token, timeout=60):
        """Waits until generation gid has a final status and returns it."""
        final = ("success", "failed", "canceled")
        st = wait_for(lambda: self.generation_status(gid, token) in final, timeout, 0.2)
        status = self.generation_status(gid, token)
        assert st, f"generation {gid} still {status} after {timeout} s"
        return status

    def in_flight(self):
        return self.get("/healthz").json["inFlight"]

    def fetch_url(self, url):
        """GETs a public URL the server returned (it names localhost:PORT)."""
        prefix = f"http://localhost:{self.port}"
        assert url.startswith(prefix), url
        return self.get(url[len(prefix):])

    # -- database ----------------------------------------------------------
    def db(self):
        if self.pg:
            return PgConn(self.pg.url)
        return sqlite3.connect(os.path.join(self.data_dir, "lensroom.db"), timeout=30)

    def balance(self, user):
        with self.db() as c:
            row = c.execute("SELECT amount FROM credits WHERE user_id = ?", (user,)).fetchone()
            return row[0] if row else 0

    def ledger(self, user):
        with self.db() as c:
            rows = c.execute("SELECT amount, type, generation_id FROM credit_transactions "
                             "WHERE user_id = ? ORDER BY created_at", (user,)).fetchall()
        return [(a, t, str(g) if g is not None else None) for a, t, g in rows]

    def assert_ledger_consistent(self, tc, user):
        rows = self.ledger(user)
        tc.assertEqual(sum(r[0] for r in rows), self.balance(user), rows)
        tc.assertGreaterEqual(self.balance(user), 0)
        with self.db() as c:
            gens = c.execute("SELECT id, status, credits_used, outputs_count FROM generations "
                             "WHERE user_id = ?", (user,)).fetchall()
        for gid, status, used, outputs in gens:
            gid = str(gid)
            charges = [r for r in rows if r[2] == gid and r[1] == "generation"]
            refunds = [r for r in rows if r[2] == gid and r[1] == "refund"]
            tc.assertEqual(len(charges), 1, gid)
            tc.assertLessEqual(len(refunds), 1, gid)
            net = -charges[0][0] - sum(r[0] for r in refunds)
            tc.assertEqual(net, used, gid)
            if status == "failed":
                tc.assertEqual(len(refunds), 1, gid)
                tc.assertEqual(used, 0, gid)
        audit = self.cli("audit", check=False)
        tc.assertEqual(audit.returncode, 0, audit.stdout + audit.stderr)


class ServerTest(unittest.TestCase):
    """A test case with one server per test (env from server_env)."""
    server_env = {}

    def setUp(self):
        self.server = Server(self.server_env).start()
        self.addCleanup(self.server.cleanup)
