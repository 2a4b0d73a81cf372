/* PostgreSQL backend on libpq.
 *
 * Money-moving steps are SQL functions in the lensroom schema (see
 * migrations/postgres), and several server processes can share the
 * database: row locks serialise debits of one user, and reaping claims
 * rows with FOR UPDATE SKIP LOCKED.
 *
 * Writes that move money or a generation's state (reserve, settle,
 * set_stage, adjust) go through the group commit of batch.h: a writer
 * thread owns a connection in pipeline mode with those statements
 * prepared once, sends every call that queued up during its previous
 * commit in one round trip and one implicit transaction (one Sync), and
 * so pays one WAL flush for the batch. A batch's reserves and settles are
 * ONE call of lensroom.write_batch (migration 0014): their parameters go
 * in as JSON arrays, in the per-call functions' order, and it answers one
 * row per call after a few set-based statements for the whole batch (one
 * insert of the generations, one of the ledger rows, one update of the
 * balances, one of the settled rows, the rollups once), where N calls of
 * lensroom.reserve / settle ran N times their statements, row by row.
 * It locks every balance the transaction may move first, in user order
 * (also those of the batch's adjusts, which follow it), so batches of
 * several processes never wait on each other in a circle; it takes a
 * user's calls in the order they came while the balance lasts. It
 * decides the reserves before the settles, so a reserve that came after a
 * refund or an adjust of its own user goes into a second transaction,
 * where it sees them. Stage
 * writes go before it, adjusts after, each its own prepared call. A lone
 * reserve or settle is sent as its per-call function (cheaper than
 * write_batch's set-up). The answers say ok=false for a short balance, a
 * held key or an already final generation instead of raising, so one
 * caller's refusal never aborts the others'. Should a statement raise
 * anyway (a deadlock with another process, an idempotency key another
 * process took meanwhile), PostgreSQL rolls the whole batch back and the
 * writer runs it again with a Sync after every call through the per-call
 * functions: each in its own transaction, each with its own answer.
 *
 * Other statements use a fixed pool of connections, opened lazily; a
 * broken one is reset on next use, and while the server is down every
 * call fails fast with LR_ERR_UNAVAILABLE (the API answers 503).
 *
 * Reads are plain SELECTs of typed columns, decoded by rows.c as the
 * SQLite backend's are. The JSON-building functions the first version
 * read through (lensroom.generation_json, transaction_json and
 * claim_resumable) are no longer called; they stay in the schema so a
 * process of that version keeps working beside this one during a rolling
 * upgrade.
 */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "db/batch.h"
#include "db/db.h"
#include "db/rows.h"

extern const char lr_sql_pg_0001[];
extern const char lr_sql_pg_0002[];
extern const char lr_sql_pg_0003[];
extern const char lr_sql_pg_0004_admin[];
extern const char lr_sql_pg_0005_billing[];
extern const char lr_sql_pg_0006_runs[];
extern const char lr_sql_pg_0007_admin_links[];
extern const char lr_sql_pg_0009_previews[];
extern const char lr_sql_pg_0008_run_exec[];
extern const char lr_sql_pg_0010_rollups[];
extern const char lr_sql_pg_0011_ops[];
extern const char lr_sql_pg_0012_heartbeats[];
extern const char lr_sql_pg_0013_takeover[];
extern const char lr_sql_pg_0014_set_batches[];

static const struct {
    const char *version;
    const char *sql;
} migrations[] = {{"0001_credits_generations", lr_sql_pg_0001},
                  {"0002_resume", lr_sql_pg_0002},
                  {"0003_lean_reserve", lr_sql_pg_0003},
                  {"0004_admin", lr_sql_pg_0004_admin},
                  {"0005_billing", lr_sql_pg_0005_billing},
                  {"0006_runs", lr_sql_pg_0006_runs},
                  {"0007_admin_links", lr_sql_pg_0007_admin_links},
                  {"0008_run_exec", lr_sql_pg_0008_run_exec},
                  {"0009_previews", lr_sql_pg_0009_previews},
                  {"0010_rollups", lr_sql_pg_0010_rollups},
                  {"0011_ops", lr_sql_pg_0011_ops},
                  {"0012_heartbeats", lr_sql_pg_0012_heartbeats},
                  {"0013_takeover", lr_sql_pg_0013_takeover},
                  {"0014_set_batches", lr_sql_pg_0014_set_batches}};

/* Readiness (db/admin.c) checks that the newest one is applied. */
const char *lr_db_pg_latest_migration(void)
{
    return migrations[sizeof migrations / sizeof *migrations - 1].version;
}

/* The statements of the writer, prepared once per connection. */
enum { S_RESERVE, S_SETTLE, S_STAGE, S_ADJUST, S_BATCH, S_COUNT };

