"""The real providers against faithful fakes of Kie.ai and Anthropic
(fake_providers.py): every fault ends with the right answer to the user,
the right final state, and money that moved exactly as it should —
charged once on success, charged and refunded once on failure."""
import base64
import json
import os
import tempfile
import time
import unittest

from fake_providers import ANTHROPIC_KEY, FakeProviders, KIE_KEY, real_mp4
from harness import Server, new_user, wait_for

FAKE = None


def setUpModule():
    global FAKE
    FAKE = FakeProviders(mp4=real_mp4())


def tearDownModule():
    FAKE.close()


class KieBase(unittest.TestCase):
    extra_env = {}

    def setUp(self):
        env = FAKE.env()
        env.update(self.extra_env)
        self.server = Server(env).start()
        self.addCleanup(self.server.cleanup)
        self.user = new_user()
        self.server.grant(self.user, 200)
        self.token = self.server.token(self.user)

    def infer(self, prompt, model="seedream_image", **kw):
        return self.server.infer(self.token, model=model, prompt=prompt, **kw)

    def generation(self, gid):
        r = self.server.get(f"/api/generations/{gid}",
                            headers={"Cookie": f"lr_session={self.token}"})
        self.assertEqual(r.status, 200, r.body)
        return r.json["generation"]

    def assert_failed(self, r, status, code, cost=8, text=None):
        self.assertEqual(r.status, status, r.body)
        b = r.json
        self.assertFalse(b["success"])
        self.assertIsInstance(b["error"], str)
        self.assertEqual(b["code"], code, b)
        self.assertEqual(b["refunded"], cost)
        self.assertEqual(b["balance"], 200)
        if text:
            self.assertIn(text, b["error"])
        g = self.generation(b["generationId"])
        self.assertEqual(g["status"], "failed")
        self.assertEqual(g["error"]["code"], code)
        self.assertEqual(self.server.balance(self.user), 200)
        ledger = [x for x in self.server.ledger(self.user) if x[2] == b["generationId"]]
        self.assertEqual(sorted(x[1] for x in ledger), ["generation", "refund"])
        self.server.assert_ledger_consistent(self, self.user)
        return b

    def assert_success(self, r, cost=8, folder="photo", ext="png"):
        self.assertEqual(r.status, 200, r.body)
        b = r.json
        self.assertTrue(b["success"])
        self.assertEqual(b["newBalance"], 200 - cost)
        self.assertEqual(self.server.balance(self.user), 200 - cost)
        self.assertIn(f"/{self.user}/{folder}/{b['generationId']}.{ext}", b["url"])
        stored = self.server.fetch_url(b["url"])
        self.assertEqual(stored.status, 200)
        self.assertEqual(stored.body, FAKE.mp4 if ext == "mp4" else FAKE.png)
        g = self.generation(b["generationId"])
        self.assertEqual(g["status"], "success")
        self.assertEqual(g["taskIds"], b["meta"]["taskIds"])
        self.assertEqual(len(g["taskIds"]), 1)
        self.server.assert_ledger_consistent(self, self.user)
        return b


