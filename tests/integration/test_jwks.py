"""ES256 / RS256 user tokens verified against the project's JWKS, through
the real binary: tokens minted by npm `jose`, session cookies written by
`@supabase/ssr`, keys served by a loopback fake of Supabase Auth
(fake_supabase_auth.py). Every refusal is a 401 with the JSON error body
and moves no credit; the JWKS is fetched on the server's loop, cached,
refetched on an unknown kid at a bounded rate, and its outage keeps the
cached keys working with one operator log line."""
import base64
import hashlib
import hmac
import json
import os
import subprocess
import time
import unittest

from fake_supabase_auth import FakeAuth
from harness import Server, new_user

TOOL = os.path.join(os.path.dirname(__file__), "../node/jwt_tool.mjs")
SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
KEYS = {}


def node(jobs):
    r = subprocess.run(["node", TOOL], input=json.dumps(jobs), capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        raise AssertionError("jwt_tool.mjs failed: " + r.stderr[-2000:])
    return json.loads(r.stdout)


def setUpModule():
    specs = [("es-1", "ES256"), ("rs-1", "RS256"), ("es-2", "ES256"), ("es-stranger", "ES256")]
    for (kid, _), key in zip(specs, node([{"op": "keygen", "alg": alg, "kid": kid}
                                          for kid, alg in specs])):
        KEYS[kid] = key


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims, key, header=None):
    """An HS256 token made by hand (key: bytes)."""
    h = {"alg": "HS256", "typ": "JWT"}
    h.update(header or {})
    signing = b64url(json.dumps(h).encode()) + "." + b64url(json.dumps(claims).encode())
    return signing + "." + b64url(hmac.new(key, signing.encode(), hashlib.sha256).digest())