static const struct {
    const char *name, *sql;
    int nparams;
} writes[S_COUNT] = {
    [S_RESERVE] = {"lr_reserve",
                   "SELECT ok, balance, holder, same_request FROM lensroom.reserve($1, $2, $3, "
                   "$4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                   15},
    [S_SETTLE] = {"lr_settle",
                  "SELECT ok, balance FROM lensroom.settle($1, $2, $3, $4, $5, $6, $7, $8, $9, "
                  "$10, $11, $12)",
                  12},
    [S_STAGE] = {"lr_stage",
                 "UPDATE public.generations SET status = $2, stage = $3, "
                 "provider_task_ids = coalesce($4::jsonb, provider_task_ids) WHERE id = $1 "
                 "AND status IN ('pending', 'processing')",
                 4},
    [S_ADJUST] = {"lr_adjust",
                  "SELECT status, balance, transaction_id FROM lensroom.adjust($1, $2, $3, $4, "
                  "NULL, $5, $6)",
                  6},
    [S_BATCH] = {"lr_batch",
                 "SELECT a_kind, a_i, a_ok, a_balance, a_holder, a_same FROM "
                 "lensroom.write_batch($1, $2, $3)",
                 3},
};

/* How many calls one transaction of the writer takes at most. */
enum { BATCH_MAX = 128 };

typedef struct pg_db pg_db;

/* A writer thread's connection, in pipeline mode once ready. */
typedef struct {
    pg_db *d;
    PGconn *c;
} pg_writer;

struct pg_db {
    lr_db base;
    char *url;
    PGconn **conns;
    unsigned *conn_epoch; /* the epoch each connection was last known good in */
    unsigned epoch;       /* advanced by every lost connection (mu) */
    int n;
    int *free_stack;
    int nfree;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pg_writer writer;
    lr_db_batch *batch;
};

/* Server NOTICEs ("already exists, skipping") are routine; keep them out
 * of stderr, which carries the JSON log. */
static void on_notice(void *arg, const char *message)
{
    (void)arg;
    lr_debug("postgres notice: %s", message);
}

static PGconn *connect_db(const char *url)
{
    /* Fail fast when the server is away; keep sessions in UTC. */
    const char *keys[] = {"dbname", "connect_timeout", "options", "application_name", NULL};
    const char *vals[] = {url, "3", "-c TimeZone=UTC", "lensroom", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    PQsetNoticeProcessor(c, on_notice, NULL);
    return c;
}

/* A usable connection, or NULL (returned to the pool by release). An idle
 * connection to a server that restarted still says CONNECTION_OK until
 * its next statement fails; so once any statement has lost its
 * connection, every connection last good before that is reset before its
 * next use, and only the request that met the outage fails. */
static PGconn *acquire(pg_db *d, int *slot)
{
    pthread_mutex_lock(&d->mu);
    while (d->nfree == 0)
        pthread_cond_wait(&d->cv, &d->mu);
    *slot = d->free_stack[--d->nfree];
    unsigned epoch = d->epoch;
    pthread_mutex_unlock(&d->mu);
    PGconn *c = d->conns[*slot];
    if (!c)
        c = d->conns[*slot] = connect_db(d->url);
    else if (PQstatus(c) != CONNECTION_OK || d->conn_epoch[*slot] != epoch)
        PQreset(c);
    if (PQstatus(c) != CONNECTION_OK) {
        lr_error("postgres: cannot connect: %s", PQerrorMessage(c));
        return NULL;
    }
    d->conn_epoch[*slot] = epoch;
    return c;
}

/* A statement lost its connection: the server may have restarted. */
static void connection_lost(pg_db *d)
{
    pthread_mutex_lock(&d->mu);
    d->epoch++;
    pthread_mutex_unlock(&d->mu);
}

static void release(pg_db *d, int slot)
{
    pthread_mutex_lock(&d->mu);
    d->free_stack[d->nfree++] = slot;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

/* Runs sql with text parameters; NULL result means the connection failed
 * (LR_ERR_UNAVAILABLE), a non-OK status is logged and LR_ERR_DB. */
static lr_err run(PGconn *c, const char *sql, int n, const char *const *params, PGresult **out)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        *out = r;
        return LR_OK;
    }
    bool gone = PQstatus(c) != CONNECTION_OK;
    lr_error("postgres: %s", r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    PQclear(r);
    *out = NULL;
    return gone ? LR_ERR_UNAVAILABLE : LR_ERR_DB;
}

/* acquire + run + release for single statements. */
static lr_err query(pg_db *d, const char *sql, int n, const char *const *params, PGresult **out)
{
    *out = NULL;
    int slot;
    PGconn *c = acquire(d, &slot);
    lr_err e = c ? run(c, sql, n, params, out) : LR_ERR_UNAVAILABLE;
    if (c && e == LR_ERR_UNAVAILABLE)
        connection_lost(d);
    release(d, slot);
    return e;
}

static const char *val(PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

/* Hands each row of r, as ncols text columns, to add (rows.h). */
static void each_row(PGresult *r, int ncols, lr_db_row_fn add, void *list)
{
    const char *col[GC_COUNT];
    for (int i = 0; i < PQntuples(r); i++) {
        for (int j = 0; j < ncols; j++)
            col[j] = val(r, i, j);
        add(col, list);
    }
}

/* query, with every result row appended to list by add. */
static lr_err query_rows(pg_db *d, const char *sql, int n, const char *const *params,
                         lr_db_row_fn add, int ncols, void *list)
{
    PGresult *r;
    lr_err e = query(d, sql, n, params, &r);
    if (e == LR_OK)
        each_row(r, ncols, add, list);
    PQclear(r);
    return e;
}

/* A reserve's or settle's answer: one row of lensroom.reserve (ok,
 * balance, holder, same_request), lensroom.settle (ok, balance) or
 * lensroom.write_batch (kind, index, then reserve's four). */
typedef struct {
    bool ok, same_request, has_balance;
    int balance;
    char holder[LR_UUID_LEN + 1]; /* "" when no generation holds the key */
} pg_answer;

/* A call for the writer: statement w of writes[], its text parameters
 * (the caller's, valid until it is answered) and, when answered with
 * LR_OK, its answer (reserve, settle) or result (the others; the
 * caller's to PQclear). user orders the batch, seq keeps a user's calls
 * in the order they came. */
typedef struct {
    lr_db_job base; /* first: the batch hands back lr_db_job pointers */
    int w;
    const char *const *params;
    const char *user;
    size_t seq;
    PGresult *res;
    pg_answer ans;
} pg_job;

static bool set_based(int w)
{
    return w == S_RESERVE || w == S_SETTLE;
}

/* Connects the writer when it has no usable connection: prepares the
 * writes, then enters pipeline mode. */
static bool writer_ready(pg_writer *w)
{
    if (w->c && PQstatus(w->c) == CONNECTION_OK)
        return true;
    PQfinish(w->c);
    w->c = connect_db(w->d->url);
    bool ok = PQstatus(w->c) == CONNECTION_OK;
    for (int i = 0; ok && i < S_COUNT; i++) {
        PGresult *r = PQprepare(w->c, writes[i].name, writes[i].sql, writes[i].nparams, NULL);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            lr_error("postgres: prepare %s: %s", writes[i].name, PQresultErrorMessage(r));
        PQclear(r);
    }
    if (ok && !PQenterPipelineMode(w->c))
        ok = false;
    if (!ok) {
        lr_error("postgres writer: cannot connect: %s", PQerrorMessage(w->c));
        PQfinish(w->c);
        w->c = NULL;
    }
    return ok;
}

/* Row row of r, its answer starting at column col. */
static void decode_answer(PGresult *r, int row, int col, pg_answer *a)
{
    int n = PQnfields(r);
    *a = (pg_answer){.ok = !strcmp(PQgetvalue(r, row, col), "t")};
    a->has_balance = !PQgetisnull(r, row, col + 1);
    a->balance = a->has_balance ? atoi(PQgetvalue(r, row, col + 1)) : 0;
    if (col + 2 < n && !PQgetisnull(r, row, col + 2))
        snprintf(a->holder, sizeof a->holder, "%s", PQgetvalue(r, row, col + 2));
    a->same_request = col + 3 < n && !strcmp(PQgetvalue(r, row, col + 3), "t");
}

/* Reads the next statement's result: LR_OK (*out set), LR_ERR_DB when it
 * failed or was skipped after another's failure, LR_ERR_UNAVAILABLE when
 * the connection broke. */
static lr_err read_result(PGconn *c, int w, PGresult **out)
{
    *out = NULL;
    PGresult *r = PQgetResult(c);
    if (!r)
        return LR_ERR_UNAVAILABLE;
    ExecStatusType st = PQresultStatus(r);
    PQclear(PQgetResult(c)); /* the NULL that ends this call's results */
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        *out = r;
        return LR_OK;
    }
    /* write_batch fails when another process took an idempotency key
     * meanwhile: the batch is rerun call by call, which answers that. */
    if (st == PGRES_FATAL_ERROR)
        lr_log(w == S_BATCH ? LR_LOG_WARN : LR_LOG_ERROR, NULL, "postgres: %s: %s", writes[w].name,
               PQresultErrorMessage(r));
    PQclear(r);
    return PQstatus(c) == CONNECTION_OK ? LR_ERR_DB : LR_ERR_UNAVAILABLE;
}

/* One call's result into j: a reserve's or settle's answer decoded. */
static lr_err read_call(PGconn *c, pg_job *j)
{
    PGresult *r;
    lr_err e = read_result(c, j->w, &r);
    if (e == LR_OK && set_based(j->w)) {
        if (PQntuples(r) == 1)
            decode_answer(r, 0, 0, &j->ans);
        else
            e = LR_ERR_DB;
        PQclear(r);
        r = NULL;
    }
    j->res = r;
    return e;
}

/* Waits for the Sync's result; false when the connection broke. */
static bool read_sync(PGconn *c)
{
    PGresult *r = PQgetResult(c);
    bool ok = r && PQresultStatus(r) == PGRES_PIPELINE_SYNC;
    PQclear(r);
    return ok;
}

static void drop_results(pg_job **jobs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        PQclear(jobs[i]->res);
        jobs[i]->res = NULL;
    }
}

static bool send_call(PGconn *c, pg_job *j)
{
    return PQsendQueryPrepared(c, writes[j->w].name, writes[j->w].nparams, j->params, NULL, NULL,
                               0) == 1;
}

/* Sends jobs[0..n) one call each, in one round trip: with one Sync at
 * the end (together: one transaction, LR_ERR_DB for all if any failed) or
 * a Sync after each (each its own transaction and answer; the fallback
 * when a batch failed as a whole). */
static void send_calls(PGconn *c, pg_job **jobs, size_t n, bool together)
{
    bool sent = true;
    for (size_t i = 0; sent && i < n; i++) {
        sent = send_call(c, jobs[i]);
        if (sent && (!together || i + 1 == n))
            sent = PQpipelineSync(c) == 1;
    }
    for (size_t i = 0; i < n; i++) {
        lr_err e = sent ? read_call(c, jobs[i]) : LR_ERR_UNAVAILABLE;
        if (e != LR_ERR_UNAVAILABLE && (!together || i + 1 == n) && !read_sync(c))
            e = LR_ERR_UNAVAILABLE;
        jobs[i]->base.result = e;
        if (e == LR_ERR_UNAVAILABLE)
            sent = false; /* nothing more will come */
    }
}

/* The parameters of the reserves (or settles, with their user appended)
 * among jobs, as a JSON array of arrays in the order of the per-call
 * functions' parameters; lensroom.write_batch reads them by position. */
static char *calls_json(pg_job **jobs, size_t n, int w)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        if (jobs[i]->w != w)
            continue;
        json_t *row = json_array();
        for (int p = 0; p <= writes[w].nparams; p++) {
            const char *v = p < writes[w].nparams ? jobs[i]->params[p]
                            : w == S_SETTLE       ? jobs[i]->user
                                                  : NULL;
            if (p < writes[w].nparams || w == S_SETTLE)
                json_array_append_new(row, v ? json_string_nocheck(v) : json_null());
        }
        json_array_append_new(a, row);
    }
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

