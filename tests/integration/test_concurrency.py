"""Hundreds of simultaneous infers by one user: exactly as many succeed as
the balance pays for, the rest get 402, and the ledger balances."""
import threading
import unittest
from concurrent.futures import ThreadPoolExecutor

from harness import ServerTest, new_user


class Concurrency(ServerTest):
    server_env = {"LENSROOM_MOCK_LATENCY_MS": "20", "LENSROOM_USER_MAX_IN_FLIGHT": "0",
                  "LENSROOM_USER_RATE_PER_MIN": "0"}

    def test_200_parallel_infers_with_credits_for_50(self):
        user = new_user()
        self.server.grant(user, 400)
        tok = self.server.token(user)
        start = threading.Barrier(50)

        def one(i):
            if i < 50:
                start.wait()
            r = self.server.infer(tok, prompt="race")
            return r.status, r.json

        with ThreadPoolExecutor(max_workers=200) as ex:
            results = list(ex.map(one, range(200)))
        statuses = [s for s, _ in results]
        self.assertEqual(statuses.count(200), 50, statuses)
        self.assertEqual(statuses.count(402), 150, statuses)
        for s, b in results:
            if s == 402:
                self.assertEqual(b["code"], "insufficient_credits")
                self.assertEqual(b["required"], 8)
        self.assertEqual(self.server.balance(user), 0)
        self.server.assert_ledger_consistent(self, user)
        with self.server.db() as c:
            n, = c.execute("SELECT count(*) FROM generations WHERE user_id = ? AND status = 'success'",
                           (user,)).fetchone()
        self.assertEqual(n, 50)

    def test_1000_parallel_infers_on_100_credits_make_exactly_12(self):
        user = new_user()
        self.server.grant(user, 100)  # 12 infers of 8, 4 credits left
        tok = self.server.token(user)
        start = threading.Barrier(200)

        def one(i):
            if i < 200:
                start.wait()
            r = self.server.infer(tok, prompt=f"race {i}")
            return r.status, r.json

        with ThreadPoolExecutor(max_workers=200) as ex:
            results = list(ex.map(one, range(1000)))
        statuses = [s for s, _ in results]
        self.assertEqual(statuses.count(200), 12, sorted(set(statuses)))
        self.assertEqual(statuses.count(402), 988)
        self.assertTrue(all(b["required"] == 8 and b["balance"] < 8
                            for s, b in results if s == 402))
        self.assertEqual(self.server.balance(user), 4)
        self.server.assert_ledger_consistent(self, user)


if __name__ == "__main__":
    unittest.main()
