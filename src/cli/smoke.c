#include "cli/smoke.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"
#include "core/vocab.h"
#include "providers/media.h"

typedef struct {
    bool color;
    int failed;
} report;

__attribute__((format(printf, 4, 5))) static void line(report *r, bool ok, const char *name,
                                                       const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (!ok)
        r->failed++;
    const char *mark = ok ? "✓" : "✗";
    if (r->color)
        printf("%s%s\033[0m %-22s %s\n", ok ? "\033[32m" : "\033[31m", mark, name, detail);
    else
        printf("%s %-22s %s\n", mark, name, detail);
    fflush(stdout);
}

static void check_env(report *r, const lr_config *cfg)
{
    line(r, true, "env", "database %s, storage %s (bucket %s), provider %s, JWT secret %s",
         lr_db_url_is_postgres(cfg->database_url) ? "postgres" : "sqlite", cfg->storage,
         cfg->bucket, cfg->use_mock ? "mock" : "kie",
         cfg->jwt_secret_from_file ? "generated (data dir)" : "from environment");
    line(r, true, "service role key",
         !cfg->service_key                              ? "not set (admin API disabled; optional)"
         : !strncmp(cfg->service_key, "sb_secret_", 10) ? "sb_secret_ key set (admin API enabled)"
                                                        : "set (admin API enabled)");
}

/* Ledger round trip on the throwaway user: +10, -10, sums match. */
static bool check_credits(report *r, lr_db *db, const char *user)
{
    lr_adjust_result a = {0}, b = {0};
    lr_adjust_req up = {
        .user_id = user, .amount = 10, .type = "bonus", .description = "lensroom smoke"};
    lr_adjust_req down = {
        .user_id = user, .amount = -10, .type = "adjustment", .description = "lensroom smoke"};
    int before = 0, after = -1;
    lr_err e = db->ops->balance(db, user, &before);
    if (e == LR_OK)
        e = db->ops->adjust(db, &up, &a);
    if (e == LR_OK)
        e = db->ops->adjust(db, &down, &b);
    if (e == LR_OK)
        e = db->ops->balance(db, user, &after);
    if (e != LR_OK || a.new_balance != before + 10 || after != before) {
        line(r, false, "credits functions", "adjust/balance failed: %s", lr_strerror(e));
        return false;
    }
    lr_ledger_list rows;
    long sum = 0;
    if (db->ops->list_transactions(db, user, NULL, NULL, 100000, &rows) == LR_OK) {
        for (size_t i = 0; i < rows.n; i++)
            sum += rows.v[i].amount;
        lr_ledger_list_clear(&rows);
    }
    line(r, sum == after, "credits functions",
         sum == after ? "grant +10 and -10 on user %s: balance back to %d, ledger sums to it"
                      : "user %s: balance %d but the ledger sums to another value",
         user, after);
    return sum == after;
}

static void check_generation(report *r, lr_db *db, const char *user)
{
    char id[LR_UUID_LEN + 1], ts[32], lease[32];
    lr_uuid_v4(id);
    lr_time_iso(lr_now_ms(), ts);
    lr_time_iso(lr_now_ms() + 60000, lease);
    lr_adjust_req grant = {
        .user_id = user, .amount = 1, .type = "bonus", .description = "lensroom smoke generation"};
    lr_adjust_result ar;
    int balance;
    lr_reserve_req rq = {.generation_id = id,
                         .user_id = user,
                         .type = "photo",
                         .model = "smoke",
                         .provider = "smoke",
                         .prompt = "lensroom smoke",
                         .outputs_count = 1,
                         .cost = 1,
                         .created_at = ts,
                         .lease_until = lease};
    lr_settle_req sq = {.generation_id = id,
                        .status = lr_gen_status_name(LR_GEN_FAILED),
                        .failed_count = 1,
                        .refund = 1,
                        .error_code = "smoke",
                        .error_message = "lensroom smoke test row"};
    lr_adjust_req back = {.user_id = user,
                          .amount = -1,
                          .type = "adjustment",
                          .description = "lensroom smoke generation"};
    lr_generation g = {0};
    lr_generation_list list = {0};
    lr_gen_filter f = {.limit = 5};
    const char *step = "grant";
    lr_err e = db->ops->adjust(db, &grant, &ar);
    lr_key_holder holder;
    if (e == LR_OK &&
        (step = "create", e = db->ops->reserve(db, &rq, &balance, &holder)) == LR_OK &&
        (step = "update", e = db->ops->set_stage(db, id, lr_gen_status_name(LR_GEN_PROCESSING),
                                                 lr_gen_stage_name(LR_STAGE_STORING), NULL)) ==
            LR_OK &&
        (step = "settle", e = db->ops->settle(db, &sq, &balance)) == LR_OK &&
        (step = "get", e = db->ops->get_generation(db, user, id, &g)) == LR_OK &&
        (step = "list", e = db->ops->list_generations(db, user, &f, &list)) == LR_OK) {
        bool listed = false;
        for (size_t i = 0; i < list.n; i++)
            listed |= !strcmp(list.v[i].id, id);
        lr_gen_status st;
        bool ok = listed && lr_gen_status_parse(g.status, &st) && st == LR_GEN_FAILED;
        line(r, ok, "generation rows",
             ok ? "create, update, settle (refund), get and list of %s"
                : "%s not listed or "
                  "wrong status",
             id);
    } else {
        line(r, false, "generation rows", "%s failed: %s", step, lr_strerror(e));
    }
    db->ops->adjust(db, &back, &ar);
    lr_generation_clear(&g);
    lr_generation_list_clear(&list);
}

