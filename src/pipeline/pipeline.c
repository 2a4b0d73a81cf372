/* Generation runs: one per in-flight generation, in a registry keyed by
 * id. One mutex guards the registry, each run's counters and the waiters;
 * it is never held across a database call, a provider call or a waiter
 * callback. */
#include "pipeline/pipeline.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "pipeline/internal.h"

#define MAX_OUTPUTS LR_MAX_OUTPUTS
/* A new generation's `submitted` stage is written only when it is still
 * running this long after it started: a fast provider (the mock) settles
 * first, and its settlement is the generation's only write after the
 * reserve. */
#define STAGE_DEFER_MS 250

int lr_generation_charge(const lr_model *m, json_t *params, int outputs)
{
    return m ? lr_model_unit_price(m, params, outputs) * outputs : 0;
}

int lr_generation_refund(int unit_price, int failed_outputs)
{
    return unit_price * failed_outputs;
}

/* One output's download from the provider's URL into storage. */
typedef struct {
    lr_fetch f;
    run *r;
    int v;
    char *url;
    lr_blob_sink *sink;
    lr_err write_err;
    int attempts;
} download;

typedef struct waiter {
    lr_pipeline *p;
    run *r; /* valid while !fired */
    lr_wait_fn fn;
    void *ctx;
    lr_timer_id timer;
    bool fired;
    struct waiter *next;
} waiter;

struct run {
    lr_pipeline *p;
    char id[LR_UUID_LEN + 1];
    char user_id[LR_UUID_LEN + 1];
    char created_at[32];
    char request_id[65]; /* of the request that started it ("" when resumed): every log line */
    const lr_model *model;
    char *prompt;
    json_t *params;
    int outputs;
    int unit; /* credits charged per output */
    lr_provider_task tasks[MAX_OUTPUTS];
    char *urls[MAX_OUTPUTS];
    char *keys[MAX_OUTPUTS];
    char *task_ids[MAX_OUTPUTS];
    download *dl[MAX_OUTPUTS];
    lr_blob_commit commits[MAX_OUTPUTS]; /* each output's commit into storage */
    json_t *input_urls;
    lr_strv input_keys; /* stored input images: deleted with the generation */
    char *text;
    lr_code err_code; /* the first failed output's */
    char *err_msg;
    int remaining, succeeded, failed;
    int64_t started_ms;
    waiter *waiters;
    lr_gen_stage stage, stage_written;
    bool tasks_dirty, stage_job, canceled;
    bool stage_timer_armed; /* stage_timer holds a reference */
    lr_timer_id stage_timer;
    lr_wait_fn ended; /* a graph run's node: its executor's callback */
    void *ended_ctx;
    int refs;
    run *next;
};

typedef struct {
    run *r;
    int variant;
    lr_err (*produce)(lr_provider_task *t, lr_blob_sink *sink);
} store_job;

/* Generations in flight per user, for the per-user concurrency limit. */
struct user_slots {
    char user[LR_UUID_LEN + 1];
    int count;
    struct user_slots *next;
};

/* The request id a run's log lines carry, NULL when it has none. */
static const char *rid(const run *r)
{
    return r->request_id[0] ? r->request_id : NULL;
}

static void lease_until(const lr_pipeline *p, char buf[32])
{
    lr_time_iso(lr_now_ms() + (int64_t)p->lease_s * 1000, buf);
}

void lr_pipeline_claim(lr_pipeline *p, lr_reserve_req *r, char buf[32])
{
    lease_until(p, buf);
    r->owner = p->owner;
    r->lease_until = buf;
}

static unsigned bucket_of(const char *id)
{
    unsigned h = 2166136261u;
    for (const char *c = id; *c; c++)
        h = (h ^ (unsigned char)*c) * 16777619u;
    return h % BUCKETS;
}

lr_pipeline *lr_pipeline_new(lr_db *db, lr_store *store, lr_provider *provider,
                             const lr_catalog *catalog, const lr_net_policy *net, lr_loop *loop,
                             lr_workers *workers, int lease_s)
{
    lr_pipeline *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    *p = (lr_pipeline){.db = db,
                       .store = store,
                       .provider = provider,
                       .catalog = catalog,
                       .net = net,
                       .loop = loop,
                       .workers = workers,
                       .lease_s = lease_s,
                       .retry_ms = 1000,
                       .quiet_until_ms = lr_now_ms() + (int64_t)lease_s * 600};
    lr_uuid_v4(p->owner);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->idle, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->maint_cv, &ca);
    pthread_condattr_destroy(&ca);
    return p;
}

void lr_pipeline_set_retry(lr_pipeline *p, int retry_ms)
{
    p->retry_ms = retry_ms > 0 ? retry_ms : 1000;
}

void lr_pipeline_set_previews(lr_pipeline *p, lr_previews *q)
{
    p->previews = q;
}

void lr_pipeline_observe(lr_pipeline *p, lr_observer_fn fn, void *ctx)
{
    p->observer = fn;
    p->observer_ctx = ctx;
}

static void notify(lr_pipeline *p, const char *id, lr_gen_status status, lr_gen_stage stage)
{
    if (p->observer)
        p->observer(p->observer_ctx, id, status, stage);
}

static void download_free(download *d)
{
    if (!d)
        return;
    lr_fetch_release(&d->f);
    if (d->sink)
        lr_blob_abort(d->sink);
    free(d->url);
    free(d);
}

static void run_free(run *r)
{
    for (int i = 0; i < r->outputs; i++)
        lr_provider_release(r->p->provider, &r->tasks[i]);
    for (int i = 0; i < MAX_OUTPUTS; i++) {
        free(r->urls[i]);
        free(r->keys[i]);
        free(r->task_ids[i]);
        download_free(r->dl[i]);
        lr_blob_commit_release(&r->commits[i]);
        free((char *)r->tasks[i].task_id);
    }
    json_decref(r->input_urls);
    lr_strv_clear(&r->input_keys);
    free(r->text);
    free(r->err_msg);
    free(r->prompt);
    json_decref(r->params);
    free(r);
}

/* Drops one reference; the last frees the run. */
static void run_unref(run *r)
{
    lr_pipeline *p = r->p;
    pthread_mutex_lock(&p->mu);
    bool last = --r->refs == 0;
    pthread_mutex_unlock(&p->mu);
    if (last)
        run_free(r);
}

/* Writes the run's latest stage and task ids, one job per run at a time so
 * writes never overtake each other; tells the observer. On a worker. */
