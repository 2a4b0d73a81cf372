/* SQLite backend: WAL, a pool of reader connections, one writer thread,
 * one checkpoint thread.
 *
 * Every write goes through the group commit of batch.h: a dedicated
 * writer thread owns the one write connection and runs all writes that
 * queued up during its previous commit in ONE transaction (BEGIN
 * IMMEDIATE ... COMMIT), each inside its own SAVEPOINT, so one request's
 * failure (short balance, taken idempotency key, already settled, even a
 * constraint error) is rolled back alone and answered alone while the
 * others commit. The write connection runs with synchronous=FULL: the WAL
 * is fsynced at every COMMIT, before any caller of the batch is answered,
 * so every acknowledged charge and generation survives a crash or power
 * loss; batching is what makes that affordable (one fsync per batch).
 * Reads run on their own pooled connections and see the last commit (WAL).
 * The WAL is copied into the database file by the checkpoint thread, so no
 * batch waits for that copy.
 * The balance guard (amount >= cost in the UPDATE) plus the CHECK
 * constraint keep a balance from ever going negative. Each connection
 * caches its prepared statements.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "core/vocab.h"
#include "db/batch.h"
#include "db/db.h"
#include "db/rows.h"

extern const char lr_sql_sqlite_0001[];
extern const char lr_sql_sqlite_0002[];
extern const char lr_sql_sqlite_0003[];
extern const char lr_sql_sqlite_0004[];
extern const char lr_sql_sqlite_0005[];
extern const char lr_sql_sqlite_0006_admin[];
extern const char lr_sql_sqlite_0007[];
extern const char lr_sql_sqlite_0008_admin_links[];
extern const char lr_sql_sqlite_0010_previews[];
extern const char lr_sql_sqlite_0013_heartbeats[];
extern const char lr_sql_sqlite_0009_run_exec[];
extern const char lr_sql_sqlite_0011_rollups[];
extern const char lr_sql_sqlite_0012_ops[];
extern const char lr_sql_sqlite_0014_lean_indexes[];

static const struct {
    const char *version;
    const char *sql;
} migrations[] = {{"0001_init", lr_sql_sqlite_0001},
                  {"0002_leases", lr_sql_sqlite_0002},
                  {"0003_deletion", lr_sql_sqlite_0003},
                  {"0004_idempotency", lr_sql_sqlite_0004},
                  {"0005_billing", lr_sql_sqlite_0005},
                  {"0006_admin", lr_sql_sqlite_0006_admin},
                  {"0007_runs", lr_sql_sqlite_0007},
                  {"0008_admin_links", lr_sql_sqlite_0008_admin_links},
                  {"0009_run_exec", lr_sql_sqlite_0009_run_exec},
                  {"0010_previews", lr_sql_sqlite_0010_previews},
                  {"0011_rollups", lr_sql_sqlite_0011_rollups},
                  {"0012_ops", lr_sql_sqlite_0012_ops},
                  {"0013_heartbeats", lr_sql_sqlite_0013_heartbeats},
                  {"0014_lean_indexes", lr_sql_sqlite_0014_lean_indexes}};

/* Readiness (db/admin.c) checks that the newest one is applied. */
const char *lr_db_sqlite_latest_migration(void)
{
    return migrations[sizeof migrations / sizeof *migrations - 1].version;
}

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
    Q_BEAT,
    Q_BEATS_GONE,
    Q_RENEW,
    Q_EXPIRED,
    Q_STAGE_TASKS,
    Q_CLAIM,
    Q_AUDIT,
    Q_MIGRATION_SEEN,
    Q_MIGRATION_RECORD,
    Q_PING,
    Q_SAVEPOINT,
    Q_ROLLBACK_TO,
    Q_RELEASE,
    Q_SAVE_QUOTE,
    Q_PURGE_QUOTES,
    Q_GET_QUOTE,
    Q_PREVIEW_CLAIM,
    Q_PREVIEW_PENDING,
    Q_PREVIEW_FINISH,
    Q_RUN_KEY,
    Q_INSERT_RUN,
    Q_INSERT_NODE,
    Q_INSERT_RUN_TX,
    Q_GET_RUN,
    Q_RUN_NODES,
    Q_START_NODE,
    Q_FINISH_RUN,
    Q_RENEW_RUNS,
    Q_CLAIM_RUNS,
    Q_CLAIM_RUN_NODES,
    Q_INSERT_CACHED_NODE,
    Q_FIND_CACHED,
    Q_OUTBOX,
    Q_COUNT
};

/* The join and condition that pick, after "FROM <table> x", the rows
 * abandoned for owner ?3 at time ?1: claimed by another process whose
 * heartbeat ended (counted only when the parameter dead is 1) or, for a
 * claimer with no heartbeat row (it released its work, or predates the
 * heartbeats), whose row lease ran out. PostgreSQL states the same rule
 * as lensroom.abandoned (its migration 0013). */
