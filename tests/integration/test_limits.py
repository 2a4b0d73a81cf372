"""Per-user limits on POST /api/infer: request rate and generations in
flight, each answered with 429 + Retry-After, charging nothing, and not
touching other users. And the server's connection limit: exactly
LENSROOM_MAX_CONNECTIONS connections held, the next refused with 503."""
import http.client
import json
import unittest

from harness import ServerTest, new_user, wait_for


class RateLimit(ServerTest):
    server_env = {"LENSROOM_USER_RATE_PER_MIN": "3"}

    def test_fourth_request_in_a_minute_is_429(self):
        a, b = new_user(), new_user()
        for u in (a, b):
            self.server.grant(u, 40)
        tok = self.server.token(a)
        for _ in range(3):
            self.assertEqual(self.server.infer(tok).status, 200)
        r = self.server.infer(tok)
        self.assertEqual(r.status, 429, r.body)
        self.assertEqual(r.json["code"], "rate_limited")
        self.assertGreaterEqual(int(r.header("retry-after")), 1)
        self.assertEqual(self.server.balance(a), 40 - 24)
        self.assertEqual(self.server.infer(self.server.token(b)).status, 200)  # others unaffected
        self.server.assert_ledger_consistent(self, a)


class InFlightLimit(ServerTest):
    server_env = {"LENSROOM_USER_MAX_IN_FLIGHT": "2", "LENSROOM_MOCK_LATENCY_MS": "4000"}

    def test_third_running_generation_is_429_until_one_finishes(self):
        user = new_user()
        self.server.grant(user, 80)
        tok = self.server.token(user)
        async_ = {"Prefer": "respond-async"}
        running = [self.server.infer(tok, headers=async_) for _ in range(2)]
        self.assertEqual([x.status for x in running], [202, 202])
        r = self.server.infer(tok, headers=async_)
        self.assertEqual(r.status, 429, r.body)
        self.assertEqual(r.json["code"], "too_many_generations")
        self.assertIsNotNone(r.header("retry-after"))
        self.assertEqual(self.server.balance(user), 64)  # the refused one charged nothing
        r = self.server.infer(tok, headers={"Prefer": "wait=20"})  # limits do not queue
        self.assertEqual(r.status, 429)
        for x in running:
            self.server.wait_settled(x.json["generationId"], tok)
        self.assertEqual(self.server.infer(tok).status, 200)  # slots freed on settle
        self.server.assert_ledger_consistent(self, user)


class ConnectionLimit(ServerTest):
    # Three HTTP threads: 16 connections do not split evenly over them, as
    # 10,000 did not over two once descriptors were reused.
    server_env = {"LENSROOM_MAX_CONNECTIONS": "16", "LENSROOM_HTTP_THREADS": "3",
                  "LENSROOM_MOCK_LATENCY_MS": "3000", "LENSROOM_USER_MAX_IN_FLIGHT": "0",
                  "LENSROOM_USER_RATE_PER_MIN": "0"}

    def generations(self, user):
        with self.server.db() as c:
            return c.execute("SELECT count(*) FROM generations WHERE user_id = ?",
                             (user,)).fetchone()[0]

    def test_the_limit_is_held_exactly_and_the_next_connection_refused(self):
        user = new_user()
        self.server.grant(user, 1000)
        body = json.dumps({"modelId": "anthropic_text", "inputs": {"prompt": "held"}})
        headers = {"Content-Type": "application/json",
                   "Cookie": f"lr_session={self.server.token(user)}"}
        conns = [http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=120)
                 for _ in range(16)]
        for c in conns:
            c.request("POST", "/api/infer", body=body, headers=headers)
        self.assertTrue(wait_for(lambda: self.generations(user) == 16, 90),
                        f"{self.generations(user)} of 16 requests reached the server")
        r = self.server.get("/healthz")  # a 17th connection while the 16 are open
        self.assertEqual(r.status, 503, r.body)
        self.assertEqual(r.json["code"], "too_many_connections")
        for c in conns:  # none was dropped, and no HTTP thread is stuck
            resp = c.getresponse()
            self.assertEqual(resp.status, 200)
            self.assertTrue(json.loads(resp.read())["success"])
        r = self.server.get("/healthz")  # still 16 open: still full
        self.assertEqual(r.status, 503, r.body)
        for c in conns:
            c.close()
        self.assertTrue(wait_for(lambda: self.server.get("/healthz").status == 200, 60),
                        "closed connections did not free their slots")
        self.server.assert_ledger_consistent(self, user)


if __name__ == "__main__":
    unittest.main()
