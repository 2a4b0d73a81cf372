/* Consistent copies of the database, for backups (backup/), and putting
 * one back.
 *
 * A snapshot is one point in time of the whole ledger, taken without
 * stopping the server:
 *   - SQLite: SQLite's online backup API copies every page in one read
 *     transaction of its own connection into a file (WAL lets writers go
 *     on meanwhile); never a file copy of the live database.
 *   - PostgreSQL: a REPEATABLE READ transaction exports its snapshot, and
 *     pg_dump of the server's major version dumps the LensRoom tables'
 *     rows in that same snapshot (custom format, data only: the schema is
 *     the migrations, applied again on restore). The totals and the
 *     object keys are read in the same transaction, so all three agree.
 * The stats and object keys of a snapshot come from the snapshot itself,
 * never from the live database. A snapshot and its temp files belong to
 * one thread; it opens its own connections (the server's pools are not
 * touched) and removes its file when freed.
 *
 * sqlite3.h and libpq-fe.h stay in this folder: everything here takes
 * paths and URLs.
 */
#ifndef LR_DB_SNAPSHOT_H
#define LR_DB_SNAPSHOT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"

/* What a snapshot holds. The money identity of a sound ledger:
 * balances == grants - charges + refunds. */
typedef struct {
    char schema[64];      /* latest migration applied, e.g. 0004_idempotency */
    int64_t users;        /* rows of credits */
    int64_t balances;     /* sum of every balance */
    int64_t transactions; /* ledger rows */
    int64_t grants;       /* sum of purchase, bonus and adjustment rows (signed) */
    int64_t charges;      /* credits charged by generations (positive) */
    int64_t refunds;      /* credits refunded (positive) */
    int64_t generations;  /* every generation row, deleted ones too */
    int64_t succeeded;    /* status success */
    int64_t violations;   /* rows of the ledger audit (db/audit.sql) */
} lr_snapshot_stats;

typedef struct {
    const char *url;       /* the database: postgres URL or SQLite path */
    const char *out_path;  /* the snapshot file to write (must not exist) */
    const char *pg_bindir; /* NULL: /usr/lib/postgresql/<server major>/bin, then PATH */
} lr_snapshot_opts;

typedef struct lr_db_snapshot lr_db_snapshot;

/* Takes the snapshot into o->out_path. *errmsg (malloc'd) says why not. */
lr_err lr_db_snapshot_take(const lr_snapshot_opts *o, lr_db_snapshot **out, char **errmsg);
/* "sqlite" or "postgres". */
const char *lr_db_snapshot_backend(const lr_db_snapshot *s);
lr_err lr_db_snapshot_stats(lr_db_snapshot *s, lr_snapshot_stats *st);
/* Calls fn for each object key a live (not deleted) generation of the
 * snapshot references (outputs and stored inputs), in a stable order;
 * stops early with fn's first error. Memory stays flat however many. */
typedef lr_err (*lr_snapshot_key_fn)(void *ctx, const char *key);
lr_err lr_db_snapshot_each_key(lr_db_snapshot *s, lr_snapshot_key_fn fn, void *ctx);
/* Ends the snapshot (its transaction); the file at out_path stays. */
void lr_db_snapshot_free(lr_db_snapshot *s);

/* A SQLite snapshot file: quick_check, then its stats. *errmsg says what
 * is wrong when it is not a sound SQLite database. */
lr_err lr_db_sqlite_file_stats(const char *path, lr_snapshot_stats *st, char **errmsg);

/* The stats of a PostgreSQL dump file, the ledger audit among them, read
 * from the dump's own rows: they are loaded (as lr_db_pg_load) into a
 * scratch database created for this on the server of server_url (the
 * role needs CREATEDB) and dropped afterwards, whatever happened. The
 * schema in *st is this binary's (the migrations applied first). */
lr_err lr_db_pg_dump_stats(const char *server_url, const char *dump_path, const char *schema,
                           const char *pg_bindir, lr_snapshot_stats *st, char **errmsg);
/* True when url's LensRoom tables hold no row (or do not exist yet). */
lr_err lr_db_pg_is_empty(const char *url, bool *empty, char **errmsg);
/* Loads a dump into url: applies the migrations, empties the LensRoom
 * tables when force (else they must be empty), then pg_restore of the
 * rows in one transaction, with the ledger guard told the rows are
 * ledger-consistent already (no 'adjustment' rows added). Refuses a dump
 * whose schema (the manifest's) is newer than this binary's migrations. */
lr_err lr_db_pg_load(const char *url, const char *dump_path, const char *schema, bool force,
                     const char *pg_bindir, char **errmsg);

#endif