#define ABANDONED(dead)                                                                            \
    "LEFT JOIN instances i ON i.owner = x.claimed_by "                                             \
    "WHERE (x.claimed_by IS NULL OR x.claimed_by <> ?3) "                                          \
    "AND CASE WHEN i.alive_until IS NULL THEN x.lease_until IS NULL OR x.lease_until < ?1 "        \
    "ELSE " dead " AND i.alive_until <= ?1 END "

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
    [Q_GET_GEN] = "SELECT " LR_SQLITE_GEN_COLUMNS " FROM generations WHERE id = ?1 "
                  "AND (?2 IS NULL OR user_id = ?2) AND deleted_at IS NULL",
    [Q_LIST_GEN] = "SELECT " LR_SQLITE_GEN_COLUMNS " FROM generations WHERE user_id = ?1 "
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
    [Q_BEAT] = "INSERT INTO instances (owner, alive_until) VALUES (?1, ?2) "
               "ON CONFLICT (owner) DO UPDATE SET alive_until = excluded.alive_until",
    [Q_BEATS_GONE] = "DELETE FROM instances WHERE (owner <> ?1 AND alive_until < ?2) "
                     "OR (owner = ?1 AND alive_until <= ?3)",
    [Q_RENEW] = "UPDATE generations SET lease_until = ?2 WHERE ?2 <= ?3 AND claimed_by = ?1 "
                "AND status IN ('pending', 'processing')",
    [Q_EXPIRED] = "SELECT x.id, x.credits_used, x.outputs_count FROM generations x " ABANDONED(
        "?4") "AND x.status IN ('pending', 'processing') "
              "AND x.provider_task_ids = '[]' AND x.run_id IS NULL LIMIT ?2",
    [Q_STAGE_TASKS] =
        "UPDATE generations SET status = ?2, stage = ?3, updated_at = ?4, "
        "provider_task_ids = ?5 WHERE id = ?1 AND status IN ('pending', 'processing')",
    [Q_CLAIM] = "UPDATE generations SET claimed_by = ?3, lease_until = ?4 WHERE id IN ("
                "SELECT x.id FROM generations x " ABANDONED(
                    "?5") "AND x.status IN ('pending', 'processing') "
                          "AND x.provider_task_ids <> '[]' AND x.run_id IS NULL "
                          "LIMIT ?2) "
                          "RETURNING " LR_SQLITE_GEN_COLUMNS,
    [Q_AUDIT] = lr_sql_audit,
    [Q_MIGRATION_SEEN] = "SELECT 1 FROM schema_migrations WHERE version = ?1",
    [Q_MIGRATION_RECORD] = "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
    [Q_PING] = "SELECT (SELECT 1 FROM credits LIMIT 1), "
               "(SELECT 1 FROM credit_transactions LIMIT 1), (SELECT 1 FROM generations LIMIT 1)",
    [Q_SAVEPOINT] = "SAVEPOINT job",
    [Q_ROLLBACK_TO] = "ROLLBACK TO job",
    [Q_RELEASE] = "RELEASE job",
    [Q_SAVE_QUOTE] = "INSERT INTO quotes (id, user_id, lines, total, created_at, expires_at) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [Q_PURGE_QUOTES] = "DELETE FROM quotes WHERE expires_at < ?1",
    [Q_GET_QUOTE] = "SELECT lines, total, expires_at < ?3 FROM quotes "
                    "WHERE id = ?1 AND user_id = ?2",
    [Q_PREVIEW_CLAIM] = "UPDATE generations SET preview_status = 'processing' WHERE id = ?1 "
                        "AND status = 'success' AND type IN ('photo', 'video', 'edit') "
                        "AND deleted_at IS NULL AND preview_status IN ('none', 'processing') "
                        "RETURNING storage_keys",
    /* The first line is generations_preview_pending's own condition, so
     * the queue is read from that small index. */
    [Q_PREVIEW_PENDING] = "SELECT id FROM generations WHERE status = 'success' "
                          "AND type IN ('photo', 'video', 'edit') "
                          "AND preview_status IN ('none', 'processing') AND deleted_at IS NULL "
                          "AND (preview_status = 'processing' "
                          "OR (preview_status = 'none' AND finished_at > ?1)) "
                          "ORDER BY finished_at LIMIT ?2",
    [Q_PREVIEW_FINISH] =
        "UPDATE generations SET preview_status = ?2, poster_path = ?3, preview_path = ?4, "
        "metadata = json_set(metadata, '$.preview', json(?5)), "
        "storage_keys = (SELECT json_group_array(value) FROM (SELECT value FROM "
        "json_each(generations.storage_keys) UNION SELECT value FROM json_each(?6))) "
        "WHERE id = ?1 AND preview_status = 'processing' AND deleted_at IS NULL RETURNING id",
    [Q_RUN_KEY] = "SELECT id, request_hash FROM runs WHERE user_id = ?1 AND idempotency_key = ?2",
    [Q_INSERT_RUN] = "INSERT INTO runs (id, user_id, status, graph, quoted, idempotency_key, "
                     "request_hash, claimed_by, lease_until, created_at, updated_at) "
                     "VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
    [Q_INSERT_NODE] = "INSERT INTO generations (id, user_id, type, model, prompt, status, "
                      "credits_used, outputs_count, provider, params, created_at, updated_at, "
                      "claimed_by, lease_until, run_id, node_id, run_cost, cache_key) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, "
                      "?13, ?14, ?6, ?15)",
    [Q_INSERT_RUN_TX] = "INSERT INTO credit_transactions (id, user_id, amount, type, description, "
                        "metadata, run_id, created_at) "
                        "VALUES (?1, ?2, ?3, 'generation', ?4, ?5, ?6, ?7)",
    [Q_GET_RUN] = "SELECT " LR_SQLITE_RUN_COLUMNS " FROM runs WHERE id = ?1 "
                  "AND (?2 IS NULL OR user_id = ?2)",
    [Q_RUN_NODES] = "SELECT " LR_SQLITE_NODE_COLUMNS " FROM generations g WHERE g.run_id = ?1 "
                    "ORDER BY g.rowid",
    [Q_START_NODE] = "UPDATE generations SET status = 'processing', prompt = ?2, updated_at = ?3, "
                     "metadata = CASE WHEN ?4 IS NULL THEN metadata "
                     "ELSE json_set(metadata, '$.image_url', ?4) END "
                     "WHERE id = ?1 AND status = 'pending'",
    [Q_FINISH_RUN] = "UPDATE runs SET status = ?2, error_node = ?3, error_code = ?4, "
                     "error_message = ?5, updated_at = ?6, finished_at = ?6, lease_until = NULL "
                     "WHERE id = ?1 AND status = 'running'",
    [Q_RENEW_RUNS] = "UPDATE runs SET lease_until = ?2 WHERE ?2 <= ?3 AND claimed_by = ?1 "
                     "AND status = 'running'",
    [Q_CLAIM_RUNS] = "UPDATE runs SET claimed_by = ?3, lease_until = ?4 WHERE id IN ("
                     "SELECT x.id FROM runs x " ABANDONED("?5") "AND x.status = 'running' "
                                                                "ORDER BY x.created_at LIMIT ?2) "
                                                                "RETURNING id",
    [Q_CLAIM_RUN_NODES] = "UPDATE generations SET claimed_by = ?2, lease_until = ?3 "
                          "WHERE run_id = ?1 AND status IN ('pending', 'processing')",
    [Q_INSERT_CACHED_NODE] =
        "INSERT INTO generations (id, user_id, type, model, prompt, status, credits_used, "
        "outputs_count, succeeded_count, provider, params, result_urls, metadata, created_at, "
        "updated_at, finished_at, duration_ms, run_id, node_id, run_cost, cache_key) "
        "VALUES (?1, ?2, ?3, ?4, ?5, 'success', 0, ?6, ?6, ?7, ?8, ?9, "
        "json_object('cached_from', ?10, 'text', ?11), ?12, ?12, ?12, 0, ?13, ?14, 0, ?15)",
    [Q_FIND_CACHED] = "SELECT " LR_SQLITE_NODE_COLUMNS " FROM generations g "
                      "WHERE g.user_id = ?1 AND g.cache_key = ?2 AND g.status = 'success' "
                      "AND g.succeeded_count = g.outputs_count AND g.deleted_at IS NULL "
                      "AND (?3 IS NULL OR g.run_id = ?3) ORDER BY g.created_at DESC LIMIT 1",
    /* The webhook outbox (db/billing.h): only when a webhook wants it. */
    [Q_OUTBOX] = "INSERT INTO webhook_outbox (generation_id, user_id, event_type, created_at) "
                 "SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM webhook_endpoints "
                 "WHERE ',' || events || ',' LIKE '%,' || ?3 || ',%' "
                 "OR ',' || events || ',' LIKE '%,credits.low,%') "
                 "OR EXISTS (SELECT 1 FROM generation_webhooks WHERE generation_id = ?1) "
                 "ON CONFLICT (generation_id) DO NOTHING",
};

typedef struct {
    sqlite3 *h;
    sqlite3_stmt *st[Q_COUNT];
} conn;

/* WAL pages between two checkpoints (SQLite's own default). */
#define CKPT_FRAMES 1000

/* Copies the WAL back into the database file (a checkpoint), mostly on a
 * thread of its own. SQLite's automatic checkpoint runs inside the commit
 * that crosses the threshold, on the writer thread: every caller of that
 * batch would wait for a thousand pages copied and the database file
 * fsynced, and the writer is the one thread every generation passes
 * through. Here the writer only counts the WAL's frames (wal_hook) and
 * wakes this thread, whose PASSIVE checkpoint blocks neither writer nor
 * readers. But the WAL starts over from its beginning only once a
 * checkpoint has copied every frame, and under load the writer appends
 * while this thread copies; so when it is done the writer copies the few
 * frames appended meanwhile itself, after answering a batch (tail). Else
 * the WAL would grow for as long as the load lasts. Commits are durable
 * without any of this: the WAL is fsynced at each commit. */
typedef struct {
    conn c;
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool due, stopping, started;
    atomic_bool tail; /* a checkpoint ended: the writer copies the rest */
    int seen, mark;   /* writer thread only: WAL frames at the last commit, at the last wake */
} checkpointer;

typedef struct {
    lr_db base;
    conn *conns;
    int n;
    int *free_stack;
    int nfree;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* All writes go through one connection owned by the writer thread.
     * SQLite allows one writer anyway; its busy handler backs off in
     * milliseconds, and a connection whose cache another connection's
     * write invalidated re-reads its pages, so a single warm writer is much
     * faster than writers taking turns. Other processes (the CLI) still
     * meet busy_timeout. */
    conn writer;
    lr_db_batch *batch;
    checkpointer ckpt;
} sqlite_db;

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

static sqlite3_stmt *stmt(conn *c, int q)
{
    if (!c->st[q]) {
        if (sqlite3_prepare_v3(c->h, sql_text[q], -1, SQLITE_PREPARE_PERSISTENT, &c->st[q], NULL) !=
            SQLITE_OK) {
            lr_error("sqlite prepare failed: %s", sqlite3_errmsg(c->h));
            return NULL;
        }
    }
    return c->st[q];
}

/* A statement parameter; the arguments of run bind ?1, ?2, ... in order. */
typedef struct {
    enum { ARG_TEXT, ARG_INT, ARG_JSON, ARG_STRV } kind;
    const char *text; /* ARG_TEXT (NULL binds NULL), or ARG_JSON's value for NULL */
    int64_t num;
    json_t *json;
    const lr_strv *strv;
} arg;

#define A_TEXT(v) ((arg){.kind = ARG_TEXT, .text = (v)})
#define A_INT(v) ((arg){.kind = ARG_INT, .num = (v)})
#define A_JSON(v, fallback) ((arg){.kind = ARG_JSON, .json = (v), .text = (fallback)})
#define A_STRV(v) ((arg){.kind = ARG_STRV, .strv = (v)})
/* An argument list for run: ARGS(A_TEXT(id), A_INT(n)). */
#define ARGS(...) (const arg[]){__VA_ARGS__}, sizeof((const arg[]){__VA_ARGS__}) / sizeof(arg)
#define NO_ARGS NULL, 0

/* Binds without copying: run's arguments outlive the statement's step
 * (SQLITE_STATIC), and a text made here is handed over (freed by SQLite). */