typedef struct {
    char *buf;
    size_t len;
} membuf;

static int mem_write(void *ctx, const void *buf, size_t len)
{
    membuf *m = ctx;
    char *nb = lr_xrealloc(m->buf, m->len + len);
    memcpy(nb + m->len, buf, len);
    m->buf = nb;
    m->len += len;
    return 0;
}

/* Why the bucket check failed, in the operator's terms: a 403 is the key
 * (or its rights), anything else the bucket's name. */
static const char *ping_failure(const lr_store *store, lr_err e)
{
    bool s3 = !strcmp(store->backend, "s3");
    switch (e) {
    case LR_ERR_DENIED:
        return s3 ? "refused these credentials (403): wrong S3_ACCESS_KEY_ID or "
                    "S3_SECRET_ACCESS_KEY, or the key has no access to this bucket"
                  : "refused the service role key (403): check SUPABASE_SERVICE_ROLE_KEY";
    case LR_ERR_NOT_FOUND:
        return s3 ? "is missing: create it, or fix S3_BUCKET"
                  : "is missing: create it, or fix BUCKET_NAME";
    default: return "is unreachable (no answer from the endpoint)";
    }
}

/* Upload a small PNG, read it back byte for byte, delete it, check it is gone. */
static void check_storage(report *r, lr_store *store, const char *user)
{
    lr_err e = store->ops->ping(store);
    if (e != LR_OK) {
        line(r, false, "bucket", "bucket %s %s", store->bucket, ping_failure(store, e));
        line(r, false, "upload/download/delete", "skipped: the bucket is not reachable");
        return;
    }
    line(r, true, "bucket", "%s bucket %s reachable", store->backend, store->bucket);

    membuf png = {0};
    char name[64], *key = NULL, *got = NULL;
    size_t got_len = 0;
    snprintf(name, sizeof name, "smoke-%08x", (unsigned)(lr_random_unit() * 4294967295.0));
    lr_blob_sink *k = NULL;
    const char *step = "render";
    e = lr_media_png("lensroom smoke", 0, 64, 64, mem_write, &png);
    if (e == LR_OK &&
        (step = "upload", e = lr_blob_begin(store, user, name, LR_STORE_MAX_BYTES, &k)) == LR_OK) {
        e = lr_blob_write(k, png.buf, png.len);
        if (e == LR_OK)
            e = lr_blob_finish(k, NULL, &key, NULL);
        else
            lr_blob_abort(k);
    }
    if (e == LR_OK) {
        step = "download";
        e = store->ops->read(store, key, 1 << 20, &got, &got_len);
    }
    if (e == LR_OK && (got_len != png.len || memcmp(got, png.buf, png.len) != 0)) {
        step = "download";
        e = LR_ERR_IO;
    }
    if (e == LR_OK) {
        step = "delete";
        e = store->ops->remove(store, key);
    }
    if (e == LR_OK) {
        char *again = NULL;
        size_t n;
        step = "delete";
        lr_err gone = store->ops->read(store, key, 1 << 20, &again, &n);
        free(again);
        e = gone == LR_ERR_NOT_FOUND ? LR_OK : LR_ERR_IO;
    }
    if (e == LR_OK)
        line(r, true, "upload/download/delete",
             "%zu bytes as %s: uploaded, read back equal, deleted", png.len, key);
    else
        line(r, false, "upload/download/delete", "%s failed: %s", step, lr_strerror(e));
    free(png.buf);
    free(got);
    free(key);
}

int lr_smoke_run(const lr_config *cfg, lr_db *db, const char *db_err, lr_store *store,
                 const char *store_err)
{
    const char *nc = getenv("NO_COLOR");
    report r = {.color = isatty(STDOUT_FILENO) && !(nc && *nc), .failed = 0};
    char user[LR_UUID_LEN + 1];
    if (cfg->test_user_id)
        snprintf(user, sizeof user, "%s", cfg->test_user_id);
    else
        lr_uuid_v4(user);

    check_env(&r, cfg);
    bool db_ok = false;
    if (!db) {
        line(&r, false, "database", "%s", db_err ? db_err : "cannot open");
    } else if (db->ops->ping(db) != LR_OK) {
        line(&r, false, "database",
             "%s reachable but the tables or functions are missing: "
             "run lensroom migrate",
             db->backend);
    } else {
        db_ok = true;
        line(&r, true, "database",
             "%s reachable; credits, credit_transactions, generations "
             "present",
             db->backend);
    }
    if (db_ok) {
        check_credits(&r, db, user);
        check_generation(&r, db, user);
    } else {
        line(&r, false, "credits functions", "skipped: no database");
        line(&r, false, "generation rows", "skipped: no database");
    }
    if (store)
        check_storage(&r, store, user);
    else
        line(&r, false, "bucket", "%s", store_err ? store_err : "cannot open the storage");
    printf("%s\n", r.failed ? "smoke: FAILED" : "smoke: all checks passed");
    return r.failed ? 1 : 0;
}
