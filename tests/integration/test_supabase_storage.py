"""Generations stored through Supabase Storage's REST API (a faithful fake
on loopback): public URLs of Supabase's shape serve the image, the upload
was authorised with the service role key and typed by magic bytes, and a
wrong key or a missing bucket fails cleanly with a refund."""
import io
import unittest
import urllib.request

from PIL import Image

from fake_supabase_storage import FakeStorage
from harness import Server, new_user

KEY = "sb_secret_test-service-role-key-0123456789"


class SupabaseStorage(unittest.TestCase):
    def setUp(self):
        self.fake = FakeStorage(KEY).start()
        self.addCleanup(self.fake.stop)

    def server(self, key=KEY, bucket=None, extra=None):
        env = {"LENSROOM_STORAGE": "supabase", "SUPABASE_URL": self.fake.url,
               "SUPABASE_SERVICE_ROLE_KEY": key}
        if bucket:
            env["BUCKET_NAME"] = bucket
        env.update(extra or {})
        s = Server(env)
        self.addCleanup(s.cleanup)
        return s

    def test_infer_uploads_and_the_public_url_serves_it(self):
        s = self.server().start()
        user = new_user()
        s.grant(user, 8)
        r = s.infer(s.token(user))
        self.assertEqual(r.status, 200, r.body.decode() + s.read_log()[-2000:])
        gid = r.json["generationId"]
        key = f"{user}/photo/{gid}.png"
        self.assertEqual(r.json["url"],
                         f"{self.fake.url}/storage/v1/object/public/generations/{key}")
        data = urllib.request.urlopen(r.json["url"], timeout=10).read()
        Image.open(io.BytesIO(data)).load()
        ctype, stored = self.fake.objects[("generations", key)]
        self.assertEqual((ctype, stored), ("image/png", data))
        posts = [h for m, p, h in self.fake.requests if m == "POST"]
        self.assertEqual(posts[0]["x-upsert"], "true")
        d = s.request("DELETE", f"/api/generations/{gid}",
                      headers={"Authorization": "Bearer " + s.token(user)})
        self.assertEqual((d.status, d.json["objectsRemoved"]), (200, True), d.body)
        self.assertNotIn(("generations", key), self.fake.objects)

    def test_wrong_key_or_missing_bucket_fails_with_refund_and_smoke_says_why(self):
        for kwargs, reason in (({"key": "sb_secret_wrong-key-0123456789abcdef"},
                                "generations refused the service role key (403)"),
                               ({"bucket": "missing"},
                                "missing is missing: create it, or fix BUCKET_NAME")):
            s = self.server(**kwargs).start()
            user = new_user()
            s.grant(user, 8)
            r = s.infer(s.token(user))
            self.assertEqual(r.status, 502, r.body)
            self.assertEqual(r.json["code"], "storage_failed")
            self.assertEqual(r.json["balance"], 8)
            s.assert_ledger_consistent(self, user)
            sm = s.cli("smoke", check=False)
            self.assertEqual(sm.returncode, 1, sm.stdout)
            self.assertIn(f"✗ bucket                 bucket {reason}", sm.stdout)
            s.stop()

    def test_smoke_is_green(self):
        s = self.server()
        s.cli("migrate")
        r = s.cli("smoke", check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("✓ bucket                 supabase bucket generations reachable", r.stdout)
        self.assertIn("✓ upload/download/delete", r.stdout)


if __name__ == "__main__":
    unittest.main()
