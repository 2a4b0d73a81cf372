/* SQLite backend: WAL, a fixed pool of connections, cached statements.
 *
 * Writers use BEGIN IMMEDIATE so the write lock is taken up front and two
 * reservations for one user serialise instead of deadlocking; the balance
 * guard (amount >= cost in the UPDATE) plus the CHECK constraint keep it
 * from ever going negative. Each connection caches its prepared statements.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "db/db.h"

extern const char lr_sql_sqlite_0001[];
extern const char lr_sql_sqlite_0002[];
extern const char lr_sql_sqlite_0003[];
extern const char lr_sql_sqlite_0004[];

static const struct {
    const char *version;
    const char *sql;
} migrations[] = {{"0001_init", lr_sql_sqlite_0001},
                  {"0002_leases", lr_sql_sqlite_0002},
                  {"0003_deletion", lr_sql_sqlite_0003},
                  {"0004_idempotency", lr_sql_sqlite_0004}};

enum {
    Q_BEGIN,
    Q_COMMIT,
    Q_ROLLBACK,
    Q_DEBIT,
    Q_BALANCE,
    Q_INSERT_GEN,
    Q_INSERT_TX,
    Q_STAGE,
    Q_SETTLE_GEN,
    Q_CREDIT,
    Q_ENSURE_ROW,
    Q_FIND_KEY,
    Q_GET_GEN,
    Q_LIST_GEN,
    Q_LIST_TX,
    Q_KEY_HOLDER,
    Q_KEY_RELEASE,
    Q_MARK_DELETED,
    Q_PENDING_PURGES,
    Q_PURGED,
    Q_RENEW,
    Q_EXPIRED,
    Q_STAGE_TASKS,
    Q_CLAIM,
    Q_COUNT
};

#define GEN_COLUMNS                                                                                \
    "id, user_id, type, model, prompt, status, stage, result_urls, credits_used, outputs_count, "  \
    "succeeded_count, failed_count, provider, provider_task_ids, params, error_code, "            \
    "error_message, duration_ms, created_at, updated_at, finished_at, metadata"

static const char *const sql_text[Q_COUNT] = {
    [Q_BEGIN] = "BEGIN IMMEDIATE",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
    [Q_DEBIT] = "UPDATE credits SET amount = amount - ?1, updated_at = ?3 "
                "WHERE user_id = ?2 AND amount >= ?1 RETURNING amount",
    [Q_BALANCE] = "SELECT amount FROM credits WHERE user_id = ?1",
    [Q_INSERT_GEN] = "INSERT INTO generations (id, user_id, type, model, prompt, status, stage, "
                     "credits_used, outputs_count, provider, params, created_at, updated_at, "
                     "claimed_by, lease_until, idempotency_key, request_hash) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, 'pending', NULL, ?6, ?7, ?8, ?9, ?10, ?10, ?11, "
                     "?12, ?13, ?14)",
    [Q_INSERT_TX] = "INSERT INTO credit_transactions (id, user_id, amount, type, description, "
                    "metadata, generation_id, idempotency_key, created_at) "
                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [Q_STAGE] = "UPDATE generations SET status = ?2, stage = ?3, updated_at = ?4 "
                "WHERE id = ?1 AND status IN ('pending', 'processing')",
    [Q_SETTLE_GEN] = "UPDATE generations SET status = ?2, stage = NULL, result_urls = ?3, "
                     "provider_task_ids = ?4, succeeded_count = ?5, failed_count = ?6, "
                     "credits_used = credits_used - ?7, error_code = ?8, error_message = ?9, "
                     "duration_ms = ?10, updated_at = ?11, finished_at = ?11, storage_keys = ?13, "
                     "metadata = json_set(metadata, '$.text', ?12) "
                     "WHERE id = ?1 AND status IN ('pending', 'processing') RETURNING user_id",
    [Q_CREDIT] = "UPDATE credits SET amount = amount + ?1, updated_at = ?3 WHERE user_id = ?2 "
                 "AND amount + ?1 >= 0 RETURNING amount",
    [Q_ENSURE_ROW] = "INSERT INTO credits (id, user_id, amount, created_at, updated_at) "
                     "VALUES (?1, ?2, 0, ?3, ?3) ON CONFLICT (user_id) DO NOTHING",
    [Q_FIND_KEY] = "SELECT id, amount, type FROM credit_transactions "
                   "WHERE user_id = ?1 AND idempotency_key = ?2",
    [Q_GET_GEN] = "SELECT " GEN_COLUMNS " FROM generations WHERE id = ?1 "
                  "AND (?2 IS NULL OR user_id = ?2) AND deleted_at IS NULL",
    [Q_LIST_GEN] = "SELECT " GEN_COLUMNS " FROM generations WHERE user_id = ?1 "
                   "AND deleted_at IS NULL "
                   "AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR type = ?3) "
                   "AND (?4 IS NULL OR (created_at, id) < (?4, ?5)) "
                   "ORDER BY created_at DESC, id DESC LIMIT ?6",
    [Q_LIST_TX] = "SELECT id, amount, type, description, metadata, generation_id, created_at "
                  "FROM credit_transactions WHERE user_id = ?1 "
                  "AND (?2 IS NULL OR (created_at, id) < (?2, ?3)) "
                  "ORDER BY created_at DESC, id DESC LIMIT ?4",
    [Q_KEY_HOLDER] = "SELECT id, request_hash, created_at < ?3 FROM generations "
                     "WHERE user_id = ?1 AND idempotency_key = ?2",
    [Q_KEY_RELEASE] = "UPDATE generations SET idempotency_key = NULL WHERE id = ?1",
    [Q_MARK_DELETED] = "UPDATE generations SET deleted_at = ?3, updated_at = ?3, "
                       "purge_pending = 1 WHERE id = ?1 AND user_id = ?2 AND deleted_at IS NULL "
                       "AND status NOT IN ('pending', 'processing') RETURNING storage_keys",
    [Q_PENDING_PURGES] = "SELECT id, storage_keys FROM generations WHERE purge_pending = 1 "
                         "LIMIT ?1",
    [Q_PURGED] = "UPDATE generations SET purge_pending = 0 WHERE id = ?1",
    [Q_RENEW] = "UPDATE generations SET lease_until = ?2 WHERE claimed_by = ?1 "
                "AND status IN ('pending', 'processing')",
    [Q_EXPIRED] = "SELECT id, credits_used, outputs_count FROM generations "
                  "WHERE status IN ('pending', 'processing') "
                  "AND (lease_until IS NULL OR lease_until < ?1) "
                  "AND (claimed_by IS NULL OR claimed_by <> ?3) "
                  "AND provider_task_ids = '[]' ORDER BY created_at LIMIT ?2",
    [Q_STAGE_TASKS] = "UPDATE generations SET status = ?2, stage = ?3, updated_at = ?4, "
                      "provider_task_ids = ?5 WHERE id = ?1 AND status IN ('pending', 'processing')",
    [Q_CLAIM] = "UPDATE generations SET claimed_by = ?3, lease_until = ?4 WHERE id IN ("
                "SELECT id FROM generations WHERE status IN ('pending', 'processing') "
                "AND (lease_until IS NULL OR lease_until < ?1) "
                "AND (claimed_by IS NULL OR claimed_by <> ?3) "
                "AND provider_task_ids <> '[]' ORDER BY created_at LIMIT ?2) "
                "RETURNING " GEN_COLUMNS,
};

typedef struct {
    sqlite3 *h;
    sqlite3_stmt *st[Q_COUNT];
} conn;

typedef struct {
    lr_db base;
    conn *conns;
    int n;
    int *free_stack;
    int nfree;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* All writes go through one dedicated connection under a mutex.
     * SQLite allows one writer anyway; its busy handler backs off in
     * milliseconds, and a connection whose cache another connection's
     * write invalidated re-reads its pages, so a single warm writer is much
     * faster than writers taking turns. Other processes (the CLI) still
     * meet busy_timeout. */
    conn writer;
    pthread_mutex_t write_mu;
} sqlite_db;

