/* Operator reads on PostgreSQL: one connection of its own, opened lazily
 * and reset when it broke, so readiness notices a database that went away
 * and came back. Days are UTC; p50/p95 are percentile_disc (nearest rank,
 * the value SQLite's backend picks too). The range queries run on the
 * indexes of migration 0004_admin (created_at first, the summed columns
 * included, so the per-day sums are index-only scans).
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "db/admin_int.h"

#define DAY(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD')"

static const char *const sql_text[AQ_COUNT] = {
    [AQ_READY] = "SELECT 1 FROM lensroom.schema_migrations WHERE version = $1",
    [AQ_GEN_COUNTS] = "SELECT model, status, count(*) FROM public.generations "
                      "GROUP BY model, status ORDER BY model, status",
    [AQ_LEDGER_TOTALS] = "SELECT type, count(*), sum(amount) FROM public.credit_transactions "
                         "GROUP BY type ORDER BY type",
    [AQ_BALANCE_TOTAL] = "SELECT coalesce(sum(amount), 0) FROM public.credits",
    [AQ_DAYS] = "SELECT " DAY(
        "created_at") " AS day, "
                      "-coalesce(sum(amount) FILTER (WHERE type = 'generation'), 0), "
                      "coalesce(sum(amount) FILTER (WHERE type = 'purchase'), 0), "
                      "coalesce(sum(amount) FILTER (WHERE type = 'refund'), 0), "
                      "coalesce(sum(amount) FILTER (WHERE type IN ('bonus', 'adjustment')), 0) "
                      "FROM public.credit_transactions "
                      "WHERE created_at >= $1::timestamptz AND created_at < $2::timestamptz "
                      "GROUP BY day ORDER BY day",
    [AQ_MODEL_DAYS] = "SELECT " DAY(
        "created_at") " AS day, model, count(*) "
                      "FROM public.generations "
                      "WHERE created_at >= $1::timestamptz AND created_at < $2::timestamptz "
                      "GROUP BY day, model ORDER BY day, model",
    [AQ_MODELS] =
        "SELECT model, count(*), count(*) FILTER (WHERE status = 'success'), "
        "count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'canceled'), "
        "percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ms) "
        "FILTER (WHERE status IN ('success', 'failed')), "
        "percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms) "
        "FILTER (WHERE status IN ('success', 'failed')) "
        "FROM public.generations "
        "WHERE created_at >= $1::timestamptz AND created_at < $2::timestamptz "
        "GROUP BY model ORDER BY count(*) DESC, model",
    [AQ_TOP_USERS] = "SELECT user_id, -sum(amount) AS spent, "
                     "count(*) FILTER (WHERE type = 'generation') "
                     "FROM public.credit_transactions "
                     "WHERE created_at >= $1::timestamptz AND created_at < $2::timestamptz "
                     "AND type IN ('generation', 'refund') GROUP BY user_id "
                     "ORDER BY spent DESC, user_id LIMIT $3::int",
    [AQ_GENERATIONS] =
        "SELECT " LR_PG_GEN_COLUMNS " FROM public.generations g WHERE g.deleted_at IS NULL "
        "AND ($1::uuid IS NULL OR g.user_id = $1::uuid) AND ($2::text IS NULL OR g.status = $2) "
        "AND ($3::text IS NULL OR g.model = $3) "
        "AND ($4::timestamptz IS NULL OR g.created_at >= $4::timestamptz) "
        "AND ($5::timestamptz IS NULL OR (g.created_at, g.id) < ($5::timestamptz, $6::uuid)) "
        "ORDER BY g.created_at DESC, g.id DESC LIMIT $7::int",
    [AQ_GEN_LEDGER] = "SELECT id, amount, type, description, coalesce(metadata, '{}'::jsonb), "
                      "generation_id, lensroom.iso(created_at) FROM public.credit_transactions "
                      "WHERE generation_id = $1::uuid ORDER BY created_at, id",
    [AQ_AUDIT] = "INSERT INTO lensroom.admin_audit (id, actor, action, subject, detail, "
                 "request_id, created_at) VALUES ($1::uuid, $2, $3, $4, $5::jsonb, $6, "
                 "$7::timestamptz)",
    /* The page of users first (keyset on the unique user_id), then only
     * their ledger rows, on idx_credit_transactions_user_created. */
    [AQ_USERS] = "WITH page AS (SELECT user_id, amount FROM public.credits "
                 "WHERE ($1::uuid IS NULL OR user_id >= $1::uuid) "
                 "AND ($2::uuid IS NULL OR user_id <= $2::uuid) "
                 "AND ($3::uuid IS NULL OR user_id > $3::uuid) ORDER BY user_id LIMIT $4::int) "
                 "SELECT p.user_id, p.amount, "
                 "coalesce(sum(t.amount) FILTER (WHERE t.type = 'purchase'), 0), "
                 "-coalesce(sum(t.amount) FILTER (WHERE t.type = 'generation'), 0), "
                 "coalesce(sum(t.amount) FILTER (WHERE t.type = 'refund'), 0), "
                 "coalesce(sum(t.amount) FILTER (WHERE t.type IN ('bonus', 'adjustment')), 0), "
                 "lensroom.iso(max(t.created_at)) FROM page p "
                 "LEFT JOIN public.credit_transactions t ON t.user_id = p.user_id "
                 "GROUP BY p.user_id, p.amount ORDER BY p.user_id",
    [AQ_LINK_CREATE] = "INSERT INTO lensroom.admin_links (token_hash, user_id, expires_at, "
                       "created_at) VALUES ($1, $2::uuid, $3::timestamptz, $4::timestamptz)",
    [AQ_LINK_USE] = "UPDATE lensroom.admin_links SET used_at = $2::timestamptz "
                    "WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2::timestamptz "
                    "RETURNING user_id",
};

