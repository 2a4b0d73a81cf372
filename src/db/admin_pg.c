/* Operator reads on PostgreSQL: one connection of its own, opened lazily
 * and reset when it broke, so readiness notices a database that went away
 * and came back. Days are UTC. The per-day counts and sums read the
 * rollups of migration 0010_rollups for a range's whole days and the rows
 * only for its partial first and last day; p50/p95 are exact,
 * percentile_disc (nearest rank, the value SQLite's backend picks too)
 * over the range's rows of each model (index-only range scans on
 * idx_generations_model_created_duration), and top users sum the range's
 * ledger rows (idx_credit_transactions_created, 0004_admin).
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "db/admin_int.h"

/* The ledger rows and the generations of [lo, hi), in the rollups' columns. */
#define LEDGER_EDGE(lo, hi)                                                                        \
    "SELECT (created_at AT TIME ZONE 'UTC')::date, 1, "                                            \
    "CASE WHEN type = 'generation' THEN -amount ELSE 0 END, "                                      \
    "CASE WHEN type = 'purchase' THEN amount ELSE 0 END, "                                         \
    "CASE WHEN type = 'refund' THEN amount ELSE 0 END, "                                           \
    "CASE WHEN type IN ('bonus', 'adjustment') THEN amount ELSE 0 END "                            \
    "FROM public.credit_transactions WHERE created_at >= " lo "::timestamptz "                     \
    "AND created_at < " hi "::timestamptz"
#define GEN_EDGE(lo, hi)                                                                           \
    "SELECT (created_at AT TIME ZONE 'UTC')::date, model, 1, (status = 'success')::int, "          \
    "(status = 'failed')::int, (status = 'canceled')::int FROM public.generations "                \
    "WHERE created_at >= " lo "::timestamptz AND created_at < " hi "::timestamptz"
/* Whole days from the rollups (days [$5, $6)), the partial first and last
 * day from the rows ([$1, $3) and [$4, $2)), as (day, n, spent, bought,
 * refunded, granted) and (day, model, n, ok, failed, canceled). */
#define LEDGER_DAYS                                                                                \
    "SELECT day, rows AS n, spent, bought, refunded, granted FROM lensroom.ledger_days "           \
    "WHERE day >= $5::date AND day < $6::date UNION ALL " LEDGER_EDGE(                             \
        "$1", "$3") " UNION ALL " LEDGER_EDGE("$4", "$2")
#define GEN_DAYS                                                                                   \
    "SELECT day, model, created AS n, succeeded AS ok, failed, canceled "                          \
    "FROM lensroom.generation_days WHERE day >= $5::date AND day < $6::date "                      \
    "UNION ALL " GEN_EDGE("$1", "$3") " UNION ALL " GEN_EDGE("$4", "$2")