/* The users of the calls that run after write_batch in the same
 * transaction (adjust): write_batch locks their balances too, all in
 * user order. */
static char *lock_json(pg_job **jobs, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        if (jobs[i]->w == S_ADJUST && jobs[i]->user)
            json_array_append_new(a, json_string_nocheck(jobs[i]->user));
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

/* write_batch's rows into the answers of its reserves and settles. */
static lr_err spread_answers(PGresult *r, pg_job **jobs, size_t n)
{
    pg_job *calls[2][BATCH_MAX];
    size_t count[2] = {0, 0};
    for (size_t i = 0; i < n; i++)
        if (set_based(jobs[i]->w))
            calls[jobs[i]->w == S_SETTLE][count[jobs[i]->w == S_SETTLE]++] = jobs[i];
    if ((size_t)PQntuples(r) != count[0] + count[1])
        return LR_ERR_DB;
    for (int row = 0; row < PQntuples(r); row++) {
        int kind = PQgetvalue(r, row, 0)[0] == 's';
        long i = atol(PQgetvalue(r, row, 1)) - 1;
        if (i < 0 || (size_t)i >= count[kind])
            return LR_ERR_DB;
        decode_answer(r, row, 2, &calls[kind][i]->ans);
    }
    return LR_OK;
}

/* The batch in one transaction (one Sync): the stage writes, then the
 * reserves and settles as one call of lensroom.write_batch, then the
 * adjusts. Every job's result is LR_OK, or LR_ERR_DB for all when any
 * statement failed (the transaction rolled back), or LR_ERR_UNAVAILABLE. */
static void send_together(PGconn *c, pg_job **jobs, size_t n)
{
    char *json[3] = {calls_json(jobs, n, S_RESERVE), calls_json(jobs, n, S_SETTLE),
                     lock_json(jobs, n)};
    pg_job batch = {.w = S_BATCH, .params = (const char *const *)json};
    pg_job *order[BATCH_MAX + 1];
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (jobs[i]->w == S_STAGE)
            order[m++] = jobs[i];
    order[m++] = &batch;
    for (size_t i = 0; i < n; i++)
        if (jobs[i]->w == S_ADJUST)
            order[m++] = jobs[i];
    bool sent = true;
    for (size_t i = 0; sent && i < m; i++)
        sent = send_call(c, order[i]);
    sent = sent && PQpipelineSync(c) == 1;
    lr_err all = sent ? LR_OK : LR_ERR_UNAVAILABLE;
    for (size_t i = 0; i < m && all != LR_ERR_UNAVAILABLE; i++) {
        lr_err e = read_call(c, order[i]);
        if (e == LR_OK && order[i] == &batch && spread_answers(batch.res, jobs, n) != LR_OK) {
            /* the statement ran and the Sync commits it: rerunning the
             * calls would charge (or grant) twice; their outcome is unknown */
            lr_error("postgres writer: write_batch's answer does not match its %zu calls", n);
            e = LR_ERR_UNAVAILABLE;
        }
        if (e != LR_OK)
            all = e;
    }
    PQclear(batch.res);
    if (all != LR_ERR_UNAVAILABLE && !read_sync(c))
        all = LR_ERR_UNAVAILABLE;
    for (size_t i = 0; i < n; i++)
        jobs[i]->base.result = all;
    for (int i = 0; i < 3; i++)
        free(json[i]);
}

/* By user, and a user's calls in the order they came. */
static int by_user(const void *a, const void *b)
{
    const pg_job *x = *(pg_job *const *)a, *y = *(pg_job *const *)b;
    int d = strcmp(x->user ? x->user : "", y->user ? y->user : "");
    return d ? d : (x->seq > y->seq) - (x->seq < y->seq);
}

/* lensroom.settle's refund: $7 (pg_settle_async's parameter order). */
enum { SETTLE_REFUND = 6 };

/* Whether j may give its user credits (a settle with a refund, any
 * adjust) or, for an adjust, take them. */
static bool moves_credits(const pg_job *j)
{
    return j->w == S_ADJUST || (j->w == S_SETTLE && atoi(j->params[SETTLE_REFUND]) > 0);
}

/* write_batch decides a batch's reserves before its settles, and the
 * adjusts run after it: a reserve that came after a refund or an adjust
 * of its own user would not see what they moved (a refund, then a reserve
 * the refund pays for, would be refused). The first such reserve in the
 * order the calls came, or n: the batch is cut there. The users are the
 * callers' (a settle's is the generation's owner, whom write_batch
 * refunds); a refund whose user the caller did not name counts for every
 * user. */
static size_t first_reserve_after_credits(pg_job **jobs, size_t n)
{
    const char *moved[BATCH_MAX];
    size_t m = 0;
    bool anyone = false;
    for (size_t i = 0; i < n; i++) {
        if (jobs[i]->w == S_RESERVE) {
            bool cut = anyone;
            for (size_t k = 0; !cut && k < m; k++)
                cut = jobs[i]->user && !strcmp(moved[k], jobs[i]->user);
            if (cut)
                return i;
        } else if (moves_credits(jobs[i])) {
            if (jobs[i]->user)
                moved[m++] = jobs[i]->user;
            else
                anyone = true;
        }
    }
    return n;
}

/* The writer thread's batch (batch.h): in one transaction, or in two or
 * more where a reserve must see an earlier refund or adjust of its user. */
static void run_batch(void *wp, lr_db_job **jobs_, size_t n)
{
    pg_writer *w = wp;
    pg_job **jobs = (pg_job **)jobs_;
    size_t cut = first_reserve_after_credits(jobs, n);
    if (cut > 0 && cut < n) {
        run_batch(wp, jobs_, cut);
        run_batch(wp, jobs_ + cut, n - cut);
        return;
    }
    if (!writer_ready(w)) {
        for (size_t i = 0; i < n; i++)
            jobs[i]->base.result = LR_ERR_UNAVAILABLE;
        return;
    }
    size_t calls = 0;
    for (size_t i = 0; i < n; i++) {
        jobs[i]->seq = i; /* the queue is FIFO */
        calls += set_based(jobs[i]->w);
    }
    qsort(jobs, n, sizeof *jobs, by_user);
    if (calls < 2) /* one call costs less than write_batch's set-up */
        send_calls(w->c, jobs, n, true);
    else
        send_together(w->c, jobs, n);
    bool failed = false, gone = false;
    for (size_t i = 0; i < n; i++) {
        failed |= jobs[i]->base.result == LR_ERR_DB;
        gone |= jobs[i]->base.result == LR_ERR_UNAVAILABLE;
    }
    if (gone) { /* whether the batch committed is unknown: report it so */
        drop_results(jobs, n);
        for (size_t i = 0; i < n; i++)
            jobs[i]->base.result = LR_ERR_UNAVAILABLE;
        PQfinish(w->c);
        w->c = NULL;
    } else if (failed && n > 1) { /* rolled back as a whole: once more, one by one */
        drop_results(jobs, n);
        send_calls(w->c, jobs, n, false);
    }
}

/* Runs writes[w] with params as a call of the writer's next batch; *out
 * as query's. */
static lr_err batch_query(pg_db *d, int w, const char *const *params, const char *user,
                          PGresult **out)
{
    pg_job j = {.w = w, .params = params, .user = user};
    lr_err e = lr_db_batch_submit(d->batch, &j.base);
    *out = e == LR_OK ? j.res : NULL;
    if (e != LR_OK)
        PQclear(j.res);
    return e;
}

static lr_err pg_migrate(lr_db *db)
{
    pg_db *d = (pg_db *)db;
    int slot;
    PGconn *c = acquire(d, &slot);
    if (!c) {
        release(d, slot);
        return LR_ERR_UNAVAILABLE;
    }
    lr_err e = LR_OK;
    PGresult *r = NULL;
    for (size_t i = 0; i < sizeof migrations / sizeof *migrations && e == LR_OK; i++) {
        /* One transaction per migration; the advisory lock makes processes
         * that start together apply it once, one after the other. */
        const char *p[] = {migrations[i].version};
        if ((e = run(c, "BEGIN", 0, NULL, &r)) != LR_OK)
            break;
        PQclear(r);
        if ((e = run(c, "SELECT pg_advisory_xact_lock(7261001)", 0, NULL, &r)) != LR_OK)
            goto rollback;
        PQclear(r);
        if ((e = run(c, "CREATE SCHEMA IF NOT EXISTS lensroom", 0, NULL, &r)) != LR_OK)
            goto rollback;
        PQclear(r);
        if ((e = run(c,
                     "CREATE TABLE IF NOT EXISTS lensroom.schema_migrations ("
                     "version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                     0, NULL, &r)) != LR_OK)
            goto rollback;
        PQclear(r);
        if ((e = run(c, "SELECT 1 FROM lensroom.schema_migrations WHERE version = $1", 1, p, &r)) !=
            LR_OK)
            goto rollback;
        int seen = PQntuples(r) > 0;
        PQclear(r);
        if (!seen) {
            r = PQexec(c, migrations[i].sql); /* several statements: simple protocol */
            if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
                lr_error("postgres migration %s failed: %s", migrations[i].version,
                         PQresultErrorMessage(r));
                PQclear(r);
                e = LR_ERR_DB;
                goto rollback;
            }
            PQclear(r);
            if ((e = run(c, "INSERT INTO lensroom.schema_migrations (version) VALUES ($1)", 1, p,
                         &r)) != LR_OK)
                goto rollback;
            PQclear(r);
            lr_info("migration applied: %s", migrations[i].version);
        }
        if ((e = run(c, "COMMIT", 0, NULL, &r)) != LR_OK)
            goto rollback;
        PQclear(r);
        continue;
    rollback:
        PQclear(PQexec(c, "ROLLBACK"));
    }
    release(d, slot);
    return e;
}

static lr_err pg_ping(lr_db *db)
{
    PGresult *r;
    lr_err e = query((pg_db *)db,
                     "SELECT (SELECT 1 FROM public.credits LIMIT 1), "
                     "(SELECT 1 FROM public.credit_transactions LIMIT 1), "
                     "(SELECT 1 FROM public.generations LIMIT 1), "
                     "'public.get_user_balance(uuid)'::regprocedure, "
                     "'public.adjust_credits(uuid,integer,text,text,uuid,jsonb)'::regprocedure",
                     0, NULL, &r);
    PQclear(r);
    return e;
}

/* A posted write (db.h's asynchronous calls): the job, its parameters
 * (texts the caller's frame would have held), how to read its answer and
 * the caller's done. */
typedef struct posted {
    pg_job j;
    const char *p[15];
    char n[4][32];
    char *json[3];
    lr_err (*read)(struct posted *q, const pg_answer *a);
    int *balance;
    lr_key_holder *holder;
    lr_db_done_fn done;
    void *ctx;
} posted;

static void posted_complete(lr_db_job *j)
{
    posted *q = (posted *)j;
    lr_err e = j->result;
    if (e == LR_OK)
        e = q->read(q, &q->j.ans);
    for (int i = 0; i < 3; i++)
        free(q->json[i]);
    q->done(q->ctx, e);
    free(q);
}

static void post(pg_db *d, posted *q, int w, const char *user)
{
    q->j = (pg_job){.base.complete = posted_complete, .w = w, .params = q->p, .user = user};
    lr_db_batch_post(d->batch, &q->j.base);
}

/* reserve's answer: charged, or the key's holder, or short. */
static lr_err read_reserve(posted *q, const pg_answer *a)
{
    *q->balance = a->balance;
    if (a->ok)
        return LR_OK;
    if (!a->holder[0])
        return LR_ERR_INSUFFICIENT;
    snprintf(q->holder->generation_id, sizeof q->holder->generation_id, "%s", a->holder);
    q->holder->same_request = a->same_request;
    return LR_ERR_CONFLICT;
}

static posted *reserve_call(const lr_reserve_req *r, int *balance, lr_key_holder *holder)
{
    posted *q = lr_xcalloc(1, sizeof *q);
    snprintf(q->n[0], sizeof q->n[0], "%d", r->outputs_count);
    snprintf(q->n[1], sizeof q->n[1], "%d", r->cost);
    q->json[0] = r->params ? json_dumps(r->params, JSON_COMPACT) : NULL;
    const char *p[] = {r->generation_id,   r->user_id,      r->type,
                       r->model,           r->provider,     r->prompt,
                       q->json[0],         q->n[0],         q->n[1],
                       r->created_at,      r->owner,        r->lease_until,
                       r->idempotency_key, r->request_hash, r->key_expired_before};
    memcpy(q->p, p, sizeof p);
    q->read = read_reserve;
    q->balance = balance;
    q->holder = holder;
    return q;
}

static void pg_reserve_async(lr_db *db, const lr_reserve_req *r, int *balance,
                             lr_key_holder *holder, lr_db_done_fn done, void *ctx)
{
    posted *q = reserve_call(r, balance, holder);
    q->done = done;
    q->ctx = ctx;
    post((pg_db *)db, q, S_RESERVE, r->user_id);
}

/* The blocking calls wait for the posted ones' answer. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    lr_err e;
} waited;

static void wake(void *ctx, lr_err e)
{
    waited *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->e = e;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static lr_err wait_for(waited *w)
{
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    return w->e;
}

static lr_err pg_reserve(lr_db *db, const lr_reserve_req *r, int *balance, lr_key_holder *holder)
{
    waited w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    pg_reserve_async(db, r, balance, holder, wake, &w);
    return wait_for(&w);
}

static lr_err pg_set_stage(lr_db *db, const char *id, const char *status, const char *stage,
                           const lr_strv *task_ids)
{
    char *tasks = task_ids ? lr_db_strv_dump(task_ids) : NULL;
    const char *p[] = {id, status, stage, tasks};
    PGresult *r;
    lr_err e = batch_query((pg_db *)db, S_STAGE, p, NULL, &r);
    free(tasks);
    if (e == LR_OK)
        e = atoi(PQcmdTuples(r)) > 0 ? LR_OK : LR_ERR_CONFLICT;
    PQclear(r);
    return e;
}

/* settle's answer: settled (with the balance), or already final. */
static lr_err read_settle(posted *q, const pg_answer *a)
{
    if (!a->ok)
        return LR_ERR_CONFLICT;
    *q->balance = a->balance;
    return LR_OK;
}

static void pg_settle_async(lr_db *db, const lr_settle_req *s, int *balance, lr_db_done_fn done,
                            void *ctx)
{
    posted *q = lr_xcalloc(1, sizeof *q);
    snprintf(q->n[0], sizeof q->n[0], "%d", s->succeeded_count);
    snprintf(q->n[1], sizeof q->n[1], "%d", s->failed_count);
    snprintf(q->n[2], sizeof q->n[2], "%d", s->refund);
    snprintf(q->n[3], sizeof q->n[3], "%lld", (long long)s->duration_ms);
    q->json[0] = lr_db_strv_dump(&s->result_urls);
    q->json[1] = lr_db_strv_dump(&s->task_ids);
    q->json[2] = lr_db_strv_dump(&s->storage_keys);
    const char *p[] = {s->generation_id, s->status, q->json[0], q->json[1],
                       q->n[0],          q->n[1],   q->n[2],    s->error_code,
                       s->error_message, q->n[3],   s->text,    q->json[2]};
    memcpy(q->p, p, sizeof p);
    q->read = read_settle;
    q->balance = balance;
    q->done = done;
    q->ctx = ctx;
    post((pg_db *)db, q, S_SETTLE, s->user_id);
}

static lr_err pg_settle(lr_db *db, const lr_settle_req *s, int *balance)
{
    waited w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    pg_settle_async(db, s, balance, wake, &w);
    return wait_for(&w);
}

static lr_err pg_balance(lr_db *db, const char *user_id, int *balance)
{
    const char *p[] = {user_id};
    PGresult *r;
    lr_err e = query((pg_db *)db, "SELECT amount FROM public.credits WHERE user_id = $1", 1, p, &r);
    if (e == LR_OK) {
        *balance = PQntuples(r) ? atoi(PQgetvalue(r, 0, 0)) : 0;
        PQclear(r);
    }
    return e;
}

static lr_err pg_adjust(lr_db *db, const lr_adjust_req *q, lr_adjust_result *out)
{
    memset(out, 0, sizeof *out);
    char amount[16];
    snprintf(amount, sizeof amount, "%d", q->amount);
    char *meta = q->metadata ? json_dumps(q->metadata, JSON_COMPACT) : NULL;
    const char *p[] = {q->user_id, amount, q->type, q->description, meta, q->idempotency_key};
    PGresult *r;
    lr_err e = batch_query((pg_db *)db, S_ADJUST, p, q->user_id, &r);
    free(meta);
    if (e != LR_OK)
        return e;
    const char *status = PQgetvalue(r, 0, 0);
    out->new_balance = val(r, 0, 1) ? atoi(val(r, 0, 1)) : 0;
    if (val(r, 0, 2))
        snprintf(out->transaction_id, sizeof out->transaction_id, "%s", val(r, 0, 2));
    if (!strcmp(status, "insufficient"))
        e = LR_ERR_INSUFFICIENT;
    else if (!strcmp(status, "conflict"))
        e = LR_ERR_CONFLICT;
    else
        out->replayed = !strcmp(status, "replayed");
    PQclear(r);
    return e;
}

static lr_err pg_get_generation(lr_db *db, const char *user_id, const char *id, lr_generation *out)
{
    const char *p[] = {id, user_id};
    lr_generation_list l = {0};
    lr_err e = query_rows((pg_db *)db,
                          "SELECT " LR_PG_GEN_COLUMNS " FROM public.generations g "
                          "WHERE g.id = $1::uuid AND ($2::uuid IS NULL OR g.user_id = $2::uuid) "
                          "AND g.deleted_at IS NULL",
                          2, p, lr_db_add_generation, GC_COUNT, &l);
    return lr_db_first_generation(e, &l, out);
}

static lr_err pg_list_generations(lr_db *db, const char *user_id, const lr_gen_filter *f,
                                  lr_generation_list *out)
{
    char limit[16];
    snprintf(limit, sizeof limit, "%d", f->limit);
    const char *p[] = {user_id, f->status, f->type, f->before_created_at, f->before_id, limit};
    *out = (lr_generation_list){0};
    return query_rows(
        (pg_db *)db,
        "SELECT " LR_PG_GEN_COLUMNS " FROM public.generations g WHERE g.user_id = $1 "
        "AND g.deleted_at IS NULL AND ($2::text IS NULL OR g.status = $2) "
        "AND ($3::text IS NULL OR g.type = $3) "
        "AND ($4::timestamptz IS NULL OR (g.created_at, g.id) < ($4::timestamptz, $5::uuid)) "
        "ORDER BY g.created_at DESC, g.id DESC LIMIT $6",
        6, p, lr_db_add_generation, GC_COUNT, out);
}

static lr_err pg_list_transactions(lr_db *db, const char *user_id, const char *before_created_at,
                                   const char *before_id, int limit, lr_ledger_list *out)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[] = {user_id, before_created_at, before_id, lim};
    *out = (lr_ledger_list){0};
    return query_rows(
        (pg_db *)db,
        "SELECT id, amount, type, description, coalesce(metadata, '{}'::jsonb), generation_id, "
        "lensroom.iso(created_at) FROM public.credit_transactions WHERE user_id = $1 "
        "AND ($2::timestamptz IS NULL OR (created_at, id) < ($2::timestamptz, $3::uuid)) "
        "ORDER BY created_at DESC, id DESC LIMIT $4",
        4, p, lr_db_add_ledger_row, LC_COUNT, out);
}

static lr_err pg_mark_deleted(lr_db *db, const char *user_id, const char *id, lr_strv *keys)
{
    const char *p[] = {id, user_id};
    PGresult *r;
    *keys = (lr_strv){0};
    /* One statement: the CTE sees the row before the update, so a running
     * generation (not updated) is told apart from a missing one. */
    lr_err e = query((pg_db *)db,
                     "WITH g AS (SELECT status FROM public.generations WHERE id = $1::uuid "
                     "AND user_id = $2::uuid AND deleted_at IS NULL), "
                     "u AS (UPDATE public.generations SET deleted_at = now(), purge_pending = true "
                     "WHERE id = $1::uuid AND user_id = $2::uuid AND deleted_at IS NULL "
                     "AND status NOT IN ('pending', 'processing') RETURNING storage_keys) "
                     "SELECT (SELECT status FROM g), (SELECT storage_keys FROM u)",
                     2, p, &r);
    if (e != LR_OK)
        return e;
    if (!val(r, 0, 0))
        e = LR_ERR_NOT_FOUND;
    else if (!val(r, 0, 1))
        e = LR_ERR_CONFLICT;
    else
        lr_db_strv_parse(val(r, 0, 1), keys);
    PQclear(r);
    return e;
}

static lr_err pg_pending_purges(lr_db *db, int limit, lr_purge_list *rows)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[] = {lim};
    *rows = (lr_purge_list){0};
    return query_rows((pg_db *)db,
                      "SELECT id, storage_keys FROM public.generations WHERE purge_pending "
                      "LIMIT $1",
                      1, p, lr_db_add_purge, PC_COUNT, rows);
}

static lr_err pg_purged(lr_db *db, const char *id)
{
    const char *p[] = {id};
    PGresult *r;
    lr_err e = query((pg_db *)db,
                     "UPDATE public.generations SET purge_pending = false WHERE id = $1", 1, p, &r);
    PQclear(r);
    return e;
}

static lr_err pg_preview_claim(lr_db *db, const char *id, lr_strv *keys)
{
    const char *p[] = {id};
    PGresult *r;
    *keys = (lr_strv){0};
    lr_err e = query((pg_db *)db,
                     "UPDATE public.generations SET preview_status = 'processing' "
                     "WHERE id = $1::uuid AND status = 'success' "
                     "AND type IN ('photo', 'video', 'edit') AND deleted_at IS NULL "
                     "AND coalesce(preview_status, 'none') IN ('none', 'processing') "
                     "RETURNING storage_keys",
                     1, p, &r);
    if (e != LR_OK)
        return e;
    if (PQntuples(r) == 0)
        e = LR_ERR_NOT_FOUND;
    else
        lr_db_strv_parse(val(r, 0, 0), keys);
    PQclear(r);
    return e;
}

static lr_err pg_preview_pending(lr_db *db, const char *since, int limit, lr_strv *ids)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[] = {since, lim};
    *ids = (lr_strv){0};
    return query_rows((pg_db *)db,
                      "SELECT id FROM public.generations WHERE status = 'success' "
                      "AND type IN ('photo', 'video', 'edit') AND deleted_at IS NULL "
                      "AND (preview_status = 'processing' "
                      "OR (coalesce(preview_status, 'none') = 'none' "
                      "AND finished_at > $1::timestamptz)) ORDER BY finished_at LIMIT $2",
                      2, p, lr_db_add_string, 1, ids);
}