class Base(unittest.TestCase):
    cache_control = "public, max-age=600"
    refetch_s = "1"

    def setUp(self):
        self.fake = FakeAuth([KEYS["es-1"]["public"], KEYS["rs-1"]["public"]],
                             cache_control=self.cache_control).start()
        self.addCleanup(self.fake.stop)
        self.server = self.start_server({"SUPABASE_URL": self.fake.url})
        self.user = new_user()
        self.server.grant(self.user, 100)

    def start_server(self, env):
        env = dict({"SUPABASE_JWT_SECRET": SECRET, "LENSROOM_JWKS_REFETCH_S": self.refetch_s}, **env)
        s = Server(env)
        self.addCleanup(s.cleanup)
        s.start()
        self.wait_log(s, "jwks: signing keys loaded")
        return s

    def wait_log(self, server, text, count=1, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if server.read_log().count(text) >= count:
                return
            time.sleep(0.05)
        raise AssertionError(f"log never showed {text!r} x{count}:\n" + server.read_log()[-3000:])

    def claims(self, **over):
        now = int(time.time())
        c = {"sub": self.user, "aud": "authenticated", "role": "authenticated", "iat": now,
             "exp": now + 600, "iss": self.fake.url + "/auth/v1", "email": "u@example.com",
             "session_id": "5b1f0a52-0000-4000-8000-000000000000", "aal": "aal1"}
        c.update(over)
        return c

    def sign(self, kid, claims=None, header=None, alg=None):
        key = KEYS[kid]["private"]
        return node([{"op": "sign", "alg": alg or key["alg"], "key": key,
                      "claims": claims or self.claims(), "header": header or {}}])[0]

    def bearer(self, token):
        return {"Authorization": f"Bearer {token}"}

    def infer(self, headers):
        return self.server.request("POST", "/api/infer", headers=headers, body={
            "modelId": "seedream_image", "inputs": {"prompt": "a lighthouse"}, "params": {}})

    def assert_refused(self, token, why=None):
        """401, JSON error body, and no credit moved by a refused infer."""
        before = self.server.ledger(self.user)
        for headers in (self.bearer(token), {"Cookie": f"sb-access-token={token}"}):
            r = self.infer(headers)
            self.assertEqual(r.status, 401, r.body)
            body = r.json
            self.assertIs(body["success"], False)
            self.assertIsInstance(body["error"], str)
            self.assertEqual(body["code"], "invalid_token", body)
            if why:
                self.assertIn(why, body["error"])
            self.assertEqual(r.header("www-authenticate"), "Bearer")
        self.assertEqual(self.server.balance(self.user), 100)
        self.assertEqual(self.server.ledger(self.user), before)
        self.assertEqual(self.server.get("/api/credits/balance", self.bearer(token)).status, 401)


class Accepted(Base):
    def test_es256_and_rs256_tokens_work_as_bearer_and_in_ssr_cookies(self):
        for kid in ("es-1", "rs-1"):
            with self.subTest(kid=kid):
                token = self.sign(kid)
                header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
                self.assertEqual((header["alg"], header["kid"]), (KEYS[kid]["public"]["alg"], kid))
                r = self.server.get("/api/credits/balance", self.bearer(token))
                self.assertEqual(r.status, 200, r.body)
                cookies = node([{"op": "cookies", "url": self.fake.url, "access_token": token}])[0]
                self.assertEqual([c["name"] for c in cookies], ["sb-127-auth-token"])
                self.assertTrue(cookies[0]["value"].startswith("base64-"))
                cookie = {"Cookie": f"theme=dark; {cookies[0]['name']}={cookies[0]['value']}"}
                r = self.server.get("/api/credits/balance", cookie)
                self.assertEqual(r.status, 200, r.body)
                self.assertEqual(r.json["balance"], self.server.balance(self.user))
        # A generation paid for with an ES256 session, and its event stream.
        r = self.infer(self.bearer(self.sign("es-1")))
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json["newBalance"], 92)
        gid = r.json["generationId"]
        r = self.server.get(f"/api/generations/{gid}/events", self.bearer(self.sign("rs-1")))
        self.assertEqual(r.status, 200, r.body)
        self.assertIn(b"event: success", r.body)
        self.server.assert_ledger_consistent(self, self.user)

    def test_hs256_with_the_secret_keeps_working_beside_the_jwks(self):
        # Supabase's own HS256 tokens carry a kid that is not in the JWKS.
        token = hs256(self.claims(), SECRET.encode(), {"kid": "legacy-hs-kid"})
        self.assertEqual(self.server.get("/api/credits/balance", self.bearer(token)).status, 200)
        # lensroom token adds iss {SUPABASE_URL}/auth/v1 when SUPABASE_URL is set.
        cli = self.server.token(self.user)
        self.assertEqual(self.server.get("/api/credits/balance", self.bearer(cli)).status, 200)
        before = self.fake.jwks_requests
        for _ in range(5):  # HS256 never asks for a refetch
            self.server.get("/api/credits/balance", self.bearer(token))
        self.assertEqual(self.fake.jwks_requests, before)

    def test_rotated_key_works_without_restart(self):
        token = self.sign("es-2")
        self.assert_refused(token, "not in the project's JWKS")
        self.fake.keys.append(KEYS["es-2"]["public"])
        deadline = time.time() + 30
        while True:
            r = self.server.get("/api/credits/balance", self.bearer(token))
            if r.status == 200:
                break
            self.assertEqual(r.status, 401, r.body)
            self.assertLess(time.time(), deadline, "rotated key never accepted")
            time.sleep(0.1)
        self.assertGreaterEqual(self.fake.jwks_requests, 2)
        self.wait_log(self.server, '"kid":"es-2"')
        # The old keys still work (several stay valid during a rotation).
        self.assertEqual(self.server.get("/api/credits/balance",
                                         self.bearer(self.sign("es-1"))).status, 200)

    def test_jwks_url_alone_without_supabase_url(self):
        s = self.start_server({"SUPABASE_JWKS_URL": self.fake.jwks_url})
        claims = self.claims()
        del claims["iss"]  # no SUPABASE_URL: no issuer to check
        r = s.get("/api/credits/balance", self.bearer(self.sign("rs-1", claims)))
        self.assertEqual(r.status, 200, r.body)


class Refused(Base):
    def test_tokens_the_jwks_does_not_vouch_for_are_401(self):
        # A key that is not in the JWKS, under its own kid and under a listed one.
        self.assert_refused(self.sign("es-stranger"), "not in the project's JWKS")
        self.assert_refused(self.sign("es-stranger", header={"kid": "es-1"}),
                            "invalid token signature")
        # alg: none, bare and naming a listed kid.
        for header in ({"alg": "none"}, {"alg": "none", "kid": "es-1"}):
            unsigned = b64url(json.dumps(header).encode()) + "." + \
                b64url(json.dumps(self.claims()).encode()) + "."
            self.assert_refused(unsigned, "algorithm not accepted")
        # ES256 header naming the RSA key's kid (signed with the EC key).
        self.assert_refused(self.sign("es-1", header={"kid": "rs-1"}), "algorithm not accepted")
        # HS256 keyed with the public key: PEM and JWK-JSON, with and without its kid.
        pub = KEYS["es-1"]
        for key in (pub["spki"].encode(), json.dumps(pub["public"]).encode()):
            self.assert_refused(hs256(self.claims(), key), "invalid token signature")
            self.assert_refused(hs256(self.claims(), key, {"kid": "es-1"}), "algorithm not accepted")
        # Right key, wrong project or claims.
        self.assert_refused(self.sign("es-1", self.claims(iss="https://other.supabase.co/auth/v1")),
                            "issuer")
        self.assert_refused(self.sign("rs-1", self.claims(iat=int(time.time()) + 86400)),
                            "issued in the future")
        self.assert_refused(self.sign("es-1", self.claims(exp=int(time.time()) - 3600)), "expired")
        self.assert_refused(self.sign("es-1", self.claims(exp=9223372036854775807)), "malformed")
        self.assert_refused(self.sign("es-1", header={"crit": ["x-bound"], "x-bound": 1}),
                            "critical header")

    def test_secret_signed_token_with_int64_max_exp_is_a_clean_401(self):
        token = hs256(self.claims(exp=9223372036854775807), SECRET.encode())
        self.assert_refused(token, "malformed")
        token = hs256(self.claims(iat=int(time.time()) + 86400), SECRET.encode())
        self.assert_refused(token, "issued in the future")
        # harness.stop() fails the test on any sanitizer report in the log.


