"""The operator's command line and GET /api/admin/analytics through the real
binary: generations list/show, credits take, users top, analytics, with
every number checked against the database."""
import base64
import datetime
import hashlib
import hmac
import json
import os
import time
import unittest
import urllib.parse

import yaml
from jsonschema import Draft202012Validator

from harness import ServerTest, new_user, wait_for

SERVICE_KEY = "sb_secret_admin_cli_test_key_0123456789"
ADMIN = new_user()


def day_of(ts):
    if isinstance(ts, datetime.datetime):
        return ts.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d")
    return ts[:10]


def nearest_rank(values, p):
    v = sorted(values)
    return v[max(1, -(-len(v) * p // 100)) - 1] if v else None


class AdminCli(ServerTest):
    server_env = {"LENSROOM_MOCK_FAIL_RATE": "0.35", "LENSROOM_ADMINS": ADMIN.upper(),
                  "SUPABASE_SECRET_KEY": SERVICE_KEY}

    def load(self, users=3, each=6):
        ids = [new_user() for _ in range(users)]
        for i, u in enumerate(ids):
            self.server.grant(u, 500)
            token = self.server.token(u)
            for k in range(each + i):
                self.server.infer(token, model="seedream_image" if k % 3 else "midjourney_image",
                                  prompt=f"p{k}")
        return ids

    def json_cli(self, *args):
        return json.loads(self.server.cli(*args, "--json").stdout)

    def test_generations_list_filters_and_show_has_the_ledger_rows(self):
        a, b = self.load(users=2, each=5)
        # the mock fails 35 % of outputs at random: make sure one failed
        token = self.server.token(a)
        for k in range(60):
            with self.server.db() as c:
                if c.execute("SELECT count(*) FROM generations WHERE status = 'failed'").fetchone()[0]:
                    break
            self.server.infer(token, model="seedream_image", prompt=f"more {k}")
        rows = self.json_cli("generations", "list", "--user", a)
        with self.server.db() as c:
            n = c.execute("SELECT count(*) FROM generations WHERE user_id = ?", (a,)).fetchone()[0]
        self.assertEqual(len(rows), n)
        self.assertTrue(all(r["userId"] == a for r in rows))
        stamps = [r["createdAt"] for r in rows]
        self.assertEqual(stamps, sorted(stamps, reverse=True))
        failed = self.json_cli("generations", "list", "--status", "failed", "--since", "1d")
        self.assertTrue(failed, "the mock's failure rate should fail some")
        self.assertTrue(all(r["status"] == "failed" for r in failed))
        self.assertEqual(len(self.json_cli("generations", "list", "--limit", "2")), 2)
        shown = self.json_cli("generations", "show", failed[0]["id"])
        types = sorted(t["type"] for t in shown["ledger"])
        self.assertEqual(types, ["generation", "refund"])
        self.assertEqual(sum(t["amount"] for t in shown["ledger"]), 0)
        self.assertTrue(shown["errorCode"])
        text = self.server.cli("generations", "show", failed[0]["id"]).stdout
        self.assertIn("refund", text)
        miss = self.server.cli("generations", "show", new_user(), check=False)
        self.assertEqual(miss.returncode, 1)
        bad = self.server.cli("generations", "list", "--user", "nope", check=False)
        self.assertEqual(bad.returncode, 2)

    def test_credits_take_needs_a_reason_never_goes_below_zero_and_is_audited(self):
        user = new_user()
        self.server.grant(user, 30)
        r = self.server.cli("credits", "take", user, "10", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--reason", r.stderr)
        self.server.cli("credits", "take", user, "10", "--reason", "chargeback", "--key", "cb-1")
        again = self.server.cli("credits", "take", user, "10", "--reason", "chargeback", "--key",
                                "cb-1")
        self.assertIn("already taken", again.stdout)
        self.assertEqual(self.server.balance(user), 20)
        short = self.server.cli("credits", "take", user, "21", "--reason", "too much", check=False)
        self.assertEqual(short.returncode, 1)
        self.assertIn("balance is 20", short.stderr)
        self.assertEqual(self.server.balance(user), 20)
        rows = [r for r in self.server.ledger(user) if r[1] == "adjustment"]
        self.assertEqual([r[0] for r in rows], [-10])
        table = "lensroom.admin_audit" if self.server.pg else "admin_audit"
        with self.server.db() as c:
            audit = c.execute(f"SELECT actor, action, subject FROM {table}").fetchall()
        self.assertEqual([(a, b, str(s)) for a, b, s in audit],
                         [("cli", "credits.take", user)] * 2)
        self.server.assert_ledger_consistent(self, user)

    def expected(self):
        """The analytics numbers, computed here from the rows."""
        with self.server.db() as c:
            tx = c.execute("SELECT user_id, type, amount, created_at FROM credit_transactions"
                           ).fetchall()
            gens = c.execute("SELECT model, status, duration_ms, created_at FROM generations"
                             ).fetchall()
        days = {}
        for _, t, a, at in tx:
            d = days.setdefault(day_of(at), {"spent": 0, "bought": 0, "refunded": 0, "granted": 0})
            key = {"generation": "spent", "purchase": "bought", "refund": "refunded",
                   "bonus": "granted", "adjustment": "granted"}[t]
            d[key] += -a if t == "generation" else a
        models = {}
        for m, s, dur, _ in gens:
            e = models.setdefault(m, {"total": 0, "succeeded": 0, "failed": 0, "canceled": 0,
                                      "d": []})
            e["total"] += 1
            if s in ("success", "failed", "canceled"):
                e[{"success": "succeeded"}.get(s, s)] += 1
            if s in ("success", "failed") and dur is not None:
                e["d"].append(dur)
        spent = {}
        for u, t, a, _ in tx:
            if t in ("generation", "refund"):
                spent[str(u)] = spent.get(str(u), 0) - a
        return days, models, spent

    def check_analytics(self, got):
        days, models, spent = self.expected()
        self.assertEqual({d["day"]: {k: d[k] for k in ("spent", "bought", "refunded", "granted")}
                          for d in got["creditsPerDay"]}, days)
        self.assertEqual(len(got["models"]), len(models))
        for m in got["models"]:
            e = models[m["model"]]
            for k in ("total", "succeeded", "failed", "canceled"):
                self.assertEqual(m[k], e[k], (m["model"], k))
            self.assertEqual(m["p50Ms"], nearest_rank(e["d"], 50))
            self.assertEqual(m["p95Ms"], nearest_rank(e["d"], 95))
            self.assertAlmostEqual(m["successRate"], e["succeeded"] / e["total"])
        per_model = {}
        for r in got["generationsPerModelPerDay"]:
            per_model[r["model"]] = per_model.get(r["model"], 0) + r["count"]
        self.assertEqual(per_model, {m: e["total"] for m, e in models.items()})
        self.assertEqual(got["refunds"]["credits"], sum(d["refunded"] for d in days.values()))
        top = sorted(spent.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        self.assertEqual([(u["userId"], u["spent"]) for u in got["topUsers"]], top)

    def test_analytics_cli_and_api_agree_with_the_database(self):
        self.load()
        since, until = "2000-01-01", "2100-01-01"
        cli = self.json_cli("analytics", "--since", since, "--until", until)
        self.check_analytics(cli)
        path = f"/api/admin/analytics?since={since}&until={until}"
        api = self.server.get(path, {"apikey": SERVICE_KEY})
        self.assertEqual(api.status, 200, api.body)
        self.assertEqual(api.json, cli)
        with open(os.path.join(os.path.dirname(__file__), "../../docs/openapi.yaml")) as f:
            doc = yaml.safe_load(f)
        v = Draft202012Validator({"$ref": "#/components/schemas/Analytics",
                                  "components": doc["components"]})
        self.assertEqual([e.message for e in v.iter_errors(api.json)], [])
        admin = self.server.get(path, {"Authorization": f"Bearer {self.server.token(ADMIN)}"})
        self.assertEqual((admin.status, admin.json), (200, cli))
        text = self.server.cli("analytics").stdout
        self.assertIn("seedream_image", text)
        top = self.json_cli("users", "top", "--limit", "2")
        self.assertEqual(top, cli["topUsers"][:2])

    def test_analytics_api_refuses_non_admins_and_bad_ranges(self):
        r = self.server.get("/api/admin/analytics")
        self.assertEqual((r.status, r.json["code"]), (401, "unauthorized"))
        user_token = self.server.token(new_user())
        r = self.server.get("/api/admin/analytics", {"Authorization": f"Bearer {user_token}"})
        self.assertEqual((r.status, r.json["code"]), (403, "forbidden"))
        r = self.server.get("/api/admin/analytics", {"apikey": SERVICE_KEY + "x"})
        self.assertEqual(r.status, 401)
        r = self.server.get("/api/admin/analytics?since=yesterday", {"apikey": SERVICE_KEY})
        self.assertEqual((r.status, r.json["code"], r.json["field"]),
                         (422, "invalid_parameter", "since"))


JWT_SECRET = "admin-cli-test-jwt-secret-with-at-least-32-characters"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_with_email(user, email):
    now = int(time.time())
    claims = {"sub": user, "aud": "authenticated", "role": "authenticated", "iat": now,
              "exp": now + 600, "email": email}
    signing = (b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." +
               b64url(json.dumps(claims).encode()))
    sig = hmac.new(JWT_SECRET.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64url(sig)


class AdminUsersByEmail(ServerTest):
    """GET /api/admin/users?q= finds users by the start of their email:
    the one their tokens carried, and on PostgreSQL with Supabase's
    auth.users, the one there."""
    server_env = {"SUPABASE_JWT_SECRET": JWT_SECRET, "SUPABASE_SECRET_KEY": SERVICE_KEY}

    def search(self, q):
        r = self.server.get("/api/admin/users?q=" + urllib.parse.quote(q), {"apikey": SERVICE_KEY})
        self.assertEqual(r.status, 200, r.body)
        return [(u["userId"], u["email"]) for u in r.json["users"]]

    def seen(self, user, email):
        r = self.server.get("/api/credits/balance",
                            {"Authorization": f"Bearer {token_with_email(user, email)}"})
        self.assertEqual(r.status, 200, r.body)

    def test_users_are_found_by_the_start_of_their_email(self):
        alice, bob, carol = new_user(), new_user(), new_user()
        for u in (alice, bob, carol):
            self.server.grant(u, 10)
        self.seen(alice, "Alice@Example.com")
        self.seen(bob, "bob@example.org")
        self.server.get("/api/credits/balance",
                        {"Authorization": f"Bearer {self.server.token(carol)}"})
        self.assertEqual(wait_for(lambda: self.search("alice@"), 30),
                         [(alice, "Alice@Example.com")])
        self.assertEqual(self.search("ALICE@EXAMPLE.COM"), [(alice, "Alice@Example.com")])
        self.assertEqual(self.search("bob"), [(bob, "bob@example.org")])
        self.assertEqual(self.search("example"), [])  # the start, not a substring
        self.assertEqual(self.search("carol"), [])
        # the id search is unchanged, and every row names its email
        everyone = self.search(carol[:8])
        self.assertEqual(everyone, [(carol, None)])
        # a new email in a later token replaces the old one
        self.seen(bob, "robert@example.org")
        self.assertEqual(wait_for(lambda: self.search("robert"), 30),
                         [(bob, "robert@example.org")])
        self.assertEqual(self.search("bob"), [])
        r = self.server.get("/api/admin/users?q=" + "x" * 300, {"apikey": SERVICE_KEY})
        self.assertEqual((r.status, r.json["code"], r.json["field"]),
                         (400, "invalid_parameter", "q"))
        if self.server.pg:
            # Supabase keeps every user's email in auth.users: one who never
            # sent this server a token is found there.
            dora = new_user()
            self.server.grant(dora, 5)
            with self.server.db() as c:
                c.execute("CREATE TABLE auth.users (id uuid PRIMARY KEY, email text)")
                c.execute("INSERT INTO auth.users VALUES (?, ?), (?, ?)",
                          (dora, "Dora@Example.net", alice, "Alice@Example.com"))
            self.assertEqual(self.search("dora@"), [(dora, None)])
            self.assertEqual(self.search("alice"), [(alice, "Alice@Example.com")])


if __name__ == "__main__":
    unittest.main()
