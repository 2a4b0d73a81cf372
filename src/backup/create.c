/* lr_backup_create (backup.h): snapshot, objects, index, manifest.
 *
 * The snapshot is taken first and everything after it follows the
 * snapshot: the objects copied are the ones its generations reference,
 * so a file written after it is left out and a file the snapshot needs
 * is in. Objects are immutable once stored (a key is written once), so
 * copying them after the snapshot gives the same bytes; one removed in
 * between (its generation deleted since) is counted as missing.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/archive.h"
#include "backup/backup.h"
#include "core/log.h"
#include "core/util.h"

typedef struct {
    const lr_backup_create_opts *o;
    lr_archive_writer *w;
    FILE *keys;  /* object-keys.txt being written */
    FILE *index; /* index.jsonl being written */
    lr_backup_result *res;
    char **errmsg;
} run;

static void set_err(char **errmsg, const char *what, const char *detail)
{
    if (errmsg && asprintf(errmsg, "%s: %s", what, detail ? detail : "unknown error") < 0)
        *errmsg = NULL;
}

/* An unlinked temp file in dir, for what is built before it is archived. */
static FILE *temp_in(const char *dir)
{
    char *path = NULL;
    if (asprintf(&path, "%s/.backup-tmp-XXXXXX", dir) < 0)
        abort();
    int fd = mkstemp(path);
    if (fd >= 0)
        unlink(path);
    free(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w+") : NULL;
    if (!f && fd >= 0)
        close(fd);
    return f;
}

static void index_line(run *r, const char *path, int64_t size, const char *sha)
{
    json_t *j = json_pack("{s:s, s:I, s:s}", "path", path, "size", (json_int_t)size, "sha256", sha);
    json_dumpf(j, r->index, JSON_COMPACT | JSON_PRESERVE_ORDER);
    fputc('\n', r->index);
    json_decref(j);
}

static lr_err add_file(run *r, const char *name, FILE *f)
{
    fflush(f);
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || lseek(fileno(f), 0, SEEK_SET) != 0) {
        set_err(r->errmsg, name, strerror(errno));
        return LR_ERR_IO;
    }
    char sha[LR_SHA256_HEX];
    lr_err e = lr_archive_add_fd(r->w, name, fileno(f), sb.st_size, sha, r->errmsg);
    if (e == LR_OK)
        index_line(r, name, sb.st_size, sha);
    return e;
}

static lr_err add_path(run *r, const char *name, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        set_err(r->errmsg, path, strerror(errno));
        return LR_ERR_IO;
    }
    lr_err e = add_file(r, name, f);
    fclose(f);
    return e;
}

/* One object: streamed from a local file, or read whole (at most the
 * bucket's 50 MB limit) from a remote store when objects are wanted. */
static lr_err add_object(void *ctx, const char *key)
{
    run *r = ctx;
    if (r->o->cancel && atomic_load(r->o->cancel)) {
        set_err(r->errmsg, "backup", "canceled (the server is stopping)");
        return LR_ERR_UNAVAILABLE;
    }
    if (!lr_store_key_valid(key)) {
        lr_warn("backup: skipping an invalid object key in the database: %s", key);
        return LR_OK;
    }
    fprintf(r->keys, "%s\n", key);
    r->res->keys++;
    lr_store *s = r->o->store;
    bool local = s && s->ops->open_local;
    if (!s || (!local && !r->o->with_objects))
        return LR_OK;
    char *name = NULL;
    if (asprintf(&name, "objects/%s", key) < 0)
        abort();
    char sha[LR_SHA256_HEX];
    lr_err e;
    int64_t size = 0;
    if (local) {
        int fd;
        struct stat sb;
        e = s->ops->open_local(s, key, &fd, &sb);
        if (e == LR_OK) {
            size = sb.st_size;
            e = lr_archive_add_fd(r->w, name, fd, size, sha, r->errmsg);
            close(fd);
        }
    } else {
        char *buf = NULL;
        size_t len = 0;
        e = s->ops->read(s, key, LR_STORE_MAX_BYTES, &buf, &len);
        if (e == LR_OK) {
            size = (int64_t)len;
            e = lr_archive_add_buf(r->w, name, buf, len, sha, r->errmsg);
        }
        free(buf);
    }
    if (e == LR_ERR_NOT_FOUND) {
        lr_warn("backup: object %s is referenced by the snapshot but missing from storage", key);
        r->res->missing++;
        e = LR_OK;
    } else if (e == LR_OK) {
        index_line(r, name, size, sha);
        r->res->objects++;
        r->res->object_bytes += size;
    } else if (r->errmsg && !*r->errmsg) {
        set_err(r->errmsg, key, lr_strerror(e));
    }
    free(name);
    return e;
}

