/* A database that measures another: every operation is forwarded to the
 * inner backend and counted (lensroom_db_calls_total), timed
 * (lensroom_db_call_duration_seconds, the wait for a pooled connection
 * included) and tracked while in progress, which is how many of the
 * pool's connections are busy. The backends stay free of metrics code. */
#include <stdatomic.h>
#include <stdlib.h>

#include "core/metrics.h"
#include "core/util.h"
#include "db/db.h"

typedef struct {
    lr_db base;
    lr_db *inner;
    atomic_int in_use;
} metered;

static int64_t begin(lr_db *db)
{
    atomic_fetch_add(&((metered *)db)->in_use, 1);
    return lr_monotonic_ms();
}

static lr_err end(lr_db *db, const char *op, int64_t t0, lr_err e)
{
    atomic_fetch_sub(&((metered *)db)->in_use, 1);
    /* NOT_FOUND, CONFLICT and INSUFFICIENT are answers, not failures */
    bool failed = e == LR_ERR_DB || e == LR_ERR_UNAVAILABLE;
    lr_metrics_add(LR_M_DB_CALLS, (const char *const[]){op, failed ? "error" : "ok"}, 1);
    lr_metrics_observe(LR_M_DB_DURATION, (const char *const[]){op},
                       (double)(lr_monotonic_ms() - t0) / 1000.0);
    return e;
}

