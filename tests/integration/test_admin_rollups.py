"""The analytics read per-day rollups kept by triggers (migrations
0011_rollups on SQLite, 0010_rollups on PostgreSQL). After a mixed
workload — infers that succeed and fail, grants, credits taken back, rows
moved to other days, a status changed and a row deleted by hand — the
answer of `lensroom analytics` over ranges that start and end mid-day, on
midnight and inside one day equals the numbers computed here from the raw
rows, and so do the rollup tables themselves, before and after the
migration's backfill rebuilds them."""
import datetime
import json
import unittest

from harness import ServerTest, new_user

UTC = datetime.timezone.utc


def as_time(v):
    if isinstance(v, datetime.datetime):
        return v.astimezone(UTC)
    return datetime.datetime.strptime(v, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def iso(t):
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def nearest_rank(values, p):
    v = sorted(values)
    return v[max(1, -(-len(v) * p // 100)) - 1] if v else None


class AdminRollups(ServerTest):
    server_env = {"LENSROOM_MOCK_FAIL_RATE": "0.35"}

    def workload(self):
        users = [new_user() for _ in range(3)]
        for i, u in enumerate(users):
            self.server.grant(u, 400)
            token = self.server.token(u)
            for k in range(5 + i):
                model = ("seedream_image", "midjourney_image", "anthropic_text")[k % 3]
                self.server.infer(token, model=model, prompt=f"p{k}")
        self.server.cli("credits", "take", users[0], "7", "--reason", "test")
        # Rows moved to earlier days, on and around midnight, by hand: the
        # update triggers move their counts between days.
        today = datetime.datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.today = today
        stamps = [today - datetime.timedelta(days=3, hours=-10),
                  today - datetime.timedelta(days=1, milliseconds=1),
                  today - datetime.timedelta(days=1),
                  today - datetime.timedelta(hours=12)]
        with self.server.db() as c:
            gens = [str(r[0]) for r in
                    c.execute("SELECT id FROM generations ORDER BY id").fetchall()]
            txs = [str(r[0]) for r in
                   c.execute("SELECT id FROM credit_transactions ORDER BY id").fetchall()]
            for i, g in enumerate(gens[:8]):
                c.execute("UPDATE generations SET created_at = ? WHERE id = ?",
                          (iso(stamps[i % 4]), g))
            for i, t in enumerate(txs[:8]):
                c.execute("UPDATE credit_transactions SET created_at = ? WHERE id = ?",
                          (iso(stamps[(i + 1) % 4]), t))
            c.execute("UPDATE generations SET status = 'canceled' WHERE id = ?", (gens[9],))
            c.execute("UPDATE generations SET model = 'veo3_video' WHERE id = ?", (gens[10],))
            c.execute("DELETE FROM generations WHERE id = ?", (gens[11],))
            c.execute("DELETE FROM credit_transactions WHERE id = ?", (txs[9],))
        return users

    def raw(self):
        with self.server.db() as c:
            tx = c.execute("SELECT user_id, type, amount, created_at FROM credit_transactions"
                           ).fetchall()
            gens = c.execute("SELECT model, status, duration_ms, created_at FROM generations"
                             ).fetchall()
        return ([(str(u), t, a, as_time(at)) for u, t, a, at in tx],
                [(m, s, d, as_time(at)) for m, s, d, at in gens])

    def expected(self, since, until):
        tx, gens = self.raw()
        days, models, model_days = {}, {}, {}
        for _, t, a, at in tx:
            if not since <= at < until:
                continue
            d = days.setdefault(at.strftime("%Y-%m-%d"),
                                {"spent": 0, "bought": 0, "refunded": 0, "granted": 0})
            key = {"generation": "spent", "purchase": "bought", "refund": "refunded",
                   "bonus": "granted", "adjustment": "granted"}.get(t)
            if key:
                d[key] += -a if t == "generation" else a
        for m, s, dur, at in gens:
            if not since <= at < until:
                continue
            e = models.setdefault(m, {"total": 0, "succeeded": 0, "failed": 0, "canceled": 0,
                                      "d": []})
            e["total"] += 1
            if s in ("success", "failed", "canceled"):
                e[{"success": "succeeded"}.get(s, s)] += 1
            if s in ("success", "failed") and dur is not None:
                e["d"].append(dur)
            k = (at.strftime("%Y-%m-%d"), m)
            model_days[k] = model_days.get(k, 0) + 1
        return days, models, model_days

    def check(self, since, until):
        got = json.loads(self.server.cli("analytics", "--since", iso(since), "--until",
                                         iso(until), "--json").stdout)
        days, models, model_days = self.expected(since, until)
        where = f"[{iso(since)}, {iso(until)})"
        self.assertEqual({d["day"]: {k: d[k] for k in ("spent", "bought", "refunded", "granted")}
                          for d in got["creditsPerDay"]}, days, where)
        self.assertEqual({(r["day"], r["model"]): r["count"]
                          for r in got["generationsPerModelPerDay"]}, model_days, where)
        self.assertEqual({m["model"] for m in got["models"]}, set(models), where)
        for m in got["models"]:
            e = models[m["model"]]
            for k in ("total", "succeeded", "failed", "canceled"):
                self.assertEqual(m[k], e[k], (where, m["model"], k))
            self.assertEqual(m["p50Ms"], nearest_rank(e["d"], 50), where)
            self.assertEqual(m["p95Ms"], nearest_rank(e["d"], 95), where)
        return got

    def rollup_tables_match_the_rows(self):
        tx, gens = self.raw()
        want_g, want_l = {}, {}
        for m, s, _, at in gens:
            e = want_g.setdefault((at.strftime("%Y-%m-%d"), m), [0, 0, 0, 0])
            e[0] += 1
            for i, st in ((1, "success"), (2, "failed"), (3, "canceled")):
                e[i] += s == st
        for _, t, a, at in tx:
            e = want_l.setdefault(at.strftime("%Y-%m-%d"), [0, 0, 0, 0, 0])
            e[0] += 1
            e[1] += -a if t == "generation" else 0
            e[2] += a if t == "purchase" else 0
            e[3] += a if t == "refund" else 0
            e[4] += a if t in ("bonus", "adjustment") else 0
        schema = "lensroom." if self.server.pg else ""
        with self.server.db() as c:
            g = c.execute(f"SELECT day, model, sum(created), sum(succeeded), sum(failed), "
                          f"sum(canceled) FROM {schema}generation_days GROUP BY day, model "
                          f"HAVING sum(created) <> 0").fetchall()
            lg = c.execute(f"SELECT day, sum(rows), sum(spent), sum(bought), sum(refunded), "
                           f"sum(granted) FROM {schema}ledger_days GROUP BY day "
                           f"HAVING sum(rows) <> 0").fetchall()
        self.assertEqual({(str(r[0]), r[1]): [int(x) for x in r[2:]] for r in g}, want_g)
        self.assertEqual({str(r[0]): [int(x) for x in r[1:]] for r in lg}, want_l)

    def test_rollup_answers_equal_the_rows_after_a_mixed_workload(self):
        self.workload()
        t = self.today
        h = datetime.timedelta(hours=1)
        d = datetime.timedelta(days=1)
        ranges = [
            (datetime.datetime(2000, 1, 1, tzinfo=UTC), datetime.datetime(2100, 1, 1, tzinfo=UTC)),
            (t - 3 * d + 12 * h, t - d),               # partial first day, ends on midnight
            (t - 3 * d, t + 2 * h),                    # starts on midnight, partial last day
            (t - 2 * d + 23 * h, t - d + 6 * h),       # no whole day inside
            (t - d - datetime.timedelta(milliseconds=1), t - d + datetime.timedelta(milliseconds=1)),
            (t - d, t - 3 * d),                        # empty
        ]
        for since, until in ranges:
            self.check(since, until)
        self.rollup_tables_match_the_rows()
        # The migration's backfill rebuilds what the triggers kept.
        schema = "lensroom." if self.server.pg else ""
        version = "0010_rollups" if self.server.pg else "0011_rollups"
        with self.server.db() as c:
            c.execute(f"DELETE FROM {schema}generation_days")
            c.execute(f"UPDATE {schema}ledger_days SET spent = spent + 1000")
            c.execute(f"DELETE FROM {schema}schema_migrations WHERE version = ?", (version,))
        self.server.cli("migrate")
        self.rollup_tables_match_the_rows()
        self.check(*ranges[0])
        self.check(*ranges[1])


if __name__ == "__main__":
    unittest.main()
