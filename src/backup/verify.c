/* lr_backup_verify and lr_backup_restore (backup.h).
 *
 * verify reads the archive once: each entry is hashed as it streams and a
 * line {"path","size","sha256"} of what was read goes to a temp file; the
 * index entry is kept in another. At the end the two are compared line by
 * line (both are in archive order), and the index's own hash with the
 * manifest's: one flipped byte anywhere, a missing or extra entry, an
 * edited index or a truncated stream each become a line saying what is
 * wrong. The database snapshot is extracted to work_dir and checked.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/archive.h"
#include "backup/backup.h"
#include "core/util.h"
#include "db/snapshot.h"
#include "storage/mime.h"

#define MANIFEST_MAX (1 << 20)

typedef struct {
    FILE *out;
    int problems;
} report;

static void problem(report *rp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(report *rp, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("\u2717 ", rp->out);
    vfprintf(rp->out, fmt, ap);
    fputc('\n', rp->out);
    va_end(ap);
    rp->problems++;
}

static void set_err(char **errmsg, const char *what, const char *detail)
{
    if (errmsg && asprintf(errmsg, "%s: %s", what, detail ? detail : "unknown error") < 0)
        *errmsg = NULL;
}

static lr_err sink_file(void *ctx, const void *buf, size_t len)
{
    return fwrite(buf, 1, len, ctx) == len ? LR_OK : LR_ERR_IO;
}

typedef struct {
    char *buf;
    size_t len, cap;
} membuf;

static lr_err sink_mem(void *ctx, const void *buf, size_t len)
{
    membuf *m = ctx;
    if (m->len + len > MANIFEST_MAX)
        return LR_ERR_TOO_LARGE;
    lr_buf_append(&m->buf, &m->len, &m->cap, buf, len);
    return LR_OK;
}

static FILE *temp_in(const char *dir, char **path_out)
{
    char *path = NULL;
    if (asprintf(&path, "%s/.lensroom-verify-XXXXXX", dir) < 0)
        abort();
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w+") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        unlink(path);
        free(path);
        return NULL;
    }
    if (path_out)
        *path_out = path;
    else {
        unlink(path);
        free(path);
    }
    return f;
}

/* What one pass over the archive found. */
typedef struct {
    FILE *seen;  /* lines of what was read */
    FILE *index; /* the index entry */
    FILE *db;    /* the database snapshot */
    char *db_path;
    char db_entry[64];
    membuf manifest;
    char index_sha[LR_SHA256_HEX];
    int64_t index_size;
    int64_t entries, objects, object_bytes;
    bool has_secret, after_manifest, has_index;
} scan;

static void seen_line(scan *s, const char *path, int64_t size, const char *sha)
{
    json_t *j = json_pack("{s:s, s:I, s:s}", "path", path, "size", (json_int_t)size, "sha256", sha);
    json_dumpf(j, s->seen, JSON_COMPACT | JSON_PRESERVE_ORDER);
    fputc('\n', s->seen);
    json_decref(j);
}

static void read_entries(lr_archive_reader *a, scan *s, report *rp)
{
    const char *name;
    int64_t size;
    char *err = NULL;
    int rc;
    while ((rc = lr_archive_next(a, &name, &size, &err)) == 1) {
        char sha[LR_SHA256_HEX];
        int64_t got = 0;
        lr_err e;
        char *entry = lr_xstrdup(name);
        if (s->after_manifest)
            problem(rp, "%s: an entry after manifest.json (the manifest must come last)", entry);
        if (!strcmp(entry, "manifest.json")) {
            e = lr_archive_read(a, sink_mem, &s->manifest, sha, &got, &err);
            s->after_manifest = true;
        } else if (!strcmp(entry, "index.jsonl")) {
            e = lr_archive_read(a, sink_file, s->index, s->index_sha, &got, &err);
            s->index_size = got;
            s->has_index = true;
        } else {
            bool db = !strncmp(entry, "database/", 9) && s->db && !s->db_entry[0];
            if (db)
                snprintf(s->db_entry, sizeof s->db_entry, "%s", entry);
            e = lr_archive_read(a, db ? sink_file : NULL, db ? s->db : NULL, sha, &got, &err);
            if (e == LR_OK) {
                seen_line(s, entry, got, sha);
                s->entries++;
                s->has_secret |= !strcmp(entry, "jwt-secret");
                if (!strncmp(entry, "objects/", 8)) {
                    s->objects++;
                    s->object_bytes += got;
                }
            }
        }
        if (e == LR_OK && got != size)
            problem(rp, "%s: %lld bytes read, its header says %lld", entry, (long long)got,
                    (long long)size);
        if (e != LR_OK) {
            problem(rp, "%s: %s (after %lld entries: the archive is truncated or damaged)", entry,
                    err ? err : "unreadable", (long long)s->entries);
            free(entry);
            free(err);
            return;
        }
        free(entry);
    }
    if (rc < 0)
        problem(rp, "%s (after %lld entries: the archive is truncated or damaged)",
                err ? err : "unreadable", (long long)s->entries);
    free(err);
}

