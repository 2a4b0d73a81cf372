/* The billing store on SQLite: one connection of its own to the server's
 * file, under a mutex. Its statements are single and short (autocommit),
 * so it never holds the write lock while the ledger's writer waits; a busy
 * database is waited out by the busy handler. */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"
#include "db/billing.h"

typedef struct {
    lr_billing_db base;
    sqlite3 *h;
    pthread_mutex_t mu;
} sq_billing;

/* Binds $1..$n by name: a statement may use them in any order, or twice. */
static void bind_all(sqlite3_stmt *s, const char *const *params, int n)
{
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "$%d", i + 1);
        int idx = sqlite3_bind_parameter_index(s, name);
        if (idx == 0)
            continue;
        if (params[i])
            sqlite3_bind_text(s, idx, params[i], -1, SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(s, idx);
    }
}

static lr_err sq_exec(lr_billing_db *db, const char *sql, const char *const *params, int n,
                      lr_billing_row_fn row, void *ctx, long *changes)
{
    sq_billing *d = (sq_billing *)db;
    pthread_mutex_lock(&d->mu);
    sqlite3_stmt *s = NULL;
    lr_err e = LR_OK;
    if (sqlite3_prepare_v2(d->h, sql, -1, &s, NULL) != SQLITE_OK) {
        lr_error("sqlite billing: %s: %s", sql, sqlite3_errmsg(d->h));
        e = LR_ERR_DB;
        goto out;
    }
    bind_all(s, params, n);
    int rc;
    int ncol = sqlite3_column_count(s);
    const char *col[16];
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        for (int i = 0; i < ncol && i < 16; i++)
            col[i] = (const char *)sqlite3_column_text(s, i);
        if (row)
            row(col, ncol, ctx);
    }
    if (rc != SQLITE_DONE) {
        lr_error("sqlite billing: %s: %s", sql, sqlite3_errmsg(d->h));
        e = LR_ERR_DB;
    } else if (changes) {
        *changes = sqlite3_changes(d->h);
    }
out:
    sqlite3_finalize(s);
    pthread_mutex_unlock(&d->mu);
    return e;
}

static void sq_close(lr_billing_db *db)
{
    sq_billing *d = (sq_billing *)db;
    sqlite3_close(d->h);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

static const lr_billing_driver sqlite_driver = {.exec = sq_exec, .close = sq_close};

lr_err lr_billing_sqlite_open(const char *path, lr_billing_db **out, char **errmsg)
{
    sq_billing *d = lr_xcalloc(1, sizeof *d);
    d->base.drv = &sqlite_driver;
    pthread_mutex_init(&d->mu, NULL);
    if (sqlite3_open_v2(path, &d->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(d->h, "PRAGMA foreign_keys=ON", NULL, NULL, NULL) != SQLITE_OK) {
        if (errmsg && asprintf(errmsg, "cannot open %s: %s", path,
                               d->h ? sqlite3_errmsg(d->h) : "out of memory") < 0)
            *errmsg = NULL;
        sq_close(&d->base);
        return LR_ERR_DB;
    }
    sqlite3_busy_timeout(d->h, 10000);
    *out = &d->base;
    return LR_OK;
}
