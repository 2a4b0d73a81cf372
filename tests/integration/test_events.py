"""GET /api/generations/{id}/events (Server-Sent Events) and
POST /api/generations/{id}/cancel, through the real binary: curl -N, a
plain HTTP client, and a real browser's EventSource (headless Chromium)."""
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fake_providers import FakeProviders
from harness import Server, new_user, wait_for

FAKE = None


def setUpModule():
    global FAKE
    FAKE = FakeProviders(mp4=b"")


def tearDownModule():
    FAKE.close()


def parse_sse(text):
    """[(id, event, data-json)] and the comment lines of an SSE body."""
    events, comments = [], []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        ev = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                comments.append(line)
            elif ": " in line:
                k, v = line.split(": ", 1)
                ev[k] = v
        if "event" in ev:
            events.append((int(ev["id"]), ev["event"], json.loads(ev["data"])))
    return events, comments


class Base(unittest.TestCase):
    env = {"LENSROOM_SSE_KEEPALIVE_S": "1"}

    def server_env(self):
        env = FAKE.env()
        env.update(self.env)
        return env

    def setUp(self):
        self.server = Server(self.server_env()).start()
        self.addCleanup(self.server.cleanup)
        self.user = new_user()
        self.server.grant(self.user, 100)
        self.token = self.server.token(self.user)
        self.cookie = {"Cookie": f"lr_session={self.token}"}

    def start(self, prompt, model="seedream_image"):
        r = self.server.infer(self.token, model=model, prompt=prompt,
                              headers={"Prefer": "respond-async"})
        self.assertEqual(r.status, 202, r.body)
        return r.json["generationId"]

    def stream(self, gid, headers=None, timeout=30, live=None):
        """Reads the whole event stream; sets the threading.Event live once
        the first event arrived (the stream is open on the server)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=timeout)
        h = dict(self.cookie)
        h.update(headers or {})
        conn.request("GET", f"/api/generations/{gid}/events", headers=h)
        r = conn.getresponse()
        lines = []
        for line in iter(r.readline, b""):
            lines.append(line)
            if live is not None and line.startswith(b"event:"):
                live.set()
        conn.close()
        return r, b"".join(lines).decode()


class Events(Base):
    def test_curl_sees_every_stage_in_order(self):
        gid = self.start("stages [delay_3]")
        out = subprocess.run(["curl", "-sN", "--max-time", "30", "-H", f"Cookie: lr_session={self.token}",
                              f"http://127.0.0.1:{self.server.port}/api/generations/{gid}/events"],
                             capture_output=True, text=True, timeout=40)
        events, comments = parse_sse(out.stdout)
        self.assertEqual([(i, e) for i, e, _ in events],
                         [(1, "pending"), (2, "submitted"), (3, "downloading"), (4, "storing"),
                          (5, "success"), (6, "preview_ready")], out.stdout)
        final = events[-2][2]
        self.assertEqual(final["status"], "success")
        self.assertEqual(final["generationId"], gid)
        self.assertTrue(final["url"].endswith(".png"))
        self.assertNotIn("userId", final)
        self.assertIn("retry: 2000", out.stdout)
        self.assertTrue(any("keep-alive" in c for c in comments), out.stdout)

    def test_headers_and_resume_with_last_event_id(self):
        gid = self.start("resume")
        r, body = self.stream(gid)
        self.assertEqual(r.status, 200)
        self.assertTrue(r.getheader("Content-Type").startswith("text/event-stream"))
        self.assertEqual(r.getheader("Cache-Control"), "no-store")
        r, body = self.stream(gid, {"Last-Event-ID": "3"})
        self.assertEqual([(i, e) for i, e, _ in parse_sse(body)[0]],
                         [(4, "storing"), (5, "success"), (6, "preview_ready")])
        r, body = self.stream(gid, {"Last-Event-ID": "5"})
        self.assertEqual([(i, e) for i, e, _ in parse_sse(body)[0]], [(6, "preview_ready")])
        r, body = self.stream(gid, {"Last-Event-ID": "6"})
        self.assertEqual(r.status, 204)  # EventSource stops reconnecting
        r, body = self.stream(gid, {"Last-Event-ID": "banana"})
        self.assertEqual(r.status, 400)
        self.assertEqual(json.loads(body)["code"], "invalid_last_event_id")

    def test_failed_generation_has_no_download_stages(self):
        gid = self.start("fails [poll_fail]")
        r, body = self.stream(gid)
        events = parse_sse(body)[0]
        self.assertEqual([(i, e) for i, e, _ in events], [(1, "pending"), (2, "submitted"), (5, "failed")])
        self.assertEqual(events[-1][2]["error"]["code"], "provider_failed")

    def test_late_client_gets_the_whole_story(self):
        gid = self.start("fails early [poll_fail]")
        deadline = time.time() + 10
        while time.time() < deadline:
            g = self.server.get(f"/api/generations/{gid}", headers=self.cookie).json["generation"]
            if g["status"] == "failed":
                break
            time.sleep(0.1)
        r, body = self.stream(gid)
        self.assertEqual([(i, e) for i, e, _ in parse_sse(body)[0]],
                         [(1, "pending"), (2, "submitted"), (5, "failed")])

    def test_mock_generation_has_no_download_stage(self):
        s = Server({"LENSROOM_MOCK_LATENCY_MS": "300"}).start()
        self.addCleanup(s.cleanup)
        u = new_user()
        s.grant(u, 8)
        tok = s.token(u)
        r = s.infer(tok, headers={"Prefer": "respond-async"})
        gid = r.json["generationId"]
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        conn.request("GET", f"/api/generations/{gid}/events",
                     headers={"Cookie": f"lr_session={tok}"})
        body = conn.getresponse().read().decode()
        self.assertEqual([(i, e) for i, e, _ in parse_sse(body)[0]],
                         [(1, "pending"), (2, "submitted"), (4, "storing"), (5, "success"),
                          (6, "preview_ready")])

    def test_text_generation(self):
        gid = self.start("hello", model="anthropic_text")
        r, body = self.stream(gid)
        events = parse_sse(body)[0]
        self.assertEqual(events[-1][1], "success")
        self.assertEqual(events[-1][2]["text"], "Echo: hello")

    def test_not_yours_or_unauthenticated(self):
        gid = self.start("private")
        other = new_user()
        r, body = self.stream(gid, {"Cookie": f"lr_session={self.server.token(other)}"})
        self.assertEqual(r.status, 404)
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        conn.request("GET", f"/api/generations/{gid}/events")
        self.assertEqual(conn.getresponse().status, 401)
        r, _ = self.stream("00000000-0000-4000-8000-000000000000")
        self.assertEqual(r.status, 404)

    def test_stream_from_another_process(self):
        """A second process on the same database follows a generation it
        does not run (by re-reading the row)."""
        other = Server(self.server_env(), data_dir=self.server.data_dir,
                       database=self.server.pg).start()
        self.addCleanup(other.stop)
        gid = self.start("elsewhere [delay_2]")
        conn = http.client.HTTPConnection("127.0.0.1", other.port, timeout=30)
        conn.request("GET", f"/api/generations/{gid}/events", headers=self.cookie)
        body = conn.getresponse().read().decode()
        events = parse_sse(body)[0]
        self.assertEqual(events[0][0], 1)
        self.assertEqual([e[:2] for e in events[-2:]], [(5, "success"), (6, "preview_ready")])
        self.assertEqual([i for i, _, _ in events], sorted(i for i, _, _ in events))


class Cancel(Base):
    def cancel(self, gid, token=None):
        return self.server.request("POST", f"/api/generations/{gid}/cancel",
                                   headers={"Cookie": f"lr_session={token or self.token}"})

    def test_cancel_refunds_once_and_ends_streams_and_waiters(self):
        prompt = f"held [hold] {time.time()}"
        FAKE.released.clear()
        self.addCleanup(FAKE.release)
        waiter = {}

        def wait_infer():
            waiter["r"] = self.server.infer(self.token, prompt=prompt, headers={"Prefer": "wait=30"})

        th = threading.Thread(target=wait_infer)
        th.start()
        deadline = time.time() + 30
        gid = None
        while time.time() < deadline and not gid:
            rows = self.server.get("/api/generations", headers=self.cookie).json["generations"]
            gid = rows[0]["id"] if rows and rows[0]["taskIds"] else None
            time.sleep(0.1)
        self.assertTrue(gid)
        self.assertEqual(self.server.balance(self.user), 92)

        got = {}
        live = threading.Event()
        t2 = threading.Thread(
            target=lambda: got.update(zip(("r", "body"), self.stream(gid, live=live))))
        t2.start()
        self.assertTrue(live.wait(30), "the event stream did not open")
        r = self.cancel(gid)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json["status"], "canceled")
        self.assertEqual(r.json["balance"], 100)
        th.join(10)
        t2.join(10)
        self.assertEqual(waiter["r"].status, 409, waiter["r"].body)
        self.assertEqual(waiter["r"].json["code"], "canceled")
        events = parse_sse(got["body"])[0]
        self.assertEqual(events[-1][:2], (5, "canceled"))

        again = self.cancel(gid)
        self.assertEqual(again.status, 409)
        self.assertEqual(again.json["code"], "generation_finished")
        self.assertEqual(again.json["generation"]["status"], "canceled")
        # Kie finishes the task later: nothing changes, nothing is stored.
        # The cancel ended the run (its task stopped polling Kie): once the
        # server tracks nothing, Kie's result can no longer reach it.
        self.assertTrue(wait_for(lambda: self.server.in_flight() == 0, 30))
        tid = rows[0]["taskIds"][0]
        FAKE.release()
        g = self.server.get(f"/api/generations/{gid}", headers=self.cookie).json["generation"]
        self.assertEqual(g["status"], "canceled")
        self.assertEqual(FAKE.requests_to(f"/files/{tid}"), [])
        self.assertEqual(self.server.balance(self.user), 100)
        refunds = [x for x in self.server.ledger(self.user) if x[1] == "refund"]
        self.assertEqual(len(refunds), 1)
        self.server.assert_ledger_consistent(self, self.user)

    def test_cancel_finished_other_or_bad_id(self):
        r = self.server.infer(self.token, prompt="quick")
        self.assertEqual(r.status, 200)
        gid = r.json["generationId"]
        done = self.cancel(gid)
        self.assertEqual(done.status, 409)
        self.assertEqual(done.json["generation"]["status"], "success")
        self.assertEqual(self.server.balance(self.user), 92)
        self.assertEqual(self.cancel(gid, token=self.server.token(new_user())).status, 404)
        self.assertEqual(self.cancel("not-a-uuid").status, 404)
        wrong = self.server.request("GET", f"/api/generations/{gid}/cancel", headers=self.cookie)
        self.assertEqual(wrong.status, 405)


PAGE = """<!doctype html><html><body><script>
// The server is another origin (another port): it allows this one by
// LENSROOM_CORS_ORIGINS, and the session cookie (host-only, 127.0.0.1) goes
// along because of withCredentials.
document.cookie = "lr_session=%(token)s; path=/";
const seen = [];
const es = new EventSource(%(url)s, {withCredentials: true});
function report(done) {
  fetch("/report", {method: "POST", body: JSON.stringify({seen: seen, done: done})});
}
for (const name of ["pending", "submitted", "downloading", "storing", "success", "failed", "canceled"]) {
  es.addEventListener(name, (e) => {
    const data = JSON.parse(e.data);
    seen.push({id: e.lastEventId, event: name, status: data.status, url: data.url || null});
    if (["success", "failed", "canceled"].includes(name)) { es.close(); report(true); }
  });
}
es.onerror = () => report(false);
</script></body></html>"""


class Browser(unittest.TestCase):
    """A real browser's EventSource, on another origin allowed by CORS and
    signed in with the session cookie, receives the whole sequence."""

    def test_eventsource_in_headless_chromium(self):
        self.assertTrue(shutil.which("chromium"), "chromium missing: scripts/deps.sh test installs it")
        reports = []
        page = {}

        class Page(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                body = page["html"]
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                reports.append(json.loads(self.rfile.read(n)))
                self.send_response(204)
                self.end_headers()

        site = ThreadingHTTPServer(("127.0.0.1", 0), Page)
        threading.Thread(target=site.serve_forever, daemon=True).start()
        self.addCleanup(site.server_close)
        self.addCleanup(site.shutdown)
        origin = f"http://127.0.0.1:{site.server_address[1]}"

        env = FAKE.env()
        env["LENSROOM_CORS_ORIGINS"] = origin
        server = Server(env).start()
        self.addCleanup(server.cleanup)
        user = new_user()
        server.grant(user, 50)
        token = server.token(user)
        r = server.infer(token, prompt="browser [delay_2]", headers={"Prefer": "respond-async"})
        self.assertEqual(r.status, 202, r.body)
        gid = r.json["generationId"]
        url = f"http://127.0.0.1:{server.port}/api/generations/{gid}/events"
        page["html"] = (PAGE % {"url": json.dumps(url), "token": token}).encode()

        profile = tempfile.mkdtemp(prefix="lensroom-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        browser = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={profile}",
             f"{origin}/page.html"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 60
            while time.time() < deadline and not any(x["done"] for x in reports):
                time.sleep(0.2)
        finally:
            browser.kill()
            browser.wait()
        done = [x for x in reports if x["done"]]
        self.assertTrue(done, (reports, server.read_log()[-2000:]))
        seen = done[0]["seen"]
        self.assertEqual([(x["id"], x["event"]) for x in seen],
                         [("1", "pending"), ("2", "submitted"), ("3", "downloading"),
                          ("4", "storing"), ("5", "success")], seen)
        self.assertTrue(seen[-1]["url"].endswith(".png"))


class Cors(unittest.TestCase):
    ORIGIN = "https://app.example.com"

    def test_allowed_origin_preflight_and_answers(self):
        s = Server({"LENSROOM_CORS_ORIGINS": f"{self.ORIGIN}, http://localhost:5173"}).start()
        self.addCleanup(s.cleanup)
        pre = s.request("OPTIONS", "/api/infer", headers={
            "Origin": self.ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, idempotency-key"})
        self.assertEqual(pre.status, 204)
        self.assertEqual(pre.header("Access-Control-Allow-Origin"), self.ORIGIN)
        self.assertEqual(pre.header("Access-Control-Allow-Credentials"), "true")
        self.assertIn("POST", pre.header("Access-Control-Allow-Methods"))
        self.assertIn("idempotency-key", pre.header("Access-Control-Allow-Headers").lower())
        r = s.get("/api/models", headers={"Origin": "http://localhost:5173"})
        self.assertEqual(r.header("Access-Control-Allow-Origin"), "http://localhost:5173")
        self.assertEqual(r.header("Vary"), "Origin")
        self.assertIn("Location", r.header("Access-Control-Expose-Headers"))
        # not on the list: no CORS headers, preflight refused
        evil = s.get("/api/models", headers={"Origin": "https://evil.example"})
        self.assertIsNone(evil.header("Access-Control-Allow-Origin"))
        pre = s.request("OPTIONS", "/api/infer", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        self.assertEqual(pre.status, 403)
        self.assertEqual(pre.json["code"], "origin_not_allowed")
        self.assertIsNone(pre.header("Access-Control-Allow-Origin"))

    def test_off_by_default_and_validated(self):
        s = Server().start()
        self.addCleanup(s.cleanup)
        r = s.get("/api/models", headers={"Origin": self.ORIGIN})
        self.assertIsNone(r.header("Access-Control-Allow-Origin"))
        bad = Server({"LENSROOM_CORS_ORIGINS": "*"})
        self.addCleanup(bad.cleanup)
        code, log = bad.start_refused()
        self.assertNotEqual(code, 0)
        self.assertIn("config: LENSROOM_CORS_ORIGINS:", log)


if __name__ == "__main__":
    unittest.main()