static const char *jstr(json_t *o, const char *path1, const char *path2)
{
    json_t *v = json_object_get(o, path1);
    if (path2)
        v = json_object_get(v, path2);
    return json_is_string(v) ? json_string_value(v) : "";
}

static int64_t jint(json_t *o, const char *path1, const char *path2)
{
    json_t *v = json_object_get(json_object_get(o, path1), path2);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

/* Index lines against what was read, in order. */
static void compare_index(scan *s, report *rp)
{
    rewind(s->seen);
    rewind(s->index);
    char *a = NULL, *b = NULL;
    size_t an = 0, bn = 0;
    int shown = 0;
    for (;;) {
        ssize_t la = getline(&a, &an, s->seen), lb = getline(&b, &bn, s->index);
        if (la < 0 && lb < 0)
            break;
        json_t *ja = la > 0 ? json_loads(a, 0, NULL) : NULL;
        json_t *jb = lb > 0 ? json_loads(b, 0, NULL) : NULL;
        const char *pa = jstr(ja, "path", NULL), *pb = jstr(jb, "path", NULL);
        if (shown < 20) {
            if (!jb && ja)
                problem(rp, "%s: in the archive but not in the index", pa);
            else if (!ja && jb)
                problem(rp, "%s: in the index but not in the archive", pb);
            else if (strcmp(pa, pb) != 0)
                problem(rp, "%s: the archive has this entry where the index lists %s", pa, pb);
            else if (json_integer_value(json_object_get(ja, "size")) !=
                     json_integer_value(json_object_get(jb, "size")))
                problem(rp, "%s: %lld bytes in the archive, the manifest's index says %lld", pa,
                        (long long)json_integer_value(json_object_get(ja, "size")),
                        (long long)json_integer_value(json_object_get(jb, "size")));
            else if (strcmp(jstr(ja, "sha256", NULL), jstr(jb, "sha256", NULL)) != 0)
                problem(rp,
                        "%s: SHA-256 mismatch: the archive holds %.16s…, the manifest's "
                        "index says %.16s…",
                        pa, jstr(ja, "sha256", NULL), jstr(jb, "sha256", NULL));
            else
                shown--;
            shown++;
        } else if (shown == 20) {
            fprintf(rp->out, "  (more differences not shown)\n");
            shown++;
            rp->problems++;
        }
        json_decref(ja);
        json_decref(jb);
    }
    free(a);
    free(b);
}

static void print_summary(const char *archive, json_t *m, const scan *s, FILE *out)
{
    struct stat sb;
    long long size = stat(archive, &sb) == 0 ? (long long)sb.st_size : -1;
    fprintf(out, "archive    %s (%lld bytes)\n", archive, size);
    fprintf(out, "created    %s by lensroom %s\n", jstr(m, "created_at", NULL),
            jstr(m, "lensroom_version", NULL));
    fprintf(out, "database   %s, schema %s (%s)\n", jstr(m, "database", "backend"),
            jstr(m, "database", "schema"), jstr(m, "database", "entry"));
    fprintf(out,
            "ledger     %lld users, balances %lld = grants %lld - charges %lld + refunds %lld; "
            "%lld ledger rows\n",
            (long long)jint(m, "ledger", "users"), (long long)jint(m, "ledger", "balances"),
            (long long)jint(m, "ledger", "grants"), (long long)jint(m, "ledger", "charges"),
            (long long)jint(m, "ledger", "refunds"), (long long)jint(m, "ledger", "transactions"));
    fprintf(out, "generations %lld (%lld succeeded)\n", (long long)jint(m, "generations", "total"),
            (long long)jint(m, "generations", "succeeded"));
    fprintf(out,
            "storage    %s, bucket %s: %lld object keys, objects %s (%lld files, %lld bytes, "
            "%lld missing when taken)\n",
            jstr(m, "storage", "backend"), jstr(m, "storage", "bucket"),
            (long long)jint(m, "storage", "keys"), jstr(m, "storage", "objects"),
            (long long)s->objects, (long long)s->object_bytes,
            (long long)jint(m, "storage", "missing"));
    fprintf(out, "jwt secret %s\n", s->has_secret ? "included (jwt-secret)" : "not included");
}

/* The ledger read back from the snapshot's rows against the manifest's
 * totals, and the audit's verdict on them. */
static void check_ledger(const lr_snapshot_stats *stp, json_t *m, bool same_schema, report *rp)
{
    lr_snapshot_stats st = *stp;
    struct {
        const char *name;
        int64_t have;
    } f[] = {{"users", st.users},   {"balances", st.balances}, {"transactions", st.transactions},
             {"grants", st.grants}, {"charges", st.charges},   {"refunds", st.refunds}};
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) {
        if (jint(m, "ledger", f[i].name) != f[i].have)
            problem(rp, "ledger %s: the snapshot has %lld, the manifest says %lld", f[i].name,
                    (long long)f[i].have, (long long)jint(m, "ledger", f[i].name));
    }
    if (same_schema && strcmp(st.schema, jstr(m, "database", "schema")) != 0)
        problem(rp, "schema: the snapshot is at %s, the manifest says %s", st.schema,
                jstr(m, "database", "schema"));
    if (st.violations > 0)
        problem(rp,
                "ledger audit on the snapshot: %lld violations (run lensroom audit on a "
                "restored copy to list them)",
                (long long)st.violations);
    else if (st.balances != st.grants - st.charges + st.refunds)
        problem(rp, "ledger: balances %lld are not grants - charges + refunds (%lld)",
                (long long)st.balances, (long long)(st.grants - st.charges + st.refunds));
    else
        fprintf(rp->out,
                "\u2713 ledger audit on the snapshot: sound (%s, balances = "
                "grants - charges + refunds)\n",
                same_schema ? "quick_check ok" : "its rows restored into a scratch database");
}