class Outage(Base):
    cache_control = "public, max-age=1"

    def test_endpoint_down_keeps_cached_keys_and_logs_one_line(self):
        token = self.sign("es-1")
        self.fake.wait_jwks_requests(2)  # max-age=1: refreshed on schedule
        self.fake.mode = "500"
        seen = self.fake.wait_jwks_requests(self.fake.jwks_requests + 1)
        self.wait_log(self.server, "jwks: cannot fetch")
        self.fake.mode = "close"
        self.fake.wait_jwks_requests(seen + 2, timeout=60)  # retries, backing off
        for kid in ("es-1", "rs-1"):
            r = self.infer(self.bearer(self.sign(kid)))
            self.assertEqual(r.status, 200, r.body)
        unknown = self.sign("es-2")
        for i in range(20):  # unknown kids during the outage
            self.assertEqual(self.server.get("/api/credits/balance",
                                             self.bearer(unknown)).status, 401)
            if i == 0:
                self.assertEqual(self.server.get("/api/credits/balance",
                                                 self.bearer(token)).status, 200)
        log = self.server.read_log()
        lines = [json.loads(line) for line in log.splitlines() if "jwks: cannot fetch" in line]
        self.assertEqual(len(lines), 1, log[-3000:])
        self.assertEqual(lines[0]["level"], "error")
        self.assertEqual(lines[0]["error"], "HTTP 500")
        self.assertEqual(lines[0]["cached_keys"], 2)
        self.assertEqual(lines[0]["url"], self.fake.jwks_url)
        # Back up: the next fetch (a retry, or one an unknown kid asks for) logs it once.
        self.fake.mode = "ok"
        deadline = time.time() + 60
        while "jwks: fetching the signing keys works again" not in self.server.read_log():
            self.assertLess(time.time(), deadline, self.server.read_log()[-3000:])
            self.server.get("/api/credits/balance", self.bearer(unknown))
            time.sleep(0.2)

    def test_oversized_jwks_is_refused_and_logged(self):
        s = Server({"SUPABASE_URL": self.fake.url, "SUPABASE_JWT_SECRET": SECRET})
        self.addCleanup(s.cleanup)
        self.fake.mode = "big"
        s.start()
        self.wait_log(s, "jwks: cannot fetch")
        self.assertIn("larger than 65536 bytes", s.read_log())
        r = s.get("/api/credits/balance", self.bearer(self.sign("es-1")))
        self.assertEqual(r.status, 401, r.body)


class Flood(Base):
    refetch_s = "2"

    def test_unknown_kid_flood_does_not_hammer_the_jwks(self):
        self.assertEqual(self.fake.jwks_requests, 1)
        tokens = [self.sign("es-stranger", header={"kid": f"flood-{i}"}) for i in range(3)]
        t0 = time.time()
        n = 0
        while time.time() - t0 < 5 or n < 150:
            r = self.server.get("/api/credits/balance", self.bearer(tokens[n % 3]))
            self.assertEqual(r.status, 401)
            n += 1
        elapsed = time.time() - t0
        # At most one fetch per 2 s of flooding (plus the one at start).
        self.assertLessEqual(self.fake.jwks_requests, 2 + int(elapsed / 2), (n, elapsed))
        self.assertGreaterEqual(self.fake.jwks_requests, 2)


class Config(unittest.TestCase):
    def test_bad_jwks_url_is_a_config_line(self):
        for url in ("ftp://example.com/jwks.json", "https://user:pw@example.com/jwks"):
            s = Server({"SUPABASE_JWKS_URL": url})
            self.addCleanup(s.cleanup)
            code, log = s.start_refused()
            self.assertNotEqual(code, 0)
            self.assertIn("config: SUPABASE_JWKS_URL:", log)
            self.assertNotIn("pw@", log.replace(url, ""))


if __name__ == "__main__":
    unittest.main()
