"""A crash never strands credits: after SIGKILL with generations in flight,
their lease runs out and the next process takes them over — generations
whose provider task id was recorded are resumed by polling that task
(Kie.ai, faked), the others are failed and refunded exactly once; nothing
is left pending or processing."""
import json
import threading
import time
import unittest

from fake_providers import FakeProviders
from harness import Server, new_user, wait_for

LEASE = {"LENSROOM_LEASE_S": "2"}


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

    def test_restart_waits_out_its_quiet_period_before_taking_over(self):
        """A process that starts while another's heartbeat has ended takes
        none of that work in its first 0.6 lease: after a database outage
        every heartbeat ends at once, and whoever started first would
        otherwise take the others' live work. Here the dead process is
        really dead (SIGKILL), its heartbeat already over when the next
        one starts; that one refunds its work, but no refund is dated
        before 0.6 lease after the new process was spawned."""
        lease_s = 5
        s = Server({"LENSROOM_MOCK_LATENCY_MS": "60000", "LENSROOM_LEASE_S": str(lease_s)})
        self.addCleanup(s.cleanup)
        s.start()
        user = new_user()
        s.grant(user, 8 * 5)
        tok = s.token(user)
        for _ in range(5):
            r = s.infer(tok, headers={"Prefer": "respond-async"})
            self.assertEqual(r.status, 202, r.body)
        s.kill()
        instances = "lensroom.instances" if s.pg else "instances"

        def iso(t):  # the server's timestamps: UTC, milliseconds
            ms = int(t % 1 * 1000)
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{ms:03d}Z"

        def heartbeat_over():
            with s.db() as c:
                return c.execute(f"SELECT count(*) FROM {instances} WHERE alive_until > ?",
                                 (iso(time.time()),)).fetchone()[0] == 0
        self.assertTrue(wait_for(heartbeat_over, timeout=4 * lease_s))
        spawned = time.time()
        s.start()
        self.assertTrue(wait_for(lambda: s.balance(user) == 40, timeout=6 * lease_s),
                        s.balance(user))
        edge = iso(spawned + 0.6 * lease_s)
        with s.db() as c:
            early = c.execute("SELECT count(*) FROM generations WHERE user_id = ? "
                              "AND finished_at < ?", (user, edge)).fetchone()[0]
            failed = c.execute("SELECT count(*) FROM generations WHERE user_id = ? "
                               "AND status = 'failed'", (user,)).fetchone()[0]
        self.assertEqual(failed, 5)
        self.assertEqual(early, 0, f"refunded before the quiet period ended ({edge})")
        s.assert_ledger_consistent(self, user)

    def test_a_lost_settle_keeps_the_objects_the_winner_named(self):
        """Two processes that ran one generation (one wrongly taken for
        dead) store the same keys; the one whose settle loses must not
        remove what the winner's row points at."""
        s = Server({"LENSROOM_MOCK_LATENCY_MS": "3000"})
        self.addCleanup(s.cleanup)
        s.start()
        user = new_user()
        s.grant(user, 16)
        tok = s.token(user)
        first = s.infer(tok, prompt="the winner's picture")
        self.assertEqual(first.status, 200, first.body)
        r = s.infer(tok, prompt="the winner's picture", headers={"Prefer": "respond-async"})
        self.assertEqual(r.status, 202, r.body)
        gid = r.json["generationId"]
        url = first.json["url"].replace(first.json["meta"]["generationId"], gid)
        # the other process settles first, naming the key this one stores
        with s.db() as c:
            n = c.execute("UPDATE generations SET status = 'success', result_urls = ?, "
                          "succeeded_count = 1 WHERE id = ? AND status IN "
                          "('pending', 'processing')", (json.dumps([url]), gid)).rowcount
        self.assertEqual(n, 1)
        self.assertTrue(wait_for(lambda: f"generation {gid} was already settled" in s.read_log(),
                                 60), s.read_log())
        got = s.fetch_url(url)
        self.assertEqual(got.status, 200, url)
        self.assertTrue(got.body.startswith(b"\x89PNG"))
        s.assert_ledger_consistent(self, user)

    def test_sigterm_waits_for_in_flight_generations(self):
        s = Server({"LENSROOM_MOCK_LATENCY_MS": "4000"})
        self.addCleanup(s.cleanup)
        s.start()
        user = new_user()
        s.grant(user, 8)
        tok = s.token(user)
        result = {}
        t = threading.Thread(target=lambda: result.update(r=s.infer(tok)))
        t.start()
        # SIGTERM only once the server runs the generation (not before the
        # request even left this process).
        self.assertTrue(wait_for(lambda: s.in_flight() == 1, 30))
        s.stop()  # SIGTERM: the generation still completes and is answered
        t.join()
        self.assertEqual(result["r"].status, 200, result["r"].body)
        with s.db() as c:
            status, = c.execute("SELECT status FROM generations WHERE user_id = ?",
                                (user,)).fetchone()
        self.assertEqual(status, "success")

    def test_requests_after_sigterm_are_refused_while_draining(self):
        s = Server({"LENSROOM_MOCK_LATENCY_MS": "8000"})
        self.addCleanup(s.cleanup)
        s.start()
        user = new_user()
        s.grant(user, 8)
        result = {}
        t = threading.Thread(target=lambda: result.update(r=s.infer(s.token(user))))
        t.start()
        self.assertTrue(wait_for(lambda: s.get("/healthz").json["inFlight"] == 1, 30))
        s.proc.send_signal(15)  # the in-flight generation keeps the process draining
        self.assertTrue(wait_for(lambda: "shutting down" in s.read_log(), 30))
        r = s.get("/api/models")
        self.assertEqual(r.status, 503, r.body)
        self.assertEqual(r.json["code"], "shutting_down")
        self.assertEqual(r.header("Connection"), "close")
        t.join(30)
        self.assertEqual(result["r"].status, 200, result["r"].body)  # finished, not dropped
        s.stop()

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
        self.assertTrue(wait_for(lambda: s.in_flight() == 1, 30))
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


