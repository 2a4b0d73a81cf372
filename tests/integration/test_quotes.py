"""Pricing by parameters: the catalog's price rules, POST /api/quote and a
quote honoured by POST /api/infer for ten minutes even when prices change,
through the real binary."""
import json
import os
import tempfile

from harness import Server, ServerTest, new_user

IMG = {"imageUrl": "https://example.com/in.png"}


def quote(server, token, body):
    return server.request("POST", "/api/quote", body=body,
                          headers={"Authorization": f"Bearer {token}"})


class PriceRules(ServerTest):
    def test_models_show_price_rules_and_infer_charges_by_them(self):
        models = {m["id"]: m for m in self.server.get("/api/models").json}
        self.assertEqual(models["nano_banana_pro_edit"]["priceRules"],
                         [{"param": "resolution", "multiply": {"2K": 1.5, "4K": 2}}])
        self.assertEqual(models["veo3_video"]["priceRules"], [])
        user = new_user()
        self.server.grant(user, 100)
        tok = self.server.token(user)
        r = self.server.infer(tok, model="nano_banana_pro_edit", params={"resolution": "4K"},
                              extra={"inputs": {"prompt": "p", **IMG}, "outputsCount": 2})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json["creditsUsed"], 40)  # 10 x 2 (4K) x 2 outputs
        self.assertEqual(self.server.balance(user), 60)
        r = self.server.infer(tok, model="nano_banana_edit",  # 8 x 0.75 x 4
                              extra={"inputs": {"prompt": "p", **IMG}, "outputsCount": 4})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json["creditsUsed"], 24)
        self.assertEqual(self.server.balance(user), 36)
        self.server.assert_ledger_consistent(self, user)

    def test_quote_lines_equal_the_charge_and_the_quote_is_kept(self):
        user = new_user()
        self.server.grant(user, 100)
        tok = self.server.token(user)
        q = quote(self.server, tok, {"modelId": "nano_banana_pro_edit", "outputsCount": 3,
                                     "params": {"resolution": "2K"}})
        self.assertEqual(q.status, 200, q.body)
        b = q.json
        self.assertEqual(b["total"], 45)
        self.assertEqual(b["lines"], [{"modelId": "nano_banana_pro_edit", "outputsCount": 3,
                                       "unitPrice": 15, "credits": 45,
                                       "params": {"resolution": "2K", "aspectRatio": "1:1"}}])
        self.assertIn("expiresAt", b)
        self.assertEqual(self.server.balance(user), 100)  # a quote charges nothing
        r = self.server.infer(tok, model="nano_banana_pro_edit", params={"resolution": "2K"},
                              extra={"inputs": {"prompt": "p", **IMG}, "outputsCount": 3,
                                     "quoteId": b["quoteId"]})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json["creditsUsed"], 45)
        self.assertEqual(self.server.balance(user), 55)
        self.server.assert_ledger_consistent(self, user)

    def test_quote_refusals_charge_nothing(self):
        user, other = new_user(), new_user()
        self.server.grant(user, 100)
        tok = self.server.token(user)
        r = quote(self.server, tok, {"modelId": "nope"})
        self.assertEqual((r.status, r.json["code"]), (404, "model_not_found"))
        r = quote(self.server, tok, {"modelId": "seedream_image", "params": {"image_size": 3}})
        self.assertEqual((r.status, r.json["code"], r.json["field"]),
                         (422, "invalid_parameter", "image_size"))
        r = quote(self.server, tok, {"modelId": "seedream_image", "outputsCount": 9})
        self.assertEqual((r.status, r.json["code"]), (422, "invalid_parameter"))
        self.assertEqual(quote(self.server, "", {"modelId": "seedream_image"}).status, 401)
        qid = quote(self.server, tok, {"modelId": "seedream_image"}).json["quoteId"]
        cases = [
            ({"quoteId": qid, "outputsCount": 2}, 409, "quote_mismatch"),
            ({"quoteId": "not-a-uuid"}, 404, "quote_not_found"),
            ({"quoteId": 7}, 404, "quote_not_found"),
        ]
        for extra, status, code in cases:
            r = self.server.infer(tok, extra=extra)
            self.assertEqual((r.status, r.json["code"]), (status, code), extra)
            self.assertFalse(r.json["success"])
        r = self.server.infer(tok, params={"image_size": "square"}, extra={"quoteId": qid})
        self.assertEqual((r.status, r.json["code"]), (409, "quote_mismatch"))
        r = self.server.infer(self.server.token(other), extra={"quoteId": qid})
        self.assertEqual((r.status, r.json["code"]), (404, "quote_not_found"))
        with self.server.db() as c:
            c.execute("UPDATE quotes SET expires_at = ? WHERE id = ?",
                      ("2000-01-01T00:00:00.000Z", qid))
        r = self.server.infer(tok, extra={"quoteId": qid})
        self.assertEqual((r.status, r.json["code"]), (409, "quote_expired"))
        self.assertEqual(self.server.balance(user), 100)
        self.assertEqual(len(self.server.ledger(user)), 1)  # the grant only
        self.server.assert_ledger_consistent(self, user)


class QuoteAcrossPriceChange(ServerTest):
    def models(self, cost):
        f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        self.addCleanup(os.unlink, f.name)
        json.dump([{"id": "pic", "capability": "image", "provider": "kie", "creditCost": cost,
                    "paramsSchema": {"size": {"type": "string", "default": "s",
                                              "options": ["s", "l"]}},
                    "priceRules": [{"param": "size", "add": {"l": 2}}]}], f)
        f.close()
        return f.name

    def test_a_quote_is_honoured_after_the_prices_change(self):
        s = self.server
        s.stop()
        s.env["LENSROOM_MODELS"] = self.models(5)
        s.start()
        user = new_user()
        s.grant(user, 100)
        tok = s.token(user)
        q = quote(s, tok, {"modelId": "pic", "params": {"size": "l"}, "outputsCount": 2})
        self.assertEqual(q.json["total"], 14, q.body)  # (5 + 2) x 2
        s.stop()
        s.env["LENSROOM_MODELS"] = self.models(9)
        s.start()
        r = s.infer(tok, model="pic", params={"size": "l"},
                    extra={"outputsCount": 2, "quoteId": q.json["quoteId"]})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json["creditsUsed"], 14)
        r = s.infer(tok, model="pic", params={"size": "l"}, extra={"outputsCount": 2})
        self.assertEqual(r.json["creditsUsed"], 22)  # today's price without the quote
        self.assertEqual(s.balance(user), 100 - 14 - 22)
        s.assert_ledger_consistent(self, user)


class CatalogRulesChecked(ServerTest):
    def test_a_rule_on_an_unknown_param_stops_the_start(self):
        f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        self.addCleanup(os.unlink, f.name)
        json.dump([{"id": "x", "capability": "image", "creditCost": 3,
                    "priceRules": [{"param": "nope", "multiply": {"a": 2}}]}], f)
        f.close()
        s = Server({"LENSROOM_MODELS": f.name})
        self.addCleanup(s.cleanup)
        s.start(expect_ok=False)
        s.proc.wait(timeout=60)
        self.assertNotEqual(s.proc.returncode, 0)
        self.assertIn("priceRules[0].param", s.read_log())