static lr_err pg_preview_finish(lr_db *db, const lr_preview_req *q)
{
    char *preview = q->preview ? json_dumps(q->preview, JSON_COMPACT) : NULL;
    char *keys = lr_db_strv_dump(&q->keys);
    const char *p[] = {q->generation_id,         q->status, q->poster_path, q->preview_path,
                       preview ? preview : "{}", keys};
    PGresult *r;
    lr_err e =
        query((pg_db *)db,
              "UPDATE public.generations SET preview_status = $2, poster_path = $3, "
              "preview_path = $4, "
              "metadata = jsonb_set(coalesce(metadata, '{}'::jsonb), '{preview}', $5::jsonb), "
              "storage_keys = (SELECT coalesce(jsonb_agg(DISTINCT k), '[]'::jsonb) FROM "
              "(SELECT jsonb_array_elements(storage_keys) UNION ALL "
              "SELECT jsonb_array_elements($6::jsonb)) AS x(k)) "
              "WHERE id = $1::uuid AND preview_status = 'processing' "
              "AND deleted_at IS NULL RETURNING id",
              6, p, &r);
    free(preview);
    free(keys);
    if (e == LR_OK && PQntuples(r) == 0)
        e = LR_ERR_NOT_FOUND;
    PQclear(r);
    return e;
}