static json_t *manifest(run *r, const char *backend, const char *db_entry, bool secret,
                        const char *index_sha, int64_t index_size, int64_t entries)
{
    const lr_snapshot_stats *st = &r->res->stats;
    char now[32];
    lr_time_iso(lr_now_ms(), now);
    lr_store *s = r->o->store;
    const char *objects = !s                                           ? "none"
                          : (s->ops->open_local || r->o->with_objects) ? "included"
                                                                       : "keys_only";
    json_t *m =
        json_pack("{s:s, s:i, s:s, s:s}", "format", "lensroom-backup", "format_version", 1,
                  "created_at", now, "lensroom_version", r->o->version ? r->o->version : "");
    json_object_set_new(
        m, "database",
        json_pack("{s:s, s:s, s:s}", "backend", backend, "schema", st->schema, "entry", db_entry));
    json_object_set_new(
        m, "ledger",
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "users", (json_int_t)st->users, "balances",
                  (json_int_t)st->balances, "transactions", (json_int_t)st->transactions, "grants",
                  (json_int_t)st->grants, "charges", (json_int_t)st->charges, "refunds",
                  (json_int_t)st->refunds, "violations", (json_int_t)st->violations));
    json_object_set_new(m, "generations",
                        json_pack("{s:I, s:I}", "total", (json_int_t)st->generations, "succeeded",
                                  (json_int_t)st->succeeded));
    json_object_set_new(
        m, "storage",
        json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "backend", s ? s->backend : "none",
                  "bucket", s && s->bucket ? s->bucket : "", "objects", objects, "keys",
                  (json_int_t)r->res->keys, "copied", (json_int_t)r->res->objects, "bytes",
                  (json_int_t)r->res->object_bytes, "missing", (json_int_t)r->res->missing));
    json_object_set_new(m, "jwt_secret", json_boolean(secret));
    json_object_set_new(m, "index",
                        json_pack("{s:s, s:I, s:I, s:s}", "entry", "index.jsonl", "entries",
                                  (json_int_t)entries, "size", (json_int_t)index_size, "sha256",
                                  index_sha));
    return m;
}

static void archive_name(char *out, size_t n)
{
    char iso[32]; /* 2026-11-26T13:38:00.123Z → 20261126T133800.123Z */
    lr_time_iso(lr_now_ms(), iso);
    char compact[32];
    size_t k = 0;
    for (const char *p = iso; *p && k + 1 < sizeof compact; p++) {
        if (*p != '-' && *p != ':')
            compact[k++] = *p;
    }
    compact[k] = '\0';
    snprintf(out, n, LR_BACKUP_PREFIX "%s" LR_BACKUP_SUFFIX, compact);
}

/* The archive name X behind a leftover of its making: X.partial (the
 * archive being written) or .X.db, .X.db-journal (the database snapshot
 * beside it). NULL for any other name. */
static char *leftover_of(const char *name)
{
    size_t pl = strlen(LR_BACKUP_PREFIX), n = strlen(name);
    const char *partial = ".partial";
    if (!strncmp(name, LR_BACKUP_PREFIX, pl) && n > strlen(partial) &&
        !strcmp(name + n - strlen(partial), partial))
        return lr_xstrndup(name, n - strlen(partial));
    const char *db = strstr(name, LR_BACKUP_SUFFIX ".db");
    if (name[0] == '.' && !strncmp(name + 1, LR_BACKUP_PREFIX, pl) && db)
        return lr_xstrndup(name + 1, (size_t)(db - name - 1) + strlen(LR_BACKUP_SUFFIX));
    return NULL;
}

int lr_backup_sweep(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        char *archive = leftover_of(de->d_name), *partial = NULL, *path = NULL;
        if (!archive)
            continue;
        if (asprintf(&partial, "%s/%s.partial", dir, archive) < 0 ||
            asprintf(&path, "%s/%s", dir, de->d_name) < 0)
            abort();
        if (lr_archive_partial_stale(partial) && unlink(path) == 0) {
            lr_warn("backup: removed %s, left by a backup that did not finish", path);
            removed++;
        }
        free(archive);
        free(partial);
        free(path);
    }
    closedir(d);
    return removed;
}

