"""The new Supabase API keys through the real binary: an sb_secret_ key (in
SUPABASE_SECRET_KEY or SUPABASE_SERVICE_ROLE_KEY) authorises the admin API
in apikey or as Bearer, apikey winning over a user's Bearer token; a wrong
key is a 401 JSON answer and moves no credit; keys are never logged or
returned; the wrong kind of key is refused at start; and Supabase Storage
receives an sb_secret_ key in apikey only, a legacy JWT key in both."""
import base64
import hashlib
import hmac
import json
import unittest

from fake_supabase_storage import FakeStorage
from harness import Server, new_user

SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
SB_SECRET = "sb_secret_N7UnDqWfTestOnly_0123456789abcdefgh"
PUBLISHABLE = "sb_publishable_Lm4TestOnlyNotARealKey0123"


def legacy_key(role):
    """A legacy API key: an HS256 JWT of the project with this role."""
    def b64(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    signing = b64({"alg": "HS256", "typ": "JWT"}) + "." + b64(
        {"iss": "supabase", "ref": "lensroomtestref01", "role": role, "iat": 1700000000,
         "exp": 2000000000})
    sig = hmac.new(SECRET.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


SERVICE_JWT = legacy_key("service_role")


class AdminKeys(unittest.TestCase):
    def server(self, **env):
        s = Server(dict({"SUPABASE_JWT_SECRET": SECRET}, **env)).start()
        self.addCleanup(s.cleanup)
        return s

    def grant(self, s, user, headers, key):
        return s.request("POST", "/api/admin/credits", headers=headers,
                         body={"userId": user, "amount": 10, "idempotencyKey": key})

    def assert_refused(self, s, user, headers):
        before = s.ledger(user)
        r = self.grant(s, user, headers, "refused-" + str(len(before)))
        self.assertEqual(r.status, 401, (headers, r.body))
        self.assertEqual((r.json["success"], r.json["code"]), (False, "unauthorized"))
        self.assertIsInstance(r.json["error"], str)
        self.assertEqual(s.ledger(user), before)

    def test_secret_key_in_apikey_as_bearer_and_apikey_wins_over_a_user_bearer(self):
        s = self.server(SUPABASE_SECRET_KEY=SB_SECRET)
        user = new_user()
        user_bearer = "Bearer " + s.token(user)
        for i, h in enumerate(({"apikey": SB_SECRET}, {"Authorization": "Bearer " + SB_SECRET},
                               {"apikey": SB_SECRET, "Authorization": user_bearer})):
            r = self.grant(s, user, h, f"grant-{i}")
            self.assertEqual(r.status, 200, (h, r.body))
            self.assertEqual(r.json["balance"], 10 * (i + 1))
        self.assertEqual(s.balance(user), 30)
        s.assert_ledger_consistent(self, user)
        for h in ({"apikey": SB_SECRET[:-1] + "x"},
                  {"Authorization": "Bearer " + SB_SECRET + "x"},
                  {"apikey": "wrong", "Authorization": "Bearer " + SB_SECRET},  # apikey decides
                  {"apikey": PUBLISHABLE}, {"apikey": SERVICE_JWT},
                  {"Authorization": user_bearer}, {"apikey": SB_SECRET.upper()},
                  {"Authorization": "Basic " + SB_SECRET}, {}):
            self.assert_refused(s, user, h)
        self.assertEqual(s.balance(user), 30)
        s.stop()
        self.assertNotIn(SB_SECRET[len("sb_secret_"):], s.read_log())

    def test_legacy_jwt_and_secret_key_both_accepted_during_a_migration(self):
        s = self.server(SUPABASE_SECRET_KEY=SB_SECRET, SUPABASE_SERVICE_ROLE_KEY=SERVICE_JWT)
        user = new_user()
        for i, h in enumerate(({"apikey": SERVICE_JWT, "Authorization": "Bearer " + SERVICE_JWT},
                               {"apikey": SB_SECRET}, {"Authorization": "Bearer " + SERVICE_JWT})):
            self.assertEqual(self.grant(s, user, h, f"m-{i}").status, 200, h)
        self.assertEqual(s.balance(user), 30)
        self.assert_refused(s, user, {"apikey": legacy_key("anon")})
        smoke = s.cli("smoke", check=False).stdout
        self.assertIn("sb_secret_ key set (admin API enabled)", smoke)
        self.assertNotIn(SB_SECRET, smoke)
        s.stop()
        log = s.read_log()
        self.assertNotIn(SB_SECRET[len("sb_secret_"):], log)
        self.assertNotIn(SERVICE_JWT.split(".")[2], log)

    def test_sb_secret_key_in_service_role_variable_works(self):
        s = self.server(SUPABASE_SERVICE_ROLE_KEY=SB_SECRET)
        user = new_user()
        self.assertEqual(self.grant(s, user, {"apikey": SB_SECRET}, "k").status, 200)
        self.assertEqual(s.balance(user), 10)

    def test_no_key_configured_disables_the_admin_api(self):
        s = self.server()
        user = new_user()
        r = self.grant(s, user, {"apikey": SB_SECRET}, "k")
        self.assertEqual((r.status, r.json["code"]), (401, "admin_disabled"))
        self.assertIn("SUPABASE_SECRET_KEY", r.json["error"])
        self.assertEqual(s.ledger(user), [])

    def test_user_session_still_works_beside_a_forwarded_api_key(self):
        s = self.server(SUPABASE_SECRET_KEY=SB_SECRET)
        user = new_user()
        s.grant(user, 3)
        for key in (PUBLISHABLE, SB_SECRET):  # supabase-js forwards its key as Bearer
            r = s.get("/api/credits/balance", headers={
                "Authorization": "Bearer " + key, "Cookie": "lr_session=" + s.token(user)})
            self.assertEqual((r.status, r.json.get("userId")), (200, user), r.body)
            r = s.get("/api/credits/balance", headers={"Authorization": "Bearer " + key})
            self.assertEqual(r.status, 401, r.body)
            self.assertNotIn(key.encode(), r.body)

    def test_wrong_kind_of_key_is_refused_at_start(self):
        cases = [
            ({"SUPABASE_SECRET_KEY": PUBLISHABLE}, "SUPABASE_SECRET_KEY: is a publishable key"),
            ({"SUPABASE_SERVICE_ROLE_KEY": PUBLISHABLE},
             "SUPABASE_SERVICE_ROLE_KEY: is a publishable key"),
            ({"SUPABASE_SECRET_KEY": SERVICE_JWT}, "SUPABASE_SECRET_KEY: holds a legacy JWT key"),
            ({"SUPABASE_SERVICE_ROLE_KEY": legacy_key("anon")},
             "SUPABASE_SERVICE_ROLE_KEY: is the anon key"),
            ({"SUPABASE_SECRET_KEY": SB_SECRET + "\n"},
             "SUPABASE_SECRET_KEY: contains a space or control character"),
            ({"SUPABASE_SECRET_KEY": "sb_temp_0123456789abcdefghij"},
             "SUPABASE_SECRET_KEY: is an sb_ key of an unknown kind"),
            ({"SUPABASE_SECRET_KEY": "just-some-admin-password-1234"},
             "SUPABASE_SECRET_KEY: must be a secret key, sb_secret_"),
            ({"LENSROOM_STORAGE": "supabase", "SUPABASE_URL": "https://x.supabase.co"},
             "SUPABASE_SECRET_KEY: required for Supabase storage"),
        ]
        for env, line in cases:
            s = Server(dict({"SUPABASE_JWT_SECRET": SECRET}, **env))
            self.addCleanup(s.cleanup)
            code, log = s.start_refused()
            self.assertNotEqual(code, 0, env)
            self.assertIn("config: " + line, log)
            for v in env.values():
                if v.startswith(("sb_", "ey")):
                    self.assertNotIn(v.strip(), log)


class StorageKeys(unittest.TestCase):
    def run_infer(self, key, env):
        fake = FakeStorage(key).start()
        self.addCleanup(fake.stop)
        s = Server(dict(env, LENSROOM_STORAGE="supabase", SUPABASE_URL=fake.url))
        self.addCleanup(s.cleanup)
        s.start()
        user = new_user()
        s.grant(user, 8)
        r = s.infer(s.token(user))
        self.assertEqual(r.status, 200, r.body.decode() + s.read_log()[-2000:])
        self.assertEqual(s.cli("smoke", check=False).returncode, 0)
        s.stop()
        return fake, s

    def test_sb_secret_key_is_sent_in_apikey_only(self):
        for env in ({"SUPABASE_SECRET_KEY": SB_SECRET},
                    {"SUPABASE_SERVICE_ROLE_KEY": SB_SECRET},
                    {"SUPABASE_SECRET_KEY": SB_SECRET, "SUPABASE_SERVICE_ROLE_KEY": SERVICE_JWT}):
            fake, s = self.run_infer(SB_SECRET, env)
            methods = {m for m, _, _ in fake.storage_requests}
            self.assertTrue({"GET", "POST", "DELETE"} <= methods, fake.requests)
            self.assertEqual(set(fake.bearer_headers()), {None}, env)
            self.assertTrue(all(h.get("apikey") == SB_SECRET for _, _, h in fake.storage_requests))
            self.assertNotIn(SB_SECRET[len("sb_secret_"):], s.read_log())

    def test_legacy_jwt_key_is_sent_in_both_headers(self):
        fake, s = self.run_infer(SERVICE_JWT, {"SUPABASE_SERVICE_ROLE_KEY": SERVICE_JWT})
        self.assertEqual(set(fake.bearer_headers()), {"Bearer " + SERVICE_JWT})
        self.assertTrue(all(h.get("apikey") == SERVICE_JWT for _, _, h in fake.storage_requests))


if __name__ == "__main__":
    unittest.main()
