"""POST /api/infer through the real binary: the original quick start, its
error statuses, batches, async answers, and refunds on failure."""
import io
import time
import unittest

from PIL import Image

from harness import Server, ServerTest, new_user


def decode_png(data):
    img = Image.open(io.BytesIO(data))
    img.load()  # a real decode, not just the magic bytes
    return img


class InferSuccess(ServerTest):
    def test_quickstart_returns_stored_png_and_charges_cost(self):
        user = new_user()
        self.server.grant(user, 100)
        r = self.server.infer(self.server.token(user))
        self.assertEqual(r.status, 200, r.body)
        b = r.json
        self.assertTrue(b["success"])
        self.assertEqual(b["newBalance"], 92)
        self.assertEqual(b["balance"], 92)
        self.assertEqual(b["creditsUsed"], 8)
        self.assertEqual(b["status"], "success")
        gid = b["generationId"]
        self.assertEqual(b["meta"]["generationId"], gid)
        for k in ("modelId", "provider", "taskIds", "duration", "outputsCount", "succeededCount",
                  "failedCount"):
            self.assertIn(k, b["meta"])
        self.assertEqual(b["meta"]["outputsCount"], 1)
        self.assertEqual(len(b["urls"]), 1)
        self.assertEqual(b["url"], b["urls"][0])
        self.assertTrue(b["url"].endswith(f"/storage/v1/object/public/generations/{user}/photo/{gid}.png"))
        f = self.server.fetch_url(b["url"])
        self.assertEqual(f.status, 200)
        self.assertEqual(f.header("content-type"), "image/png")
        img = decode_png(f.body)
        self.assertEqual(img.size, (256, 256))
        self.assertEqual(self.server.balance(user), 92)
        with self.server.db() as c:
            status, urls = c.execute("SELECT status, result_urls FROM generations WHERE id = ?",
                                     (gid,)).fetchone()
        self.assertEqual(status, "success")
        self.assertIn(gid, str(urls))  # TEXT on SQLite, a decoded list on PostgreSQL
        self.assertIsNotNone(r.header("x-request-id"))
        self.server.assert_ledger_consistent(self, user)

    def test_batch_charges_per_output_and_stores_each(self):
        user = new_user()
        self.server.grant(user, 100)
        r = self.server.infer(self.server.token(user), extra={"outputsCount": 3},
                              params={"image_size": "landscape_16_9"})
        self.assertEqual(r.status, 200, r.body)
        b = r.json
        self.assertEqual(len(b["urls"]), 3)
        self.assertEqual(b["creditsUsed"], 24)
        self.assertEqual(b["newBalance"], 76)
        sizes = {decode_png(self.server.fetch_url(u).body).size for u in b["urls"]}
        self.assertEqual(sizes, {(256, 144)})
        self.server.assert_ledger_consistent(self, user)

    def test_video_model_stores_mp4_under_video(self):
        user = new_user()
        self.server.grant(user, 25)
        r = self.server.infer(self.server.token(user), model="veo3_video")
        self.assertEqual(r.status, 200, r.body)
        url = r.json["url"]
        self.assertIn(f"/{user}/video/", url)
        self.assertTrue(url.endswith(".mp4"))
        f = self.server.fetch_url(url)
        self.assertEqual(f.header("content-type"), "video/mp4")
        self.assertEqual(f.body[4:8], b"ftyp")
        self.assertEqual(r.json["newBalance"], 0)

    def test_text_model_answers_text(self):
        user = new_user()
        self.server.grant(user, 2)
        r = self.server.infer(self.server.token(user), model="anthropic_text", prompt="hello")
        self.assertEqual(r.status, 200, r.body)
        self.assertIn("hello", r.json["text"])
        self.assertEqual(r.json["urls"], [])
        self.assertEqual(r.json["newBalance"], 0)
        g = self.server.get(f"/api/generations/{r.json['generationId']}",
                            {"Authorization": "Bearer " + self.server.token(user)})
        self.assertIn("hello", g.json["generation"]["text"])

    def test_edit_model_needs_input_image(self):
        user = new_user()
        self.server.grant(user, 50)
        tok = self.server.token(user)
        r = self.server.infer(tok, model="nano_banana_edit")
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json["code"], "missing_input_image")
        self.assertEqual(self.server.balance(user), 50)
        r = self.server.infer(tok, model="nano_banana_edit",
                              extra={"inputs": {"prompt": "make it blue",
                                                "imageUrl": "https://example.com/in.png"}})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json["newBalance"], 42)

    def test_models_endpoint_lists_enabled_catalog(self):
        r = self.server.get("/api/models")
        self.assertEqual(r.status, 200)
        models = {m["id"]: m for m in r.json}
        self.assertEqual(models["seedream_image"]["creditCost"], 8)
        self.assertEqual(models["veo3_video"]["creditCost"], 25)
        self.assertNotIn("midjourney_image", models)
        for m in r.json:
            self.assertEqual(set(m), {"id", "title", "provider", "capability", "enabled",
                                      "creditCost", "paramsSchema", "priceRules"})


