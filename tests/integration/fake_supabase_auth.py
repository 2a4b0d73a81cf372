"""A stand-in for the two Supabase Auth endpoints the tests need (facts in
shared/reference/supabase.md):

- GET /auth/v1/.well-known/jwks.json: the project's public signing keys,
  served with a Cache-Control header (Supabase sends max-age=600);
- GET /auth/v1/user: the user of a Bearer access token, which supabase-js
  calls from auth.setSession (so @supabase/ssr can write its cookie).

Knobs: keys (public JWKs served), cache_control, mode ("ok", "500": answer
500, "close": drop the connection without an answer, "big": a JWKS larger
than the server accepts), and jwks_requests, a counter of JWKS fetches
(wait_jwks_requests waits for it to reach a value).

usage (in-process): FakeAuth().start(); fake.url is the SUPABASE_URL.
"""
import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import free_port

JWKS_PATH = "/auth/v1/.well-known/jwks.json"


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the server under test cuts off oversized answers on purpose


class FakeAuth:
    def __init__(self, keys=None, cache_control="public, max-age=600"):
        self.keys = list(keys or [])
        self.cache_control = cache_control
        self.mode = "ok"
        self.jwks_requests = 0
        self.port = free_port()
        self.cond = threading.Condition()
        self.httpd = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_url(self):
        return self.url + JWKS_PATH

    def wait_jwks_requests(self, n, timeout=30):
        """Waits until at least n JWKS fetches arrived; returns the count."""
        deadline = time.time() + timeout
        with self.cond:
            while self.jwks_requests < n:
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError(f"JWKS fetched {self.jwks_requests} times, expected {n}")
                self.cond.wait(left)
            return self.jwks_requests

    def start(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, status, body, headers=None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def jwks(self):
                with fake.cond:
                    fake.jwks_requests += 1
                    fake.cond.notify_all()
                    mode, keys, cc = fake.mode, list(fake.keys), fake.cache_control
                if mode == "close":  # the client sees an empty reply
                    self.close_connection = True
                    return
                if mode == "500":
                    return self.reply(500, {"message": "internal error"})
                if mode == "big":
                    keys = keys + [{"kty": "oct", "kid": f"pad-{i}", "k": "A" * 1000}
                                   for i in range(100)]
                headers = {"Cache-Control": cc} if cc else {}
                return self.reply(200, {"keys": keys}, headers)

            def user(self):
                auth = self.headers.get("Authorization", "")
                try:
                    payload = auth.split(" ", 1)[1].split(".")[1]
                    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                except (IndexError, ValueError):
                    return self.reply(401, {"code": 401, "msg": "invalid JWT"})
                return self.reply(200, {"id": claims["sub"], "aud": "authenticated",
                                        "role": "authenticated", "email": claims.get("email"),
                                        "app_metadata": {"provider": "email"},
                                        "user_metadata": {}, "created_at": "2026-01-01T00:00:00Z"})

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == JWKS_PATH:
                    return self.jwks()
                if path == "/auth/v1/user":
                    return self.user()
                return self.reply(404, {"message": "not found"})

        self.httpd = QuietServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