class MarketAndVeo(KieBase):
    def test_seedream_original_size_names_reach_kie_as_its_own(self):
        # the original front end sends "portrait"; Kie lists portrait_4_3
        b = self.assert_success(self.infer("a tall tower", params={"image_size": "portrait"}))
        create = [x for x in FAKE.requests_to("/api/v1/jobs/createTask")
                  if x["body"]["input"]["prompt"] == "a tall tower"][0]
        self.assertEqual(create["body"]["input"]["image_size"], "portrait_4_3")
        self.assertEqual(self.generation(b["generationId"])["params"]["image_size"], "portrait_4_3")

    def test_seedream_request_mapping_and_stored_result(self):
        b = self.assert_success(self.infer("a red fox", params={"image_size": "landscape_16_9"}))
        self.assertEqual(b["meta"]["provider"], "kie")
        create = [x for x in FAKE.requests_to("/api/v1/jobs/createTask")
                  if x["body"]["input"]["prompt"] == "a red fox"][0]
        self.assertEqual(create["headers"]["Authorization"], f"Bearer {KIE_KEY}")
        self.assertEqual(create["body"]["model"], "bytedance/seedream")
        # docs.kie.ai/market/seedream/seedream: prompt, image_size, guidance_scale, seed
        self.assertEqual(create["body"]["input"], {"prompt": "a red fox",
                                                   "image_size": "landscape_16_9",
                                                   "guidance_scale": 2.5})
        self.assertNotIn("callBackUrl", create["body"])  # no public URL configured
        tid = b["meta"]["taskIds"][0]
        self.assertTrue(FAKE.requests_to(f"/api/v1/jobs/recordInfo?taskId={tid}"))

    def test_veo_video(self):
        b = self.assert_success(self.infer("waves at dusk", model="veo3_video",
                                           params={"aspectRatio": "9:16"}),
                                cost=25, folder="video", ext="mp4")
        create = [x for x in FAKE.requests_to("/api/v1/veo/generate")
                  if x["body"]["prompt"] == "waves at dusk"][0]
        self.assertEqual(create["body"]["model"], "veo3")
        # docs.kie.ai/veo3-api/generate-veo-3-video: aspect_ratio 16:9, 9:16 or Auto
        self.assertEqual(create["body"]["aspect_ratio"], "9:16")
        self.assertNotIn("aspectRatio", create["body"])
        self.assertTrue(FAKE.requests_to(f"/api/v1/veo/record-info?taskId={b['meta']['taskIds'][0]}"))

    def test_veo_offers_only_the_ratios_kie_lists(self):
        r = self.infer("square waves", model="veo3_video", params={"aspectRatio": "1:1"})
        self.assertEqual(r.status, 422, r.body)
        self.assertEqual(r.json["code"], "invalid_parameter")
        self.assertEqual(r.json["field"], "aspectRatio")
        self.assertIsInstance(r.json["error"], str)
        self.assertEqual(self.server.balance(self.user), 200)
        self.assertEqual(self.server.ledger(self.user)[1:], [])
        self.assertFalse([x for x in FAKE.requests_to("/api/v1/veo/generate")
                          if x["body"]["prompt"] == "square waves"])
        models = {m["id"]: m for m in self.server.get("/api/models").json}
        self.assertEqual(models["veo3_video"]["paramsSchema"]["aspectRatio"]["options"],
                         ["16:9", "9:16"])

    def test_veo_failure_is_refunded(self):
        self.assert_failed(self.infer("storm [poll_fail]", model="veo3_video"), 502,
                           "provider_failed", cost=25, text="unsafe")

    def test_batch_of_three_tasks(self):
        r = self.infer("three cats", extra={"outputsCount": 3})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(len(r.json["urls"]), 3)
        self.assertEqual(len(set(r.json["meta"]["taskIds"])), 3)
        self.assertEqual(self.server.balance(self.user), 200 - 24)
        self.server.assert_ledger_consistent(self, self.user)


class CreateFaults(KieBase):
    def test_key_rejected_401(self):
        self.assert_failed(self.infer("x [create_401]"), 502, "provider_auth")
        log = self.server.read_log()
        self.assertIn("Kie.ai rejected KIE_API_KEY", log)
        self.assertNotIn(KIE_KEY, log)

    def test_key_rejected_as_code_in_http_200(self):
        self.assert_failed(self.infer("x [create_401_in_200]"), 502, "provider_auth")

    def test_kie_account_out_of_credits_402(self):
        self.assert_failed(self.infer("x [create_402]"), 503, "provider_out_of_credits")
        self.assertIn("Kie.ai account has no credits", self.server.read_log())

    def test_invalid_input_422_carries_kies_message(self):
        self.assert_failed(self.infer("x [create_422]"), 422, "input_rejected",
                           text="prompt violates content policy")

    def test_rate_limit_waits_and_retries(self):
        prompt = f"x [create_429_once] {time.time()}"
        self.assert_success(self.infer(prompt))
        creates = [x for x in FAKE.requests_to("/api/v1/jobs/createTask")
                   if x["body"]["input"]["prompt"] == prompt]
        self.assertEqual(len(creates), 2)

    def test_server_error_once_is_retried(self):
        self.assert_success(self.infer(f"x [create_500_once] {time.time()}"))

    def test_server_error_always_fails_after_retries(self):
        self.assert_failed(self.infer("x [create_500]"), 502, "provider_error")

    def test_maintenance_455(self):
        self.assert_failed(self.infer("x [create_455]"), 503, "provider_unavailable")

    def test_malformed_json(self):
        self.assert_failed(self.infer("x [create_malformed]"), 502, "provider_error")

    def test_success_without_task_id(self):
        self.assert_failed(self.infer("x [create_no_task_id]"), 502, "provider_error")