class InferErrors(ServerTest):
    def setUp(self):
        super().setUp()
        self.user = new_user()
        self.server.grant(self.user, 100)
        self.tok = self.server.token(self.user)
        self.cookie = {"Cookie": f"lr_session={self.tok}"}

    def assertError(self, r, status, code):
        self.assertEqual(r.status, status, r.body)
        b = r.json
        self.assertIs(b["success"], False)
        self.assertIsInstance(b["error"], str)
        self.assertTrue(b["error"])
        self.assertEqual(b["code"], code)
        self.assertEqual(self.server.balance(self.user), 100, "no credit may move")
        return b

    def post(self, raw, content_type="application/json"):
        h = dict(self.cookie)
        if content_type:
            h["Content-Type"] = content_type
        return self.server.request("POST", "/api/infer", raw=raw, headers=h)

    def test_malformed_json_is_400(self):
        for raw in (b"{", b"not json", b"", b"[1,2]", b'"str"', b'{"modelId": "seedream_image",}',
                    b"\xff\xfe", b'{"a":1,"a":2}'):
            self.assertError(self.post(raw), 400, "invalid_json")

    def assertNothingRecorded(self):
        self.assertEqual([t for _, t, _ in self.server.ledger(self.user)], ["bonus"])
        with self.server.db() as c:
            self.assertEqual(c.execute("SELECT count(*) FROM generations").fetchone()[0], 0)

    def test_nul_in_the_prompt_is_422_invalid_prompt(self):
        for prompt in ("\\u0000", "a dragon\\u0000", "\\u0000a dragon", "a \\u0000 dragon"):
            with self.subTest(prompt=prompt):
                raw = ('{"modelId":"seedream_image","inputs":{"prompt":"%s"},"params":{}}'
                       % prompt).encode()
                b = self.assertError(self.post(raw), 422, "invalid_prompt")
                self.assertEqual(b["field"], "inputs.prompt")
                self.assertIn("NUL", b["error"])
        b = self.assertError(self.server.infer(self.tok, prompt="x" * 10001), 422,
                             "invalid_prompt")
        self.assertIn("10000 bytes", b["error"])
        self.assertNothingRecorded()

    def test_nul_anywhere_else_is_400_naming_the_field(self):
        cases = [
            ('{"modelId":"seedream_image\\u0000x","inputs":{"prompt":"p"}}', "modelId"),
            ('{"modelId":"seedream_image","inputs":{"prompt":"p"},'
             '"params":{"image_size":"square_hd\\u0000"}}', "params.image_size"),
            ('{"modelId":"nano_banana_edit","inputs":{"prompt":"p",'
             '"images":["data:image/png;base64,AA==","\\u0000"]}}', "inputs.images[1]"),
            ('{"modelId":"seedream_image","inputs":{"prompt":"p","imageUrl":"https://a\\u0000b"}}',
             "inputs.imageUrl"),
        ]
        for raw, field in cases:
            with self.subTest(field=field):
                b = self.assertError(self.post(raw.encode()), 400, "invalid_json")
                self.assertEqual(b["field"], field)
                self.assertIn("NUL", b["error"])
        b = self.assertError(self.post(b'{"modelId":"seedream_image","inputs":{"prompt":"p"},'
                                       b'"a\u0000b":1}'), 400, "invalid_json")
        self.assertIn("NUL", b["error"])
        self.assertNothingRecorded()

    def test_missing_fields_is_400(self):
        bodies = [{}, {"modelId": "seedream_image"}, {"inputs": {"prompt": "x"}},
                  {"modelId": "seedream_image", "inputs": {"prompt": ""}},
                  {"modelId": 5, "inputs": {"prompt": "x"}},
                  {"modelId": "seedream_image", "inputs": "x"},
                  {"modelId": "seedream_image", "inputs": {"prompt": 7}}]
        for body in bodies:
            r = self.server.request("POST", "/api/infer", body=body, headers=self.cookie)
            self.assertError(r, 400, "missing_fields")

    def test_wrong_content_type_is_415(self):
        self.assertError(self.post(b'{"modelId":"seedream_image","inputs":{"prompt":"x"}}',
                                   "text/plain"), 415, "unsupported_media_type")
        self.assertError(self.post(b'{"modelId":"seedream_image","inputs":{"prompt":"x"}}', None),
                         415, "unsupported_media_type")

    def test_body_too_large_is_413(self):
        raw = b'{"modelId":"seedream_image","inputs":{"prompt":"' + b"x" * (17 << 20) + b'"}}'
        self.assertError(self.post(raw), 413, "body_too_large")

    def test_unknown_and_disabled_model_is_404(self):
        for model in ("no_such_model", "midjourney_image"):
            r = self.server.infer(self.tok, model=model)
            self.assertError(r, 404, "model_not_found")

    def test_bad_params_is_422_naming_the_field(self):
        cases = [({"image_size": "gigantic"}, "image_size"), ({"image_size": 1}, "image_size"),
                 ({"bogus": 1}, "bogus")]
        for params, field in cases:
            b = self.assertError(self.server.infer(self.tok, params=params), 422,
                                 "invalid_parameter")
            self.assertEqual(b["field"], field)
        b = self.assertError(self.server.infer(self.tok, model="anthropic_text",
                                               params={"temperature": 2}), 422, "invalid_parameter")
        self.assertEqual(b["field"], "temperature")
        for n in (0, 5, "2", 1.5):
            b = self.assertError(self.server.infer(self.tok, extra={"outputsCount": n}), 422,
                                 "invalid_parameter")
            self.assertEqual(b["field"], "outputsCount")

    def test_insufficient_credits_is_402_with_required_and_balance(self):
        r = self.server.infer(self.tok, model="veo3_video", extra={"outputsCount": 4})
        self.assertEqual(r.status, 200, r.body)  # exactly 100: allowed, balance 0
        self.server.grant(self.user, 100)
        r = self.server.infer(self.tok, model="veo3_video", extra={"outputsCount": 5})
        self.assertError(r, 422, "invalid_parameter")
        self.server.grant(self.user, -90)  # 10 left
        other = new_user()
        self.server.grant(other, 10)
        r = self.server.infer(self.server.token(other), model="veo3_video")
        self.assertEqual(r.status, 402)
        b = r.json
        self.assertEqual(b["code"], "insufficient_credits")
        self.assertEqual(b["error"], "Insufficient credits. You have 10, need 25.")
        self.assertEqual((b["required"], b["balance"]), (25, 10))
        self.assertEqual(self.server.balance(other), 10)
        with self.server.db() as c:
            self.assertEqual(c.execute("SELECT count(*) FROM generations WHERE user_id = ?",
                                       (other,)).fetchone()[0], 0)
        self.server.assert_ledger_consistent(self, other)

    def test_wrong_method_is_405(self):
        r = self.server.get("/api/infer", self.cookie)
        self.assertError(r, 405, "method_not_allowed")


