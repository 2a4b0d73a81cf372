/* Snapshots (snapshot.h): the handle, dispatched by backend to the SQLite
 * half (snapshot.c) or the PostgreSQL half (snapshot_pg.c). */
#include <sqlite3.h>
#include <stdlib.h>

#include "core/util.h"
#include "db/db.h"
#include "db/snapshot.h"
#include "db/snapshot_int.h"

struct lr_db_snapshot {
    sqlite3 *copy;      /* SQLite: the snapshot file, read-only */
    lr_pg_snapshot *pg; /* PostgreSQL: the open snapshot transaction */
};

lr_err lr_db_snapshot_take(const lr_snapshot_opts *o, lr_db_snapshot **out, char **errmsg)
{
    lr_db_snapshot *s = lr_xcalloc(1, sizeof *s);
    lr_err e = lr_db_url_is_postgres(o->url) ? lr_pg_snapshot_take(o, &s->pg, errmsg)
                                             : lr_sqlite_snapshot_take(o, &s->copy, errmsg);
    if (e != LR_OK) {
        free(s);
        return e;
    }
    *out = s;
    return LR_OK;
}

const char *lr_db_snapshot_backend(const lr_db_snapshot *s)
{
    return s->pg ? "postgres" : "sqlite";
}

lr_err lr_db_snapshot_stats(lr_db_snapshot *s, lr_snapshot_stats *st)
{
    if (s->pg)
        return lr_pg_snapshot_stats(s->pg, st);
    char *err = NULL;
    lr_err e = lr_sqlite_snapshot_stats(s->copy, st, &err);
    free(err);
    return e;
}

lr_err lr_db_snapshot_each_key(lr_db_snapshot *s, lr_snapshot_key_fn fn, void *ctx)
{
    return s->pg ? lr_pg_snapshot_each_key(s->pg, fn, ctx)
                 : lr_sqlite_snapshot_each_key(s->copy, fn, ctx);
}

void lr_db_snapshot_free(lr_db_snapshot *s)
{
    if (!s)
        return;
    if (s->pg)
        lr_pg_snapshot_free(s->pg);
    sqlite3_close(s->copy);
    free(s);
}
