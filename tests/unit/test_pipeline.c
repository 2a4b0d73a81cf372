/* The pipeline's state machine, driven through lr_generation_begin with a
 * scripted provider (each output succeeds, fails or holds until
 * canceled) on a fresh SQLite file and a local storage folder: what ends
 * up in the ledger and on the row is read back from the database, and
 * every wait is for something observable (an outcome, a row), with a
 * generous deadline. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "pipeline/generation.h"
#include "pipeline/run.h"
#include "providers/media.h"

#define DEADLINE_MS 30000
#define MODEL "seedream_image" /* 8 credits an output */
#define COST 8

/* ---- the scripted provider ---- */

typedef enum { OUT_OK, OUT_FAIL, OUT_HOLD } behaviour;

typedef struct {
    lr_provider base;
    lr_loop *loop;
    behaviour script[LR_MAX_OUTPUTS]; /* by variant */
    atomic_int submits, resumes;
} fake_provider;

static int sink_write(void *ctx, const void *buf, size_t len)
{
    return lr_blob_write(ctx, buf, len) == LR_OK ? 0 : -1;
}

static lr_err produce(lr_provider_task *t, lr_blob_sink *sink)
{
    return lr_media_png(t->prompt, t->variant, 16, 16, sink_write, sink);
}

/* On the loop: the task's id first, then (unless it holds) its end. */
static void fire(void *arg)
{
    lr_provider_task *t = arg;
    fake_provider *p = t->provider_data;
    char id[64];
    snprintf(id, sizeof id, "fake-%.8s-%d", t->generation_id, t->variant);
    behaviour b = t->task_id ? OUT_OK : p->script[t->variant]; /* a resumed task ends well */
    if (!t->task_id)
        t->submitted(t, id);
    if (b == OUT_HOLD)
        return;
    lr_provider_result r = {.ok = b == OUT_OK, .task_id = id};
    if (b == OUT_OK) {
        r.produce = produce;
    } else {
        r.error = LR_CODE_PROVIDER_FAILED;
        r.error_message = "scripted failure";
    }
    t->done(t, &r);
}

static lr_err fake_submit(lr_provider *base, lr_provider_task *t)
{
    fake_provider *p = (fake_provider *)base;
    t->provider_data = p;
    atomic_fetch_add(t->task_id ? &p->resumes : &p->submits, 1);
    lr_loop_post(p->loop, fire, t);
    return LR_OK;
}

static void end_canceled(void *arg)
{
    lr_provider_task *t = arg;
    lr_provider_result r = {.error = LR_CODE_CANCELED, .error_message = "Canceled"};
    t->done(t, &r);
}

/* A held task ends only when canceled, on the loop's next turn (poke must
 * not call done itself). */
static void fake_poke(lr_provider *base, lr_provider_task *t)
{
    if (atomic_load(&t->canceled))
        lr_loop_post(((fake_provider *)base)->loop, end_canceled, t);
}

static const char *fake_name(lr_provider *base, const lr_model *m)
{
    (void)base;
    (void)m;
    return "fake";
}

static void fake_close(lr_provider *base)
{
    free(base);
}

static const lr_provider_ops fake_ops = {
    .submit = fake_submit, .poke = fake_poke, .name_for = fake_name, .close = fake_close};

/* ---- one server process: loop, workers, provider, pipeline ---- */

typedef struct {
    lr_loop *loop;
    lr_workers *workers;
    fake_provider *provider;
    lr_pipeline *pipeline;
} proc;

typedef struct {
    char dir[64]; /* database file and storage folder */
    char user[LR_UUID_LEN + 1];
    lr_db *db;
    lr_store *store;
    lr_catalog *catalog;
    lr_net_policy *net;
    proc a;
} fixture;

static void proc_start(fixture *f, proc *p, int lease_s)
{
    p->loop = lr_loop_new();
    p->workers = lr_workers_new(2);
    p->provider = calloc(1, sizeof *p->provider);
    p->provider->base = (lr_provider){.ops = &fake_ops, .name = "fake"};
    p->provider->loop = p->loop;
    p->pipeline = lr_pipeline_new(f->db, f->store, &p->provider->base, f->catalog, f->net, p->loop,
                                  p->workers, lease_s);
    assert_non_null(p->pipeline);
    assert_int_equal(lr_loop_start(p->loop), LR_OK);
}

