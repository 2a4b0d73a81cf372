/* The billing store on SQLite: its statements run on the ledger's own
 * writer connection (lr_db_sqlite_writer), one at a time and autocommit.
 * A second connection would have to win the file's write lock from the
 * ledger's writer, and SQLite's busy handler waits that out in sleeps of
 * milliseconds, on the request path of every generation. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"
#include "db/billing.h"
#include "db/db.h"

typedef struct {
    lr_billing_db base;
    lr_db *db;
} sq_billing;

typedef struct {
    const char *sql;
    const char *const *params;
    int n;
    lr_billing_row_fn row;
    void *ctx;
    long *changes;
} statement;

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

static lr_err run(sqlite3 *h, void *arg)
{
    statement *st = arg;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(h, st->sql, -1, &s, NULL) != SQLITE_OK) {
        lr_error("sqlite billing: %s: %s", st->sql, sqlite3_errmsg(h));
        return LR_ERR_DB;
    }
    bind_all(s, st->params, st->n);
    int rc, ncol = sqlite3_column_count(s);
    const char *col[16];
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        for (int i = 0; i < ncol && i < 16; i++)
            col[i] = (const char *)sqlite3_column_text(s, i);
        if (st->row)
            st->row(col, ncol, st->ctx);
    }
    lr_err e = LR_OK;
    if (rc != SQLITE_DONE) {
        lr_error("sqlite billing: %s: %s", st->sql, sqlite3_errmsg(h));
        e = LR_ERR_DB;
    } else if (st->changes) {
        *st->changes = sqlite3_changes(h);
    }
    sqlite3_finalize(s);
    return e;
}

static lr_err sq_exec(lr_billing_db *db, const char *sql, const char *const *params, int n,
                      lr_billing_row_fn row, void *ctx, long *changes)
{
    statement st = {sql, params, n, row, ctx, changes};
    return lr_db_sqlite_writer(((sq_billing *)db)->db, run, &st);
}

typedef struct {
    const lr_billing_stmt *v;
    size_t n;
} statements;

static lr_err run_all(sqlite3 *h, void *arg)
{
    statements *all = arg;
    lr_err e = LR_OK;
    for (size_t i = 0; i < all->n && e == LR_OK; i++) {
        const lr_billing_stmt *s = &all->v[i];
        e = run(h, &(statement){s->sql, s->params, s->n, NULL, NULL, s->changes});
    }
    return e;
}

/* One job of the writer: its savepoint takes back every statement when
 * one fails. */
static lr_err sq_exec_all(lr_billing_db *db, const lr_billing_stmt *v, size_t n)
{
    statements all = {v, n};
    return lr_db_sqlite_writer(((sq_billing *)db)->db, run_all, &all);
}

static void sq_close(lr_billing_db *db)
{
    free(db);
}

static const lr_billing_driver sqlite_driver = {
    .exec = sq_exec, .exec_all = sq_exec_all, .close = sq_close};

lr_err lr_billing_sqlite_open(lr_db *db, lr_billing_db **out)
{
    sq_billing *d = lr_xcalloc(1, sizeof *d);
    d->base.drv = &sqlite_driver;
    d->db = db;
    *out = &d->base;
    return LR_OK;
}