static const char *const sql_text[AQ_COUNT] = {
    [AQ_READY] = "SELECT 1 FROM lensroom.schema_migrations WHERE version = $1",
    [AQ_GEN_COUNTS] = "SELECT model, status, count(*) FROM public.generations "
                      "GROUP BY model, status ORDER BY model, status",
    [AQ_LEDGER_TOTALS] = "SELECT type, count(*), sum(amount) FROM public.credit_transactions "
                         "GROUP BY type ORDER BY type",
    [AQ_BALANCE_TOTAL] = "SELECT coalesce(sum(amount), 0) FROM public.credits",
    [AQ_DAYS] = "WITH x AS (" LEDGER_DAYS ") "
                "SELECT to_char(day, 'YYYY-MM-DD'), sum(spent), sum(bought), sum(refunded), "
                "sum(granted) FROM x GROUP BY day HAVING sum(n) > 0 ORDER BY day",
    [AQ_MODEL_DAYS] = "WITH x AS (" GEN_DAYS ") "
                      "SELECT to_char(day, 'YYYY-MM-DD'), model, sum(n) FROM x "
                      "GROUP BY day, model HAVING sum(n) > 0 ORDER BY day, model",
    /* Counts as above; p50/p95 exact over the range's rows, one index
     * range scan and one sort (both fractions) per model. */
    [AQ_MODELS] =
        "WITH x AS (" GEN_DAYS "), "
        "c AS (SELECT model, sum(n) AS total, sum(ok) AS ok, sum(failed) AS failed, "
        "sum(canceled) AS canceled FROM x GROUP BY model HAVING sum(n) > 0), "
        "p AS (SELECT c.*, (SELECT percentile_disc(ARRAY[0.5, 0.95]) WITHIN GROUP "
        "(ORDER BY g.duration_ms) FROM public.generations g WHERE g.model = c.model "
        "AND g.created_at >= $1::timestamptz AND g.created_at < $2::timestamptz "
        "AND g.status IN ('success', 'failed') AND g.duration_ms IS NOT NULL) AS q FROM c) "
        "SELECT model, total, ok, failed, canceled, q[1], q[2] FROM p "
        "ORDER BY total DESC, model",
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
    /* The page of users first (keyset on the unique user_id; with an
     * email prefix, only the ids lensroom.user_ids_by_email finds), then
     * only their ledger rows, on idx_credit_transactions_user_created. */
    [AQ_USERS] = "WITH page AS (SELECT user_id, amount FROM public.credits "
                 "WHERE ($1::uuid IS NULL OR user_id >= $1::uuid) "
                 "AND ($2::uuid IS NULL OR user_id <= $2::uuid) "
                 "AND ($3::uuid IS NULL OR user_id > $3::uuid) "
                 "AND ($5::text IS NULL OR user_id IN "
                 "(SELECT lensroom.user_ids_by_email($5::text, $6::text))) "
                 "ORDER BY user_id LIMIT $4::int) "
                 "SELECT p.user_id, p.amount, "
                 "coalesce(sum(t.amount) FILTER (WHERE t.type = 'purchase'), 0), "
                 "-coalesce(sum(t.amount) FILTER (WHERE t.type = 'generation'), 0), "
                 "coalesce(sum(t.amount) FILTER (WHERE t.type = 'refund'), 0), "
                 "coalesce(sum(t.amount) FILTER (WHERE t.type IN ('bonus', 'adjustment')), 0), "
                 "lensroom.iso(max(t.created_at)), "
                 "(SELECT e.email FROM lensroom.user_emails e WHERE e.user_id = p.user_id) "
                 "FROM page p LEFT JOIN public.credit_transactions t ON t.user_id = p.user_id "
                 "GROUP BY p.user_id, p.amount ORDER BY p.user_id",
    [AQ_NOTE_EMAIL] = "INSERT INTO lensroom.user_emails (user_id, email, email_lc, seen_at) "
                      "VALUES ($1::uuid, $2, $3, $4::timestamptz) ON CONFLICT (user_id) DO UPDATE "
                      "SET email = EXCLUDED.email, email_lc = EXCLUDED.email_lc, "
                      "seen_at = EXCLUDED.seen_at "
                      "WHERE lensroom.user_emails.email IS DISTINCT FROM EXCLUDED.email",
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
    PGresult *r = NULL;
    ExecStatusType st = PGRES_FATAL_ERROR;
    bool gone = true;
    /* An idle connection to a server that restarted still says OK until
     * its next statement fails: a read is retried once on a fresh
     * connection instead of answering 503; a write is not (it may have
     * committed before the connection went). */
    bool write = q == AQ_AUDIT || q == AQ_NOTE_EMAIL || q == AQ_LINK_CREATE || q == AQ_LINK_USE;
    for (int attempt = 0; attempt < (write ? 1 : 2) && gone; attempt++) {
        PQclear(r);
        r = NULL;
        PGconn *c = conn(d);
        if (!c)
            return LR_ERR_UNAVAILABLE;
        r = PQexecParams(c, sql_text[q], n, NULL, params, NULL, NULL, 0);
        st = PQresultStatus(r);
        gone = st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && PQstatus(c) != CONNECTION_OK;
    }
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
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