static conn *acquire_writer(sqlite_db *d);
static void release_writer(sqlite_db *d, conn *c);

static conn *acquire(sqlite_db *d)
{
    pthread_mutex_lock(&d->mu);
    while (d->nfree == 0)
        pthread_cond_wait(&d->cv, &d->mu);
    conn *c = &d->conns[d->free_stack[--d->nfree]];
    pthread_mutex_unlock(&d->mu);
    return c;
}

static void release(sqlite_db *d, conn *c)
{
    pthread_mutex_lock(&d->mu);
    d->free_stack[d->nfree++] = (int)(c - d->conns);
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static conn *acquire_writer(sqlite_db *d)
{
    pthread_mutex_lock(&d->write_mu);
    return &d->writer;
}

static void release_writer(sqlite_db *d, conn *c)
{
    (void)c;
    pthread_mutex_unlock(&d->write_mu);
}

static sqlite3_stmt *stmt(conn *c, int q)
{
    if (!c->st[q]) {
        if (sqlite3_prepare_v3(c->h, sql_text[q], -1, SQLITE_PREPARE_PERSISTENT, &c->st[q],
                               NULL) != SQLITE_OK) {
            lr_error("sqlite prepare failed: %s", sqlite3_errmsg(c->h));
            return NULL;
        }
    }
    return c->st[q];
}

static void done(sqlite3_stmt *s)
{
    if (s) {
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
    }
}

static void bind_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, i);
}

static void bind_json(sqlite3_stmt *s, int i, json_t *v, const char *fallback)
{
    char *t = v ? json_dumps(v, JSON_COMPACT) : NULL;
    sqlite3_bind_text(s, i, t ? t : fallback, -1, SQLITE_TRANSIENT);
    free(t);
}

/* Runs a statement with no result rows; 0 on success. */
static int exec_q(conn *c, int q)
{
    sqlite3_stmt *s = stmt(c, q);
    if (!s)
        return -1;
    int rc = sqlite3_step(s);
    done(s);
    if (rc != SQLITE_DONE) {
        lr_error("sqlite: %s: %s", sql_text[q], sqlite3_errmsg(c->h));
        return -1;
    }
    return 0;
}

