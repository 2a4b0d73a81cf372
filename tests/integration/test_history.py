"""History and ledger endpoints: newest first, keyset pages, filters, and
each user sees only their own rows. Admin grants need the service role
key and are idempotent."""
import unittest

from harness import ServerTest, new_user, wait_for

SERVICE_KEY = "service-role-key-for-tests-0123456789abcdef"


class History(ServerTest):
    server_env = {"SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY, "LENSROOM_MOCK_LATENCY_MS": "0"}

    def auth(self, user):
        return {"Authorization": "Bearer " + self.server.token(user)}

    def test_pages_newest_first_and_filters(self):
        user = new_user()
        self.server.grant(user, 8 * 5 + 25)
        tok = self.server.token(user)
        ids = [self.server.infer(tok, prompt=f"p{i}").json["generationId"] for i in range(5)]
        vid = self.server.infer(tok, model="veo3_video").json["generationId"]
        seen, cursor = [], None
        while True:
            q = "/api/generations?limit=2" + (f"&cursor={cursor}" if cursor else "")
            r = self.server.get(q, self.auth(user))
            self.assertEqual(r.status, 200, r.body)
            seen += [g["id"] for g in r.json["generations"]]
            cursor = r.json["nextCursor"]
            if not cursor:
                break
        self.assertEqual(seen, [vid] + ids[::-1])
        r = self.server.get("/api/generations?type=video", self.auth(user))
        self.assertEqual([g["id"] for g in r.json["generations"]], [vid])
        r = self.server.get("/api/generations?status=failed", self.auth(user))
        self.assertEqual(r.json["generations"], [])
        for bad in ("limit=0", "limit=abc", "limit=101", "status=done", "type=audio",
                    "cursor=%%%", "cursor=bm9wZQ"):
            r = self.server.get("/api/generations?" + bad, self.auth(user))
            self.assertEqual(r.status, 400, bad)
            self.assertEqual(r.json["code"], "invalid_parameter")

    def test_users_see_only_their_own(self):
        a, b = new_user(), new_user()
        self.server.grant(a, 8)
        gid = self.server.infer(self.server.token(a)).json["generationId"]
        r = self.server.get(f"/api/generations/{gid}", self.auth(a))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json["generation"]["status"], "success")
        self.assertNotIn("userId", r.json["generation"])
        other = self.server.get(f"/api/generations/{gid}", self.auth(b))
        missing = self.server.get("/api/generations/00000000-0000-4000-8000-000000000000",
                                  self.auth(b))
        self.assertEqual(other.status, 404)
        self.assertEqual(missing.status, 404)
        self.assertEqual(other.json, missing.json)  # no way to tell them apart
        self.assertEqual(self.server.get("/api/generations/not-a-uuid", self.auth(b)).status, 404)
        self.assertEqual(self.server.get("/api/generations", self.auth(b)).json["generations"], [])
        self.assertEqual(self.server.get("/api/credits/transactions", self.auth(b)).json["transactions"], [])

    def test_delete_removes_the_file_and_hides_the_generation(self):
        a, b = new_user(), new_user()
        self.server.grant(a, 16)
        tok = self.server.token(a)
        r = self.server.infer(tok)
        gid, url = r.json["generationId"], r.json["url"]
        self.assertEqual(self.server.fetch_url(url).status, 200)
        # its thumbnails are objects of the generation too: made first
        row = lambda: self.server.get(f"/api/generations/{gid}", self.auth(a)).json["generation"]
        self.assertTrue(wait_for(lambda: row()["previewStatus"] == "ready", 60))
        thumbs = row()["thumbnails"]
        ledger = self.server.ledger(a)
        other = self.server.request("DELETE", f"/api/generations/{gid}", headers=self.auth(b))
        self.assertEqual(other.status, 404)
        d = self.server.request("DELETE", f"/api/generations/{gid}", headers=self.auth(a))
        self.assertEqual(d.status, 200, d.body)
        self.assertEqual((d.json["deleted"], d.json["objects"], d.json["objectsRemoved"]),
                         (True, 3, True))
        self.assertEqual(self.server.fetch_url(url).status, 404)
        for thumb in (thumbs["small"], thumbs["medium"]):
            self.assertEqual(self.server.fetch_url(thumb).status, 404)
        self.assertEqual(self.server.get(f"/api/generations/{gid}", self.auth(a)).status, 404)
        self.assertEqual(self.server.get("/api/generations", self.auth(a)).json["generations"], [])
        again = self.server.request("DELETE", f"/api/generations/{gid}", headers=self.auth(a))
        self.assertEqual(again.status, 404)
        self.assertEqual(self.server.ledger(a), ledger)  # money is not touched
        self.server.assert_ledger_consistent(self, a)
        for bad in ("not-a-uuid", "00000000-0000-4000-8000-000000000000"):
            r = self.server.request("DELETE", f"/api/generations/{bad}", headers=self.auth(a))
            self.assertEqual(r.status, 404)
        self.assertEqual(self.server.request("DELETE", f"/api/generations/{gid}").status, 401)

    def test_transactions_list_the_ledger(self):
        user = new_user()
        self.server.grant(user, 20)
        self.server.infer(self.server.token(user))
        r = self.server.get("/api/credits/transactions", self.auth(user))
        self.assertEqual(r.status, 200)
        rows = r.json["transactions"]
        self.assertEqual([(t["amount"], t["type"]) for t in rows], [(-8, "generation"), (20, "bonus")])
        self.assertEqual(self.server.get("/api/credits/balance", self.auth(user)).json["balance"], 12)

    def admin(self, body, key=SERVICE_KEY, headers=None):
        h = {"Authorization": f"Bearer {key}"} if key else {}
        h.update(headers or {})
        return self.server.request("POST", "/api/admin/credits", body=body, headers=h)

    def test_admin_grant_needs_service_key_and_is_idempotent(self):
        user = new_user()
        body = {"userId": user, "amount": 50, "type": "purchase", "description": "pack",
                "idempotencyKey": "order-1"}
        for key in (None, "wrong-key-wrong-key-wrong-key", SERVICE_KEY[:-1],
                    self.server.token(user)):
            r = self.admin(body, key)
            self.assertEqual(r.status, 401, key)
        self.assertEqual(self.server.balance(user), 0)
        r1 = self.admin(body)
        self.assertEqual(r1.status, 200, r1.body)
        self.assertEqual(r1.json["new_balance"], 50)
        r2 = self.admin(body)
        self.assertEqual(r2.status, 200)
        self.assertTrue(r2.json["replayed"])
        self.assertEqual(r2.json["transaction_id"], r1.json["transaction_id"])
        self.assertEqual(self.server.balance(user), 50)
        r3 = self.admin(dict(body, amount=60))
        self.assertEqual(r3.status, 409)
        r = self.server.request("POST", "/api/admin/credits", body=dict(body, idempotencyKey=None),
                                headers={"apikey": SERVICE_KEY, "Idempotency-Key": "order-2"})
        self.assertEqual(r.status, 422)  # idempotencyKey must be a string when present
        r = self.admin({"userId": user, "amount": -80, "type": "adjustment"})
        self.assertEqual(r.status, 402)
        self.assertEqual(r.json["balance"], 50)
        for bad in ({"userId": "x", "amount": 5}, {"userId": user, "amount": 0},
                    {"userId": user, "amount": 1.5}, {"userId": user, "amount": 5, "type": "gift"},
                    {"userId": user, "amount": "5"}):
            r = self.admin(bad)
            self.assertEqual(r.status, 422, bad)
        self.assertEqual(self.server.balance(user), 50)
        self.server.assert_ledger_consistent(self, user)


if __name__ == "__main__":
    unittest.main()
