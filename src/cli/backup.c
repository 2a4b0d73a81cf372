/* `lensroom backup` (backup.h): argument parsing, the configuration's
 * targets, and what is printed. The work is in backup/. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/backup.h"
#include "cli/store.h"
#include "core/log.h"
#include "core/util.h"
#include "db/db.h"

const char lr_cli_backup_usage[] =
    "usage: lensroom backup create [--to DIR|s3://bucket/prefix] [--with-objects]\n"
    "       lensroom backup verify ARCHIVE [--scratch-url postgres://…]\n"
    "       lensroom backup restore ARCHIVE (--data-dir DIR | --database-url URL) [--force]\n"
    "create: a consistent online snapshot of the database (SQLite: online backup API;\n"
    "  PostgreSQL: pg_dump of the LensRoom rows) and the stored files it references,\n"
    "  in one tar.zst archive with a manifest (schema, ledger totals, counts, each\n"
    "  file's size and SHA-256). Default folder LENSROOM_BACKUP_DIR ({data dir}/backups).\n"
    "  S3/Supabase objects are listed by key; --with-objects copies them too.\n"
    "verify: checks every hash, runs the ledger audit on the snapshot, prints what\n"
    "  the archive holds; exits 1 on any problem. A PostgreSQL archive's rows are\n"
    "  audited in a scratch database created (and dropped) on the server of\n"
    "  --scratch-url, else DATABASE_URL; the role needs CREATEDB.\n"
    "restore: verifies, then puts the database, the files and the generated JWT\n"
    "  secret in place; refuses a non-empty target unless --force; then audits it.\n";

struct lr_cli_backups {
    lr_backup_sched *sched;
    lr_store *mirror;
    char *bucket, *prefix;
    char *secret_path;
};

static int load(lr_config *cfg, bool prepare)
{
    if (lr_config_load(cfg) != 0 || (prepare && lr_config_prepare_data(cfg) != 0))
        return -1;
    lr_log_set_level((lr_log_level)cfg->log_level);
    return 0;
}

static const char *work_dir(void)
{
    const char *t = getenv("TMPDIR");
    return t && *t ? t : "/tmp";
}

/* The generated secret's file when the server uses one, malloc'd. */
static char *secret_file(const lr_config *cfg)
{
    char *p = NULL;
    if (cfg->jwt_secret_from_file && asprintf(&p, "%s/jwt-secret", cfg->data_dir) < 0)
        abort();
    return p;
}

static int cmd_create(int argc, char **argv, const char *version)
{
    lr_config cfg;
    lr_store *store = NULL, *target = NULL;
    char *bucket = NULL, *prefix = NULL, *staging = NULL, *secret = NULL, *err = NULL;
    int rc = 1;
    const char *to = lr_cli_opt(argc, argv, "--to");
    if (load(&cfg, true) != 0 || lr_cli_open_store(&cfg, NULL, &store) != 0)
        goto out;
    const char *dir = to ? to : cfg.backup_dir;
    if (to && !strncmp(to, "s3://", 5)) {
        if (!lr_backup_parse_s3(to, &bucket, &prefix)) {
            fprintf(stderr, "backup: --to %s: expected s3://bucket/prefix\n", to);
            goto out;
        }
        if (!cfg.s3_endpoint || !cfg.s3_access_key || !cfg.s3_secret_key) {
            fprintf(stderr, "backup: an s3:// target needs S3_ENDPOINT, S3_ACCESS_KEY_ID and "
                            "S3_SECRET_ACCESS_KEY\n");
            goto out;
        }
        if (lr_cli_open_store(&cfg, bucket, &target) != 0)
            goto out;
        if (asprintf(&staging, "%s/tmp", cfg.data_dir) < 0)
            abort();
        dir = staging;
    }
    secret = secret_file(&cfg);
    lr_backup_create_opts o = {.database_url = cfg.database_url,
                               .dir = dir,
                               .store = store,
                               .with_objects = lr_cli_flag(argc, argv, "--with-objects"),
                               .secret_path = secret,
                               .pg_bindir = cfg.pg_bindir,
                               .version = version};
    lr_backup_result res;
    if (lr_backup_create(&o, &res, &err) != LR_OK) {
        fprintf(stderr, "backup: failed: %s\n", err ? err : "unknown error");
        goto out;
    }
    if (target) {
        lr_err e = lr_backup_upload(target, prefix, res.path, &err);
        unlink(res.path);
        if (e != LR_OK) {
            fprintf(stderr, "backup: upload to %s failed: %s\n", to, err ? err : "");
            goto out;
        }
        printf("backup: uploaded %s to s3://%s/%s%s%s\n", res.name, bucket, prefix,
               *prefix ? "/" : "", res.name);
    } else {
        printf("backup: wrote %s\n", res.path);
    }
    printf("  %lld bytes in %lld ms; %s schema %s: %lld users, balances %lld, %lld ledger rows, "
           "%lld generations; %lld objects copied (%lld bytes) of %lld referenced, %lld "
           "missing\n",
           (long long)res.bytes, (long long)res.duration_ms,
           cfg.database_url && lr_db_url_is_postgres(cfg.database_url) ? "postgres" : "sqlite",
           res.stats.schema, (long long)res.stats.users, (long long)res.stats.balances,
           (long long)res.stats.transactions, (long long)res.stats.generations,
           (long long)res.objects, (long long)res.object_bytes, (long long)res.keys,
           (long long)res.missing);
    if (res.swept)
        printf("  removed %d leftover files of backups that did not finish\n", res.swept);
    if (res.stats.violations)
        printf("  warning: the ledger audit found %lld violations in the snapshot\n",
               (long long)res.stats.violations);
    rc = 0;
out:
    free(err);
    free(secret);
    free(bucket);
    free(prefix);
    free(staging);
    lr_store_close(store);
    lr_store_close(target);
    lr_config_free(&cfg);
    return rc;
}

