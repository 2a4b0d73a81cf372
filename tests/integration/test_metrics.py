"""GET /metrics and GET /readyz through the real binary: who may scrape,
`promtool check metrics` on a scrape after a load, counters that match the
database, the separate metrics port, and readiness that follows the
database, the schema and a drain after SIGTERM."""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import unittest

from harness import BACKEND, Server, ServerTest, free_port, new_user, wait_for

TOKEN = "metrics-token-0123456789"
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
PGBIN = "/usr/lib/postgresql/15/bin"
PG_SH = os.path.join(os.path.dirname(__file__), "../../scripts/pg.sh")


def parse(text):
    """{(name, frozenset of (label, value)): value} of a text-format scrape."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"unparsable sample line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def series(samples, name, **labels):
    want = set(labels.items())
    return {k[1]: v for k, v in samples.items() if k[0] == name and want <= set(k[1])}


class MetricsAccess(unittest.TestCase):
    def serve(self, env):
        s = Server(env).start()
        self.addCleanup(s.cleanup)
        return s

    def test_metrics_are_off_without_a_token_or_a_port(self):
        r = self.serve({}).get("/metrics")
        self.assertEqual(r.status, 403)
        self.assertEqual(r.json["code"], "metrics_disabled")

    def test_metrics_need_the_bearer_token(self):
        s = self.serve({"LENSROOM_METRICS_TOKEN": TOKEN})
        self.assertEqual(s.get("/metrics").status, 401)
        bad = s.get("/metrics", {"Authorization": "Bearer " + TOKEN[:-1] + "x"})
        self.assertEqual((bad.status, bad.json["code"]), (401, "unauthorized"))
        ok = s.get("/metrics", {"Authorization": "Bearer " + TOKEN})
        self.assertEqual(ok.status, 200)
        self.assertTrue(ok.header("content-type").startswith("text/plain; version=0.0.4"))
        self.assertNotIn(TOKEN, s.read_log())

    def test_a_short_token_is_a_config_error(self):
        code, log = Server({"LENSROOM_METRICS_TOKEN": "short"}).start_refused()
        self.assertNotEqual(code, 0)
        self.assertIn("config: LENSROOM_METRICS_TOKEN", log)

    def test_metrics_port_serves_metrics_and_probes_and_the_api_port_does_not(self):
        port = free_port()
        s = self.serve({"LENSROOM_METRICS_PORT": str(port)})
        r = s.get("/metrics")
        self.assertEqual(r.status, 404)
        m = Server.__new__(Server)
        m.port = port
        scrape = m.get("/metrics")
        self.assertEqual(scrape.status, 200)
        self.assertIn("lensroom_http_requests_total", scrape.body.decode())
        self.assertEqual(m.get("/readyz").status, 200)
        self.assertEqual(m.get("/api/models").status, 404)


class MetricsAfterLoad(ServerTest):
    server_env = {"LENSROOM_METRICS_TOKEN": TOKEN, "LENSROOM_MOCK_FAIL_RATE": "0.4"}

    def scrape(self):
        r = self.server.get("/metrics", {"Authorization": "Bearer " + TOKEN})
        self.assertEqual(r.status, 200)
        return r.body.decode()

    def test_promtool_accepts_a_scrape_and_counters_match_the_database(self):
        self.assertTrue(shutil.which("promtool"), "promtool missing: scripts/deps.sh test installs it")
        user = new_user()
        self.server.grant(user, 1000)
        token = self.server.token(user)
        n = 24
        for i in range(n):
            r = self.server.infer(token, prompt=f"load {i}")
            self.assertIn(r.status, (200, 502), r.body)
        self.server.get("/api/generations/not-a-uuid", {"Authorization": f"Bearer {token}"})

        # A request is counted when libmicrohttpd reports it complete, and a
        # generation leaves the in-flight gauge once its waiter is answered:
        # both just after the client has its answer. Scrape until they show.
        def settled_scrape():
            t = self.scrape()
            p = parse(t)
            got = series(p, "lensroom_http_requests_total", route="/api/generations/{id}")
            idle = p.get(("lensroom_generations_in_flight", frozenset())) == 0
            return t if sum(got.values()) == 1 and idle else None
        text = wait_for(settled_scrape, 30)
        self.assertTrue(text, "the last request never showed in /metrics")
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                               text=True, timeout=60)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

        samples = parse(text)
        with self.server.db() as c:
            by_status = dict(c.execute("SELECT status, count(*) FROM generations GROUP BY status")
                             .fetchall())
            by_model = {(m, s): k for m, s, k in c.execute(
                "SELECT model, status, count(*) FROM generations GROUP BY model, status").fetchall()}
            ledger = {t: (k, a) for t, k, a in c.execute(
                "SELECT type, count(*), sum(amount) FROM credit_transactions GROUP BY type").fetchall()}
        self.assertEqual(sum(by_status.values()), n)
        self.assertGreater(by_status.get("failed", 0), 0, "the mock's failure rate should fail some")
        finished = {dict(k)["status"]: v for k, v in
                    series(samples, "lensroom_generations_finished_total").items()}
        self.assertEqual(finished, {s: float(k) for s, k in by_status.items()})
        gauges = {(dict(k)["model"], dict(k)["status"]): v
                  for k, v in series(samples, "lensroom_generations").items()}
        self.assertEqual(gauges, {k: float(v) for k, v in by_model.items()})
        for t, (rows, amount) in ledger.items():
            self.assertEqual(samples[("lensroom_ledger_rows", frozenset({("type", t)}))], rows)
            self.assertEqual(samples[("lensroom_ledger_credits", frozenset({("type", t)}))], amount)
        infer = series(samples, "lensroom_http_requests_total", route="/api/infer")
        self.assertEqual(sum(infer.values()), n)
        by_code = {dict(k)["status"]: v for k, v in infer.items()}
        self.assertEqual(by_code.get("200", 0), by_status.get("success", 0))
        # ids never become labels: the route pattern does
        get_one = series(samples, "lensroom_http_requests_total", route="/api/generations/{id}")
        self.assertEqual(sum(get_one.values()), 1)
        self.assertNotIn("not-a-uuid", text)
        self.assertEqual(samples[("lensroom_http_request_duration_seconds_count",
                                  frozenset({("route", "/api/infer")}))], n)
        self.assertGreater(samples[("lensroom_storage_written_bytes_total", frozenset())], 0)
        reserves = series(samples, "lensroom_db_calls_total", op="reserve")
        self.assertEqual(sum(reserves.values()), n)
        self.assertEqual(samples[("lensroom_generations_in_flight", frozenset())], 0)


class WorkerQueue(ServerTest):
    # One worker thread, so a burst of outputs to store queues up.
    server_env = {"LENSROOM_METRICS_TOKEN": TOKEN, "LENSROOM_WORKERS": "1"}

    def gauges(self):
        r = self.server.get("/metrics", {"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual(r.status, 200)
        p = parse(r.body.decode())
        return (p[("lensroom_worker_queue_depth", frozenset())],
                p[("lensroom_workers_busy", frozenset())])

    def test_worker_queue_depth_rises_under_a_burst_and_returns_to_zero(self):
        self.assertEqual(self.gauges(), (0, 0))
        user = new_user()
        self.server.grant(user, 100000)
        token = self.server.token(user)
        seen = []

        def queued():
            # keep the burst going until a scrape catches jobs waiting
            for i in range(8):
                r = self.server.infer(token, model="veo3_video", prompt=f"burst {len(seen)} {i}",
                                      extra={"outputsCount": 4},
                                      headers={"Prefer": "respond-async"})
                self.assertEqual(r.status, 202, r.body)
            g = self.gauges()
            seen.append(g)
            return g[0] > 0
        self.assertTrue(wait_for(queued, 120, 0), seen)
        self.assertTrue(wait_for(lambda: self.gauges() == (0, 0) and
                                 self.server.in_flight() == 0, 120), self.gauges())
        r = self.server.get("/metrics", {"Authorization": f"Bearer {TOKEN}"})
        check = subprocess.run(["promtool", "check", "metrics"], input=r.body.decode(),
                               capture_output=True, text=True, timeout=60)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)


class Readiness(ServerTest):
    def test_ready_when_database_schema_and_storage_answer(self):
        r = self.server.get("/readyz")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json["status"], "ready")
        self.assertTrue(all(c["ok"] for c in r.json["checks"].values()))

    def test_not_ready_while_a_migration_is_missing(self):
        table = "lensroom.schema_migrations" if BACKEND == "postgres" else "schema_migrations"
        with self.server.db() as c:
            latest = c.execute(f"SELECT max(version) FROM {table}").fetchone()[0]
            c.execute(f"DELETE FROM {table} WHERE version = ?", (latest,))
        r = self.server.get("/readyz")
        self.assertEqual(r.status, 503, r.body)
        self.assertEqual(r.json["code"], "not_ready")
        self.assertFalse(r.json["checks"]["migrations"]["ok"])
        self.assertIn("lensroom migrate", r.json["checks"]["migrations"]["error"])
        self.assertEqual(self.server.get("/healthz").status, 200)  # liveness is not readiness
        self.server.cli("migrate")
        self.assertEqual(self.server.get("/readyz").status, 200)


class ReadinessDuringDrain(unittest.TestCase):
    def test_readyz_is_503_once_sigterm_arrives_and_the_server_drains(self):
        port = free_port()
        s = Server({"LENSROOM_METRICS_PORT": str(port), "LENSROOM_MOCK_LATENCY_MS": "3000"}).start()
        self.addCleanup(s.cleanup)
        probe = Server.__new__(Server)
        probe.port = port
        self.assertEqual(probe.get("/readyz").status, 200)
        user = new_user()
        s.grant(user, 100)
        r = s.infer(s.token(user), headers={"Prefer": "respond-async"})
        self.assertEqual(r.status, 202, r.body)
        wait_for(lambda: s.in_flight() == 1, 30)
        s.proc.send_signal(signal.SIGTERM)
        r = wait_for(lambda: (lambda x: x if x.status == 503 else None)(probe.get("/readyz")), 30)
        self.assertTrue(r, "readyz never answered 503 during the drain")
        self.assertEqual(r.json["status"], "not_ready")
        self.assertFalse(r.json["checks"]["draining"]["ok"])
        self.assertTrue(r.json["checks"]["database"]["ok"])
        main = s.get("/readyz")
        self.assertEqual(main.status, 503)
        self.assertEqual(s.proc.wait(timeout=60), 0)


@unittest.skipUnless(BACKEND == "postgres", "needs PostgreSQL (the it_pg_ run)")
class ReadinessFollowsPostgres(unittest.TestCase):
    """A cluster of its own, stopped and started under a running server."""

    def pg_ctl(self, *args):
        subprocess.run(["runuser", "-u", "postgres", "--", f"{PGBIN}/pg_ctl", "-D",
                        f"{self.dir}/data", *args], check=True, capture_output=True, timeout=120)

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="lrpg-", dir="/tmp")
        url = subprocess.run([PG_SH, "start", self.dir], check=True, capture_output=True,
                             text=True, timeout=120).stdout.strip()
        self.addCleanup(subprocess.run, [PG_SH, "stop", self.dir], capture_output=True)
        own = type("OwnCluster", (), {"url": url})()
        self.server = Server(database=own).start()
        self.addCleanup(self.server.cleanup)

    def test_readyz_503_while_postgres_is_stopped_and_200_when_it_is_back(self):
        self.assertEqual(self.server.get("/readyz").status, 200)
        self.pg_ctl("-m", "fast", "-w", "stop")
        r = wait_for(lambda: (lambda x: x if x.status == 503 else None)(self.server.get("/readyz")),
                     60, 0.5)
        self.assertTrue(r, "readyz stayed 200 with PostgreSQL stopped")
        self.assertFalse(r.json["checks"]["database"]["ok"])
        self.assertEqual(self.server.get("/healthz").status, 503)
        self.pg_ctl("-l", f"{self.dir}/postgres.log", "-w", "-t", "60", "-o",
                    f"-k {self.dir} -c listen_addresses=''", "start")
        back = wait_for(lambda: self.server.get("/readyz").status == 200, 60, 0.5)
        self.assertTrue(back, "readyz did not come back once PostgreSQL was up")


if __name__ == "__main__":
    unittest.main()