/* The heartbeat is one row, whatever the backlog; the rows' own leases
 * are only touched to give them up (a lease_until already past: the
 * guard is evaluated once, before any row is read). Heartbeats of
 * processes gone for a day are dropped on the way. */
/* The heartbeat is dated by the database's clock: lease_until becomes a
 * duration from this process's now, added to the database's now() when the
 * statement runs. A server whose clock is behind the database's, or that
 * waited for a pooled connection, would otherwise write a heartbeat that
 * is shorter than meant, or already over. */
static lr_err pg_renew_leases(lr_db *db, const char *owner, const char *lease_until)
{
    int64_t until = lr_time_parse_iso(lease_until);
    if (until < 0)
        return LR_ERR_INVALID;
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", (long long)(until - lr_now_ms()));
    const char *p[] = {owner, ms};
    PGresult *r;
    lr_err e = query(
        (pg_db *)db,
        "WITH t AS (SELECT now() + $2::bigint * interval '1 millisecond' AS at), "
        "beat AS (INSERT INTO lensroom.instances (owner, alive_until) "
        "SELECT $1::uuid, t.at FROM t WHERE $2::bigint > 0 "
        "ON CONFLICT (owner) DO UPDATE SET alive_until = excluded.alive_until), "
        "gone AS (DELETE FROM lensroom.instances WHERE (owner <> $1::uuid "
        "AND alive_until < now() - interval '1 day') OR (owner = $1::uuid AND $2::bigint <= 0)), "
        "runs AS (UPDATE public.runs SET lease_until = (SELECT at FROM t) "
        "WHERE $2::bigint <= 0 AND claimed_by = $1::uuid AND status = 'running') "
        "UPDATE public.generations SET lease_until = (SELECT at FROM t) "
        "WHERE $2::bigint <= 0 AND claimed_by = $1::uuid AND status IN ('pending', 'processing')",
        2, p, &r);
    PQclear(r);
    return e;
}