/* The configured database when it is PostgreSQL, else NULL. */
static const char *postgres_url(const lr_config *cfg)
{
    return cfg->database_url && lr_db_url_is_postgres(cfg->database_url) ? cfg->database_url : NULL;
}

static int cmd_verify(int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-') {
        fputs(lr_cli_backup_usage, stderr);
        return 2;
    }
    lr_config cfg;
    int rc = 1;
    if (load(&cfg, false) == 0) {
        const char *scratch = lr_cli_opt(argc, argv, "--scratch-url");
        lr_verify_pg pg = {.server_url = scratch ? scratch : postgres_url(&cfg),
                           .bindir = cfg.pg_bindir};
        rc = lr_backup_verify(argv[1], work_dir(), &pg, stdout, NULL) == LR_OK ? 0 : 1;
    }
    lr_config_free(&cfg);
    return rc;
}

/* The target's ledger after a restore, through the ordinary backend. */
static int audit_target(const char *url)
{
    lr_db *db = NULL;
    char *err = NULL;
    lr_violation_list v = {0};
    int rc = 1;
    if (lr_db_open(url, 1, &db, &err) != LR_OK || db->ops->migrate(db) != LR_OK ||
        db->ops->audit(db, &v) != LR_OK) {
        fprintf(stderr, "restore: cannot audit the restored database: %s\n", err ? err : "");
    } else {
        for (size_t i = 0; i < v.n; i++)
            printf("violation %s %s: %s\n", v.v[i].kind, v.v[i].subject, v.v[i].detail);
        if (v.n == 0)
            printf("audit: ledger sound on the restored database\n");
        rc = v.n ? 1 : 0;
    }
    lr_violation_list_clear(&v);
    lr_db_close(db);
    free(err);
    return rc;
}

/* Refuses a target that holds something, unless force. */
static int check_target(const char *data_dir, const char *url, bool force)
{
    if (force)
        return 0;
    if (data_dir && !lr_backup_dir_empty(data_dir)) {
        fprintf(stderr,
                "restore: %s is not empty; restore into an empty folder, or pass --force "
                "to replace its database, JWT secret and objects (stop the server "
                "first)\n",
                data_dir);
        return -1;
    }
    bool empty = true;
    char *err = NULL;
    if (url && lr_db_pg_is_empty(url, &empty, &err) != LR_OK) {
        fprintf(stderr, "restore: %s\n", err ? err : "cannot reach the database");
        free(err);
        return -1;
    }
    if (!empty) {
        fprintf(stderr, "restore: the database is not empty (its LensRoom tables hold rows); "
                        "restore into an empty database, or pass --force to replace them\n");
        return -1;
    }
    return 0;
}