static void check_sqlite(scan *s, json_t *m, report *rp)
{
    lr_snapshot_stats st;
    char *err = NULL;
    if (lr_db_sqlite_file_stats(s->db_path, &st, &err) != LR_OK)
        problem(rp, "%s: %s", s->db_entry, err ? err : "unreadable");
    else
        check_ledger(&st, m, true, rp);
    free(err);
}

/* A dump's rows are audited where PostgreSQL can read them: restored
 * into a scratch database on pg_url's server. */
static void check_pg(scan *s, json_t *m, const lr_verify_pg *pg, report *rp)
{
    if (!pg || !pg->server_url) {
        problem(rp,
                "%s: no PostgreSQL server to re-run the ledger audit on (set DATABASE_URL "
                "or pass --scratch-url)",
                s->db_entry);
        return;
    }
    lr_snapshot_stats st;
    char *err = NULL;
    if (lr_db_pg_dump_stats(pg->server_url, s->db_path, jstr(m, "database", "schema"), pg->bindir,
                            &st, &err) != LR_OK)
        problem(rp, "%s: cannot be restored for the audit: %s", s->db_entry,
                err ? err : "unknown error");
    else
        check_ledger(&st, m, false, rp);
    free(err);
}

static void check_manifest(const char *archive, scan *s, json_t *m, const lr_verify_pg *pg,
                           report *rp)
{
    if (strcmp(jstr(m, "format", NULL), "lensroom-backup") != 0) {
        problem(rp, "manifest.json: not a LensRoom backup manifest");
        return;
    }
    print_summary(archive, m, s, rp->out);
    if (!s->has_index)
        problem(rp, "index.jsonl: missing");
    else if (strcmp(s->index_sha, jstr(m, "index", "sha256")) != 0 ||
             s->index_size != jint(m, "index", "size"))
        problem(rp,
                "index.jsonl: its SHA-256 (%.16s…, %lld bytes) does not match the manifest "
                "(%.16s…, %lld bytes): the file list was altered",
                s->index_sha, (long long)s->index_size, jstr(m, "index", "sha256"),
                (long long)jint(m, "index", "size"));
    int before = rp->problems;
    compare_index(s, rp);
    if (jint(m, "index", "entries") != s->entries)
        problem(rp, "%lld entries in the archive, the manifest says %lld", (long long)s->entries,
                (long long)jint(m, "index", "entries"));
    if (rp->problems == before)
        fprintf(rp->out, "\u2713 every entry's SHA-256 matches the manifest (%lld entries)\n",
                (long long)s->entries);
    if (strcmp(s->db_entry, jstr(m, "database", "entry")) != 0) {
        problem(rp, "%s: the database snapshot is missing", jstr(m, "database", "entry"));
        return;
    }
    fflush(s->db);
    if (!strcmp(jstr(m, "database", "backend"), "sqlite"))
        check_sqlite(s, m, rp);
    else
        check_pg(s, m, pg, rp);
}

