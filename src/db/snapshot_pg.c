/* Snapshots on PostgreSQL (snapshot.h): an exported REPEATABLE READ
 * snapshot shared with pg_dump, and pg_restore to put one back.
 *
 * The client tools run as child processes (posix_spawn), found in
 * pg_bindir, else /usr/lib/postgresql/<server major>/bin (Debian's
 * postgresql-client-<major>), else on PATH. They get the connection as a
 * conninfo string without the password, which goes in PGPASSWORD: argv is
 * visible to every local user, the environment is not. Their stderr is
 * kept in a temp file and its last lines become the error message.
 */
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/util.h"
#include "db/db.h"
#include "db/snapshot.h"
#include "db/snapshot_int.h"

extern char **environ;

/* The rows a dump carries; the schema comes from the migrations. */
static const char *const dump_tables[] = {"public.credits", "public.credit_transactions",
                                          "public.generations"};
#define N_TABLES (sizeof dump_tables / sizeof *dump_tables)

struct lr_pg_snapshot {
    PGconn *c;
};

static void set_err(char **errmsg, const char *what, const char *detail)
{
    if (errmsg && asprintf(errmsg, "%s: %s", what, detail ? detail : "unknown error") < 0)
        *errmsg = NULL;
}

static PGconn *connect_url(const char *url, char **errmsg)
{
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {url, "10", "lensroom-backup", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        set_err(errmsg, "postgres: cannot connect", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Runs sql; the result when it has the expected status, else NULL with
 * *errmsg set. */
static PGresult *exec_ok(PGconn *c, const char *sql, ExecStatusType want, char **errmsg)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != want) {
        set_err(errmsg, "postgres", PQresultErrorMessage(r));
        PQclear(r);
        return NULL;
    }
    return r;
}

static void conninfo_pair(char **out, size_t *len, size_t *cap, const char *key, const char *val)
{
    lr_buf_append(out, len, cap, key, strlen(key));
    lr_buf_append(out, len, cap, "='", 2);
    for (const char *p = val; *p; p++) {
        if (*p == '\'' || *p == '\\')
            lr_buf_append(out, len, cap, "\\", 1);
        lr_buf_append(out, len, cap, p, 1);
    }
    lr_buf_append(out, len, cap, "' ", 2);
}

/* url as conninfo, with dbname replaced when dbname is set; its password
 * goes to *password (malloc'd or NULL) unless password is NULL, when it
 * stays in the string (for this process's own connections only). */
static char *conninfo_of(const char *url, const char *dbname, char **password)
{
    if (password)
        *password = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, NULL);
    if (!opts)
        return NULL;
    char *out = NULL;
    size_t len = 0, cap = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || (dbname && !strcmp(o->keyword, "dbname")))
            continue;
        if (password && !strcmp(o->keyword, "password")) {
            *password = lr_xstrdup(o->val);
            continue;
        }
        conninfo_pair(&out, &len, &cap, o->keyword, o->val);
    }
    if (dbname)
        conninfo_pair(&out, &len, &cap, "dbname", dbname);
    PQconninfoFree(opts);
    return out ? out : lr_xstrdup("");
}

/* url as conninfo without its password (*password: malloc'd or NULL). */
static char *conninfo_without_password(const char *url, char **password)
{
    return conninfo_of(url, NULL, password);
}

/* The path of a client tool for a server of major version major (0:
 * unknown), malloc'd. */
static char *find_tool(const char *name, int major, const char *bindir)
{
    char *p = NULL;
    if (bindir) {
        if (asprintf(&p, "%s/%s", bindir, name) < 0)
            abort();
        return p;
    }
    if (major > 0) {
        if (asprintf(&p, "/usr/lib/postgresql/%d/bin/%s", major, name) < 0)
            abort();
        if (access(p, X_OK) == 0)
            return p;
        free(p);
    }
    return lr_xstrdup(name);
}

/* environ plus each of extra ("NAME=value"), replacing those names. */
static char **child_env(char *const extra[], size_t n_extra)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = lr_xcalloc(n + n_extra + 1, sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool replaced = false;
        for (size_t j = 0; j < n_extra && !replaced; j++) {
            size_t nl = strcspn(extra[j], "=") + 1;
            replaced = !strncmp(environ[i], extra[j], nl);
        }
        if (!replaced)
            env[k++] = environ[i];
    }
    for (size_t j = 0; j < n_extra; j++)
        env[k++] = extra[j];
    return env;
}

