/* Backups: one archive holding a consistent snapshot of the database and
 * the stored files that snapshot references, checked before it is trusted.
 *
 * Layout of an archive (archive.h: tar + zstd), in this order:
 *   database/lensroom.db      SQLite snapshot (online backup API)
 *   database/lensroom.pgdump  or a pg_dump of the rows (custom format)
 *   objects/{key}             each stored object of a live generation
 *                             (local storage; other backends with objects)
 *   object-keys.txt           every key the snapshot references, one a line
 *   jwt-secret                the generated JWT secret, when the server uses one
 *   index.jsonl               {"path","size","sha256"} of each entry above
 *   manifest.json             format, time, schema version, ledger totals,
 *                             counts, storage, and the index's size and hash
 * The manifest comes last because the hashes are known only once the
 * bytes went through; verify hashes every entry as it streams, then
 * compares line by line with the index, so neither side holds the file
 * list in memory. Archives are named lensroom-backup-{UTC time}.tar.zst,
 * which sorts by time.
 *
 * create and the scheduler run on their own thread and connections; a
 * create never blocks the server's requests (see db/snapshot.h). verify
 * and restore read an archive twice at most, never into memory.
 */
#ifndef LR_BACKUP_H
#define LR_BACKUP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/err.h"
#include "db/snapshot.h"
#include "storage/storage.h"

#define LR_BACKUP_PREFIX "lensroom-backup-"
#define LR_BACKUP_SUFFIX ".tar.zst"

typedef struct {
    const char *database_url;
    const char *dir;         /* the folder the archive goes to (made if missing) */
    lr_store *store;         /* the objects' storage */
    bool with_objects;       /* copy objects of a remote store too (local: always) */
    const char *secret_path; /* a generated JWT secret file to include, or NULL */
    const char *pg_bindir;   /* see lr_snapshot_opts */
    const char *version;     /* this lensroom's version, for the manifest */
    atomic_bool *cancel;     /* may be NULL; set: stop at the next object */
} lr_backup_create_opts;

typedef struct {
    char path[4096];                        /* the archive */
    char name[128];                         /* its file name */
    int64_t bytes;                          /* its size */
    int64_t objects, object_bytes, missing; /* copied, their bytes, referenced but absent */
    int64_t keys;                           /* object keys the snapshot references */
    int swept; /* leftovers of unfinished backups removed first (lr_backup_sweep) */
    lr_snapshot_stats stats;
    int64_t duration_ms;
} lr_backup_result;

/* Makes an archive in o->dir, after sweeping what killed backups left
 * there. */
lr_err lr_backup_create(const lr_backup_create_opts *o, lr_backup_result *res, char **errmsg);
/* Removes from dir the partial archives and snapshot files of backups
 * whose process is gone (no live writer holds the partial's lock);
 * returns how many. A finished archive is never touched. */
int lr_backup_sweep(const char *dir);

/* What verify learned of an archive, for restore. */
typedef struct {
    char backend[16]; /* sqlite | postgres */
    char schema[64];
    char db_entry[64];
    bool has_secret;
    int64_t objects;
} lr_backup_info;

/* Where a PostgreSQL archive's rows are audited: a scratch database made
 * on server_url's server for the purpose (NULL: such an archive fails
 * verification, its audit cannot run), with the client tools of bindir
 * (see lr_snapshot_opts). */
typedef struct {
    const char *server_url;
    const char *bindir;
} lr_verify_pg;

/* Checks every entry's hash against the index and the index against the
 * manifest, re-runs the ledger audit on the snapshot's own rows (SQLite:
 * quick_check and the audit on the extracted file; PostgreSQL: the dump
 * restored into a scratch database, see lr_verify_pg) and checks its
 * totals against the manifest's, and prints what the archive holds and
 * each problem found to out. work_dir holds the extracted database
 * snapshot meanwhile. LR_OK when sound; LR_ERR_INVALID when a problem was
 * found (printed). */
lr_err lr_backup_verify(const char *archive, const char *work_dir, const lr_verify_pg *pg,
                        FILE *out, lr_backup_info *info);