static void stage_job(void *arg)
{
    run *r = arg;
    lr_pipeline *p = r->p;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        if (r->stage == r->stage_written && !r->tasks_dirty) {
            r->stage_job = false;
            pthread_mutex_unlock(&p->mu);
            break;
        }
        lr_gen_stage st = r->stage;
        lr_strv tasks = {0}; /* per output, NULL where none; copied: they change under mu */
        bool dirty = r->tasks_dirty;
        for (int i = 0; dirty && i < r->outputs; i++)
            lr_strv_push(&tasks, r->task_ids[i]);
        r->tasks_dirty = false;
        pthread_mutex_unlock(&p->mu);
        lr_err e = p->db->ops->set_stage(p->db, r->id, lr_gen_status_name(LR_GEN_PROCESSING),
                                         lr_gen_stage_name(st), dirty ? &tasks : NULL);
        if (e != LR_OK && e != LR_ERR_CONFLICT)
            lr_log(LR_LOG_WARN, rid(r), "generation %s: stage %s not recorded (%s)", r->id,
                   lr_gen_stage_name(st), lr_strerror(e));
        lr_strv_clear(&tasks);
        pthread_mutex_lock(&p->mu);
        bool changed = st != r->stage_written;
        r->stage_written = st;
        pthread_mutex_unlock(&p->mu);
        if (changed)
            notify(p, r->id, LR_GEN_PROCESSING, st);
    }
    run_unref(r);
}

/* Moves the run forward to stage st (never back) and/or marks its task
 * ids for recording. Any thread. */
static void advance(run *r, lr_gen_stage st, bool tasks_changed)
{
    lr_pipeline *p = r->p;
    pthread_mutex_lock(&p->mu);
    if (st > r->stage)
        r->stage = st;
    if (tasks_changed)
        r->tasks_dirty = true;
    bool start = !r->stage_job && (r->stage != r->stage_written || r->tasks_dirty);
    if (start) {
        r->stage_job = true;
        r->refs++;
    }
    pthread_mutex_unlock(&p->mu);
    if (start)
        lr_workers_submit(p->workers, stage_job, r);
}

/* The run is still going STAGE_DEFER_MS after it started: its stage is
 * written now. On the loop thread. */
static void stage_timer_fired(void *arg)
{
    run *r = arg;
    pthread_mutex_lock(&r->p->mu);
    r->stage_timer_armed = false;
    pthread_mutex_unlock(&r->p->mu);
    advance(r, LR_STAGE_SUBMITTED, false);
    run_unref(r);
}

/* The run settles: a stage write still deferred is not needed any more.
 * The caller holds a reference, so dropping the timer's is never the last. */
static void stage_timer_cancel(run *r)
{
    lr_pipeline *p = r->p;
    pthread_mutex_lock(&p->mu);
    if (r->stage_timer_armed && lr_loop_cancel(p->loop, r->stage_timer)) {
        r->stage_timer_armed = false;
        r->refs--;
    }
    pthread_mutex_unlock(&p->mu);
}

/* Like advance, but only tells the observer: for stages that last
 * milliseconds (the mock's bytes going into storage), where a database
 * write per generation would cost more than the stage is worth. */
static void announce(run *r, lr_gen_stage st)
{
    lr_pipeline *p = r->p;
    pthread_mutex_lock(&p->mu);
    bool moved = st > r->stage && !r->stage_job;
    if (moved)
        r->stage = r->stage_written = st;
    pthread_mutex_unlock(&p->mu);
    if (moved)
        notify(p, r->id, LR_GEN_PROCESSING, st);
}

static void unregister(lr_pipeline *p, run *r)
{
    run **pp = &p->buckets[bucket_of(r->id)];
    while (*pp && *pp != r)
        pp = &(*pp)->next;
    if (*pp)
        *pp = r->next;
}

/* A waiter's wait ran out: it gets the still-processing outcome (copied
 * under the lock, as the run may settle and go as soon as it is let go). */
static void waiter_timeout(void *arg)
{
    waiter *w = arg;
    lr_pipeline *p = w->p;
    char id[LR_UUID_LEN + 1], created[32];
    const lr_model *model = NULL;
    int outputs = 0, unit = 0;
    pthread_mutex_lock(&p->mu);
    bool fired = w->fired;
    w->fired = true;
    if (!fired) {
        for (waiter **pw = &w->r->waiters; *pw; pw = &(*pw)->next) {
            if (*pw == w) {
                *pw = w->next;
                break;
            }
        }
        memcpy(id, w->r->id, sizeof id);
        memcpy(created, w->r->created_at, sizeof created);
        model = w->r->model;
        outputs = w->r->outputs;
        unit = w->r->unit;
    }
    pthread_mutex_unlock(&p->mu);
    if (!fired) {
        lr_outcome o = {
            .generation_id = id,
            .model_id = model->id,
            .provider = lr_provider_name_for(p->provider, model),
            .status = LR_GEN_PROCESSING,
            .outputs_count = outputs,
            .credits_used = unit * outputs,
            .created_at = created,
        };
        w->fn(w->ctx, &o);
    }
    free(w);
}

/* Adjusts user's slot count by delta; with max > 0, refuses (false) to go
 * above it. Call with p->mu held. */
static bool slots_add(lr_pipeline *p, const char *user, int delta, int max)
{
    user_slots **pp = &p->slots[bucket_of(user)];
    while (*pp && strcmp((*pp)->user, user) != 0)
        pp = &(*pp)->next;
    user_slots *u = *pp;
    if (!u) {
        if (delta <= 0)
            return true;
        u = calloc(1, sizeof *u);
        if (!u)
            return false;
        snprintf(u->user, sizeof u->user, "%s", user);
        *pp = u;
    }
    if (delta > 0 && max > 0 && u->count + delta > max)
        return false;
    u->count += delta;
    if (u->count <= 0) {
        *pp = u->next;
        free(u);
    }
    return true;
}

bool lr_pipeline_admit(lr_pipeline *p, const char *user, int max)
{
    pthread_mutex_lock(&p->mu);
    bool ok = slots_add(p, user, 1, max);
    pthread_mutex_unlock(&p->mu);
    return ok;
}

void lr_pipeline_unadmit(lr_pipeline *p, const char *user)
{
    pthread_mutex_lock(&p->mu);
    slots_add(p, user, -1, 0);
    pthread_mutex_unlock(&p->mu);
}

/* What settle records of a run: the URLs, object keys (the outputs' and
 * the inputs') and task ids of the outputs that have them, as views into
 * the run (which outlives its settlement), lent to the database and the
 * outcome. */