static void rollback(conn *c)
{
    if (!sqlite3_get_autocommit(c->h))
        exec_q(c, Q_ROLLBACK);
}

static void now_iso(char out[32])
{
    lr_time_iso(lr_now_ms(), out);
}

static lr_err open_conn(const char *path, conn *c, char **errmsg)
{
    memset(c, 0, sizeof *c);
    int rc = sqlite3_open_v2(path, &c->h,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        if (errmsg && asprintf(errmsg, "cannot open %s: %s", path,
                               c->h ? sqlite3_errmsg(c->h) : sqlite3_errstr(rc)) < 0)
            *errmsg = NULL;
        sqlite3_close(c->h);
        c->h = NULL;
        return LR_ERR_DB;
    }
    sqlite3_busy_timeout(c->h, 10000);
    char *err = NULL;
    if (sqlite3_exec(c->h,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; "
                     "PRAGMA mmap_size=268435456;",
                     NULL, NULL, &err) != SQLITE_OK) {
        if (errmsg && asprintf(errmsg, "cannot configure %s: %s", path, err) < 0)
            *errmsg = NULL;
        sqlite3_free(err);
        return LR_ERR_DB;
    }
    return LR_OK;
}

static lr_err sq_migrate(lr_db *db)
{
    sqlite_db *d = (sqlite_db *)db;
    conn *c = acquire_writer(d);
    lr_err e = LR_OK;
    char *err = NULL;
    if (sqlite3_exec(c->h,
                     "CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, "
                     "applied_at TEXT NOT NULL)",
                     NULL, NULL, &err) != SQLITE_OK)
        goto fail;
    for (size_t i = 0; i < sizeof migrations / sizeof *migrations; i++) {
        if (sqlite3_exec(c->h, "BEGIN IMMEDIATE", NULL, NULL, &err) != SQLITE_OK)
            goto fail;
        sqlite3_stmt *s;
        sqlite3_prepare_v2(c->h, "SELECT 1 FROM schema_migrations WHERE version = ?1", -1, &s,
                           NULL);
        sqlite3_bind_text(s, 1, migrations[i].version, -1, SQLITE_STATIC);
        int seen = sqlite3_step(s) == SQLITE_ROW;
        sqlite3_finalize(s);
        if (!seen) {
            if (sqlite3_exec(c->h, migrations[i].sql, NULL, NULL, &err) != SQLITE_OK)
                goto fail;
            char ts[32];
            now_iso(ts);
            sqlite3_prepare_v2(c->h,
                               "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                               -1, &s, NULL);
            sqlite3_bind_text(s, 1, migrations[i].version, -1, SQLITE_STATIC);
            sqlite3_bind_text(s, 2, ts, -1, SQLITE_TRANSIENT);
            int rc = sqlite3_step(s);
            sqlite3_finalize(s);
            if (rc != SQLITE_DONE)
                goto fail;
            lr_info("migration applied: %s", migrations[i].version);
        }
        if (sqlite3_exec(c->h, "COMMIT", NULL, NULL, &err) != SQLITE_OK)
            goto fail;
    }
    release_writer(d, c);
    return e;
fail:
    lr_error("sqlite migration failed: %s", err ? err : sqlite3_errmsg(c->h));
    sqlite3_free(err);
    rollback(c);
    release_writer(d, c);
    return LR_ERR_DB;
}

static lr_err sq_ping(lr_db *db)
{
    sqlite_db *d = (sqlite_db *)db;
    conn *c = acquire(d);
    int rc = sqlite3_exec(c->h,
                          "SELECT (SELECT 1 FROM credits LIMIT 1), "
                          "(SELECT 1 FROM credit_transactions LIMIT 1), "
                          "(SELECT 1 FROM generations LIMIT 1)",
                          NULL, NULL, NULL);
    release(d, c);
    return rc == SQLITE_OK ? LR_OK : LR_ERR_DB;
}

/* Current balance inside an open transaction (0 when the user has no row). */
static int read_balance(conn *c, const char *user_id, int *balance)
{
    sqlite3_stmt *s = stmt(c, Q_BALANCE);
    if (!s)
        return -1;
    bind_text(s, 1, user_id);
    int rc = sqlite3_step(s);
    *balance = rc == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
    done(s);
    return (rc == SQLITE_ROW || rc == SQLITE_DONE) ? 0 : -1;
}

/* Adds amount (may be negative) to the user's balance unless that would go
 * below zero. 0 done (*balance set), 1 refused or no row, -1 error. */
static int add_credits(conn *c, const char *user_id, int amount, const char *ts, int *balance)
{
    sqlite3_stmt *s = stmt(c, Q_CREDIT);
    if (!s)
        return -1;
    sqlite3_bind_int(s, 1, amount);
    bind_text(s, 2, user_id);
    bind_text(s, 3, ts);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *balance = sqlite3_column_int(s, 0);
    done(s);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? 1 : -1;
}

static int insert_tx(conn *c, const char *user_id, int amount, const char *type,
                     const char *description, json_t *metadata, const char *generation_id,
                     const char *key, const char *ts, char id_out[LR_UUID_LEN + 1])
{
    sqlite3_stmt *s = stmt(c, Q_INSERT_TX);
    if (!s)
        return -1;
    char id[LR_UUID_LEN + 1];
    lr_uuid_v4(id);
    bind_text(s, 1, id);
    bind_text(s, 2, user_id);
    sqlite3_bind_int(s, 3, amount);
    bind_text(s, 4, type);
    bind_text(s, 5, description);
    bind_json(s, 6, metadata, "{}");
    bind_text(s, 7, generation_id);
    bind_text(s, 8, key);
    bind_text(s, 9, ts);
    int rc = sqlite3_step(s);
    done(s);
    if (rc != SQLITE_DONE) {
        lr_error("sqlite ledger insert failed: %s", sqlite3_errmsg(c->h));
        return -1;
    }
    if (id_out)
        memcpy(id_out, id, sizeof id);
    return 0;
}

/* Inside the reserve transaction: 1 when a live generation holds the key
 * (holder filled), 0 when it is free (an expired holder releases it), -1 on
 * error. */
static int check_key(conn *c, const lr_reserve_req *r, lr_key_holder *holder)
{
    sqlite3_stmt *s = stmt(c, Q_KEY_HOLDER);
    if (!s)
        return -1;
    bind_text(s, 1, r->user_id);
    bind_text(s, 2, r->idempotency_key);
    bind_text(s, 3, r->key_expired_before);
    int rc = sqlite3_step(s), held = 0;
    char id[LR_UUID_LEN + 1] = "";
    if (rc == SQLITE_ROW) {
        snprintf(id, sizeof id, "%s", (const char *)sqlite3_column_text(s, 0));
        const unsigned char *h = sqlite3_column_text(s, 1);
        bool expired = sqlite3_column_int(s, 2) != 0;
        if (!expired) {
            held = 1;
            memcpy(holder->generation_id, id, sizeof id);
            holder->same_request = h && r->request_hash && !strcmp((const char *)h, r->request_hash);
        }
    }
    done(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return -1;
    if (rc == SQLITE_ROW && !held) {
        s = stmt(c, Q_KEY_RELEASE);
        if (!s)
            return -1;
        bind_text(s, 1, id);
        rc = sqlite3_step(s);
        done(s);
        if (rc != SQLITE_DONE)
            return -1;
    }
    return held;
}

static lr_err sq_reserve(lr_db *db, const lr_reserve_req *r, int *balance, lr_key_holder *holder)
{
    sqlite_db *d = (sqlite_db *)db;
    conn *c = acquire_writer(d);
    lr_err e = LR_ERR_DB;
    if (exec_q(c, Q_BEGIN) != 0)
        goto out;
    if (r->idempotency_key) {
        int held = check_key(c, r, holder);
        if (held < 0)
            goto fail;
        if (held) {
            e = LR_ERR_CONFLICT;
            goto fail;
        }
    }
    sqlite3_stmt *s = stmt(c, Q_DEBIT);
    if (!s)
        goto fail;
    sqlite3_bind_int(s, 1, r->cost);
    bind_text(s, 2, r->user_id);
    bind_text(s, 3, r->created_at);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *balance = sqlite3_column_int(s, 0);
        rc = sqlite3_step(s);
    }
    int debited = sqlite3_changes(c->h) > 0;
    done(s);
    if (rc != SQLITE_DONE)
        goto fail;
    if (!debited) {
        if (read_balance(c, r->user_id, balance) != 0)
            goto fail;
        e = LR_ERR_INSUFFICIENT;
        goto fail;
    }
    s = stmt(c, Q_INSERT_GEN);
    if (!s)
        goto fail;
    bind_text(s, 1, r->generation_id);
    bind_text(s, 2, r->user_id);
    bind_text(s, 3, r->type);
    bind_text(s, 4, r->model);
    bind_text(s, 5, r->prompt);
    sqlite3_bind_int(s, 6, r->cost);
    sqlite3_bind_int(s, 7, r->outputs_count);
    bind_text(s, 8, r->provider);
    bind_json(s, 9, r->params, "{}");
    bind_text(s, 10, r->created_at);
    bind_text(s, 11, r->owner);
    bind_text(s, 12, r->lease_until);
    bind_text(s, 13, r->idempotency_key);
    bind_text(s, 14, r->request_hash);
    rc = sqlite3_step(s);
    done(s);
    if (rc != SQLITE_DONE)
        goto fail;
    char desc[160];
    snprintf(desc, sizeof desc, "Generation: %s x%d", r->model, r->outputs_count);
    json_t *meta = json_pack("{s:s, s:i}", "model", r->model, "outputs", r->outputs_count);
    int txrc = insert_tx(c, r->user_id, -r->cost, "generation", desc, meta, r->generation_id, NULL,
                         r->created_at, NULL);
    json_decref(meta);
    if (txrc != 0)
        goto fail;
    if (exec_q(c, Q_COMMIT) != 0)
        goto fail;
    release_writer(d, c);
    return LR_OK;
fail:
    rollback(c);
out:
    release_writer(d, c);
    return e;
}

static lr_err sq_set_stage(lr_db *db, const char *id, const char *status, const char *stage,
                           json_t *task_ids)
{
    sqlite_db *d = (sqlite_db *)db;
    conn *c = acquire_writer(d);
    sqlite3_stmt *s = stmt(c, task_ids ? Q_STAGE_TASKS : Q_STAGE);
    lr_err e = LR_ERR_DB;
    if (s) {
        char ts[32];
        now_iso(ts);
        bind_text(s, 1, id);
        bind_text(s, 2, status);
        bind_text(s, 3, stage);
        bind_text(s, 4, ts);
        if (task_ids)
            bind_json(s, 5, task_ids, "[]");
        int rc = sqlite3_step(s);
        int changed = sqlite3_changes(c->h);
        done(s);
        e = rc != SQLITE_DONE ? LR_ERR_DB : changed ? LR_OK : LR_ERR_CONFLICT;
    }
    release_writer(d, c);
    return e;
}

static lr_err sq_settle(lr_db *db, const lr_settle_req *q, int *balance)
{
    sqlite_db *d = (sqlite_db *)db;
    conn *c = acquire_writer(d);
    lr_err e = LR_ERR_DB;
    char ts[32];
    now_iso(ts);
    if (exec_q(c, Q_BEGIN) != 0)
        goto out;
    sqlite3_stmt *s = stmt(c, Q_SETTLE_GEN);
    if (!s)
        goto fail;
    bind_text(s, 1, q->generation_id);
    bind_text(s, 2, q->status);
    bind_json(s, 3, q->result_urls, "[]");
    bind_json(s, 4, q->task_ids, "[]");
    sqlite3_bind_int(s, 5, q->succeeded_count);
    sqlite3_bind_int(s, 6, q->failed_count);
    sqlite3_bind_int(s, 7, q->refund);
    bind_text(s, 8, q->error_code);
    bind_text(s, 9, q->error_message);
    sqlite3_bind_int64(s, 10, q->duration_ms);
    bind_text(s, 11, ts);
    bind_text(s, 12, q->text);
    bind_json(s, 13, q->storage_keys, "[]");
    int rc = sqlite3_step(s);
    char user[LR_UUID_LEN + 1] = "";
    if (rc == SQLITE_ROW) {
        snprintf(user, sizeof user, "%s", (const char *)sqlite3_column_text(s, 0));
        rc = sqlite3_step(s);
    }
    done(s);
    if (rc != SQLITE_DONE)
        goto fail;
    if (!user[0]) {
        e = LR_ERR_CONFLICT; /* already final: settling twice changes nothing */
        goto fail;
    }
    if (q->refund > 0) {
        char desc[160];
        snprintf(desc, sizeof desc, "Refund: %s", q->error_code ? q->error_code : "failed");
        json_t *meta = json_pack("{s:i, s:s*}", "failed_outputs", q->failed_count, "error",
                                 q->error_message);
        int txrc = insert_tx(c, user, q->refund, "refund", desc, meta, q->generation_id, NULL, ts,
                             NULL);
        json_decref(meta);
        if (txrc != 0)
            goto fail;
        if (add_credits(c, user, q->refund, ts, balance) != 0)
            goto fail;
    } else if (read_balance(c, user, balance) != 0) {
        goto fail;
    }
    if (exec_q(c, Q_COMMIT) != 0)
        goto fail;
    release_writer(d, c);
    return LR_OK;
fail:
    rollback(c);
out:
    release_writer(d, c);
    return e;
}

static lr_err sq_balance(lr_db *db, const char *user_id, int *balance)
{
    sqlite_db *d = (sqlite_db *)db;
    conn *c = acquire(d);
    int rc = read_balance(c, user_id, balance);
    release(d, c);
    return rc == 0 ? LR_OK : LR_ERR_DB;
}

static lr_err sq_adjust(lr_db *db, const lr_adjust_req *r, lr_adjust_result *out)
{
    sqlite_db *d = (sqlite_db *)db;
    conn *c = acquire_writer(d);
    lr_err e = LR_ERR_DB;
    char ts[32];
    now_iso(ts);
    memset(out, 0, sizeof *out);
    if (exec_q(c, Q_BEGIN) != 0)
        goto out;
    sqlite3_stmt *s;
    if (r->idempotency_key) {
        s = stmt(c, Q_FIND_KEY);
        if (!s)
            goto fail;
        bind_text(s, 1, r->user_id);
        bind_text(s, 2, r->idempotency_key);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            int same = sqlite3_column_int(s, 1) == r->amount &&
                       !strcmp((const char *)sqlite3_column_text(s, 2), r->type);
            snprintf(out->transaction_id, sizeof out->transaction_id, "%s",
                     (const char *)sqlite3_column_text(s, 0));
            done(s);
            if (!same) {
                e = LR_ERR_CONFLICT;
                goto fail;
            }
            out->replayed = true;
            if (read_balance(c, r->user_id, &out->new_balance) != 0)
                goto fail;
            exec_q(c, Q_COMMIT);
            release_writer(d, c);
            return LR_OK;
        }
        done(s);
        if (rc != SQLITE_DONE)
            goto fail;
    }
    s = stmt(c, Q_ENSURE_ROW);
    if (!s)
        goto fail;
    char id[LR_UUID_LEN + 1];
    lr_uuid_v4(id);
    bind_text(s, 1, id);
    bind_text(s, 2, r->user_id);
    bind_text(s, 3, ts);
    int rc = sqlite3_step(s);
    done(s);
    if (rc != SQLITE_DONE)
        goto fail;
    int added = add_credits(c, r->user_id, r->amount, ts, &out->new_balance);
    if (added != 0) {
        if (added == 1 && read_balance(c, r->user_id, &out->new_balance) == 0)
            e = LR_ERR_INSUFFICIENT;
        goto fail;
    }
    if (insert_tx(c, r->user_id, r->amount, r->type, r->description, r->metadata, NULL,
                  r->idempotency_key, ts, out->transaction_id) != 0)
        goto fail;
    if (exec_q(c, Q_COMMIT) != 0)
        goto fail;
    release_writer(d, c);
    return LR_OK;
fail:
    rollback(c);
out:
    release_writer(d, c);
    return e;
}