typedef struct {
    lr_admin base;
    char *url;
    PGconn *c;
} pg_admin;

static void on_notice(void *arg, const char *message)
{
    (void)arg;
    lr_debug("postgres notice: %s", message);
}

/* The connection, (re)opened when it is missing or broke; NULL while the
 * server is away. */
static PGconn *conn(pg_admin *d)
{
    if (!d->c) {
        const char *keys[] = {"dbname", "connect_timeout", "options", "application_name", NULL};
        const char *vals[] = {d->url, "3", "-c TimeZone=UTC", "lensroom-admin", NULL};
        d->c = PQconnectdbParams(keys, vals, 1);
        PQsetNoticeProcessor(d->c, on_notice, NULL);
    } else if (PQstatus(d->c) != CONNECTION_OK) {
        PQreset(d->c);
    }
    return PQstatus(d->c) == CONNECTION_OK ? d->c : NULL;
}

static lr_err pg_rows(lr_admin *a, int q, int n, const char *const *params, lr_db_row_fn add,
                      int ncols, void *list)
{
    pg_admin *d = (pg_admin *)a;
    PGconn *c = conn(d);
    if (!c)
        return LR_ERR_UNAVAILABLE;
    PGresult *r = PQexecParams(c, sql_text[q], n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        bool gone = PQstatus(c) != CONNECTION_OK;
        if (!gone)
            lr_error("postgres admin: %s", PQresultErrorMessage(r));
        PQclear(r);
        return gone ? LR_ERR_UNAVAILABLE : LR_ERR_DB;
    }
    const char *col[GC_COUNT];
    for (int i = 0; add && i < PQntuples(r); i++) {
        for (int j = 0; j < ncols; j++)
            col[j] = PQgetisnull(r, i, j) ? NULL : PQgetvalue(r, i, j);
        add(col, list);
    }
    PQclear(r);
    return LR_OK;
}

static void pg_close(lr_admin *a)
{
    pg_admin *d = (pg_admin *)a;
    if (d->c)
        PQfinish(d->c);
    free(d->url);
    free(d);
}

lr_err lr_admin_pg_open(const char *url, lr_admin **out, char **errmsg)
{
    (void)errmsg; /* connecting is lazy: a database that is down now may be up later */
    pg_admin *d = lr_xcalloc(1, sizeof *d);
    d->base = (lr_admin){
        .rows = pg_rows, .close = pg_close, .latest_migration = lr_db_pg_latest_migration()};
    d->url = lr_xstrdup(url);
    *out = &d->base;
    return LR_OK;
}
