"""Generations stored in a real S3-protocol bucket (s3rver behind a strict
SigV4 checker): the URL serves the generated image, an independent S3
client reads the same bytes, ranges work, and a wrong secret or a missing
bucket fails the generation cleanly with a refund."""
import io
import time
import unittest
import urllib.request

from PIL import Image

from harness import Server, new_user, wait_for
from s3env import S3


class S3Storage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s3 = S3()

    @classmethod
    def tearDownClass(cls):
        cls.s3.close()

    def server(self, env):
        s = Server(env)
        self.addCleanup(s.cleanup)
        return s.start()

    def test_infer_stores_the_image_in_the_bucket(self):
        s = self.server(self.s3.env())
        self.assertIn('"backend":"s3"', s.get("/healthz").body.decode())
        user = new_user()
        s.grant(user, 16)
        r = s.infer(s.token(user))
        self.assertEqual(r.status, 200, r.body.decode() + s.read_log()[-3000:])
        url, gid = r.json["url"], r.json["generationId"]
        key = f"{user}/photo/{gid}.png"
        self.assertEqual(url, f"{self.s3.public_url}/{key}")
        data = urllib.request.urlopen(url, timeout=10).read()
        img = Image.open(io.BytesIO(data))
        img.load()
        self.assertEqual(img.format, "PNG")
        obj = self.s3.client().get_object(Bucket=self.s3.bucket, Key=key)
        self.assertEqual(obj["Body"].read(), data)
        self.assertEqual(obj["ContentType"], "image/png")
        req = urllib.request.Request(url, headers={"Range": "bytes=0-7"})
        self.assertEqual(urllib.request.urlopen(req, timeout=10).read(), b"\x89PNG\r\n\x1a\n")
        self.assertEqual(r.json["newBalance"], 8)
        s.assert_ledger_consistent(self, user)

    def test_kie_result_streamed_into_the_bucket(self):
        """A Kie.ai result (fake) downloaded on the loop, spooled and uploaded."""
        from fake_providers import FakeProviders
        fake = FakeProviders(mp4=b"")
        self.addCleanup(fake.close)
        env = self.s3.env()
        env.update(fake.env())
        s = self.server(env)
        user = new_user()
        s.grant(user, 8)
        r = s.infer(s.token(user), prompt="to the bucket [dl_slow]")
        self.assertEqual(r.status, 200, r.body)
        key = f"{user}/photo/{r.json['generationId']}.png"
        obj = self.s3.client().get_object(Bucket=self.s3.bucket, Key=key)
        self.assertEqual(obj["Body"].read(), fake.png)
        s.assert_ledger_consistent(self, user)

    def test_video_goes_to_the_video_folder(self):
        s = self.server(self.s3.env())
        user = new_user()
        s.grant(user, 25)
        r = s.infer(s.token(user), model="veo3_video")
        self.assertEqual(r.status, 200, r.body)
        self.assertTrue(r.json["url"].endswith(".mp4"))
        key = r.json["url"][len(self.s3.public_url) + 1:]
        obj = self.s3.client().get_object(Bucket=self.s3.bucket, Key=key)
        self.assertEqual(obj["ContentType"], "video/mp4")
        self.assertEqual(obj["Body"].read()[4:8], b"ftyp")

    def test_large_objects_go_up_as_multipart(self):
        """S3's smallest part (5 MiB), and a real 11 MiB PNG from the fake Kie: three parts."""
        import os
        from fake_providers import FakeProviders
        fake = FakeProviders(mp4=b"")
        self.addCleanup(fake.close)
        buf = io.BytesIO()
        Image.frombytes("RGB", (1920, 1920), os.urandom(1920 * 1920 * 3)).save(buf, "PNG",
                                                                              compress_level=1)
        fake.png = buf.getvalue()
        self.assertGreater(len(fake.png), 2 * 5242880)
        env = dict(self.s3.env(), S3_PART_SIZE="5242880", **fake.env())
        s = self.server(env)
        user = new_user()
        s.grant(user, 8)
        r = s.infer(s.token(user))
        self.assertEqual(r.status, 200, r.body.decode() + s.read_log()[-2000:])
        key = r.json["url"][len(self.s3.public_url) + 1:]
        obj = self.s3.client().get_object(Bucket=self.s3.bucket, Key=key)
        data = obj["Body"].read()
        self.assertEqual(data, fake.png)
        parts = [l for l in self.s3.requests() if l.startswith(f"PUT /{self.s3.bucket}/{key}?")
                 and "partNumber=" in l and l.endswith(" 200")]
        self.assertEqual(len(parts), 3, parts)
        self.assertEqual(data, urllib.request.urlopen(r.json["url"], timeout=30).read())

    def test_uploads_wait_on_the_loop_and_leave_the_workers_free(self):
        """One worker, three outputs whose uploads the bucket holds: all three
        are in flight at once (a blocking upload would hold the one worker and
        send them one by one), none is settled before the bucket has it, and
        all succeed once it lets them through."""
        self.addCleanup(self.s3.hold_uploads, False)
        s = self.server(dict(self.s3.env(), LENSROOM_WORKERS="1"))
        user = new_user()
        s.grant(user, 24)
        tok = s.token(user)
        self.s3.hold_uploads(True)
        earlier = len(self.s3.held())
        gids = []
        for i in range(3):
            r = s.infer(tok, prompt=f"held upload {i}", headers={"Prefer": "respond-async"})
            self.assertEqual(r.status, 202, r.body)
            gids.append(r.json["generationId"])
        wait_for(lambda: len(self.s3.held()) - earlier >= 3, timeout=60)
        held = self.s3.held()[earlier:]
        self.assertEqual(len(set(held)), 3, held)
        for gid in gids:
            self.assertIn(s.generation_status(gid, tok), ("pending", "processing"))
        self.s3.hold_uploads(False)
        for gid in gids:
            self.assertEqual(s.wait_settled(gid, tok), "success")
            g = s.get(f"/api/generations/{gid}", {"Authorization": f"Bearer {tok}"}).json
            key = f"{user}/photo/{gid}.png"
            self.assertEqual(g["generation"]["url"], f"{self.s3.public_url}/{key}")
            body = self.s3.client().get_object(Bucket=self.s3.bucket, Key=key)["Body"].read()
            self.assertEqual(body[:8], b"\x89PNG\r\n\x1a\n")
        s.assert_ledger_consistent(self, user)

    def test_stop_while_an_upload_is_held_exits_cleanly(self):
        """SIGTERM with an upload still in the bucket's hands: the drain gives
        up on it, the server frees it and exits 0 (no sanitizer report), and
        the next start refunds the generation."""
        self.addCleanup(self.s3.hold_uploads, False)
        s = self.server(self.s3.env())
        user = new_user()
        s.grant(user, 8)
        tok = s.token(user)
        self.s3.hold_uploads(True)
        before = len(self.s3.held())
        r = s.infer(tok, prompt="cut off", headers={"Prefer": "respond-async"})
        self.assertEqual(r.status, 202, r.body)
        wait_for(lambda: len(self.s3.held()) > before, timeout=60)
        s.stop()
        self.s3.hold_uploads(False)
        s.start()
        self.assertEqual(s.wait_settled(r.json["generationId"], tok), "failed")
        self.assertEqual(s.balance(user), 8)
        s.assert_ledger_consistent(self, user)

    def test_a_failed_part_aborts_the_multipart_upload_and_refunds(self):
        """Part 2 of 3 fails: no part 3 is sent, the upload is aborted, no
        object appears, the generation fails with storage_failed and is
        refunded."""
        import os
        from fake_providers import FakeProviders
        fake = FakeProviders(mp4=b"")
        self.addCleanup(fake.close)
        buf = io.BytesIO()
        Image.frombytes("RGB", (1920, 1920), os.urandom(1920 * 1920 * 3)).save(buf, "PNG",
                                                                              compress_level=1)
        fake.png = buf.getvalue()
        self.addCleanup(self.s3.fail_second_parts, False)
        self.s3.fail_second_parts(True)
        s = self.server(dict(self.s3.env(), S3_PART_SIZE="5242880", **fake.env()))
        user = new_user()
        s.grant(user, 8)
        r = s.infer(s.token(user))
        self.assertEqual(r.status, 502, r.body)
        self.assertEqual(r.json["code"], "storage_failed")
        self.assertEqual(r.json["balance"], 8)
        key = f"{user}/photo/{r.json['generationId']}.png"
        sent = [l for l in self.s3.requests() if f"/{self.s3.bucket}/{key}" in l]
        self.assertTrue(any(l.startswith("PUT ") and "partNumber=2&" in l and l.endswith(" 500")
                            for l in sent), sent)
        # The abort is sent (s3rver does not implement it and answers 405).
        self.assertTrue(any(l.startswith("DELETE ") and "uploadId=" in l for l in sent), sent)
        self.assertFalse(any("partNumber=3&" in l for l in sent), sent)
        listed = self.s3.client().list_objects_v2(Bucket=self.s3.bucket, Prefix=user)
        self.assertEqual(listed.get("KeyCount", 0), 0)
        s.assert_ledger_consistent(self, user)

    def test_part_size_under_5_mib_is_refused_at_start(self):
        s = Server(dict(self.s3.env(), S3_PART_SIZE="5242879"))
        self.addCleanup(s.cleanup)
        code, log = s.start_refused()
        self.assertNotEqual(code, 0)
        self.assertIn("config: S3_PART_SIZE: must be at least 5242880 (5 MiB)", log)

    def assert_storage_failure_refunds(self, env):
        s = self.server(env)
        user = new_user()
        s.grant(user, 8)
        r = s.infer(s.token(user))
        self.assertEqual(r.status, 502, r.body)
        self.assertEqual(r.json["code"], "storage_failed")
        self.assertEqual(r.json["balance"], 8)
        s.assert_ledger_consistent(self, user)
        return s

    def test_wrong_secret_is_refused_by_the_signature_check(self):
        s = self.assert_storage_failure_refunds(self.s3.env(secret="not-the-secret"))
        self.assertIn("SignatureDoesNotMatch", s.read_log())

    def test_missing_bucket_fails_and_refunds(self):
        self.assert_storage_failure_refunds(self.s3.env(bucket="no-such-bucket"))


    def test_delete_removes_the_object_and_retries_when_s3_is_down(self):
        s3 = S3()  # its own, so stopping it does not disturb the other tests
        self.addCleanup(s3.close)
        s = self.server(dict(s3.env(), LENSROOM_LEASE_S="3"))  # maintenance every second
        user = new_user()
        s.grant(user, 16)
        tok = s.token(user)
        auth = {"Authorization": f"Bearer {tok}"}
        r1, r2 = s.infer(tok), s.infer(tok)
        keys = [r.json["url"][len(s3.public_url) + 1:] for r in (r1, r2)]
        client = s3.client()
        d = s.request("DELETE", f"/api/generations/{r1.json['generationId']}", headers=auth)
        self.assertEqual((d.status, d.json["objectsRemoved"]), (200, True), d.body)
        with self.assertRaises(client.exceptions.NoSuchKey):
            client.get_object(Bucket=s3.bucket, Key=keys[0])
        s3.stop_proxy()  # the endpoint is down: the removal must wait, not be forgotten
        d = s.request("DELETE", f"/api/generations/{r2.json['generationId']}", headers=auth)
        self.assertEqual((d.status, d.json["objectsRemoved"]), (200, False), d.body)
        self.assertEqual(s.get(f"/api/generations/{r2.json['generationId']}", auth).status, 404)
        client.head_object(Bucket=s3.bucket, Key=keys[1])  # still there
        s3.start_proxy()
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                client.head_object(Bucket=s3.bucket, Key=keys[1])
                time.sleep(0.2)
            except client.exceptions.ClientError:
                break
        with self.assertRaises(client.exceptions.ClientError):
            client.head_object(Bucket=s3.bucket, Key=keys[1])
        self.assertIn("objects of deleted generation", s.read_log())

    def smoke(self, env):
        s = Server(env)
        self.addCleanup(s.cleanup)
        s.cli("migrate")
        return s.cli("smoke", check=False)

    def test_smoke_is_green_on_s3(self):
        r = self.smoke(self.s3.env())
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("✓ bucket                 s3 bucket generations reachable", r.stdout)
        self.assertIn("✓ upload/download/delete", r.stdout)

    def test_smoke_tells_a_missing_bucket_from_wrong_credentials(self):
        r = self.smoke(self.s3.env(bucket="no-such-bucket"))
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("✗ bucket                 bucket no-such-bucket is missing: create it, "
                      "or fix S3_BUCKET", r.stdout)
        self.assertNotIn("credentials", r.stdout)
        r = self.smoke(self.s3.env(secret="not-the-secret"))
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("✗ bucket                 bucket generations refused these credentials "
                      "(403): wrong S3_ACCESS_KEY_ID or S3_SECRET_ACCESS_KEY", r.stdout)
        self.assertNotIn("is missing", r.stdout)
        self.assertIn("✓ database", r.stdout)  # the other checks still ran


if __name__ == "__main__":
    unittest.main()