typedef struct {
    char *url_v[MAX_OUTPUTS], *task_v[MAX_OUTPUTS];
    char **key_v;
    size_t n_urls, n_tasks, n_keys;
} results;

static void collect(const run *r, results *x)
{
    *x = (results){.key_v = lr_xcalloc((size_t)r->outputs + r->input_keys.n, sizeof(char *))};
    for (int i = 0; i < r->outputs; i++) {
        if (r->urls[i])
            x->url_v[x->n_urls++] = r->urls[i];
        if (r->keys[i])
            x->key_v[x->n_keys++] = r->keys[i];
        if (r->task_ids[i])
            x->task_v[x->n_tasks++] = r->task_ids[i];
    }
    for (size_t i = 0; i < r->input_keys.n; i++)
        x->key_v[x->n_keys++] = r->input_keys.v[i];
}

static void results_clear(results *x)
{
    free(x->key_v);
}

/* The run has settled: it leaves the registry, gives its user's slot
 * back and its waiters get o. */
static void finish(run *r, const lr_outcome *o)
{
    lr_pipeline *p = r->p;
    pthread_mutex_lock(&p->mu);
    unregister(p, r);
    slots_add(p, r->user_id, -1, 0);
    waiter *ws = r->waiters;
    r->waiters = NULL;
    for (waiter *w = ws; w; w = w->next)
        w->fired = true;
    pthread_mutex_unlock(&p->mu);
    for (waiter *w = ws, *next; w; w = next) {
        next = w->next;
        w->fn(w->ctx, o);
        if (lr_loop_cancel(p->loop, w->timer))
            free(w); /* else the timer is running and frees it */
    }
    /* Counted down only now, so a drain also waits for the waiters. */
    pthread_mutex_lock(&p->mu);
    if (--p->in_flight == 0)
        pthread_cond_broadcast(&p->idle);
    pthread_mutex_unlock(&p->mu);
}

static bool run_canceled(run *r)
{
    pthread_mutex_lock(&r->p->mu);
    bool canceled = r->canceled;
    pthread_mutex_unlock(&r->p->mu);
    return canceled;
}

/* A settlement on its way through the database: what settle wrote, kept
 * until the answer came back. */
typedef struct {
    run *r;
    results x;
    lr_settle_req s;
    lr_gen_status status;
    int balance;
    int attempts;
    lr_err e;
} settling;

static void settle_send(void *arg);

/* After a settle lost (the generation was canceled, reaped, or settled by
 * another process that ran it too): removes what this run stored, except
 * the objects the generation's row now names. Two processes running one
 * generation write the same keys, and the winner's objects (its result
 * URLs end in their keys) must outlive the loser's clean-up. When the row cannot be read, nothing
 * is removed: an object left over costs less than a paid result lost. */
static void remove_stray_objects(lr_pipeline *p, const run *r, const lr_strv *keys)
{
    lr_generation g;
    if (p->db->ops->get_generation(p->db, r->user_id, r->id, &g) != LR_OK) {
        lr_log(LR_LOG_WARN, rid(r),
               "generation %s: its row could not be read, its %zu objects "
               "are kept",
               r->id, keys->n);
        return;
    }
    lr_strv stray = {0};
    for (size_t i = 0; i < keys->n; i++) {
        bool named = false;
        size_t k = strlen(keys->v[i]);
        for (size_t j = 0; j < g.result_urls.n && !named; j++) { /* a URL ends in "/key" */
            const char *u = g.result_urls.v[j];
            size_t n = strlen(u);
            named = n > k && u[n - k - 1] == '/' && !strcmp(u + n - k, keys->v[i]);
        }
        if (!named)
            lr_strv_push(&stray, keys->v[i]);
    }
    lr_generation_clear(&g);
    lr_store_remove_keys(p->store, &stray);
    lr_strv_clear(&stray);
}

/* The settlement's outcome goes to the log, the observer and the waiters;
 * the run goes. On the loop thread (on a worker after a conflict: the
 * stored objects are removed, which may be slow). */
static void settled(void *arg)
{
    settling *st = arg;
    run *r = st->r;
    lr_pipeline *p = r->p;
    lr_err e = st->e;
    if (e == LR_ERR_CONFLICT) {
        /* Canceled (or reaped) meanwhile: what was stored is nobody's. */
        if (!run_canceled(r))
            lr_log(LR_LOG_WARN, rid(r), "generation %s was already settled", r->id);
        remove_stray_objects(p, r, &st->s.storage_keys);
    } else if (e != LR_OK) {
        lr_log(LR_LOG_ERROR, rid(r),
               "generation %s could not be settled (%s); start-up recovery will refund it", r->id,
               lr_strerror(e));
    } else {
        lr_log_fields(LR_LOG_INFO, rid(r), "generation settled",
                      json_pack("{s:s, s:s, s:s, s:i, s:i, s:I}", "generation_id", r->id, "model",
                                r->model->id, "status", st->s.status, "succeeded", r->succeeded,
                                "failed", r->failed, "duration_ms", (json_int_t)st->s.duration_ms));
        notify(p, r->id, st->status, LR_STAGE_NONE);
        if (p->previews && st->status == LR_GEN_SUCCESS &&
            strcmp(lr_model_generation_type(r->model), "text") != 0)
            lr_previews_submit(p->previews, r->id);
    }
    lr_outcome o = {
        .generation_id = r->id,
        .model_id = r->model->id,
        .provider = lr_provider_name_for(p->provider, r->model),
        .status = e == LR_OK ? st->status : LR_GEN_FAILED,
        .urls = {st->x.url_v, st->x.n_urls},
        .task_ids = {st->x.task_v, st->x.n_tasks},
        .text = r->text,
        .outputs_count = r->outputs,
        .succeeded_count = r->succeeded,
        .failed_count = r->failed,
        .credits_used = r->unit * r->succeeded,
        .refunded = e == LR_OK ? st->s.refund : 0,
        .balance = st->balance,
        .duration_ms = st->s.duration_ms,
        .error = e == LR_OK ? r->err_code : LR_CODE_INTERNAL_ERROR,
        .error_message = e == LR_OK ? r->err_msg : "The generation could not be recorded",
        .created_at = r->created_at,
    };
    finish(r, &o);
    if (r->ended)
        r->ended(r->ended_ctx, &o);
    results_clear(&st->x);
    free(st);
    run_unref(r);
}

/* The database answered the settlement (on its writer thread): retried
 * with backoff while the database is briefly away, else handed on. */
