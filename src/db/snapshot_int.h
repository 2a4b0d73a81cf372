/* Private to db/snapshot*.c: the two halves of snapshot.h that
 * snapshot_open.c dispatches to, and the query both share. */
#ifndef LR_DB_SNAPSHOT_INT_H
#define LR_DB_SNAPSHOT_INT_H

#include <sqlite3.h>

#include "db/snapshot.h"

/* SQLite (snapshot.c): the copy, read-only once taken. */
lr_err lr_sqlite_snapshot_take(const lr_snapshot_opts *o, sqlite3 **copy, char **errmsg);
lr_err lr_sqlite_snapshot_stats(sqlite3 *h, lr_snapshot_stats *st, char **errmsg);
lr_err lr_sqlite_snapshot_each_key(sqlite3 *h, lr_snapshot_key_fn fn, void *ctx);

/* PostgreSQL (snapshot_pg.c): an open snapshot transaction. */
typedef struct lr_pg_snapshot lr_pg_snapshot;

lr_err lr_pg_snapshot_take(const lr_snapshot_opts *o, lr_pg_snapshot **out, char **errmsg);
lr_err lr_pg_snapshot_stats(lr_pg_snapshot *s, lr_snapshot_stats *st);
lr_err lr_pg_snapshot_each_key(lr_pg_snapshot *s, lr_snapshot_key_fn fn, void *ctx);
void lr_pg_snapshot_free(lr_pg_snapshot *s);

/* The stats query (one row, the columns in lr_snapshot_stats's order
 * from users to violations), malloc'd: it embeds the audit query. */
char *lr_snapshot_stats_sql(void);

#endif