static json_t *col_text(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? json_string((const char *)t) : json_null();
}

static json_t *col_json(sqlite3_stmt *s, int i, json_t *(*fallback)(void))
{
    const unsigned char *t = sqlite3_column_text(s, i);
    json_t *j = t ? json_loads((const char *)t, 0, NULL) : NULL;
    return j ? j : fallback();
}

static json_t *generation_row(sqlite3_stmt *s)
{
    json_t *g = json_object();
    json_t *urls = col_json(s, 7, json_array);
    json_object_set_new(g, "id", col_text(s, 0));
    json_object_set_new(g, "userId", col_text(s, 1));
    json_object_set_new(g, "type", col_text(s, 2));
    json_object_set_new(g, "modelId", col_text(s, 3));
    json_object_set_new(g, "prompt", col_text(s, 4));
    json_object_set_new(g, "status", col_text(s, 5));
    json_object_set_new(g, "stage", col_text(s, 6));
    json_object_set_new(g, "url", json_incref(json_array_size(urls) ? json_array_get(urls, 0)
                                                                      : json_null()));
    json_object_set_new(g, "resultUrls", urls);
    json_object_set_new(g, "creditsUsed", json_integer(sqlite3_column_int(s, 8)));
    json_object_set_new(g, "outputsCount", json_integer(sqlite3_column_int(s, 9)));
    json_object_set_new(g, "succeededCount", json_integer(sqlite3_column_int(s, 10)));
    json_object_set_new(g, "failedCount", json_integer(sqlite3_column_int(s, 11)));
    json_object_set_new(g, "provider", col_text(s, 12));
    json_object_set_new(g, "taskIds", col_json(s, 13, json_array));
    json_object_set_new(g, "params", col_json(s, 14, json_object));
    if (sqlite3_column_type(s, 15) != SQLITE_NULL)
        json_object_set_new(g, "error", json_pack("{s:o, s:o}", "code", col_text(s, 15),
                                                  "message", col_text(s, 16)));
    else
        json_object_set_new(g, "error", json_null());
    json_object_set_new(g, "durationMs", sqlite3_column_type(s, 17) == SQLITE_NULL
                                             ? json_null()
                                             : json_integer(sqlite3_column_int64(s, 17)));
    json_object_set_new(g, "createdAt", col_text(s, 18));
    json_object_set_new(g, "updatedAt", col_text(s, 19));
    json_object_set_new(g, "finishedAt", col_text(s, 20));
    json_t *meta = col_json(s, 21, json_object);
    json_t *text = json_object_get(meta, "text");
    json_object_set(g, "text", json_is_string(text) ? text : json_null());
    json_decref(meta);
    return g;
}