/* The index, the keys and the secret, then the manifest. */
static lr_err finish_entries(run *r, const char *backend, const char *db_entry)
{
    lr_err e = add_file(r, "object-keys.txt", r->keys);
    bool secret = false;
    size_t slen = 0;
    char *sbuf = r->o->secret_path ? lr_read_file(r->o->secret_path, &slen) : NULL;
    if (e == LR_OK && sbuf) {
        char sha[LR_SHA256_HEX];
        e = lr_archive_add_buf(r->w, "jwt-secret", sbuf, slen, sha, r->errmsg);
        if (e == LR_OK)
            index_line(r, "jwt-secret", (int64_t)slen, sha);
        secret = true;
    }
    if (sbuf) {
        memset(sbuf, 0, slen);
        free(sbuf);
    }
    if (e != LR_OK)
        return e;
    int64_t entries = 2 + r->res->objects + (secret ? 1 : 0);
    fflush(r->index);
    struct stat sb;
    fstat(fileno(r->index), &sb);
    char index_sha[LR_SHA256_HEX];
    lseek(fileno(r->index), 0, SEEK_SET);
    e = lr_archive_add_fd(r->w, "index.jsonl", fileno(r->index), sb.st_size, index_sha, r->errmsg);
    if (e != LR_OK)
        return e;
    json_t *m = manifest(r, backend, db_entry, secret, index_sha, sb.st_size, entries);
    char *text = json_dumps(m, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(m);
    char sha[LR_SHA256_HEX];
    e = lr_archive_add_buf(r->w, "manifest.json", text, strlen(text), sha, r->errmsg);
    free(text);
    return e;
}

lr_err lr_backup_create(const lr_backup_create_opts *o, lr_backup_result *res, char **errmsg)
{
    *res = (lr_backup_result){0};
    int64_t t0 = lr_monotonic_ms();
    if (lr_mkdir_p(o->dir, 0700) != 0) {
        set_err(errmsg, o->dir, strerror(errno));
        return LR_ERR_IO;
    }
    archive_name(res->name, sizeof res->name);
    snprintf(res->path, sizeof res->path, "%s/%s", o->dir, res->name);
    if (access(res->path, F_OK) == 0) {
        set_err(errmsg, res->path, "already exists");
        return LR_ERR_CONFLICT;
    }
    char *snap_path = NULL;
    if (asprintf(&snap_path, "%s/.%s.db", o->dir, res->name) < 0)
        abort();
    res->swept = lr_backup_sweep(o->dir);
    run r = {
        .o = o, .res = res, .errmsg = errmsg, .keys = temp_in(o->dir), .index = temp_in(o->dir)};
    lr_db_snapshot *snap = NULL;
    lr_err e = LR_ERR_IO;
    if (!r.keys || !r.index) {
        set_err(errmsg, o->dir, "cannot create temp files");
        goto out;
    }
    /* The archive's partial file first: its lock covers the snapshot
     * file too, from the moment it exists (lr_backup_sweep). */
    if ((e = lr_archive_create(res->path, &r.w, errmsg)) != LR_OK)
        goto out;
    lr_snapshot_opts so = {
        .url = o->database_url, .out_path = snap_path, .pg_bindir = o->pg_bindir};
    if ((e = lr_db_snapshot_take(&so, &snap, errmsg)) != LR_OK)
        goto out;
    if ((e = lr_db_snapshot_stats(snap, &res->stats)) != LR_OK) {
        set_err(errmsg, "snapshot", "cannot read its ledger totals");
        goto out;
    }
    const char *backend = lr_db_snapshot_backend(snap);
    const char *db_entry =
        !strcmp(backend, "postgres") ? "database/lensroom.pgdump" : "database/lensroom.db";
    if ((e = add_path(&r, db_entry, snap_path)) != LR_OK ||
        (e = lr_db_snapshot_each_key(snap, add_object, &r)) != LR_OK ||
        (e = finish_entries(&r, backend, db_entry)) != LR_OK) {
        if (e != LR_OK && errmsg && !*errmsg)
            set_err(errmsg, "backup", lr_strerror(e));
        goto out;
    }
    e = lr_archive_finish(r.w, errmsg);
    r.w = NULL;
    struct stat sb;
    if (e == LR_OK && stat(res->path, &sb) == 0)
        res->bytes = sb.st_size;
out:
    lr_archive_abort(r.w);
    lr_db_snapshot_free(snap);
    unlink(snap_path);
    free(snap_path);
    if (r.keys)
        fclose(r.keys);
    if (r.index)
        fclose(r.index);
    res->duration_ms = lr_monotonic_ms() - t0;
    return e;
}

bool lr_backup_parse_s3(const char *url, char **bucket, char **prefix)
{
    if (strncmp(url, "s3://", 5) != 0)
        return false;
    const char *b = url + 5;
    size_t bl = strcspn(b, "/");
    if (bl == 0)
        return false;
    const char *p = b + bl;
    while (*p == '/')
        p++;
    size_t pl = strlen(p);
    while (pl > 0 && p[pl - 1] == '/')
        pl--;
    *bucket = lr_xstrndup(b, bl);
    *prefix = lr_xstrndup(p, pl);
    return true;
}

lr_err lr_backup_upload(lr_store *store, const char *prefix, const char *path, char **errmsg)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char *key = NULL;
    if (asprintf(&key, "%s%s%s", prefix, *prefix ? "/" : "", base) < 0)
        abort();
    lr_store_writer *w = NULL;
    char buf[64 * 1024];
    lr_err e = LR_ERR_IO;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        set_err(errmsg, path, strerror(errno));
        goto out;
    }
    if ((e = store->ops->open_writer(store, key, "application/zstd", &w)) != LR_OK)
        goto fail;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        if ((e = store->ops->write(w, buf, (size_t)n)) != LR_OK)
            goto fail;
    }
    if (n < 0) {
        e = LR_ERR_IO;
        goto fail;
    }
    e = store->ops->commit(w);
    w = NULL;
    if (e == LR_OK)
        goto out;
fail:
    if (w)
        store->ops->abort(w);
    set_err(errmsg, key, lr_strerror(e));
out:
    if (fd >= 0)
        close(fd);
    free(key);
    return e;
}
