"""Public files of the local storage backend: correct headers, ranges,
ETags, and no way out of the storage folder."""
import unittest

from harness import ServerTest, new_user


class PublicFiles(ServerTest):
    def setUp(self):
        super().setUp()
        user = new_user()
        self.server.grant(user, 8)
        r = self.server.infer(self.server.token(user))
        self.assertEqual(r.status, 200, r.body)
        self.url = r.json["url"]
        self.path = self.url[len(f"http://localhost:{self.server.port}"):]
        self.full = self.server.get(self.path)

    def test_headers(self):
        f = self.full
        self.assertEqual(f.status, 200)
        self.assertEqual(f.header("content-type"), "image/png")
        self.assertEqual(int(f.header("content-length")), len(f.body))
        self.assertEqual(f.header("accept-ranges"), "bytes")
        self.assertTrue(f.header("etag").startswith('"'))
        h = self.server.request("HEAD", self.path)
        self.assertEqual(h.status, 200)
        self.assertEqual(h.body, b"")

    def test_ranges(self):
        n = len(self.full.body)
        cases = [("bytes=0-15", 0, 16), ("bytes=10-", 10, n - 10), ("bytes=-20", n - 20, 20),
                 (f"bytes=5-{n + 100}", 5, n - 5)]
        for rng, off, length in cases:
            r = self.server.get(self.path, {"Range": rng})
            self.assertEqual(r.status, 206, rng)
            self.assertEqual(r.body, self.full.body[off:off + length], rng)
            self.assertEqual(r.header("content-range"), f"bytes {off}-{off + length - 1}/{n}")
        r = self.server.get(self.path, {"Range": f"bytes={n}-"})
        self.assertEqual(r.status, 416)
        self.assertEqual(r.header("content-range"), f"bytes */{n}")
        r = self.server.get(self.path, {"Range": "bytes=0-1,4-5"})  # multi-range: whole file
        self.assertEqual(r.status, 200)
        r = self.server.get(self.path, {"Range": "bytes=0-3", "If-Range": '"stale"'})
        self.assertEqual(r.status, 200)

    def test_etag_revalidation(self):
        r = self.server.get(self.path, {"If-None-Match": self.full.header("etag")})
        self.assertEqual(r.status, 304)
        self.assertEqual(r.body, b"")

    def test_traversal_and_unknown_paths_are_404(self):
        for p in ("/storage/v1/object/public/generations/../lensroom.db",
                  "/storage/v1/object/public/generations/%2e%2e/lensroom.db",
                  "/storage/v1/object/public/generations/..%2Fjwt-secret",
                  "/storage/v1/object/public/generations//etc/passwd",
                  "/storage/v1/object/public/other/" + self.path.split("/generations/")[1],
                  "/storage/v1/object/public/generations/x/photo/nope.png",
                  "/storage/v1/object/public/generations/jwt-secret",
                  "/storage/v1/object/public/generations/x/photo/.tmp-abc.png",
                  "/storage/v1/object/public/generations"):
            r = self.server.get(p)
            self.assertEqual(r.status, 404, p)
            self.assertIs(r.json["success"], False)
        r = self.server.request("POST", self.path, raw=b"x", headers={"Content-Type": "image/png"})
        self.assertEqual(r.status, 405)


if __name__ == "__main__":
    unittest.main()