static void bind_arg(sqlite3_stmt *s, int i, const arg *a)
{
    char *t = NULL;
    switch (a->kind) {
    case ARG_INT: sqlite3_bind_int64(s, i, a->num); return;
    case ARG_JSON:
        t = a->json ? json_dumps(a->json, JSON_COMPACT) : NULL;
        if (t)
            sqlite3_bind_text(s, i, t, -1, free);
        else
            sqlite3_bind_text(s, i, a->text, -1, SQLITE_STATIC);
        return;
    case ARG_STRV: sqlite3_bind_text(s, i, lr_db_strv_dump(a->strv), -1, free); return;
    case ARG_TEXT:
        if (a->text)
            sqlite3_bind_text(s, i, a->text, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(s, i);
        return;
    }
}

/* Called for each result row; reads the columns it needs into out. */
typedef void (*row_fn)(sqlite3_stmt *s, void *out);

/* Runs statement q on c with args bound, handing each result row to fn
 * (NULL: rows are not read); the statement is left reset and unbound.
 * LR_ERR_DB (logged) when it fails. */
static lr_err run(conn *c, int q, const arg *args, size_t n, row_fn fn, void *out)
{
    sqlite3_stmt *s = stmt(c, q);
    if (!s)
        return LR_ERR_DB;
    for (size_t i = 0; i < n; i++)
        bind_arg(s, (int)i + 1, &args[i]);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (fn)
            fn(s, out);
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_DONE) {
        lr_error("sqlite: %s: %s", sql_text[q], sqlite3_errmsg(c->h));
        return LR_ERR_DB;
    }
    return LR_OK;
}

/* A write for the writer thread: fn runs on the write connection inside
 * the batch's transaction, under its own savepoint. */
typedef struct {
    lr_db_job base; /* first: the batch hands back lr_db_job pointers */
    lr_err (*fn)(conn *c, void *ctx);
    void *ctx;
} write_job;

/* Queues fn(arg) for the writer and waits for its answer. */
static lr_err write_job_run(sqlite_db *d, lr_err (*fn)(conn *c, void *ctx), void *ctx)
{
    write_job j = {.fn = fn, .ctx = ctx};
    return lr_db_batch_submit(d->batch, &j.base);
}

/* A posted write (db.h's asynchronous calls): the job, the caller's done
 * and whatever the job's arguments need to outlive the caller's frame. */
typedef struct {
    write_job j;
    lr_db_done_fn done;
    void *ctx;
    union {
        struct {
            const lr_reserve_req *r;
            int *balance;
            lr_key_holder *holder;
        } reserve;
        struct {
            const lr_settle_req *q;
            char ts[32];
            int *balance;
        } settle;
    } a;
} posted_job;

static void posted_complete(lr_db_job *j)
{
    posted_job *p = (posted_job *)j;
    p->done(p->ctx, j->result);
    free(p);
}

/* Queues fn(ctx) for the writer; p->done runs with its answer. */
static void write_job_post(sqlite_db *d, posted_job *p, lr_err (*fn)(conn *c, void *ctx), void *ctx)
{
    p->j = (write_job){.base.complete = posted_complete, .fn = fn, .ctx = ctx};
    lr_db_batch_post(d->batch, &p->j.base);
}

/* One job under its savepoint: a job that fails leaves no trace. */
static lr_err run_one(conn *c, write_job *j)
{
    lr_err e = run(c, Q_SAVEPOINT, NO_ARGS, NULL, NULL);
    if (e != LR_OK)
        return e;
    e = j->fn(c, j->ctx);
    if (e != LR_OK && run(c, Q_ROLLBACK_TO, NO_ARGS, NULL, NULL) != LR_OK)
        return LR_ERR_DB;
    return run(c, Q_RELEASE, NO_ARGS, NULL, NULL) == LR_OK ? e : LR_ERR_DB;
}

static void rollback(conn *c)
{
    if (!sqlite3_get_autocommit(c->h))
        run(c, Q_ROLLBACK, NO_ARGS, NULL, NULL);
}

/* The writer thread's batch (batch.h): one transaction, one fsync. A
 * failed BEGIN or COMMIT fails every job of the batch (nothing of it was
 * written); a job's own failure fails that job only. */
static void run_batch(void *connp, lr_db_job **jobs, size_t n)
{
    conn *c = connp;
    lr_err e = run(c, Q_BEGIN, NO_ARGS, NULL, NULL);
    for (size_t i = 0; i < n; i++)
        jobs[i]->result = e == LR_OK ? run_one(c, (write_job *)jobs[i]) : e;
    if (e == LR_OK)
        e = run(c, Q_COMMIT, NO_ARGS, NULL, NULL);
    if (e != LR_OK) {
        rollback(c);
        for (size_t i = 0; i < n; i++)
            jobs[i]->result = LR_ERR_DB;
    }
}

/* One statement as a job of its own. */
typedef struct {
    int q;
    const arg *args;
    size_t n;
    row_fn fn;
    void *out;
} statement;

static lr_err run_statement(conn *c, void *ctx)
{
    statement *st = ctx;
    return run(c, st->q, st->args, st->n, st->fn, st->out);
}

enum { READ = 0, WRITE = 1 };

/* run on a pooled reader connection, or (write set) as a job of the
 * writer thread. */
static lr_err query(sqlite_db *d, bool write, int q, const arg *args, size_t n, row_fn fn,
                    void *out)
{
    if (write)
        return write_job_run(d, run_statement,
                             &(statement){.q = q, .args = args, .n = n, .fn = fn, .out = out});
    conn *c = acquire(d);
    lr_err e = run(c, q, args, n, fn, out);
    release(d, c);
    return e;
}

static void now_iso(char out[32])
{
    lr_time_iso(lr_now_ms(), out);
}

/* Row readers for statements with one scalar column. */

static void col_int(sqlite3_stmt *s, void *out)
{
    *(int *)out = sqlite3_column_int(s, 0);
}

static void col_uuid(sqlite3_stmt *s, void *out)
{
    const unsigned char *t = sqlite3_column_text(s, 0);
    snprintf(out, LR_UUID_LEN + 1, "%s", t ? (const char *)t : "");
}

/* Rows decoded by rows.c: each column read as text. */
typedef struct {
    lr_db_row_fn add;
    int ncols;
    void *list;
} text_rows;

static void text_row(sqlite3_stmt *s, void *out)
{
    text_rows *t = out;
    const char *col[GC_COUNT];
    for (int i = 0; i < t->ncols; i++)
        col[i] = (const char *)sqlite3_column_text(s, i);
    t->add(col, t->list);
}

#define INTO(fn, n, list)                                                                          \
    text_row, &(text_rows)                                                                         \
    {                                                                                              \
        (fn), (n), (list)                                                                          \
    }

static lr_err open_conn(const char *path, conn *c, char **errmsg)
{
    memset(c, 0, sizeof *c);
    int rc = sqlite3_open_v2(
        path, &c->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
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
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; "
                     "PRAGMA temp_store=MEMORY; PRAGMA mmap_size=268435456;",
                     NULL, NULL, &err) != SQLITE_OK) {
        if (errmsg && asprintf(errmsg, "cannot configure %s: %s", path, err) < 0)
            *errmsg = NULL;
        sqlite3_free(err);
        return LR_ERR_DB;
    }
    return LR_OK;
}

static void set_flag(sqlite3_stmt *s, void *out)
{
    (void)s;
    *(bool *)out = true;
}

/* Applies migration i unless schema_migrations says it was. */
static lr_err apply_migration(conn *c, size_t i, char **err)
{
    lr_err e = run(c, Q_BEGIN, NO_ARGS, NULL, NULL);
    bool seen = false;
    if (e == LR_OK)
        e = run(c, Q_MIGRATION_SEEN, ARGS(A_TEXT(migrations[i].version)), set_flag, &seen);
    if (e == LR_OK && !seen) {
        char ts[32];
        now_iso(ts);
        if (sqlite3_exec(c->h, migrations[i].sql, NULL, NULL, err) != SQLITE_OK)
            e = LR_ERR_DB;
        if (e == LR_OK)
            e = run(c, Q_MIGRATION_RECORD, ARGS(A_TEXT(migrations[i].version), A_TEXT(ts)), NULL,
                    NULL);
        if (e == LR_OK)
            lr_info("migration applied: %s", migrations[i].version);
    }
    if (e == LR_OK)
        e = run(c, Q_COMMIT, NO_ARGS, NULL, NULL);
    if (e != LR_OK)
        rollback(c);
    return e;
}

/* On a pooled connection, not the writer's: each migration is a
 * transaction of its own, which a batch cannot hold. */
