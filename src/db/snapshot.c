/* Snapshots (snapshot.h): the SQLite half (snapshot_open.c dispatches by
 * backend), and the stats query both halves run.
 *
 * The SQLite copy is made by the online backup API in a single step: one
 * read transaction over every page, so the copy is one point in time
 * while the server's writer keeps committing to the WAL. The copy is then
 * switched out of WAL mode, so it is one self-contained file, and read
 * back through a read-only connection for its stats and object keys.
 */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"
#include "db/db.h"
#include "db/snapshot.h"
#include "db/snapshot_int.h"

/* How long a locked source may hold the copy up before we give up. */
#define COPY_BUSY_MS 30000

char *lr_snapshot_stats_sql(void)
{
    char *sql = NULL;
    if (asprintf(&sql,
                 "SELECT (SELECT COUNT(*) FROM credits), "
                 "(SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM credits), "
                 "(SELECT COUNT(*) FROM credit_transactions), "
                 "(SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM credit_transactions "
                 "WHERE type NOT IN ('generation', 'refund')), "
                 "(SELECT CAST(COALESCE(-SUM(amount), 0) AS BIGINT) FROM credit_transactions "
                 "WHERE type = 'generation'), "
                 "(SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM credit_transactions "
                 "WHERE type = 'refund'), "
                 "(SELECT COUNT(*) FROM generations), "
                 "(SELECT COUNT(*) FROM generations WHERE status = 'success'), "
                 "(SELECT COUNT(*) FROM (\n%s\n) v)",
                 lr_sql_audit) < 0)
        abort();
    return sql;
}

static void set_err(char **errmsg, const char *what, const char *detail)
{
    if (errmsg && asprintf(errmsg, "%s: %s", what, detail ? detail : "unknown error") < 0)
        *errmsg = NULL;
}

/* One step with the whole database; BUSY/LOCKED (a checkpoint or another
 * process holding a lock) is retried for a while. */
static int copy_pages(sqlite3 *src, sqlite3 *dst)
{
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
    if (!b)
        return sqlite3_errcode(dst);
    int rc, waited = 0;
    while ((rc = sqlite3_backup_step(b, -1)) == SQLITE_BUSY || rc == SQLITE_LOCKED) {
        if (waited >= COPY_BUSY_MS)
            break;
        sqlite3_sleep(20);
        waited += 20;
    }
    int fin = sqlite3_backup_finish(b);
    return rc == SQLITE_DONE ? fin : rc;
}

