/* Operator reads on SQLite: one connection of its own (WAL lets it read
 * while the server writes), statements prepared once. Timestamps are
 * ISO-8601 text, so a day is its first ten characters and a range is a
 * text comparison. Per-day counts and sums read the rollups of migration
 * 0011_rollups for a range's whole days, the rows for its partial first
 * and last day. SQLite has no percentile function: p50/p95 are the exact
 * nearest-rank values (rank ceil(p * n)) over the range's rows, picked
 * with row_number(), as PostgreSQL's percentile_disc picks them.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "db/admin_int.h"

/* The ledger rows and the generations of [lo, hi), in the rollups' columns. */
#define LEDGER_EDGE(lo, hi)                                                                        \
    "SELECT substr(created_at, 1, 10), 1, "                                                        \
    "CASE WHEN type = 'generation' THEN -amount ELSE 0 END, "                                      \
    "CASE WHEN type = 'purchase' THEN amount ELSE 0 END, "                                         \
    "CASE WHEN type = 'refund' THEN amount ELSE 0 END, "                                           \
    "CASE WHEN type IN ('bonus', 'adjustment') THEN amount ELSE 0 END "                            \
    "FROM credit_transactions WHERE created_at >= " lo " AND created_at < " hi
#define GEN_EDGE(lo, hi)                                                                           \
    "SELECT substr(created_at, 1, 10), model, 1, status = 'success', status = 'failed', "          \
    "status = 'canceled' FROM generations WHERE created_at >= " lo " AND created_at < " hi
/* Whole days from the rollups (days [?5, ?6)), the partial first and last
 * day from the rows ([?1, ?3) and [?4, ?2)), as (day, n, spent, bought,
 * refunded, granted) and (day, model, n, ok, failed, canceled). */
#define LEDGER_DAYS                                                                                \
    "SELECT day, rows AS n, spent, bought, refunded, granted FROM ledger_days "                    \
    "WHERE day >= ?5 AND day < ?6 UNION ALL " LEDGER_EDGE("?1", "?3") " UNION ALL " LEDGER_EDGE(   \
        "?4", "?2")
#define GEN_DAYS                                                                                   \
    "SELECT day, model, created AS n, succeeded AS ok, failed, canceled FROM generation_days "     \
    "WHERE day >= ?5 AND day < ?6 UNION ALL " GEN_EDGE("?1", "?3") " UNION ALL " GEN_EDGE("?4",    \
                                                                                          "?2")