static void settle_answered(void *ctx, lr_err e)
{
    settling *st = ctx;
    lr_pipeline *p = st->r->p;
    st->e = e;
    if (e != LR_OK && e != LR_ERR_CONFLICT && ++st->attempts < 5)
        lr_loop_timer(p->loop, 50LL << st->attempts, settle_send, st);
    else if (e == LR_ERR_CONFLICT)
        lr_workers_submit(p->workers, settled, st);
    else
        lr_loop_post(p->loop, settled, st);
}

static void settle_send(void *arg)
{
    settling *st = arg;
    lr_db_settle_async(st->r->p->db, &st->s, &st->balance, settle_answered, st);
}

/* Settles r in the database (success when any output succeeded; every
 * failed output refunded), then tells its waiters. Holds no thread while
 * the transaction commits: any thread. */
static void settle(run *r)
{
    settling *st = lr_xcalloc(1, sizeof *st);
    st->r = r;
    collect(r, &st->x);
    st->status = r->succeeded > 0 ? LR_GEN_SUCCESS : LR_GEN_FAILED;
    st->s = (lr_settle_req){
        .generation_id = r->id,
        .user_id = r->user_id,
        .status = lr_gen_status_name(st->status),
        .result_urls = {st->x.url_v, st->x.n_urls},
        .storage_keys = {st->x.key_v, st->x.n_keys},
        .task_ids = {st->x.task_v, st->x.n_tasks},
        .succeeded_count = r->succeeded,
        .failed_count = r->failed,
        .refund = lr_generation_refund(r->unit, r->failed),
        .error_code = lr_code_name(r->err_code),
        .error_message = r->err_msg,
        .text = r->text,
        .duration_ms = lr_monotonic_ms() - r->started_ms,
    };
    stage_timer_cancel(r);
    if (run_canceled(r))
        settle_answered(st, LR_ERR_CONFLICT);
    else
        settle_send(st);
}

/* Records one output's end; the last one settles. Called with p->mu free. */
static void output_finished(run *r, int variant, bool ok, lr_code code, const char *msg)
{
    lr_pipeline *p = r->p;
    pthread_mutex_lock(&p->mu);
    if (ok) {
        r->succeeded++;
    } else {
        r->failed++;
        if (code == LR_CODE_NONE)
            code = LR_CODE_PROVIDER_FAILED;
        if (r->err_code == LR_CODE_NONE) {
            r->err_code = code;
            r->err_msg = lr_xstrdup(msg ? msg : lr_code_message(code));
        }
        lr_log(LR_LOG_WARN, rid(r), "generation %s output %d failed: %s", r->id, variant,
               lr_code_name(code));
    }
    bool last = --r->remaining == 0;
    pthread_mutex_unlock(&p->mu);
    if (last)
        settle(r);
}

/* The user-facing code for a failed store (its message: the table's). */
static lr_code storage_failure(lr_err e)
{
    if (e == LR_ERR_TOO_LARGE)
        return LR_CODE_OUTPUT_TOO_LARGE;
    if (e == LR_ERR_UNSUPPORTED)
        return LR_CODE_OUTPUT_TYPE_NOT_ALLOWED;
    return LR_CODE_STORAGE_FAILED;
}

static void output_name(const run *r, int v, char name[64])
{
    if (v == 0)
        snprintf(name, 64, "%s", r->id);
    else
        snprintf(name, 64, "%s_%d", r->id, v);
}

static void output_committed(lr_blob_commit *c, lr_err e)
{
    run *r = c->ctx;
    int v = (int)(c - r->commits);
    if (e != LR_OK) {
        lr_log(LR_LOG_ERROR, rid(r), "generation %s output %d could not be stored: %s", r->id, v,
               lr_strerror(e));
        output_finished(r, v, false, storage_failure(e), NULL);
        return;
    }
    r->urls[v] = c->url; /* only this output's commit writes slot v */
    r->keys[v] = c->key;
    c->url = c->key = NULL;
    output_finished(r, v, true, LR_CODE_NONE, NULL);
}

/* Output v's bytes are all in sink (e is how writing them went): commit
 * and record the stored object, or fail the output. On a worker: the
 * local store commits here; a remote one uploads on the loop, and the
 * output finishes once the bucket holds the object. */
static void commit_output(run *r, int v, lr_blob_sink *sink, lr_err e)
{
    if (e != LR_OK) {
        lr_blob_abort(sink);
        lr_error("generation %s output %d could not be stored: %s", r->id, v, lr_strerror(e));
        output_finished(r, v, false, storage_failure(e), NULL);
        return;
    }
    r->commits[v].done = output_committed;
    r->commits[v].ctx = r;
    lr_blob_commit_start(&r->commits[v], sink, r->p->loop);
}

static void store_output(void *arg)
{
    store_job *j = arg;
    run *r = j->r;
    int v = j->variant;
    lr_err (*produce)(lr_provider_task *, lr_blob_sink *) = j->produce;
    free(j);
    char name[64];
    output_name(r, v, name);
    lr_blob_sink *sink = NULL;
    announce(r, LR_STAGE_STORING);
    lr_err e = lr_blob_begin(r->p->store, r->user_id, name, LR_STORE_MAX_BYTES, &sink);
    if (e == LR_OK)
        e = produce(&r->tasks[v], sink);
    commit_output(r, v, sink, e);
}

/* ---- downloads: the provider's URL streamed into storage on the loop ---- */

static void download_start(void *arg);

static int download_write(void *ctx, const void *buf, size_t len)
{
    download *d = ctx;
    lr_err e = lr_blob_write(d->sink, buf, len);
    if (e != LR_OK) {
        d->write_err = e;
        return -1;
    }
    return 0;
}

/* The bytes are all in: commit them (a worker for the local store, whose
 * commit is an fdatasync; a remote store's upload starts right here). */
static void download_commit(void *arg)
{
    download *d = arg;
    advance(d->r, LR_STAGE_STORING, false);
    lr_blob_sink *sink = d->sink;
    d->sink = NULL;
    commit_output(d->r, d->v, sink, LR_OK);
}

