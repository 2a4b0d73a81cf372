/* Private to db/snapshot*.c: the PostgreSQL half of snapshot.h, and the
 * queries both halves share. */
#ifndef LR_DB_SNAPSHOT_INT_H
#define LR_DB_SNAPSHOT_INT_H

#include "db/snapshot.h"

typedef struct lr_pg_snapshot lr_pg_snapshot;

lr_err lr_pg_snapshot_take(const lr_snapshot_opts *o, lr_pg_snapshot **out, char **errmsg);
lr_err lr_pg_snapshot_stats(lr_pg_snapshot *s, lr_snapshot_stats *st);
lr_err lr_pg_snapshot_each_key(lr_pg_snapshot *s, lr_snapshot_key_fn fn, void *ctx);
void lr_pg_snapshot_free(lr_pg_snapshot *s);

/* The stats query (one row, the columns in lr_snapshot_stats's order
 * from users to violations), malloc'd: it embeds the audit query. */
char *lr_snapshot_stats_sql(void);

#endif