/* Stops the process where it stands: whatever runs is abandoned, its
 * rows left unfinished, as a crash leaves them. */
static void proc_stop(proc *p)
{
    if (!p->pipeline)
        return;
    lr_loop_stop(p->loop);
    lr_workers_free(p->workers);
    lr_pipeline_free(p->pipeline);
    fake_close(&p->provider->base);
    lr_loop_free(p->loop);
    *p = (proc){0};
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/lr-pipeline-%d-%ld", getpid(), random());
    assert_int_equal(lr_mkdir_p(f->dir, 0700), 0);
    char path[128];
    snprintf(path, sizeof path, "%s/db.sqlite", f->dir);
    char *err = NULL;
    assert_int_equal(lr_db_open(path, 4, &f->db, &err), LR_OK);
    assert_int_equal(f->db->ops->migrate(f->db), LR_OK);
    snprintf(path, sizeof path, "%s/storage", f->dir);
    assert_int_equal(lr_store_fs_open(path, "generations", "http://localhost", &f->store), LR_OK);
    f->catalog = lr_catalog_load(NULL, &err);
    f->net = lr_net_policy_new(NULL, &err);
    assert_non_null(f->catalog);
    assert_non_null(f->net);
    lr_uuid_v4(f->user);
    proc_start(f, &f->a, 60);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    proc_stop(&f->a);
    lr_net_policy_free(f->net);
    lr_catalog_free(f->catalog);
    lr_store_close(f->store);
    lr_db_close(f->db);
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* ---- helpers ---- */

static void grant(fixture *f, int amount)
{
    lr_adjust_req r = {.user_id = f->user, .amount = amount, .type = "bonus"};
    lr_adjust_result res;
    assert_int_equal(f->db->ops->adjust(f->db, &r, &res), LR_OK);
}

static int balance(fixture *f)
{
    int b = -1;
    assert_int_equal(f->db->ops->balance(f->db, f->user, &b), LR_OK);
    return b;
}

/* The user's ledger rows of one type, and their sum. */
static int ledger_rows(fixture *f, const char *type, int *sum)
{
    lr_ledger_list l;
    assert_int_equal(f->db->ops->list_transactions(f->db, f->user, NULL, NULL, 100, &l), LR_OK);
    int n = 0;
    *sum = 0;
    for (size_t i = 0; i < l.n; i++) {
        if (!strcmp(l.v[i].type, type)) {
            n++;
            *sum += l.v[i].amount;
        }
    }
    lr_ledger_list_clear(&l);
    return n;
}

static void row(fixture *f, const char *id, lr_generation *g)
{
    assert_int_equal(f->db->ops->get_generation(f->db, f->user, id, g), LR_OK);
}

/* What a waiter was told, copied, and a way to wait for it. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool told;
    lr_gen_status status;
    lr_code error;
    int urls, succeeded, failed, credits_used, refunded, balance;
} waited;

static void on_outcome(void *ctx, const lr_outcome *o)
{
    waited *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->told = true;
    w->status = o->status;
    w->error = o->error;
    w->urls = (int)o->urls.n;
    w->succeeded = o->succeeded_count;
    w->failed = o->failed_count;
    w->credits_used = o->credits_used;
    w->refunded = o->refunded;
    w->balance = o->balance;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void wait_told(waited *w)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += DEADLINE_MS / 1000;
    pthread_mutex_lock(&w->mu);
    while (!w->told && pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0)
        ;
    bool told = w->told;
    pthread_mutex_unlock(&w->mu);
    assert_true(told);
}

static lr_begin_req request(fixture *f, int outputs, waited *w)
{
    if (w) {
        *w = (waited){0};
        pthread_mutex_init(&w->mu, NULL);
        pthread_cond_init(&w->cv, NULL);
    }
    return (lr_begin_req){
        .user_id = f->user,
        .model_id = MODEL,
        .prompt = "a lighthouse",
        .prompt_len = strlen("a lighthouse"),
        .outputs_count = outputs,
        .wait_ms = w ? DEADLINE_MS : 0,
        .wait = w ? on_outcome : NULL,
        .ctx = w,
    };
}

/* Polls until pred holds for the row (the pipeline writes it on a worker). */
static bool row_eventually(fixture *f, const char *id, bool (*pred)(const lr_generation *))
{
    int64_t until = lr_monotonic_ms() + DEADLINE_MS;
    for (;;) {
        lr_generation g = {0};
        bool ok = f->db->ops->get_generation(f->db, f->user, id, &g) == LR_OK && pred(&g);
        lr_generation_clear(&g);
        if (ok || lr_monotonic_ms() > until)
            return ok;
        usleep(10000);
    }
}

static bool has_task_id(const lr_generation *g)
{
    return g->task_ids.n > 0 && g->task_ids.v[0];
}

static void idle(proc *p)
{
    lr_pipeline_drain(p->pipeline, DEADLINE_MS);
    assert_int_equal(lr_pipeline_in_flight(p->pipeline), 0);
}

/* ---- the tests ---- */

static void success_charges_once_and_stores_the_output(void **state)
{
    fixture *f = *state;
    grant(f, 20);
    waited w;
    lr_begin_req q = request(f, 1, &w);
    lr_begin_result r;
    assert_int_equal(lr_generation_begin(f->a.pipeline, &q, &r), LR_OK);
    assert_int_equal(r.kind, LR_BEGIN_STARTED);
    assert_true(r.waiting);
    assert_int_equal(r.outcome.status, LR_GEN_PROCESSING);
    assert_int_equal(r.outcome.credits_used, COST);
    wait_told(&w);
    assert_int_equal(w.status, LR_GEN_SUCCESS);
    assert_int_equal(w.error, LR_CODE_NONE);
    assert_int_equal(w.urls, 1);
    assert_int_equal(w.balance, 20 - COST);
    idle(&f->a);
    lr_generation g = {0};
    row(f, r.generation_id, &g);
    assert_string_equal(g.status, lr_gen_status_name(LR_GEN_SUCCESS));
    assert_int_equal(g.credits_used, COST);
    assert_int_equal(g.result_urls.n, 1);
    lr_generation_clear(&g);
    int sum;
    assert_int_equal(ledger_rows(f, "generation", &sum), 1);
    assert_int_equal(sum, -COST);
    assert_int_equal(ledger_rows(f, "refund", &sum), 0);
    assert_int_equal(balance(f), 20 - COST);
    lr_begin_result_clear(&r);
}

static void provider_failure_is_refunded_exactly_once(void **state)
{
    fixture *f = *state;
    grant(f, 20);
    f->a.provider->script[0] = f->a.provider->script[1] = OUT_FAIL;
    waited w;
    lr_begin_req q = request(f, 2, &w);
    lr_begin_result r;
    lr_generation_begin(f->a.pipeline, &q, &r);
    assert_int_equal(r.kind, LR_BEGIN_STARTED);
    wait_told(&w);
    assert_int_equal(w.status, LR_GEN_FAILED);
    assert_int_equal(w.error, LR_CODE_PROVIDER_FAILED);
    assert_int_equal(w.refunded, 2 * COST);
    assert_int_equal(w.balance, 20);
    idle(&f->a);
    /* Nothing a later sweep or a late cancel does refunds it again. */
    assert_true(lr_pipeline_recover(f->a.pipeline) >= 0);
    assert_int_equal(lr_pipeline_cancel(f->a.pipeline, f->user, r.generation_id, NULL, NULL),
                     LR_ERR_CONFLICT);
    int sum;
    assert_int_equal(ledger_rows(f, "refund", &sum), 1);
    assert_int_equal(sum, 2 * COST);
    assert_int_equal(balance(f), 20);
    lr_generation g = {0};
    row(f, r.generation_id, &g);
    assert_string_equal(g.status, lr_gen_status_name(LR_GEN_FAILED));
    assert_string_equal(g.error_code, lr_code_name(LR_CODE_PROVIDER_FAILED));
    assert_int_equal(g.credits_used, 0);
    lr_generation_clear(&g);
    lr_begin_result_clear(&r);
}

static void partial_failure_refunds_the_failed_outputs_only(void **state)
{
    fixture *f = *state;
    grant(f, 30);
    f->a.provider->script[1] = OUT_FAIL; /* 0 and 2 succeed */
    waited w;
    lr_begin_req q = request(f, 3, &w);
    lr_begin_result r;
    lr_generation_begin(f->a.pipeline, &q, &r);
    wait_told(&w);
    assert_int_equal(w.status, LR_GEN_SUCCESS);
    assert_int_equal(w.succeeded, 2);
    assert_int_equal(w.failed, 1);
    assert_int_equal(w.urls, 2);
    assert_int_equal(w.credits_used, 2 * COST);
    assert_int_equal(w.refunded, lr_generation_refund(COST, 1));
    assert_int_equal(w.error, LR_CODE_PROVIDER_FAILED);
    idle(&f->a);
    int sum;
    assert_int_equal(ledger_rows(f, "refund", &sum), 1);
    assert_int_equal(sum, COST);
    assert_int_equal(balance(f), 30 - 2 * COST);
    lr_generation g = {0};
    row(f, r.generation_id, &g);
    assert_int_equal(g.credits_used, 2 * COST);
    assert_int_equal(g.succeeded_count, 2);
    assert_int_equal(g.failed_count, 1);
    lr_generation_clear(&g);
    lr_begin_result_clear(&r);
}

static void cancel_mid_run_refunds_once_and_answers_the_waiter(void **state)
{
    fixture *f = *state;
    grant(f, 20);
    f->a.provider->script[0] = OUT_HOLD;
    waited w;
    lr_begin_req q = request(f, 1, &w);
    lr_begin_result r;
    lr_generation_begin(f->a.pipeline, &q, &r);
    assert_int_equal(r.kind, LR_BEGIN_STARTED);
    assert_true(row_eventually(f, r.generation_id, has_task_id)); /* the provider has it */
    assert_int_equal(balance(f), 20 - COST);
    int after = -1;
    assert_int_equal(lr_pipeline_cancel(f->a.pipeline, f->user, r.generation_id, NULL, &after),
                     LR_OK);
    assert_int_equal(after, 20);
    wait_told(&w);
    assert_int_equal(w.status, LR_GEN_CANCELED);
    assert_int_equal(w.error, LR_CODE_CANCELED);
    assert_int_equal(w.refunded, COST);
    idle(&f->a); /* the provider was told and the run's own settle met the cancel */
    assert_int_equal(lr_pipeline_cancel(f->a.pipeline, f->user, r.generation_id, NULL, NULL),
                     LR_ERR_CONFLICT);
    int sum;
    assert_int_equal(ledger_rows(f, "refund", &sum), 1);
    assert_int_equal(sum, COST);
    assert_int_equal(balance(f), 20);
    lr_generation g = {0};
    row(f, r.generation_id, &g);
    assert_string_equal(g.status, lr_gen_status_name(LR_GEN_CANCELED));
    lr_generation_clear(&g);
    lr_begin_result_clear(&r);
}

static bool succeeded(const lr_generation *g)
{
    lr_gen_status s;
    return lr_gen_status_parse(g->status, &s) && s == LR_GEN_SUCCESS;
}

static void a_crashed_run_is_resumed_by_the_next_process(void **state)
{
    fixture *f = *state;
    grant(f, 20);
    proc_stop(&f->a);
    proc_start(f, &f->a, 1); /* a one-second lease, never renewed */
    f->a.provider->script[0] = OUT_HOLD;
    lr_begin_req q = request(f, 1, NULL);
    lr_begin_result r;
    lr_generation_begin(f->a.pipeline, &q, &r);
    assert_int_equal(r.kind, LR_BEGIN_STARTED);
    assert_false(r.waiting);
    assert_true(row_eventually(f, r.generation_id, has_task_id));
    proc_stop(&f->a); /* the crash: the row stays processing, claimed */

    proc b = {0};
    proc_start(f, &b, 2); /* takes nothing over in its first 1.2 s */
    int64_t until = lr_monotonic_ms() + DEADLINE_MS;
    int taken = 0;
    while (taken == 0 && lr_monotonic_ms() < until) {
        taken = lr_pipeline_recover(b.pipeline); /* 0 until the lease and b's wait run out */
        assert_true(taken >= 0);
        if (!taken)
            usleep(50000);
    }
    assert_int_equal(taken, 1);
    assert_true(row_eventually(f, r.generation_id, succeeded));
    idle(&b);
    assert_int_equal(atomic_load(&b.provider->resumes), 1); /* the same task, not a new one */
    assert_int_equal(atomic_load(&b.provider->submits), 0);
    int sum;
    assert_int_equal(ledger_rows(f, "generation", &sum), 1);
    assert_int_equal(ledger_rows(f, "refund", &sum), 0);
    assert_int_equal(balance(f), 20 - COST);
    proc_stop(&b);
    lr_begin_result_clear(&r);
}

static void a_retry_with_the_same_key_is_replayed_without_a_charge(void **state)
{
    fixture *f = *state;
    grant(f, 20);
    waited w;
    lr_begin_req q = request(f, 1, &w);
    q.idempotency_key = "key-1";
    q.request_hash = "hash-1";
    lr_begin_result first, again, other;
    lr_generation_begin(f->a.pipeline, &q, &first);
    assert_int_equal(first.kind, LR_BEGIN_STARTED);
    wait_told(&w);
    idle(&f->a);

    q.wait = NULL;
    lr_generation_begin(f->a.pipeline, &q, &again);
    assert_int_equal(again.kind, LR_BEGIN_REPLAYED);
    assert_string_equal(again.generation_id, first.generation_id);
    assert_int_equal(again.outcome.status, LR_GEN_SUCCESS);
    assert_int_equal(again.outcome.urls.n, 1);
    assert_int_equal(again.outcome.balance, 20 - COST);

    q.request_hash = "hash-2"; /* the same key, another request */
    lr_generation_begin(f->a.pipeline, &q, &other);
    assert_int_equal(other.kind, LR_BEGIN_REFUSED);
    assert_int_equal(other.code, LR_CODE_IDEMPOTENCY_KEY_REUSED);
    assert_int_equal(lr_code_http_status(other.code), 422);

    int sum;
    assert_int_equal(ledger_rows(f, "generation", &sum), 1);
    assert_int_equal(balance(f), 20 - COST);
    assert_int_equal(atomic_load(&f->a.provider->submits), 1);
    lr_begin_result_clear(&first);
    lr_begin_result_clear(&again);
    lr_begin_result_clear(&other);
}

static void a_retry_while_the_key_runs_is_in_progress(void **state)
{
    fixture *f = *state;
    grant(f, 20);
    f->a.provider->script[0] = OUT_HOLD;
    lr_begin_req q = request(f, 1, NULL);
    q.idempotency_key = "key-2";
    q.request_hash = "hash";
    lr_begin_result first, again;
    lr_generation_begin(f->a.pipeline, &q, &first);
    assert_int_equal(first.kind, LR_BEGIN_STARTED);
    lr_generation_begin(f->a.pipeline, &q, &again);
    assert_int_equal(again.kind, LR_BEGIN_IN_PROGRESS);
    assert_string_equal(again.generation_id, first.generation_id);
    assert_int_equal(balance(f), 20 - COST);
    assert_int_equal(lr_pipeline_cancel(f->a.pipeline, f->user, first.generation_id, NULL, NULL),
                     LR_OK);
    idle(&f->a);
    lr_begin_result_clear(&first);
    lr_begin_result_clear(&again);
}

static void nothing_is_written_when_credits_are_short(void **state)
{
    fixture *f = *state;
    grant(f, COST - 3);
    lr_begin_req q = request(f, 1, NULL);
    q.max_in_flight = 1;
    lr_begin_result r;
    lr_generation_begin(f->a.pipeline, &q, &r);
    assert_int_equal(r.kind, LR_BEGIN_REFUSED);
    assert_int_equal(r.code, LR_CODE_INSUFFICIENT_CREDITS);
    assert_int_equal(lr_code_http_status(r.code), 402);
    assert_int_equal(r.required, COST);
    assert_int_equal(r.balance, COST - 3);
    lr_begin_result_clear(&r);

    lr_gen_filter all = {.limit = 10};
    lr_generation_list l;
    assert_int_equal(f->db->ops->list_generations(f->db, f->user, &all, &l), LR_OK);
    assert_int_equal(l.n, 0);
    lr_generation_list_clear(&l);
    int sum;
    assert_int_equal(ledger_rows(f, "generation", &sum), 0);
    assert_int_equal(balance(f), COST - 3);
    assert_int_equal(atomic_load(&f->a.provider->submits), 0);
    assert_int_equal(lr_pipeline_in_flight(f->a.pipeline), 0);

    /* The refused request gave its slot back: the next one is admitted. */
    grant(f, 3);
    lr_generation_begin(f->a.pipeline, &q, &r);
    assert_int_equal(r.kind, LR_BEGIN_STARTED);
    idle(&f->a);
    lr_begin_result_clear(&r);
}

static void bad_values_are_refused_before_anything_is_charged(void **state)
{
    fixture *f = *state;
    grant(f, 100);
    static const struct {
        const char *model;
        int outputs;
        lr_code code;
        int status;
    } cases[] = {
        {"no_such_model", 1, LR_CODE_MODEL_NOT_FOUND, 404},
        {MODEL, 5, LR_CODE_INVALID_PARAMETER, 422},
        {"nano_banana_edit", 1, LR_CODE_MISSING_INPUT_IMAGE, 400},
        {NULL, 1, LR_CODE_MISSING_FIELDS, 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lr_begin_req q = request(f, cases[i].outputs, NULL);
        q.model_id = cases[i].model;
        lr_begin_result r;
        lr_generation_begin(f->a.pipeline, &q, &r);
        assert_int_equal(r.kind, LR_BEGIN_REFUSED);
        assert_int_equal(r.code, cases[i].code);
        assert_int_equal(lr_code_http_status(r.code), cases[i].status);
        lr_begin_result_clear(&r);
    }
    int sum;
    assert_int_equal(ledger_rows(f, "generation", &sum), 0);
    assert_int_equal(balance(f), 100);
}

static bool ref_ok(const char *s, size_t *id_len, int *output)
{
    return lr_graph_parse_ref(s, strlen(s), id_len, output);
}

static void graph_references_parse_by_length(void **state)
{
    (void)state;
    size_t id_len = 0;
    int output = -1;
    assert_true(ref_ok("n1.outputs[0]", &id_len, &output));
    assert_int_equal(id_len, 2);
    assert_int_equal(output, 0);
    assert_false(ref_ok("a.b.outputs[12]", &id_len, &output)); /* ids hold no dot */
    assert_true(ref_ok("img.outputs[3]", &id_len, &output));
    assert_int_equal(output, 3);
    const char *bad[] = {"",
                         "n1",
                         ".outputs[0]",
                         "n1.outputs[]",
                         "n1.outputs[x]",
                         "n1.outputs[0",
                         "n1.outputs[123]",
                         "n1.output[0]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_false(ref_ok(bad[i], &id_len, &output));
    /* the length is the bound, not a NUL */
    assert_true(lr_graph_parse_ref("n1.outputs[1]trailing", 13, &id_len, &output));
    assert_int_equal(output, 1);
}

static void a_price_rule_multiplies_then_rounds_up(void **state)
{
    (void)state;
    lr_catalog *c = lr_catalog_load(NULL, NULL);
    const lr_model *pro = lr_catalog_find(c, "nano_banana_pro_edit");
    const lr_model *edit = lr_catalog_find(c, "nano_banana_edit");
    json_t *k4 = json_pack("{s:s}", "resolution", "4K");
    json_t *k1 = json_pack("{s:s}", "resolution", "1K");
    assert_int_equal(lr_model_unit_price(pro, k4, 1), 20);
    assert_int_equal(lr_model_unit_price(pro, k1, 1), 10);
    assert_int_equal(lr_generation_charge(pro, k4, 3), 60);
    assert_int_equal(lr_model_unit_price(edit, NULL, 4), 6);
    assert_int_equal(lr_model_unit_price(edit, NULL, 3), 8);
    json_decref(k4);
    json_decref(k1);
    lr_catalog_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(success_charges_once_and_stores_the_output, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(provider_failure_is_refunded_exactly_once, setup, teardown),
        cmocka_unit_test_setup_teardown(partial_failure_refunds_the_failed_outputs_only, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(cancel_mid_run_refunds_once_and_answers_the_waiter, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_crashed_run_is_resumed_by_the_next_process, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_retry_with_the_same_key_is_replayed_without_a_charge,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(a_retry_while_the_key_runs_is_in_progress, setup, teardown),
        cmocka_unit_test_setup_teardown(nothing_is_written_when_credits_are_short, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_values_are_refused_before_anything_is_charged, setup,
                                        teardown),
    };
    const struct CMUnitTest graph_tests[] = {
        cmocka_unit_test(graph_references_parse_by_length),
        cmocka_unit_test(a_price_rule_multiplies_then_rounds_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL) +
           cmocka_run_group_tests_name("graphs and prices", graph_tests, NULL, NULL);
}
