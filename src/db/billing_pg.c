/* The billing store on PostgreSQL: one connection of its own, under a
 * mutex, with the lensroom schema first on its search_path (where the
 * billing tables are; the ledger is found in public). A broken connection
 * is reset on next use. A batch of statements (exec_all) goes in pipeline
 * mode: one round trip, one transaction. */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"
#include "db/billing.h"

typedef struct {
    lr_billing_db base;
    char *url;
    PGconn *c;
    pthread_mutex_t mu;
} pg_billing;

static void on_notice(void *arg, const char *message)
{
    (void)arg;
    lr_debug("postgres notice: %s", message);
}

static PGconn *connect_db(const char *url)
{
    const char *keys[] = {"dbname", "connect_timeout", "options", "application_name", NULL};
    const char *vals[] = {url, "3", "-c TimeZone=UTC -c search_path=lensroom,public",
                          "lensroom-billing", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    PQsetNoticeProcessor(c, on_notice, NULL);
    return c;
}

/* Under d->mu: the connection, reset when it broke. */
static lr_err usable(pg_billing *d)
{
    if (PQstatus(d->c) != CONNECTION_OK)
        PQreset(d->c);
    if (PQstatus(d->c) == CONNECTION_OK)
        return LR_OK;
    lr_error("postgres billing: cannot connect: %s", PQerrorMessage(d->c));
    return LR_ERR_UNAVAILABLE;
}

/* Under d->mu, on a usable connection: one statement. */
static lr_err run(pg_billing *d, const char *sql, const char *const *params, int n,
                  lr_billing_row_fn row, void *ctx, long *changes)
{
    PGresult *r = PQexecParams(d->c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    lr_err e = LR_OK;
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        int ncol = PQnfields(r);
        const char *col[16];
        for (int i = 0; row && i < PQntuples(r); i++) {
            for (int j = 0; j < ncol && j < 16; j++)
                col[j] = PQgetisnull(r, i, j) ? NULL : PQgetvalue(r, i, j);
            row(col, ncol, ctx);
        }
        if (changes)
            *changes = atol(PQcmdTuples(r));
    } else {
        e = PQstatus(d->c) != CONNECTION_OK ? LR_ERR_UNAVAILABLE : LR_ERR_DB;
        lr_error("postgres billing: %s", r ? PQresultErrorMessage(r) : PQerrorMessage(d->c));
    }
    PQclear(r);
    return e;
}

static lr_err pg_exec(lr_billing_db *db, const char *sql, const char *const *params, int n,
                      lr_billing_row_fn row, void *ctx, long *changes)
{
    pg_billing *d = (pg_billing *)db;
    pthread_mutex_lock(&d->mu);
    lr_err e = usable(d);
    if (e == LR_OK)
        e = run(d, sql, params, n, row, ctx, changes);
    pthread_mutex_unlock(&d->mu);
    return e;
}

/* One statement's answer in a pipeline: its result, then the NULL that
 * ends it. */
static lr_err pipeline_result(pg_billing *d, long *changes)
{
    PGresult *r = PQgetResult(d->c);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    lr_err e = LR_OK;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (changes)
            *changes = atol(PQcmdTuples(r));
    } else {
        e = LR_ERR_DB;
        if (st != PGRES_PIPELINE_ABORTED) /* the statement that failed says why */
            lr_error("postgres billing: %s", r ? PQresultErrorMessage(r) : PQerrorMessage(d->c));
    }
    PQclear(r);
    if (r)
        PQclear(PQgetResult(d->c));
    return e;
}

/* Every statement sent at once and one Sync: one round trip and one
 * implicit transaction, which PostgreSQL rolls back whole when a
 * statement fails (those after it answer PIPELINE_ABORTED). */
static lr_err pg_exec_all(lr_billing_db *db, const lr_billing_stmt *v, size_t n)
{
    pg_billing *d = (pg_billing *)db;
    pthread_mutex_lock(&d->mu);
    lr_err e = usable(d);
    if (e == LR_OK && !PQenterPipelineMode(d->c))
        e = LR_ERR_DB;
    size_t sent = 0;
    while (e == LR_OK && sent < n &&
           PQsendQueryParams(d->c, v[sent].sql, v[sent].n, NULL, v[sent].params, NULL, NULL, 0))
        sent++;
    if (e == LR_OK && (sent < n || !PQpipelineSync(d->c))) {
        lr_error("postgres billing: %s", PQerrorMessage(d->c));
        PQreset(d->c); /* the pipeline's state is unknown: start afresh */
        pthread_mutex_unlock(&d->mu);
        return LR_ERR_UNAVAILABLE;
    }
    for (size_t i = 0; e != LR_ERR_UNAVAILABLE && i < sent; i++) {
        lr_err one = pipeline_result(d, v[i].changes);
        if (e == LR_OK)
            e = one;
    }
    if (sent == n && e != LR_ERR_UNAVAILABLE) {
        PQclear(PQgetResult(d->c)); /* PGRES_PIPELINE_SYNC */
        PQexitPipelineMode(d->c);
    }
    if (PQstatus(d->c) != CONNECTION_OK)
        e = LR_ERR_UNAVAILABLE;
    pthread_mutex_unlock(&d->mu);
    return e;
}

static void pg_close(lr_billing_db *db)
{
    pg_billing *d = (pg_billing *)db;
    PQfinish(d->c);
    free(d->url);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

static const lr_billing_driver pg_driver = {
    .exec = pg_exec, .exec_all = pg_exec_all, .close = pg_close};

lr_err lr_billing_pg_open(const char *url, lr_billing_db **out, char **errmsg)
{
    pg_billing *d = lr_xcalloc(1, sizeof *d);
    d->base.drv = &pg_driver;
    d->base.postgres = true;
    d->url = lr_xstrdup(url);
    pthread_mutex_init(&d->mu, NULL);
    d->c = connect_db(url);
    if (PQstatus(d->c) != CONNECTION_OK) {
        if (errmsg &&
            asprintf(errmsg, "cannot connect to PostgreSQL: %s", PQerrorMessage(d->c)) < 0)
            *errmsg = NULL;
        pg_close(&d->base);
        return LR_ERR_UNAVAILABLE;
    }
    *out = &d->base;
    return LR_OK;
}