static void add_reaped(const char *const *col, void *out)
{
    lr_reaped_list *l = out;
    l->v = lr_db_grow(l->v, l->n, sizeof *l->v);
    snprintf(l->v[l->n].id, sizeof l->v[l->n].id, "%s", col[0]);
    l->v[l->n++].refund = atoi(col[1]);
}

static lr_err pg_reap_expired(lr_db *db, const char *owner, int limit, bool dead,
                              lr_reaped_list *reaped)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[] = {owner, lim, dead ? "t" : "f"};
    *reaped = (lr_reaped_list){0};
    return query_rows((pg_db *)db,
                      "SELECT generation_id, refund FROM lensroom.reap_expired($1, $2, $3)", 3, p,
                      add_reaped, 2, reaped);
}

/* The join and condition that pick, after "FROM <table> x", the rows
 * abandoned for owner $1, ended heartbeats counting when $4 (rule:
 * lensroom.abandoned, migration 0013). */
#define ABANDONED_BY_1                                                                             \
    "LEFT JOIN lensroom.instances i ON i.owner = x.claimed_by "                                    \
    "WHERE lensroom.abandoned($1::uuid, x.claimed_by, x.lease_until, i.alive_until, $4::boolean) "

/* Claims with FOR UPDATE SKIP LOCKED: concurrent claimers skip each
 * other's rows instead of waiting for them. */