class PollFaults(KieBase):
    def test_5xx_while_polling_keeps_polling(self):
        self.assert_success(self.infer("x [poll_500_3]"))

    def test_malformed_status_keeps_polling(self):
        self.assert_success(self.infer("x [poll_malformed_2]"))

    def test_auth_blip_while_polling_keeps_polling(self):
        self.assert_success(self.infer("x [poll_401_once]"))

    def test_task_failed_at_kie(self):
        self.assert_failed(self.infer("x [poll_fail]"), 502, "provider_failed", text="nsfw")

    def test_success_without_a_result_url_is_a_provider_failure(self):
        for fault in ("result_empty_string", "result_empty_list", "result_missing"):
            with self.subTest(fault=fault):
                self.assert_failed(self.infer(f"x [{fault}]"), 502, "provider_failed",
                                   text="without a result URL")
        self.assert_failed(self.infer("x [result_empty_string]", model="veo3_video"), 502,
                           "provider_failed", cost=25, text="without a result URL")

    def test_task_unknown_to_kie(self):
        self.assert_failed(self.infer("x [poll_404]"), 502, "provider_failed",
                           text="no longer knows")

    def test_wait_limit_is_not_a_failure(self):
        r = self.infer("slow [delay_3]", headers={"Prefer": "wait=1"})
        self.assertEqual(r.status, 202, r.body)
        gid = r.json["generationId"]
        g = self.generation(gid)
        self.assertEqual(g["status"], "processing")
        self.assertEqual(len(g["taskIds"]), 1)  # recorded as soon as Kie answered
        self.assertEqual(self.server.balance(self.user), 192)
        deadline = time.time() + 20
        while time.time() < deadline and self.generation(gid)["status"] == "processing":
            time.sleep(0.2)
        self.assertEqual(self.generation(gid)["status"], "success")
        self.assertEqual(self.server.balance(self.user), 192)


class Idempotency(KieBase):
    def test_retry_with_same_key_creates_one_kie_task_and_charges_once(self):
        prompt = f"once [delay_2] {time.time()}"
        key = {"Idempotency-Key": "retry-" + str(time.time())}
        first = self.infer(prompt, headers={**key, "Prefer": "wait=0"})
        self.assertEqual(first.status, 202, first.body)
        running = self.infer(prompt, headers=key)  # while Kie still works on it
        self.assertEqual(running.status, 409, running.body)
        self.assertEqual(running.json["code"], "idempotency_in_progress")
        gid = first.json["generationId"]
        deadline = time.time() + 20
        # pending until Kie accepted the task, then processing
        while time.time() < deadline and self.generation(gid)["status"] in ("pending", "processing"):
            time.sleep(0.2)
        replay = self.infer(prompt, headers=key)
        self.assertEqual(replay.status, 200, replay.body)
        self.assertEqual(replay.header("Idempotent-Replayed"), "true")
        self.assertEqual(replay.json["generationId"], gid)
        creates = [x for x in FAKE.requests_to("/api/v1/jobs/createTask")
                   if x["body"]["input"]["prompt"] == prompt]
        self.assertEqual(len(creates), 1)
        self.assertEqual(self.server.balance(self.user), 192)
        self.server.assert_ledger_consistent(self, self.user)


class Deadline(KieBase):
    extra_env = {"LENSROOM_TASK_DEADLINE_S": "2"}

    def test_task_that_never_finishes_fails_at_the_deadline(self):
        self.assert_failed(self.infer("x [poll_never]"), 504, "provider_timeout")