class ResumeProviderTasks(unittest.TestCase):
    def setUp(self):
        self.fake = FakeProviders(mp4=b"")
        self.addCleanup(self.fake.close)
        self.fake.released.clear()

    def test_sigkill_with_100_tasks_at_kie_then_restart_resumes_every_one(self):
        env = self.fake.env()
        env.update(LEASE)
        env.update({"LENSROOM_USER_MAX_IN_FLIGHT": "0", "LENSROOM_USER_RATE_PER_MIN": "0"})
        s = Server(env)
        self.addCleanup(s.cleanup)
        s.start()
        user = new_user()
        s.grant(user, 800)
        tok = s.token(user)
        ids = {}
        for i in range(100):
            fail = i % 5 == 0
            r = s.infer(tok, prompt=f"item {i} [hold]" + (" [poll_fail]" if fail else ""),
                        headers={"Prefer": "respond-async"})
            self.assertEqual(r.status, 202, r.body)
            ids[r.json["generationId"]] = fail

        def with_task_ids():
            with s.db() as c:
                rows = c.execute("SELECT provider_task_ids FROM generations WHERE user_id = ? "
                                 "AND status = 'processing'", (user,)).fetchall()
            return sum(1 for (t,) in rows if t not in ("[]", []))

        self.assertTrue(wait_for(lambda: with_task_ids() == 100, 60), with_task_ids())
        s.kill()
        self.assertEqual(s.balance(user), 0)
        # The provider finishes every task while no server is running (the
        # fake answers "success" to every poll from now on).
        self.fake.release()
        s.start()

        def unfinished():
            with s.db() as c:
                return c.execute("SELECT count(*) FROM generations WHERE user_id = ? AND status "
                                 "IN ('pending','processing')", (user,)).fetchone()[0]

        self.assertTrue(wait_for(lambda: unfinished() == 0, 120), unfinished())
        self.assertIn("resuming generation left by a stopped process", s.read_log())
        with s.db() as c:
            rows = c.execute("SELECT id, status, error_code, result_urls FROM generations "
                             "WHERE user_id = ?", (user,)).fetchall()
        self.assertEqual(len(rows), 100)
        cookie = {"Cookie": f"lr_session={tok}"}
        for gid, status, code, _ in rows:
            gid = str(gid)
            if ids[gid]:
                self.assertEqual((status, code), ("failed", "provider_failed"), gid)
            else:
                self.assertEqual(status, "success", (gid, code))
        # a few stored results read back as the fake's PNG
        ok = [str(g) for g, st, _, _ in rows if st == "success"][:5]
        for gid in ok:
            g = s.get(f"/api/generations/{gid}", headers=cookie).json["generation"]
            self.assertEqual(s.fetch_url(g["url"]).body, self.fake.png)
        self.assertEqual(s.balance(user), 800 - 80 * 8)
        s.assert_ledger_consistent(self, user)

    def test_deadline_counts_from_creation_across_a_restart(self):
        """A task that never finishes, resumed after its deadline passed
        while no server ran: one last look at Kie, then failed and refunded
        (not a fresh deadline of polling)."""
        env = self.fake.env()
        env.update(LEASE)
        env["LENSROOM_TASK_DEADLINE_S"] = "3"
        s = Server(env)
        self.addCleanup(s.cleanup)
        s.start()
        user = new_user()
        s.grant(user, 8)
        prompt = f"forever [poll_never] {time.time()}"
        r = s.infer(s.token(user), prompt=prompt, headers={"Prefer": "respond-async"})
        self.assertEqual(r.status, 202)
        gid = r.json["generationId"]

        def task_id():
            with s.db() as c:
                t, = c.execute("SELECT provider_task_ids FROM generations WHERE id = ?",
                               (gid,)).fetchone()
            t = t if isinstance(t, list) else __import__("json").loads(t)
            return t[0] if t else None

        self.assertTrue(wait_for(lambda: task_id() is not None, 30))
        tid = task_id()
        s.kill()
        # The deadline (3 s from the generation's creation, before Kie's
        # task was) passes while no server runs.
        created = self.fake.tasks[tid]["created"]
        self.assertTrue(wait_for(lambda: time.time() > created + 3.5, 30))
        polls_before = len(self.fake.requests_to(f"/api/v1/jobs/recordInfo?taskId={tid}"))
        s.start()
        self.assertTrue(wait_for(lambda: s.balance(user) == 8, 60))
        with s.db() as c:
            status, code = c.execute("SELECT status, error_code FROM generations WHERE id = ?",
                                     (gid,)).fetchone()
        self.assertEqual((status, code), ("failed", "provider_timeout"))
        polls_after = len(self.fake.requests_to(f"/api/v1/jobs/recordInfo?taskId={tid}"))
        self.assertEqual(polls_after - polls_before, 1)
        s.assert_ledger_consistent(self, user)

    def test_generation_without_task_id_is_refunded(self):
        """Killed before Kie answered the create call: nothing to resume."""
        env = self.fake.env()
        env.update(LEASE)
        s = Server(env)
        self.addCleanup(s.cleanup)
        s.start()
        user = new_user()
        s.grant(user, 8)
        prompt = f"x [create_500] {time.time()}"
        r = s.infer(s.token(user), prompt=prompt, headers={"Prefer": "respond-async"})
        self.assertEqual(r.status, 202)

        def creates():
            return [x for x in self.fake.requests_to("/api/v1/jobs/createTask")
                    if ((x["body"] or {}).get("input") or {}).get("prompt") == prompt]

        # the first create attempt failed; the retry waits
        self.assertTrue(wait_for(lambda: creates(), 30))
        s.kill()
        s.start()
        self.assertTrue(wait_for(lambda: s.balance(user) == 8))
        with s.db() as c:
            status, code = c.execute("SELECT status, error_code FROM generations WHERE user_id = ?",
                                     (user,)).fetchone()
        self.assertEqual((status, code), ("failed", "interrupted"))
        s.assert_ledger_consistent(self, user)


if __name__ == "__main__":
    unittest.main()
