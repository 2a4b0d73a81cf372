"""docs/SETUP.md, "Plain PostgreSQL", followed as written, on a fresh
PostgreSQL 15 cluster set up the way Debian's package sets one up (peer
authentication on the socket for the `postgres` user, scram-sha-256
passwords over TCP on localhost): the superuser block once, then `migrate`
as the ordinary role `lensroom`, and a generation through the server with
that role's DATABASE_URL. Only the binary's path, the socket folder and
the port differ from the text. A cluster of its own, because the shared
test cluster already has the Supabase roles and no password auth."""
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
import types
import unittest

from harness import BACKEND, BIN, Server, free_port, new_user, pg_connect

SETUP = os.path.join(os.path.dirname(__file__), "../../docs/SETUP.md")
PGBIN = "/usr/lib/postgresql/15/bin"


def doc_block(name):
    with open(SETUP) as f:
        text = f.read()
    m = re.search(rf"<!-- {name} -->\n\s*```sh\n(.*?)```\n\s*<!-- /{name} -->", text, re.S)
    assert m, f"docs/SETUP.md lost its {name} block"
    return textwrap.dedent(m.group(1))


def as_postgres(*cmd, **kw):
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True,
                          text=True, timeout=120, **kw)


@unittest.skipUnless(BACKEND == "postgres", "runs in the PostgreSQL variant (it_pg_)")
@unittest.skipUnless(os.geteuid() == 0, "the documented steps run as root (runuser -u postgres)")
class PlainPostgres(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="lensroom-plainpg-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        os.chmod(self.dir, 0o755)
        shutil.chown(self.dir, "postgres", "postgres")
        data = os.path.join(self.dir, "data")
        r = as_postgres(f"{PGBIN}/initdb", "-D", data, "-U", "postgres", "-E", "UTF8",
                        "--auth-local=peer", "--auth-host=scram-sha-256", "--no-sync")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.port = free_port()
        r = as_postgres(f"{PGBIN}/pg_ctl", "-D", data, "-l", os.path.join(self.dir, "log"), "-w",
                        "-t", "60", "-o", f"-k {self.dir} -p {self.port} "
                        "-c listen_addresses=localhost -c fsync=off", "start")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.addCleanup(as_postgres, f"{PGBIN}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        # Where Debian's psql would find its cluster by default.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DATABASE_"))}
        self.env.update(PGHOST=self.dir, PGPORT=str(self.port))

    def url(self, documented):
        return documented.replace("@localhost/", f"@localhost:{self.port}/")

    def sh(self, script):
        return subprocess.run(["bash", "-e", "-c", script], env=self.env, capture_output=True,
                              text=True, timeout=300)

    def test_documented_steps_give_a_working_server_as_a_non_superuser(self):
        r = self.sh(doc_block("plain-pg-superuser"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

        app = doc_block("plain-pg-app")
        m = re.search(r"DATABASE_URL='([^']+)'", app)
        url = self.url(m.group(1))
        self.assertTrue(app.rstrip().endswith("./build/lensroom serve"), app)
        script = app.rstrip()[:-len("./build/lensroom serve")]  # the harness serves it
        script = self.url(script).replace("./build/lensroom", BIN)
        r = self.sh(script)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("migration applied: 0001_credits_generations", r.stderr)

        conn = pg_connect(url)  # over TCP with the password, as the server does
        with conn, conn.cursor() as cur:
            cur.execute("SELECT current_user, rolsuper, rolcreaterole, rolbypassrls FROM pg_roles "
                        "WHERE rolname = current_user")
            self.assertEqual(cur.fetchone(), ("lensroom", False, False, False))
            cur.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'public' "
                        "AND tablename = 'generations'")
            self.assertEqual(cur.fetchone(), ("lensroom",))
        conn.close()

        s = Server({"DATABASE_URL": url}, database=types.SimpleNamespace(url=url))
        self.addCleanup(s.cleanup)
        s.start()
        self.assertIn('"database":"postgres"', s.read_log())
        user = new_user()
        s.grant(user, 100)
        r = s.infer(s.token(user))
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json["newBalance"], 92)
        self.assertEqual(s.fetch_url(r.json["url"]).body[:8], b"\x89PNG\r\n\x1a\n")
        s.assert_ledger_consistent(self, user)
        self.assertEqual(s.cli("migrate").returncode, 0)  # again, still as lensroom: no change

    def test_migrate_without_the_roles_says_what_the_superuser_must_run(self):
        r = self.sh("runuser -u postgres -- psql -v ON_ERROR_STOP=1 "
                    "-c \"CREATE ROLE lensroom LOGIN PASSWORD 'change-me'\" "
                    "-c 'CREATE DATABASE lensroom OWNER lensroom'")
        self.assertEqual(r.returncode, 0, r.stderr)
        env = dict(self.env, DATABASE_URL=self.url(
            "postgresql://lensroom:change-me@localhost/lensroom"))
        r = subprocess.run([BIN, "migrate"], env=env, capture_output=True, text=True, timeout=120)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("the roles anon, authenticated, service_role are missing, and lensroom is "
                      "not a superuser who could create them", r.stderr)
        self.assertIn("CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS", r.stderr)


if __name__ == "__main__":
    unittest.main()
