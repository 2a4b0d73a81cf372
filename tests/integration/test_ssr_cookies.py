"""Sessions exactly as the real @supabase/ssr (npm, 0.12) writes them: the
cookie bytes come from the library through tests/node/ssr_cookies.js (a
createServerClient whose setAll captures the cookies of auth.setSession,
serialized by the `cookie` package as frameworks do). Both encodings, three
chunks, non-ASCII user_metadata, many unrelated cookies, and a stale cookie
of another project listed first: each request gets 200 as the right user."""
import json
import os
import subprocess
import time
import unittest
import urllib.parse

from harness import BIN, ServerTest, new_user

NODE_DIR = os.path.join(os.path.dirname(__file__), "../node")
SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
OTHER_SECRET = "another-projects-jwt-secret-also-32-characters-long!"
PROJECT = "https://lensroomtestref01.supabase.co"  # cookies sb-lensroomtestref01-auth-token
OLD_PROJECT = "https://oldprojectref0001.supabase.co"
PUBLISHABLE = "sb_publishable_Lm4TestOnlyNotARealKey0123"
# What a header may hold before this branch's 32 KiB connection memory
# answers 431 (about 16.3 KB): the chunked sessions here stay below it.
SMALL_HEADER = 16000


def ssr_cookies(url, *sessions):
    """Runs @supabase/ssr once per session; returns its cookies per session."""
    r = subprocess.run(["node", "ssr_cookies.js"], cwd=NODE_DIR, capture_output=True, text=True,
                       input=json.dumps({"url": url, "key": PUBLISHABLE,
                                         "sessions": list(sessions)}), timeout=120)
    if r.returncode != 0:
        raise AssertionError("ssr_cookies.js failed:\n" + r.stderr[-4000:])
    return json.loads(r.stdout)


def uri_len(text):
    """Length of encodeURIComponent(text), which @supabase/ssr chunks at 3180."""
    return len(urllib.parse.quote(text, safe="-_.!~*'()"))


def user_json(user, encoded_target, encoding):
    """A user whose metadata is non-ASCII and about encoded_target characters
    once encoded as the library will (the session adds ~1 KB around it)."""
    unit = "Zoë Ångström — Привет, 東京の写真 🌸 "
    meta = {"full_name": "Zoë Ångström 東京", "avatar_url": "https://example.com/a.png",
            "bio": "", "preferences": {"language": "uk-UA", "theme": "dark"}}
    body = {"id": user, "aud": "authenticated", "role": "authenticated",
            "email": "zoe@example.com", "app_metadata": {"provider": "email"},
            "user_metadata": meta, "created_at": "2026-11-01T10:00:00Z"}

    def size():
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        return uri_len(text) if encoding == "raw" else len(text.encode()) * 4 // 3

    while size() < encoded_target:
        meta["bio"] += unit
    return body


def cookie_header(*cookie_lists):
    return "; ".join(f"{c['name']}={c['value']}" for cl in cookie_lists for c in cl)