static void download_done(lr_fetch *f, lr_err e)
{
    download *d = (download *)f;
    run *r = d->r;
    if (e == LR_OK) {
        if (lr_store_commit_blocks(r->p->store))
            lr_workers_submit(r->p->workers, download_commit, d);
        else
            download_commit(d);
        return;
    }
    if (d->sink) {
        lr_blob_abort(d->sink);
        d->sink = NULL;
    }
    lr_code code = LR_CODE_DOWNLOAD_FAILED;
    char msg[320];
    if ((e == LR_ERR_IO && d->write_err != LR_OK) || e == LR_ERR_TOO_LARGE) {
        code = storage_failure(e == LR_ERR_IO ? d->write_err : e);
        snprintf(msg, sizeof msg, "%s", lr_code_message(code));
    } else if (e == LR_ERR_INVALID) {
        code = LR_CODE_OUTPUT_URL_REFUSED;
        snprintf(msg, sizeof msg, "The provider's result URL was refused (%s)", f->why);
    } else if (++d->attempts < 4 && !atomic_load(&r->tasks[d->v].canceled)) {
        lr_log(LR_LOG_WARN, rid(r), "generation %s output %d: download failed (%s), retrying",
               r->id, d->v, f->why);
        lr_loop_timer(r->p->loop, (int64_t)r->p->retry_ms << d->attempts, download_start, d);
        return;
    } else {
        snprintf(msg, sizeof msg, "The result could not be downloaded from the provider (%s)",
                 f->why);
    }
    lr_log(LR_LOG_ERROR, rid(r), "generation %s output %d: %s", r->id, d->v, msg);
    output_finished(r, d->v, false, code, msg);
}

static void download_start(void *arg)
{
    download *d = arg;
    run *r = d->r;
    char name[64];
    output_name(r, d->v, name);
    d->write_err = LR_OK;
    lr_err e = lr_blob_begin(r->p->store, r->user_id, name, LR_STORE_MAX_BYTES, &d->sink);
    if (e != LR_OK) {
        output_finished(r, d->v, false, storage_failure(e), NULL);
        return;
    }
    d->f.loop = r->p->loop;
    d->f.policy = r->p->net;
    d->f.max_bytes = LR_STORE_MAX_BYTES;
    d->f.write = download_write;
    d->f.done = download_done;
    d->f.ctx = d;
    lr_fetch_start(&d->f, d->url);
}

/* A provider reported the task id of output v: record it. */
static void task_submitted(lr_provider_task *t, const char *task_id)
{
    run *r = t->owner;
    pthread_mutex_lock(&r->p->mu);
    free(r->task_ids[t->variant]);
    r->task_ids[t->variant] = strdup(task_id);
    pthread_mutex_unlock(&r->p->mu);
    advance(r, LR_STAGE_SUBMITTED, true);
}

/* The provider's answer for one output (loop thread or worker). */
static void task_done(lr_provider_task *t, const lr_provider_result *res)
{
    run *r = t->owner;
    lr_pipeline *p = r->p;
    int v = t->variant;
    if (res->task_id) {
        pthread_mutex_lock(&p->mu);
        if (!r->task_ids[v])
            r->task_ids[v] = strdup(res->task_id);
        pthread_mutex_unlock(&p->mu);
    }
    if (!res->ok) {
        output_finished(r, v, false, res->error, res->error_message);
        return;
    }
    if (res->text) {
        pthread_mutex_lock(&p->mu);
        if (!r->text)
            r->text = strdup(res->text);
        pthread_mutex_unlock(&p->mu);
        output_finished(r, v, true, LR_CODE_NONE, NULL);
        return;
    }
    if (res->url && atomic_load(&t->canceled)) {
        output_finished(r, v, false, LR_CODE_CANCELED, "Canceled"); /* nothing to keep */
        return;
    }
    if (res->url) {
        download *d = calloc(1, sizeof *d);
        if (!d)
            abort();
        d->r = r;
        d->v = v;
        d->url = strdup(res->url);
        r->dl[v] = d;
        advance(r, LR_STAGE_DOWNLOADING, false);
        lr_loop_post(p->loop, download_start, d);
        return;
    }
    if (!res->produce) {
        output_finished(r, v, false, LR_CODE_PROVIDER_FAILED, "The provider returned no output");
        return;
    }
    store_job *j = malloc(sizeof *j);
    if (!j)
        abort();
    *j = (store_job){r, v, res->produce};
    lr_workers_submit(p->workers, store_output, j);
}

/* Registers and submits a run. task_ids (resume): the provider's ids per
 * output, NULL where none was recorded (that output fails). */
static lr_err start_run(lr_pipeline *p, const lr_run_req *req, const lr_strv *task_ids,
                        int64_t timeout_ms, lr_wait_fn wait, void *ctx)
{
    if (req->outputs_count < 1 || req->outputs_count > MAX_OUTPUTS)
        return LR_ERR_INVALID;
    run *r = lr_xcalloc(1, sizeof *r);
    r->p = p;
    snprintf(r->id, sizeof r->id, "%s", req->generation_id);
    snprintf(r->user_id, sizeof r->user_id, "%s", req->user_id);
    snprintf(r->created_at, sizeof r->created_at, "%s", req->created_at);
    snprintf(r->request_id, sizeof r->request_id, "%s", req->request_id ? req->request_id : "");
    r->model = req->model;
    r->prompt = strdup(req->prompt);
    r->params = json_incref(req->params);
    r->input_urls = json_incref(req->input_urls);
    for (size_t i = 0; req->input_keys && i < req->input_keys->n; i++)
        lr_strv_push(&r->input_keys, req->input_keys->v[i]);
    r->outputs = r->remaining = req->outputs_count;
    r->unit = req->unit_price;
    r->ended = req->ended;
    r->ended_ctx = req->ended_ctx;
    r->started_ms = lr_monotonic_ms();
    int64_t created_ms = lr_time_parse_iso(req->created_at);
    if (created_ms < 0 || created_ms > lr_now_ms())
        created_ms = lr_now_ms();
    r->refs = 1;
    /* A resumed run's stage is on its row; a new one's waits (see
     * STAGE_DEFER_MS). */
    r->stage = LR_STAGE_SUBMITTED;
    r->stage_written = task_ids ? LR_STAGE_SUBMITTED : LR_STAGE_NONE;
    for (int i = 0; i < r->outputs; i++) {
        const char *tid = task_ids && (size_t)i < task_ids->n ? task_ids->v[i] : NULL;
        r->tasks[i] = (lr_provider_task){.generation_id = r->id,
                                         .user_id = r->user_id,
                                         .model = r->model,
                                         .prompt = r->prompt,
                                         .params = r->params,
                                         .variant = i,
                                         .input_urls = r->input_urls,
                                         .task_id = tid ? strdup(tid) : NULL,
                                         .created_ms = created_ms,
                                         .submitted = task_submitted,
                                         .done = task_done,
                                         .owner = r};
        if (tid)
            r->task_ids[i] = strdup(tid);
    }

    pthread_mutex_lock(&p->mu);
    unsigned b = bucket_of(r->id);
    r->next = p->buckets[b];
    p->buckets[b] = r;
    p->in_flight++;
    if (task_ids)
        slots_add(p, r->user_id, 1, 0);
    if (wait) {
        waiter *w = calloc(1, sizeof *w);
        if (!w)
            abort();
        *w = (waiter){.p = p, .r = r, .fn = wait, .ctx = ctx, .next = r->waiters};
        r->waiters = w;
        /* Registered under the lock, so the run cannot settle before the
         * waiter knows its timer. */
        w->timer = lr_loop_timer(p->loop, timeout_ms, waiter_timeout, w);
    }
    if (!task_ids) {
        r->refs++;
        r->stage_timer_armed = true;
        r->stage_timer = lr_loop_timer(p->loop, STAGE_DEFER_MS, stage_timer_fired, r);
    }
    /* Held while submitting: an output may end, and the run settle and
     * go, before submit returns (the mock at 0 ms does exactly that). */
    r->refs++;
    pthread_mutex_unlock(&p->mu);

    for (int i = 0; i < r->outputs; i++) {
        if (task_ids && !r->tasks[i].task_id) {
            output_finished(r, i, false, LR_CODE_INTERRUPTED,
                            "The server stopped before the provider accepted this output");
            continue;
        }
        lr_err e = p->provider->ops->submit(p->provider, &r->tasks[i]);
        if (e == LR_ERR_UNSUPPORTED)
            output_finished(r, i, false, LR_CODE_PROVIDER_NOT_CONFIGURED,
                            "No provider is configured for this model");
        else if (e != LR_OK)
            output_finished(r, i, false, LR_CODE_PROVIDER_UNAVAILABLE, NULL);
    }
    run_unref(r);
    return LR_OK;
}

