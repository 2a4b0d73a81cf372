"""A busy process keeps its generations: lease renewal does not queue
behind renders and uploads. One process stores into an S3 bucket that
stalls every upload for more than two lease periods (the uploads wait on
the event loop, all at once; before they did, they held the two workers
for five lease periods); a second process on the same database reaps
expired claims all the while. It must take none of the busy process's
generations: none is failed as interrupted, all finish, each charged
once."""
import hashlib
import http.server
import threading
import time
import unittest

from harness import Server, new_user, wait_for

LEASE_S = 3
UPLOAD_STALL_S = 7.0  # each generation in flight for over two lease periods
GENERATIONS = 12


class StallingS3(http.server.ThreadingHTTPServer):
    """Answers like a bucket, but holds each object upload UPLOAD_STALL_S
    before answering 200 (signatures are test_s3's business)."""
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), StallingS3Handler)
        self.puts = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class StallingS3Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, headers=None, body=b""):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):
        self.answer(200)

    def do_PUT(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        time.sleep(UPLOAD_STALL_S)
        with self.server.lock:
            self.server.puts += 1
        self.answer(200, {"ETag": '"%s"' % hashlib.md5(body).hexdigest()})

    def do_DELETE(self):
        self.answer(204)

    def do_GET(self):
        self.answer(404)


class Backlog(unittest.TestCase):
    def test_saturated_workers_lose_no_generation_to_another_process(self):
        s3 = StallingS3()
        self.addCleanup(s3.shutdown)
        lease = {"LENSROOM_LEASE_S": str(LEASE_S), "LENSROOM_WORKERS": "2"}
        busy = Server({**lease, "S3_ENDPOINT": s3.endpoint, "S3_BUCKET": "generations",
                       "S3_ACCESS_KEY_ID": "test", "S3_SECRET_ACCESS_KEY": "test-secret",
                       "S3_PUBLIC_URL": s3.endpoint + "/generations"})
        self.addCleanup(busy.cleanup)
        busy.start()
        reaper = Server(lease, data_dir=busy.data_dir, database=busy.pg)
        reaper.log_path = busy.log_path + ".reaper"
        self.addCleanup(reaper.cleanup)
        reaper.start()

        user = new_user()
        busy.grant(user, 8 * GENERATIONS)
        token = busy.token(user)
        gids = []
        for i in range(GENERATIONS):
            r = busy.infer(token, prompt=f"backlog {i}", headers={"Prefer": "respond-async"})
            self.assertEqual(r.status, 202, r.body)
            gids.append(r.json["generationId"])

        def statuses():
            return [busy.generation_status(g, token) for g in gids]

        # The backlog outlives the lease several times over before the end.
        self.assertTrue(wait_for(lambda: all(st not in ("pending", "processing")
                                             for st in statuses()), timeout=120, interval=0.5),
                        statuses())
        self.assertEqual(statuses(), ["success"] * GENERATIONS, busy.read_log()[-3000:])
        self.assertGreaterEqual(s3.puts, GENERATIONS)
        self.assertEqual(busy.balance(user), 0)
        busy.assert_ledger_consistent(self, user)
        self.assertNotIn("failed and refunded", reaper.read_log())
        self.assertNotIn("interrupted", busy.read_log() + reaper.read_log())


if __name__ == "__main__":
    unittest.main()
