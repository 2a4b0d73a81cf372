"""A crash never strands credits: after SIGKILL with generations in flight,
their lease runs out and the next process fails and refunds each exactly
once; nothing is left pending or processing."""
import threading
import time
import unittest

from harness import Server, new_user

LEASE = {"LENSROOM_LEASE_S": "2"}


def wait_for(cond, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


class Recovery(unittest.TestCase):
    def test_sigkill_mid_generation_then_restart_refunds_each_once(self):
        s = Server({"LENSROOM_MOCK_LATENCY_MS": "30000", **LEASE})
        self.addCleanup(s.cleanup)
        s.start()
        user = new_user()
        s.grant(user, 8 * 20)
        tok = s.token(user)
        ids = []
        for _ in range(20):
            r = s.infer(tok, headers={"Prefer": "respond-async"})
            self.assertEqual(r.status, 202, r.body)
            ids.append(r.json["generationId"])
        self.assertEqual(s.balance(user), 0)
        s.kill()
        with s.db() as c:
            pending = c.execute("SELECT count(*) FROM generations WHERE status IN "
                                "('pending','processing')").fetchone()[0]
        self.assertEqual(pending, 20)

        s.start()
        self.assertTrue(wait_for(lambda: s.balance(user) == 160), s.balance(user))
        self.assertIn("unfinished generation failed and refunded", s.read_log())
        with s.db() as c:
            rows = c.execute("SELECT status, error_code FROM generations WHERE user_id = ?",
                             (user,)).fetchall()
        self.assertEqual(set(rows), {("failed", "interrupted")})
        s.assert_ledger_consistent(self, user)
        # a second restart changes nothing
        s.stop()
        s.start()
        self.assertEqual(s.balance(user), 160)
        s.assert_ledger_consistent(self, user)

    def test_sigterm_waits_for_in_flight_generations(self):
        s = Server({"LENSROOM_MOCK_LATENCY_MS": "1500"})
        self.addCleanup(s.cleanup)
        s.start()
        user = new_user()
        s.grant(user, 8)
        result = {}
        t = threading.Thread(target=lambda: result.update(r=s.infer(s.token(user))))
        t.start()
        time.sleep(0.7)
        s.stop()  # SIGTERM: the generation still completes and is answered
        t.join()
        self.assertEqual(result["r"].status, 200, result["r"].body)
        with s.db() as c:
            status, = c.execute("SELECT status FROM generations WHERE user_id = ?",
                                (user,)).fetchone()
        self.assertEqual(status, "success")

    def test_sigterm_with_long_generation_answers_202_and_next_start_refunds(self):
        s = Server({"LENSROOM_MOCK_LATENCY_MS": "60000", **LEASE})
        self.addCleanup(s.cleanup)
        s.start()
        user = new_user()
        s.grant(user, 8)
        result = {}
        t = threading.Thread(target=lambda: result.update(
            r=s.infer(s.token(user), headers={"Prefer": "wait=120"})))
        t.start()
        time.sleep(1)
        s.proc.send_signal(15)
        t.join(timeout=60)
        self.assertEqual(result["r"].status, 202, result["r"].body)
        s.stop()  # exit code 0, no sanitizer report (checked by stop())
        s.start()
        self.assertTrue(wait_for(lambda: s.balance(user) == 8))
        s.assert_ledger_consistent(self, user)


    def test_live_process_keeps_its_generations_past_the_lease(self):
        """Renewal works: a slow generation outlives several lease periods
        while a second process on the same database reaps expired claims."""
        s = Server({"LENSROOM_MOCK_LATENCY_MS": "5000", **LEASE})
        self.addCleanup(s.cleanup)
        s.start()
        reaper = Server({"LENSROOM_MOCK_LATENCY_MS": "5000", **LEASE}, data_dir=s.data_dir,
                        database=s.pg)
        reaper.log_path = s.log_path + ".reaper"
        self.addCleanup(reaper.cleanup)
        reaper.start()
        user = new_user()
        s.grant(user, 8)
        r = s.infer(s.token(user), headers={"Prefer": "wait=30"})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(s.balance(user), 0)
        s.assert_ledger_consistent(self, user)
        self.assertNotIn("failed and refunded", reaper.read_log())


if __name__ == "__main__":
    unittest.main()