lr_err lr_pipeline_start(lr_pipeline *p, const lr_run_req *req, int64_t timeout_ms, lr_wait_fn wait,
                         void *ctx)
{
    return start_run(p, req, NULL, timeout_ms, wait, ctx);
}

lr_err lr_pipeline_resume(lr_pipeline *p, const lr_run_req *req, const lr_strv *task_ids)
{
    return start_run(p, req, task_ids, 0, NULL, NULL);
}

/* Resumes a generation another (dead) process left with provider tasks. */
static void resume_row(lr_pipeline *p, const lr_generation *g)
{
    const lr_model *m = g->model ? lr_catalog_find(p->catalog, g->model) : NULL;
    int outputs = g->outputs_count;
    if (!m || outputs < 1 || outputs > MAX_OUTPUTS) {
        lr_settle_req q = {.generation_id = g->id,
                           .user_id = g->user_id, /* orders the write batch */
                           .status = lr_gen_status_name(LR_GEN_FAILED),
                           .failed_count = outputs,
                           .refund = g->credits_used, /* all that is still charged */
                           .error_code = lr_code_name(LR_CODE_INTERRUPTED),
                           .error_message = "The generation could not be resumed; the credits "
                                            "were refunded"};
        int balance;
        p->db->ops->settle(p->db, &q, &balance);
        notify(p, g->id, LR_GEN_FAILED, LR_STAGE_NONE);
        return;
    }
    lr_run_req req = {
        .generation_id = g->id,
        .user_id = g->user_id,
        .model = m,
        .prompt = g->prompt,
        .params = g->params,
        .outputs_count = outputs,
        .unit_price = g->credits_used / outputs, /* unsettled: all still charged */
        .created_at = g->created_at,
    };
    if (!req.user_id || !req.prompt || !req.created_at)
        return;
    lr_log_fields(
        LR_LOG_WARN, NULL, "resuming generation left by a stopped process",
        json_pack("{s:s, s:o}", "generation_id", g->id, "task_ids", lr_strv_json(&g->task_ids)));
    start_run(p, &req, &g->task_ids, 0, NULL, NULL);
}

/* Batches of a takeover: a reap batch holds its users' balance rows
 * until it commits (about 0.15 s for 1,000 rows with the rollup triggers). */
enum { CLAIM_BATCH = 500, REAP_BATCH = 1000 };

/* One batch of resumable generations whose lease ran out, resumed here;
 * how many, or -1. */
static int claim_batch(lr_pipeline *p)
{
    char until[32];
    lease_until(p, until);
    lr_generation_list rows;
    if (p->db->ops->claim_resumable(p->db, p->owner, until, CLAIM_BATCH, lr_pipeline_takes_dead(p),
                                    &rows) != LR_OK)
        return -1;
    for (size_t i = 0; i < rows.n; i++)
        resume_row(p, &rows.v[i]);
    int n = (int)rows.n;
    lr_generation_list_clear(&rows);
    return n;
}

/* One batch of the others, failed and refunded; how many, or -1. */
static int reap_batch(lr_pipeline *p)
{
    lr_reaped_list reaped;
    if (p->db->ops->reap_expired(p->db, p->owner, REAP_BATCH, lr_pipeline_takes_dead(p), &reaped) !=
        LR_OK)
        return -1;
    for (size_t i = 0; i < reaped.n; i++) {
        lr_log_fields(
            LR_LOG_WARN, NULL, "unfinished generation failed and refunded",
            json_pack("{s:s, s:i}", "generation_id", reaped.v[i].id, "refund", reaped.v[i].refund));
        notify(p, reaped.v[i].id, LR_GEN_FAILED, LR_STAGE_NONE);
    }
    int n = (int)reaped.n;
    lr_reaped_list_clear(&reaped);
    return n;
}

/* This process's heartbeat: alive for lease_s/2 from now. Renewed every
 * lease_s/10 (between takeover batches too), so five renewals in a row
 * must fail or come late before another process takes this one for dead;
 * a dead one's work is found at most lease_s/2 + lease_s/10 after its
 * last beat and taken over in that round, within one lease.
 *
 * A database outage longer than a heartbeat ends every process's: when
 * it is back, whichever process beats first would take the others' live
 * work before they beat again; so would a process started just then (an
 * orchestrator restarts processes whose health check failed during the
 * outage). So until lease_s * 0.6 after its start, and after its first
 * good beat following a failed one, a process takes over only work whose
 * process released it (stopped cleanly) or has no heartbeat: by then every
 * live process has beaten. false: the database did not take it. On the
 * thread that starts the pipeline, then the maintenance thread. */