static int cmd_restore(int argc, char **argv)
{
    const char *data_dir = lr_cli_opt(argc, argv, "--data-dir"),
               *url = lr_cli_opt(argc, argv, "--database-url");
    bool force = lr_cli_flag(argc, argv, "--force");
    if (argc < 2 || argv[1][0] == '-' || !data_dir == !url ||
        (url && !lr_db_url_is_postgres(url))) {
        fprintf(stderr, "restore: name the archive and one target: --data-dir DIR (SQLite) or "
                        "--database-url postgres://… (PostgreSQL)\n\n");
        fputs(lr_cli_backup_usage, stderr);
        return 2;
    }
    const char *archive = argv[1];
    lr_config cfg;
    lr_store *store = NULL;
    char *secret = NULL, *err = NULL;
    int rc = 1;
    if (load(&cfg, false) != 0 || check_target(data_dir, url, force) != 0)
        goto out;
    lr_backup_info info;
    lr_verify_pg pg = {.server_url = url ? url : postgres_url(&cfg), .bindir = cfg.pg_bindir};
    if (lr_backup_verify(archive, work_dir(), &pg, stdout, &info) != LR_OK) {
        fprintf(stderr, "restore: refusing %s: it failed verification (above)\n", archive);
        goto out;
    }
    if (strcmp(info.backend, url ? "postgres" : "sqlite") != 0) {
        fprintf(stderr, "restore: %s holds a %s database; restore it with %s\n", archive,
                info.backend, url ? "--data-dir DIR" : "--database-url postgres://…");
        goto out;
    }
    if (data_dir) {
        free(cfg.data_dir);
        cfg.data_dir = lr_xstrdup(data_dir);
    }
    if (lr_mkdir_p(cfg.data_dir, 0700) != 0) {
        fprintf(stderr, "restore: cannot create %s: %s\n", cfg.data_dir, strerror(errno));
        goto out;
    }
    if (info.objects > 0 && lr_cli_open_store(&cfg, NULL, &store) != 0)
        goto out;
    if ((data_dir || !cfg.jwt_secret) && asprintf(&secret, "%s/jwt-secret", cfg.data_dir) < 0)
        abort();
    char *db_path = NULL;
    if (data_dir && asprintf(&db_path, "%s/lensroom.db", data_dir) < 0)
        abort();
    lr_backup_restore_opts o = {.archive = archive,
                                .info = &info,
                                .data_dir = data_dir,
                                .database_url = url,
                                .secret_path = secret,
                                .store = store,
                                .force = force,
                                .work_dir = work_dir(),
                                .pg_bindir = cfg.pg_bindir};
    if (lr_backup_restore(&o, stdout, &err) != LR_OK)
        fprintf(stderr, "restore: failed: %s\n", err ? err : "unknown error");
    else
        rc = audit_target(url ? url : db_path);
    free(db_path);
out:
    free(err);
    free(secret);
    lr_store_close(store);
    lr_config_free(&cfg);
    return rc;
}

int lr_cli_backup(int argc, char **argv, const char *version)
{
    const char *sub = argc > 1 ? argv[1] : "";
    if (!strcmp(sub, "create"))
        return cmd_create(argc - 1, argv + 1, version);
    if (!strcmp(sub, "verify"))
        return cmd_verify(argc - 1, argv + 1);
    if (!strcmp(sub, "restore"))
        return cmd_restore(argc - 1, argv + 1);
    fputs(lr_cli_backup_usage, stderr);
    return 2;
}

int lr_cli_backups_start(const lr_config *cfg, lr_store *store, const char *version,
                         lr_cli_backups **out)
{
    *out = NULL;
    if (cfg->backup_interval_s <= 0)
        return 0;
    lr_backup_keep keep;
    if (lr_backup_keep_parse(cfg->backup_keep, &keep) != 0) {
        fprintf(stderr, "config: LENSROOM_BACKUP_KEEP: expected N (newest), Nd (daily), Nw "
                        "(weekly) joined by commas, e.g. 7d,4w\n");
        return -1;
    }
    lr_cli_backups *b = lr_xcalloc(1, sizeof *b);
    if (cfg->backup_s3 && (!lr_backup_parse_s3(cfg->backup_s3, &b->bucket, &b->prefix) ||
                           lr_cli_open_store(cfg, b->bucket, &b->mirror) != 0)) {
        lr_cli_backups_stop(b);
        return -1;
    }
    b->secret_path = secret_file(cfg);
    lr_backup_sched_opts o = {.create = {.database_url = cfg->database_url,
                                         .dir = cfg->backup_dir,
                                         .store = store,
                                         .with_objects = cfg->backup_with_objects,
                                         .secret_path = b->secret_path,
                                         .pg_bindir = cfg->pg_bindir,
                                         .version = version},
                              .interval_s = cfg->backup_interval_s,
                              .keep = keep,
                              .mirror = b->mirror,
                              .mirror_prefix = b->prefix ? b->prefix : ""};
    b->sched = lr_backup_sched_start(&o);
    if (!b->sched) {
        lr_cli_backups_stop(b);
        return -1;
    }
    lr_info("backups: every %d s to %s%s%s, keeping %s", cfg->backup_interval_s, cfg->backup_dir,
            cfg->backup_s3 ? " and " : "", cfg->backup_s3 ? cfg->backup_s3 : "", cfg->backup_keep);
    *out = b;
    return 0;
}

lr_backup_sched *lr_cli_backups_sched(lr_cli_backups *b)
{
    return b ? b->sched : NULL;
}

void lr_cli_backups_stop(lr_cli_backups *b)
{
    if (!b)
        return;
    lr_backup_sched_stop(b->sched);
    lr_store_close(b->mirror);
    free(b->bucket);
    free(b->prefix);
    free(b->secret_path);
    free(b);
}
