"""Authentication through the real binary: every bad credential is a 401
with the JSON error body and moves no credit; every accepted shape of
Supabase session works; the dev switches behave as the original's."""
import base64
import hashlib
import hmac
import json
import time
import unittest
import urllib.parse

from harness import Server, ServerTest, new_user

SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims, secret=SECRET, header=None):
    header = header or {"alg": "HS256", "typ": "JWT"}
    signing = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64url(sig)


def claims(user, **over):
    now = int(time.time())
    c = {"sub": user, "aud": "authenticated", "role": "authenticated", "iat": now,
         "exp": now + 600, "email": "u@example.com"}
    c.update(over)
    return c


class Auth(ServerTest):
    server_env = {"SUPABASE_JWT_SECRET": SECRET}

    def setUp(self):
        super().setUp()
        self.user = new_user()
        self.server.grant(self.user, 100)

    def infer_with(self, headers):
        return self.server.request("POST", "/api/infer", headers=headers, body={
            "modelId": "seedream_image", "inputs": {"prompt": "x"}, "params": {}})

    def assert401(self, headers):
        r = self.infer_with(headers)
        self.assertEqual(r.status, 401, (headers, r.body))
        b = r.json
        self.assertIs(b["success"], False)
        self.assertIsInstance(b["error"], str)
        self.assertIn(b["code"], ("unauthorized", "invalid_token"))
        self.assertEqual(self.server.balance(self.user), 100)
        for path in ("/api/credits/balance", "/api/generations", "/api/credits/transactions"):
            self.assertEqual(self.server.get(path, headers).status, 401, path)

    def test_no_token(self):
        self.assert401({})
        self.assert401({"Cookie": "theme=dark"})

    def test_bad_signature(self):
        tok = make_jwt(claims(self.user), secret="x" * 40)
        self.assert401({"Cookie": f"lr_session={tok}"})
        self.assert401({"Authorization": f"Bearer {tok}"})

    def test_expired(self):
        tok = make_jwt(claims(self.user, exp=int(time.time()) - 120))
        self.assert401({"Cookie": f"lr_session={tok}"})

    def test_not_yet_valid(self):
        tok = make_jwt(claims(self.user, nbf=int(time.time()) + 600))
        self.assert401({"Authorization": f"Bearer {tok}"})

    def test_alg_none(self):
        h = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        p = b64url(json.dumps(claims(self.user)).encode())
        self.assert401({"Cookie": f"lr_session={h}.{p}."})
        self.assert401({"Authorization": f"Bearer {h}.{p}."})

    def test_hs_rs_confusion(self):
        tok = make_jwt(claims(self.user), header={"alg": "RS256", "typ": "JWT"})
        self.assert401({"Authorization": f"Bearer {tok}"})
        tok = make_jwt(claims(self.user), header={"alg": "ES256", "typ": "JWT"})
        self.assert401({"Authorization": f"Bearer {tok}"})

    def test_wrong_audience_and_bad_subject(self):
        self.assert401({"Authorization": "Bearer " + make_jwt(claims(self.user, aud="anon"))})
        self.assert401({"Authorization": "Bearer " + make_jwt(claims("not-a-uuid"))})
        self.assert401({"Authorization": "Bearer " + make_jwt(claims(self.user, sub=None))})

    def test_garbage_cookies_and_headers(self):
        for cookie in ("lr_session=garbage", "lr_session=a.b.c", "sb-abc-auth-token=base64-!!!!",
                       "sb-abc-auth-token=%7Bbroken", "sb-access-token=" + "A" * 5000,
                       "lr_session=\"\"", "lr_session=%00"):
            self.assert401({"Cookie": cookie})
        self.assert401({"Authorization": "Basic dXNlcjpwYXNz"})
        self.assert401({"Authorization": "Bearer"})

    def test_every_supported_credential_shape_works(self):
        tok = make_jwt(claims(self.user))
        session = json.dumps({"access_token": tok, "token_type": "bearer", "refresh_token": "r"})
        enc = "base64-" + b64url(session.encode())
        shapes = [
            {"Cookie": f"lr_session={tok}"},
            {"Cookie": f"sb-access-token={tok}"},
            {"Cookie": f"supabase-auth-token={tok}"},
            {"Cookie": f"sb-abcd1234-auth-token={urllib.parse.quote(session)}"},
            {"Cookie": "sb-abcd1234-auth-token=" + urllib.parse.quote(json.dumps([tok, "r"]))},
            {"Cookie": f"sb-abcd1234-auth-token={enc}"},
            {"Cookie": f"sb-abcd1234-auth-token.0={enc[:50]}; sb-abcd1234-auth-token.1={enc[50:]}"},
            {"Authorization": f"Bearer {tok}"},
            # a stale lr_session does not hide a valid Bearer token
            {"Cookie": "lr_session=stale.token.here", "Authorization": f"Bearer {tok}"},
        ]
        for h in shapes:
            r = self.server.get("/api/credits/balance", h)
            self.assertEqual(r.status, 200, (h, r.body))
            self.assertEqual(r.json["balance"], 100)
            self.assertEqual(r.json["userId"], self.user)

    def test_uppercase_subject_is_the_same_user(self):
        tok = make_jwt(claims(self.user.upper()))
        r = self.server.get("/api/credits/balance", {"Authorization": f"Bearer {tok}"})
        self.assertEqual(r.json["balance"], 100)