static lr_err pg_claim_resumable(lr_db *db, const char *owner, const char *lease_until, int limit,
                                 bool dead, lr_generation_list *rows)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[] = {owner, lease_until, lim, dead ? "t" : "f"};
    *rows = (lr_generation_list){0};
    return query_rows(
        (pg_db *)db,
        "UPDATE public.generations g SET claimed_by = $1::uuid, lease_until = $2::timestamptz "
        "WHERE g.id IN (SELECT x.id FROM public.generations x " ABANDONED_BY_1
        "AND x.status IN ('pending', 'processing') "
        "AND coalesce(x.provider_task_ids, '[]'::jsonb) <> '[]'::jsonb AND x.run_id IS NULL "
        "LIMIT $3 FOR UPDATE OF x SKIP LOCKED) RETURNING " LR_PG_GEN_COLUMNS,
        4, p, lr_db_add_generation, GC_COUNT, rows);
}

static lr_err pg_audit(lr_db *db, lr_violation_list *violations)
{
    *violations = (lr_violation_list){0};
    return query_rows((pg_db *)db, lr_sql_audit, 0, NULL, lr_db_add_violation, VC_COUNT,
                      violations);
}

/* ---- price quotes ---- */

static lr_err pg_save_quote(lr_db *db, const lr_quote_req *q)
{
    char total[16], *lines = json_dumps(q->lines, JSON_COMPACT);
    snprintf(total, sizeof total, "%d", q->total);
    const char *p[] = {q->id, q->user_id,    lines ? lines : "[]",
                       total, q->created_at, q->expires_at};
    PGresult *r;
    lr_err e =
        query((pg_db *)db,
              "WITH gone AS (DELETE FROM public.quotes "
              "WHERE expires_at < now() - interval '1 day') "
              "INSERT INTO public.quotes (id, user_id, lines, total, created_at, expires_at) "
              "VALUES ($1, $2, $3::jsonb, $4, $5, $6)",
              6, p, &r);
    PQclear(r);
    free(lines);
    return e;
}

static lr_err pg_get_quote(lr_db *db, const char *user_id, const char *id, lr_quote *out)
{
    const char *p[] = {id, user_id};
    PGresult *r;
    *out = (lr_quote){0};
    lr_err e = query((pg_db *)db,
                     "SELECT lines::text, total, expires_at < now() FROM public.quotes "
                     "WHERE id = $1::uuid AND user_id = $2::uuid",
                     2, p, &r);
    if (e == LR_OK && PQntuples(r) == 1) {
        out->lines = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
        if (!out->lines)
            out->lines = json_array();
        out->total = atoi(PQgetvalue(r, 0, 1));
        out->expired = !strcmp(PQgetvalue(r, 0, 2), "t");
    } else if (e == LR_OK) {
        e = LR_ERR_NOT_FOUND;
    }
    PQclear(r);
    return e;
}

/* ---- graph runs ---- */

/* The nodes as lensroom.reserve_run takes them. */
static json_t *run_nodes_json(const lr_run_reserve_req *r)
{
    json_t *a = json_array();
    for (size_t i = 0; i < r->n; i++) {
        const lr_run_node_req *n = &r->nodes[i];
        json_t *o =
            json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s?, s:O?, s:i, s:i, s:s?}", "id",
                      n->generation_id, "node", n->node_id, "type", n->type, "model", n->model,
                      "provider", n->provider, "prompt", n->prompt, "params", n->params, "outputs",
                      n->outputs_count, "cost", n->cost, "cache_key", n->cache_key);
        if (n->cached_from)
            json_object_update_new(o, json_pack("{s:s, s:O?, s:s?}", "cached_from", n->cached_from,
                                                "urls", n->result_urls, "text", n->text));
        json_array_append_new(a, o);
    }
    return a;
}

static lr_err pg_reserve_run(lr_db *db, const lr_run_reserve_req *r, int *balance,
                             lr_key_holder *holder)
{
    json_t *nodes = run_nodes_json(r);
    char total[16], *graph = json_dumps(r->graph, JSON_COMPACT),
                    *nodes_s = json_dumps(nodes, JSON_COMPACT),
                    *meta = json_dumps(r->charge_meta, JSON_COMPACT);
    json_decref(nodes);
    snprintf(total, sizeof total, "%d", r->total);
    const char *p[] = {
        r->run_id,          r->user_id, total,          graph ? graph : "{}", nodes_s,
        meta ? meta : "{}", r->owner,   r->lease_until, r->idempotency_key,   r->request_hash,
        r->created_at};
    PGresult *res;
    lr_err e = query((pg_db *)db,
                     "SELECT ok, balance, holder, same_request FROM lensroom.reserve_run($1, $2, "
                     "$3, $4::jsonb, $5::jsonb, $6::jsonb, $7, $8, $9, $10, $11)",
                     11, p, &res);
    if (e == LR_OK && PQntuples(res) == 1) {
        *balance = val(res, 0, 1) ? atoi(val(res, 0, 1)) : 0;
        if (val(res, 0, 2)) {
            snprintf(holder->generation_id, sizeof holder->generation_id, "%s", val(res, 0, 2));
            holder->same_request = !strcmp(PQgetvalue(res, 0, 3), "t");
            e = LR_ERR_CONFLICT;
        } else if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
            e = LR_ERR_INSUFFICIENT;
        }
    } else if (e == LR_OK) {
        e = LR_ERR_DB;
    }
    PQclear(res);
    free(graph);
    free(nodes_s);
    free(meta);
    return e;
}

static lr_err pg_get_run(lr_db *db, const char *user_id, const char *id, lr_run *out)
{
    *out = (lr_run){0};
    if (!lr_uuid_valid(id, strlen(id)))
        return LR_ERR_NOT_FOUND;
    const char *p[] = {id, user_id};
    lr_err e = query_rows((pg_db *)db,
                          "SELECT " LR_PG_RUN_COLUMNS " FROM public.runs r WHERE r.id = $1::uuid "
                          "AND ($2::uuid IS NULL OR r.user_id = $2::uuid)",
                          2, p, lr_db_set_run, RC_COUNT, out);
    return lr_db_found_run(e, out);
}

