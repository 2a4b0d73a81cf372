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


def node(nid, model, prompt, image=None, **extra):
    inputs = {"prompt": prompt}
    if image is not None:
        inputs["imageUrl"] = image
    return {"id": nid, "modelId": model, "inputs": inputs, **extra}


def ref(s):
    return {"$ref": s}


FIVE = [  # text prompt -> image -> two edits in parallel -> video
    node("prompt", "anthropic_text", "describe a dragon"),
    node("image", "seedream_image", ref("prompt.outputs[0]")),
    node("left", "nano_banana_pro_edit", "make it blue", ref("image.outputs[0]"),
         params={"resolution": "4K"}),
    node("right", "nano_banana_edit", "make it red", ref("image.outputs[0]")),
    node("video", "veo3_video", ref("prompt.outputs[0]")),
]


class GraphQuotes(ServerTest):
    def setUp(self):
        super().setUp()
        self.user = new_user()
        self.server.grant(self.user, 100)
        self.tok = self.server.token(self.user)

    def quote(self, nodes, **extra):
        return quote(self.server, self.tok, {"graph": {"nodes": nodes}, **extra})

    def test_a_five_node_graph_is_priced_line_by_line_in_run_order(self):
        r = self.quote(list(reversed(FIVE)))
        self.assertEqual(r.status, 200, r.body)
        lines = r.json["lines"]
        order = [l["nodeId"] for l in lines]
        self.assertEqual(set(order), {"prompt", "image", "left", "right", "video"})
        self.assertLess(order.index("prompt"), order.index("image"))
        self.assertLess(order.index("image"), order.index("left"))
        self.assertLess(order.index("image"), order.index("right"))
        self.assertLess(order.index("prompt"), order.index("video"))
        credits = {l["nodeId"]: l["credits"] for l in lines}
        self.assertEqual(credits, {"prompt": 2, "image": 8, "left": 20, "right": 8,
                                   "video": 25})
        self.assertEqual(r.json["total"], 63)
        r = self.quote(FIVE, maxCredits=62)
        self.assertEqual((r.status, r.json["code"], r.json["required"]),
                         (402, "max_credits_exceeded", 63))
        self.assertEqual(self.server.balance(self.user), 100)

    def test_graph_errors_are_422_keyed_by_node_and_charge_nothing(self):
        cases = [
            ([node("a", "seedream_image", ref("b.outputs[0]")),
              node("b", "anthropic_text", ref("a.outputs[0]"))],
             {"b": "type_mismatch"}),  # text into a's prompt fits; an image into b's does not
            ([node("a", "anthropic_text", ref("b.outputs[0]")),
              node("b", "anthropic_text", ref("a.outputs[0]"))],
             {"a": "graph_cycle", "b": "graph_cycle"}),
            ([node("a", "seedream_image", ref("ghost.outputs[0]"))],
             {"a": "dangling_reference"}),
            ([node("a", "seedream_image", "x"),
              node("b", "nano_banana_edit", "y", ref("a.outputs[1]"))],
             {"b": "dangling_reference"}),
            ([node("a", "seedream_image", "x"),
              node("b", "anthropic_text", "y",
                   params={"temperature": ref("a.outputs[0]")})],
             {"b": "type_mismatch"}),
            ([node("a", "nope", "x"), node("b", "seedream_image", "y",
                                          params={"image_size": "huge"})],
             {"a": "model_not_found", "b": "invalid_parameter"}),
            ([node("a", "nano_banana_edit", "x")], {"a": "missing_input_image"}),
        ]
        for nodes, want in cases:
            r = self.quote(nodes)
            self.assertEqual((r.status, r.json["code"]), (422, "invalid_graph"), r.body)
            self.assertFalse(r.json["success"])
            got = {k: v[0]["code"] for k, v in r.json["nodeErrors"].items()}
            self.assertEqual(got, want, r.body)
        r = self.quote([node(f"n{i}", "seedream_image", "x") for i in range(200)])
        self.assertEqual((r.status, r.json["code"]), (413, "graph_too_large"))
        r = self.quote([node("a", "seedream_image", "x")], maxCredits="lots")
        self.assertEqual((r.status, r.json["field"]), (400, "maxCredits"))
        self.assertEqual(self.server.balance(self.user), 100)
        self.assertEqual(len(self.server.ledger(self.user)), 1)
