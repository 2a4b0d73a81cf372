"""Idempotency-Key on POST /api/infer: a retry replays the generation and
charges nothing; the key with another body is 422; while the first request
runs, 409; keys are per user; racing duplicates make one generation."""
import json
import threading
import unittest
from concurrent.futures import ThreadPoolExecutor

from harness import Server, ServerTest, new_user


def key_headers(key):
    return {"Idempotency-Key": key}


class Idempotency(ServerTest):
    def test_retry_replays_and_charges_once(self):
        user = new_user()
        self.server.grant(user, 20)
        tok = self.server.token(user)
        first = self.server.infer(tok, headers=key_headers("order-1"))
        self.assertEqual(first.status, 200, first.body)
        again = self.server.infer(tok, headers=key_headers("order-1"))
        self.assertEqual(again.status, 200, again.body)
        self.assertEqual(again.header("idempotent-replayed"), "true")
        for k in ("generationId", "urls", "url", "creditsUsed", "status"):
            self.assertEqual(again.json[k], first.json[k], k)
        self.assertEqual(again.json["newBalance"], 12)
        self.assertEqual(self.server.balance(user), 12)
        other = self.server.infer(tok, headers=key_headers("order-2"))
        self.assertNotEqual(other.json["generationId"], first.json["generationId"])
        self.assertEqual(self.server.balance(user), 4)
        self.server.assert_ledger_consistent(self, user)

    def test_same_key_other_body_is_422_and_charges_nothing(self):
        user = new_user()
        self.server.grant(user, 20)
        tok = self.server.token(user)
        self.assertEqual(self.server.infer(tok, headers=key_headers("k")).status, 200)
        r = self.server.infer(tok, prompt="something else", headers=key_headers("k"))
        self.assertEqual(r.status, 422, r.body)
        self.assertEqual(r.json["code"], "idempotency_key_reused")
        self.assertEqual(self.server.balance(user), 12)

    def test_keys_are_per_user(self):
        a, b = new_user(), new_user()
        for u in (a, b):
            self.server.grant(u, 8)
        ra = self.server.infer(self.server.token(a), headers=key_headers("shared"))
        rb = self.server.infer(self.server.token(b), headers=key_headers("shared"))
        self.assertEqual((ra.status, rb.status), (200, 200))
        self.assertNotEqual(ra.json["generationId"], rb.json["generationId"])
        self.assertEqual((self.server.balance(a), self.server.balance(b)), (0, 0))

    def test_malformed_keys_are_400(self):
        user = new_user()
        self.server.grant(user, 8)
        tok = self.server.token(user)
        for key in ("", "x" * 201, "tab\there", "é"):
            r = self.server.request("POST", "/api/infer", body={
                "modelId": "seedream_image", "inputs": {"prompt": "x"}},
                headers={"Cookie": f"lr_session={tok}", "Idempotency-Key": key.encode().decode("latin-1")})
            self.assertEqual(r.status, 400, (key, r.body))
            self.assertEqual(r.json["code"], "invalid_idempotency_key")
        self.assertEqual(self.server.balance(user), 8)

    def test_racing_duplicates_make_one_generation(self):
        user = new_user()
        self.server.grant(user, 80)
        tok = self.server.token(user)
        barrier = threading.Barrier(20)

        def one(_):
            barrier.wait()
            return self.server.infer(tok, headers=key_headers("race"))

        with ThreadPoolExecutor(max_workers=20) as ex:
            results = list(ex.map(one, range(20)))
        self.assertEqual({r.status for r in results} - {200, 409}, set())
        ids = {r.json["generationId"] for r in results}
        self.assertEqual(len(ids), 1)
        self.assertEqual(self.server.balance(user), 72)
        self.server.assert_ledger_consistent(self, user)


class IdempotencyWhileRunning(ServerTest):
    server_env = {"LENSROOM_MOCK_LATENCY_MS": "3000"}

    def test_duplicate_while_running_is_409_then_replays(self):
        user = new_user()
        self.server.grant(user, 8)
        tok = self.server.token(user)
        first = self.server.infer(tok, headers={"Prefer": "respond-async", **key_headers("slow")})
        self.assertEqual(first.status, 202)
        dup = self.server.infer(tok, headers=key_headers("slow"))
        self.assertEqual(dup.status, 409, dup.body)
        self.assertEqual(dup.json["code"], "idempotency_in_progress")
        self.assertEqual(dup.header("location"), f"/api/generations/{first.json['generationId']}")
        self.assertEqual(self.server.wait_settled(first.json["generationId"], tok), "success")
        done = self.server.infer(tok, headers=key_headers("slow"))
        self.assertEqual(done.status, 200, done.body)
        self.assertEqual(done.json["generationId"], first.json["generationId"])
        self.assertEqual(self.server.balance(user), 0)


class IdempotencyAfterFailure(ServerTest):
    server_env = {"LENSROOM_MOCK_FAIL_RATE": "1"}

    def test_failed_generation_replays_its_failure_without_charging(self):
        user = new_user()
        self.server.grant(user, 8)
        tok = self.server.token(user)
        first = self.server.infer(tok, headers=key_headers("f"))
        self.assertEqual(first.status, 502)
        again = self.server.infer(tok, headers=key_headers("f"))
        self.assertEqual(again.status, 502, again.body)
        self.assertEqual(again.json["generationId"], first.json["generationId"])
        self.assertEqual(again.json["refunded"], 8)
        self.assertEqual(self.server.balance(user), 8)
        self.server.assert_ledger_consistent(self, user)


if __name__ == "__main__":
    unittest.main()
