"""The admin dashboard at /admin through the real binary and Debian's
headless Chromium, driven over the DevTools protocol on a pipe
(--remote-debugging-pipe: no websocket library needed): sign in with a
`lensroom admin-link` URL, search a user, grant 50 credits with a reason
by typing and clicking, see the balance and the ledger row change (and
the database agree), open a failed generation and see its refund, load
the analytics page and check its table and its SVG chart against the
database. Over plain HTTP: a non-admin session gets 403 on every admin
page and API, a POST without the CSRF token is refused 403, a link works
once. Screenshots of each page at 1280x800 and 390x844 are written under
the build directory (admin-screenshots/)."""
import base64
import datetime
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

from harness import BIN, ServerTest, new_user, wait_for

SHOTS = os.path.join(os.path.dirname(os.path.abspath(BIN)), "admin-screenshots")


class Chromium:
    """Headless Chromium with one page, spoken to over the DevTools pipe
    (fd 3: commands in, fd 4: answers and events out, NUL-separated)."""

    def __init__(self, width, height):
        self.profile = tempfile.mkdtemp(prefix="lensroom-chromium-")
        cmd_r, self.cmd_w = os.pipe()
        self.out_r, out_w = os.pipe()

        def fds():
            os.dup2(cmd_r, 3)
            os.dup2(out_w, 4)

        self.proc = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--remote-debugging-pipe",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "about:blank"],
            preexec_fn=fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(out_w)
        self.buf = b""
        self.next_id = 0
        self.session = None
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1,
                   "mobile": width < 500})

    def call(self, method, params=None, timeout=60):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while time.time() < deadline:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                m = json.loads(raw)
                if m.get("id") == self.next_id:
                    if "error" in m:
                        raise AssertionError(f"{method}: {m['error']}")
                    return m.get("result", {})
            chunk = os.read(self.out_r, 1 << 16)
            if not chunk:
                raise AssertionError("chromium went away")
            self.buf += chunk
        raise AssertionError(f"{method}: no answer")

    def eval(self, expr):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                           "awaitPromise": True})
        if "exceptionDetails" in r:
            raise AssertionError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def goto(self, url):
        self.call("Page.navigate", {"url": url})

    def wait(self, expr, timeout=60):
        ok = wait_for(lambda: self.eval(expr), timeout, 0.1)
        if not ok:
            raise AssertionError(f"never true: {expr}\n{self.eval('document.body && document.body.innerText')}")

    def wait_ready(self, hash_prefix):
        self.wait(f"(document.body && document.body.dataset.ready || '').startsWith({json.dumps(hash_prefix)})")

    def click(self, selector):
        """A real mouse click at the element's centre."""
        box = self.eval(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1],
                                                   "button": "left", "clickCount": 1})

    def type(self, selector, text):
        self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", {"text": text})

    def key(self, key, code, vk, text=None):
        down = {"type": "keyDown", "key": key, "code": code, "windowsVirtualKeyCode": vk}
        if text:
            down["text"] = text
        self.call("Input.dispatchKeyEvent", down)
        self.call("Input.dispatchKeyEvent", {"type": "keyUp", "key": key, "code": code,
                                             "windowsVirtualKeyCode": vk})

    def screenshot(self, name):
        os.makedirs(SHOTS, exist_ok=True)
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path = os.path.join(SHOTS, name + ".png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def close(self):
        self.proc.kill()
        self.proc.wait()
        os.close(self.cmd_w)
        os.close(self.out_r)
        shutil.rmtree(self.profile, True)


ADMIN = new_user()


class AdminDashboard(ServerTest):
    server_env = {"LENSROOM_MOCK_FAIL_RATE": "0.5", "LENSROOM_ADMINS": ADMIN}

    def setUp(self):
        super().setUp()
        self.assertTrue(shutil.which("chromium"), "chromium missing: scripts/deps.sh test installs it")
        self.base = f"http://localhost:{self.server.port}"

    def link(self):
        url = self.server.cli("admin-link").stdout.strip()
        self.assertTrue(url.startswith(self.base + "/admin/login?token="), url)
        return url

    def load(self):
        """A user with at least one succeeded and one failed generation."""
        user = new_user()
        self.server.grant(user, 200)
        token = self.server.token(user)
        statuses = set()
        for i in range(40):
            r = self.server.infer(token, prompt=f"dashboard {i}")
            statuses.add("success" if r.status == 200 else "failed")
            if statuses == {"success", "failed"}:
                break
        self.assertEqual(statuses, {"success", "failed"})
        return user

    def cookie_of(self, url):
        r = self.server.get(url[len(self.base):])
        self.assertEqual(r.status, 303, r.body)
        return r.header("set-cookie").split(";")[0]

    def test_admin_session_drives_every_page(self):
        user = self.load()
        with self.server.db() as c:
            failed = c.execute("SELECT id FROM generations WHERE user_id = ? AND status = 'failed' "
                               "ORDER BY created_at LIMIT 1", (user,)).fetchone()[0]
        failed = str(failed)
        for width, height in ((1280, 800), (390, 844)):
            with self.subTest(size=f"{width}x{height}"):
                self.drive(user, failed, width, height)

    def drive(self, user, failed, width, height):
        b = Chromium(width, height)
        self.addCleanup(b.close)
        tag = f"{width}x{height}"
        # Sign in: the link sets the HttpOnly cookie and lands on /admin.
        b.goto(self.link())
        b.wait_ready("#/users")
        self.assertEqual(b.eval("location.pathname"), "/admin")
        self.assertEqual(b.eval("document.cookie"), "", "the session cookie must be HttpOnly")
        b.screenshot(f"users-{tag}")

        # Find the user by the start of its id, typed and submitted.
        b.type("#q", user[:8])
        b.key("Enter", "Enter", 13, "\r")
        b.wait_ready("#/users?q=")
        self.assertEqual(b.eval("[...document.querySelectorAll('#users tbody tr')].map(r => r.dataset.user)")
                         .count(user), 1)
        b.click(f"#users tr[data-user='{user}'] a")
        b.wait_ready(f"#/user/{user}")
        before = self.server.balance(user)
        self.assertEqual(int(b.eval("document.getElementById('balance').dataset.value")), before)
        self.assertTrue(b.eval("document.querySelectorAll('#user-generations img').length") >= 1)
        b.screenshot(f"user-{tag}")

        # Grant 50 with a reason; a second click on the same form grants once.
        reason = f"goodwill {tag}"
        b.type("#amount", "50")
        b.type("#reason", reason)
        key = b.eval("document.getElementById('grant').dataset.key")
        b.click("#grant-submit")
        b.wait("(document.getElementById('grant-result') || {}).textContent?.startsWith('Applied')")
        b.wait(f"document.getElementById('balance').dataset.value == '{before + 50}'")
        self.assertEqual(self.server.balance(user), before + 50)
        self.assertEqual(b.eval("document.querySelector('#ledger tbody tr').dataset.amount"), "50")
        with self.server.db() as c:
            rows = c.execute("SELECT amount, type, description FROM credit_transactions "
                             "WHERE user_id = ? AND description = ?", (user, reason)).fetchall()
            audit = c.execute(f"SELECT actor, action, subject, request_id FROM "
                              f"{'lensroom.' if self.server.pg else ''}admin_audit "
                              f"WHERE action = 'credits.grant' AND subject = ?", (user,)).fetchall()
        self.assertEqual([(r[0], r[1]) for r in rows], [(50, "bonus")])
        self.assertTrue(any(a[0] != "cli" and a[3] for a in audit), audit)
        # The same key again (what a double click sends) changes nothing.
        again = b.eval(f"""fetch('/api/admin/users/{user}/credits', {{method: 'POST',
            headers: {{'Content-Type': 'application/json', 'X-CSRF-Token': session.csrfToken}},
            body: JSON.stringify({{amount: 50, reason: {json.dumps(reason)}, idempotencyKey: {json.dumps(key)}}})}})
            .then(r => r.json())""")
        self.assertTrue(again["replayed"], again)
        self.assertEqual(self.server.balance(user), before + 50)
        b.screenshot(f"user-granted-{tag}")

        # Generations: filter failed ones, open one, see the error and its refund.
        b.click("a[data-nav='generations']")
        b.wait_ready("#/generations")
        b.eval("document.getElementById('f-status').value = 'failed'")
        b.type("#f-user", user)
        b.click("#gen-filters button")
        b.wait_ready("#/generations?")
        statuses = b.eval("[...document.querySelectorAll('#generations tbody tr')].map(r => r.dataset.status)")
        self.assertTrue(statuses and set(statuses) == {"failed"}, statuses)
        b.screenshot(f"generations-{tag}")
        b.click(f"#generations tr[data-id='{failed}'] a")
        b.wait_ready(f"#/generation/{failed}")
        self.assertEqual(b.eval("document.getElementById('gen-status').textContent"), "failed")
        with self.server.db() as c:
            code, refund = c.execute(
                "SELECT g.error_code, (SELECT sum(amount) FROM credit_transactions t WHERE "
                "t.generation_id = g.id AND t.type = 'refund') FROM generations g WHERE g.id = ?",
                (failed,)).fetchone()
        self.assertEqual(b.eval("document.getElementById('gen-error-code').textContent"), code)
        self.assertEqual(int(b.eval("document.getElementById('gen-refund').dataset.value")), refund)
        self.assertGreater(refund, 0)
        self.assertEqual(b.eval("[...document.querySelectorAll('#gen-ledger tbody tr')].map(r => r.dataset.type).sort()"),
                         ["generation", "refund"])
        b.screenshot(f"generation-failed-{tag}")

        # Analytics: the table and the chart's bars agree with the database.
        b.click("a[data-nav='analytics']")
        b.wait_ready("#/analytics")
        b.wait("document.getElementById('chart-credits').complete && "
               "document.getElementById('chart-credits').naturalWidth > 0")
        with self.server.db() as c:
            want = {}
            for day, typ, amount in c.execute("SELECT created_at, type, amount FROM credit_transactions"):
                d = (day.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d")
                     if hasattr(day, "strftime") else day[:10])
                w = want.setdefault(d, {"spent": 0, "refunded": 0})
                if typ == "generation":
                    w["spent"] -= amount
                elif typ == "refund":
                    w["refunded"] += amount
        shown = b.eval("""Object.fromEntries([...document.querySelectorAll('#credits-table tbody tr')]
            .map(r => [r.dataset.day, [...r.cells].slice(1).map(c => Number(c.textContent.replace(/,/g, '')))]))""")
        for d, w in want.items():
            self.assertEqual(shown[d][0], w["spent"], (d, shown))
            self.assertEqual(shown[d][2], w["refunded"], (d, shown))
        svg = self.server.get("/api/admin/analytics/chart.svg?kind=credits",
                              {"Cookie": self.admin_cookie}).body.decode()
        for d, w in want.items():
            self.assertIn(f'data-label="{d}" data-series="spent" data-value="{w["spent"]}"', svg)
        b.screenshot(f"analytics-{tag}")

        # Keyboard: from the skip link, Tab reaches the nav links, which show
        # a focus ring, and Enter follows one.
        b.eval("document.querySelector('.skip').focus()")
        seen = []
        for _ in range(3):
            b.key("Tab", "Tab", 9)
            seen.append(b.eval("document.activeElement.dataset.nav || ''"))
        self.assertEqual(seen, ["users", "generations", "analytics"])
        self.assertEqual(b.eval("getComputedStyle(document.activeElement).outlineStyle"), "solid")
        b.eval("document.querySelector('[data-nav=users]').focus()")
        b.key("Enter", "Enter", 13, "\r")
        b.wait_ready("#/users")
        # Nothing wider than the screen at 390 px (tables scroll inside their frame).
        self.assertLessEqual(b.eval("document.documentElement.scrollWidth"), width + 1)

    @property
    def admin_cookie(self):
        if not hasattr(self, "_admin_cookie"):
            self._admin_cookie = self.cookie_of(self.link())
        return self._admin_cookie

    def test_non_admin_gets_403_everywhere_and_no_session_401(self):
        user = new_user()
        self.server.grant(user, 10)
        plain = {"Cookie": f"lr_session={self.server.token(user)}"}
        gid = new_user()
        gets = ["/admin", "/admin/admin.js", "/admin/admin.css", "/api/admin/session",
                "/api/admin/users", f"/api/admin/users/{user}", f"/api/admin/users/{user}/ledger",
                "/api/admin/generations", f"/api/admin/generations/{gid}",
                "/api/admin/analytics", "/api/admin/analytics/chart.svg?kind=credits"]
        for path in gets:
            r = self.server.get(path, plain)
            self.assertEqual(r.status, 403, (path, r.body))
            self.assertEqual(r.json["code"], "forbidden")
            self.assertEqual(self.server.get(path).status, 401, path)
        r = self.server.request("POST", f"/api/admin/users/{user}/credits", plain and {
            "amount": 5, "reason": "x", "idempotencyKey": "k"}, headers=plain)
        self.assertEqual(r.status, 403, r.body)
        self.assertEqual(self.server.balance(user), 10)

    def test_cross_site_post_without_csrf_token_is_refused(self):
        user = new_user()
        self.server.grant(user, 10)
        cookie = {"Cookie": self.admin_cookie}
        body = {"amount": 1000, "reason": "csrf", "idempotencyKey": "csrf-1"}
        for headers in ({"Origin": "http://evil.example"}, {"X-CSRF-Token": "0" * 64},
                        {"X-CSRF-Token": ""}):
            r = self.server.request("POST", f"/api/admin/users/{user}/credits", body,
                                    headers={**cookie, **headers})
            self.assertEqual(r.status, 403, r.body)
            self.assertEqual(r.json, {"success": False, "code": "csrf_failed",
                                      "error": r.json["error"]})
        # A plain HTML form post (what another site can send) too.
        r = self.server.request("POST", f"/api/admin/users/{user}/credits",
                                raw=b"amount=1000&reason=x&idempotencyKey=y",
                                headers={**cookie, "Content-Type": "application/x-www-form-urlencoded",
                                         "Origin": "http://evil.example"})
        self.assertEqual(r.status, 403, r.body)
        self.assertEqual(self.server.balance(user), 10)
        # With the token from /api/admin/session it goes through; a bad body is 422.
        csrf = self.server.get("/api/admin/session", cookie).json["csrfToken"]
        ok = {**cookie, "X-CSRF-Token": csrf}
        r = self.server.request("POST", f"/api/admin/users/{user}/credits",
                                {"amount": 5, "idempotencyKey": "n"}, headers=ok)
        self.assertEqual((r.status, r.json["code"], r.json["field"]), (422, "invalid_parameter", "reason"))
        r = self.server.request("POST", f"/api/admin/users/{user}/credits",
                                {"amount": -50, "reason": "too much", "idempotencyKey": "t"}, headers=ok)
        self.assertEqual((r.status, r.json["code"], r.json["balance"]), (402, "insufficient_credits", 10))
        r = self.server.request("POST", f"/api/admin/users/{user}/credits",
                                {"amount": -4, "reason": "chargeback", "idempotencyKey": "t2"}, headers=ok)
        self.assertEqual((r.status, r.json["balance"]), (200, 6), r.body)
        self.assertEqual(self.server.balance(user), 6)

    def test_link_is_single_use_and_pages_carry_a_strict_policy(self):
        url = self.link()
        first = self.server.get(url[len(self.base):])
        self.assertEqual(first.status, 303)
        cookie = first.header("set-cookie")
        for part in ("HttpOnly", "SameSite=Lax", "Path=/"):
            self.assertIn(part, cookie)
        again = self.server.get(url[len(self.base):])
        self.assertEqual((again.status, again.json["code"]), (401, "invalid_token"))
        self.assertEqual(self.server.get("/admin/login?token=" + "ab" * 32).status, 401)
        self.assertEqual(self.server.get("/admin/login").status, 401)
        with self.server.db() as c:
            stored = [r[0] for r in c.execute(
                f"SELECT token_hash FROM {'lensroom.' if self.server.pg else ''}admin_links")]
        token = url.split("token=")[1]
        self.assertNotIn(token, stored)
        page = self.server.get("/admin", {"Cookie": cookie.split(";")[0]})
        self.assertEqual(page.status, 200)
        csp = page.header("content-security-policy")
        self.assertIn("script-src 'self'", csp)
        self.assertIn("default-src 'none'", csp)
        self.assertNotIn("unsafe", csp)
        self.assertTrue(page.header("content-type").startswith("text/html"))
        js = self.server.get("/admin/admin.js", {"Cookie": cookie.split(";")[0]})
        self.assertTrue(js.header("content-type").startswith("text/javascript"))
        self.assertEqual(self.server.get("/admin/../admin", {"Cookie": cookie.split(";")[0]}).status, 404)
        self.assertEqual(self.server.get("/admin/nope", {"Cookie": cookie.split(";")[0]}).status, 404)
        # Search: a query that is no id prefix searches emails; one longer
        # than an email can be is 400.
        users = self.server.get("/api/admin/users?q=zz", {"Cookie": cookie.split(";")[0]})
        self.assertEqual((users.status, users.json["users"]), (200, []))
        users = self.server.get("/api/admin/users?q=" + "z" * 300, {"Cookie": cookie.split(";")[0]})
        self.assertEqual((users.status, users.json["code"]), (400, "invalid_parameter"))


if __name__ == "__main__":
    unittest.main()