static lr_err sq_migrate(lr_db *db)
{
    sqlite_db *d = (sqlite_db *)db;
    conn *c = acquire(d);
    char *err = NULL;
    lr_err e = sqlite3_exec(c->h,
                            "CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY "
                            "KEY, applied_at TEXT NOT NULL)",
                            NULL, NULL, &err) == SQLITE_OK
                   ? LR_OK
                   : LR_ERR_DB;
    for (size_t i = 0; e == LR_OK && i < sizeof migrations / sizeof *migrations; i++)
        e = apply_migration(c, i, &err);
    if (e != LR_OK)
        lr_error("sqlite migration failed: %s", err ? err : sqlite3_errmsg(c->h));
    sqlite3_free(err);
    release(d, c);
    return e;
}

static lr_err sq_ping(lr_db *db)
{
    return query((sqlite_db *)db, READ, Q_PING, NO_ARGS, NULL, NULL);
}

/* Current balance inside an open transaction (0 when the user has no row). */
static lr_err read_balance(conn *c, const char *user_id, int *balance)
{
    *balance = 0;
    return run(c, Q_BALANCE, ARGS(A_TEXT(user_id)), col_int, balance);
}

/* Adds amount (may be negative) to the user's balance unless that would go
 * below zero: LR_OK with *balance set; LR_ERR_INSUFFICIENT when refused or
 * the user has no row. */
static lr_err add_credits(conn *c, const char *user_id, int amount, const char *ts, int *balance)
{
    lr_err e = run(c, Q_CREDIT, ARGS(A_INT(amount), A_TEXT(user_id), A_TEXT(ts)), col_int, balance);
    if (e == LR_OK && sqlite3_changes(c->h) == 0)
        e = LR_ERR_INSUFFICIENT;
    return e;
}

/* A ledger row to write. */
typedef struct {
    const char *user_id;
    int amount;
    const char *type, *description;
    json_t *metadata; /* NULL: {} */
    const char *generation_id, *key, *ts;
} ledger_entry;

static lr_err insert_tx(conn *c, const ledger_entry *t, char id_out[LR_UUID_LEN + 1])
{
    char id[LR_UUID_LEN + 1];
    lr_uuid_v7(id);
    lr_err e = run(c, Q_INSERT_TX,
                   ARGS(A_TEXT(id), A_TEXT(t->user_id), A_INT(t->amount), A_TEXT(t->type),
                        A_TEXT(t->description), A_JSON(t->metadata, "{}"), A_TEXT(t->generation_id),
                        A_TEXT(t->key), A_TEXT(t->ts)),
                   NULL, NULL);
    if (e == LR_OK && id_out)
        memcpy(id_out, id, sizeof id);
    return e;
}

/* Who holds an idempotency key: the generation, its request hash, and
 * whether its hold has expired. */
typedef struct {
    bool found, expired;
    char id[LR_UUID_LEN + 1];
    char *request_hash;
} key_row;

static void read_key_row(sqlite3_stmt *s, void *out)
{
    key_row *k = out;
    k->found = true;
    snprintf(k->id, sizeof k->id, "%s", (const char *)sqlite3_column_text(s, 0));
    k->request_hash = lr_xstrdup((const char *)sqlite3_column_text(s, 1));
    k->expired = sqlite3_column_int(s, 2) != 0;
}

/* Inside the reserve transaction: *held when a live generation holds the
 * key (holder filled); an expired holder releases it. */
static lr_err check_key(conn *c, const lr_reserve_req *r, lr_key_holder *holder, bool *held)
{
    key_row k = {0};
    lr_err e =
        run(c, Q_KEY_HOLDER,
            ARGS(A_TEXT(r->user_id), A_TEXT(r->idempotency_key), A_TEXT(r->key_expired_before)),
            read_key_row, &k);
    *held = e == LR_OK && k.found && !k.expired;
    if (*held) {
        memcpy(holder->generation_id, k.id, sizeof k.id);
        holder->same_request =
            k.request_hash && r->request_hash && !strcmp(k.request_hash, r->request_hash);
    } else if (e == LR_OK && k.found) {
        e = run(c, Q_KEY_RELEASE, ARGS(A_TEXT(k.id)), NULL, NULL);
    }
    free(k.request_hash);
    return e;
}

/* The debit, generation row and charge of a reservation, inside its
 * transaction. LR_ERR_INSUFFICIENT (with *balance) when the user is short. */
static lr_err reserve_rows(conn *c, const lr_reserve_req *r, int *balance)
{
    lr_err e = run(c, Q_DEBIT, ARGS(A_INT(r->cost), A_TEXT(r->user_id), A_TEXT(r->created_at)),
                   col_int, balance);
    if (e != LR_OK)
        return e;
    if (sqlite3_changes(c->h) == 0) {
        e = read_balance(c, r->user_id, balance);
        return e == LR_OK ? LR_ERR_INSUFFICIENT : e;
    }
    e = run(c, Q_INSERT_GEN,
            ARGS(A_TEXT(r->generation_id), A_TEXT(r->user_id), A_TEXT(r->type), A_TEXT(r->model),
                 A_TEXT(r->prompt), A_INT(r->cost), A_INT(r->outputs_count), A_TEXT(r->provider),
                 A_JSON(r->params, "{}"), A_TEXT(r->created_at), A_TEXT(r->owner),
                 A_TEXT(r->lease_until), A_TEXT(r->idempotency_key), A_TEXT(r->request_hash)),
            NULL, NULL);
    if (e != LR_OK)
        return e;
    char desc[160];
    snprintf(desc, sizeof desc, "Generation: %s x%d", r->model, r->outputs_count);
    json_t *meta = json_pack("{s:s, s:i}", "model", r->model, "outputs", r->outputs_count);
    e = insert_tx(c,
                  &(ledger_entry){.user_id = r->user_id,
                                  .amount = -r->cost,
                                  .type = "generation",
                                  .description = desc,
                                  .metadata = meta,
                                  .generation_id = r->generation_id,
                                  .ts = r->created_at},
                  NULL);
    json_decref(meta);
    return e;
}

typedef struct {
    const lr_reserve_req *r;
    int *balance;
    lr_key_holder *holder;
} reserve_args;

static lr_err reserve_job(conn *c, void *ctx)
{
    reserve_args *a = ctx;
    bool held = false;
    lr_err e = LR_OK;
    if (a->r->idempotency_key && (e = check_key(c, a->r, a->holder, &held)) == LR_OK && held)
        e = LR_ERR_CONFLICT;
    if (e == LR_OK)
        e = reserve_rows(c, a->r, a->balance);
    return e;
}

static lr_err sq_reserve(lr_db *db, const lr_reserve_req *r, int *balance, lr_key_holder *holder)
{
    return write_job_run((sqlite_db *)db, reserve_job,
                         &(reserve_args){.r = r, .balance = balance, .holder = holder});
}

static lr_err reserve_posted(conn *c, void *ctx)
{
    posted_job *p = ctx;
    return reserve_job(c, &(reserve_args){.r = p->a.reserve.r,
                                          .balance = p->a.reserve.balance,
                                          .holder = p->a.reserve.holder});
}

static void sq_reserve_async(lr_db *db, const lr_reserve_req *r, int *balance,
                             lr_key_holder *holder, lr_db_done_fn done, void *ctx)
{
    posted_job *p = lr_xcalloc(1, sizeof *p);
    p->done = done;
    p->ctx = ctx;
    p->a.reserve.r = r;
    p->a.reserve.balance = balance;
    p->a.reserve.holder = holder;
    write_job_post((sqlite_db *)db, p, reserve_posted, p);
}

typedef struct {
    const char *id, *status, *stage, *ts;
    const lr_strv *task_ids;
} stage_args;

static lr_err stage_job(conn *c, void *ctx)
{
    stage_args *a = ctx;
    lr_err e = a->task_ids
                   ? run(c, Q_STAGE_TASKS,
                         ARGS(A_TEXT(a->id), A_TEXT(a->status), A_TEXT(a->stage), A_TEXT(a->ts),
                              A_STRV(a->task_ids)),
                         NULL, NULL)
                   : run(c, Q_STAGE,
                         ARGS(A_TEXT(a->id), A_TEXT(a->status), A_TEXT(a->stage), A_TEXT(a->ts)),
                         NULL, NULL);
    if (e == LR_OK && sqlite3_changes(c->h) == 0)
        e = LR_ERR_CONFLICT;
    return e;
}

static lr_err sq_set_stage(lr_db *db, const char *id, const char *status, const char *stage,
                           const lr_strv *task_ids)
{
    char ts[32];
    now_iso(ts);
    return write_job_run(
        (sqlite_db *)db, stage_job,
        &(stage_args){.id = id, .status = status, .stage = stage, .ts = ts, .task_ids = task_ids});
}