static const char *const sql_text[AQ_COUNT] = {
    [AQ_READY] = "SELECT 1 FROM schema_migrations WHERE version = ?1",
    [AQ_GEN_COUNTS] = "SELECT model, status, count(*) FROM generations GROUP BY model, status "
                      "ORDER BY model, status",
    [AQ_LEDGER_TOTALS] = "SELECT type, count(*), sum(amount) FROM credit_transactions "
                         "GROUP BY type ORDER BY type",
    [AQ_BALANCE_TOTAL] = "SELECT coalesce(sum(amount), 0) FROM credits",
    [AQ_DAYS] = "WITH x AS (" LEDGER_DAYS ") SELECT day, sum(spent), sum(bought), sum(refunded), "
                "sum(granted) FROM x GROUP BY day HAVING sum(n) > 0 ORDER BY day",
    [AQ_MODEL_DAYS] = "WITH x AS (" GEN_DAYS ") SELECT day, model, sum(n) FROM x "
                      "GROUP BY day, model HAVING sum(n) > 0 ORDER BY day, model",
    [AQ_MODELS] =
        "WITH d AS (SELECT model, duration_ms, "
        "row_number() OVER (PARTITION BY model ORDER BY duration_ms) AS rn, "
        "count(*) OVER (PARTITION BY model) AS cnt FROM generations "
        "WHERE created_at >= ?1 AND created_at < ?2 AND duration_ms IS NOT NULL "
        "AND status IN ('success', 'failed')), "
        "p AS (SELECT model, max(CASE WHEN rn = (cnt * 50 + 99) / 100 THEN duration_ms END) AS "
        "p50, "
        "max(CASE WHEN rn = (cnt * 95 + 99) / 100 THEN duration_ms END) AS p95 FROM d "
        "GROUP BY model), "
        "x AS (" GEN_DAYS "), "
        "c AS (SELECT model, sum(n) AS total, sum(ok) AS ok, sum(failed) AS failed, "
        "sum(canceled) AS canceled FROM x GROUP BY model HAVING sum(n) > 0) "
        "SELECT c.model, c.total, c.ok, c.failed, c.canceled, p.p50, p.p95 FROM c "
        "LEFT JOIN p ON p.model = c.model ORDER BY c.total DESC, c.model",
    [AQ_TOP_USERS] = "SELECT user_id, -sum(amount) AS spent, sum(type = 'generation') "
                     "FROM credit_transactions WHERE created_at >= ?1 AND created_at < ?2 "
                     "AND type IN ('generation', 'refund') GROUP BY user_id "
                     "ORDER BY spent DESC, user_id LIMIT ?3",
    [AQ_GENERATIONS] = "SELECT " LR_SQLITE_GEN_COLUMNS " FROM generations WHERE deleted_at IS NULL "
                       "AND (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR status = ?2) "
                       "AND (?3 IS NULL OR model = ?3) AND (?4 IS NULL OR created_at >= ?4) "
                       "AND (?5 IS NULL OR (created_at, id) < (?5, ?6)) "
                       "ORDER BY created_at DESC, id DESC LIMIT ?7",
    [AQ_GEN_LEDGER] = "SELECT id, amount, type, description, metadata, generation_id, created_at "
                      "FROM credit_transactions WHERE generation_id = ?1 ORDER BY created_at, id",
    [AQ_AUDIT] = "INSERT INTO admin_audit (id, actor, action, subject, detail, request_id, "
                 "created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    /* The page of users first (keyset on the unique user_id; with an
     * email prefix, only the ids user_emails_email finds), then only their
     * ledger rows, on credit_transactions_user_created. */
    [AQ_USERS] = "WITH page AS (SELECT user_id, amount FROM credits "
                 "WHERE (?1 IS NULL OR user_id >= ?1) AND (?2 IS NULL OR user_id <= ?2) "
                 "AND (?3 IS NULL OR user_id > ?3) AND (?5 IS NULL OR user_id IN "
                 "(SELECT user_id FROM user_emails WHERE email_lc >= ?5 AND email_lc < ?6)) "
                 "ORDER BY user_id LIMIT ?4) "
                 "SELECT p.user_id, p.amount, "
                 "coalesce(sum(CASE WHEN t.type = 'purchase' THEN t.amount END), 0), "
                 "-coalesce(sum(CASE WHEN t.type = 'generation' THEN t.amount END), 0), "
                 "coalesce(sum(CASE WHEN t.type = 'refund' THEN t.amount END), 0), "
                 "coalesce(sum(CASE WHEN t.type IN ('bonus', 'adjustment') THEN t.amount END), 0), "
                 "max(t.created_at), (SELECT email FROM user_emails e WHERE e.user_id = p.user_id) "
                 "FROM page p LEFT JOIN credit_transactions t ON t.user_id = p.user_id "
                 "GROUP BY p.user_id, p.amount ORDER BY p.user_id",
    [AQ_NOTE_EMAIL] = "INSERT INTO user_emails (user_id, email, email_lc, seen_at) "
                      "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (user_id) DO UPDATE SET "
                      "email = excluded.email, email_lc = excluded.email_lc, "
                      "seen_at = excluded.seen_at WHERE email IS NOT excluded.email",
    [AQ_LINK_CREATE] = "INSERT INTO admin_links (token_hash, user_id, expires_at, created_at) "
                       "VALUES (?1, ?2, ?3, ?4)",
    [AQ_LINK_USE] = "UPDATE admin_links SET used_at = ?2 WHERE token_hash = ?1 "
                    "AND used_at IS NULL AND expires_at > ?2 RETURNING user_id",
};

typedef struct {
    lr_admin base;
    sqlite3 *h;
    sqlite3_stmt *st[AQ_COUNT];
} sq_admin;

static lr_err sq_rows(lr_admin *a, int q, int n, const char *const *params, lr_db_row_fn add,
                      int ncols, void *list)
{
    sq_admin *d = (sq_admin *)a;
    if (!d->st[q] && sqlite3_prepare_v2(d->h, sql_text[q], -1, &d->st[q], NULL) != SQLITE_OK) {
        lr_error("sqlite admin: %s", sqlite3_errmsg(d->h));
        return LR_ERR_DB;
    }
    sqlite3_stmt *s = d->st[q];
    for (int i = 0; i < n; i++)
        sqlite3_bind_text(s, i + 1, params[i], -1, SQLITE_TRANSIENT);
    const char *col[GC_COUNT];
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        for (int j = 0; j < ncols; j++)
            col[j] = (const char *)sqlite3_column_text(s, j);
        if (add)
            add(col, list);
    }
    lr_err e = rc == SQLITE_DONE ? LR_OK : LR_ERR_DB;
    if (e != LR_OK)
        lr_error("sqlite admin: %s", sqlite3_errmsg(d->h));
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return e;
}

static void sq_close(lr_admin *a)
{
    sq_admin *d = (sq_admin *)a;
    for (int i = 0; i < AQ_COUNT; i++)
        sqlite3_finalize(d->st[i]);
    sqlite3_close(d->h);
    free(d);
}

lr_err lr_admin_sqlite_open(const char *path, lr_admin **out, char **errmsg)
{
    sq_admin *d = lr_xcalloc(1, sizeof *d);
    d->base = (lr_admin){
        .rows = sq_rows, .close = sq_close, .latest_migration = lr_db_sqlite_latest_migration()};
    if (sqlite3_open_v2(path, &d->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        if (errmsg && asprintf(errmsg, "cannot open %s: %s", path, sqlite3_errmsg(d->h)) < 0)
            *errmsg = NULL;
        sq_close(&d->base);
        return LR_ERR_DB;
    }
    sqlite3_busy_timeout(d->h, 10000);
    *out = &d->base;
    return LR_OK;
}