/* Steps s to the end, one JSON value per row; resets s. */
static lr_err collect(sqlite3_stmt *s, json_t *(*row)(sqlite3_stmt *), json_t **out)
{
    json_t *arr = json_array();
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        json_array_append_new(arr, row(s));
    done(s);
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return LR_ERR_DB;
    }
    *out = arr;
    return LR_OK;
}

static json_t *transaction_row(sqlite3_stmt *s)
{
    json_t *t = json_object();
    json_object_set_new(t, "id", col_text(s, 0));
    json_object_set_new(t, "amount", json_integer(sqlite3_column_int(s, 1)));
    json_object_set_new(t, "type", col_text(s, 2));
    json_object_set_new(t, "description", col_text(s, 3));
    json_object_set_new(t, "metadata", col_json(s, 4, json_object));
    json_object_set_new(t, "generationId", col_text(s, 5));
    json_object_set_new(t, "createdAt", col_text(s, 6));
    return t;
}

static json_t *purge_row(sqlite3_stmt *s)
{
    return json_pack("{s:o, s:o}", "id", col_text(s, 0), "keys", col_json(s, 1, json_array));
}

static json_t *expired_row(sqlite3_stmt *s)
{
    return json_pack("{s:o, s:i, s:i}", "id", col_text(s, 0), "creditsUsed",
                     sqlite3_column_int(s, 1), "outputsCount", sqlite3_column_int(s, 2));
}