class DownloadFaults(KieBase):
    def test_slow_download_completes(self):
        self.assert_success(self.infer("x [dl_slow]"))

    def test_cut_download_is_retried(self):
        self.assert_success(self.infer(f"x [dl_cut_once] {time.time()}"))

    def test_download_cut_every_time(self):
        self.assert_failed(self.infer("x [dl_cut]"), 502, "download_failed")

    def test_expired_result_file(self):
        self.assert_failed(self.infer("x [dl_404]"), 502, "download_failed", text="HTTP 404")

    def test_oversized_file_aborts_and_keeps_nothing(self):
        b = self.assert_failed(self.infer("x [dl_big]"), 502, "output_too_large")
        self.assertFalse(self.stored_files())
        del b

    def test_png_label_on_html(self):
        self.assert_failed(self.infer("x [dl_html]"), 502, "output_type_not_allowed")
        self.assertFalse(self.stored_files())

    def test_redirects_to_internal_addresses_are_refused(self):
        cases = [("dl_redirect_local", "only https"),
                 ("dl_redirect_local_https", "private or loopback")]
        if FAKE.loopback_name:
            cases.append(("dl_redirect_name", "internal address 127.0.0.1"))
        for fault, why in cases:
            with self.subTest(fault=fault):
                before = FAKE.internal_hits
                r = self.infer(f"x [{fault}]")
                self.assertEqual(r.status, 502, r.body)
                self.assertEqual(r.json["code"], "output_url_refused")
                self.assertIn(why, r.json["error"])
                self.assertEqual(FAKE.internal_hits, before)
        self.assertEqual(self.server.balance(self.user), 200)
        self.server.assert_ledger_consistent(self, self.user)

    def stored_files(self):
        root = os.path.join(self.server.data_dir, "storage")
        found = []
        for d, _, files in os.walk(root):
            found += [f for f in files if not f.startswith(".")]
        return found


class NotAllowListed(KieBase):
    """Without the test allow-list, Kie's loopback result URL is refused."""

    def setUp(self):
        env = FAKE.env()
        del env["LENSROOM_FETCH_ALLOW"]
        self.server = Server(env).start()
        self.addCleanup(self.server.cleanup)
        self.user = new_user()
        self.server.grant(self.user, 200)
        self.token = self.server.token(self.user)

    def test_http_loopback_result_url_refused(self):
        self.assert_failed(self.infer("x"), 502, "output_url_refused")