lr_err lr_sqlite_snapshot_take(const lr_snapshot_opts *o, sqlite3 **copy, char **errmsg)
{
    struct stat sb;
    if (lstat(o->out_path, &sb) == 0) {
        set_err(errmsg, o->out_path, "already exists");
        return LR_ERR_CONFLICT;
    }
    sqlite3 *src = NULL, *dst = NULL;
    lr_err e = LR_ERR_DB;
    /* Read-write without CREATE: a missing database is an error, and a
     * WAL database is readable whether or not the server runs. */
    if (sqlite3_open_v2(o->url, &src, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        set_err(errmsg, o->url, src ? sqlite3_errmsg(src) : "cannot open");
        goto out;
    }
    sqlite3_busy_timeout(src, COPY_BUSY_MS);
    if (sqlite3_open_v2(o->out_path, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        set_err(errmsg, o->out_path, dst ? sqlite3_errmsg(dst) : "cannot create");
        goto out;
    }
    chmod(o->out_path, 0600);
    int rc = copy_pages(src, dst);
    if (rc != SQLITE_OK) {
        set_err(errmsg, "snapshot", sqlite3_errstr(rc));
        goto out;
    }
    if (sqlite3_exec(dst, "PRAGMA journal_mode = DELETE", NULL, NULL, NULL) != SQLITE_OK) {
        set_err(errmsg, "snapshot", sqlite3_errmsg(dst));
        goto out;
    }
    sqlite3_close(dst);
    dst = NULL;
    if (lr_fsync_file(o->out_path) != 0) {
        set_err(errmsg, o->out_path, strerror(errno));
        e = LR_ERR_IO;
        goto out;
    }
    if (sqlite3_open_v2(o->out_path, copy, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        set_err(errmsg, o->out_path, sqlite3_errmsg(*copy));
        sqlite3_close(*copy);
        *copy = NULL;
        goto out;
    }
    e = LR_OK;
out:
    sqlite3_close(src);
    sqlite3_close(dst);
    if (e != LR_OK)
        unlink(o->out_path);
    return e;
}

lr_err lr_sqlite_snapshot_stats(sqlite3 *h, lr_snapshot_stats *st, char **errmsg)
{
    *st = (lr_snapshot_stats){0};
    sqlite3_stmt *q = NULL;
    lr_err e = LR_ERR_DB;
    if (sqlite3_prepare_v2(h, "SELECT COALESCE(MAX(version), '') FROM schema_migrations", -1, &q,
                           NULL) != SQLITE_OK ||
        sqlite3_step(q) != SQLITE_ROW) {
        set_err(errmsg, "not a LensRoom database (no schema_migrations)", sqlite3_errmsg(h));
        goto out;
    }
    snprintf(st->schema, sizeof st->schema, "%s", (const char *)sqlite3_column_text(q, 0));
    sqlite3_finalize(q);
    q = NULL;
    char *sql = lr_snapshot_stats_sql();
    int rc = sqlite3_prepare_v2(h, sql, -1, &q, NULL);
    free(sql);
    if (rc != SQLITE_OK || sqlite3_step(q) != SQLITE_ROW) {
        set_err(errmsg, "reading the ledger totals", sqlite3_errmsg(h));
        goto out;
    }
    int64_t *cols[] = {&st->users,       &st->balances,  &st->transactions,
                       &st->grants,      &st->charges,   &st->refunds,
                       &st->generations, &st->succeeded, &st->violations};
    for (int i = 0; i < (int)(sizeof cols / sizeof *cols); i++)
        *cols[i] = sqlite3_column_int64(q, i);
    e = LR_OK;
out:
    sqlite3_finalize(q);
    return e;
}

lr_err lr_sqlite_snapshot_each_key(sqlite3 *h, lr_snapshot_key_fn fn, void *ctx)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(h,
                           "SELECT j.value FROM generations g, json_each(g.storage_keys) j "
                           "WHERE g.deleted_at IS NULL AND j.type = 'text'",
                           -1, &q, NULL) != SQLITE_OK)
        return LR_ERR_DB;
    lr_err e = LR_OK;
    int rc;
    while (e == LR_OK && (rc = sqlite3_step(q)) == SQLITE_ROW)
        e = fn(ctx, (const char *)sqlite3_column_text(q, 0));
    if (e == LR_OK && rc != SQLITE_DONE)
        e = LR_ERR_DB;
    sqlite3_finalize(q);
    return e;
}

lr_err lr_db_sqlite_file_stats(const char *path, lr_snapshot_stats *st, char **errmsg)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *q = NULL;
    lr_err e = LR_ERR_DB;
    if (sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        set_err(errmsg, "cannot open the database snapshot", h ? sqlite3_errmsg(h) : NULL);
        goto out;
    }
    /* quick_check reads every page: a damaged copy is refused here. */
    if (sqlite3_prepare_v2(h, "PRAGMA quick_check", -1, &q, NULL) != SQLITE_OK ||
        sqlite3_step(q) != SQLITE_ROW) {
        set_err(errmsg, "the database snapshot is not a SQLite database", sqlite3_errmsg(h));
        goto out;
    }
    const char *verdict = (const char *)sqlite3_column_text(q, 0);
    if (!verdict || strcmp(verdict, "ok") != 0) {
        set_err(errmsg, "the database snapshot is damaged (quick_check)", verdict);
        goto out;
    }
    e = lr_sqlite_snapshot_stats(h, st, errmsg);
out:
    sqlite3_finalize(q);
    sqlite3_close(h);
    return e;
}