typedef struct {
    const char *archive; /* one that passed lr_backup_verify */
    const lr_backup_info *info;
    const char *data_dir;     /* SQLite target: DIR/lensroom.db */
    const char *database_url; /* PostgreSQL target */
    const char *secret_path;  /* where the archive's JWT secret goes, or NULL */
    lr_store *store;          /* objects go here */
    bool force;               /* replace what the target holds */
    const char *work_dir;     /* temp files (a pg dump) */
    const char *pg_bindir;
} lr_backup_restore_opts;

/* Puts the database and objects of a verified archive in place, printing
 * what it did to out. The SQLite file replaces DIR/lensroom.db in one
 * rename; a PostgreSQL target is loaded in one transaction. */
lr_err lr_backup_restore(const lr_backup_restore_opts *o, FILE *out, char **errmsg);

/* True when dir has no entry (a missing dir is empty). */
bool lr_backup_dir_empty(const char *dir);

/* "s3://bucket/prefix" → bucket and prefix (no slashes at either end;
 * prefix may be empty), malloc'd. False when url is not such a URL. */
bool lr_backup_parse_s3(const char *url, char **bucket, char **prefix);
/* Copies the archive at path to store under {prefix}/{file name}. */
lr_err lr_backup_upload(lr_store *store, const char *prefix, const char *path, char **errmsg);

/* Rotation. An archive is kept when it is one of the newest N, or the
 * newest of one of the D most recent days (UTC) that have one, or the
 * newest of one of the W most recent weeks (Monday to Sunday, UTC) that do.
 * Written "N", "Dd", "Ww" joined by commas, e.g. "7d,4w" or "3,7d,4w". */
typedef struct {
    int newest, daily, weekly;
} lr_backup_keep;

/* 0 when s is a valid policy (with at least one non-zero part). */
int lr_backup_keep_parse(const char *s, lr_backup_keep *k);
/* Sets keep[i] for each names[i] (archive file names, any order) that
 * the policy keeps; names that are not archives' are always kept. */
void lr_backup_keep_select(const char *const *names, size_t n, const lr_backup_keep *k, bool *keep);
/* Removes the archives of dir that the policy does not keep; calls
 * removed(ctx, name) for each (may be NULL). Returns how many remain. */
int lr_backup_rotate(const char *dir, const lr_backup_keep *k,
                     void (*removed)(void *ctx, const char *name), void *ctx);

/* Scheduled backups inside serve: a thread of their own (at a lower CPU
 * priority) makes one archive every interval_s, the first one interval
 * after start, copies it to the mirror when there is one, and rotates
 * the folder (removing the mirror's copies of what it removed). The
 * strings and stores of opts are borrowed for the scheduler's life. */
typedef struct {
    lr_backup_create_opts create;
    int interval_s;
    lr_backup_keep keep;
    lr_store *mirror; /* S3 copy of each archive, or NULL */
    const char *mirror_prefix;
} lr_backup_sched_opts;

/* The last run, for /healthz; copied out under the scheduler's lock. */
typedef struct {
    int interval_s;
    bool running; /* a backup is being made now */
    bool ran;     /* one finished (ok or not) since start */
    bool ok;
    int64_t at_ms;      /* when the last one finished (wall clock) */
    int64_t next_at_ms; /* when the next one starts */
    int64_t duration_ms, bytes;
    char archive[128]; /* its file name */
    char error[256];   /* why it failed */
    int kept;          /* archives in the folder after rotation */
    int64_t made;      /* successful backups since start */
} lr_backup_status;

typedef struct lr_backup_sched lr_backup_sched;

lr_backup_sched *lr_backup_sched_start(const lr_backup_sched_opts *o);
void lr_backup_sched_status(lr_backup_sched *s, lr_backup_status *out);
/* Stops the thread: a backup under way stops at its next object and
 * its partial archive is removed. NULL is fine. */
void lr_backup_sched_stop(lr_backup_sched *s);

#endif
