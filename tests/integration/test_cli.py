"""The command line: every command has --help, bad arguments exit non-zero
with a clear line, and credits/migrate work against the same database the
server uses."""
import os
import subprocess
import unittest

from harness import BACKEND, BIN, Server, new_user


class Cli(unittest.TestCase):
    def setUp(self):
        self.s = Server()
        self.addCleanup(self.s.cleanup)

    def test_help_for_every_command(self):
        for args in (["--help"], ["serve", "--help"], ["migrate", "--help"], ["token", "--help"],
                     ["credits", "--help"], ["audit", "--help"], ["smoke", "--help"]):
            r = self.s.cli(*args)
            self.assertIn("usage: lensroom", r.stdout, args)
        r = self.s.cli(check=False)
        self.assertEqual(r.returncode, 2)
        r = self.s.cli("frobnicate", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command", r.stderr)

    def test_migrate_is_idempotent(self):
        a = self.s.cli("migrate")
        b = self.s.cli("migrate")
        self.assertIn("up to date", a.stdout)
        self.assertIn("up to date", b.stdout)
        table, want = ("lensroom.schema_migrations", ["0001_credits_generations", "0002_resume",
                                                      "0003_lean_reserve", "0004_admin",
                                                      "0005_billing", "0006_runs", "0007_admin_links",
                                                      "0008_run_exec", "0009_previews",
                                                      "0010_rollups", "0011_ops",
                                                      "0012_heartbeats", "0013_takeover",
                                                      "0014_set_batches"]) \
            if BACKEND == "postgres" else ("schema_migrations",
                                           ["0001_init", "0002_leases", "0003_deletion",
                                            "0004_idempotency", "0005_billing", "0006_admin",
                                            "0007_runs", "0008_admin_links", "0009_run_exec",
                                            "0010_previews", "0011_rollups", "0012_ops",
                                            "0013_heartbeats", "0014_lean_indexes"])
        with self.s.db() as c:
            versions = [v for v, in c.execute(f"SELECT version FROM {table} ORDER BY 1")]
        self.assertEqual(versions, want)

    def test_credits_grant_balance_history(self):
        user = new_user()
        r = self.s.cli("credits", "grant", user, "30", "--reason", "welcome")
        self.assertIn("balance 30", r.stdout)
        r = self.s.cli("credits", "grant", user.upper(), "-10")
        self.assertIn("balance 20", r.stdout)
        r = self.s.cli("credits", "grant", user, "-21", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("balance is 20", r.stderr)
        r = self.s.cli("credits", "grant", user, "5", "--key", "k1")
        r = self.s.cli("credits", "grant", user, "5", "--key", "k1")
        self.assertIn("already granted", r.stdout)
        self.assertEqual(self.s.cli("credits", "balance", user).stdout.strip(), "25")
        hist = self.s.cli("credits", "history", user).stdout
        self.assertIn("welcome", hist)
        self.assertEqual(len(hist.strip().splitlines()), 4)

    def test_audit_finds_a_tampered_ledger(self):
        user = new_user()
        self.s.grant(user, 30)
        r = self.s.cli("audit")
        self.assertIn("ledger sound", r.stdout)
        with self.s.db() as c:  # money appears without a ledger row
            c.execute("UPDATE credits SET amount = amount + 5 WHERE user_id = ?", (user,))
        r = self.s.cli("audit", check=False)
        if BACKEND == "postgres":
            # the trigger recorded the direct change as an adjustment row
            self.assertEqual(r.returncode, 0, r.stdout)
            self.assertIn("adjustment", self.s.cli("credits", "history", user).stdout)
        else:
            self.assertEqual(r.returncode, 1)
            self.assertIn(f"violation balance_mismatch {user}", r.stdout)

    def test_smoke_is_green_on_a_migrated_database_and_red_without_tables(self):
        if BACKEND != "postgres":
            r = self.s.cli("smoke", check=False)  # nothing migrated yet
            self.assertEqual(r.returncode, 1, r.stdout)
            self.assertIn("✗ database", r.stdout)
            self.assertIn("run lensroom migrate", r.stdout)
        self.s.cli("migrate")
        r = self.s.cli("smoke", check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("✗", r.stdout)
        for name in ("env", "database", "credits functions", "generation rows", "bucket",
                     "upload/download/delete"):
            self.assertIn(f"✓ {name}", r.stdout)
        self.assertNotIn("\033[", r.stdout)  # not a terminal: no colours
        self.assertEqual(self.s.cli("audit", check=False).returncode, 0)

    def test_bad_arguments(self):
        for args in (["token"], ["token", "nope"], ["credits", "grant", "nope", "5"],
                     ["credits", "grant", new_user(), "abc"], ["credits", "grant", new_user(), "0"],
                     ["credits", "spend", new_user()], ["token", new_user(), "--ttl", "-5"]):
            r = self.s.cli(*args, check=False)
            self.assertEqual(r.returncode, 2, args)
            self.assertTrue(r.stderr.strip(), args)

    def test_token_secret_is_generated_once_with_mode_0600(self):
        user = new_user()
        t1 = self.s.token(user)
        path = os.path.join(self.s.data_dir, "jwt-secret")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        with open(path) as f:
            secret = f.read()
        self.s.token(user)
        with open(path) as f:
            self.assertEqual(f.read(), secret)
        self.s.start()
        self.s.grant(user, 3)
        r = self.s.get("/api/credits/balance", {"Authorization": f"Bearer {t1}"})
        self.assertEqual(r.json["balance"], 3)
        self.assertNotIn(secret.strip(), self.s.read_log())

    def test_serve_reports_port_in_use(self):
        self.s.start()
        other = Server(data_dir=self.s.data_dir)
        other.port = self.s.port
        other.env["PORT"] = str(self.s.port)
        other.log_path = os.path.join(self.s.data_dir, "other.log")
        r = subprocess.run([BIN, "serve"], env=other.env, capture_output=True, text=True,
                           timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("cannot listen on port", r.stderr)
        self.assertNotIn("Sanitizer", r.stderr)


if __name__ == "__main__":
    unittest.main()
