"""Buying credits through Stripe and outgoing webhooks, through the real
binary: Stripe-Signature headers made by the real `stripe` npm library,
deliveries checked by the real `standardwebhooks` library, a loopback fake
of Stripe's API that checks the form-encoded Checkout request, and a
loopback receiver. On PostgreSQL, duplicate deliveries go to two server
processes sharing one database."""
import json
import os
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import BACKEND, BIN, Server, free_port, new_user, wait_for

TOOL = os.path.join(os.path.dirname(__file__), "../node/webhook_tool.mjs")
STRIPE_SECRET = "whsec_test_" + uuid.uuid4().hex
ADMIN_KEY = "sb_secret_" + uuid.uuid4().hex
PACKS = [{"id": "starter", "name": "Starter", "credits": 100, "price": 500, "currency": "usd",
          "stripePriceId": "price_starter"},
         {"id": "pro", "credits": 1000, "price": 4000, "currency": "usd",
          "stripePriceId": "price_pro"}]


def node(jobs):
    r = subprocess.run(["node", TOOL], input=json.dumps(jobs), capture_output=True, text=True,
                       timeout=120, cwd=os.path.dirname(TOOL))
    if r.returncode != 0:
        raise AssertionError("webhook_tool failed: " + r.stderr)
    return json.loads(r.stdout)


def stripe_header(payload, secret=STRIPE_SECRET, timestamp=None):
    job = {"op": "stripe_sign", "payload": payload, "secret": secret}
    if timestamp is not None:
        job["timestamp"] = timestamp
    return node([job])[0]


def session_event(user, session="cs_test_" + "a" * 10, event_id=None, pack="starter",
                  kind="checkout.session.completed", paid=True, intent="pi_test_1"):
    return json.dumps({
        "id": event_id or "evt_" + uuid.uuid4().hex, "object": "event", "type": kind,
        "data": {"object": {
            "id": session, "object": "checkout.session", "mode": "payment",
            "payment_status": "paid" if paid else "unpaid", "client_reference_id": user,
            "amount_total": 500, "currency": "usd", "payment_intent": intent,
            "metadata": {"user_id": user, "pack_id": pack, "credits": "100"}}}})


class Recorder(BaseHTTPRequestHandler):
    """A webhook receiver: records every POST; answers 500 to the first
    `fail` requests, then 200."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        srv = self.server
        with srv.lock:
            srv.seen.append({"headers": {k.lower(): v for k, v in self.headers.items()},
                             "body": body.decode()})
            failing = srv.fail > 0
            if failing:
                srv.fail -= 1
        self.send_response(500 if failing else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


class Receiver:
    def __init__(self, port=None, fail=0):
        self.port = port or free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Recorder)
        self.httpd.seen, self.httpd.fail, self.httpd.lock = [], fail, threading.Lock()
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def seen(self):
        with self.httpd.lock:
            return list(self.httpd.seen)

    def events(self, type_=None):
        out = [json.loads(s["body"]) for s in self.seen]
        return [e for e in out if type_ is None or e["type"] == type_]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeStripe(BaseHTTPRequestHandler):
    """POST /v1/checkout/sessions as Stripe documents it: Bearer key,
    form-encoded body, Idempotency-Key."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self.server.requests.append({"path": self.path, "headers": dict(self.headers),
                                     "form": urllib.parse.parse_qs(body, strict_parsing=True)})
        ok = (self.path == "/v1/checkout/sessions"
              and self.headers.get("Authorization") == "Bearer sk_test_fake"
              and self.headers.get("Content-Type") == "application/x-www-form-urlencoded")
        out = ({"id": "cs_test_fake1", "object": "checkout.session",
                "url": "https://checkout.stripe.com/c/pay/cs_test_fake1"} if ok
               else {"error": {"message": "Invalid API Key provided", "type": "invalid_request_error"}})
        data = json.dumps(out).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def billing_env(tmp, extra=None):
    path = os.path.join(tmp, "packs.json")
    with open(path, "w") as f:
        json.dump(PACKS, f)
    env = {"LENSROOM_CREDIT_PACKS": path, "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
           "SUPABASE_SECRET_KEY": ADMIN_KEY}
    env.update(extra or {})
    return env


class BillingTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="lensroom-billing-")
        self.addCleanup(self.tmp.cleanup)
        self.stripe = ThreadingHTTPServer(("127.0.0.1", 0), FakeStripe)
        self.stripe.requests = []
        threading.Thread(target=self.stripe.serve_forever, daemon=True).start()
        self.addCleanup(self.stripe.server_close)
        self.addCleanup(self.stripe.shutdown)
        self.server = Server(billing_env(self.tmp.name, {
            "STRIPE_SECRET_KEY": "sk_test_fake",
            "STRIPE_API_BASE": f"http://127.0.0.1:{self.stripe.server_address[1]}"})).start()
        self.addCleanup(self.server.cleanup)

    def post_event(self, payload, header=None, server=None):
        return (server or self.server).request(
            "POST", "/api/webhooks/stripe", raw=payload.encode(),
            headers={"Stripe-Signature": header if header is not None else stripe_header(payload),
                     "Content-Type": "application/json"})

    def purchases(self, user):
        return [r for r in self.server.ledger(user) if r[1] == "purchase"]

    def test_checkout_creates_a_session_through_stripes_api(self):
        user = new_user()
        tok = self.server.token(user)
        r = self.server.request("POST", "/api/billing/checkout", body={"packId": "starter"},
                                headers={"Authorization": f"Bearer {tok}",
                                         "Idempotency-Key": "buy-1"})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json["url"], "https://checkout.stripe.com/c/pay/cs_test_fake1")
        self.assertEqual(r.json["sessionId"], "cs_test_fake1")
        req = self.stripe.requests[-1]
        form = req["form"]
        self.assertEqual(form["mode"], ["payment"])
        self.assertEqual(form["line_items[0][price]"], ["price_starter"])
        self.assertEqual(form["line_items[0][quantity]"], ["1"])
        self.assertEqual(form["client_reference_id"], [user])
        self.assertEqual(form["metadata[user_id]"], [user])
        self.assertEqual(form["metadata[pack_id]"], ["starter"])
        self.assertEqual(form["payment_intent_data[metadata][user_id]"], [user])
        self.assertTrue(form["success_url"][0].startswith("http://localhost:"))
        self.assertIn(f"-{'buy-1'}", req["headers"]["Idempotency-Key"])
        self.assertIn(user, req["headers"]["Idempotency-Key"])

        r = self.server.request("POST", "/api/billing/checkout", body={"packId": "nope"},
                                headers={"Authorization": f"Bearer {tok}"})
        self.assertEqual((r.status, r.json["code"]), (404, "pack_not_found"))
        r = self.server.request("POST", "/api/billing/checkout", body={"packId": "starter"})
        self.assertEqual(r.status, 401)
        packs = self.server.get("/api/billing/packs").json["packs"]
        self.assertEqual([p["id"] for p in packs], ["starter", "pro"])
        self.assertNotIn("stripePriceId", packs[0])

    def test_event_signed_by_the_stripe_library_grants_the_pack_once(self):
        user = new_user()
        payload = session_event(user, session="cs_test_once")
        r = self.post_event(payload)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json["action"], "granted")
        self.assertEqual(self.server.balance(user), 100)
        again = self.post_event(payload)
        self.assertEqual((again.status, again.json["action"]), (200, "duplicate"))
        # another event for the same session (async payment succeeded) grants nothing
        other = session_event(user, session="cs_test_once",
                              kind="checkout.session.async_payment_succeeded")
        self.assertEqual(self.post_event(other).json["action"], "replayed")
        self.assertEqual(self.server.balance(user), 100)
        self.assertEqual(len(self.purchases(user)), 1)
        with self.server.db() as c:
            pid, meta = c.execute("SELECT payment_id, metadata FROM credit_transactions "
                                  "WHERE user_id = ? AND type = 'purchase'", (user,)).fetchone()
        self.assertIsNotNone(pid)
        meta = meta if isinstance(meta, dict) else json.loads(meta)
        self.assertEqual(meta["stripe_session_id"], "cs_test_once")
        self.assertEqual(meta["amount"], 500)
        self.assertTrue(meta["stripe_event_id"].startswith("evt_"))
        self.server.assert_ledger_consistent(self, user)

    def test_bad_signatures_grant_nothing(self):
        user = new_user()
        payload = session_event(user, session="cs_test_bad")
        header = stripe_header(payload)
        cases = {
            "tampered body": (payload.replace('"credits": "100"', '"credits": "999"'), header),
            "wrong secret": (payload, stripe_header(payload, secret="whsec_wrong")),
            "10 minutes old": (payload, stripe_header(payload, timestamp=int(time.time()) - 600)),
            "no header": (payload, ""),
        }
        for name, (body, h) in cases.items():
            r = self.post_event(body, header=h)
            self.assertEqual(r.status, 400, name)
            self.assertEqual(r.json["success"], False, name)
            self.assertEqual(r.json["code"], "invalid_signature", name)
            self.assertIsInstance(r.json["error"], str)
        malformed = "{not json"
        r = self.post_event(malformed, header=stripe_header(malformed))
        self.assertEqual((r.status, r.json["code"]), (400, "invalid_event"))
        self.assertEqual(self.server.balance(user), 0)
        self.assertEqual(self.purchases(user), [])
        log = self.server.read_log()
        self.assertIn("stripe webhook refused", log)
        self.assertNotIn(STRIPE_SECRET, log)

    def test_unknown_event_types_are_acknowledged_and_ignored(self):
        payload = json.dumps({"id": "evt_" + uuid.uuid4().hex, "type": "customer.created",
                              "data": {"object": {"id": "cus_1"}}})
        r = self.post_event(payload)
        self.assertEqual((r.status, r.json["action"]), (200, "ignored"))

    def test_fifty_parallel_replays_grant_once(self):
        user = new_user()
        payload = session_event(user, session="cs_test_parallel")
        header = stripe_header(payload)
        servers = [self.server]
        if BACKEND == "postgres":  # a second process on the same database
            second = Server(self.server.env | {"PORT": str(free_port())}, database=self.server.pg)
            second.env["PORT"] = str(second.port)
            second.start()
            self.addCleanup(second.cleanup)
            servers.append(second)
        with ThreadPoolExecutor(50) as pool:
            rs = list(pool.map(lambda i: self.post_event(payload, header, servers[i % len(servers)]),
                               range(50)))
        self.assertTrue(all(r.status == 200 for r in rs), [r.body for r in rs if r.status != 200])
        actions = [r.json["action"] for r in rs]
        self.assertEqual(actions.count("granted"), 1, actions)
        self.assertEqual(self.server.balance(user), 100)
        self.assertEqual(len(self.purchases(user)), 1)
        self.server.assert_ledger_consistent(self, user)

    def test_refund_after_spending_leaves_zero_and_records_the_rest(self):
        user = new_user()
        self.assertEqual(self.post_event(session_event(user, session="cs_test_refund",
                                                       intent="pi_refund")).status, 200)
        tok = self.server.token(user)
        for _ in range(5):  # 5 x 8 credits spent
            self.assertEqual(self.server.infer(tok).status, 200)
        self.assertEqual(self.server.balance(user), 60)
        refund = json.dumps({"id": "evt_" + uuid.uuid4().hex, "type": "charge.refunded",
                             "data": {"object": {"id": "ch_1", "object": "charge",
                                                 "payment_intent": "pi_refund", "amount": 500,
                                                 "amount_refunded": 500, "refunded": True}}})
        r = self.post_event(refund)
        self.assertEqual((r.status, r.json["action"]), (200, "reversed"), r.body)
        self.assertEqual(self.server.balance(user), 0)
        self.assertEqual(self.post_event(refund).json["action"], "duplicate")
        rows = self.server.ledger(user)
        self.assertIn((-60, "payment_refund", None), rows)
        self.assertIn((0, "payment_uncollected", None), rows)
        # a dispute on the same payment afterwards takes nothing more
        dispute = json.dumps({"id": "evt_" + uuid.uuid4().hex, "type": "charge.dispute.created",
                              "data": {"object": {"id": "dp_1", "object": "dispute",
                                                  "payment_intent": "pi_refund", "amount": 500}}})
        self.assertEqual(self.post_event(dispute).json["action"], "already_reversed")
        self.assertEqual(self.server.balance(user), 0)
        self.server.assert_ledger_consistent(self, user)
        audit = self.server.cli("audit", check=False)
        self.assertEqual(audit.returncode, 0, audit.stdout)