static bool beat(lr_pipeline *p)
{
    int64_t now = lr_now_ms();
    char alive[32];
    lr_time_iso(now + (int64_t)p->lease_s * 500, alive);
    bool failing = p->quiet_until_ms == INT64_MAX; /* since the last beat that took */
    if (p->db->ops->renew_leases(p->db, p->owner, alive) != LR_OK) {
        if (!failing)
            lr_error("could not renew this process's heartbeat; other processes may take its "
                     "work, and it takes no dead process's work over until it beats again");
        p->quiet_until_ms = INT64_MAX;
        return false;
    }
    p->beat_ms = now;
    if (failing) {
        p->quiet_until_ms = now + (int64_t)p->lease_s * 600;
        lr_info("heartbeat renewed again; taking over dead processes' work again in %d ms",
                p->lease_s * 600);
    }
    return true;
}

/* Beats when a tenth of the lease has passed since the last beat; false
 * when that beat failed. */
static bool beat_if_due(lr_pipeline *p)
{
    return lr_now_ms() - p->beat_ms < (int64_t)p->lease_s * 100 || beat(p);
}

bool lr_pipeline_takes_dead(const lr_pipeline *p)
{
    return lr_now_ms() >= p->quiet_until_ms;
}

/* Batches follow each other until one comes back short: a dead process
 * with thousands of generations in its backlog is taken over within one
 * round, not one batch per round (a tenth of a lease apart); the
 * heartbeat is renewed between them, so a long round never lets this
 * process's own heartbeat end. */
int lr_pipeline_recover(lr_pipeline *p)
{
    int n = 0, k = CLAIM_BATCH;
    while (k == CLAIM_BATCH && beat_if_due(p) && (k = claim_batch(p)) >= 0)
        n += k;
    if (k < 0)
        return -1;
    k = REAP_BATCH;
    while (k == REAP_BATCH && beat_if_due(p) && (k = reap_batch(p)) >= 0)
        n += k;
    if (k < 0)
        return -1;
    int more = p->part && beat_if_due(p) ? p->part->recover(p) : 0;
    return more < 0 ? -1 : n + more;
}

static run *find_run(lr_pipeline *p, const char *id)
{
    for (run *r = p->buckets[bucket_of(id)]; r; r = r->next) {
        if (!strcmp(r->id, id))
            return r;
    }
    return NULL;
}

bool lr_pipeline_is_local(lr_pipeline *p, const char *id)
{
    pthread_mutex_lock(&p->mu);
    bool local = find_run(p, id) != NULL;
    pthread_mutex_unlock(&p->mu);
    return local;
}

/* After a cancel settled generation id: tells the local run's provider
 * tasks to stop and answers its waiters with the canceled outcome. */
static void stop_canceled_run(lr_pipeline *p, const char *id, int outputs, int refund, int balance)
{
    pthread_mutex_lock(&p->mu);
    run *r = find_run(p, id);
    waiter *ws = NULL;
    const lr_model *model = NULL;
    char created[32] = "";
    if (r) {
        for (int i = 0; i < r->outputs; i++) {
            atomic_store(&r->tasks[i].canceled, true);
            lr_pipeline_poke(p, id, i);
        }
        ws = r->waiters;
        r->waiters = NULL;
        for (waiter *w = ws; w; w = w->next)
            w->fired = true;
        model = r->model;
        snprintf(created, sizeof created, "%s", r->created_at);
    }
    pthread_mutex_unlock(&p->mu);
    if (!ws)
        return;
    lr_outcome o = {
        .generation_id = id,
        .model_id = model->id,
        .provider = lr_provider_name_for(p->provider, model),
        .status = LR_GEN_CANCELED,
        .outputs_count = outputs,
        .failed_count = outputs,
        .refunded = refund,
        .balance = balance,
        .error = LR_CODE_CANCELED,
        .error_message = lr_code_message(LR_CODE_CANCELED),
        .created_at = created,
    };
    for (waiter *w = ws, *next; w; w = next) {
        next = w->next;
        w->fn(w->ctx, &o);
        if (lr_loop_cancel(p->loop, w->timer))
            free(w);
    }
}

/* Settles unfinished generation g as canceled with a full refund. */
static lr_err settle_canceled(lr_pipeline *p, const lr_generation *g, int *balance)
{
    lr_settle_req q = {
        .generation_id = g->id,
        .user_id = g->user_id,
        .status = lr_gen_status_name(LR_GEN_CANCELED),
        .task_ids = g->task_ids, /* kept as they were */
        .failed_count = g->outputs_count,
        .refund = g->credits_used, /* all that is still charged */
        .error_code = lr_code_name(LR_CODE_CANCELED),
        .error_message = "Canceled by the user; the credits were refunded",
    };
    /* Mark the local run first, so its own settle does not race ours. */
    pthread_mutex_lock(&p->mu);
    run *r = find_run(p, g->id);
    if (r)
        r->canceled = true;
    pthread_mutex_unlock(&p->mu);
    lr_err e = p->db->ops->settle(p->db, &q, balance);
    if (e == LR_OK)
        lr_log_fields(LR_LOG_INFO, NULL, "generation canceled",
                      json_pack("{s:s, s:i}", "generation_id", g->id, "refund", q.refund));
    return e;
}

lr_err lr_pipeline_cancel(lr_pipeline *p, const char *user, const char *id, lr_generation *out,
                          int *balance_out)
{
    lr_generation g = {0};
    lr_err e = p->db->ops->get_generation(p->db, user, id, &g);
    if (e == LR_OK && !lr_generation_unfinished(&g))
        e = LR_ERR_CONFLICT;
    if (e != LR_OK) {
        if (out)
            *out = g;
        else
            lr_generation_clear(&g);
        return e;
    }
    int balance = 0, outputs = g.outputs_count, refund = g.credits_used;
    e = settle_canceled(p, &g, &balance);
    lr_generation_clear(&g);
    if (e == LR_OK) {
        notify(p, id, LR_GEN_CANCELED, LR_STAGE_NONE);
        stop_canceled_run(p, id, outputs, refund, balance);
    }
    if (out)
        p->db->ops->get_generation(p->db, user, id, out);
    if (balance_out && e == LR_OK)
        *balance_out = balance;
    return e;
}

typedef struct {
    lr_pipeline *p;
    char id[LR_UUID_LEN + 1];
    int variant;
} poke_req;

static void poke_on_loop(void *arg)
{
    poke_req *q = arg;
    lr_pipeline *p = q->p;
    pthread_mutex_lock(&p->mu);
    run *r = find_run(p, q->id);
    if (r && q->variant >= 0 && q->variant < r->outputs)
        lr_provider_poke(p->provider, &r->tasks[q->variant]);
    pthread_mutex_unlock(&p->mu);
    free(q);
}