/* The final status and the refund of a settlement, inside its
 * transaction. LR_ERR_CONFLICT when the generation is already final. */
static lr_err settle_rows(conn *c, const lr_settle_req *q, const char *ts, int *balance)
{
    char user[LR_UUID_LEN + 1] = "";
    lr_err e =
        run(c, Q_SETTLE_GEN,
            ARGS(A_TEXT(q->generation_id), A_TEXT(q->status), A_STRV(&q->result_urls),
                 A_STRV(&q->task_ids), A_INT(q->succeeded_count), A_INT(q->failed_count),
                 A_INT(q->refund), A_TEXT(q->error_code), A_TEXT(q->error_message),
                 A_INT(q->duration_ms), A_TEXT(ts), A_TEXT(q->text), A_STRV(&q->storage_keys)),
            col_uuid, user);
    if (e != LR_OK)
        return e;
    if (!user[0])
        return LR_ERR_CONFLICT; /* already final: settling twice changes nothing */
    char type[LR_EVENT_TYPE_LEN];
    lr_generation_event_type(q->status, type);
    e = run(c, Q_OUTBOX,
            ARGS(A_TEXT(q->generation_id), A_TEXT(user), A_TEXT(type), A_INT(lr_now_ms())), NULL,
            NULL);
    if (e != LR_OK)
        return e;
    if (q->refund <= 0)
        return read_balance(c, user, balance);
    char desc[160];
    snprintf(desc, sizeof desc, "Refund: %s",
             q->error_code ? q->error_code : lr_gen_status_name(LR_GEN_FAILED));
    json_t *meta =
        json_pack("{s:i, s:s*}", "failed_outputs", q->failed_count, "error", q->error_message);
    e = insert_tx(c,
                  &(ledger_entry){.user_id = user,
                                  .amount = q->refund,
                                  .type = "refund",
                                  .description = desc,
                                  .metadata = meta,
                                  .generation_id = q->generation_id,
                                  .ts = ts},
                  NULL);
    json_decref(meta);
    if (e == LR_OK && add_credits(c, user, q->refund, ts, balance) != LR_OK)
        e = LR_ERR_DB;
    return e;
}

typedef struct {
    const lr_settle_req *q;
    const char *ts;
    int *balance;
} settle_args;

static lr_err settle_job(conn *c, void *ctx)
{
    settle_args *a = ctx;
    return settle_rows(c, a->q, a->ts, a->balance);
}

static lr_err sq_settle(lr_db *db, const lr_settle_req *q, int *balance)
{
    char ts[32];
    now_iso(ts);
    return write_job_run((sqlite_db *)db, settle_job,
                         &(settle_args){.q = q, .ts = ts, .balance = balance});
}

static lr_err settle_posted(conn *c, void *ctx)
{
    posted_job *p = ctx;
    return settle_rows(c, p->a.settle.q, p->a.settle.ts, p->a.settle.balance);
}

static void sq_settle_async(lr_db *db, const lr_settle_req *q, int *balance, lr_db_done_fn done,
                            void *ctx)
{
    posted_job *p = lr_xcalloc(1, sizeof *p);
    p->done = done;
    p->ctx = ctx;
    p->a.settle.q = q;
    p->a.settle.balance = balance;
    now_iso(p->a.settle.ts);
    write_job_post((sqlite_db *)db, p, settle_posted, p);
}

static lr_err sq_balance(lr_db *db, const char *user_id, int *balance)
{
    sqlite_db *d = (sqlite_db *)db;
    conn *c = acquire(d);
    lr_err e = read_balance(c, user_id, balance);
    release(d, c);
    return e;
}

/* A ledger row found by its idempotency key. */
typedef struct {
    bool found;
    char id[LR_UUID_LEN + 1];
    int amount;
    char *type;
} keyed_tx;

static void read_keyed_tx(sqlite3_stmt *s, void *out)
{
    keyed_tx *k = out;
    k->found = true;
    snprintf(k->id, sizeof k->id, "%s", (const char *)sqlite3_column_text(s, 0));
    k->amount = sqlite3_column_int(s, 1);
    k->type = lr_xstrdup((const char *)sqlite3_column_text(s, 2));
}

/* Inside the adjust transaction: a grant whose key was seen before changes
 * nothing (*replayed) when it is the same grant, CONFLICT when not. */
static lr_err adjust_replay(conn *c, const lr_adjust_req *r, lr_adjust_result *out, bool *replayed)
{
    keyed_tx k = {0};
    lr_err e =
        run(c, Q_FIND_KEY, ARGS(A_TEXT(r->user_id), A_TEXT(r->idempotency_key)), read_keyed_tx, &k);
    *replayed = e == LR_OK && k.found;
    if (*replayed) {
        memcpy(out->transaction_id, k.id, sizeof k.id);
        out->replayed = true;
        if (k.amount != r->amount || !k.type || strcmp(k.type, r->type) != 0)
            e = LR_ERR_CONFLICT;
        else
            e = read_balance(c, r->user_id, &out->new_balance);
    }
    free(k.type);
    return e;
}

/* The balance change and its ledger row, inside the adjust transaction. */
static lr_err adjust_rows(conn *c, const lr_adjust_req *r, const char *ts, lr_adjust_result *out)
{
    char id[LR_UUID_LEN + 1];
    lr_uuid_v4(id);
    lr_err e = run(c, Q_ENSURE_ROW, ARGS(A_TEXT(id), A_TEXT(r->user_id), A_TEXT(ts)), NULL, NULL);
    if (e == LR_OK)
        e = add_credits(c, r->user_id, r->amount, ts, &out->new_balance);
    if (e == LR_ERR_INSUFFICIENT && read_balance(c, r->user_id, &out->new_balance) != LR_OK)
        e = LR_ERR_DB;
    if (e == LR_OK)
        e = insert_tx(c,
                      &(ledger_entry){.user_id = r->user_id,
                                      .amount = r->amount,
                                      .type = r->type,
                                      .description = r->description,
                                      .metadata = r->metadata,
                                      .key = r->idempotency_key,
                                      .ts = ts},
                      out->transaction_id);
    return e;
}

typedef struct {
    const lr_adjust_req *r;
    const char *ts;
    lr_adjust_result *out;
} adjust_args;

static lr_err adjust_job(conn *c, void *ctx)
{
    adjust_args *a = ctx;
    memset(a->out, 0, sizeof *a->out); /* a retried job starts afresh */
    bool replayed = false;
    lr_err e = LR_OK;
    if (a->r->idempotency_key)
        e = adjust_replay(c, a->r, a->out, &replayed);
    if (e == LR_OK && !replayed)
        e = adjust_rows(c, a->r, a->ts, a->out);
    return e;
}

static lr_err sq_adjust(lr_db *db, const lr_adjust_req *r, lr_adjust_result *out)
{
    char ts[32];
    now_iso(ts);
    return write_job_run((sqlite_db *)db, adjust_job, &(adjust_args){.r = r, .ts = ts, .out = out});
}

static lr_err sq_get_generation(lr_db *db, const char *user_id, const char *id, lr_generation *out)
{
    lr_generation_list l = {0};
    lr_err e = query((sqlite_db *)db, READ, Q_GET_GEN, ARGS(A_TEXT(id), A_TEXT(user_id)),
                     INTO(lr_db_add_generation, GC_COUNT, &l));
    return lr_db_first_generation(e, &l, out);
}

static lr_err sq_list_generations(lr_db *db, const char *user_id, const lr_gen_filter *f,
                                  lr_generation_list *out)
{
    *out = (lr_generation_list){0};
    lr_err e = query((sqlite_db *)db, READ, Q_LIST_GEN,
                     ARGS(A_TEXT(user_id), A_TEXT(f->status), A_TEXT(f->type),
                          A_TEXT(f->before_created_at), A_TEXT(f->before_id), A_INT(f->limit)),
                     INTO(lr_db_add_generation, GC_COUNT, out));
    if (e != LR_OK)
        lr_generation_list_clear(out);
    return e;
}

static lr_err sq_list_transactions(lr_db *db, const char *user_id, const char *before_created_at,
                                   const char *before_id, int limit, lr_ledger_list *out)
{
    *out = (lr_ledger_list){0};
    lr_err e =
        query((sqlite_db *)db, READ, Q_LIST_TX,
              ARGS(A_TEXT(user_id), A_TEXT(before_created_at), A_TEXT(before_id), A_INT(limit)),
              INTO(lr_db_add_ledger_row, LC_COUNT, out));
    if (e != LR_OK)
        lr_ledger_list_clear(out);
    return e;
}