/* The last lines of what a tool wrote to stderr (fd at its end). */
static char *tail_of(int fd)
{
    char buf[1024];
    off_t end = lseek(fd, 0, SEEK_END);
    off_t from = end > (off_t)sizeof buf - 1 ? end - (off_t)sizeof buf + 1 : 0;
    ssize_t n = pread(fd, buf, sizeof buf - 1, from);
    buf[n > 0 ? n : 0] = '\0';
    size_t len = strlen(buf);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
        buf[--len] = '\0';
    return lr_xstrdup(len ? buf : "(no message)");
}

/* Runs tool argv with the connection's password and extra environment;
 * LR_OK when it exits 0. */
static lr_err run_tool(char *const argv[], const char *password, const char *more_env,
                       char **errmsg)
{
    char err_path[] = "/tmp/lensroom-pgtool-XXXXXX";
    int err_fd = mkstemp(err_path);
    if (err_fd < 0) {
        set_err(errmsg, "cannot create a temp file", strerror(errno));
        return LR_ERR_IO;
    }
    unlink(err_path);
    char *extra[2];
    size_t n_extra = 0;
    char *pw = NULL;
    if (password && asprintf(&pw, "PGPASSWORD=%s", password) >= 0)
        extra[n_extra++] = pw;
    if (more_env)
        extra[n_extra++] = (char *)more_env;
    char **env = child_env(extra, n_extra);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    free(env);
    if (pw) {
        memset(pw, 0, strlen(pw));
        free(pw);
    }
    lr_err e = LR_OK;
    int status = 0;
    if (rc != 0) {
        set_err(errmsg, argv[0], strerror(rc));
        e = LR_ERR_UNAVAILABLE;
    } else if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char *tail = tail_of(err_fd);
        set_err(errmsg, argv[0], tail);
        free(tail);
        e = LR_ERR_DB;
    }
    close(err_fd);
    return e;
}