lr_err lr_backup_verify(const char *archive, const char *work_dir, const lr_verify_pg *pg,
                        FILE *out, lr_backup_info *info)
{
    report rp = {.out = out};
    scan s = {.seen = temp_in(work_dir, NULL),
              .index = temp_in(work_dir, NULL),
              .db = temp_in(work_dir, &s.db_path)};
    lr_archive_reader *a = NULL;
    char *err = NULL;
    json_t *m = NULL;
    lr_err e = LR_ERR_IO;
    if (!s.seen || !s.index || !s.db) {
        fprintf(out, "verify: cannot create temp files in %s: %s\n", work_dir, strerror(errno));
        goto out;
    }
    if (lr_archive_open(archive, &a, &err) != LR_OK)
        problem(&rp, "%s (the archive is truncated, damaged or not a tar.zst)", err);
    else
        read_entries(a, &s, &rp);
    if (!a) {
        /* nothing more to say */
    } else if (!s.after_manifest) {
        problem(&rp, "manifest.json: missing: the archive is truncated or is not a LensRoom "
                     "backup");
    } else if (!(m = json_loadb(s.manifest.buf, s.manifest.len, 0, NULL))) {
        problem(&rp, "manifest.json: not valid JSON");
    } else {
        check_manifest(archive, &s, m, pg, &rp);
        if (info) {
            *info = (lr_backup_info){.has_secret = s.has_secret, .objects = s.objects};
            snprintf(info->backend, sizeof info->backend, "%s", jstr(m, "database", "backend"));
            snprintf(info->schema, sizeof info->schema, "%s", jstr(m, "database", "schema"));
            snprintf(info->db_entry, sizeof info->db_entry, "%s", s.db_entry);
        }
    }
    e = rp.problems ? LR_ERR_INVALID : LR_OK;
    fprintf(out, rp.problems ? "verify: FAILED (%d problems)\n" : "verify: OK\n", rp.problems);
out:
    lr_archive_close(a);
    json_decref(m);
    free(err);
    free(s.manifest.buf);
    if (s.seen)
        fclose(s.seen);
    if (s.index)
        fclose(s.index);
    if (s.db)
        fclose(s.db);
    if (s.db_path)
        unlink(s.db_path);
    free(s.db_path);
    return e;
}

bool lr_backup_dir_empty(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT;
    struct dirent *de;
    bool empty = true;
    while (empty && (de = readdir(d)))
        empty = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..");
    closedir(d);
    return empty;
}

/* Restore ------------------------------------------------------------ */

typedef struct {
    lr_store *store;
    lr_store_writer *w;
} object_sink;

static lr_err sink_store(void *ctx, const void *buf, size_t len)
{
    object_sink *o = ctx;
    return o->store->ops->write(o->w, buf, len);
}

static lr_err restore_object(const lr_backup_restore_opts *o, lr_archive_reader *a, const char *key,
                             char **errmsg)
{
    if (!lr_store_key_valid(key)) {
        set_err(errmsg, key, "not a valid object key");
        return LR_ERR_INVALID;
    }
    const char *dot = strrchr(key, '.');
    const lr_mime *mime = dot ? lr_mime_by_ext(dot + 1) : NULL;
    object_sink os = {.store = o->store};
    lr_err e = o->store->ops->open_writer(
        o->store, key, mime ? mime->content_type : "application/octet-stream", &os.w);
    if (e != LR_OK) {
        set_err(errmsg, key, lr_strerror(e));
        return e;
    }
    char sha[LR_SHA256_HEX];
    int64_t n;
    e = lr_archive_read(a, sink_store, &os, sha, &n, errmsg);
    if (e != LR_OK) {
        o->store->ops->abort(os.w);
        return e;
    }
    e = o->store->ops->commit(os.w);
    if (e != LR_OK)
        set_err(errmsg, key, lr_strerror(e));
    return e;
}

/* Writes the current entry to a new temp file in dir, fsynced; *path. */
static lr_err extract_temp(lr_archive_reader *a, const char *dir, char **path, char **errmsg)
{
    FILE *f = temp_in(dir, path);
    if (!f) {
        set_err(errmsg, dir, strerror(errno));
        return LR_ERR_IO;
    }
    char sha[LR_SHA256_HEX];
    int64_t n;
    lr_err e = lr_archive_read(a, sink_file, f, sha, &n, errmsg);
    if (e == LR_OK && (fflush(f) != 0 || fsync(fileno(f)) != 0)) {
        set_err(errmsg, *path, strerror(errno));
        e = LR_ERR_IO;
    }
    fclose(f);
    if (e != LR_OK) {
        unlink(*path);
        free(*path);
        *path = NULL;
    }
    return e;
}