class SsrCookies(ServerTest):
    server_env = {"SUPABASE_JWT_SECRET": SECRET}

    def session(self, user, encoding, encoded_target, token=None, **extra):
        s = {"access_token": token or self.server.token(user), "refresh_token": "r-" + user[:8],
             "user": user_json(user, encoded_target, encoding), "encoding": encoding}
        s.update(extra)
        return s

    def assert_user(self, header, user):
        r = self.server.get("/api/credits/balance", headers={"Cookie": header})
        self.assertEqual(r.status, 200, (len(header), r.body))
        self.assertEqual((r.json["userId"], r.json["balance"]), (user, 7))

    def new_user(self):
        user = new_user()
        self.server.grant(user, 7)
        return user

    def test_three_chunks_in_both_encodings_with_non_ascii_metadata(self):
        users = {enc: self.new_user() for enc in ("base64url", "raw")}
        out = ssr_cookies(PROJECT, *(self.session(u, enc, 7000) for enc, u in users.items()))
        for (enc, user), got in zip(users.items(), out):
            names = [c["name"] for c in got["cookies"]]
            self.assertEqual(names, [f"sb-lensroomtestref01-auth-token.{i}" for i in range(3)],
                             enc)
            header = cookie_header(got["cookies"])
            self.assertLess(len(header), SMALL_HEADER)
            if enc == "raw":  # URI-encoded JSON, UTF-8 escapes split only between characters
                self.assertTrue(got["cookies"][0]["value"].startswith("%7B%22access_token%22"))
                self.assertIn("%C3%AB", header)
            else:
                self.assertTrue(got["cookies"][0]["value"].startswith("base64-"))
            self.assert_user(header, user)
            # the chunks in another order in the header are the same session
            self.assert_user(cookie_header(got["cookies"][::-1]), user)
            # without its last chunk the session does not decode: no user
            r = self.server.get("/api/credits/balance",
                                headers={"Cookie": cookie_header(got["cookies"][:2])})
            self.assertEqual(r.status, 401, r.body)

    def test_eighty_unrelated_cookies_before_the_last_chunk(self):
        user = self.new_user()
        [got] = ssr_cookies(PROJECT, self.session(user, "base64url", 7000))
        chunks = got["cookies"]
        self.assertEqual(len(chunks), 3)
        unrelated = [{"name": f"_ga_{i:02d}", "value": f"GS1.1.17{i:08d}.1.0"}
                     for i in range(80)]
        header = cookie_header(chunks[:2], unrelated[:40], [{"name": "theme", "value": "dark"}],
                               unrelated[40:], chunks[2:])
        self.assertLess(len(header), SMALL_HEADER)
        self.assertGreater(header.count(";"), 80)
        self.assert_user(header, user)

    def test_stale_cookie_of_another_project_listed_first(self):
        user = self.new_user()
        stale_user = self.new_user()
        foreign = subprocess.run([BIN, "token", stale_user], capture_output=True, text=True,
                                 env=dict(self.server.env, SUPABASE_JWT_SECRET=OTHER_SECRET),
                                 check=True).stdout.strip()
        now = int(time.time())
        expired = {"mint": {"secret": SECRET, "claims": {
            "sub": stale_user, "aud": "authenticated", "role": "authenticated",
            "iat": now - 7200, "exp": now - 3600}}, "now_s": now - 3700}
        stale = ssr_cookies(OLD_PROJECT,
                            self.session(stale_user, "base64url", 500, token=foreign),
                            self.session(stale_user, "raw", 500, **expired))
        [good] = ssr_cookies(PROJECT, self.session(user, "base64url", 7000))
        for s, why in zip(stale, ("signed with another project's secret", "expired")):
            self.assertEqual([c["name"] for c in s["cookies"]],
                             ["sb-oldprojectref0001-auth-token"])
            alone = self.server.get("/api/credits/balance",
                                    headers={"Cookie": cookie_header(s["cookies"])})
            self.assertEqual(alone.status, 401, (why, alone.body))
            self.assert_user(cookie_header(s["cookies"], good["cookies"]), user)
        # both stale projects first, and a forwarded API key as Bearer
        r = self.server.get("/api/credits/balance", headers={
            "Cookie": cookie_header(stale[0]["cookies"], stale[1]["cookies"], good["cookies"]),
            "Authorization": "Bearer " + PUBLISHABLE})
        self.assertEqual((r.status, r.json.get("userId")), (200, user), r.body)

    # A ~37 KB Cookie header: above the old 32 KiB connection memory (431),
    # within the 64 KiB request header limit.
    def test_37_kb_raw_session_after_the_64_kib_header_limit(self):
        user = self.new_user()
        [got] = ssr_cookies(PROJECT, self.session(user, "raw", 36000))
        header = cookie_header(got["cookies"])
        self.assertGreaterEqual(len(got["cookies"]), 11)
        self.assertGreater(len(header), 36000)
        self.assert_user(header, user)


if __name__ == "__main__":
    unittest.main()
