"""Group commit: concurrent writes share one transaction, and each caller
still gets its own answer. Users with and without enough credits in one
batch, an Idempotency-Key raced inside a batch, and a SIGKILL right after
the last answer: every acknowledged generation and its ledger rows are in
the database, its stored image is whole on disk, and the ledger audit is
clean."""
import os
import re
import signal
import struct
import threading
import unittest
import zlib
from concurrent.futures import ThreadPoolExecutor

from harness import ServerTest, new_user

NO_LIMITS = {"LENSROOM_USER_MAX_IN_FLIGHT": "0", "LENSROOM_USER_RATE_PER_MIN": "0"}


def png_problem(data):
    """None when data is a whole PNG (every chunk's CRC right, the pixel rows
    all there once inflated), else what is wrong with it."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return "no PNG signature (%d bytes)" % len(data)
    pos, idat, ihdr = 8, b"", None
    while pos + 12 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        crc, = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n] or b"\0\0\0\0")
        if len(body) != n or zlib.crc32(kind + body) != crc:
            return "chunk %r torn at %d" % (kind, pos)
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            width, height, depth, color = ihdr
            row = (width * {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color] * depth + 7) // 8
            rows = zlib.decompress(idat)
            return None if len(rows) == height * (1 + row) else "pixels missing"
        pos += 12 + n
    return "no IEND chunk"


def run_together(n, fn):
    """fn(i) for i in range(n), all released at once by a barrier."""
    start = threading.Barrier(n)

    def one(i):
        start.wait()
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as ex:
        return list(ex.map(one, range(n)))


class Batching(ServerTest):
    server_env = NO_LIMITS

    def ledger_sums(self, users):
        """{user: (balance, sum of ledger rows)} in one query per table."""
        with self.server.db() as c:
            bal = dict((str(u), a) for u, a in c.execute("SELECT user_id, amount FROM credits"))
            led = dict((str(u), s) for u, s in c.execute(
                "SELECT user_id, sum(amount) FROM credit_transactions GROUP BY user_id"))
        return {u: (bal.get(u, 0), led.get(u, 0)) for u in users}

    def assert_audit_clean(self):
        audit = self.server.cli("audit", check=False)
        self.assertEqual(audit.returncode, 0, audit.stdout + audit.stderr)

    def writes_and_transactions(self):
        """The writer's count at shutdown: (writes, transactions)."""
        self.server.stop()
        m = re.search(r"writer: (\d+) writes in (\d+) transactions", self.server.read_log())
        self.assertIsNotNone(m, "the writer never grouped writes:\n" + self.server.read_log()[-3000:])
        return int(m.group(1)), int(m.group(2))

    def test_one_batch_mixes_users_with_and_without_credits(self):
        users = [new_user() for _ in range(60)]
        rich = set(users[::2])
        for u in users:
            self.server.grant(u, 8 if u in rich else 4)
        tokens = {u: self.server.token(u) for u in users}
        results = run_together(len(users), lambda i: self.server.infer(tokens[users[i]]))
        for u, r in zip(users, results):
            if u in rich:
                self.assertEqual(r.status, 200, r.body)
                self.assertEqual(r.json["newBalance"], 0)
            else:
                self.assertEqual(r.status, 402, r.body)
                self.assertEqual(r.json["success"], False)
                self.assertEqual(r.json["code"], "insufficient_credits")
                self.assertEqual((r.json["required"], r.json["balance"]), (8, 4))
        for u, (balance, ledger) in self.ledger_sums(users).items():
            self.assertEqual(balance, 0 if u in rich else 4, u)
            self.assertEqual(ledger, balance, u)
        with self.server.db() as c:
            n, = c.execute("SELECT count(*) FROM generations WHERE status = 'success'").fetchone()
        self.assertEqual(n, len(rich))
        self.assert_audit_clean()
        writes, transactions = self.writes_and_transactions()
        self.assertLess(transactions, writes)

    def test_idempotency_key_conflict_inside_a_batch(self):
        users = [new_user() for _ in range(10)]
        for u in users:
            self.server.grant(u, 16)
        tokens = {u: self.server.token(u) for u in users}
        calls = [(u, "a" if k < 3 else "b") for u in users for k in range(4)]
        results = run_together(len(calls), lambda i: self.server.infer(
            tokens[calls[i][0]], prompt=calls[i][1], headers={"Idempotency-Key": "order"}))
        with self.server.db() as c:
            winners = dict((str(u), (str(g), p)) for u, g, p in c.execute(
                "SELECT user_id, id, prompt FROM generations"))
        self.assertEqual(sorted(winners), sorted(users))  # one generation per user
        for (u, prompt), r in zip(calls, results):
            gid, won_prompt = winners[u]
            if prompt == won_prompt:
                self.assertIn(r.status, (200, 409), r.body)
                self.assertEqual(r.json.get("generationId", gid), gid)
            else:
                self.assertEqual(r.status, 422, r.body)
                self.assertEqual(r.json["code"], "idempotency_key_reused")
        for u, (balance, ledger) in self.ledger_sums(users).items():
            self.assertEqual((balance, ledger), (8, 8), u)
        self.assert_audit_clean()


class DurableAnswers(ServerTest):
    server_env = NO_LIMITS

    def test_sigkill_right_after_answers_keeps_every_acknowledged_generation(self):
        users = [new_user() for _ in range(20)]
        for u in users:
            self.server.grant(u, 80)
        tokens = [self.server.token(u) for u in users]
        total, answered, lock = 200, [0], threading.Lock()
        proc = self.server.proc

        def one(i):
            r = self.server.infer(tokens[i % len(tokens)], prompt=f"p{i}")
            with lock:
                answered[0] += 1
                if answered[0] == total:  # the last answer is in: kill at once
                    proc.send_signal(signal.SIGKILL)
            return r

        with ThreadPoolExecutor(max_workers=50) as ex:
            results = list(ex.map(one, range(total)))
        self.server.kill()
        acked = [r.json["generationId"] for r in results if r.status == 200]
        self.assertEqual(len(acked), total, [r.status for r in results if r.status != 200])
        with self.server.db() as c:
            rows = dict((str(g), s) for g, s in c.execute("SELECT id, status FROM generations"))
            charged = set(str(g) for g, in c.execute(
                "SELECT generation_id FROM credit_transactions WHERE type = 'generation'"))
        for gid in acked:
            self.assertEqual(rows.get(gid), "success", gid)
            self.assertIn(gid, charged)
        for u in users:
            self.assertEqual(self.server.balance(u), 0)
        # The file is fdatasync'ed and renamed before its generation settles:
        # an answered image is on disk, whole, under the name its URL gives.
        for r in results:
            bucket, key = re.search(r"/object/public/([^/]+)/(.+)$", r.json["url"]).groups()
            with open(os.path.join(self.server.data_dir, "storage", bucket, key), "rb") as f:
                self.assertIsNone(png_problem(f.read()), key)
        audit = self.server.cli("audit", check=False)
        self.assertEqual(audit.returncode, 0, audit.stdout + audit.stderr)


if __name__ == "__main__":
    unittest.main()