/* The SQLite snapshot becomes DIR/lensroom.db in one rename; the WAL and
 * shared-memory files of whatever was there before go first. */
static lr_err restore_sqlite(const lr_backup_restore_opts *o, lr_archive_reader *a, char **errmsg)
{
    char *tmp = NULL, *dst = NULL;
    lr_err e = extract_temp(a, o->data_dir, &tmp, errmsg);
    if (e != LR_OK)
        return e;
    if (asprintf(&dst, "%s/lensroom.db", o->data_dir) < 0)
        abort();
    const char *sidecars[] = {"-wal", "-shm", "-journal"};
    for (size_t i = 0; i < 3; i++) {
        char *p = NULL;
        if (asprintf(&p, "%s%s", dst, sidecars[i]) < 0)
            abort();
        unlink(p);
        free(p);
    }
    if (rename(tmp, dst) != 0) {
        set_err(errmsg, dst, strerror(errno));
        unlink(tmp);
        e = LR_ERR_IO;
    } else if (lr_fsync_parent(dst) != 0) { /* the restored database's name */
        set_err(errmsg, dst, strerror(errno));
        e = LR_ERR_IO;
    }
    free(tmp);
    free(dst);
    return e;
}

static lr_err restore_pg(const lr_backup_restore_opts *o, lr_archive_reader *a, char **errmsg)
{
    char *tmp = NULL;
    lr_err e = extract_temp(a, o->work_dir, &tmp, errmsg);
    if (e != LR_OK)
        return e;
    e = lr_db_pg_load(o->database_url, tmp, o->info->schema, o->force, o->pg_bindir, errmsg);
    unlink(tmp);
    free(tmp);
    return e;
}

/* The JWT secret, written whole with mode 0600 and renamed into place;
 * an existing one is replaced only with force. */
static lr_err restore_secret(const lr_backup_restore_opts *o, lr_archive_reader *a, FILE *out,
                             char **errmsg)
{
    if (!o->secret_path || (!o->force && access(o->secret_path, F_OK) == 0)) {
        char sha[LR_SHA256_HEX];
        int64_t n;
        fprintf(out, "jwt secret left as it is%s\n",
                o->secret_path ? " (one exists; --force replaces it)" : "");
        return lr_archive_read(a, NULL, NULL, sha, &n, errmsg);
    }
    char *dir = lr_xstrdup(o->secret_path), *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    char *tmp = NULL;
    lr_err e = extract_temp(a, slash ? dir : ".", &tmp, errmsg);
    free(dir);
    if (e != LR_OK)
        return e;
    chmod(tmp, 0600);
    if (rename(tmp, o->secret_path) != 0) {
        set_err(errmsg, o->secret_path, strerror(errno));
        unlink(tmp);
        e = LR_ERR_IO;
    } else if (lr_fsync_parent(o->secret_path) != 0) {
        set_err(errmsg, o->secret_path, strerror(errno));
        e = LR_ERR_IO;
    } else {
        fprintf(out, "jwt secret restored to %s\n", o->secret_path);
    }
    free(tmp);
    return e;
}

lr_err lr_backup_restore(const lr_backup_restore_opts *o, FILE *out, char **errmsg)
{
    lr_archive_reader *a = NULL;
    lr_err e = lr_archive_open(o->archive, &a, errmsg);
    const char *name;
    int64_t size;
    int rc = 0;
    int64_t objects = 0;
    while (e == LR_OK && (rc = lr_archive_next(a, &name, &size, errmsg)) == 1) {
        char *entry = lr_xstrdup(name);
        if (!strcmp(entry, o->info->db_entry)) {
            e = !strcmp(o->info->backend, "sqlite") ? restore_sqlite(o, a, errmsg)
                                                    : restore_pg(o, a, errmsg);
            if (e == LR_OK)
                fprintf(out, "database restored (%s, schema %s) to %s\n", o->info->backend,
                        o->info->schema, o->database_url ? "the database" : o->data_dir);
        } else if (!strncmp(entry, "objects/", 8) && o->store) {
            e = restore_object(o, a, entry + 8, errmsg);
            objects++;
        } else if (!strcmp(entry, "jwt-secret")) {
            e = restore_secret(o, a, out, errmsg);
        }
        free(entry);
    }
    if (e == LR_OK && rc < 0)
        e = LR_ERR_IO;
    if (e == LR_OK)
        fprintf(out, "%lld objects restored to %s storage (bucket %s)\n", (long long)objects,
                o->store ? o->store->backend : "no", o->store ? o->store->bucket : "-");
    lr_archive_close(a);
    return e;
}