static lr_err pg_list_run_nodes(lr_db *db, const char *run_id, lr_run_node_list *out)
{
    *out = (lr_run_node_list){0};
    const char *p[] = {run_id};
    lr_err e = query_rows((pg_db *)db,
                          "SELECT " LR_PG_NODE_COLUMNS " FROM public.generations g "
                          "WHERE g.run_id = $1::uuid ORDER BY g.created_at, g.node_id",
                          1, p, lr_db_add_run_node, NC_COUNT, out);
    if (e != LR_OK)
        lr_run_node_list_clear(out);
    return e;
}

/* A statement that must change a row: CONFLICT when it changed none. */
static lr_err changing(pg_db *d, const char *sql, int n, const char *const *p)
{
    PGresult *r;
    lr_err e = query(d, sql, n, p, &r);
    if (e == LR_OK && strcmp(PQcmdTuples(r), "0") == 0)
        e = LR_ERR_CONFLICT;
    PQclear(r);
    return e;
}

static lr_err pg_start_node(lr_db *db, const char *generation_id, const char *prompt,
                            const char *image_url)
{
    const char *p[] = {generation_id, prompt, image_url};
    return changing((pg_db *)db,
                    "UPDATE public.generations SET status = 'processing', prompt = $2, "
                    "metadata = CASE WHEN $3::text IS NULL THEN metadata "
                    "ELSE coalesce(metadata, '{}'::jsonb) || jsonb_build_object('image_url', "
                    "$3::text) END WHERE id = $1::uuid AND status = 'pending'",
                    3, p);
}

static lr_err pg_finish_run(lr_db *db, const char *id, const char *status, const char *error_node,
                            const char *error_code, const char *error_message)
{
    const char *p[] = {id, status, error_node, error_code, error_message};
    return changing((pg_db *)db,
                    "UPDATE public.runs SET status = $2, error_node = $3, error_code = $4, "
                    "error_message = $5, updated_at = now(), finished_at = now(), "
                    "lease_until = NULL WHERE id = $1::uuid AND status = 'running'",
                    5, p);
}

static lr_err pg_find_cached(lr_db *db, const char *user_id, const char *cache_key,
                             const char *from_run, lr_run_node *out)
{
    const char *p[] = {user_id, cache_key, from_run};
    lr_run_node_list l = {0};
    lr_err e = query_rows((pg_db *)db,
                          "SELECT " LR_PG_NODE_COLUMNS " FROM public.generations g "
                          "WHERE g.user_id = $1::uuid AND g.cache_key = $2 "
                          "AND g.status = 'success' AND g.succeeded_count = g.outputs_count "
                          "AND g.deleted_at IS NULL AND ($3::uuid IS NULL OR g.run_id = $3::uuid) "
                          "ORDER BY g.created_at DESC LIMIT 1",
                          3, p, lr_db_add_run_node, NC_COUNT, &l);
    return lr_db_first_run_node(e, &l, out);
}

static void add_run_id(const char *const *col, void *out)
{
    lr_strv *ids = out;
    ids->v = lr_db_grow(ids->v, ids->n, sizeof *ids->v);
    ids->v[ids->n++] = lr_xstrdup(col[0]);
}

/* Runs and their unfinished nodes claimed together; concurrent claimers
 * skip each other's runs. */
static lr_err pg_claim_runs(lr_db *db, const char *owner, const char *lease_until, int limit,
                            bool dead, lr_strv *ids)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[] = {owner, lease_until, lim, dead ? "t" : "f"};
    *ids = (lr_strv){0};
    lr_err e =
        query_rows((pg_db *)db,
                   "WITH c AS (UPDATE public.runs r SET claimed_by = $1::uuid, "
                   "lease_until = $2::timestamptz WHERE r.id IN (SELECT x.id FROM public.runs "
                   "x " ABANDONED_BY_1 "AND x.status = 'running' ORDER BY x.created_at LIMIT $3 "
                   "FOR UPDATE OF x SKIP LOCKED) RETURNING r.id), "
                   "n AS (UPDATE public.generations g SET claimed_by = $1::uuid, "
                   "lease_until = $2::timestamptz FROM c WHERE g.run_id = c.id "
                   "AND g.status IN ('pending', 'processing')) SELECT id FROM c",
                   4, p, add_run_id, 1, ids);
    if (e != LR_OK)
        lr_strv_clear(ids);
    return e;
}

static void pg_close(lr_db *db)
{
    pg_db *d = (pg_db *)db;
    lr_db_batch_stop(d->batch);
    PQfinish(d->writer.c);
    for (int i = 0; i < d->n; i++)
        PQfinish(d->conns[i]);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    free(d->conns);
    free(d->conn_epoch);
    free(d->free_stack);
    free(d->url);
    free(d);
}

static const lr_db_ops pg_ops = {
    .migrate = pg_migrate,
    .ping = pg_ping,
    .reserve = pg_reserve,
    .set_stage = pg_set_stage,
    .settle = pg_settle,
    .reserve_async = pg_reserve_async,
    .settle_async = pg_settle_async,
    .balance = pg_balance,
    .adjust = pg_adjust,
    .get_generation = pg_get_generation,
    .list_generations = pg_list_generations,
    .list_transactions = pg_list_transactions,
    .mark_deleted = pg_mark_deleted,
    .pending_purges = pg_pending_purges,
    .purged = pg_purged,
    .preview_claim = pg_preview_claim,
    .preview_pending = pg_preview_pending,
    .preview_finish = pg_preview_finish,
    .renew_leases = pg_renew_leases,
    .reap_expired = pg_reap_expired,
    .claim_resumable = pg_claim_resumable,
    .audit = pg_audit,
    .save_quote = pg_save_quote,
    .get_quote = pg_get_quote,
    .reserve_run = pg_reserve_run,
    .get_run = pg_get_run,
    .list_run_nodes = pg_list_run_nodes,
    .start_node = pg_start_node,
    .finish_run = pg_finish_run,
    .claim_runs = pg_claim_runs,
    .find_cached = pg_find_cached,
    .close = pg_close,
};

lr_err lr_db_pg_open(const char *url, int pool_size, lr_db **out, char **errmsg)
{
    pg_db *d = lr_xcalloc(1, sizeof *d);
    d->base.ops = &pg_ops;
    d->base.backend = "postgres";
    d->url = lr_xstrdup(url);
    d->n = pool_size;
    d->conns = lr_xcalloc((size_t)pool_size, sizeof *d->conns);
    d->conn_epoch = lr_xcalloc((size_t)pool_size, sizeof *d->conn_epoch);
    d->free_stack = lr_xcalloc((size_t)pool_size, sizeof *d->free_stack);
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    for (int i = 0; i < pool_size; i++)
        d->free_stack[d->nfree++] = i;
    /* One connection now, so a wrong URL or password fails at start. */
    d->conns[0] = connect_db(url);
    if (PQstatus(d->conns[0]) != CONNECTION_OK) {
        if (errmsg &&
            asprintf(errmsg, "cannot connect to PostgreSQL: %s", PQerrorMessage(d->conns[0])) < 0)
            *errmsg = NULL;
        pg_close(&d->base);
        return LR_ERR_UNAVAILABLE;
    }
    d->writer.d = d;
    void *writer = &d->writer;
    d->batch = lr_db_batch_start(&(lr_db_batch_opts){.name = "postgres",
                                                     .run = run_batch,
                                                     .conns = &writer,
                                                     .writers = 1,
                                                     .max_jobs = BATCH_MAX});
    *out = &d->base;
    return LR_OK;
}