/* The storage keys a deletion returned, and whether it matched a row. */
typedef struct {
    bool marked;
    lr_strv *keys;
} deletion;

static void read_deletion(sqlite3_stmt *s, void *out)
{
    deletion *del = out;
    del->marked = true;
    lr_strv_clear(del->keys);
    lr_db_strv_parse((const char *)sqlite3_column_text(s, 0), del->keys);
}

static lr_err sq_mark_deleted(lr_db *db, const char *user_id, const char *id, lr_strv *keys)
{
    char ts[32];
    now_iso(ts);
    *keys = (lr_strv){0};
    deletion del = {.keys = keys};
    lr_err e = query((sqlite_db *)db, WRITE, Q_MARK_DELETED,
                     ARGS(A_TEXT(id), A_TEXT(user_id), A_TEXT(ts)), read_deletion, &del);
    if (e != LR_OK || del.marked)
        return e;
    /* Nothing marked: tell "still running" apart from "not yours / gone". */
    lr_generation g = {0};
    e = sq_get_generation(db, user_id, id, &g);
    if (e == LR_OK)
        e = lr_generation_unfinished(&g) ? LR_ERR_CONFLICT : LR_ERR_NOT_FOUND;
    lr_generation_clear(&g);
    return e;
}

static lr_err sq_pending_purges(lr_db *db, int limit, lr_purge_list *rows)
{
    *rows = (lr_purge_list){0};
    lr_err e = query((sqlite_db *)db, READ, Q_PENDING_PURGES, ARGS(A_INT(limit)),
                     INTO(lr_db_add_purge, PC_COUNT, rows));
    if (e != LR_OK)
        lr_purge_list_clear(rows);
    return e;
}

static lr_err sq_purged(lr_db *db, const char *id)
{
    return query((sqlite_db *)db, WRITE, Q_PURGED, ARGS(A_TEXT(id)), NULL, NULL);
}

static lr_err sq_preview_claim(lr_db *db, const char *id, lr_strv *keys)
{
    *keys = (lr_strv){0};
    deletion claimed = {.keys = keys}; /* the same shape: a flag and the keys */
    lr_err e =
        query((sqlite_db *)db, WRITE, Q_PREVIEW_CLAIM, ARGS(A_TEXT(id)), read_deletion, &claimed);
    return e != LR_OK ? e : claimed.marked ? LR_OK : LR_ERR_NOT_FOUND;
}

static lr_err sq_preview_pending(lr_db *db, const char *since, int limit, lr_strv *ids)
{
    *ids = (lr_strv){0};
    lr_err e = query((sqlite_db *)db, READ, Q_PREVIEW_PENDING, ARGS(A_TEXT(since), A_INT(limit)),
                     INTO(lr_db_add_string, 1, ids));
    if (e != LR_OK)
        lr_strv_clear(ids);
    return e;
}

static lr_err sq_preview_finish(lr_db *db, const lr_preview_req *r)
{
    bool found = false;
    lr_err e = query((sqlite_db *)db, WRITE, Q_PREVIEW_FINISH,
                     ARGS(A_TEXT(r->generation_id), A_TEXT(r->status), A_TEXT(r->poster_path),
                          A_TEXT(r->preview_path), A_JSON(r->preview, "{}"), A_STRV(&r->keys)),
                     set_flag, &found);
    return e != LR_OK ? e : found ? LR_OK : LR_ERR_NOT_FOUND;
}

typedef struct {
    const char *owner, *lease_until;
} renew_args;

/* The heartbeat is one row, whatever the backlog; the rows' own leases
 * are only touched to give them up (a lease_until already past: SQLite
 * tests a term that names no column once, before reading any row).
 * Heartbeats of processes gone for a day are dropped on the way. */
static lr_err renew_job(conn *c, void *ctx)
{
    renew_args *a = ctx;
    char now[32], day_ago[32];
    int64_t ms = lr_now_ms();
    lr_time_iso(ms, now);
    lr_time_iso(ms - 24 * 3600 * 1000, day_ago);
    lr_err e = run(c, Q_BEAT, ARGS(A_TEXT(a->owner), A_TEXT(a->lease_until)), NULL, NULL);
    if (e == LR_OK) /* old heartbeats, and this one when it is a release */
        e = run(c, Q_BEATS_GONE, ARGS(A_TEXT(a->owner), A_TEXT(day_ago), A_TEXT(now)), NULL, NULL);
    if (e == LR_OK)
        e = run(c, Q_RENEW, ARGS(A_TEXT(a->owner), A_TEXT(a->lease_until), A_TEXT(now)), NULL,
                NULL);
    if (e == LR_OK)
        e = run(c, Q_RENEW_RUNS, ARGS(A_TEXT(a->owner), A_TEXT(a->lease_until), A_TEXT(now)), NULL,
                NULL);
    return e;
}

static lr_err sq_renew_leases(lr_db *db, const char *owner, const char *lease_until)
{
    return write_job_run((sqlite_db *)db, renew_job,
                         &(renew_args){.owner = owner, .lease_until = lease_until});
}

/* An unfinished generation whose lease ran out, before it is reaped. */
typedef struct {
    lr_reaped *v; /* refund: its credits_used */
    int *outputs;
    size_t n;
} expired_list;

static void add_expired(sqlite3_stmt *s, void *out)
{
    expired_list *l = out;
    l->v = lr_db_grow(l->v, l->n, sizeof *l->v);
    l->outputs = lr_db_grow(l->outputs, l->n, sizeof *l->outputs);
    snprintf(l->v[l->n].id, sizeof l->v[l->n].id, "%s", (const char *)sqlite3_column_text(s, 0));
    l->v[l->n].refund = sqlite3_column_int(s, 1);
    l->outputs[l->n++] = sqlite3_column_int(s, 2);
}

/* Expired rows are read first, then each is settled in its own
 * transaction; settle's status guard makes a race with another reaper (or
 * a late owner) harmless: the loser changes nothing. */
static lr_err sq_reap_expired(lr_db *db, const char *owner, int limit, bool dead,
                              lr_reaped_list *reaped)
{
    char now[32];
    now_iso(now);
    expired_list x = {0};
    size_t kept = 0;
    *reaped = (lr_reaped_list){0};
    lr_err e = query((sqlite_db *)db, READ, Q_EXPIRED,
                     ARGS(A_TEXT(now), A_INT(limit), A_TEXT(owner), A_INT(dead)), add_expired, &x);
    for (size_t i = 0; e == LR_OK && i < x.n; i++) {
        lr_settle_req q = {
            .generation_id = x.v[i].id,
            .status = lr_gen_status_name(LR_GEN_FAILED),
            .failed_count = x.outputs[i],
            .refund = x.v[i].refund,
            .error_code = lr_code_name(LR_CODE_INTERRUPTED),
            .error_message = "The server running this generation stopped before it finished; "
                             "the credits were refunded",
        };
        int balance;
        if (sq_settle(db, &q, &balance) == LR_OK)
            x.v[kept++] = x.v[i]; /* the loser of a race reports nothing */
    }
    free(x.outputs);
    if (e == LR_OK)
        *reaped = (lr_reaped_list){.v = x.v, .n = kept};
    else
        free(x.v);
    return e;
}

static lr_err sq_claim_resumable(lr_db *db, const char *owner, const char *lease_until, int limit,
                                 bool dead, lr_generation_list *rows)
{
    char now[32];
    now_iso(now);
    *rows = (lr_generation_list){0};
    lr_err e =
        query((sqlite_db *)db, WRITE, Q_CLAIM,
              ARGS(A_TEXT(now), A_INT(limit), A_TEXT(owner), A_TEXT(lease_until), A_INT(dead)),
              INTO(lr_db_add_generation, GC_COUNT, rows));
    if (e != LR_OK)
        lr_generation_list_clear(rows);
    return e;
}

static lr_err sq_audit(lr_db *db, lr_violation_list *violations)
{
    *violations = (lr_violation_list){0};
    lr_err e = query((sqlite_db *)db, READ, Q_AUDIT, NO_ARGS,
                     INTO(lr_db_add_violation, VC_COUNT, violations));
    if (e != LR_OK)
        lr_violation_list_clear(violations);
    return e;
}

/* ---- price quotes ---- */

typedef struct {
    const lr_quote_req *q;
    char purge_before[32];
} quote_args;