static lr_err sq_get_generation(lr_db *db, const char *user_id, const char *id, json_t **out)
{
    sqlite_db *d = (sqlite_db *)db;
    conn *c = acquire(d);
    sqlite3_stmt *s = stmt(c, Q_GET_GEN);
    lr_err e = LR_ERR_DB;
    if (s) {
        bind_text(s, 1, id);
        bind_text(s, 2, user_id);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            *out = generation_row(s);
            e = LR_OK;
        } else if (rc == SQLITE_DONE) {
            e = LR_ERR_NOT_FOUND;
        }
        done(s);
    }
    release(d, c);
    return e;
}

static lr_err sq_list_generations(lr_db *db, const char *user_id, const lr_gen_filter *f,
                                  json_t **out)
{
    sqlite_db *d = (sqlite_db *)db;
    conn *c = acquire(d);
    sqlite3_stmt *s = stmt(c, Q_LIST_GEN);
    lr_err e = LR_ERR_DB;
    if (s) {
        bind_text(s, 1, user_id);
        bind_text(s, 2, f->status);
        bind_text(s, 3, f->type);
        bind_text(s, 4, f->before_created_at);
        bind_text(s, 5, f->before_id);
        sqlite3_bind_int(s, 6, f->limit);
        e = collect(s, generation_row, out);
    }
    release(d, c);
    return e;
}