class EditInputs(KieBase):
    def data_url(self, data, mime="image/png"):
        return f"data:{mime};base64," + base64.b64encode(data).decode()

    def test_data_url_is_stored_and_handed_to_kie(self):
        r = self.infer("make it blue", model="nano_banana_edit",
                       params={"aspectRatio": "16:9"},
                       extra={"inputs": {"prompt": "make it blue",
                                         "images": [self.data_url(FAKE.png)]}})
        b = self.assert_success(r)
        create = [x for x in FAKE.requests_to("/api/v1/jobs/createTask")
                  if x["body"]["input"]["prompt"] == "make it blue"][0]
        self.assertEqual(create["body"]["model"], "google/nano-banana-edit")
        urls = create["body"]["input"]["image_urls"]
        self.assertEqual(len(urls), 1)
        self.assertIn(f"/{self.user}/inputs/{b['generationId']}_0.png", urls[0])
        self.assertEqual(self.server.fetch_url(urls[0]).body, FAKE.png)
        # docs.kie.ai/market/google/nano-banana-edit
        self.assertEqual(create["body"]["input"]["aspect_ratio"], "16:9")
        self.assertEqual(create["body"]["input"]["output_format"], "png")
        self.assertEqual(set(create["body"]["input"]),
                         {"prompt", "image_urls", "aspect_ratio", "output_format"})
        # deleting the generation removes the uploaded input with the result
        # and its two thumbnails (made after settle: waited for first)
        auth = {"Cookie": f"lr_session={self.token}"}
        row = lambda: self.server.get(f"/api/generations/{b['generationId']}",
                                      auth).json["generation"]
        self.assertTrue(wait_for(lambda: row()["previewStatus"] == "ready", 60))
        d = self.server.request("DELETE", f"/api/generations/{b['generationId']}", headers=auth)
        self.assertEqual(d.status, 200, d.body)
        self.assertEqual(d.json["objects"], 4)
        self.assertEqual(self.server.fetch_url(urls[0]).status, 404)
        self.assertEqual(self.server.fetch_url(b["url"]).status, 404)

    def test_image_url_passes_through(self):
        r = self.infer("sharper", model="nano_banana_pro_edit",
                       params={"resolution": "2K"},
                       extra={"inputs": {"prompt": "sharper",
                                         "imageUrl": "https://images.example.com/cat.png"}})
        self.assert_success(r, cost=15)  # 10 x 1.5: the catalog's price rule for 2K
        create = [x for x in FAKE.requests_to("/api/v1/jobs/createTask")
                  if x["body"]["input"]["prompt"] == "sharper"][0]
        # docs.kie.ai/market/google/pro-image-to-image: nano-banana-pro, image_input
        self.assertEqual(create["body"]["model"], "nano-banana-pro")
        self.assertEqual(create["body"]["input"], {
            "prompt": "sharper", "image_input": ["https://images.example.com/cat.png"],
            "aspect_ratio": "1:1", "resolution": "2K", "output_format": "png"})

    def test_pro_edit_takes_no_google_search_flag(self):
        self.check_refused({"imageUrl": "https://images.example.com/cat.png"}, 422,
                           "invalid_parameter", model="nano_banana_pro_edit",
                           params={"useGoogleSearch": True})

    def check_refused(self, inputs, status, code, model="nano_banana_edit", params=None):
        body_inputs = {"prompt": "edit"}
        body_inputs.update(inputs)
        r = self.infer("edit", model=model, params=params, extra={"inputs": body_inputs})
        self.assertEqual(r.status, status, r.body)
        self.assertEqual(r.json["code"], code)
        self.assertIsInstance(r.json["error"], str)
        self.assertEqual(self.server.balance(self.user), 200)
        self.assertEqual(self.server.ledger(self.user)[1:], [])

    def test_private_or_plain_http_image_urls_refused(self):
        for url in ("http://images.example.com/a.png", "https://10.0.0.7/a.png",
                    "https://127.0.0.1/a.png", "https://[::1]/a.png", "https://localhost/a.png",
                    "https://user:pw@example.com/a.png", "file:///etc/passwd", "not a url"):
            with self.subTest(url=url):
                self.check_refused({"imageUrl": url}, 422, "invalid_image_url")

    def test_bad_data_urls(self):
        self.check_refused({"images": ["https://example.com/a.png"]}, 400, "invalid_input_image")
        self.check_refused({"images": ["data:image/png;base64,!!!"]}, 400, "invalid_input_image")
        self.check_refused({"images": [self.data_url(b"<html>hi</html>" * 10)]}, 415,
                           "unsupported_input_image")
        self.check_refused({"images": [self.data_url(FAKE.png + b"\0" * (11 << 20))]}, 413,
                           "input_image_too_large")
        self.check_refused({"images": [self.data_url(FAKE.png)] * 5}, 400, "invalid_input_image")
        self.check_refused({"images": [7]}, 400, "invalid_input_image")