void lr_pipeline_poke(lr_pipeline *p, const char *id, int variant)
{
    poke_req *q = calloc(1, sizeof *q);
    if (!q)
        return;
    q->p = p;
    snprintf(q->id, sizeof q->id, "%s", id);
    q->variant = variant;
    lr_loop_post(p->loop, poke_on_loop, q);
}

bool lr_pipeline_purge_objects(lr_pipeline *p, const char *id, const lr_strv *keys)
{
    if (!lr_store_remove_keys(p->store, keys)) {
        lr_warn("objects of deleted generation %s not all removed; will retry", id);
        return false;
    }
    return p->db->ops->purged(p->db, id) == LR_OK;
}

/* Retries the removal of objects of deleted generations. */
static void purge_pending(lr_pipeline *p)
{
    lr_purge_list rows;
    if (p->db->ops->pending_purges(p->db, 100, &rows) != LR_OK)
        return;
    for (size_t i = 0; i < rows.n; i++) {
        if (lr_pipeline_purge_objects(p, rows.v[i].id, &rows.v[i].keys))
            lr_info("objects of deleted generation %s removed", rows.v[i].id);
    }
    lr_purge_list_clear(&rows);
}

static void purge_job(void *arg)
{
    lr_pipeline *p = arg;
    purge_pending(p);
    pthread_mutex_lock(&p->mu);
    p->purge_queued = false;
    pthread_mutex_unlock(&p->mu);
}

/* The maintenance thread: beats, then takes over what dead processes
 * left, every lease_s/10. It has its own thread so a backlog of renders
 * and uploads on the workers never delays a beat (the other processes
 * would take this one's generations for dead); removing deleted objects
 * is storage work and goes to the workers, one round at a time. */
static void *maintenance_main(void *arg)
{
    lr_pipeline *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->maint_stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        int64_t ns = until.tv_nsec + (int64_t)p->lease_s * 100000000LL;
        until.tv_sec += ns / 1000000000LL;
        until.tv_nsec = ns % 1000000000LL;
        while (!p->maint_stop && pthread_cond_timedwait(&p->maint_cv, &p->mu, &until) == 0)
            ;
        if (p->maint_stop)
            break;
        pthread_mutex_unlock(&p->mu);
        if (beat(p))
            lr_pipeline_recover(p);
        pthread_mutex_lock(&p->mu);
        bool purge = !p->purge_queued;
        p->purge_queued = true;
        pthread_mutex_unlock(&p->mu);
        if (purge)
            lr_workers_submit(p->workers, purge_job, p);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

void lr_pipeline_start_maintenance(lr_pipeline *p)
{
    if (p->maint_running)
        return;
    beat_if_due(p);
    if (pthread_create(&p->maint, NULL, maintenance_main, p) != 0) {
        lr_error("cannot start the maintenance thread");
        abort(); /* without renewals every generation would be reaped: fail loudly */
    }
    p->maint_running = true;
}

/* Stops and joins the maintenance thread (owner's thread only). */
static void stop_maintenance(lr_pipeline *p)
{
    if (!p->maint_running)
        return;
    pthread_mutex_lock(&p->mu);
    p->maint_stop = true;
    pthread_cond_broadcast(&p->maint_cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->maint, NULL);
    p->maint_running = false;
}

int lr_pipeline_in_flight(lr_pipeline *p)
{
    pthread_mutex_lock(&p->mu);
    int n = p->in_flight;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void lr_pipeline_drain(lr_pipeline *p, int64_t timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&p->mu);
    p->draining = true;
    while (p->in_flight > 0 && pthread_cond_timedwait(&p->idle, &p->mu, &until) == 0)
        ;
    pthread_mutex_unlock(&p->mu);
    stop_maintenance(p); /* renewed while draining; the workers stop next */
    pthread_mutex_lock(&p->mu);
    if (p->in_flight == 0) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    lr_warn("%d generations still running at shutdown; they will be refunded at the next "
            "start",
            p->in_flight);
    /* Answer whoever still waits (as if their wait ran out), so no HTTP
     * connection stays suspended. Timer ids decide who frees a waiter:
     * only a successful cancel hands it to waiter_timeout here. */
    size_t n = 0, cap = 64;
    lr_timer_id *ids = malloc(cap * sizeof *ids);
    waiter **ws = malloc(cap * sizeof *ws);
    for (unsigned b = 0; b < BUCKETS && ids && ws; b++) {
        for (run *r = p->buckets[b]; r; r = r->next) {
            for (waiter *w = r->waiters; w; w = w->next) {
                if (n == cap) {
                    cap *= 2;
                    lr_timer_id *ni = realloc(ids, cap * sizeof *ids);
                    waiter **nw = ni ? realloc(ws, cap * sizeof *ws) : NULL;
                    if (!ni || !nw)
                        abort(); /* shutdown path: nothing sensible to fall back to */
                    ids = ni;
                    ws = nw;
                }
                ids[n] = w->timer;
                ws[n++] = w;
            }
        }
    }
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < n; i++) {
        if (lr_loop_cancel(p->loop, ids[i]))
            waiter_timeout(ws[i]);
    }
    free(ids);
    free(ws);
}

void lr_pipeline_release_claims(lr_pipeline *p)
{
    pthread_mutex_lock(&p->mu);
    bool runs = p->graph_runs != NULL; /* their waiting nodes are claimed too */
    pthread_mutex_unlock(&p->mu);
    if (lr_pipeline_in_flight(p) == 0 && !runs)
        return;
    char past[32];
    lr_time_iso(lr_now_ms() - 1000, past);
    if (p->db->ops->renew_leases(p->db, p->owner, past) != LR_OK)
        lr_warn("could not give up generation claims; they are taken over when the lease ends");
}

void lr_pipeline_attach(lr_pipeline *p, const lr_pipeline_part *part)
{
    p->part = part;
}

void lr_pipeline_free(lr_pipeline *p)
{
    if (!p)
        return;
    stop_maintenance(p);
    if (p->part)
        p->part->release(p);
    /* Runs abandoned at shutdown (loop and workers already stopped): their
     * rows stay unfinished and the next start refunds them. */
    for (unsigned b = 0; b < BUCKETS; b++) {
        for (run *r = p->buckets[b], *next; r; r = next) {
            next = r->next;
            run_free(r);
        }
        for (user_slots *u = p->slots[b], *next; u; u = next) {
            next = u->next;
            free(u);
        }
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->idle);
    pthread_cond_destroy(&p->maint_cv);
    free(p);
}