static lr_err sq_list_transactions(lr_db *db, const char *user_id, const char *before_created_at,
                                   const char *before_id, int limit, json_t **out)
{
    sqlite_db *d = (sqlite_db *)db;
    conn *c = acquire(d);
    sqlite3_stmt *s = stmt(c, Q_LIST_TX);
    lr_err e = LR_ERR_DB;
    if (s) {
        bind_text(s, 1, user_id);
        bind_text(s, 2, before_created_at);
        bind_text(s, 3, before_id);
        sqlite3_bind_int(s, 4, limit);
        e = collect(s, transaction_row, out);
    }
    release(d, c);
    return e;
}

static lr_err sq_mark_deleted(lr_db *db, const char *user_id, const char *id, json_t **keys)
{
    sqlite_db *d = (sqlite_db *)db;
    char ts[32];
    now_iso(ts);
    conn *c = acquire_writer(d);
    sqlite3_stmt *s = stmt(c, Q_MARK_DELETED);
    lr_err e = LR_ERR_DB;
    if (s) {
        bind_text(s, 1, id);
        bind_text(s, 2, user_id);
        bind_text(s, 3, ts);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            *keys = col_json(s, 0, json_array);
            e = LR_OK;
        } else if (rc == SQLITE_DONE) {
            e = LR_ERR_NOT_FOUND;
        }
        done(s);
    }
    release_writer(d, c);
    if (e == LR_ERR_NOT_FOUND) {
        /* Tell "still running" apart from "not yours / gone". */
        json_t *g = NULL;
        if (sq_get_generation(db, user_id, id, &g) == LR_OK) {
            const char *st = json_string_value(json_object_get(g, "status"));
            if (st && (!strcmp(st, "pending") || !strcmp(st, "processing")))
                e = LR_ERR_CONFLICT;
            json_decref(g);
        }
    }
    return e;
}

static lr_err sq_pending_purges(lr_db *db, int limit, json_t **rows)
{
    sqlite_db *d = (sqlite_db *)db;
    conn *c = acquire(d);
    sqlite3_stmt *s = stmt(c, Q_PENDING_PURGES);
    lr_err e = LR_ERR_DB;
    if (s) {
        sqlite3_bind_int(s, 1, limit);
        e = collect(s, purge_row, rows);
    }
    release(d, c);
    return e;
}

static lr_err sq_purged(lr_db *db, const char *id)
{
    sqlite_db *d = (sqlite_db *)db;
    conn *c = acquire_writer(d);
    sqlite3_stmt *s = stmt(c, Q_PURGED);
    lr_err e = LR_ERR_DB;
    if (s) {
        bind_text(s, 1, id);
        e = sqlite3_step(s) == SQLITE_DONE ? LR_OK : LR_ERR_DB;
        done(s);
    }
    release_writer(d, c);
    return e;
}

static lr_err sq_renew_leases(lr_db *db, const char *owner, const char *lease_until)
{
    sqlite_db *d = (sqlite_db *)db;
    conn *c = acquire_writer(d);
    sqlite3_stmt *s = stmt(c, Q_RENEW);
    lr_err e = LR_ERR_DB;
    if (s) {
        bind_text(s, 1, owner);
        bind_text(s, 2, lease_until);
        e = sqlite3_step(s) == SQLITE_DONE ? LR_OK : LR_ERR_DB;
        done(s);
    }
    release_writer(d, c);
    return e;
}

/* Expired rows are read first, then each is settled in its own
 * transaction; settle's status guard makes a race with another reaper (or
 * a late owner) harmless: the loser changes nothing. */