static lr_err save_quote_job(conn *c, void *ctx)
{
    quote_args *a = ctx;
    const lr_quote_req *q = a->q;
    lr_err e = run(c, Q_PURGE_QUOTES, ARGS(A_TEXT(a->purge_before)), NULL, NULL);
    if (e == LR_OK)
        e = run(c, Q_SAVE_QUOTE,
                ARGS(A_TEXT(q->id), A_TEXT(q->user_id), A_JSON(q->lines, "[]"), A_INT(q->total),
                     A_TEXT(q->created_at), A_TEXT(q->expires_at)),
                NULL, NULL);
    return e;
}

static lr_err sq_save_quote(lr_db *db, const lr_quote_req *q)
{
    quote_args a = {.q = q};
    lr_time_iso(lr_now_ms() - 24LL * 3600 * 1000, a.purge_before);
    return write_job_run((sqlite_db *)db, save_quote_job, &a);
}

static void read_quote(sqlite3_stmt *s, void *out)
{
    lr_quote *q = out;
    const char *lines = (const char *)sqlite3_column_text(s, 0);
    q->lines = lines ? json_loads(lines, 0, NULL) : NULL;
    if (!q->lines)
        q->lines = json_array();
    q->total = sqlite3_column_int(s, 1);
    q->expired = sqlite3_column_int(s, 2) != 0;
}

static lr_err sq_get_quote(lr_db *db, const char *user_id, const char *id, lr_quote *out)
{
    char now[32];
    now_iso(now);
    *out = (lr_quote){0};
    lr_err e = query((sqlite_db *)db, READ, Q_GET_QUOTE,
                     ARGS(A_TEXT(id), A_TEXT(user_id), A_TEXT(now)), read_quote, out);
    if (e == LR_OK && !out->lines)
        e = LR_ERR_NOT_FOUND;
    return e;
}

/* ---- graph runs ---- */

typedef struct {
    const lr_run_reserve_req *r;
    int *balance;
    lr_key_holder *holder;
} run_reserve_args;

static void read_run_key(sqlite3_stmt *s, void *out)
{
    key_row *k = out;
    k->found = true;
    snprintf(k->id, sizeof k->id, "%s", (const char *)sqlite3_column_text(s, 0));
    k->request_hash = lr_xstrdup((const char *)sqlite3_column_text(s, 1));
}

/* Inside the reservation: *held when a run holds the key. */
static lr_err check_run_key(conn *c, const lr_run_reserve_req *r, lr_key_holder *holder, bool *held)
{
    key_row k = {0};
    lr_err e =
        run(c, Q_RUN_KEY, ARGS(A_TEXT(r->user_id), A_TEXT(r->idempotency_key)), read_run_key, &k);
    *held = e == LR_OK && k.found;
    if (*held) {
        memcpy(holder->generation_id, k.id, sizeof k.id);
        holder->same_request =
            k.request_hash && r->request_hash && !strcmp(k.request_hash, r->request_hash);
    }
    free(k.request_hash);
    return e;
}

static lr_err run_node_row(conn *c, const lr_run_reserve_req *r, const lr_run_node_req *n)
{
    if (n->cached_from)
        return run(c, Q_INSERT_CACHED_NODE,
                   ARGS(A_TEXT(n->generation_id), A_TEXT(r->user_id), A_TEXT(n->type),
                        A_TEXT(n->model), A_TEXT(n->prompt), A_INT(n->outputs_count),
                        A_TEXT(n->provider), A_JSON(n->params, "{}"), A_JSON(n->result_urls, "[]"),
                        A_TEXT(n->cached_from), A_TEXT(n->text), A_TEXT(r->created_at),
                        A_TEXT(r->run_id), A_TEXT(n->node_id), A_TEXT(n->cache_key)),
                   NULL, NULL);
    return run(c, Q_INSERT_NODE,
               ARGS(A_TEXT(n->generation_id), A_TEXT(r->user_id), A_TEXT(n->type), A_TEXT(n->model),
                    A_TEXT(n->prompt), A_INT(n->cost), A_INT(n->outputs_count), A_TEXT(n->provider),
                    A_JSON(n->params, "{}"), A_TEXT(r->created_at), A_TEXT(r->owner),
                    A_TEXT(r->lease_until), A_TEXT(r->run_id), A_TEXT(n->node_id),
                    A_TEXT(n->cache_key)),
               NULL, NULL);
}

static lr_err reserve_run_job(conn *c, void *ctx)
{
    run_reserve_args *a = ctx;
    const lr_run_reserve_req *r = a->r;
    bool held = false;
    lr_err e = r->idempotency_key ? check_run_key(c, r, a->holder, &held) : LR_OK;
    if (e != LR_OK || held)
        return e != LR_OK ? e : LR_ERR_CONFLICT;
    e = run(c, Q_DEBIT, ARGS(A_INT(r->total), A_TEXT(r->user_id), A_TEXT(r->created_at)), col_int,
            a->balance);
    if (e == LR_OK && sqlite3_changes(c->h) == 0) {
        e = read_balance(c, r->user_id, a->balance);
        return e == LR_OK ? LR_ERR_INSUFFICIENT : e;
    }
    if (e == LR_OK)
        e = run(c, Q_INSERT_RUN,
                ARGS(A_TEXT(r->run_id), A_TEXT(r->user_id), A_JSON(r->graph, "{}"), A_INT(r->total),
                     A_TEXT(r->idempotency_key), A_TEXT(r->request_hash), A_TEXT(r->owner),
                     A_TEXT(r->lease_until), A_TEXT(r->created_at)),
                NULL, NULL);
    for (size_t i = 0; e == LR_OK && i < r->n; i++)
        e = run_node_row(c, r, &r->nodes[i]);
    char id[LR_UUID_LEN + 1], desc[64];
    lr_uuid_v7(id);
    snprintf(desc, sizeof desc, "Run: %zu nodes", r->n);
    if (e == LR_OK)
        e = run(c, Q_INSERT_RUN_TX,
                ARGS(A_TEXT(id), A_TEXT(r->user_id), A_INT(-r->total), A_TEXT(desc),
                     A_JSON(r->charge_meta, "{}"), A_TEXT(r->run_id), A_TEXT(r->created_at)),
                NULL, NULL);
    return e;
}

static lr_err sq_reserve_run(lr_db *db, const lr_run_reserve_req *r, int *balance,
                             lr_key_holder *holder)
{
    return write_job_run((sqlite_db *)db, reserve_run_job,
                         &(run_reserve_args){.r = r, .balance = balance, .holder = holder});
}

static lr_err sq_get_run(lr_db *db, const char *user_id, const char *id, lr_run *out)
{
    *out = (lr_run){0};
    lr_err e = query((sqlite_db *)db, READ, Q_GET_RUN, ARGS(A_TEXT(id), A_TEXT(user_id)),
                     INTO(lr_db_set_run, RC_COUNT, out));
    return lr_db_found_run(e, out);
}

static lr_err sq_list_run_nodes(lr_db *db, const char *run_id, lr_run_node_list *out)
{
    *out = (lr_run_node_list){0};
    lr_err e = query((sqlite_db *)db, READ, Q_RUN_NODES, ARGS(A_TEXT(run_id)),
                     INTO(lr_db_add_run_node, NC_COUNT, out));
    if (e != LR_OK)
        lr_run_node_list_clear(out);
    return e;
}

typedef struct {
    int q;
    const arg *args;
    size_t n;
} changing;

/* One statement that must change a row: CONFLICT when it changed none. */
static lr_err changing_job(conn *c, void *ctx)
{
    changing *ch = ctx;
    lr_err e = run(c, ch->q, ch->args, ch->n, NULL, NULL);
    return e == LR_OK && sqlite3_changes(c->h) == 0 ? LR_ERR_CONFLICT : e;
}

static lr_err sq_start_node(lr_db *db, const char *generation_id, const char *prompt,
                            const char *image_url)
{
    char ts[32];
    now_iso(ts);
    const arg a[] = {A_TEXT(generation_id), A_TEXT(prompt), A_TEXT(ts), A_TEXT(image_url)};
    return write_job_run((sqlite_db *)db, changing_job,
                         &(changing){.q = Q_START_NODE, .args = a, .n = 4});
}

static lr_err sq_finish_run(lr_db *db, const char *id, const char *status, const char *error_node,
                            const char *error_code, const char *error_message)
{
    char ts[32];
    now_iso(ts);
    const arg a[] = {A_TEXT(id),         A_TEXT(status),        A_TEXT(error_node),
                     A_TEXT(error_code), A_TEXT(error_message), A_TEXT(ts)};
    return write_job_run((sqlite_db *)db, changing_job,
                         &(changing){.q = Q_FINISH_RUN, .args = a, .n = 6});
}