lr_err lr_pg_snapshot_take(const lr_snapshot_opts *o, lr_pg_snapshot **out, char **errmsg)
{
    PGconn *c = connect_url(o->url, errmsg);
    if (!c)
        return LR_ERR_UNAVAILABLE;
    PGresult *r =
        exec_ok(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", PGRES_COMMAND_OK, errmsg);
    PQclear(r);
    if (r)
        r = exec_ok(c, "SELECT pg_export_snapshot()", PGRES_TUPLES_OK, errmsg);
    if (!r) {
        PQfinish(c);
        return LR_ERR_DB;
    }
    char *password = NULL, *conninfo = conninfo_without_password(o->url, &password);
    char *tool = find_tool("pg_dump", PQserverVersion(c) / 10000, o->pg_bindir);
    char *snap = NULL, *file = NULL, *db = NULL;
    if (asprintf(&snap, "--snapshot=%s", PQgetvalue(r, 0, 0)) < 0 ||
        asprintf(&file, "--file=%s", o->out_path) < 0 ||
        asprintf(&db, "--dbname=%s", conninfo ? conninfo : "") < 0)
        abort();
    PQclear(r);
    char *argv[8 + 2 * N_TABLES + 1] = {
        tool, "--format=custom", "--data-only", "--no-owner", "--no-privileges", snap, file, db};
    size_t k = 8;
    for (size_t i = 0; i < N_TABLES; i++) {
        argv[k++] = "--table";
        argv[k++] = (char *)dump_tables[i];
    }
    lr_err e = run_tool(argv, password, NULL, errmsg);
    free(tool);
    free(snap);
    free(file);
    free(db);
    free(conninfo);
    free(password);
    if (e != LR_OK) {
        unlink(o->out_path);
        PQfinish(c);
        return e;
    }
    *out = lr_xcalloc(1, sizeof **out);
    (*out)->c = c;
    return LR_OK;
}

lr_err lr_pg_snapshot_stats(lr_pg_snapshot *s, lr_snapshot_stats *st)
{
    *st = (lr_snapshot_stats){0};
    PGresult *r = exec_ok(s->c, "SELECT COALESCE(MAX(version), '') FROM lensroom.schema_migrations",
                          PGRES_TUPLES_OK, NULL);
    if (!r)
        return LR_ERR_DB;
    snprintf(st->schema, sizeof st->schema, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    char *sql = lr_snapshot_stats_sql();
    r = exec_ok(s->c, sql, PGRES_TUPLES_OK, NULL);
    free(sql);
    if (!r)
        return LR_ERR_DB;
    int64_t *cols[] = {&st->users,       &st->balances,  &st->transactions,
                       &st->grants,      &st->charges,   &st->refunds,
                       &st->generations, &st->succeeded, &st->violations};
    for (int i = 0; i < (int)(sizeof cols / sizeof *cols); i++)
        *cols[i] = strtoll(PQgetvalue(r, 0, i), NULL, 10);
    PQclear(r);
    return LR_OK;
}

lr_err lr_pg_snapshot_each_key(lr_pg_snapshot *s, lr_snapshot_key_fn fn, void *ctx)
{
    /* A cursor, a thousand rows at a time: flat memory at any size. */
    PGresult *r = exec_ok(s->c,
                          "DECLARE lr_keys NO SCROLL CURSOR FOR SELECT k "
                          "FROM public.generations g, jsonb_array_elements_text(g.storage_keys) k "
                          "WHERE g.deleted_at IS NULL ORDER BY g.created_at, g.id",
                          PGRES_COMMAND_OK, NULL);
    if (!r)
        return LR_ERR_DB;
    PQclear(r);
    lr_err e = LR_OK;
    while (e == LR_OK) {
        r = exec_ok(s->c, "FETCH 1000 FROM lr_keys", PGRES_TUPLES_OK, NULL);
        if (!r)
            return LR_ERR_DB;
        int n = PQntuples(r);
        for (int i = 0; i < n && e == LR_OK; i++)
            e = fn(ctx, PQgetvalue(r, i, 0));
        PQclear(r);
        if (n == 0)
            break;
    }
    PQclear(PQexec(s->c, "CLOSE lr_keys"));
    return e;
}

void lr_pg_snapshot_free(lr_pg_snapshot *s)
{
    if (!s)
        return;
    PQclear(PQexec(s->c, "ROLLBACK"));
    PQfinish(s->c);
    free(s);
}

/* *empty: no LensRoom table holds a row (missing tables are empty). */
static lr_err count_rows(PGconn *c, bool *empty, char **errmsg)
{
    *empty = true;
    for (size_t i = 0; i < N_TABLES && *empty; i++) {
        const char *p[] = {dump_tables[i]};
        PGresult *r =
            PQexecParams(c, "SELECT to_regclass($1) IS NOT NULL", 1, NULL, p, NULL, NULL, 0);
        bool exists = PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "t");
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            set_err(errmsg, "postgres", PQresultErrorMessage(r));
        lr_err e = PQresultStatus(r) == PGRES_TUPLES_OK ? LR_OK : LR_ERR_DB;
        PQclear(r);
        if (e != LR_OK)
            return e;
        if (!exists)
            continue;
        char *sql = NULL;
        if (asprintf(&sql, "SELECT EXISTS (SELECT 1 FROM %s)", dump_tables[i]) < 0)
            abort();
        r = exec_ok(c, sql, PGRES_TUPLES_OK, errmsg);
        free(sql);
        if (!r)
            return LR_ERR_DB;
        *empty = strcmp(PQgetvalue(r, 0, 0), "t") != 0;
        PQclear(r);
    }
    return LR_OK;
}

lr_err lr_db_pg_is_empty(const char *url, bool *empty, char **errmsg)
{
    PGconn *c = connect_url(url, errmsg);
    if (!c)
        return LR_ERR_UNAVAILABLE;
    lr_err e = count_rows(c, empty, errmsg);
    PQfinish(c);
    return e;
}

/* Applies this binary's migrations through the ordinary backend. */
static lr_err migrate(const char *url, char **errmsg)
{
    lr_db *db = NULL;
    lr_err e = lr_db_pg_open(url, 1, &db, errmsg);
    if (e != LR_OK)
        return e;
    e = db->ops->migrate(db);
    if (e != LR_OK)
        set_err(errmsg, "postgres", "applying the migrations failed (see the log above)");
    lr_db_close(db);
    return e;
}

lr_err lr_db_pg_load(const char *url, const char *dump_path, const char *schema, bool force,
                     const char *pg_bindir, char **errmsg)
{
    PGconn *c = connect_url(url, errmsg);
    if (!c)
        return LR_ERR_UNAVAILABLE;
    bool empty;
    lr_err e = count_rows(c, &empty, errmsg);
    if (e == LR_OK && !empty && !force) {
        set_err(errmsg, "the database is not empty",
                "its LensRoom tables hold rows; restore into an empty database, or pass "
                "--force to replace them");
        e = LR_ERR_CONFLICT;
    }
    if (e == LR_OK)
        e = migrate(url, errmsg);
    PGresult *r = NULL;
    if (e == LR_OK &&
        !(r = exec_ok(c, "SELECT COALESCE(MAX(version), '') FROM lensroom.schema_migrations",
                      PGRES_TUPLES_OK, errmsg)))
        e = LR_ERR_DB;
    if (e == LR_OK && strcmp(schema, PQgetvalue(r, 0, 0)) > 0) {
        char *why = NULL;
        if (asprintf(&why,
                     "the archive's schema %s is newer than this lensroom's %s; restore "
                     "with the version that made it",
                     schema, PQgetvalue(r, 0, 0)) < 0)
            abort();
        set_err(errmsg, "cannot restore", why);
        free(why);
        e = LR_ERR_UNSUPPORTED;
    }
    PQclear(r);
    if (e == LR_OK && !empty) {
        r = exec_ok(c, "TRUNCATE public.credits, public.credit_transactions, public.generations",
                    PGRES_COMMAND_OK, errmsg);
        e = r ? LR_OK : LR_ERR_DB;
        PQclear(r);
    }
    int major = PQserverVersion(c) / 10000;
    PQfinish(c);
    if (e != LR_OK)
        return e;
    char *password = NULL, *conninfo = conninfo_without_password(url, &password);
    char *tool = find_tool("pg_restore", major, pg_bindir);
    char *db = NULL;
    if (asprintf(&db, "--dbname=%s", conninfo ? conninfo : "") < 0)
        abort();
    char *argv[] = {tool,
                    "--data-only",
                    "--single-transaction",
                    "--exit-on-error",
                    "--no-owner",
                    "--no-privileges",
                    db,
                    (char *)dump_path,
                    NULL};
    /* The rows already balance (they are a ledger-consistent snapshot):
     * the credits trigger must not add an 'adjustment' row per balance. */
    e = run_tool(argv, password, "PGOPTIONS=-c lensroom.ledger=on", errmsg);
    free(tool);
    free(db);
    free(conninfo);
    free(password);
    return e;
}

/* Runs sql (no result wanted) on c; LR_ERR_DB with *errmsg when it fails. */
static lr_err exec_command(PGconn *c, const char *sql, char **errmsg)
{
    PGresult *r = exec_ok(c, sql, PGRES_COMMAND_OK, errmsg);
    PQclear(r);
    return r ? LR_OK : LR_ERR_DB;
}

lr_err lr_db_pg_dump_stats(const char *server_url, const char *dump_path, const char *schema,
                           const char *pg_bindir, lr_snapshot_stats *st, char **errmsg)
{
    PGconn *admin = connect_url(server_url, errmsg);
    if (!admin)
        return LR_ERR_UNAVAILABLE;
    unsigned char rnd[8];
    char hex[17], name[40], *sql = NULL;
    lr_random_bytes(rnd, sizeof rnd);
    lr_hex(rnd, sizeof rnd, hex);
    snprintf(name, sizeof name, "lensroom_verify_%s", hex);
    if (asprintf(&sql, "CREATE DATABASE %s", name) < 0)
        abort();
    lr_err e = exec_command(admin, sql, errmsg);
    free(sql);
    if (e != LR_OK) {
        PQfinish(admin);
        return e;
    }
    char *scratch = conninfo_of(server_url, name, NULL);
    e = lr_db_pg_load(scratch, dump_path, schema, false, pg_bindir, errmsg);
    lr_pg_snapshot snap = {.c = e == LR_OK ? connect_url(scratch, errmsg) : NULL};
    if (e == LR_OK && !snap.c)
        e = LR_ERR_UNAVAILABLE;
    if (e == LR_OK && (e = lr_pg_snapshot_stats(&snap, st)) != LR_OK)
        set_err(errmsg, "postgres", "cannot read the restored rows' totals");
    PQfinish(snap.c);
    free(scratch);
    if (asprintf(&sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name) < 0)
        abort();
    char *drop_err = NULL;
    if (exec_command(admin, sql, &drop_err) != LR_OK) {
        fprintf(stderr, "backup: the scratch database %s was not dropped: %s\n", name,
                drop_err ? drop_err : "");
        free(drop_err);
    }
    free(sql);
    PQfinish(admin);
    return e;
}