class InferAsync(ServerTest):
    server_env = {"LENSROOM_MOCK_LATENCY_MS": "3000"}

    def test_respond_async_answers_202_then_poll_shows_success(self):
        user = new_user()
        self.server.grant(user, 8)
        tok = self.server.token(user)
        r = self.server.infer(tok, headers={"Prefer": "respond-async"})
        self.assertEqual(r.status, 202, r.body)
        gid = r.json["generationId"]
        self.assertEqual(r.header("location"), f"/api/generations/{gid}")
        self.assertEqual(r.json["status"], "processing")
        self.assertEqual(self.server.balance(user), 0)  # charged at reserve
        auth = {"Authorization": f"Bearer {tok}"}
        g = self.server.get(f"/api/generations/{gid}", auth).json["generation"]
        self.assertIn(g["status"], ("pending", "processing"))
        deadline = time.time() + 30
        while g["status"] not in ("success", "failed") and time.time() < deadline:
            time.sleep(0.2)
            g = self.server.get(f"/api/generations/{gid}", auth).json["generation"]
        self.assertEqual(g["status"], "success")
        self.assertEqual(len(g["resultUrls"]), 1)
        decode_png(self.server.fetch_url(g["url"]).body)

    def test_deleting_a_running_generation_is_409(self):
        user = new_user()
        self.server.grant(user, 8)
        tok = self.server.token(user)
        gid = self.server.infer(tok, headers={"Prefer": "respond-async"}).json["generationId"]
        r = self.server.request("DELETE", f"/api/generations/{gid}",
                                headers={"Authorization": f"Bearer {tok}"})
        self.assertEqual(r.status, 409, r.body)
        self.assertEqual(r.json["code"], "generation_running")

    def test_wait_limit_answers_202_and_generation_still_finishes(self):
        user = new_user()
        self.server.grant(user, 8)
        tok = self.server.token(user)
        r = self.server.infer(tok, headers={"Prefer": "wait=1"})
        self.assertEqual(r.status, 202, r.body)
        gid = r.json["generationId"]
        self.assertEqual(self.server.wait_settled(gid, tok), "success")
        self.server.assert_ledger_consistent(self, user)

    def test_waiting_longer_than_latency_gets_200(self):
        user = new_user()
        self.server.grant(user, 8)
        r = self.server.infer(self.server.token(user), headers={"Prefer": "wait=10"})
        self.assertEqual(r.status, 200, r.body)


