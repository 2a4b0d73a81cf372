"""What a kill -9 leaves behind is cleaned at the next start: the local
backend's half-written object (a locked .tmp-XXXXXX beside where the object
goes) and the remote backends' spool files (spool-XXXXXX in
$LENSROOM_DATA_DIR/tmp; nameless where the file system allows, so planted
here), by a sweep that runs in the background after the start and logs its
end. Finished objects stay, and so does a temp file some live process
still holds (its flock), anything not named like ours, and whatever a
symlink points at."""
import fcntl
import glob
import os
import unittest

from fake_providers import FakeProviders
from harness import Server, new_user, wait_for
from s3env import S3


def temp_files(root):
    return glob.glob(os.path.join(root, "**", ".tmp-*"), recursive=True)


class Leftovers(unittest.TestCase):
    def setUp(self):
        self.fake = FakeProviders(mp4=b"")
        self.addCleanup(self.fake.close)
        self.fake.released.clear()
        self.addCleanup(self.fake.release)

    def server(self, env):
        s = Server(dict(self.fake.env(), **env))
        self.addCleanup(s.cleanup)
        return s.start()

    def hold_download(self, s, tok):
        """Starts a generation whose download hangs halfway (its writer open)."""
        r = s.infer(tok, prompt="held halfway [dl_hold]", headers={"Prefer": "respond-async"})
        self.assertEqual(r.status, 202, r.body)
        self.assertTrue(wait_for(lambda: self.fake.requests_to("/files/"), 30))

    def test_sigkill_mid_store_leaves_a_temp_file_the_next_start_removes(self):
        # previews off: their writers would add temp files of their own
        s = self.server({"LENSROOM_PREVIEWS": "false"})
        root = os.path.join(s.data_dir, "storage")
        user = new_user()
        s.grant(user, 16)
        tok = s.token(user)
        done = s.infer(tok, prompt="stored before the crash")
        self.assertEqual(done.status, 200, done.body)
        kept = s.fetch_url(done.json["url"]).body
        self.hold_download(s, tok)
        self.assertTrue(wait_for(lambda: temp_files(root), 30), "no temp file while storing")
        s.kill()
        left = temp_files(root)
        self.assertEqual(len(left), 1, left)
        # A temp file another live process is writing (it holds the lock).
        live = os.path.join(os.path.dirname(left[0]), ".tmp-LiVe01")
        fd = os.open(live, os.O_CREAT | os.O_WRONLY, 0o600)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)

        s.start()  # the sweep runs after the start, in the background: wait for its end
        self.assertTrue(wait_for(lambda: s.read_log().count("leftover sweep done") == 2, 60))
        self.assertEqual(temp_files(root), [live])
        self.assertIn("removed 1 temp file left in", s.read_log())
        self.assertEqual(s.fetch_url(done.json["url"]).body, kept)  # the finished object stays
        self.fake.release()

    def test_spool_files_of_a_killed_process_are_removed_at_start(self):
        s3 = S3()
        self.addCleanup(s3.close)
        s = self.server(s3.env())
        tmp = os.path.join(s.data_dir, "tmp")
        user = new_user()
        s.grant(user, 8)
        self.hold_download(s, s.token(user))
        s.kill()
        self.assertEqual(os.listdir(tmp), [])  # the spool had no name: nothing left

        def plant(name, content=b"x"):
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.write(content)
            return path

        abandoned = [plant("spool-AbC123"), plant("spool-z9Y8x7")]
        held = plant("spool-HeLd01")
        fd = os.open(held, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        others = [plant("spool-toolong1"), plant("notes.txt"), plant("spool-12345")]
        outside = os.path.join(s.data_dir, "precious.txt")
        with open(outside, "wb") as f:
            f.write(b"not ours")
        os.symlink(outside, os.path.join(tmp, "spool-LiNk01"))

        s.start()
        self.assertTrue(wait_for(lambda: s.read_log().count("leftover sweep done") == 2, 60))
        for p in abandoned:
            self.assertFalse(os.path.exists(p), p)
        for p in [held] + others:
            self.assertTrue(os.path.exists(p), p)
        self.assertTrue(os.path.islink(os.path.join(tmp, "spool-LiNk01")))
        with open(outside, "rb") as f:
            self.assertEqual(f.read(), b"not ours")
        self.assertIn("removed 2 temp files left in", s.read_log())
        self.fake.release()


if __name__ == "__main__":
    unittest.main()