def sw_verify(secret, deliveries):
    return node([{"op": "sw_verify", "secret": secret, "payload": d["body"],
                  "headers": {k: d["headers"][k] for k in
                              ("webhook-id", "webhook-timestamp", "webhook-signature")}}
                 for d in deliveries])


class OutgoingWebhooksTest(unittest.TestCase):
    def start(self, receiver_port, extra=None, data_dir=None, database=None):
        env = billing_env(self.tmp.name, {"LENSROOM_FETCH_ALLOW": f"127.0.0.1:{receiver_port}",
                                          "LENSROOM_WEBHOOK_RETRY_MS": "100"})
        env.update(extra or {})
        s = Server(env, data_dir=data_dir, database=database).start()
        self.addCleanup(s.cleanup)
        return s

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="lensroom-hooks-")
        self.addCleanup(self.tmp.cleanup)

    def add_endpoint(self, server, url, events):
        out = server.cli("webhooks", "add", url, "--events", events).stdout
        lines = out.strip().splitlines()
        return lines[0].split()[0], lines[1].split(": ", 1)[1]

    def test_deliveries_verify_with_the_standardwebhooks_library(self):
        rcv = Receiver()
        self.addCleanup(rcv.close)
        s = self.start(rcv.port, {"LENSROOM_LOW_BALANCE": "10"})
        ep, secret = self.add_endpoint(s, rcv.url, "generation.succeeded,credits.low")
        self.assertTrue(secret.startswith("whsec_"))
        user = new_user()
        s.grant(user, 16)
        tok = s.token(user)
        for _ in range(2):
            self.assertEqual(s.infer(tok).status, 200)
        wait_for(lambda: len(rcv.events("generation.succeeded")) == 2
                 and len(rcv.events("credits.low")) == 1, 60)
        self.assertEqual(len(rcv.events("generation.succeeded")), 2)
        results = sw_verify(secret, rcv.seen)
        self.assertTrue(all(r["ok"] for r in results), results)
        gen = rcv.events("generation.succeeded")[0]["data"]
        self.assertEqual((gen["userId"], gen["modelId"], gen["status"], gen["credits"]),
                         (user, "seedream_image", "success", 8))
        self.assertTrue(gen["urls"][0].startswith("http"))
        low = rcv.events("credits.low")
        self.assertEqual(len(low), 1)  # once per crossing, not on every debit
        self.assertLess(low[0]["data"]["balance"], 10)
        self.assertEqual(low[0]["data"]["threshold"], 10)
        # a wrong secret fails verification in the same library
        self.assertFalse(sw_verify("whsec_" + "QUJD" * 8, rcv.seen[:1])[0]["ok"])
        # the delivery log through the admin API
        log = s.get(f"/api/admin/webhooks/{ep}/deliveries", {"apikey": ADMIN_KEY})
        self.assertEqual(log.status, 200)
        self.assertTrue(all(a["statusCode"] == 200 for a in log.json["attempts"]))
        self.assertEqual(len(log.json["attempts"]), 3)
        listed = s.get("/api/admin/webhooks", {"apikey": ADMIN_KEY}).json["endpoints"]
        self.assertEqual([e["id"] for e in listed], [ep])
        self.assertNotIn("secret", listed[0])

    def rotate(self, server, ep, grace=None):
        env = dict(server.env)
        if grace is not None:
            env["LENSROOM_WEBHOOK_ROTATE_GRACE"] = grace
        r = subprocess.run([BIN, "webhooks", "rotate-secret", ep], env=env, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.strip().splitlines()[1].split(": ", 1)[1]

    def test_a_rotated_secret_signs_beside_the_new_one_during_its_grace(self):
        rcv = Receiver()
        self.addCleanup(rcv.close)
        s = self.start(rcv.port)
        ep, first = self.add_endpoint(s, rcv.url, "generation.succeeded")
        second = self.rotate(s, ep)  # default grace: 24 h
        self.assertNotEqual(first, second)
        user = new_user()
        s.grant(user, 100)
        tok = s.token(user)
        self.assertEqual(s.infer(tok).status, 200)
        wait_for(lambda: len(rcv.seen) == 1, 60)
        d = rcv.seen[0]
        self.assertEqual(len(d["headers"]["webhook-signature"].split(" ")), 2)
        # a receiver still on the old secret and one already on the new
        # both verify the same delivery with the real library
        self.assertTrue(sw_verify(first, [d])[0]["ok"])
        self.assertTrue(sw_verify(second, [d])[0]["ok"])
        self.assertFalse(sw_verify("whsec_" + "QUJD" * 8, [d])[0]["ok"])
        # rotated again with no grace: only the newest secret signs
        third = self.rotate(s, ep, grace="0")
        self.assertEqual(s.infer(tok).status, 200)
        wait_for(lambda: len(rcv.seen) == 2, 60)
        d = rcv.seen[1]
        self.assertEqual(len(d["headers"]["webhook-signature"].split(" ")), 1)
        self.assertEqual([r["ok"] for r in sw_verify(third, [d]) + sw_verify(second, [d])
                          + sw_verify(first, [d])], [True, False, False])

    def test_failing_receiver_gets_the_same_webhook_id_on_every_retry(self):
        rcv = Receiver(fail=3)
        self.addCleanup(rcv.close)
        s = self.start(rcv.port)
        ep, secret = self.add_endpoint(s, rcv.url, "generation.succeeded")
        user = new_user()
        s.grant(user, 8)
        self.assertEqual(s.infer(s.token(user)).status, 200)
        wait_for(lambda: len(rcv.seen) >= 4, 60)
        seen = rcv.seen
        self.assertEqual(len(seen), 4)
        self.assertEqual(len({d["headers"]["webhook-id"] for d in seen}), 1)
        self.assertEqual(len({d["body"] for d in seen}), 1)
        self.assertTrue(all(r["ok"] for r in sw_verify(secret, seen)))
        log = wait_for(lambda: (lambda a: a if len(a) == 4 else None)(
            s.get(f"/api/admin/webhooks/{ep}/deliveries", {"apikey": ADMIN_KEY}).json["attempts"]), 30)
        self.assertEqual(sorted(a["attempt"] for a in log), [1, 2, 3, 4])
        self.assertEqual([a["statusCode"] for a in sorted(log, key=lambda a: a["attempt"])],
                         [500, 500, 500, 200])
        # replay sends it again, same id
        r = s.request("POST", f"/api/admin/webhooks/deliveries/{log[0]['deliveryId']}/replay",
                      headers={"apikey": ADMIN_KEY})
        self.assertEqual(r.status, 202, r.body)
        wait_for(lambda: len(rcv.seen) == 5, 30)
        self.assertEqual(rcv.seen[4]["headers"]["webhook-id"], seen[0]["headers"]["webhook-id"])

    def test_events_queued_while_the_receiver_is_down_survive_a_sigkill(self):
        port = free_port()
        s = self.start(port, {"LENSROOM_WEBHOOK_RETRY_MS": "300"})
        self.add_endpoint(s, f"http://127.0.0.1:{port}/hook", "generation.succeeded")
        user = new_user()
        s.grant(user, 24)
        tok = s.token(user)
        ids = [s.infer(tok).json["generationId"] for _ in range(3)]

        def attempted():
            with s.db() as c:
                table = "lensroom.webhook_attempts" if BACKEND == "postgres" else "webhook_attempts"
                return c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] >= 3
        self.assertTrue(wait_for(attempted, 60))
        s.kill()
        rcv = Receiver(port=port)
        self.addCleanup(rcv.close)
        s.start()
        wait_for(lambda: len(rcv.events()) >= 3, 90)
        got = sorted(e["data"]["id"] for e in rcv.events())
        self.assertEqual(got, sorted(ids))

    def test_an_outbox_row_taken_again_queues_no_second_message(self):
        """A generation's end reaches the queue through the outbox its settle
        wrote; a row claimed again (its process died after queuing, before
        removing it) finds its message queued and adds nothing."""
        rcv = Receiver()
        self.addCleanup(rcv.close)
        s = self.start(rcv.port)
        self.add_endpoint(s, rcv.url, "generation.succeeded")
        user = new_user()
        s.grant(user, 16)
        gid = s.infer(s.token(user)).json["generationId"]
        wait_for(lambda: len(rcv.seen) == 1, 60)
        schema = "lensroom." if BACKEND == "postgres" else ""
        with s.db() as c:
            self.assertEqual(c.execute(f"SELECT COUNT(*) FROM {schema}webhook_outbox")
                             .fetchone()[0], 0)
            c.execute(f"INSERT INTO {schema}webhook_outbox (generation_id, user_id, event_type, "
                      "created_at) VALUES (?, ?, 'generation.succeeded', 0)", (gid, user))
        wait_for(lambda: self.outbox_empty(s, schema), 60)
        with s.db() as c:
            n = c.execute(f"SELECT COUNT(*) FROM {schema}webhook_deliveries").fetchone()[0]
        self.assertEqual(n, 1)
        self.assertEqual(len(rcv.seen), 1)

    def outbox_empty(self, s, schema):
        with s.db() as c:
            return c.execute(f"SELECT COUNT(*) FROM {schema}webhook_outbox").fetchone()[0] == 0

    @unittest.skipUnless(BACKEND == "postgres", "several processes share PostgreSQL only")
    def test_two_processes_deliver_each_event_once(self):
        rcv = Receiver()
        self.addCleanup(rcv.close)
        a = self.start(rcv.port)
        b = Server(a.env | {"PORT": str(free_port())}, database=a.pg)  # same data folder, too
        b.env["PORT"] = str(b.port)
        b.start()
        self.addCleanup(b.cleanup)
        self.add_endpoint(a, rcv.url, "generation.succeeded")
        user = new_user()
        a.grant(user, 8 * 40)
        tok = a.token(user)
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda i: (a, b)[i % 2].infer(tok).json["generationId"],
                                range(40)))
        wait_for(lambda: len({e["data"]["id"] for e in rcv.events()}) == 40, 90)
        with a.db() as c:  # every delivery done: nothing is still to come
            wait_for(lambda: c.execute("SELECT COUNT(*) FROM lensroom.webhook_deliveries "
                                       "WHERE status <> 'delivered'").fetchone()[0] == 0, 60)
        hook_ids = [d["headers"]["webhook-id"] for d in rcv.seen]
        self.assertEqual(len(hook_ids), 40, hook_ids)
        self.assertEqual(len(set(hook_ids)), 40)
        self.assertEqual(sorted(e["data"]["id"] for e in rcv.events()), sorted(ids))

    def test_private_addresses_are_refused_at_registration_and_delivery(self):
        rcv = Receiver()
        self.addCleanup(rcv.close)
        s = self.start(rcv.port)
        for url in ("http://10.0.0.1/hook", "https://127.0.0.1:9/hook", "https://[::1]/x",
                    "https://169.254.169.254/latest", "ftp://example.com/"):
            r = s.request("POST", "/api/admin/webhooks", body={"url": url,
                          "events": ["generation.succeeded"]}, headers={"apikey": ADMIN_KEY})
            self.assertEqual((r.status, r.json["code"]), (422, "invalid_webhook_url"), url)
            self.assertNotEqual(s.cli("webhooks", "add", url, "--events", "credits.low",
                                      check=False).returncode, 0, url)
        # a name that resolves to loopback passes the URL check; the
        # connection is refused when the delivery is made
        r = s.request("POST", "/api/admin/webhooks",
                      body={"url": f"https://vm:{free_port()}/hook",
                            "events": "generation.succeeded"},
                      headers={"apikey": ADMIN_KEY})
        self.assertEqual(r.status, 201, r.body)
        ep = r.json["endpoint"]["id"]
        self.assertTrue(r.json["endpoint"]["secret"].startswith("whsec_"))
        user = new_user()
        s.grant(user, 8)
        self.assertEqual(s.infer(s.token(user)).status, 200)
        log = wait_for(lambda: s.get(f"/api/admin/webhooks/{ep}/deliveries",
                                     {"apikey": ADMIN_KEY}).json["attempts"], 60)
        self.assertEqual(len(log), 1)
        self.assertIn("refused", log[0]["error"])
        self.assertEqual(log[0]["deliveryStatus"], "failed")
        self.assertEqual(rcv.seen, [])
        bad = s.request("POST", "/api/admin/webhooks", body={"url": rcv.url, "events": ["nope"]},
                        headers={"apikey": ADMIN_KEY})
        self.assertEqual((bad.status, bad.json["code"]), (422, "invalid_events"))
        self.assertEqual(s.request("POST", "/api/admin/webhooks", body={"url": rcv.url,
                         "events": "credits.low"}).status, 401)

    def test_a_generation_can_name_its_own_webhook(self):
        rcv = Receiver()
        self.addCleanup(rcv.close)
        s = self.start(rcv.port)
        user = new_user()
        s.grant(user, 16)
        tok = s.token(user)
        secret = s.get("/api/webhooks/secret", {"Authorization": f"Bearer {tok}"}).json["key"]
        r = s.infer(tok, extra={"webhook": rcv.url, "webhookEvents": ["start", "completed"]})
        self.assertEqual(r.status, 200, r.body)
        wait_for(lambda: len(rcv.seen) >= 2, 60)
        types = sorted(e["type"] for e in rcv.events())
        self.assertEqual(types, ["generation.started", "generation.succeeded"])
        self.assertTrue(all(v["ok"] for v in sw_verify(secret, rcv.seen)))
        bad = s.infer(tok, extra={"webhook": "http://192.168.1.1/x"})
        self.assertEqual((bad.status, bad.json["code"]), (422, "invalid_webhook_url"))
        bad = s.infer(tok, extra={"webhook": rcv.url, "webhookEvents": ["everything"]})
        self.assertEqual((bad.status, bad.json["code"]), (422, "invalid_parameter"))
        self.assertEqual(s.balance(user), 8)  # refused requests charged nothing


if __name__ == "__main__":
    unittest.main()