class InferFailure(ServerTest):
    server_env = {"LENSROOM_MOCK_FAIL_RATE": "1"}

    def test_failed_generation_is_refunded_once(self):
        user = new_user()
        self.server.grant(user, 40)
        r = self.server.infer(self.server.token(user), extra={"outputsCount": 2})
        self.assertEqual(r.status, 502, r.body)
        b = r.json
        self.assertIs(b["success"], False)
        self.assertEqual(b["code"], "provider_failed")
        self.assertEqual(b["refunded"], 16)
        self.assertEqual(b["balance"], 40)
        self.assertIsInstance(b["error"], str)
        self.assertEqual(self.server.balance(user), 40)
        ledger = self.server.ledger(user)
        kinds = [(amount, kind) for amount, kind, _ in ledger]
        self.assertEqual(kinds, [(40, "bonus"), (-16, "generation"), (16, "refund")])
        with self.server.db() as c:
            status, code, used = c.execute(
                "SELECT status, error_code, credits_used FROM generations WHERE id = ?",
                (b["generationId"],)).fetchone()
        self.assertEqual((status, code, used), ("failed", "provider_failed", 0))
        self.server.assert_ledger_consistent(self, user)


class InferPartialFailure(ServerTest):
    server_env = {"LENSROOM_MOCK_FAIL_RATE": "0.5"}

    def test_failed_variants_are_refunded_and_ledger_balances(self):
        user = new_user()
        self.server.grant(user, 8 * 4 * 6)
        tok = self.server.token(user)
        for _ in range(6):
            r = self.server.infer(tok, extra={"outputsCount": 4})
            self.assertIn(r.status, (200, 502), r.body)
            if r.status == 200:
                b = r.json
                self.assertEqual(b["meta"]["succeededCount"] + b["meta"]["failedCount"], 4)
                self.assertEqual(len(b["urls"]), b["meta"]["succeededCount"])
                self.assertEqual(b["creditsUsed"], 8 * b["meta"]["succeededCount"])
        self.server.assert_ledger_consistent(self, user)


if __name__ == "__main__":
    unittest.main()