static lr_err sq_find_cached(lr_db *db, const char *user_id, const char *cache_key,
                             const char *from_run, lr_run_node *out)
{
    lr_run_node_list l = {0};
    lr_err e = query((sqlite_db *)db, READ, Q_FIND_CACHED,
                     ARGS(A_TEXT(user_id), A_TEXT(cache_key), A_TEXT(from_run)),
                     INTO(lr_db_add_run_node, NC_COUNT, &l));
    return lr_db_first_run_node(e, &l, out);
}

static void add_id(sqlite3_stmt *s, void *out)
{
    lr_strv *ids = out;
    ids->v = lr_db_grow(ids->v, ids->n, sizeof *ids->v);
    ids->v[ids->n++] = lr_xstrdup((const char *)sqlite3_column_text(s, 0));
}

typedef struct {
    const char *owner, *lease_until, *now;
    int limit;
    bool dead;
    lr_strv *ids;
} claim_runs_args;

static lr_err claim_runs_job(conn *c, void *ctx)
{
    claim_runs_args *a = ctx;
    lr_strv_clear(a->ids);
    lr_err e = run(c, Q_CLAIM_RUNS,
                   ARGS(A_TEXT(a->now), A_INT(a->limit), A_TEXT(a->owner), A_TEXT(a->lease_until),
                        A_INT(a->dead)),
                   add_id, a->ids);
    for (size_t i = 0; e == LR_OK && i < a->ids->n; i++)
        e = run(c, Q_CLAIM_RUN_NODES,
                ARGS(A_TEXT(a->ids->v[i]), A_TEXT(a->owner), A_TEXT(a->lease_until)), NULL, NULL);
    return e;
}

static lr_err sq_claim_runs(lr_db *db, const char *owner, const char *lease_until, int limit,
                            bool dead, lr_strv *ids)
{
    char now[32];
    now_iso(now);
    *ids = (lr_strv){0};
    lr_err e = write_job_run((sqlite_db *)db, claim_runs_job,
                             &(claim_runs_args){.owner = owner,
                                                .lease_until = lease_until,
                                                .now = now,
                                                .limit = limit,
                                                .dead = dead,
                                                .ids = ids});
    if (e != LR_OK)
        lr_strv_clear(ids);
    return e;
}

static void close_conn(conn *c)
{
    for (int q = 0; q < Q_COUNT; q++)
        sqlite3_finalize(c->st[q]);
    sqlite3_close(c->h);
}

static void *checkpoint_main(void *ctx)
{
    checkpointer *k = ctx;
    pthread_mutex_lock(&k->mu);
    for (;;) {
        while (!k->due && !k->stopping)
            pthread_cond_wait(&k->cv, &k->mu);
        if (k->stopping)
            break;
        k->due = false;
        pthread_mutex_unlock(&k->mu);
        int rc = sqlite3_wal_checkpoint_v2(k->c.h, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            lr_warn("sqlite: checkpoint failed: %s", sqlite3_errmsg(k->c.h));
        atomic_store(&k->tail, true);
        pthread_mutex_lock(&k->mu);
    }
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

/* The writer's wal_hook, after each commit: wakes the checkpointer every
 * CKPT_FRAMES new frames (fewer frames than last time: the WAL restarted
 * from its start). */
static int wal_committed(void *ctx, sqlite3 *h, const char *name, int frames)
{
    (void)h;
    (void)name;
    checkpointer *k = ctx;
    if (frames < k->seen)
        k->mark = 0;
    k->seen = frames;
    if (frames - k->mark >= CKPT_FRAMES) {
        k->mark = frames;
        pthread_mutex_lock(&k->mu);
        k->due = true;
        pthread_cond_signal(&k->cv);
        pthread_mutex_unlock(&k->mu);
    }
    return SQLITE_OK;
}

/* The batch's after hook (writer thread): the tail of a checkpoint. */
static void checkpoint_tail(void *connp)
{
    conn *c = connp;
    sqlite_db *d = (sqlite_db *)((char *)c - offsetof(sqlite_db, writer));
    if (atomic_exchange(&d->ckpt.tail, false))
        sqlite3_wal_checkpoint_v2(c->h, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
}

/* Opens the checkpointer's connection and thread, and takes the writer's
 * automatic checkpoint over (a wal_hook replaces it). */
static lr_err checkpointer_start(sqlite_db *d, const char *path, char **errmsg)
{
    checkpointer *k = &d->ckpt;
    lr_err e = open_conn(path, &k->c, errmsg);
    if (e != LR_OK)
        return e;
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    if (pthread_create(&k->tid, NULL, checkpoint_main, k) != 0) {
        lr_error("sqlite: cannot start the checkpoint thread");
        abort(); /* as an allocation failure: nothing sensible is left to do */
    }
    k->started = true;
    sqlite3_wal_hook(d->writer.h, wal_committed, k);
    return LR_OK;
}

static void checkpointer_stop(checkpointer *k)
{
    if (k->started) {
        pthread_mutex_lock(&k->mu);
        k->stopping = true;
        pthread_cond_signal(&k->cv);
        pthread_mutex_unlock(&k->mu);
        pthread_join(k->tid, NULL);
        pthread_mutex_destroy(&k->mu);
        pthread_cond_destroy(&k->cv);
    }
    close_conn(&k->c);
}

static void sq_close(lr_db *db)
{
    sqlite_db *d = (sqlite_db *)db;
    for (int i = 0; i < d->n; i++)
        close_conn(&d->conns[i]);
    lr_db_batch_stop(d->batch);
    checkpointer_stop(&d->ckpt);
    close_conn(&d->writer);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    free(d->conns);
    free(d->free_stack);
    free(d);
}

/* Another module's statements (the billing store) as a job of the writer:
 * under its own savepoint in the writer's next batch. */
typedef struct {
    lr_err (*fn)(struct sqlite3 *h, void *ctx);
    void *ctx;
} foreign_job;

static lr_err foreign_run(conn *c, void *ctx)
{
    foreign_job *f = ctx;
    return f->fn(c->h, f->ctx);
}

lr_err lr_db_sqlite_writer(lr_db *db, lr_err (*fn)(struct sqlite3 *h, void *ctx), void *ctx)
{
    foreign_job f = {.fn = fn, .ctx = ctx};
    return write_job_run((sqlite_db *)db, foreign_run, &f);
}

static const lr_db_ops sqlite_ops = {
    .migrate = sq_migrate,
    .ping = sq_ping,
    .reserve = sq_reserve,
    .set_stage = sq_set_stage,
    .settle = sq_settle,
    .reserve_async = sq_reserve_async,
    .settle_async = sq_settle_async,
    .balance = sq_balance,
    .adjust = sq_adjust,
    .get_generation = sq_get_generation,
    .list_generations = sq_list_generations,
    .list_transactions = sq_list_transactions,
    .mark_deleted = sq_mark_deleted,
    .pending_purges = sq_pending_purges,
    .purged = sq_purged,
    .preview_claim = sq_preview_claim,
    .preview_pending = sq_preview_pending,
    .preview_finish = sq_preview_finish,
    .renew_leases = sq_renew_leases,
    .claim_resumable = sq_claim_resumable,
    .reap_expired = sq_reap_expired,
    .audit = sq_audit,
    .save_quote = sq_save_quote,
    .get_quote = sq_get_quote,
    .reserve_run = sq_reserve_run,
    .get_run = sq_get_run,
    .list_run_nodes = sq_list_run_nodes,
    .start_node = sq_start_node,
    .finish_run = sq_finish_run,
    .claim_runs = sq_claim_runs,
    .find_cached = sq_find_cached,
    .close = sq_close,
};

void lr_db_library_init(void)
{
    int rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (rc != SQLITE_OK) /* SQLite was in use already: the setting did not apply */
        lr_warn("sqlite: allocation statistics stay on: %s", sqlite3_errstr(rc));
}

lr_err lr_db_sqlite_open(const char *path, int pool_size, lr_db **out, char **errmsg)
{
    sqlite_db *d = lr_xcalloc(1, sizeof *d);
    d->base.ops = &sqlite_ops;
    d->base.backend = "sqlite";
    d->conns = lr_xcalloc((size_t)pool_size, sizeof *d->conns);
    d->free_stack = lr_xcalloc((size_t)pool_size, sizeof *d->free_stack);
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
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
    we = checkpointer_start(d, path, errmsg);
    if (we != LR_OK) {
        sq_close(&d->base);
        return we;
    }
    void *writer = &d->writer;
    d->batch = lr_db_batch_start(&(lr_db_batch_opts){.name = "sqlite",
                                                     .run = run_batch,
                                                     .conns = &writer,
                                                     .writers = 1,
                                                     .max_jobs = 256,
                                                     .after = checkpoint_tail});
    *out = &d->base;
    return LR_OK;
}