class FakeKieChecksFields(KieBase):
    """The fake refuses what Kie's pages do not document, as Kie's 422: a
    catalog with the old mapping ends input_rejected and refunded."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="lensroom-models-")
        self.addCleanup(self.tmp.cleanup)
        path = os.path.join(self.tmp.name, "models.json")
        edit = {"provider": "kie", "capability": "edit", "enabled": True, "creditCost": 8}
        with open(path, "w") as f:
            json.dump([
                dict(edit, id="old_pro_edit", title="old", providerModel="google/nano-banana-pro-edit",
                     paramsSchema={}),
                dict(edit, id="wrong_field", title="wrong", providerModel="google/nano-banana-edit",
                     paramsSchema={"resolution": {"type": "string", "default": "2K"}}),
            ], f)
        self.extra_env = {"LENSROOM_MODELS": path}
        super().setUp()

    def test_undocumented_model_or_field_is_kies_422(self):
        inputs = {"prompt": "p", "imageUrl": "https://images.example.com/cat.png"}
        for model, why in (("old_pro_edit", "not supported"),
                           ("wrong_field", "resolution is not a parameter")):
            with self.subTest(model=model):
                self.assert_failed(self.infer("p", model=model, extra={"inputs": inputs}), 422,
                                   "input_rejected", text=why)


class Anthropic(KieBase):
    def test_text_answer_and_request_shape(self):
        r = self.infer("write a haiku", model="anthropic_text",
                       params={"temperature": 0.2, "max_tokens": 99})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json["text"], "Echo: write a haiku")
        self.assertEqual(r.json["meta"]["provider"], "anthropic")
        self.assertEqual(self.server.balance(self.user), 198)
        call = [x for x in FAKE.requests_to("/v1/messages")
                if x["body"]["messages"][0]["content"] == "write a haiku"][0]
        self.assertEqual(call["headers"]["x-api-key"], ANTHROPIC_KEY)
        self.assertEqual(call["headers"]["anthropic-version"], "2023-06-01")
        self.assertEqual(call["body"]["max_tokens"], 99)
        self.assertEqual(call["body"]["temperature"], 0.2)
        self.server.assert_ledger_consistent(self, self.user)

    def test_transient_errors_are_retried(self):
        for fault in ("a_429_once", "a_529_once", "a_500_once"):
            with self.subTest(fault=fault):
                r = self.infer(f"hi [{fault}] {time.time()}", model="anthropic_text")
                self.assertEqual(r.status, 200, r.body)

    def test_bad_request_is_422(self):
        self.assert_failed(self.infer("hi [a_400]", model="anthropic_text"), 422, "input_rejected",
                           cost=2, text="prompt is too long")

    def test_key_rejected(self):
        self.assert_failed(self.infer("hi [a_401]", model="anthropic_text"), 502, "provider_auth",
                           cost=2)
        self.assertNotIn(ANTHROPIC_KEY, self.server.read_log())

    def test_malformed_answers(self):
        self.assert_failed(self.infer("hi [a_malformed]", model="anthropic_text"), 502,
                           "provider_error", cost=2)


class NoAnthropicKey(KieBase):
    def setUp(self):
        env = FAKE.env()
        del env["ANTHROPIC_API_KEY"]
        self.server = Server(env).start()
        self.addCleanup(self.server.cleanup)
        self.user = new_user()
        self.server.grant(self.user, 200)
        self.token = self.server.token(self.user)

    def test_text_model_unavailable_charges_nothing(self):
        r = self.infer("hi", model="anthropic_text")
        self.assertEqual(r.status, 503, r.body)
        self.assertEqual(r.json["code"], "provider_not_configured")
        self.assertEqual(self.server.balance(self.user), 200)


class WrongKey(KieBase):
    extra_env = {"KIE_API_KEY": "sk-wrong-secret-4711"}

    def test_wrong_key_is_an_operator_problem(self):
        self.assert_failed(self.infer("x"), 502, "provider_auth")
        log = self.server.read_log()
        self.assertIn("KIE_API_KEY", log)
        self.assertNotIn("sk-wrong-secret-4711", log)


class Callbacks(KieBase):
    def setUp(self):
        super().setUp()

    @property
    def extra_env(self):
        return {}

    def test_callback_drives_completion_and_is_verified(self):
        # first poll only after a minute: only the callback can finish it quickly
        env = FAKE.env()
        port = self.server.port
        self.server.cleanup()
        env.update({"KIE_POLL_MS": "60000", "KIE_POLL_MAX_MS": "60000"})
        s = Server(env)
        s.env["LENSROOM_WEBHOOK_BASE_URL"] = f"http://127.0.0.1:{s.port}"
        s.start()
        self.addCleanup(s.cleanup)
        del port
        u = new_user()
        s.grant(u, 50)
        t0 = time.time()
        r = s.infer(s.token(u), prompt="called back [delay_0.5]")
        self.assertEqual(r.status, 200, r.body)
        self.assertLess(time.time() - t0, 30)
        create = [x for x in FAKE.requests_to("/api/v1/jobs/createTask")
                  if x["body"]["input"]["prompt"] == "called back [delay_0.5]"][0]
        cb = create["body"]["callBackUrl"]
        self.assertIn("/api/webhooks/kie?generation=", cb)
        path = cb[cb.index("/api/"):]
        # repeated deliveries are harmless
        again = s.request("POST", path, body={"code": 200, "data": {}})
        self.assertEqual(again.status, 200, again.body)
        forged = s.request("POST", path[:-4] + "0000", body={})
        self.assertEqual(forged.status, 401, forged.body)
        self.assertEqual(forged.json["code"], "invalid_callback_token")
        bad = s.request("POST", "/api/webhooks/kie?generation=nope", body={})
        self.assertEqual(bad.status, 400)
        self.assertEqual(s.balance(u), 42)
        s.assert_ledger_consistent(self, u)


if __name__ == "__main__":
    unittest.main()
