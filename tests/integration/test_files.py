"""Public files of the local storage backend: correct headers, ranges,
ETags, no way out of the storage folder, and names made durable before
the answer."""
import glob
import os
import re
import signal
import subprocess
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


class DurableNames(ServerTest):
    """A stored file's name survives a power loss: after the rename that
    gives it its name, its folder is fsynced (on a file system without a
    journal nothing else would write the name), and for a user's first
    file also the folders made for it, in their parents, up to the
    bucket's folder. Observed with strace attached to the running server
    (one trace file per thread: a worker's calls in their order)."""

    def test_folder_fsynced_after_each_rename(self):
        prefix = os.path.join(self.server.data_dir, "trace")
        st = subprocess.Popen(["strace", "-ff", "-p", str(self.server.proc.pid), "-e",
                               "trace=rename,openat,fsync", "-o", prefix],
                              stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: st.poll() is None and st.kill())
        line = st.stderr.readline()  # "... attached with N threads": every thread traced
        self.assertIn("attached", line)
        user = new_user()
        self.server.grant(user, 16)
        token = self.server.token(user)
        keys = []
        for prompt in ("a first fox", "a second fox"):
            r = self.server.infer(token, prompt=prompt)
            self.assertEqual(r.status, 200, r.body)
            keys.append(r.json["url"].split("/public/generations/")[1])
        st.send_signal(signal.SIGINT)  # detaches; the server goes on
        st.wait(timeout=30)
        bucket = os.path.join(self.server.data_dir, "storage", "generations")
        synced = {}  # key -> the folders fsynced after its rename, in order
        for path in glob.glob(prefix + ".*"):
            with open(path) as f:
                calls = f.read().splitlines()
            for i, call in enumerate(calls):
                m = re.match(r'rename\("[^"]*", "([^"]*)"\)\s+= 0', call)
                if not m or not m.group(1).startswith(bucket + "/"):
                    continue
                key, folders, fds = m.group(1)[len(bucket) + 1:], [], {}
                for after in calls[i + 1:]:
                    if after.startswith("rename("):
                        break
                    o = re.match(r'openat\(AT_FDCWD, "([^"]*)", [^)]*O_DIRECTORY[^)]*\)\s+= (\d+)',
                                 after)
                    if o:
                        fds[o.group(2)] = o.group(1)
                    y = re.match(r"fsync\((\d+)\)\s+= 0", after)
                    if y and y.group(1) in fds:
                        folders.append(fds.pop(y.group(1)))
                synced[key] = folders
        photo = os.path.join(bucket, user, "photo")
        self.assertEqual(synced.get(keys[0]), [photo, os.path.join(bucket, user), bucket])
        self.assertEqual(synced.get(keys[1]), [photo])


if __name__ == "__main__":
    unittest.main()
