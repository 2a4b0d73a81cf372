"""Backups through the real binary: `lensroom backup create|verify|restore`
and the scheduled backups of `lensroom serve`, on SQLite (it_test_backup)
and on PostgreSQL (it_pg_test_backup: pg_dump/pg_restore of the cluster's
major version).

What they pin: a backup taken while 50 clients infer and get grants is one
point in time (every restored ledger row exists in the live database, every
balance is grants - charges + refunds of the snapshot, the audit passes,
every file of a successful generation is there with its hash); a damaged
archive is named as such by verify and refused by restore; restore refuses
a non-empty target without --force; a restored server serves the restored
users; scheduled backups rotate and show in /healthz."""
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
import unittest
import uuid

from harness import BACKEND, BIN, PgConn, PgDatabase, Server, new_user, wait_for

SERVICE_KEY = "service-role-key-for-tests-0123456789abcdef"
METRICS_TOKEN = "metrics-token-for-tests-0123456789"
CLIENTS = 50


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(65536), b""):
            h.update(chunk)
    return h.hexdigest()


def read_tar(archive):
    """The archive as an uncompressed tar (bytes), via the zstd tool."""
    return subprocess.run(["zstd", "-q", "-d", "-c", archive], check=True,
                          capture_output=True).stdout


def write_tar_zst(data, path):
    subprocess.run(["zstd", "-q", "-f", "-o", path], input=data, check=True)


def members(tar_bytes):
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as t:
        return {m.name: m for m in t.getmembers()}


