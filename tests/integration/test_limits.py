"""Per-user limits on POST /api/infer: request rate and generations in
flight, each answered with 429 + Retry-After, charging nothing, and not
touching other users."""
import unittest

from harness import ServerTest, new_user


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


if __name__ == "__main__":
    unittest.main()