class TestMode(ServerTest):
    TEST_USER = "11111111-2222-4333-8444-555555555555"
    server_env = {"TEST_MODE": "true", "TEST_USER_ID": TEST_USER}

    def test_every_request_is_the_test_user_and_startup_warns(self):
        self.server.grant(self.TEST_USER, 8)
        r = self.server.request("POST", "/api/infer", body={
            "modelId": "seedream_image", "inputs": {"prompt": "x"}})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(self.server.balance(self.TEST_USER), 0)
        self.assertIn("TEST_MODE=true", self.server.read_log())


class AnonInfer(ServerTest):
    TEST_USER = "11111111-2222-4333-8444-555555555555"
    server_env = {"ALLOW_ANON_INFER": "true", "TEST_USER_ID": TEST_USER}

    def test_anonymous_infer_uses_test_user_but_other_routes_need_auth(self):
        self.server.grant(self.TEST_USER, 8)
        r = self.server.request("POST", "/api/infer", body={
            "modelId": "seedream_image", "inputs": {"prompt": "x"}})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(self.server.get("/api/credits/balance").status, 401)
        self.assertIn("ALLOW_ANON_INFER=true", self.server.read_log())


class ConfigErrors(unittest.TestCase):
    def test_bad_configuration_exits_with_one_line_per_problem(self):
        s = Server({"PORT": "99999", "TEST_MODE": "true", "LENSROOM_MOCK_FAIL_RATE": "2",
                    "SUPABASE_JWT_SECRET": "short"})
        self.addCleanup(s.cleanup)
        code, log = s.start_refused()
        self.assertNotEqual(code, 0)
        for name in ("PORT", "TEST_USER_ID", "LENSROOM_MOCK_FAIL_RATE", "SUPABASE_JWT_SECRET"):
            self.assertIn(f"config: {name}:", log)
        self.assertNotIn("short", log.replace("too short", ""), "the secret must not be echoed")

    def test_bad_provider_configuration(self):
        s = Server({"USE_MOCK_INFERENCE": "false", "KIE_API_BASE": "ftp://x",
                    "ANTHROPIC_API_BASE": "nope", "LENSROOM_FETCH_ALLOW": "example.com:80",
                    "LENSROOM_WEBHOOK_BASE_URL": "example.com", "KIE_POLL_MS": "0"})
        self.addCleanup(s.cleanup)
        code, log = s.start_refused()
        self.assertNotEqual(code, 0)
        for name in ("USE_MOCK_INFERENCE", "KIE_API_BASE", "ANTHROPIC_API_BASE",
                     "LENSROOM_WEBHOOK_BASE_URL", "KIE_POLL_MS"):
            self.assertIn(f"config: {name}:", log)
        # the allow-list is checked once the rest is valid
        s2 = Server({"LENSROOM_FETCH_ALLOW": "example.com:80"})
        self.addCleanup(s2.cleanup)
        code, log = s2.start_refused()
        self.assertNotEqual(code, 0)
        self.assertIn("config: LENSROOM_FETCH_ALLOW: 'example.com' is not ip:port", log)


if __name__ == "__main__":
    unittest.main()