def replace_member(tar_bytes, name, data):
    """The tar with member name's bytes replaced, every other one as it was."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as src, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            body = data if m.name == name else src.extractfile(m).read()
            m.size = len(body)
            dst.addfile(m, io.BytesIO(body))
    return out.getvalue()


def manifest_of(archive):
    tar_bytes = read_tar(archive)
    m = members(tar_bytes)["manifest.json"]
    return json.loads(tar_bytes[m.offset_data:m.offset_data + m.size])


def db_conn(url_or_path):
    if BACKEND == "postgres":
        return PgConn(url_or_path)
    import sqlite3
    return sqlite3.connect(url_or_path, timeout=30)


def keys_of(value):
    return value if isinstance(value, list) else json.loads(value or "[]")


class Backup(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="lensroom-bk-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.s = Server({"SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
                         "LENSROOM_USER_RATE_PER_MIN": "0",
                         "LENSROOM_MOCK_FAIL_RATE": "0.15"})
        self.addCleanup(self.s.cleanup)
        self.s.start()

    def admin_grant(self, user, amount, key):
        r = self.s.request("POST", "/api/admin/credits",
                           body={"userId": user, "amount": amount, "type": "purchase",
                                 "idempotencyKey": key},
                           headers={"Authorization": f"Bearer {SERVICE_KEY}"})
        self.assertEqual(r.status, 200, r.body)

    def create(self, *extra):
        out = os.path.join(self.tmp, "out-" + uuid.uuid4().hex[:6])
        r = self.s.cli("backup", "create", "--to", out, *extra)
        names = [n for n in os.listdir(out) if n.endswith(".tar.zst")]
        self.assertEqual(len(names), 1, (names, r.stdout))
        return os.path.join(out, names[0])

    def some_generations(self, n=3):
        user = new_user()
        self.s.grant(user, 100)
        token = self.s.token(user)
        for _ in range(n):
            self.s.infer(token)
        return user

    # -- consistency under load ------------------------------------------
    def test_backup_under_load_restores_a_consistent_snapshot(self):
        users = [new_user() for _ in range(CLIENTS)]
        for i, u in enumerate(users):
            self.admin_grant(u, 120, f"start-{i}")
        tokens = [self.s.token(u) for u in users]
        done = [0]
        lock = threading.Lock()
        stop = threading.Event()
        errors = []

        def client(i):
            for n in range(400):  # bounded: stops by itself
                if stop.is_set():
                    return
                try:
                    if n % 4 == 3:
                        self.admin_grant(users[i], 10, f"load-{i}-{n}")
                    else:
                        r = self.s.infer(tokens[i])
                        if r.status not in (200, 402, 502):
                            errors.append((r.status, r.body[:200]))
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(repr(e))
                with lock:
                    done[0] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        try:
            self.assertTrue(wait_for(lambda: done[0] >= 150, 120), done[0])
            archive = self.create()
            after = done[0]
            self.assertTrue(wait_for(lambda: done[0] >= after + 100, 120), done[0])
        finally:
            stop.set()
            for t in threads:
                t.join(120)
        self.assertEqual(errors, [])

        r = self.s.cli("backup", "verify", archive)
        self.assertIn("verify: OK", r.stdout)
        manifest = manifest_of(archive)
        target_dir = os.path.join(self.tmp, "restored")
        if BACKEND == "postgres":
            target = PgDatabase()
            self.addCleanup(target.drop)
            env = dict(self.s.env, LENSROOM_DATA_DIR=target_dir)
            r = subprocess.run([BIN, "backup",
                                "restore", archive, "--database-url", target.url],
                               env=env, capture_output=True, text=True, timeout=300)
            target_db = target.url
        else:
            r = self.s.cli("backup", "restore", archive, "--data-dir", target_dir, check=False)
            target_db = os.path.join(target_dir, "lensroom.db")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("audit: ledger sound", r.stdout)

        live = self.s.db()
        with db_conn(target_db) as snap, live:
            rows = snap.execute("SELECT id, user_id, amount, type, generation_id "
                                "FROM credit_transactions").fetchall()
            live_rows = {str(r[0]): r for r in live.execute(
                "SELECT id, user_id, amount, type, generation_id FROM credit_transactions")}
            # one point in time: every restored row is a live row, and the
            # load went on after the snapshot
            for row in rows:
                self.assertEqual(tuple(map(str, live_rows[str(row[0])])), tuple(map(str, row)))
            self.assertLess(len(rows), len(live_rows))
            totals = {"grants": 0, "charges": 0, "refunds": 0}
            per_user = {}
            for _, user, amount, kind, _ in rows:
                u = per_user.setdefault(str(user), [0, 0, 0])
                if kind == "generation":
                    u[1] -= amount
                elif kind == "refund":
                    u[2] += amount
                else:
                    u[0] += amount
            for user, (grants, charges, refunds) in per_user.items():
                balance = snap.execute("SELECT amount FROM credits WHERE user_id = ?",
                                       (user,)).fetchone()[0]
                self.assertEqual(balance, grants - charges + refunds, user)
                totals["grants"] += grants
                totals["charges"] += charges
                totals["refunds"] += refunds
            self.assertGreater(totals["refunds"], 0)  # failures happened and were refunded
            for k, v in totals.items():
                self.assertEqual(manifest["ledger"][k], v, k)
            gens = snap.execute("SELECT id, storage_keys FROM generations WHERE status = "
                                "'success' AND deleted_at IS NULL").fetchall()
            self.assertGreater(len(gens), 50)
            self.assertEqual(manifest["generations"]["succeeded"], len(gens))
        checked = 0
        live_store = os.path.join(self.s.data_dir, "storage", "generations")
        restored_store = os.path.join(target_dir, "storage", "generations")
        for gid, keys in gens:
            keys = keys_of(keys)
            self.assertTrue(keys, gid)
            for key in keys:
                restored = os.path.join(restored_store, key)
                self.assertTrue(os.path.isfile(restored), key)
                self.assertEqual(sha256_file(restored), sha256_file(os.path.join(live_store, key)))
                checked += 1
        self.assertEqual(manifest["storage"]["copied"], checked)
        self.assertEqual(manifest["storage"]["missing"], 0)
        self.serve_restored(target_dir, target if BACKEND == "postgres" else None, users[0],
                            target_db)

    def serve_restored(self, data_dir, pg, user, target_db):
        """lensroom migrate is a no-op on the restored database, and a
        server on it serves the restored user with its old token secret."""
        srv = Server(data_dir=data_dir, database=pg)
        self.addCleanup(srv.stop)
        r = srv.cli("migrate")
        self.assertIn("up to date", r.stdout)
        self.assertNotIn("migration applied", r.stderr)
        srv.start()
        with db_conn(target_db) as c:
            balance = c.execute("SELECT amount FROM credits WHERE user_id = ?",
                                (user,)).fetchone()[0]
            row = c.execute("SELECT result_urls FROM generations WHERE user_id = ? AND "
                            "status = 'success' LIMIT 1", (user,)).fetchone()
        token = srv.token(user)
        r = srv.get("/api/credits/balance", {"Authorization": f"Bearer {token}"})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json["balance"], balance)
        if row:
            url = keys_of(row[0])[0]
            path = url.split("/storage/v1/", 1)[1]
            r = srv.get("/storage/v1/" + path)
            self.assertEqual(r.status, 200)
        srv.stop()

    # -- damaged archives -------------------------------------------------
    def test_verify_names_damage_and_restore_refuses_it(self):
        self.some_generations()
        archive = self.create()
        good = read_tar(archive)
        entries = members(good)
        obj = next(m for m in entries.values() if m.name.startswith("objects/"))

        flipped = bytearray(good)
        flipped[obj.offset_data + obj.size // 2] ^= 0x01
        idx = entries["index.jsonl"]
        edited = bytearray(good)
        text = bytes(good[idx.offset_data:idx.offset_data + idx.size]).decode()
        line_start = text.index('"path":"' + obj.name + '"')
        at = idx.offset_data + text.index('"sha256":"', line_start) + len('"sha256":"')
        edited[at] = ord("0") if edited[at] != ord("0") else ord("1")
        cases = {"flipped": (bytes(flipped), [obj.name, "SHA-256 mismatch"]),
                 "index": (bytes(edited), ["index.jsonl", "altered", obj.name])}
        for name, (data, expect) in cases.items():
            path = os.path.join(self.tmp, name + ".tar.zst")
            write_tar_zst(data, path)
            self.assert_rejected(path, expect)
        with open(archive, "rb") as f:
            whole = f.read()
        truncated = os.path.join(self.tmp, "truncated.tar.zst")
        with open(truncated, "wb") as f:
            f.write(whole[:len(whole) // 2])
        self.assert_rejected(truncated, ["truncated"])
        r = self.s.cli("backup", "verify", archive)  # the original is still sound
        self.assertIn("verify: OK", r.stdout)

    def assert_rejected(self, path, expect):
        r = self.s.cli("backup", "verify", path, check=False)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("verify: FAILED", r.stdout)
        for word in expect:
            self.assertIn(word, r.stdout, path)
        target = os.path.join(self.tmp, "never-" + uuid.uuid4().hex[:6])
        if BACKEND == "postgres":
            pg = PgDatabase()
            self.addCleanup(pg.drop)
            args = ["--database-url", pg.url]
        else:
            args = ["--data-dir", target]
        r = self.s.cli("backup", "restore", path, *args, check=False)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("failed verification", r.stderr)
        self.assertFalse(os.path.exists(target))
        if BACKEND == "postgres":
            with PgConn(pg.url) as c:
                n = c.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
                self.assertEqual(n.fetchone()[0], 0)  # nothing was even migrated

    def test_verify_reruns_the_ledger_audit_on_the_archived_rows(self):
        """A ledger broken in the database is found by verify in the rows
        themselves, even when the manifest is edited to say it is sound (the
        manifest is not under the index's hashes, so only a re-run audit can
        tell)."""
        user = self.some_generations(1)
        archive = self.create()
        r = self.s.cli("backup", "verify", archive)
        self.assertIn("ledger audit on the snapshot: sound", r.stdout)
        if BACKEND == "postgres":
            self.assertIn("restored into a scratch database", r.stdout)
            with PgConn(self.s.pg.url) as c:  # no scratch database is left behind
                n = c.execute("SELECT count(*) FROM pg_database "
                              "WHERE left(datname, 16) = 'lensroom_verify_'").fetchone()[0]
            self.assertEqual(n, 0)
        with db_conn(self.s.pg.url if BACKEND == "postgres" else
                     os.path.join(self.s.data_dir, "lensroom.db")) as c:
            if BACKEND == "postgres":  # past the guard that would add a ledger row
                c.execute("SET lensroom.ledger = 'on'")
            c.execute("UPDATE credits SET amount = amount + 5 WHERE user_id = ?", (user,))
        broken = self.create()
        self.assertEqual(manifest_of(broken)["ledger"]["violations"], 1)
        tar_bytes = read_tar(broken)
        m = json.loads(tar_bytes[members(tar_bytes)["manifest.json"].offset_data:][
            :members(tar_bytes)["manifest.json"].size])
        m["ledger"]["violations"] = 0
        m["ledger"]["balances"] = (m["ledger"]["grants"] - m["ledger"]["charges"]
                                   + m["ledger"]["refunds"])
        lying = os.path.join(self.tmp, "lying.tar.zst")
        write_tar_zst(replace_member(tar_bytes, "manifest.json",
                                     json.dumps(m).encode()), lying)
        r = self.s.cli("backup", "verify", lying, check=False)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("ledger audit on the snapshot: 1 violations", r.stdout)
        self.assertIn("ledger balances: the snapshot has", r.stdout)

    # -- a backup killed mid-way ---------------------------------------------
    def hold_database(self):
        """Blocks the backup's snapshot until release(): SQLite, an exclusive
        lock on the file (the server stopped first); PostgreSQL, an ACCESS
        EXCLUSIVE lock on credits, which pg_dump waits for."""
        if BACKEND == "postgres":
            import psycopg2
            conn = psycopg2.connect(self.s.pg.url)
            conn.cursor().execute("LOCK TABLE public.credits IN ACCESS EXCLUSIVE MODE")
            return conn.rollback, conn.close
        import sqlite3
        self.s.stop()
        conn = sqlite3.connect(os.path.join(self.s.data_dir, "lensroom.db"),
                               isolation_level=None)
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("UPDATE credits SET amount = amount")
        return (lambda: conn.execute("ROLLBACK")), conn.close

    def test_a_backup_killed_midway_is_never_taken_for_an_archive_and_is_swept(self):
        self.some_generations(2)
        out = os.path.join(self.tmp, "killed")
        release, close = self.hold_database()
        p = subprocess.Popen([BIN, "backup", "create", "--to", out], env=self.s.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            # the partial archive exists from the start of the backup
            wait_for(lambda: os.path.isdir(out) and any(
                n.endswith(".tar.zst.partial") for n in os.listdir(out)), timeout=60,
                interval=0.005)
            self.assertIsNone(p.poll())
            p.send_signal(signal.SIGKILL)
            p.wait()
            p.stdout.close()
            p.stderr.close()
        finally:
            release()
            close()
        if BACKEND == "postgres":  # pg_dump, orphaned, finishes on its own
            wait_for(lambda: not self.pg_dump_running(), timeout=60)
        left = sorted(os.listdir(out))
        partial = next(n for n in left if n.endswith(".partial"))
        self.assertFalse([n for n in left if n.endswith(".tar.zst")], left)
        # named as a half archive, refused by restore
        r = self.s.cli("backup", "verify", os.path.join(out, partial), check=False)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("verify: FAILED", r.stdout)
        args = ["--data-dir", os.path.join(self.tmp, "never")]
        if BACKEND == "postgres":
            pg = PgDatabase()
            self.addCleanup(pg.drop)
            args = ["--database-url", pg.url]
        r = self.s.cli("backup", "restore", os.path.join(out, partial), *args, check=False)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("failed verification", r.stderr)
        # the next backup sweeps what the killed one left, and is sound
        r = self.s.cli("backup", "create", "--to", out)
        self.assertIn("leftover files of backups that did not finish", r.stdout)
        now = os.listdir(out)
        self.assertEqual(len(now), 1, now)
        self.assertTrue(now[0].endswith(".tar.zst"), now)
        self.assertNotIn(now[0] + ".partial", left)
        r = self.s.cli("backup", "verify", os.path.join(out, now[0]))
        self.assertIn("verify: OK", r.stdout)

    def pg_dump_running(self):
        with PgConn(self.s.pg.url) as c:
            return c.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                             "application_name = 'pg_dump'").fetchone()[0] > 0

    # -- targets ------------------------------------------------------------
    def test_restore_refuses_a_non_empty_target_without_force(self):
        user = self.some_generations(2)
        archive = self.create()
        if BACKEND == "postgres":
            # the live database itself is the non-empty target
            args = ["--database-url", self.s.pg.url]
        else:
            target = os.path.join(self.tmp, "busy")
            os.makedirs(target)
            with open(os.path.join(target, "notes.txt"), "w") as f:
                f.write("keep me")
            args = ["--data-dir", target]
        before = self.s.balance(user)
        r = self.s.cli("backup", "restore", archive, *args, check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("not empty", r.stderr)
        self.assertIn("--force", r.stderr)
        self.s.grant(user, 7)  # the live data changes after the backup
        if BACKEND == "postgres":
            self.s.stop()
        r = self.s.cli("backup", "restore", archive, *args, "--force", check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("audit: ledger sound", r.stdout)
        if BACKEND == "postgres":
            self.assertEqual(self.s.balance(user), before)  # back to the snapshot
        else:
            with db_conn(os.path.join(args[1], "lensroom.db")) as c:
                got = c.execute("SELECT amount FROM credits WHERE user_id = ?",
                                (user,)).fetchone()[0]
            self.assertEqual(got, before)
            self.assertTrue(os.path.exists(os.path.join(args[1], "notes.txt")))

    def test_usage_errors_exit_2(self):
        for args in (["backup"], ["backup", "frobnicate"], ["backup", "verify"],
                     ["backup", "restore", "x.tar.zst"],
                     ["backup", "restore", "x.tar.zst", "--data-dir", "a", "--database-url",
                      "postgres://x/y"]):
            r = self.s.cli(*args, check=False)
            self.assertEqual(r.returncode, 2, args)
        r = self.s.cli("backup", "--help")
        self.assertIn("usage: lensroom backup", r.stdout)


class BackupWithS3Storage(unittest.TestCase):
    """Objects in an S3 bucket (s3rver behind the SigV4 checker): listed by
    key, copied with --with-objects, and the archive uploaded to s3://."""

    def test_keys_only_by_default_objects_on_request_and_upload_to_s3(self):
        from s3env import S3
        s3 = S3()
        self.addCleanup(s3.close)
        tmp = tempfile.mkdtemp(prefix="lensroom-bk3-")
        self.addCleanup(shutil.rmtree, tmp, True)
        # previews off: their thumbnails would join the keys while the test counts
        s = Server(dict(s3.env(), LENSROOM_PREVIEWS="false"))
        self.addCleanup(s.cleanup)
        s.start()
        user = new_user()
        s.grant(user, 40)
        token = s.token(user)
        gids = [s.infer(token).json["generationId"] for _ in range(2)]
        keys = sorted(f"{user}/photo/{g}.png" for g in gids)

        s.cli("backup", "create", "--to", os.path.join(tmp, "plain"))
        plain = os.path.join(tmp, "plain", os.listdir(os.path.join(tmp, "plain"))[0])
        m = manifest_of(plain)
        self.assertEqual((m["storage"]["backend"], m["storage"]["objects"], m["storage"]["keys"],
                          m["storage"]["copied"]), ("s3", "keys_only", 2, 0))
        tar = read_tar(plain)
        listed = members(tar)["object-keys.txt"]
        text = tar[listed.offset_data:listed.offset_data + listed.size].decode()
        self.assertEqual(sorted(text.split()), keys)
        self.assertFalse([n for n in members(tar) if n.startswith("objects/")])

        r = s.cli("backup", "create", "--with-objects", "--to", f"s3://{s3.bucket}/backups/")
        self.assertIn("uploaded lensroom-backup-", r.stdout)
        client = s3.client()
        listing = client.list_objects_v2(Bucket=s3.bucket, Prefix="backups/")["Contents"]
        self.assertEqual(len(listing), 1)
        archive = os.path.join(tmp, "from-s3.tar.zst")
        with open(archive, "wb") as f:
            f.write(client.get_object(Bucket=s3.bucket, Key=listing[0]["Key"])["Body"].read())
        self.assertIn("verify: OK", s.cli("backup", "verify", archive).stdout)
        self.assertEqual(manifest_of(archive)["storage"]["copied"], 2)

        # restored into a local folder: the objects land there, bytes equal
        target = os.path.join(tmp, "restored")
        env = {k: v for k, v in s.env.items() if not k.startswith("S3_")}
        env["LENSROOM_DATA_DIR"] = target
        cmd = [BIN, "backup", "restore", archive]
        if BACKEND == "postgres":
            pg = PgDatabase()
            self.addCleanup(pg.drop)
            cmd += ["--database-url", pg.url]
        else:
            cmd += ["--data-dir", target]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for key in keys:
            body = client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
            with open(os.path.join(target, "storage", "generations", key), "rb") as f:
                self.assertEqual(f.read(), body)