#define INNER(db) (((metered *)(db))->inner)
#define FORWARD(op, db, ...)                                                                       \
    do {                                                                                           \
        int64_t t0 = begin(db);                                                                    \
        return end(db, #op, t0, INNER(db)->ops->op(INNER(db), __VA_ARGS__));                       \
    } while (0)

static lr_err m_migrate(lr_db *db)
{
    return INNER(db)->ops->migrate(INNER(db));
}
static lr_err m_ping(lr_db *db)
{
    int64_t t0 = begin(db);
    return end(db, "ping", t0, INNER(db)->ops->ping(INNER(db)));
}
static lr_err m_reserve(lr_db *db, const lr_reserve_req *r, int *balance, lr_key_holder *holder)
{
    FORWARD(reserve, db, r, balance, holder);
}
static lr_err m_set_stage(lr_db *db, const char *id, const char *status, const char *stage,
                          const lr_strv *task_ids)
{
    FORWARD(set_stage, db, id, status, stage, task_ids);
}
static lr_err m_settle(lr_db *db, const lr_settle_req *s, int *balance)
{
    FORWARD(settle, db, s, balance);
}
static lr_err m_balance(lr_db *db, const char *user_id, int *balance)
{
    FORWARD(balance, db, user_id, balance);
}
static lr_err m_adjust(lr_db *db, const lr_adjust_req *r, lr_adjust_result *out)
{
    FORWARD(adjust, db, r, out);
}
static lr_err m_get_generation(lr_db *db, const char *user_id, const char *id, lr_generation *out)
{
    FORWARD(get_generation, db, user_id, id, out);
}
static lr_err m_list_generations(lr_db *db, const char *user_id, const lr_gen_filter *f,
                                 lr_generation_list *out)
{
    FORWARD(list_generations, db, user_id, f, out);
}
static lr_err m_list_transactions(lr_db *db, const char *user_id, const char *before_created_at,
                                  const char *before_id, int limit, lr_ledger_list *out)
{
    FORWARD(list_transactions, db, user_id, before_created_at, before_id, limit, out);
}
static lr_err m_renew_leases(lr_db *db, const char *owner, const char *lease_until)
{
    FORWARD(renew_leases, db, owner, lease_until);
}
static lr_err m_claim_resumable(lr_db *db, const char *owner, const char *lease_until, int limit,
                                bool dead, lr_generation_list *rows)
{
    FORWARD(claim_resumable, db, owner, lease_until, limit, dead, rows);
}
static lr_err m_reap_expired(lr_db *db, const char *owner, int limit, bool dead,
                             lr_reaped_list *reaped)
{
    FORWARD(reap_expired, db, owner, limit, dead, reaped);
}
static lr_err m_mark_deleted(lr_db *db, const char *user_id, const char *id, lr_strv *keys)
{
    FORWARD(mark_deleted, db, user_id, id, keys);
}
static lr_err m_pending_purges(lr_db *db, int limit, lr_purge_list *rows)
{
    FORWARD(pending_purges, db, limit, rows);
}
static lr_err m_purged(lr_db *db, const char *id)
{
    FORWARD(purged, db, id);
}
static lr_err m_preview_claim(lr_db *db, const char *id, lr_strv *keys)
{
    FORWARD(preview_claim, db, id, keys);
}
static lr_err m_preview_pending(lr_db *db, const char *since, int limit, lr_strv *ids)
{
    FORWARD(preview_pending, db, since, limit, ids);
}
static lr_err m_preview_finish(lr_db *db, const lr_preview_req *r)
{
    FORWARD(preview_finish, db, r);
}
static lr_err m_audit(lr_db *db, lr_violation_list *violations)
{
    FORWARD(audit, db, violations);
}
/* An asynchronous call measured from its start to its answer. */
typedef struct {
    lr_db *db;
    const char *op;
    int64_t t0;
    lr_db_done_fn done;
    void *ctx;
} timed;

static void timed_done(void *arg, lr_err e)
{
    timed *t = arg;
    end(t->db, t->op, t->t0, e);
    t->done(t->ctx, e);
    free(t);
}

static timed *timed_new(lr_db *db, const char *op, lr_db_done_fn done, void *ctx)
{
    timed *t = lr_xmalloc(sizeof *t);
    *t = (timed){.db = db, .op = op, .t0 = begin(db), .done = done, .ctx = ctx};
    return t;
}

static void m_reserve_async(lr_db *db, const lr_reserve_req *r, int *balance, lr_key_holder *holder,
                            lr_db_done_fn done, void *ctx)
{
    lr_db_reserve_async(INNER(db), r, balance, holder, timed_done,
                        timed_new(db, "reserve", done, ctx));
}

static void m_settle_async(lr_db *db, const lr_settle_req *s, int *balance, lr_db_done_fn done,
                           void *ctx)
{
    lr_db_settle_async(INNER(db), s, balance, timed_done, timed_new(db, "settle", done, ctx));
}

static lr_err m_save_quote(lr_db *db, const lr_quote_req *q)
{
    FORWARD(save_quote, db, q);
}
static lr_err m_get_quote(lr_db *db, const char *user_id, const char *id, lr_quote *out)
{
    FORWARD(get_quote, db, user_id, id, out);
}
static lr_err m_reserve_run(lr_db *db, const lr_run_reserve_req *r, int *balance,
                            lr_key_holder *holder)
{
    FORWARD(reserve_run, db, r, balance, holder);
}
static lr_err m_get_run(lr_db *db, const char *user_id, const char *id, lr_run *out)
{
    FORWARD(get_run, db, user_id, id, out);
}
static lr_err m_list_run_nodes(lr_db *db, const char *run_id, lr_run_node_list *out)
{
    FORWARD(list_run_nodes, db, run_id, out);
}
static lr_err m_start_node(lr_db *db, const char *generation_id, const char *prompt,
                           const char *image_url)
{
    FORWARD(start_node, db, generation_id, prompt, image_url);
}
static lr_err m_finish_run(lr_db *db, const char *id, const char *status, const char *error_node,
                           const char *error_code, const char *error_message)
{
    FORWARD(finish_run, db, id, status, error_node, error_code, error_message);
}
static lr_err m_find_cached(lr_db *db, const char *user_id, const char *cache_key,
                            const char *from_run, lr_run_node *out)
{
    FORWARD(find_cached, db, user_id, cache_key, from_run, out);
}
static lr_err m_claim_runs(lr_db *db, const char *owner, const char *lease_until, int limit,
                           bool dead, lr_strv *ids)
{
    FORWARD(claim_runs, db, owner, lease_until, limit, dead, ids);
}
static void m_close(lr_db *db)
{
    lr_db_close(INNER(db));
    free(db);
}

static const lr_db_ops metered_ops = {
    .migrate = m_migrate,
    .ping = m_ping,
    .reserve = m_reserve,
    .set_stage = m_set_stage,
    .settle = m_settle,
    .balance = m_balance,
    .adjust = m_adjust,
    .get_generation = m_get_generation,
    .list_generations = m_list_generations,
    .list_transactions = m_list_transactions,
    .renew_leases = m_renew_leases,
    .claim_resumable = m_claim_resumable,
    .reap_expired = m_reap_expired,
    .mark_deleted = m_mark_deleted,
    .pending_purges = m_pending_purges,
    .purged = m_purged,
    .preview_claim = m_preview_claim,
    .preview_pending = m_preview_pending,
    .preview_finish = m_preview_finish,
    .reserve_async = m_reserve_async,
    .settle_async = m_settle_async,
    .audit = m_audit,
    .save_quote = m_save_quote,
    .get_quote = m_get_quote,
    .reserve_run = m_reserve_run,
    .get_run = m_get_run,
    .list_run_nodes = m_list_run_nodes,
    .start_node = m_start_node,
    .finish_run = m_finish_run,
    .claim_runs = m_claim_runs,
    .find_cached = m_find_cached,
    .close = m_close,
};

lr_db *lr_db_metered(lr_db *inner)
{
    metered *m = lr_xcalloc(1, sizeof *m);
    m->base.ops = &metered_ops;
    m->base.backend = inner->backend;
    m->inner = inner;
    return &m->base;
}

int lr_db_metered_in_use(const lr_db *db)
{
    return db->ops == &metered_ops ? atomic_load(&((const metered *)db)->in_use) : 0;
}