static lr_err sq_reap_expired(lr_db *db, const char *owner, int limit, json_t **reaped)
{
    sqlite_db *d = (sqlite_db *)db;
    char now[32];
    now_iso(now);
    conn *c = acquire(d);
    sqlite3_stmt *s = stmt(c, Q_EXPIRED);
    json_t *rows = NULL;
    lr_err e = LR_ERR_DB;
    if (s) {
        bind_text(s, 1, now);
        sqlite3_bind_int(s, 2, limit);
        bind_text(s, 3, owner);
        e = collect(s, expired_row, &rows);
    }
    release(d, c);
    if (e != LR_OK)
        return e;
    json_t *out = json_array();
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        int refund = (int)json_integer_value(json_object_get(row, "creditsUsed"));
        lr_settle_req q = {
            .generation_id = json_string_value(json_object_get(row, "id")),
            .status = "failed",
            .failed_count = (int)json_integer_value(json_object_get(row, "outputsCount")),
            .refund = refund,
            .error_code = "interrupted",
            .error_message = "The server running this generation stopped before it finished; "
                             "the credits were refunded",
        };
        int balance;
        if (sq_settle(db, &q, &balance) == LR_OK)
            json_array_append_new(out, json_pack("{s:O, s:i}", "id", json_object_get(row, "id"),
                                                 "refund", refund));
    }
    json_decref(rows);
    *reaped = out;
    return LR_OK;
}

static lr_err sq_claim_resumable(lr_db *db, const char *owner, const char *lease_until,
                                 int limit, json_t **rows)
{
    sqlite_db *d = (sqlite_db *)db;
    char now[32];
    now_iso(now);
    conn *c = acquire_writer(d);
    sqlite3_stmt *s = stmt(c, Q_CLAIM);
    lr_err e = LR_ERR_DB;
    if (s) {
        bind_text(s, 1, now);
        sqlite3_bind_int(s, 2, limit);
        bind_text(s, 3, owner);
        bind_text(s, 4, lease_until);
        e = collect(s, generation_row, rows);
    }
    release_writer(d, c);
    return e;
}

static json_t *audit_row(sqlite3_stmt *s)
{
    return json_pack("{s:o, s:o, s:o}", "kind", col_text(s, 0), "subject", col_text(s, 1),
                     "detail", col_text(s, 2));
}

static lr_err sq_audit(lr_db *db, json_t **violations)
{
    sqlite_db *d = (sqlite_db *)db;
    conn *c = acquire(d);
    sqlite3_stmt *s = NULL;
    lr_err e = LR_ERR_DB;
    if (sqlite3_prepare_v2(c->h, lr_sql_audit, -1, &s, NULL) == SQLITE_OK)
        e = collect(s, audit_row, violations);
    else
        lr_error("sqlite audit: %s", sqlite3_errmsg(c->h));
    sqlite3_finalize(s);
    release(d, c);
    return e;
}

static void close_conn(conn *c)
{
    for (int q = 0; q < Q_COUNT; q++)
        sqlite3_finalize(c->st[q]);
    sqlite3_close(c->h);
}

static void sq_close(lr_db *db)
{
    sqlite_db *d = (sqlite_db *)db;
    for (int i = 0; i < d->n; i++)
        close_conn(&d->conns[i]);
    close_conn(&d->writer);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->write_mu);
    free(d->conns);
    free(d->free_stack);
    free(d);
}

static const lr_db_ops sqlite_ops = {
    .migrate = sq_migrate,
    .ping = sq_ping,
    .reserve = sq_reserve,
    .set_stage = sq_set_stage,
    .settle = sq_settle,
    .balance = sq_balance,
    .adjust = sq_adjust,
    .get_generation = sq_get_generation,
    .list_generations = sq_list_generations,
    .list_transactions = sq_list_transactions,
    .mark_deleted = sq_mark_deleted,
    .pending_purges = sq_pending_purges,
    .purged = sq_purged,
    .renew_leases = sq_renew_leases,
    .claim_resumable = sq_claim_resumable,
    .reap_expired = sq_reap_expired,
    .audit = sq_audit,
    .close = sq_close,
};

lr_err lr_db_sqlite_open(const char *path, int pool_size, lr_db **out, char **errmsg)
{
    sqlite_db *d = calloc(1, sizeof *d);
    if (!d)
        return LR_ERR_NOMEM;
    d->base.ops = &sqlite_ops;
    d->base.backend = "sqlite";
    d->conns = calloc((size_t)pool_size, sizeof *d->conns);
    d->free_stack = calloc((size_t)pool_size, sizeof *d->free_stack);
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    pthread_mutex_init(&d->write_mu, NULL);
    if (!d->conns || !d->free_stack) {
        sq_close(&d->base);
        return LR_ERR_NOMEM;
    }
    lr_err we = open_conn(path, &d->writer, errmsg);
    if (we != LR_OK) {
        sq_close(&d->base);
        return we;
    }
    for (int i = 0; i < pool_size; i++) {
        lr_err e = open_conn(path, &d->conns[i], errmsg);
        d->n = i + 1;
        if (e != LR_OK) {
            sq_close(&d->base);
            return e;
        }
        d->free_stack[d->nfree++] = i;
    }
    *out = &d->base;
    return LR_OK;
}