class ScheduledBackups(unittest.TestCase):
    def test_serve_makes_rotates_and_reports_backups(self):
        tmp = tempfile.mkdtemp(prefix="lensroom-bks-")
        self.addCleanup(shutil.rmtree, tmp, True)
        s = Server({"LENSROOM_BACKUP_INTERVAL": "1s", "LENSROOM_BACKUP_KEEP": "2",
                    "LENSROOM_BACKUP_DIR": tmp, "LENSROOM_METRICS_TOKEN": METRICS_TOKEN})
        self.addCleanup(s.cleanup)
        s.start()
        user = new_user()
        s.grant(user, 50)
        self.assertEqual(s.infer(s.token(user)).status, 200)

        def backup():
            return s.get("/healthz").json["backup"]
        self.assertEqual(backup()["intervalS"], 1)
        self.assertTrue(wait_for(lambda: backup()["made"] >= 3, 120), backup())

        def archives():
            return sorted(n for n in os.listdir(tmp) if n.endswith(".tar.zst"))
        self.assertTrue(wait_for(lambda: len(archives()) == 2, 60), archives())
        last = backup()["last"]
        self.assertTrue(last["ok"], last)
        self.assertGreater(last["bytes"], 0)
        self.assertRegex(last["archive"], r"^lensroom-backup-\d{8}T\d{6}\.\d{3}Z\.tar\.zst$")
        self.assertIn("at", last)
        # rotation goes on every second: hold the newest archive by a link
        pins = tempfile.mkdtemp(prefix="lensroom-bks-pin-", dir=os.path.dirname(tmp))
        self.addCleanup(shutil.rmtree, pins, True)

        def pin_newest():
            for name in reversed(archives()):
                try:
                    os.link(os.path.join(tmp, name), os.path.join(pins, name))
                    return os.path.join(pins, name)
                except FileNotFoundError:
                    continue  # rotated away since listed
            return None
        newest = wait_for(pin_newest, 60)
        self.assertTrue(newest)
        r = s.cli("backup", "verify", newest)
        self.assertIn("verify: OK", r.stdout)
        self.assertEqual(manifest_of(newest)["ledger"]["grants"], 50)
        # the same in /metrics, for alerts
        r = s.get("/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"})
        self.assertEqual(r.status, 200)
        text = r.body.decode() if isinstance(r.body, bytes) else r.body
        gauges = dict(line.split(" ", 1) for line in text.splitlines()
                      if line.startswith("lensroom_backup"))
        self.assertEqual(float(gauges["lensroom_backup_last_ok"]), 1)
        self.assertGreaterEqual(float(gauges["lensroom_backups_made"]), 3)
        self.assertEqual(float(gauges["lensroom_backup_archives_kept"]), 2)
        self.assertGreater(float(gauges["lensroom_backup_last_bytes"]), 0)
        self.assertLess(abs(float(gauges["lensroom_backup_last_timestamp_seconds"]) - time.time()),
                        600)

    def test_a_bad_rotation_policy_is_refused_at_start(self):
        s = Server({"LENSROOM_BACKUP_INTERVAL": "1h", "LENSROOM_BACKUP_KEEP": "seven"})
        self.addCleanup(s.cleanup)
        code, log = s.start_refused()
        self.assertNotEqual(code, 0)
        self.assertIn("LENSROOM_BACKUP_KEEP", log)


if __name__ == "__main__":
    unittest.main()
